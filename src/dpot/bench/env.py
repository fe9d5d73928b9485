"""``DomainEnv``: one MetaWorld task in one domain, with seeded resets, multi-camera rendering and a 7-d state.

Observation (``DomainEnv.observation()``): ``{"images": {camera: uint8 (H, W, 3)}, "state": float32 (7,)}``
with state = hand xyz, gripper opening (MetaWorld ``obs[:4]``) and goal xyz (``obs[-3:]``).
Action: 4-d in [-1, 1] (xyz motion of the hand, gripper), clipped. Cameras: ``corner4`` (a fixed view,
flipped upright), ``gripperPOV`` (wrist), optionally ``topview``. One MetaWorld step is 12.5 ms of
simulated time (80 Hz); datasets record every step and label it ``fps=10`` (see ``dpot.bench.generate``).
Rendering uses fast settings (no MSAA, shadows or reflections) unless ``fast_render=False``.
"""

from __future__ import annotations

import os
import warnings
from collections import deque

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from dpot.bench.domains import DomainSpec, apply_model_spec, apply_texture, check_camera, resolve_spec  # noqa: E402
from dpot.errors import UserError, did_you_mean  # noqa: E402

TASKS = ("push-v3", "pick-place-v3", "door-open-v3", "button-press-topdown-v3", "drawer-open-v3", "reach-v3")
DEFAULT_CAMERAS = ("corner4", "gripperPOV")
_FLIPPED = ("corner", "corner2", "corner3", "corner4")  # MetaWorld's corner cameras render upside down
STATE_NAMES = ["hand_x", "hand_y", "hand_z", "gripper", "goal_x", "goal_y", "goal_z"]
ACTION_NAMES = ["dx", "dy", "dz", "grip"]


def check_task(task: str) -> str:
    """Return ``task`` if the benchmark supports it, else raise ``UserError`` naming it."""
    if task not in TASKS:
        raise UserError(f"task: unknown task '{task}'{did_you_mean(task, TASKS)}; choose from {', '.join(TASKS)}")
    return task


class DomainEnv:
    """A MetaWorld task (goal observable, randomized layouts) with a domain spec applied."""

    def __init__(self, task: str, domain: str | DomainSpec | dict = "source", *, image_size: int = 96,
                 cameras: tuple[str, ...] = DEFAULT_CAMERAS, fast_render: bool = True):
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

        self.task = check_task(task)
        self.spec = resolve_spec(domain)
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
    def reset(self, seed: int, render: bool = True) -> dict:
        """Start an episode; the same ``seed`` gives the same object and goal layout in every domain."""
        self.env.seed(int(seed))
        self._obs, _ = self.env.reset()
        self._pending = deque(np.zeros(4) for _ in range(self.spec.action_latency))
        self.steps = 0
        return self.observation() if render else {"images": {}, "state": self.state()}

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
        """7-d proprio + goal state: hand xyz, gripper, goal xyz."""
        return np.concatenate([self._obs[:4], self._obs[-3:]]).astype(np.float32)

    def observation(self) -> dict:
        """Images of every camera and the 7-d state."""
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
