"""Closed-loop evaluation of a trained LeRobot Diffusion Policy in a benchmark domain.

``evaluate_policy`` loads a ``pretrained_model/`` folder (``DiffusionPolicy.from_pretrained`` and the saved
pre/post-processors), reads the cameras and image size it expects from its config, runs ``episodes`` seeded
episodes (seeds ``seed, seed+1, ...``; the default 100000 keeps them apart from the generation seeds) in one
or more processes, and reports the success rate with a 95% Wilson interval and the mean episode length.

The observation mode (``proprio``: 4-d state, ``full``: 7-d) is read from the policy's ``observation.state``
input shape, so a policy is always evaluated with the observations it was trained on; an explicit ``obs`` that
disagrees is a ``UserError``. ``region`` (``all`` | ``id`` | ``ood``) draws every episode's layout in that half
of the task's range (:data:`dpot.bench.env.REGION_SPLITS`); the same seed and region give the same layout for
every policy.

Layout (:data:`dpot.bench.env.LAYOUTS`): a policy with an ``observation.image`` input (LeRobot's MetaWorld
layout, e.g. trained on ``dpot bench generate --layout lerobot`` data by dpot or by ``lerobot-train``) is
evaluated in the ``lerobot`` layout: LeRobot's corner2 view at 480 px, resized to the policy's input size when
that differs, and the 4-d state. Any LeRobot policy type loads (``get_policy_class`` of its ``config.json``).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np

from dpot.bench.domains import check_camera, resolve_spec
from dpot.bench.env import (
    LEROBOT_CAMERA,
    LEROBOT_IMAGE_KEY,
    OBS_MODES,
    check_layout,
    check_obs,
    check_region,
    check_task,
)
from dpot.errors import UserError
from dpot.intervals import newcombe_interval, wilson_interval  # noqa: F401  (re-exported: callers import them here)
from dpot.launch import set_env_defaults
from dpot.rundir import MODEL_DIR, POLICY_CONFIG_FILE, WEIGHTS_FILE

EVAL_SEED = 100_000


def _policy_dir(policy_path: str | Path) -> Path:
    path = Path(policy_path)
    if (path / MODEL_DIR / POLICY_CONFIG_FILE).is_file():
        path = path / MODEL_DIR
    if not (path / POLICY_CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise UserError(f"--policy {policy_path}: not a LeRobot {MODEL_DIR} folder "
                        f"({POLICY_CONFIG_FILE} and {WEIGHTS_FILE} missing)")
    return path


def _load(policy_dir: Path, device: str):
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    ptype = json.loads((policy_dir / POLICY_CONFIG_FILE).read_text()).get("type", "diffusion")
    policy = get_policy_class(ptype).from_pretrained(str(policy_dir))
    policy.config.device = device
    policy.to(device).eval()
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(policy_dir),
                                         preprocessor_overrides={"device_processor": {"device": device}})
    return policy, pre, post


def _check_policy_features(policy_dir: Path, obs: str | None = None) -> str:
    """The observation mode the policy was trained on (from its ``observation.state`` shape: 4 = ``proprio``,
    7 = ``full``); UserError if its inputs match no benchmark observation or disagree with an explicit ``obs``."""
    feats = json.loads((policy_dir / POLICY_CONFIG_FILE).read_text()).get("input_features", {})
    state = feats.get("observation.state", {}).get("shape")
    by_dim = {len(names): mode for mode, names in OBS_MODES.items()}
    if state is None or len(state) != 1 or state[0] not in by_dim:
        raise UserError(f"--policy {policy_dir}: expects observation.state of shape {state}; dpot bench provides "
                        f"4 (--obs proprio: hand xyz, gripper) or 7 (--obs full: + goal xyz)")
    mode = by_dim[state[0]]
    if obs is not None and check_obs(obs) != mode:
        raise UserError(f"--obs: the policy was trained with observation.state of {state[0]} dims (--obs {mode}), "
                        f"not --obs {obs}; leave --obs out or pass --obs {mode}")
    cams = [k.split(".", 2)[2] for k in feats if k.startswith("observation.images.")]
    if not cams and LEROBOT_IMAGE_KEY in feats:
        return mode  # LeRobot's MetaWorld layout (policy_layout)
    if not cams:
        raise UserError(f"--policy {policy_dir}: has no observation.images.<camera> inputs (nor LeRobot's "
                        f"{LEROBOT_IMAGE_KEY})")
    for cam in cams:
        check_camera(cam, where=f"--policy {policy_dir}")
    return mode


def policy_layout(policy_dir: Path, layout: str | None = None) -> str:
    """``lerobot`` when the policy reads LeRobot's ``observation.image`` and no ``observation.images.*``, else
    ``dpot``; UserError when an explicit ``layout`` disagrees."""
    feats = json.loads((policy_dir / POLICY_CONFIG_FILE).read_text()).get("input_features", {})
    own = "lerobot" if LEROBOT_IMAGE_KEY in feats and not any(k.startswith("observation.images.") for k in feats) \
        else "dpot"
    if layout is not None and check_layout(layout) != own:
        reads = LEROBOT_IMAGE_KEY if own == "lerobot" else "observation.images.<camera>"
        raise UserError(f"--layout: the policy reads {reads} (--layout {own}), not --layout {layout}; leave "
                        f"--layout out or pass --layout {own}")
    return own


def policy_cameras(config) -> tuple[tuple[str, ...], int]:
    """Cameras (``observation.images.<cam>`` input features, or LeRobot's ``corner2`` for its
    ``observation.image``) and the image size a policy config expects."""
    cams, size = [], None
    for key, feat in config.input_features.items():
        if key.startswith("observation.images."):
            cams.append(key.split(".", 2)[2])
            size = int(feat.shape[-1])
        elif key == LEROBOT_IMAGE_KEY:
            cams.append(LEROBOT_CAMERA)
            size = int(feat.shape[-1])
    return tuple(cams), size or 96


def _image_tensor(img: np.ndarray, size: int):
    """uint8 ``(H, W, 3)`` -> float ``[1, 3, size, size]`` in [0, 1] (bilinear, antialiased when H != size)."""
    import torch

    x = torch.from_numpy(img).permute(2, 0, 1).float().div(255.0).unsqueeze(0)
    if x.shape[-2:] != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                            align_corners=False)
    return x


def needs_images(policy) -> bool:
    """Whether the observation handed to the policy's next ``select_action`` can reach an inference.

    LeRobot's DiffusionPolicy keeps the last ``n_obs_steps`` observations and samples a new action chunk only
    when its action queue is empty; with ``L`` queued actions left, the next observation is used iff
    ``L < n_obs_steps``. The other observations need their state (queued) but not their images: skipping
    those renders gives the same actions (tests/bench/test_generate_eval.py) and saves 7 of 8 renders at
    n_obs_steps=1, n_action_steps=8. LeRobot's ACTPolicy (without temporal ensembling) looks at an observation
    only when its action queue is empty. Unknown policy types: always True."""
    act_queue = getattr(policy, "_action_queue", None)
    if act_queue is not None and getattr(policy.config, "temporal_ensemble_coeff", None) is None:
        return len(act_queue) == 0
    queues = getattr(policy, "_queues", None)
    n_obs = getattr(getattr(policy, "config", None), "n_obs_steps", None)
    if not isinstance(queues, dict) or "action" not in queues or not n_obs:
        return True
    return len(queues["action"]) < int(n_obs)


def rollout(policy, pre, post, env, seed: int, *, task: str, cameras: tuple[str, ...], max_steps: int,
            render_all: bool = False, keep_frames: bool = False, region: str = "all",
            keys: dict[str, str] | None = None, image_size: int | None = None) -> dict:
    """One closed-loop episode: ``{"success", "length", "actions" (T, 4), "layout" (:meth:`DomainEnv.layout`
    at the reset: region, reset vector, goal and object position), "frames" (if keep_frames)}``.

    Images are rendered only for observations that can reach an inference (:func:`needs_images`) unless
    ``render_all`` or ``keep_frames``; a skipped observation carries the last rendered images. ``keys``: camera ->
    policy input key (default ``observation.images.<camera>``); ``image_size``: resize frames of another size."""
    import torch

    from dpot.bench.generate import DESCRIPTIONS

    policy.reset()
    obs = env.reset(seed, region=region)
    layout = env.layout()
    images = obs["images"]
    frames, actions, success, length = [], [], False, max_steps
    for t in range(max_steps):
        if obs["images"]:
            images = obs["images"]
        batch = {(keys or {}).get(c, f"observation.images.{c}"):
                 _image_tensor(images[c], image_size or images[c].shape[0]) for c in cameras}
        batch["observation.state"] = torch.from_numpy(obs["state"]).unsqueeze(0)
        batch["task"] = [DESCRIPTIONS[task]]
        with torch.inference_mode():
            action = post(policy.select_action(pre(batch))).squeeze(0).cpu().numpy()
        actions.append(action)
        if keep_frames:
            frames.append(np.concatenate([images[c] for c in cameras], axis=1))
        obs, done, _ = env.step(action, render=render_all or keep_frames or needs_images(policy))
        if done:
            success, length = True, t + 1
            break
    out = {"success": success, "length": length, "actions": np.asarray(actions), "layout": layout}
    if keep_frames:
        out["frames"] = frames
    return out


_DONE = None  # shared episode counter (multiprocessing.Value) of this process, for the parent's progress bar


def _set_counter(counter) -> None:
    global _DONE
    _DONE = counter


def _run_episodes(policy_dir: str, task: str, spec: dict, seeds: list[int], max_steps: int, device: str,
                  gif_dir: str | None, gif_count: int, threads: int, obs: str = "full", region: str = "all",
                  layout: str = "dpot", on_episode=None) -> list[dict]:
    """Run the given seeds in this process; returns one record per episode. After each episode: ``on_episode()``
    and the shared counter of a pool worker (:func:`_set_counter`) is raised by one."""
    set_env_defaults()
    import torch

    from dpot.bench.env import DomainEnv

    torch.set_num_threads(threads)
    policy, pre, post = _load(Path(policy_dir), device)
    cameras, size = policy_cameras(policy.config)
    for c in cameras:
        check_camera(c, where=f"policy {policy_dir}")
    keys = {LEROBOT_CAMERA: LEROBOT_IMAGE_KEY} if layout == "lerobot" else None
    records = []
    with DomainEnv(task, spec, image_size=size, cameras=cameras, obs=obs, layout=layout) as env:
        for k, seed in enumerate(seeds):
            gif = bool(gif_dir) and k < gif_count
            r = rollout(policy, pre, post, env, seed, task=task, cameras=cameras, max_steps=max_steps,
                        keep_frames=gif, region=region, keys=keys, image_size=size)
            lay = r["layout"]
            records.append({"seed": seed, "success": r["success"], "length": r["length"],
                            "layout": {"region": lay["region"], "rand_vec": lay["rand_vec"],
                                       "goal_pos": lay["goal_pos"], "obj_pos": lay["obj_pos"]}})
            if _DONE is not None:
                with _DONE.get_lock():
                    _DONE.value += 1
            if on_episode is not None:
                on_episode()
            if gif:
                import imageio.v2 as imageio

                name = f"rollout_seed{seed}_{'success' if r['success'] else 'fail'}.gif"
                imageio.mimsave(Path(gif_dir) / name, r["frames"], duration=0.08, loop=0)
    return records


def evaluate_policy(policy_path: str | Path, task: str, domain="target", episodes: int = 20,
                    seed: int = EVAL_SEED, *, max_steps: int = 150, workers: int | None = None,
                    device: str | None = None, gif_dir: str | Path | None = None, gifs: int = 3,
                    out: str | Path | None = None, progress: bool = True, obs: str | None = None,
                    region: str = "all", layout: str | None = None) -> dict:
    """Run ``episodes`` closed-loop episodes of the policy at ``policy_path`` in ``domain``; return a result dict
    (a progress bar counts finished episodes unless ``progress=False``).

    Result keys: ``success_rate``, ``ci95`` ([low, high], Wilson), ``successes``, ``episodes``,
    ``mean_length`` (success = first success step, failure = ``max_steps``), ``episodes_detail``, ``seconds``,
    and the settings. ``workers`` processes share the episodes (default: up to the CPU count, at most 8).
    ``gif_dir`` gets the first ``gifs`` rollouts as GIFs (all cameras side by side). ``out``: also write JSON.
    ``obs``: None = the policy's own mode (module docstring); ``region``: the half of the layout range;
    ``layout``: None = the policy's own (``dpot`` or ``lerobot``, module docstring).
    """
    check_task(task)
    spec = resolve_spec(domain)
    check_region(region)
    policy_dir = _policy_dir(policy_path)
    if episodes < 1:
        raise UserError(f"--episodes: must be >= 1, got {episodes}")
    layout = policy_layout(policy_dir, layout)
    obs = _check_policy_features(policy_dir, obs)
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if workers is None:
        workers = max(1, min(episodes, os.cpu_count() or 1, 8))
    workers = max(1, min(int(workers), episodes))
    if gif_dir is not None:
        Path(gif_dir).mkdir(parents=True, exist_ok=True)
    seeds = list(range(seed, seed + episodes))
    chunks = [seeds[i::workers] for i in range(workers)]
    # torch threads per worker: OMP_NUM_THREADS when set (two studies side by side on 2 cores set it to 1;
    # more threads than cores makes OpenMP spin: measured 3x slower), else the cores shared by the workers
    omp = os.environ.get("OMP_NUM_THREADS", "")
    threads = int(omp) if omp.isdigit() and int(omp) > 0 else max(1, (os.cpu_count() or 1) // workers)
    t0 = time.perf_counter()
    args = [(str(policy_dir), task, spec.to_dict(), chunk, max_steps, device,
             str(gif_dir) if gif_dir is not None and i == 0 else None, gifs, threads, obs, region, layout)
            for i, chunk in enumerate(chunks)]
    ctx = mp.get_context("spawn")
    counter = ctx.Value("i", 0)
    from tqdm.auto import tqdm

    bar = tqdm(total=episodes, desc=f"eval {task} [{spec.name}]", unit="ep", disable=not progress,
               dynamic_ncols=True, leave=False)
    if workers == 1:
        records = _run_episodes(*args[0], on_episode=lambda: bar.update(1))
    else:
        with ctx.Pool(workers, initializer=_set_counter, initargs=(counter,)) as pool:
            pending = pool.starmap_async(_run_episodes, args)
            while not pending.ready():
                pending.wait(0.5)
                bar.update(counter.value - bar.n)
            records = [r for part in pending.get() for r in part]
            bar.update(counter.value - bar.n)
    bar.refresh()       # the final count drawn even when the last episodes ended within tqdm's redraw interval
    bar.close()
    records.sort(key=lambda r: r["seed"])
    n_ok = sum(r["success"] for r in records)
    low, high = wilson_interval(n_ok, len(records))
    result = {"policy": str(policy_dir), "task": task, "domain": spec.name, "region": region, "obs": obs,
              "layout": layout,
              "episodes": len(records),
              "successes": n_ok, "success_rate": n_ok / len(records), "ci95": [low, high],
              "mean_length": float(np.mean([r["length"] for r in records])), "max_steps": max_steps,
              "seed": seed, "workers": workers, "device": device,
              "seconds": round(time.perf_counter() - t0, 2), "episodes_detail": records}
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2))
    return result
