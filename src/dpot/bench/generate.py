"""Expert dataset generation: scripted-expert episodes of one task in one domain -> a LeRobotDataset v3.

Layout of every dataset written here:
    observation.images.<camera>   (H, W, 3) uint8, dtype "image" (PNG) by default or "video" (mp4)
    observation.state             (4,) float32 hand xyz, gripper opening (``obs="proprio"``)
                                  or (7,) float32: the same + goal xyz (``obs="full"``)
    action                        (4,) float32 in [-1, 1]: hand dx, dy, dz, gripper
    task                          the task's sentence
Every MetaWorld step (12.5 ms simulated) is one frame; the dataset is labelled ``fps=10`` (a slowed-down
clock, as in the CPU study; the frame *spacing* is what policies use). Only successful episodes are kept;
each stops ``extra_frames`` frames after the first success (at most ``max_steps``). Episode *i* of the
attempt sequence uses seed ``seed + i``, so the source and target datasets made with the same seed share
layouts. ``region`` (``all`` | ``id`` | ``ood``) draws every layout in that half of the task's range
(:data:`dpot.bench.env.REGION_SPLITS`). The settings, the domain spec and one record per kept episode are stored
in ``meta/dpot_bench.json``::

    {"settings": {...}, "summary": {...},
     "episodes": [{"episode_index": 0, "seed": 12, "region": "id", "goal_pos": [x, y, z], "obj_pos": [x, y, z],
                   "rand_vec": [...], "length": 71}, ...]}

(goal/object positions are recorded for analysis; in ``proprio`` mode they are not policy inputs).
``settings`` holds ``obs``/``region`` only when they differ from ``full``/``all``, so datasets made before
these options existed keep matching their settings.

``layout="lerobot"`` writes LeRobot's MetaWorld layout instead (:mod:`dpot.bench.env`): one image
``observation.image`` (480, 480, 3) from LeRobot's ``corner2`` view, the 4-d state, labelled ``fps=80`` as
LeRobot's env declares; ``settings`` then holds ``"layout": "lerobot"``.

The dataset is written to a hidden temp folder next to ``out`` and renamed to ``out`` only once finalized, so
an interrupted run never leaves a dataset that loads as if complete.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from dpot.bench.domains import check_camera, resolve_spec
from dpot.bench.env import (
    ACTION_NAMES,
    DEFAULT_CAMERAS,
    LEROBOT_CAMERA,
    LEROBOT_FPS,
    LEROBOT_IMAGE_KEY,
    LEROBOT_IMAGE_SIZE,
    OBS_MODES,
    DomainEnv,
    check_layout,
    check_obs,
    check_region,
    check_task,
)
from dpot.errors import UserError
from dpot.launch import set_env_defaults

META_FILE = "meta/dpot_bench.json"
DESCRIPTIONS = {
    "push-v3": "Push the puck to a goal",
    "pick-place-v3": "Pick and place a puck to a goal",
    "door-open-v3": "Open a door with a revolving joint",
    "button-press-topdown-v3": "Press a button from the top",
    "drawer-open-v3": "Open a drawer",
    "reach-v3": "Reach a goal position",
}
FPS = 10

_WORKER: dict[str, Any] = {}


def _worker_init(task, spec, image_size, cameras, fast_render, obs, layout="dpot"):
    set_env_defaults()
    import torch  # noqa: F401  (keep intra-op threads low if torch was imported)

    torch.set_num_threads(1)
    _WORKER["env"] = DomainEnv(task, spec, image_size=image_size, cameras=cameras, fast_render=fast_render,
                               obs=obs, layout=layout)


def _worker_rollout(args):
    from dpot.bench.experts import rollout_expert

    seed, noise, extra_frames, max_steps, region = args
    return seed, rollout_expert(_WORKER["env"], seed, noise=noise, extra_frames=extra_frames, max_steps=max_steps,
                                region=region)


def _episodes(settings: dict, seeds: range, workers: int):
    """Yield (seed, episode) in seed order, rolling out on ``workers`` processes (1 = in this process)."""
    region = settings.get("region", "all")
    args = [(s, settings["noise"], settings["extra_frames"], settings["max_steps"], region) for s in seeds]
    init = (settings["task"], settings["spec"], settings["image_size"], tuple(settings["cameras"]),
            settings["fast_render"], settings.get("obs", "full"), settings.get("layout", "dpot"))
    if workers <= 1:
        _worker_init(*init)
        try:
            for a in args:
                yield _worker_rollout(a)
        finally:
            _WORKER.pop("env").close()
        return
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(workers, initializer=_worker_init, initargs=init)
    try:
        window, pending = 2 * workers, []
        it = iter(args)
        for a in it:
            pending.append(pool.apply_async(_worker_rollout, (a,)))
            if len(pending) >= window:
                break
        while pending:
            result = pending.pop(0).get()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.apply_async(_worker_rollout, (nxt,)))
            yield result
    finally:
        pool.terminate()
        pool.join()


def image_keys(cameras, layout: str = "dpot") -> dict[str, str]:
    """camera -> dataset key: ``observation.images.<camera>``, or LeRobot's ``observation.image`` (lerobot)."""
    if layout == "lerobot":
        return {LEROBOT_CAMERA: LEROBOT_IMAGE_KEY}
    return {c: f"observation.images.{c}" for c in cameras}


