"""MMD baseline: dpot's torch energy distance vs geomloss ``SamplesLoss("energy")`` (and a Gaussian-kernel MMD),
value agreement, error against float64, gradient error on nearly aligned embeddings, and time per
forward+backward, interleaved rounds in one process.

Embeddings ``[n, D]`` (default 32 x 512, the study's per-camera embedding size), target = source sample + shift.

    .venv/bin/python benchmarks/mmd_loss.py [--n 32] [--dim 512] [--rounds 5] [--reps 200]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import geomloss
import torch

from dpot.ot import energy_distance


def gaussian_mmd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Biased MMD^2 with a Gaussian kernel of bandwidth sqrt(D) (the median heuristic for unit-variance features)."""
    s2 = 2.0 * x.shape[1]

    def k(a, b):
        return torch.exp(-torch.cdist(a, b) ** 2 / s2).mean()

    return k(x, x) + k(y, y) - 2 * k(x, y)


def time_fwd_bwd(fn, x, y, reps: int) -> float:
    x = x.clone().requires_grad_(True)
    for _ in range(10):
        fn(x, y).backward()
    t = time.perf_counter()
    for _ in range(reps):
        fn(x, y).backward()
    return (time.perf_counter() - t) / reps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="items per domain (default 32)")
    ap.add_argument("--dim", type=int, default=512, help="embedding dimension (default 512)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    ap.add_argument("--reps", type=int, default=200, help="forward+backward passes per round (default 200)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, args.dim, generator=g)
    geo = geomloss.SamplesLoss("energy")
    print(f"torch {torch.__version__}, geomloss {geomloss.__version__}, {platform.processor() or platform.machine()}, "
          f"1 thread, n={args.n}, D={args.dim}")
    print("| shift | dpot energy | geomloss energy | rel. diff | Gaussian MMD^2 |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for shift in (0.0, 0.05, 0.1, 0.3, 1.0):
        y = torch.randn(args.n, args.dim, generator=g) + shift
        a, b = energy_distance(x, y).item(), geo(x, y).item()
        worst = max(worst, abs(a - b) / abs(b))
        print(f"| {shift} | {a:.6f} | {b:.6f} | {abs(a - b) / abs(b):.1e} | {gaussian_mmd(x, y).item():.6f} |")
    same = energy_distance(x, x.clone()).item(), geo(x, x.clone()).item()
    print(f"identical samples: dpot {same[0]:.2e}, geomloss {same[1]:.2e}; worst rel. diff {worst:.1e}")
    y = torch.randn(args.n, args.dim, generator=g) + 0.1
    ref = energy_distance(x.double(), y.double()).item()
    print(f"error vs float64 (shift 0.1): dpot {abs(energy_distance(x, y).item() - ref) / ref:.1e}, "
          f"geomloss {abs(geo(x, y).item() - ref) / ref:.1e}")
    # nearly aligned embeddings (what the loss drives toward): pairs 1e-5 apart on unit-scale features
    xs = torch.randn(args.n, args.dim, generator=g) / args.dim ** 0.5
    ys = xs + 1e-5 * torch.randn(args.n, args.dim, generator=g) / args.dim ** 0.5
    x64 = xs.double().requires_grad_(True)
    energy_distance(x64, ys.double()).backward()
    for name, fn in (("dpot", energy_distance), ("geomloss", geo)):
        xg = xs.clone().requires_grad_(True)
        fn(xg, ys).backward()
        err = float((xg.grad.double() - x64.grad).norm() / x64.grad.norm())
        print(f"gradient rel. error vs float64 on nearly aligned embeddings: {name} {err:.1e}")
    y = torch.randn(args.n, args.dim, generator=g) + 0.3
    times: dict[str, list[float]] = {"dpot energy": [], "geomloss energy": [], "Gaussian MMD": []}
    for _ in range(args.rounds):
        times["dpot energy"].append(time_fwd_bwd(energy_distance, x, y, args.reps))
        times["geomloss energy"].append(time_fwd_bwd(geo, x, y, args.reps))
        times["Gaussian MMD"].append(time_fwd_bwd(gaussian_mmd, x, y, args.reps))
    base = statistics.median(times["dpot energy"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name}: median {med:.3f} ms per forward+backward (x{med / base:.2f} of dpot energy; rounds "
              f"{', '.join(f'{t:.3f}' for t in ts)})")


if __name__ == "__main__":
    main()
