"""OT cost terms between source and target items, and the temporal prior.

Each term k gives ``C_k[i, j]`` (``n_src x n_tgt``), the squared Euclidean distance between the features of
source item i and target item j, normalized by ``cost_norm``:

- ``dim``    : ``||x_i - y_j||^2 / D`` (mean over feature dimensions, so terms of different sizes compare),
- ``median`` : the ``dim`` cost divided by its detached batch median (O(1) whatever the embedding scale),
- ``none``   : ``||x_i - y_j||^2``.

The total cost is ``C = sum_k w_k C_k``. The temporal prior (``heuristic=true``) is the entropic reference
``K_ij = a_i b_j w_ij`` with ``w_ij = exp(-|t_i - t_j| / sigma) / Z`` normalized so that ``sum_ij a_i b_j w_ij = 1``;
solving with reference ``K`` equals solving with reference ``a b^T`` and cost ``C - reg * log w``
(:func:`prior_cost_shift` returns ``-log w``).
"""

from __future__ import annotations

import torch

__all__ = ["sq_euclidean_cost", "normalize_cost", "label_features", "prior_cost_shift", "cost_dtype"]


def cost_dtype(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the precision its costs are computed in: float64 stays float64 (the fork-equivalence tests), any
    other dtype (bf16 under autocast, float16, float32, integers) becomes float32."""
    return x if x.dtype == torch.float64 else x.float()


def sq_euclidean_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``C[i, j] = ||x_i - y_j||^2`` for ``x [n, D]``, ``y [m, D]`` (differentiable, clamped at 0)."""
    x = x.flatten(1)
    y = y.flatten(1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dims differ: {x.shape[1]} vs {y.shape[1]}")
    xx = (x * x).sum(1, keepdim=True)
    yy = (y * y).sum(1, keepdim=True).T
    return (xx + yy - 2.0 * x @ y.T).clamp_min(0.0)


def normalize_cost(cost: torch.Tensor, dim: int, mode: str = "dim") -> torch.Tensor:
    """Normalize a squared-distance cost computed over ``dim`` feature dimensions (see module docstring)."""
    if mode == "none":
        return cost
    cost = cost / max(dim, 1)
    if mode == "dim":
        return cost
    if mode == "median":
        med = cost.detach().median()
        return cost / med.clamp_min(1e-12)
    raise ValueError(f"unknown cost normalization {mode!r}")


def label_features(labels: torch.Tensor, dim_slice: list[int] | None) -> torch.Tensor:
    """``[n, ..., A]`` label tensor -> ``[n, F]``: keep ``[..., lo:hi]`` of the last dim, flatten the rest."""
    if dim_slice is not None:
        lo, hi = dim_slice
        if hi > labels.shape[-1]:
            raise ValueError(f"dim_slice {dim_slice} is beyond the label's last dimension {labels.shape[-1]}")
        labels = labels[..., lo:hi]
    return labels.reshape(labels.shape[0], -1)


def prior_cost_shift(t_src: torch.Tensor, t_tgt: torch.Tensor, sigma: float,
                     a: torch.Tensor | None = None, b: torch.Tensor | None = None) -> torch.Tensor:
    """``-log w_ij`` of the normalized temporal prior ``w_ij ∝ exp(-|t_i - t_j| / sigma)``.

    ``t_src [n]``, ``t_tgt [m]``: aligned times (episode phase in [0, 1]); ``a``, ``b``: marginals (uniform if
    None). Normalized so ``sum_ij a_i b_j w_ij = 1``; the solver's cost becomes ``C + reg * shift``.
    """
    t_src = t_src.to(torch.float32).reshape(-1)
    t_tgt = t_tgt.to(torch.float32).reshape(-1)
    n, m = t_src.numel(), t_tgt.numel()
    log_w = -(t_src[:, None] - t_tgt[None, :]).abs() / sigma
    log_a = torch.full((n,), -torch.log(torch.tensor(float(n))).item()) if a is None else torch.log(a.float())
    log_b = torch.full((m,), -torch.log(torch.tensor(float(m))).item()) if b is None else torch.log(b.float())
    log_z = torch.logsumexp(log_a.to(log_w)[:, None] + log_b.to(log_w)[None, :] + log_w, dim=(0, 1))
    return -(log_w - log_z)
