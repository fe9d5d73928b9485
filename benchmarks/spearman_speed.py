"""Speed of benchmarks.objective_signals.rho_with_interval's bootstrap: the Spearman on numpy average ranks
(objective_signals.spearman) against scipy.stats.spearmanr, in one process on the same points.

    python -m benchmarks.spearman_speed [--points 48] [--runs 16] [--boot 2000] [--repeats 3]

Points mimic the objective study's predictivity table: ``runs`` runs, ``points / runs`` checkpoints each, signal
and success with ties. Prints the median seconds of each and their ratio, and that both give the same rho and
interval."""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import numpy as np
from scipy.stats import spearmanr

from benchmarks import objective_signals as osig


def _scipy_spearman(x, y):
    if len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=48)
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    pts = [(f"r{i % a.runs}", float(rng.normal()), float(rng.integers(0, 50)) / 50) for i in range(a.points)]
    times, res = {}, {}
    for name, fn in (("scipy.stats.spearmanr", _scipy_spearman), ("numpy average ranks", osig.spearman)):
        with mock.patch.object(osig, "spearman", fn):
            t = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                res[name] = osig.rho_with_interval(pts, boot=a.boot)
                t.append(time.perf_counter() - t0)
        times[name] = statistics.median(t)
        print(f"{name:24s} {times[name]:.3f} s  rho {res[name]['rho']:+.6f}  ci95 {res[name]['ci95']}")
    (s, n) = times.values()
    same = all(np.allclose(list(res["scipy.stats.spearmanr"].values())[i], list(res["numpy average ranks"].values())[i])
               for i in range(2))
    print(f"ratio scipy / numpy: {s / n:.1f}x; same rho and interval: {same}")


if __name__ == "__main__":
    main()
