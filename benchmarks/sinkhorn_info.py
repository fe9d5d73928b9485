"""What ``return_info=True`` costs: unbalanced_sinkhorn with and without its SinkhornInfo, interleaved in one process.

The trainer always asks for it (``train/ot_sinkhorn_iters``, ``train/ot_sinkhorn_maxed``); the extra work is two
``n x m`` log-sum-exps for the marginal error after the iterations. Training-sized problems (the default
``ot.max_iters=200``, ``tol=1e-5``, ``reg=0.02``, ``tau=0.01``), costs U[0, 1], CPU.

    .venv/bin/python benchmarks/sinkhorn_info.py [--repeats 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from dpot.ot import unbalanced_sinkhorn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    kw = dict(reg=0.02, tau_src=0.01, tau_tgt=0.01, max_iters=200, tol=1e-5)
    print(f"{'n':>4} {'iters':>6} {'plain ms':>9} {'info ms':>8} {'ratio':>6}")
    for n in (8, 16, 32, 64):
        cost = torch.tensor(np.random.default_rng(n).uniform(0, 1, (n, n)), dtype=torch.float32)
        plain, info = [], []
        for _ in range(args.repeats):          # interleaved: the same load on both
            t0 = time.perf_counter()
            unbalanced_sinkhorn(cost, **kw)
            t1 = time.perf_counter()
            _, si = unbalanced_sinkhorn(cost, return_info=True, **kw)
            t2 = time.perf_counter()
            plain.append(t1 - t0)
            info.append(t2 - t1)
        p, i = statistics.median(plain) * 1e3, statistics.median(info) * 1e3
        print(f"{n:>4} {si.iters:>6} {p:>9.3f} {i:>8.3f} {i / p:>6.2f}")


if __name__ == "__main__":
    main()
