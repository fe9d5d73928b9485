"""Unbalanced Sinkhorn: dpot's solver vs POT (numpy and torch backends), time per solve and error, one run.

Grid: n in {8, 16, 64, 256}, reg in {0.005, 0.01, 0.02}, tau in {0.01, 0.02, 1.0}, costs U[0, s] with s in {1, 50}.
Reference plan: an independent float64 numpy log-domain solver (scipy logsumexp) run to 1e-10.
"wrong" = max |P - P_ref| > 1e-5 or non-finite. Times are the median of repeats in this process.

    .venv/bin/python benchmarks/ot_solver.py [--quick] [--out docs/benchmarks_ot.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings

import numpy as np
import ot
import torch
from scipy.special import logsumexp

from dpot.ot import unbalanced_sinkhorn


def reference(C, reg, tau, iters=200_000):
    n, m = C.shape
    la, lb = np.full(n, -np.log(n)), np.full(m, -np.log(m))
    f, g = np.zeros(n), np.zeros(m)
    k = tau / (tau + reg)
    for _ in range(iters):
        f2 = -k * reg * logsumexp(lb[None] + (g[None] - C) / reg, axis=1)
        g2 = -k * reg * logsumexp(la[:, None] + (f2[:, None] - C) / reg, axis=0)
        done = max(np.abs(f2 - f).max(), np.abs(g2 - g).max()) < 1e-10 * reg
        f, g = f2, g2
        if done:
            break
    return np.exp(la[:, None] + lb[None] + (f[:, None] + g[None] - C) / reg)


def methods(C, reg, tau):
    n = C.shape[0]
    a = np.full(n, 1.0 / n)
    Ct32, Ct64 = torch.tensor(C, dtype=torch.float32), torch.tensor(C, dtype=torch.float64)
    at32, at64 = torch.full((n,), 1.0 / n), torch.full((n,), 1.0 / n, dtype=torch.float64)
    kw = dict(numItermax=20_000, stopThr=1e-9)
    return {
        "dpot fp32": lambda: unbalanced_sinkhorn(Ct32, reg=reg, tau_src=tau, tau_tgt=tau, max_iters=20_000,
                                                 tol=1e-6).numpy(),
        "dpot fp64": lambda: unbalanced_sinkhorn(Ct64, reg=reg, tau_src=tau, tau_tgt=tau, max_iters=20_000,
                                                 tol=1e-6).numpy(),
        "POT np sinkhorn": lambda: ot.unbalanced.sinkhorn_unbalanced(a, a, C, reg, (tau, tau), method="sinkhorn", **kw),
        "POT np stabilized": lambda: ot.unbalanced.sinkhorn_unbalanced(a, a, C, reg, (tau, tau),
                                                                       method="sinkhorn_stabilized", **kw),
        "POT np transl.-inv.": lambda: ot.unbalanced.sinkhorn_unbalanced(
            a, a, C, reg, (tau, tau), method="sinkhorn_translation_invariant", **kw),
        "POT torch stab. fp64": lambda: ot.unbalanced.sinkhorn_unbalanced(
            at64, at64, Ct64, reg, (tau, tau), method="sinkhorn_stabilized", **kw).numpy(),
        "POT torch stab. fp32": lambda: ot.unbalanced.sinkhorn_unbalanced(
            at32, at32, Ct32, reg, (tau, tau), method="sinkhorn_stabilized", **kw).numpy(),
    }


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n <= 64 only")
    ap.add_argument("--out", default=None, help="write raw results as JSON")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ns = [8, 16, 64] if args.quick else [8, 16, 64, 256]
    rows = []
    rng = np.random.default_rng(0)
    for n in ns:
        for reg in (0.005, 0.01, 0.02):
            for tau in (0.01, 0.02, 1.0):
                for scale in (1.0, 50.0):
                    C = rng.uniform(0, scale, (n, n))
                    ref = reference(C, reg, tau)
                    for name, fn in methods(C, reg, tau).items():
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            try:
                                t, P = timed(fn, 3 if n <= 64 else 1)
                                err = float(np.abs(P - ref).max()) if np.all(np.isfinite(P)) else float("inf")
                            except Exception:  # a solver that raises counts as wrong
                                t, err = float("nan"), float("inf")
                        rows.append(dict(n=n, reg=reg, tau=tau, scale=scale, method=name, ms=t * 1e3, err=err))
        print(f"n={n} done", flush=True)
    names = list(dict.fromkeys(r["method"] for r in rows))
    print(f"\nmachine: {platform.processor() or platform.machine()}, torch threads 1, "
          f"torch {torch.__version__}, POT {ot.__version__}\n")
    print(f"| method | wrong (of {len(rows) // len(names)}) | worst err | median ms n=8 | n=16 | n=64 | n=256 |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        rs = [r for r in rows if r["method"] == name]
        wrong = sum(r["err"] > 1e-5 for r in rs)
        worst = max(r["err"] for r in rs)
        med = [statistics.median([r["ms"] for r in rs if r["n"] == n]) if any(r["n"] == n for r in rs) else
               float("nan") for n in (8, 16, 64, 256)]
        print(f"| {name} | {wrong} | {worst:.1e} | " + " | ".join(f"{m:.2f}" for m in med) + " |")
    # speed target: no slower than POT's fastest *correct* method per cell at n <= 64
    cells = {(r["n"], r["reg"], r["tau"], r["scale"]) for r in rows if r["n"] <= 64}
    ratios = []
    for cell in sorted(cells):
        rs = [r for r in rows if (r["n"], r["reg"], r["tau"], r["scale"]) == cell]
        ours = next(r for r in rs if r["method"] == "dpot fp32")
        pots = [r["ms"] for r in rs if r["method"].startswith("POT") and r["err"] <= 1e-5]
        if pots:
            ratios.append(ours["ms"] / min(pots))
    if ratios:
        print(f"\ndpot fp32 time / POT's fastest correct method, n <= 64, over {len(ratios)} cells where POT is "
              f"correct: median {statistics.median(ratios):.2f}, worst {max(ratios):.2f}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh)


if __name__ == "__main__":
    main()
