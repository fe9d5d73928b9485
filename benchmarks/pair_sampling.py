"""Sampler time per batch: phase pairing (dpot's default) vs DTW-weighted pairing from a pair file.

    .venv/bin/python benchmarks/pair_sampling.py [--episodes 50] [--length 150] [--top_k 20] [--batch_size 16]

Both samplers run interleaved (A, B, A, B) in this process over the same steps; prints microseconds per batch,
the added time per batch and that time as a share of the seed run's measured step (update_s 0.107 s +
dataloading_s 0.167 s; the batch sampler runs in the DataLoader's main process). Pairs: a synthetic full pair
file (every target frame paired with one source frame) for ``--top_k`` demos per target episode.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

SEED_STEP_S = 0.107 + 0.167  # the seed report's update_s + dataloading_s at the end of its run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--length", type=int, default=150)
    ap.add_argument("--top_k", type=int, default=20)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    from dpot.data.cotrain import CoTrainBatchSampler, EpisodeTable
    from dpot.data.pairs import Partner

    rng = np.random.default_rng(0)
    lengths = rng.integers(args.length - 20, args.length + 21, size=args.episodes)
    table = EpisodeTable(np.arange(args.episodes), np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    info = {}
    for et in range(args.episodes):
        demos = rng.choice(args.episodes, size=args.top_k, replace=False)
        info[et] = [Partner(int(d), float(rng.random()), {f: [int(f * lengths[d] // lengths[et])]
                                                          for f in range(int(lengths[et]))}) for d in demos]
    kw = {"batch_size": args.batch_size, "batch_ratio": 0.5, "seed": 0, "heuristic": True, "window_size": 10}
    samplers = {"phase": CoTrainBatchSampler(table, table, **kw),
                "pair file": CoTrainBatchSampler(table, table, pair_info=info, sharpness=10.0, cutoff=0.01,
                                                 topk_src_episodes=args.top_k, **kw)}
    times = {k: [] for k in samplers}
    for _ in range(args.reps):
        for name, s in samplers.items():
            t0 = time.perf_counter()
            for step in range(args.steps):
                s.global_batch(step)
            times[name].append((time.perf_counter() - t0) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    added = med["pair file"] - med["phase"]
    for k, v in med.items():
        print(f"{k:<10} {v * 1e6:8.1f} us/batch")
    print(f"added: {added * 1e6:.1f} us/batch = {100 * added / SEED_STEP_S:.3f} % of the seed's step "
          f"({SEED_STEP_S:.3f} s)")


if __name__ == "__main__":
    main()
