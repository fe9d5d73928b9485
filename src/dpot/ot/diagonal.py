"""Unbalanced entropic OT with a diagonal reference measure (``ot.prior=diagonal``), solved in closed form.

The problem (POT's ``sinkhorn_knopp_unbalanced(a, b, C, reg, (tau_src, tau_tgt), c=c)``, KL regularization)::

    pi* = argmin_{pi >= 0}  <pi, C> + reg * KL(pi | c) + tau_src * KL(pi 1 | a) + tau_tgt * KL(pi^T 1 | b)

with the LeRobot OT fork's and the paper's ``heuristic`` reference ``c[i, j] = 1/N`` on the batch's partner pairs
(source item i with target item i, ``N = min(n_src, n_tgt)``) and 0 elsewhere. ``KL(pi | c)`` is finite only when
``pi`` lives on the support of ``c``, so every other entry of the plan is exactly 0. The partner pairs form a
partial matching (at most one per row and per column), so the objective separates into one scalar problem per pair
``(i, j)``; setting its derivative to 0,

    C_ij + reg log(p / c_ij) + tau_src log(p / a_i) + tau_tgt log(p / b_j) = 0,

gives the plan::

    log pi_ij = (reg log c_ij + tau_src log a_i + tau_tgt log b_j - C_ij) / (reg + tau_src + tau_tgt)

(POT's scaling iterations converge to the same fixed point: ``u = (a / K v)^(tau/(tau+reg))`` on a diagonal ``K``).
Each pair's mass follows from its own cost alone: the "transport" is a per-pair weighting of DTW partners, high-cost
pairs getting little mass, and ``sum pi == trace pi``. O(n) instead of O(iters n m).

What POT does where this formula has no trouble (tests/ot/test_fork_equivalence.py): when a row or column has no
partner (``n_src != n_tgt``) or ``exp(-C / reg)`` underflows to 0 for a whole row (raw costs above ~745 reg in
float64), POT's first iteration divides by 0, it warns "Numerical errors at iteration 0" and returns its starting
kernel ``c * exp(-C / reg)`` (zero plan where it underflowed). The fork's uniform ``1/(n m)`` fallback fires only on
a non-finite plan, which this formula never gives for finite costs.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["diagonal_prior_plan", "partner_support"]


def partner_support(n_src: int, n_tgt: int) -> torch.Tensor:
    """The fork's support: ``[n_src, n_tgt]`` bool, True at ``(i, i)`` for ``i < min(n_src, n_tgt)``."""
    idx = torch.arange(max(n_src, n_tgt))
    return (idx[:n_src, None] == idx[None, :n_tgt])


def diagonal_prior_plan(cost: torch.Tensor, support: torch.Tensor, reg: float, tau_src: float, tau_tgt: float,
                        ) -> torch.Tensor:
    """The plan of the module docstring's problem, with uniform ``a = 1/n_src``, ``b = 1/n_tgt``.

    Args:
        cost: ``[n_src, n_tgt]`` ground cost ``C`` (detached; computed in float64).
        support: ``[n_src, n_tgt]`` bool, the partner pairs (at most one True per row and per column); the
            reference is ``c = 1/N`` there with ``N = min(n_src, n_tgt)`` (the fork's rule).
        reg, tau_src, tau_tgt: entropic and marginal KL weights (POT's ``reg`` and ``reg_m``), ``reg > 0``.

    Returns:
        ``[n_src, n_tgt]`` plan in ``cost``'s dtype and device, 0 off the support.

    Raises:
        ValueError: a support that is not a partial matching, or ``reg <= 0``.
    """
    if not reg > 0:
        raise ValueError(f"reg must be > 0, got {reg}")
    n_src, n_tgt = cost.shape
    sup = support.detach().cpu().numpy().astype(bool)
    if sup.shape != (n_src, n_tgt):
        raise ValueError(f"support {sup.shape} does not match the cost {tuple(cost.shape)}")
    if (sup.sum(0) > 1).any() or (sup.sum(1) > 1).any():
        raise ValueError("the diagonal prior needs at most one partner per source and per target item")
    c_np = cost.detach().to(torch.float64).cpu().numpy()
    rows, cols = np.nonzero(sup)
    log_c = -math.log(min(n_src, n_tgt))
    log_pi = (reg * log_c - tau_src * math.log(n_src) - tau_tgt * math.log(n_tgt) - c_np[rows, cols]) / (
        reg + tau_src + tau_tgt)
    plan = np.zeros((n_src, n_tgt), dtype=np.float64)
    plan[rows, cols] = np.exp(log_pi)
    return torch.from_numpy(plan).to(device=cost.device, dtype=cost.dtype)
