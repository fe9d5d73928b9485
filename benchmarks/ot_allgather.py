"""Cost of the OT term on the all-gathered batch with N processes (docs/multi-gpu.md).

    python benchmarks/ot_allgather.py [--batch 64] [--ns 1,2,4,8] [--reps 5] [--device cpu] [--json out.json]

With N processes and ``batch_size`` B per process (``ot.batch_ratio`` 0.5: B/2 source + B/2 target items each),
every rank gathers all ranks' OT features and solves the same ``(N·B/2) x (N·B/2)`` plan. For each N this
measures, in this process, on the policy's real feature sizes (2 cameras x ``n_obs_steps`` 2 x 64 spatial-softmax
features = 128 per camera; action chunk 16 x 4):

- ``solve_ms``: ``unbalanced_sinkhorn`` alone on the summed cost (the default ``ot.max_iters=200``, ``tol=1e-5``),
  and ``solve_all_iters_ms`` with ``tol=0`` (all 200 iterations: the upper bound),
- ``loss_ms``: the whole ``OTAlignmentLoss`` forward + backward (cost terms, solve, metrics, gradient),
- ``solve_peak_mib``: peak memory the solve allocates (numpy on CPU, traced with tracemalloc; CUDA: the
  allocator's peak),

and computes the all-gather volume per step: what each rank receives (its N-1 peers' features) and the
backward all-reduce of the embedding gradients (ring: 2(N-1)/N x the gathered embedding tensor).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import tracemalloc

import torch

from dpot.config import OTConfig
from dpot.ot import unbalanced_sinkhorn
from dpot.ot.alignment import DomainFeatures
from dpot.ot.loss import OTAlignmentLoss

CAMERAS = ("corner4", "gripperPOV")
EMBED_DIM = 2 * 64  # n_obs_steps x (2 x spatial_softmax_num_keypoints 32)
HORIZON, ACTION_DIM = 16, 4


def features(n: int, device: str, g: torch.Generator) -> DomainFeatures:
    """Random features of ``n`` items with the policy's shapes (embeddings require grad like the encoder's)."""
    emb = {c: (torch.randn(n, EMBED_DIM, generator=g) * 0.3).to(device).requires_grad_(True) for c in CAMERAS}
    return DomainFeatures(embeds=emb, labels={"action": (torch.rand(n, HORIZON, ACTION_DIM, generator=g) * 2 - 1)
                                               .to(device)},
                          phase=torch.rand(n, generator=g).to(device))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def comm_bytes(n_proc: int, batch: int, embed_bytes: int = 4) -> dict:
    """Bytes per step and rank of the OT all-gathers (forward) and the embedding-gradient all-reduce (backward).

    Per item: ``len(CAMERAS) * EMBED_DIM`` embedding values (``embed_bytes`` each: 4 fp32, 2 under bf16 autocast),
    ``HORIZON * ACTION_DIM`` float32 labels and a float32 phase. A rank receives the ``(N-1) * B`` items of its
    peers; the gathered embeddings' gradient ``[N*B, D]`` is all-reduced (ring: ``2 (N-1) / N`` x its size sent).
    """
    per_item = len(CAMERAS) * EMBED_DIM * embed_bytes + HORIZON * ACTION_DIM * 4 + 4
    received = (n_proc - 1) * batch * per_item
    grad = n_proc * batch * len(CAMERAS) * EMBED_DIM * 4
    allreduce = 2 * (n_proc - 1) / n_proc * grad if n_proc > 1 else 0.0
    return {"per_item_bytes": per_item, "gather_received_bytes": received, "grad_allreduce_sent_bytes": allreduce,
            "total_bytes": received + allreduce}


def measure(n_proc: int, batch: int, reps: int, device: str) -> dict:
    n = n_proc * batch // 2  # source items = target items on the gathered batch
    g = torch.Generator().manual_seed(n_proc)
    cfg = OTConfig()
    loss_fn = OTAlignmentLoss(cfg)
    src, tgt = features(n, device, g), features(n, device, g)
    cost = torch.stack(list(loss_fn.cost_terms(src, tgt).values())).sum(0).detach()
    kw = {"reg": cfg.reg, "tau_src": cfg.tau_src, "tau_tgt": cfg.tau_tgt, "max_iters": cfg.max_iters, "tol": cfg.tol}
    unbalanced_sinkhorn(cost, **kw)  # warm-up
    solve, loss, full = [], [], []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        unbalanced_sinkhorn(cost, **{**kw, "tol": 0.0})  # the cap: all max_iters iterations
        _sync(device)
        full.append(time.perf_counter() - t0)
        _sync(device)
        t0 = time.perf_counter()
        unbalanced_sinkhorn(cost, **kw)
        _sync(device)
        solve.append(time.perf_counter() - t0)
        for f in (src, tgt):
            for e in f.embeds.values():
                e.grad = None
        _sync(device)
        t0 = time.perf_counter()
        loss_fn(src, tgt).loss.backward()
        _sync(device)
        loss.append(time.perf_counter() - t0)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        unbalanced_sinkhorn(cost, **kw)
        peak = torch.cuda.max_memory_allocated() - base
    else:
        tracemalloc.start()
        unbalanced_sinkhorn(cost, **kw)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return {"processes": n_proc, "n_src": n, "n_tgt": n, "solve_ms": 1e3 * statistics.median(solve),
            "solve_min_ms": 1e3 * min(solve), "solve_all_iters_ms": 1e3 * statistics.median(full),
            "solve_all_iters_min_ms": 1e3 * min(full), "loss_ms": 1e3 * statistics.median(loss),
            "loss_min_ms": 1e3 * min(loss), "solve_peak_mib": peak / 2**20,
            "comm_fp32": comm_bytes(n_proc, batch, 4), "comm_bf16": comm_bytes(n_proc, batch, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64, help="batch_size per process (half source, half target)")
    ap.add_argument("--ns", default="1,2,4,8", help="process counts N")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(int(k), args.batch, args.reps, args.device) for k in args.ns.split(",")]
    dev = (torch.cuda.get_device_name(0) if args.device == "cuda"
           else f"CPU ({platform.machine()}, {args.threads} thread)")
    print(f"OT on the all-gathered batch: batch {args.batch} per process, {dev}, median (min) of {args.reps}")
    print("| N | plan | solve ms | solve, all 200 iterations, ms | OT loss fwd+bwd ms | solve peak MiB | "
          "received/rank KiB | grad all-reduce KiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        c = r["comm_fp32"]
        print(f"| {r['processes']} | {r['n_src']}x{r['n_tgt']} | {r['solve_ms']:.1f} ({r['solve_min_ms']:.1f}) | "
              f"{r['solve_all_iters_ms']:.1f} ({r['solve_all_iters_min_ms']:.1f}) | "
              f"{r['loss_ms']:.1f} ({r['loss_min_ms']:.1f}) | "
              f"{r['solve_peak_mib']:.2f} | {c['gather_received_bytes'] / 1024:.0f} | "
              f"{c['grad_allreduce_sent_bytes'] / 1024:.0f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": dev, "batch": args.batch, "reps": args.reps, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
