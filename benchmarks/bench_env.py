"""Speed and expert-success benchmark of ``dpot.bench`` (results go to docs/benchmarks.md).

    MUJOCO_GL=egl python benchmarks/bench_env.py [--episodes 10] [--gen-episodes 20] [--json out.json]

Measures: render ms per frame per camera (96 px, fast settings, and the stock settings for comparison),
physics ms per step, scripted-expert success per task and domain (seeded episodes, no rendering), and
dataset generation episodes/s (push-v3, source, PNG images, 2 cameras, 1 worker).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from dpot.bench.env import DomainEnv  # noqa: E402
from dpot.bench.experts import rollout_expert  # noqa: E402
from dpot.bench.generate import generate_dataset  # noqa: E402

TASKS = ("push-v3", "pick-place-v3", "door-open-v3", "button-press-topdown-v3")
CAMERAS = ("corner4", "gripperPOV", "topview")


def render_ms(domain: str, fast: bool, size: int = 96, frames: int = 60) -> dict[str, float]:
    """Median ms to render one frame of each camera (after a random-action step)."""
    out = {}
    with DomainEnv("push-v3", domain, image_size=size, cameras=CAMERAS, fast_render=fast) as env:
        env.reset(0)
        rng = np.random.default_rng(0)
        times = {c: [] for c in CAMERAS}
        step_ms = []
        for _ in range(frames):
            t = time.perf_counter()
            env.step(rng.uniform(-1, 1, 4), render=False)
            step_ms.append(1e3 * (time.perf_counter() - t))
            for c in CAMERAS:
                t = time.perf_counter()
                env.render((c,))
                times[c].append(1e3 * (time.perf_counter() - t))
        out = {c: float(np.median(v)) for c, v in times.items()}
        out["physics_step"] = float(np.median(step_ms))
    return out


def expert_success(task: str, domain: str, episodes: int) -> dict:
    """Success rate and mean length of the noisy scripted expert over seeds 0..episodes-1."""
    with DomainEnv(task, domain, image_size=16, cameras=("gripperPOV",)) as env:
        runs = [rollout_expert(env, s, record=False) for s in range(episodes)]
    return {"success": float(np.mean([r["success"] for r in runs])),
            "mean_length": float(np.mean([r["length"] for r in runs]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=10, help="expert episodes per task and domain")
    ap.add_argument("--gen-episodes", type=int, default=20, help="episodes for the generation timing")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    res = {"cpu_count": os.cpu_count(), "load_avg": os.getloadavg()[0]}
    res["render_ms"] = {f"{d}/{'fast' if f else 'stock'}": render_ms(d, f)
                        for d, f in (("source", True), ("target", True), ("source", False))}
    print(json.dumps(res["render_ms"], indent=1), flush=True)
    res["expert"] = {f"{t}/{d}": expert_success(t, d, args.episodes) for t in TASKS for d in ("source", "target")}
    print(json.dumps(res["expert"], indent=1), flush=True)
    tmp = tempfile.mkdtemp()
    try:
        s = generate_dataset("push-v3", "source", args.gen_episodes, os.path.join(tmp, "ds"), progress=False)
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(os.path.join(tmp, "ds")) for f in fs)
    finally:
        shutil.rmtree(tmp)
    res["generation"] = {k: s[k] for k in ("episodes", "frames", "seconds", "episodes_per_s", "expert_success_rate")}
    res["generation"]["frames_per_s"] = s["frames"] / s["seconds"]
    res["generation"]["mb"] = size / 1e6
    res["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(res["generation"], indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
