"""Config load time: ``dpot.config.load_train_config`` (``draccus.decode`` when there are no ``--a.b=c`` overrides)
vs ``draccus.parse`` on the same cleaned config (what it called before: builds an argparse parser, help text
included, then decodes the same dict).

    .venv/bin/python benchmarks/config_load.py [--repeats 5] [CONFIG.json ...]

Default configs: ``configs/*.json`` (the seed run and its hand iterations, dpot's and the fork's formats). For each
config both paths run interleaved (A, B, A, B) in this process after one warm-up each; the resolved configs are
checked equal (``config_to_dict``) and the medians and their ratio printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import draccus

    from dpot.config import (
        DpotTrainConfig,
        _apply_policy_defaults,
        _check_tree,
        config_to_dict,
        load_train_config,
        read_raw_config,
        validate_config,
    )

    def by_parse(path: Path):
        raw = read_raw_config(json.loads(path.read_text()))
        _check_tree("", raw, DpotTrainConfig)
        _apply_policy_defaults(raw, [])
        with tempfile.TemporaryDirectory() as tmp:
            cleaned = Path(tmp) / "config.json"
            cleaned.write_text(json.dumps(raw))
            cfg = draccus.parse(DpotTrainConfig, config_path=str(cleaned), args=[])
        validate_config(cfg)
        return cfg

    paths = [Path(p) for p in args.configs] or sorted((REPO / "configs").glob("*.json"))
    new, old = [], []
    for path in paths:
        assert config_to_dict(load_train_config(path)) == config_to_dict(by_parse(path)), path   # warm-up + check
        for _ in range(args.repeats):
            t = time.perf_counter()
            load_train_config(path)
            new.append(time.perf_counter() - t)
            t = time.perf_counter()
            by_parse(path)
            old.append(time.perf_counter() - t)
    a, b = statistics.median(new), statistics.median(old)
    print(f"{len(paths)} configs x {args.repeats}: load_train_config {1e3 * a:.1f} ms, draccus.parse path "
          f"{1e3 * b:.1f} ms (median), ratio {b / a:.0f}x; resolved configs equal")


if __name__ == "__main__":
    main()
