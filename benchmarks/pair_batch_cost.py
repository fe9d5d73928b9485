"""Step time of the separate OT pair batch (``ot.pair_batch_size``) against dpot's in-batch pairing, same config
otherwise, run back to back in this process's machine.

    .venv/bin/python benchmarks/pair_batch_cost.py --config RUN_CONFIG.json [--steps 30] [--pairs 16]

``--config``: a dpot train config (e.g. a study job's ``configs/dp-ot-faithful-seed0.json``); the benchmark runs it
twice for ``--steps`` steps with ``ot.pair_batch_size`` = ``--pairs`` and = 0 (the domain probe, checkpoints and
evaluation off) and prints the median ``train/update_s`` of steps after the first logged window and their ratio.
Run it with ``OMP_NUM_THREADS=1`` on an otherwise idle machine (docs/benchmarks.md, "The separate OT pair batch").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run(cfg: dict, pairs: int, steps: int, out: Path) -> float:
    cfg = json.loads(json.dumps(cfg))
    cfg.update(steps=steps, log_freq=5, save_freq=10 * steps, eval_freq=0, output_dir=str(out))
    cfg["ot"]["pair_batch_size"] = pairs
    cfg.setdefault("eval", {})["domain_probe_freq"] = 0
    path = out.with_suffix(".json")
    path.write_text(json.dumps(cfg))
    subprocess.run([sys.executable, "-m", "dpot", "train", f"--config_path={path}"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["train/update_s"] for r in rows if "train/update_s" in r and r["step"] > 5)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--pairs", type=int, default=16)
    args = ap.parse_args(argv)
    cfg = json.loads(Path(args.config).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        with_pairs = run(cfg, args.pairs, args.steps, Path(tmp) / "pairs")
        in_batch = run(cfg, 0, args.steps, Path(tmp) / "in_batch")
    print(f"median update_s: pair batch ({args.pairs} pairs) {with_pairs:.3f} s, in-batch pairing {in_batch:.3f} s, "
          f"ratio {with_pairs / in_batch:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
