"""``DomainEnv``: one MetaWorld task in one domain, with seeded resets (optionally within one region of the
layout range), multi-camera rendering and a proprio (4-d) or full (7-d) state.

Observation (``DomainEnv.observation()``): ``{"images": {camera: uint8 (H, W, 3)}, "state": float32 (d,)}``.
``obs="full"`` (d = 7): hand xyz, gripper opening (MetaWorld ``obs[:4]``) and goal xyz (``obs[-3:]``).
``obs="proprio"`` (d = 4): hand xyz and gripper only, as LeRobot's MetaWorld ``pixels_agent_pos``: the goal
and object positions are not policy inputs, so the goal must be seen in the images (:meth:`DomainEnv.layout`
still reports them, for the dataset's per-episode record).

Regions (:data:`REGION_SPLITS`): each task's initial-layout range (MetaWorld's ``_random_reset_space``) is cut in
two halves along one coordinate of the reset vector: ``id`` (below the threshold) and ``ood`` (at or above it),
as the paper's "down"/"up" regions. ``reset(seed, region=...)`` keeps MetaWorld's own sampling and redraws
with derived seeds until the layout falls in the half (rejection; deterministic per episode seed;
``region="all"`` uses ``seed`` itself, exactly as before regions existed).
Action: 4-d in [-1, 1] (xyz motion of the hand, gripper), clipped. Cameras: ``corner4`` (a fixed view,
flipped upright), ``gripperPOV`` (wrist), optionally ``topview``. One MetaWorld step is 12.5 ms of
simulated time (80 Hz); datasets record every step and label it ``fps=10`` (see ``dpot.bench.generate``).
Rendering uses fast settings (no MSAA, shadows or reflections) unless ``fast_render=False``.

Layouts (:data:`LAYOUTS`): ``dpot`` (the above) or ``lerobot``: the observation LeRobot 0.6.1's MetaWorld env
(``lerobot/envs/metaworld.py``, ``obs_type=pixels_agent_pos``) gives a policy: one camera, ``corner2`` moved to
LeRobot's position (:data:`LEROBOT_CORNER2_POS`) and flipped on both axes as LeRobot flips it, at LeRobot's
480x480, and the 4-d state (``proprio``). With ``fast_render=False`` (MetaWorld's default render quality) the
image is pixel-identical to LeRobot's env at the same seed (mean |difference| 0.0/255, 0.31 s per frame on
this CPU; button-press-topdown-v3, checked in the tests: on tasks whose reset moves things through the model,
drawer-open's drawer and push/reach's goal site, LeRobot's first frame of an episode still shows the previous
layout and ours does not, :meth:`DomainEnv._sync_derived_state`); the fast settings differ by 7.3/255 on
average and render 8x faster (0.04 s). A domain's ``corner4`` camera shift (``camera_pos_offset`` /
``camera_fovy_scale``) applies to that camera; regions apply as in ``dpot``.
"""

from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass

from dpot.launch import set_env_defaults

set_env_defaults()  # MUJOCO_GL must be set before mujoco is first imported

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from dpot.bench.domains import DomainSpec, apply_model_spec, apply_texture, check_camera, resolve_spec  # noqa: E402
from dpot.errors import UserError, did_you_mean  # noqa: E402

TASKS = ("push-v3", "pick-place-v3", "door-open-v3", "button-press-topdown-v3", "drawer-open-v3", "reach-v3")
DEFAULT_CAMERAS = ("corner4", "gripperPOV")
_FLIPPED = ("corner", "corner2", "corner3", "corner4")  # MetaWorld's corner cameras render upside down
STATE_NAMES = ["hand_x", "hand_y", "hand_z", "gripper", "goal_x", "goal_y", "goal_z"]
OBS_MODES = {"proprio": STATE_NAMES[:4], "full": STATE_NAMES}  # obs mode -> names of observation.state
ACTION_NAMES = ["dx", "dy", "dz", "grip"]
REGIONS = ("all", "id", "ood")
LAYOUTS = ("dpot", "lerobot")
#: LeRobot's MetaWorld env (0.6.1): camera "corner2" at this position, images of this size, this clock
LEROBOT_CAMERA = "corner2"
LEROBOT_CORNER2_POS = (0.75, 0.075, 0.7)
LEROBOT_IMAGE_SIZE = 480
LEROBOT_FPS = 80
#: dataset / policy key of the lerobot layout's image (LeRobot's env features_map: pixels -> observation.image)
LEROBOT_IMAGE_KEY = "observation.image"


@dataclass(frozen=True)
class RegionSplit:
    """How a task's layout range is cut in two: ``id`` = ``rand_vec[index] < threshold``, ``ood`` = the rest.

    ``rand_vec`` is MetaWorld's reset vector (the sampled initial object / goal position); ``what`` names the
    coordinate and ``low``/``high`` give its full range (metaworld 3.1.1)."""

    index: int
    threshold: float
    what: str
    low: float
    high: float


