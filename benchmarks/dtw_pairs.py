"""``dpot pairs build`` time: dpot's own DTW (``dpot.data.dtw.dtw_align``) vs dtaidistance (C), equal results.

    .venv/bin/python benchmarks/dtw_pairs.py [--source ROOT --target ROOT] [--label action] [--window W] [--reps 3]

Without roots: synthetic episodes (``--episodes`` per domain, ``--length`` frames, 4-d, MetaWorld-like lengths).
Both implementations run on the same z-scored sequences in this process, interleaved (A, B, A, B), single thread;
prints seconds per full pair build, the ratio, the largest relative distance difference and the share of
identical paths (ties may be broken differently; distances must agree).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source")
    ap.add_argument("--target")
    ap.add_argument("--label", default="action", choices=["action", "state"])
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--length", type=int, default=120)
    ap.add_argument("--window", type=int, default=None)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    from dpot.data.dtw import dtw_align
    from dpot.data.pairs import build_pair_info, dtw_function, zscore
    from dpot.data.pairs_cli import LABEL_KEYS, read_sequences

    if args.source:
        key = LABEL_KEYS[args.label]
        tgt, src = (read_sequences(args.target, key, None, "--target"), read_sequences(args.source, key, None,
                                                                                          "--source"))
    else:
        rng = np.random.default_rng(0)

        def episodes(shift):
            out = {}
            for e in range(args.episodes):
                n = args.length + int(rng.integers(-20, 21))
                t = np.linspace(0, 1, n)[:, None] ** (1 + 0.3 * rng.random())
                out[e] = np.concatenate([np.sin(np.pi * (t + shift + 0.1 * rng.random((1, 2)))), t, t ** 2], 1)
                out[e] = out[e] + 0.01 * rng.normal(size=out[e].shape)
            return out

        tgt, src = episodes(0.0), episodes(0.05)
    tgt, src = zscore(tgt, src)
    dtai = dtw_function("dtaidistance")
    impls = {"dpot": dtw_align, "dtaidistance": dtai}
    times = {k: [] for k in impls}
    results = {}
    for _ in range(args.reps):
        for name, fn in impls.items():
            t0 = time.perf_counter()
            results[name] = build_pair_info(tgt, src, window=args.window, dtw=fn)
            times[name].append(time.perf_counter() - t0)
    a, b = results["dpot"], results["dtaidistance"]
    rel, same, total = 0.0, 0, 0
    for et in a:
        da = {p.src_episode: p for p in a[et]}
        for p in b[et]:
            q = da[p.src_episode]
            rel = max(rel, abs(p.dist - q.dist) / max(abs(q.dist), 1e-12))
            same += p.pairing == q.pairing
            total += 1
    n_pairs = len(tgt) * len(src)
    lengths = [len(v) for v in (*tgt.values(), *src.values())]
    print(f"{n_pairs} episode pairs, {min(lengths)}-{max(lengths)} frames, window={args.window}")
    for name in impls:
        print(f"  {name:<13} {statistics.median(times[name]):8.3f} s  (median of {args.reps})")
    ratio = statistics.median(times["dpot"]) / statistics.median(times["dtaidistance"])
    print(f"  ratio dpot / dtaidistance: {ratio:.1f}x")
    print(f"  max relative distance difference: {rel:.2e}; identical paths: {same}/{total}")


if __name__ == "__main__":
    main()
