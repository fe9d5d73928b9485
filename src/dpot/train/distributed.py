"""Gathering OT features across processes (DDP) with gradients.

dpot computes the OT loss on the **all-gathered** batch: every process sees the source and target features of
the global batch (``num_processes * batch_size`` items, ordered rank by rank within each domain, so pair i is
still the i-th source and i-th target item) and solves the same plan. Backward of :func:`gather_with_grad`
all-reduces (sums) the incoming gradient and keeps the local slice: each rank gets ``N * dL/d(local features)``
(all N ranks computed the same loss L), and DDP's mean over ranks then gives exactly the single-process gradient
of L on the global batch. So N processes x batch B == 1 process x batch N*B, OT term included.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group):
        ctx.group = group
        world = dist.get_world_size(group)
        ctx.rank = dist.get_rank(group)
        ctx.n = x.shape[0]
        out = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(out, x.contiguous(), group=group)
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n], None


def gather_with_grad(x: torch.Tensor, group=None) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0 (rank order); identity when not distributed.

    Differentiable when ``x`` requires grad (see the module docstring for the gradient convention).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return x
    if x.requires_grad:
        return _GatherWithGrad.apply(x, group)
    out = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, x.contiguous(), group=group)
    return torch.cat(out, dim=0)


def valid_share(action_is_pad: torch.Tensor, group=None) -> torch.Tensor:
    """``world * n_valid_local / n_valid_global``: the factor that turns a loss averaged over this rank's valid
    (non-padded) action steps into its share of the mean over the global batch's valid steps (DDP's mean of the
    ranks' gradients then equals the one-process gradient). 1 when not distributed."""
    local = (~action_is_pad).sum().to(torch.float64)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return torch.ones((), dtype=torch.float64)
    total = local.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    return dist.get_world_size(group) * local / total.clamp_min(1)