# One split per supported task, each at the middle of its range (so both halves are equally large):
REGION_SPLITS = {
    "button-press-topdown-v3": RegionSplit(0, 0.0, "button x", -0.1, 0.1),   # id x < 0, ood x >= 0
    "push-v3": RegionSplit(0, 0.0, "puck x", -0.1, 0.1),
    "pick-place-v3": RegionSplit(0, 0.0, "puck x", -0.1, 0.1),
    "reach-v3": RegionSplit(3, 0.0, "goal x", -0.1, 0.1),
    "door-open-v3": RegionSplit(0, 0.05, "door x", 0.0, 0.1),
    "drawer-open-v3": RegionSplit(0, 0.0, "drawer x", -0.1, 0.1),
}
_MAX_REGION_TRIES = 200  # a half has probability 1/2 per try: 2**-200 of running out


def check_obs(obs: str) -> str:
    """Return ``obs`` if it is an observation mode (``proprio`` | ``full``), else raise ``UserError``."""
    if obs not in OBS_MODES:
        raise UserError(f"--obs: unknown observation mode '{obs}'{did_you_mean(obs, OBS_MODES)}; "
                        f"choose from {', '.join(OBS_MODES)}")
    return obs


def check_region(region: str) -> str:
    """Return ``region`` if it is ``all``, ``id`` or ``ood``, else raise ``UserError``."""
    if region not in REGIONS:
        raise UserError(f"--region: unknown region '{region}'{did_you_mean(region, REGIONS)}; "
                        f"choose from {', '.join(REGIONS)}")
    return region


def region_of(task: str, rand_vec) -> str:
    """``"id"`` or ``"ood"``: the half of ``task``'s layout range that the reset vector ``rand_vec`` lies in."""
    split = REGION_SPLITS[task]
    return "id" if float(rand_vec[split.index]) < split.threshold else "ood"


def region_seed(seed: int, attempt: int) -> int:
    """The MetaWorld seed of the ``attempt``-th draw of episode ``seed`` (attempt 0 = ``seed`` itself)."""
    if attempt == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(attempt), 0x5E610]).generate_state(1)[0])


def check_layout(layout: str) -> str:
    """Return ``layout`` if it is ``dpot`` or ``lerobot``, else raise ``UserError``."""
    if layout not in LAYOUTS:
        raise UserError(f"--layout: unknown layout '{layout}'{did_you_mean(layout, LAYOUTS)}; "
                        f"choose from {', '.join(LAYOUTS)}")
    return layout


def lerobot_spec(spec: DomainSpec) -> DomainSpec:
    """``spec`` with its ``corner4`` camera shift moved onto LeRobot's ``corner2`` (the lerobot layout's view)."""
    import dataclasses

    def move(d: dict) -> dict:
        return {(LEROBOT_CAMERA if k == "corner4" else k): v for k, v in d.items()}

    return dataclasses.replace(spec, camera_pos_offset=move(spec.camera_pos_offset),
                               camera_fovy_scale=move(spec.camera_fovy_scale))


def check_task(task: str) -> str:
    """Return ``task`` if the benchmark supports it, else raise ``UserError`` naming it."""
    if task not in TASKS:
        raise UserError(f"task: unknown task '{task}'{did_you_mean(task, TASKS)}; choose from {', '.join(TASKS)}")
    return task


