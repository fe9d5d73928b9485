"""Time from ``dpot train ...`` to its ``error:`` line for ten bad configs, beside ``dpot --help``'s start-up, all in
this process's session (docs/benchmarks.md, "Time to a config error").

    .venv/bin/python benchmarks/config_errors.py [--repeats 3]

The config is configs/tour_cpu.json with one mistake each; the run's folder is a temp dir (relative dataset paths
resolve there). Prints the median wall time per case, the error line, and whether the light pre-check
(dpot.train.precheck: no LeRobot import) or the full load caught it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DPOT = str(Path(sys.executable).parent / "dpot")

CASES = [
    ("config file missing", ["--config_path=nope.json"]),
    ("config not JSON", ["--config_path=bad.json"]),
    ("negative LR", ["--policy.optimizer_lr=-0.001"]),
    ("zero LR", ["--policy.optimizer_lr=0"]),
    ("output_dir is a file", ["--output_dir=a_file"]),
    ("dataset root missing", ["--dataset.root=data/none"]),
    ("source root missing", ["--source_dataset.root=data/none"]),
    ("unknown key", ["--ot.regg=0.1"]),
    ("ot.reg <= 0", ["--ot.reg=0"]),
    ("unknown policy type", ["--policy.type=vqbett"]),
]


def timed(argv: list[str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - t0, (res.stderr.strip().splitlines() or [""])[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        shutil.copytree(ROOT / "configs", cwd / "configs")
        (cwd / "bad.json").write_text("{not json")
        (cwd / "a_file").write_text("x")
        for d in ("data/real/meta", "data/sim/meta"):   # dataset roots that pass the path check
            (cwd / d).mkdir(parents=True)
            (cwd / d / "info.json").write_text(json.dumps({}))
        base = ["--config_path=configs/tour_cpu.json"]
        rows = [("dpot --help", statistics.median(timed([DPOT, "--help"], cwd)[0] for _ in range(args.repeats)), "")]
        for name, extra in CASES:
            argv = [DPOT, "train", *(base if not extra[0].startswith("--config_path") else []), *extra]
            runs = [timed(argv, cwd) for _ in range(args.repeats)]
            rows.append((name, statistics.median(t for t, _ in runs), runs[-1][1]))
    print("| case | time to the error line | error line |")
    print("|---|---|---|")
    for name, t, line in rows:
        print(f"| {name} | {t:.2f} s | `{line[:110]}` |")


if __name__ == "__main__":
    main()