def _features(cameras, image_size, use_videos, obs="full", layout="dpot"):
    dtype = "video" if use_videos else "image"
    feats = {key: {"dtype": dtype, "shape": (image_size, image_size, 3), "names": ["height", "width", "channels"]}
             for key in image_keys(cameras, layout).values()}
    names = OBS_MODES[obs]
    feats["observation.state"] = {"dtype": "float32", "shape": (len(names),), "names": list(names)}
    feats["action"] = {"dtype": "float32", "shape": (4,), "names": ACTION_NAMES}
    return feats


def _check_out(out: Path, settings: dict, overwrite: bool) -> dict | None:
    """None when ``out`` is free; the stored summary when it already holds this very dataset."""
    if not out.exists():
        return None
    if out.is_file():
        raise UserError(f"--out {out}: is a file; give a folder path")
    if not any(out.iterdir()):
        out.rmdir()
        return None
    meta = out / META_FILE
    if not meta.is_file():
        raise UserError(f"--out {out}: folder is not empty and holds no dpot bench dataset; choose another --out")
    stored = json.loads(meta.read_text())
    if overwrite:
        shutil.rmtree(out)
        return None
    if stored.get("settings") != settings:
        old = stored.get("settings", {})
        raise UserError(f"--out {out}: already holds a different dataset (task={old.get('task')}, "
                        f"domain={old.get('spec', {}).get('name')}, episodes={old.get('episodes')}); "
                        f"choose another --out or pass --overwrite")
    return stored["summary"]


def _record_episodes(ds, rollouts, episodes: int, *, keys: dict, cameras, description: str, bar
                     ) -> tuple[int, list[dict]]:
    """Add the successful ``(seed, episode)`` rollouts to the LeRobotDataset ``ds`` until ``episodes`` are kept.

    Returns ``(attempts, records)``: the rollouts consumed and one record per kept episode (``episode_index``,
    ``seed``, its layout, ``length``)."""
    attempts, records = 0, []
    for ep_seed, ep in rollouts:
        attempts += 1
        if ep["success"]:
            for t in range(ep["length"]):
                frame = {keys[c]: ep["images"][c][t] for c in cameras}
                frame["observation.state"] = ep["state"][t]
                frame["action"] = ep["action"][t]
                frame["task"] = description
                ds.add_frame(frame)
            ds.save_episode()
            records.append({"episode_index": len(records), "seed": int(ep_seed), **ep["layout"],
                            "length": int(ep["length"])})
            bar.update(1)
            bar.set_postfix(success=f"{len(records) / attempts:.2f}")
        if len(records) >= episodes:
            break
    return attempts, records


