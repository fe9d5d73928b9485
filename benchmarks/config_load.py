"""Config load time with ``--a.b=c`` overrides: ``dpot.config.load_train_config`` (the overrides merged into the
file's JSON as draccus merges them, then ``draccus.decode``) vs ``draccus.parse`` on the same cleaned config and the
same overrides (what it called before: the cleaned JSON written to a temporary file, an argparse parser built for
every field, help text included, then the merged dict decoded).

    .venv/bin/python -m benchmarks.config_load [--repeats 5] [CONFIG.json ...]

Default configs: ``configs/*.json`` (the seed run and its hand iterations, dpot's and the fork's formats), each with
the overrides a study job or an autopilot candidate passes (``OVERRIDES``). For each config both paths run
interleaved (A, B, A, B) in this process after one warm-up each; the resolved configs are checked equal
(``config_to_dict``) and the medians and their ratio printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# what a study job / an autopilot candidate sets on the command line
OVERRIDES = ["--steps=1500", "--seed=3", "--ot.lambda_ot=0.1", "--ot.reg=1e-3", "--optimizer.lr=3e-4",
             "--output_dir=outputs/bench/run", "--eval.val_episodes=[0,1]"]


def by_parse(path: Path, overrides: list[str]):
    """The load path before session 15: ``draccus.parse`` reading the cleaned JSON from a temporary file."""
    import draccus

    from dpot.config import DpotTrainConfig, read_raw_config, validate_config
    from dpot.config.check import check_tree
    from dpot.config.load import _apply_policy_defaults

    raw = read_raw_config(json.loads(path.read_text()))
    check_tree("", raw, DpotTrainConfig)
    _apply_policy_defaults(raw, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        cleaned = Path(tmp) / "config.json"
        cleaned.write_text(json.dumps(raw))
        cfg = draccus.parse(DpotTrainConfig, config_path=str(cleaned), args=list(overrides))
    validate_config(cfg)
    return cfg


def overrides_for(path: Path) -> list[str]:
    """``OVERRIDES`` less the keys a config's explicit optimizer does not have (a preset config has none)."""
    raw = json.loads(path.read_text())
    return [a for a in OVERRIDES if not a.startswith("--optimizer.") or isinstance(raw.get("optimizer"), dict)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from dpot.config import config_to_dict, load_train_config

    paths = [Path(p) for p in args.configs] or sorted((REPO / "configs").glob("*.json"))
    new, old = [], []
    for path in paths:
        ov = overrides_for(path)
        assert config_to_dict(load_train_config(path, ov)) == config_to_dict(by_parse(path, ov)), path  # + warm-up
        for _ in range(args.repeats):
            t = time.perf_counter()
            load_train_config(path, ov)
            new.append(time.perf_counter() - t)
            t = time.perf_counter()
            by_parse(path, ov)
            old.append(time.perf_counter() - t)
    a, b = statistics.median(new), statistics.median(old)
    print(f"{len(paths)} configs x {args.repeats} with {len(OVERRIDES)} overrides: load_train_config "
          f"{1e3 * a:.1f} ms, draccus.parse path {1e3 * b:.1f} ms (median), ratio {b / a:.0f}x; resolved configs equal")


if __name__ == "__main__":
    main()