class DomainEnv:
    """A MetaWorld task (goal observable, randomized layouts) with a domain spec applied."""

    def __init__(self, task: str, domain: str | DomainSpec | dict = "source", *, image_size: int = 96,
                 cameras: tuple[str, ...] = DEFAULT_CAMERAS, fast_render: bool = True, obs: str = "full",
                 layout: str = "dpot"):
        """``layout="lerobot"`` overrides ``cameras``, ``image_size`` and ``obs`` with LeRobot's (module
        docstring)."""
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

        self.task = check_task(task)
        self.spec = resolve_spec(domain)
        self.obs_layout = check_layout(layout)
        if self.obs_layout == "lerobot":
            self.spec = lerobot_spec(self.spec)
            cameras, image_size, obs = (LEROBOT_CAMERA,), LEROBOT_IMAGE_SIZE, "proprio"
        self.obs_mode = check_obs(obs)
        self.cameras = tuple(check_camera(c) for c in cameras)
        if not self.cameras:
            raise UserError("cameras: give at least one camera")
        if not 16 <= int(image_size) <= 480:
            raise UserError(f"image_size: must be between 16 and 480, got {image_size}")
        self.image_size = int(image_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{task}-goal-observable"]()
        self.env._freeze_rand_vec = False
        self.env.seeded_rand_vec = True
        self.env.max_path_length = 10**6  # callers enforce their own step budget (150 by default)
        self.model, self.data = self.env.model, self.env.data
        if self.obs_layout == "lerobot":  # as LeRobot's MetaworldEnv._ensure_env places it
            self.model.cam_pos[mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, LEROBOT_CAMERA)] = \
                LEROBOT_CORNER2_POS
        apply_model_spec(self.model, self.spec)
        self._base_action_scale = float(self.env.action_scale)
        self.env.action_scale = self._base_action_scale * self.spec.action_gain
        if fast_render:
            self.model.vis.quality.offsamples = 0
        self.renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
        if fast_render:
            self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
            self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        apply_texture(self.model, self.spec, self.renderer._mjr_context)
        self._pending: deque = deque()
        self._obs = None
        self.steps = 0

    # ---------------------------------------------------------------- episode
    def reset(self, seed: int, render: bool = True, region: str = "all") -> dict:
        """Start an episode; the same ``seed`` (and ``region``) gives the same layout in every domain.

        ``region`` ``id``/``ood``: the layout is drawn in that half of the task's range (module docstring)."""
        check_region(region)
        for attempt in range(_MAX_REGION_TRIES):
            self.env.seed(region_seed(seed, attempt))
            self._obs, _ = self.env.reset()
            if region == "all" or region_of(self.task, self.env._last_rand_vec) == region:
                self.last_seed = region_seed(seed, attempt)  # the MetaWorld seed behind this episode's layout
                break
        else:  # pragma: no cover - probability 2**-200
            raise RuntimeError(f"no {region} layout for seed {seed} in {_MAX_REGION_TRIES} draws")
        self._sync_derived_state()
        self._pending = deque(np.zeros(4) for _ in range(self.spec.action_latency))
        self.steps = 0
        return self.observation() if render else {"images": {}, "state": self.state()}

    def _sync_derived_state(self) -> None:
        """Make the reset's first observation show this episode's layout.

        MetaWorld 3.1.1's ``reset_model`` places some things through the *model* after its last simulation step
        (drawer-open: the drawer's ``body_pos``; push, reach, drawer-open: the goal site) and returns without
        ``mj_forward``, so the derived positions (``xpos``, ``site_xpos``) are still those of the previous
        simulation step: the first frame (and, for drawer-open, the object position in MetaWorld's observation)
        shows the *previous* episode's drawer or goal, and an episode's first frame depends on the episode run
        before it in the same env. ``mj_forward`` recomputes them from the state (``qpos`` and ``qvel`` are
        left as they are and the solver's warm start is restored, so every later step is bit-identical); the
        observation is then rebuilt as MetaWorld's reset builds it (both frames of its stack = the current one)."""
        warmstart = self.data.qacc_warmstart.copy()    # mj_forward's solve writes it (MuJoCo 3.3)
        mujoco.mj_forward(self.model, self.data)
        self.data.qacc_warmstart[:] = warmstart
        self.env._prev_obs = self.env._get_curr_obs_combined_no_goal()
        self._obs = self.env._get_obs().astype(np.float64)

    def step(self, action, render: bool = True) -> tuple[dict, bool, dict]:
        """Apply ``action`` (clipped to [-1, 1]; delayed by ``action_latency``); returns (obs, success, info).

        With ``render=False`` the observation holds no images (faster, for expert checks).
        """
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(4), -1.0, 1.0)
        self._pending.append(action)
        self._obs, _, _, _, info = self.env.step(self._pending.popleft())
        self.steps += 1
        obs = self.observation() if render else {"images": {}, "state": self.state()}
        return obs, bool(info["success"]), info

    @property
    def raw_obs(self) -> np.ndarray:
        """MetaWorld's 39-d observation (what the scripted experts read)."""
        return self._obs

    def state(self) -> np.ndarray:
        """The policy's state: hand xyz, gripper (``proprio``, 4-d) [+ goal xyz (``full``, 7-d)]."""
        if self.obs_mode == "proprio":
            return self._obs[:4].astype(np.float32)
        return np.concatenate([self._obs[:4], self._obs[-3:]]).astype(np.float32)

    def layout(self) -> dict:
        """The episode's layout (not a policy input in ``proprio`` mode): ``goal_pos`` (MetaWorld ``obs[-3:]``),
        ``obj_pos`` (``obs[4:7]``, the task's first object), ``rand_vec`` (the reset vector) and its ``region``."""
        rand_vec = np.asarray(self.env._last_rand_vec, dtype=float)
        return {"goal_pos": [float(x) for x in self._obs[-3:]], "obj_pos": [float(x) for x in self._obs[4:7]],
                "rand_vec": [float(x) for x in rand_vec], "region": region_of(self.task, rand_vec)}

    def observation(self) -> dict:
        """Images of every camera and the state."""
        return {"images": self.render(), "state": self.state()}

    # ---------------------------------------------------------------- rendering
    def render(self, cameras: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """``{camera: uint8 (H, W, 3)}``, corner views flipped upright."""
        out = {}
        for cam in cameras or self.cameras:
            self.renderer.update_scene(self.data, camera=cam)
            img = self.renderer.render()
            out[cam] = np.ascontiguousarray(img[::-1, ::-1]) if cam in _FLIPPED else img.copy()
        return out

    def close(self) -> None:
        """Free the renderer and the MuJoCo env."""
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None
        self.env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
