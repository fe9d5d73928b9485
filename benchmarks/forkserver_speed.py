"""What the test suite's forked command runner (tests/dpotproc.py) saves per command: a tiny ``dpot train`` and a
``dpot report`` of its run, each as a real subprocess (``python -m dpot ...``) and forked from the pre-imported
server, alternated in one session.

    PYTHONPATH=tests python -m benchmarks.forkserver_speed [--repeats 3] [--work DIR]

Prints the median wall seconds of each and their ratio. The server's own start (it imports torch, LeRobot and
dpot once per pytest worker) is timed apart: it is paid once, the saving on every command."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dpotproc  # tests/dpotproc.py (PYTHONPATH=tests, as pytest's pythonpath gives it)
from dpot.data.toy import make_toy_dataset

POLICY = {"type": "diffusion", "pretrained_backbone_weights": None, "use_group_norm": True, "down_dims": [32, 64],
          "n_obs_steps": 2, "horizon": 16, "n_action_steps": 8, "num_inference_steps": 3, "push_to_hub": False,
          "device": "cpu"}


def _timed(fn) -> float:
    t = time.perf_counter()
    res = fn()
    assert res.returncode == 0, res.stderr[-2000:]
    return time.perf_counter() - t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None)
    a = ap.parse_args(argv)
    work = a.work or Path(tempfile.mkdtemp(prefix="forkserver-speed-"))
    roots = {d: work / f"ds_{d}" for d in ("source", "target")}
    for d, root in roots.items():
        if not root.exists():
            make_toy_dataset(root, d, episodes=4, image_size=32, cameras=("top",))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    os.environ.update({k: env[k] for k in ("OMP_NUM_THREADS", "HF_HUB_OFFLINE")})    # the server's environment

    def train_cmd(out: Path) -> list[str]:
        cfg = {"dataset": {"repo_id": "local/toy_target", "root": str(roots["target"])},
               "source_dataset": {"repo_id": "local/toy_source", "root": str(roots["source"])}, "policy": POLICY,
               "batch_size": 4, "steps": 4, "log_freq": 1, "save_freq": 1000, "num_workers": 0, "eval_freq": 2,
               "eval": {"n_batches": 1}, "output_dir": str(out)}
        (work / f"{out.name}.json").write_text(json.dumps(cfg))
        return [sys.executable, "-m", "dpot", "train", f"--config_path={work / f'{out.name}.json'}"]

    t = time.perf_counter()
    assert dpotproc.run([sys.executable, "-m", "dpot", "--help"], env=env, capture_output=True).returncode == 0
    start = time.perf_counter() - t
    times: dict[str, list[float]] = {k: [] for k in ("train subprocess", "train forked", "report subprocess",
                                                     "report forked")}
    for i in range(a.repeats):
        for how, runner in (("subprocess", subprocess.run), ("forked", dpotproc.run)):
            out = work / f"run_{how}_{i}"
            times[f"train {how}"].append(_timed(lambda r=runner, o=out: r(train_cmd(o), env=env,
                                                                           capture_output=True, text=True)))
            times[f"report {how}"].append(_timed(lambda r=runner, o=out: r(
                [sys.executable, "-m", "dpot", "report", str(o)], env=env, capture_output=True, text=True)))
    print(f"server start (imports, once per pytest worker): {start:.2f} s")
    for what in ("train", "report"):
        sub, fork = (statistics.median(times[f"{what} {h}"]) for h in ("subprocess", "forked"))
        print(f"dpot {what}: subprocess {sub:.2f} s, forked {fork:.2f} s (median of {a.repeats}): "
              f"{sub / fork:.2f}x, {sub - fork:.2f} s saved per command")


if __name__ == "__main__":
    main()