def generate_dataset(task: str, domain="source", episodes: int = 50, out: str | Path = "data/bench",
                     image_size: int = 96, cameras: tuple[str, ...] = DEFAULT_CAMERAS, seed: int = 0, *,
                     noise: float = 0.05, extra_frames: int = 5, max_steps: int = 150, use_videos: bool = False,
                     workers: int = 1, fast_render: bool = True, overwrite: bool = False,
                     progress: bool = True, obs: str = "full", region: str = "all", layout: str = "dpot") -> dict:
    """Write ``episodes`` successful expert episodes of ``task`` in ``domain`` to the LeRobotDataset ``out``.

    ``domain``: "source", "target", "target-visual", a JSON spec path, a dict or a ``DomainSpec``. ``obs``:
    ``proprio`` (4-d state) or ``full`` (7-d); ``region``: ``all``, ``id`` or ``ood``; ``layout``: ``dpot`` or
    ``lerobot`` (then ``cameras`` is LeRobot's, ``image_size`` must be 480 and ``obs`` ``proprio``). Returns
    a summary dict
    (``episodes``, ``attempts``, ``expert_success_rate``, ``frames``, ``seconds``, ``episodes_per_s``, ...).
    If ``out`` already holds the same dataset (same settings) it is reused and its summary returned.
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from tqdm import tqdm

    check_task(task)
    cameras = tuple(check_camera(c) for c in cameras)
    spec = resolve_spec(domain)
    check_obs(obs)
    check_region(region)
    check_layout(layout)
    fps = FPS
    if layout == "lerobot":
        if obs != "proprio":
            raise UserError(f"--obs: the lerobot layout's state is LeRobot's 4-d agent_pos (--obs proprio), "
                            f"not --obs {obs}")
        if int(image_size) != LEROBOT_IMAGE_SIZE:
            raise UserError(f"--image-size: the lerobot layout is LeRobot's env size {LEROBOT_IMAGE_SIZE}, not "
                            f"{image_size}; leave --image-size out (the policy resizes)")
        cameras, fps = (LEROBOT_CAMERA,), LEROBOT_FPS
    if episodes < 1:
        raise UserError(f"--episodes: must be >= 1, got {episodes}")
    out = Path(out)
    with contextlib.suppress(Exception):
        import datasets

        datasets.disable_progress_bars()  # LeRobot's per-episode "Map" bars would drown our tqdm bar
    settings = {"task": task, "spec": spec.to_dict(), "episodes": int(episodes), "image_size": int(image_size),
                "cameras": list(cameras), "seed": int(seed), "noise": float(noise),
                "extra_frames": int(extra_frames), "max_steps": int(max_steps), "use_videos": bool(use_videos),
                "fast_render": bool(fast_render), "fps": fps}
    if layout != "dpot":
        settings["layout"] = layout
    if obs != "full":
        settings["obs"] = obs
    if region != "all":
        settings["region"] = region
    stored = _check_out(out, settings, overwrite)
    if stored is not None:
        return {**stored, "reused": True}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    max_attempts = 2 * episodes + 10
    t0 = time.perf_counter()
    ds = None
    try:
        keys = image_keys(cameras, layout)
        ds = LeRobotDataset.create(repo_id=f"local/{task}_{spec.name}", fps=fps,
                                   features=_features(cameras, image_size, use_videos, obs, layout), root=tmp,
                                   use_videos=use_videos, robot_type="sawyer_metaworld")
        bar = tqdm(total=episodes, desc=f"{task} [{spec.name}]", unit="ep", disable=not progress)
        attempts, records = _record_episodes(ds, _episodes(settings, range(seed, seed + max_attempts), workers),
                                             episodes, keys=keys, cameras=cameras, description=DESCRIPTIONS[task],
                                             bar=bar)
        bar.close()
        kept = len(records)
        lengths = [r["length"] for r in records]
        frames = sum(lengths)
        ds.finalize()
        if kept < episodes:
            raise UserError(f"task {task}: the expert succeeded in only {kept} of {attempts} attempts "
                            f"in domain '{spec.name}'; soften the domain spec or lower --episodes")
        seconds = time.perf_counter() - t0
        summary = {"out": str(out), "task": task, "domain": spec.name, "episodes": kept, "attempts": attempts,
                   "expert_success_rate": kept / attempts, "frames": frames,
                   "mean_length": float(np.mean(lengths)), "seconds": round(seconds, 2),
                   "episodes_per_s": kept / seconds, "fps": fps, "image_size": image_size, "layout": layout,
                   "cameras": list(cameras), "workers": workers, "obs": obs, "region": region,
                   "regions": {r: sum(e["region"] == r for e in records) for r in ("id", "ood")}}
        (tmp / META_FILE).write_text(json.dumps({"settings": settings, "summary": summary, "episodes": records},
                                                indent=2))
        os.replace(tmp, out)
    finally:
        if tmp.exists():  # interrupted or failed: close LeRobot's writers (they flush on GC) and drop the folder
            if ds is not None:
                with contextlib.suppress(Exception):
                    ds.finalize()
            del ds
            shutil.rmtree(tmp, ignore_errors=True)
    return summary
