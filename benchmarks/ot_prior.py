"""What the diagonal prior's closed form saves: the OT loss's forward (cost terms, plan, metrics) under
``ot.prior=diagonal`` (closed form, O(n)) vs ``none`` and ``temporal`` (log-domain Sinkhorn), on one batch of
per-camera embeddings and an action label, all three in this process; the solve alone beside it.

    .venv/bin/python benchmarks/ot_prior.py [--repeats 200] [--out results.json]

Prints one row per batch size: median milliseconds per call and the ratio to the diagonal prior (docs/benchmarks.md,
"OT priors"). The fork's settings: reg 0.02, tau 0.01, plain squared distances, raw embedding scale 0.05.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from dpot.config import EmbedFeatureConfig, LabelFeatureConfig, OTConfig
from dpot.ot import DomainFeatures, OTAlignmentLoss
from dpot.ot.diagonal import diagonal_prior_plan, partner_support
from dpot.ot.sinkhorn import unbalanced_sinkhorn


def domain(g, n: int) -> DomainFeatures:
    return DomainFeatures(embeds={c: torch.randn(n, 2, 64, generator=g) * 0.05 for c in ("top", "wrist")},
                          labels={"action": torch.randn(n, 16, 8, generator=g)},
                          raw_labels={"action": torch.randn(n, 16, 8, generator=g) * 0.1},
                          phase=torch.rand(n, generator=g))


def config(prior: str) -> OTConfig:
    return OTConfig(prior=prior, heuristic=True, cost_norm="none", reg=0.02, tau_src=0.01, tau_tgt=0.01,
                    features=[EmbedFeatureConfig(weight_embed=0.5, time_index=-1),
                              LabelFeatureConfig(key="action", dim_slice=[0, 8], weight_label=0.02, time_index=0,
                                                 normalized=False)])


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--out", default=None, help="write raw results as JSON")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for n in (8, 16, 32, 64):
        g = torch.Generator().manual_seed(n)
        src, tgt = domain(g, n), domain(g, n)
        row = {"n": n}
        for prior in ("diagonal", "none", "temporal"):
            loss = OTAlignmentLoss(config(prior), cameras=["top", "wrist"])
            row[f"forward_{prior}_ms"] = median_ms(lambda: loss(src, tgt), args.repeats)   # noqa: B023
        cost = loss.cost_terms(src, tgt)
        c = torch.stack(list(cost.values())).sum(0).detach()
        support = partner_support(n, n)
        row["solve_diagonal_ms"] = median_ms(lambda: diagonal_prior_plan(c, support, 0.02, 0.01, 0.01),  # noqa: B023
                                             args.repeats)
        row["solve_sinkhorn_ms"] = median_ms(lambda: unbalanced_sinkhorn(c, reg=0.02, tau_src=0.01,  # noqa: B023
                                                                         tau_tgt=0.01, max_iters=200, tol=1e-5),
                                             args.repeats)
        rows.append(row)
    print("| n | forward: diagonal | none | temporal | none / diagonal | solve: closed form | Sinkhorn | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['forward_diagonal_ms']:.2f} ms | {r['forward_none_ms']:.2f} ms | "
              f"{r['forward_temporal_ms']:.2f} ms | {r['forward_none_ms'] / r['forward_diagonal_ms']:.2f}x | "
              f"{r['solve_diagonal_ms']:.3f} ms | {r['solve_sinkhorn_ms']:.3f} ms | "
              f"{r['solve_sinkhorn_ms'] / r['solve_diagonal_ms']:.1f}x |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
