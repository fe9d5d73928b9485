"""Unbalanced entropic optimal transport: Sinkhorn scaling with log-domain potentials and absorption.

Problem (POT's ``sinkhorn_unbalanced(..., reg_type="kl", reg_m=(tau_src, tau_tgt))`` convention)::

    pi* = argmin_{pi >= 0}  <pi, C> + reg * KL(pi | a b^T)
                             + tau_src * KL(pi 1 | a) + tau_tgt * KL(pi^T 1 | b)

with KL the generalized Kullback–Leibler divergence ``KL(x|y) = sum x log(x/y) - x + y``.
Larger ``tau`` holds the marginals tighter (``tau -> inf`` is balanced OT); small ``tau`` lets mass be
destroyed, so ``sum(pi) < 1``. For uniform ``a``, ``b`` and a constant cost ``c`` the optimal plan is
``exp(-c / (reg + tau_src + tau_tgt)) * a b^T``.

References: Chizat, Peyré, Schmitzer, Vialard, "Scaling algorithms for unbalanced optimal transport
problems", Math. Comp. 2018 (Algorithm 1, KL marginal penalties); Schmitzer, "Stabilized sparse scaling
algorithms for entropy regularized transport problems", SIAM J. Sci. Comput. 2019 (log-domain absorption).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import torch

__all__ = ["unbalanced_sinkhorn", "SinkhornInfo"]

# Absorb the scalings into the potentials once they drift this far (in units of reg): exp(±ABSORB) stays
# far from float64 overflow, and the stabilized kernel is recomputed only a few times per solve.
ABSORB = 30.0


@dataclass(frozen=True)
class SinkhornInfo:
    """How a solve ended (``unbalanced_sinkhorn(..., return_info=True)``; POT's ``log=True`` counterpart).

    Attributes:
        iters: scaling iterations run (one iteration = one update of ``f`` and one of ``g``; a batch is
            iterated jointly, so one count covers all its problems).
        converged: the stopping test ``max(|ΔF|, |ΔG|) < tol`` passed; False means the solve stopped at
            ``max_iters`` (or met a non-finite value) and the plan is the last iterate, not the fixed point.
        potential_change: ``max(|ΔF|, |ΔG|)`` at the last check (``F = f / reg``; nan when non-finite).
        marginal_err: relative L1 violation of the fixed point's marginal condition, the larger of the two
            sides and over the batch: ``||pi 1 - a exp(-f / tau_src)||_1 / ||a exp(-f / tau_src)||_1`` (and the
            same for ``pi^T 1``, ``b``, ``g``, ``tau_tgt``). At the optimum of the unbalanced problem the
            plan's marginals are exactly ``a exp(-f / tau_src)`` and ``b exp(-g / tau_tgt)``; for balanced OT
            (``tau = inf``) this is POT's marginal error ``||pi 1 - a||_1`` relative to ``||a||_1``. A free
            marginal (``tau = 0``) has no condition: 0. nan when the plan is not finite.
    """

    iters: int
    converged: bool
    potential_change: float
    marginal_err: float


class _Numpy:
    """Array ops on numpy (CPU tensors: microsecond per-op overhead for these small problems)."""

    exp, log, abs, where, isfinite, zeros_like = np.exp, np.log, np.abs, np.where, np.isfinite, np.zeros_like

    @staticmethod
    def amax(x, axis):
        return x.max(axis=axis)

    @staticmethod
    def sum(x, axis):
        return x.sum(axis=axis)

    @staticmethod
    def scalar(x) -> float:
        return float(x)


class _Torch:
    """The same ops on torch (CUDA tensors)."""

    exp, log, abs, where, isfinite, zeros_like = (torch.exp, torch.log, torch.abs, torch.where, torch.isfinite,
                                                  torch.zeros_like)

    @staticmethod
    def amax(x, axis):
        return x.amax(dim=axis)

    @staticmethod
    def sum(x, axis):
        return x.sum(dim=axis)

    @staticmethod
    def scalar(x) -> float:
        return float(x.item())


def _stabilized_kernels(xp, cr, f0, g0):
    """``log K = F0 + G0 - C/reg`` normalized per row (``kr``, max 1 per row) and per column (``kc``).

    Returns ``(kr, kc, row_max, col_max)``, the two kernels and the log maxima they were divided by.

    Normalizing by the row/column max means no row or column of a kernel underflows to 0, even when the
    plan's mass there is ``exp(-10^4)``: the failure mode of kernel-domain solvers at large ``C / reg``.
    """
    logk = f0[..., :, None] + g0[..., None, :] - cr
    row_max = xp.amax(logk, -1)
    col_max = xp.amax(logk, -2)
    row_max = xp.where(xp.isfinite(row_max), row_max, xp.zeros_like(row_max))
    col_max = xp.where(xp.isfinite(col_max), col_max, xp.zeros_like(col_max))
    return xp.exp(logk - row_max[..., :, None]), xp.exp(logk - col_max[..., None, :]), row_max, col_max


def _scaling_iterations(xp, cr, log_a, log_b, phi_src, phi_tgt, max_iters, tol, check_every):
    """Potentials ``F = f / reg``, ``G = g / reg`` of the unbalanced problem (see :func:`unbalanced_sinkhorn`).

    Each half-step is the exact log-domain update written against a stabilized kernel::

        F_i = -phi_src * LSE_j(log b_j + G_j - Cr_ij)
            = -phi_src * ( log sum_j Kr_ij b_j exp(G_j - G0_j) + r_i - F0_i )

    with ``Kr = exp(F0 + G0 - Cr - row_max)``: one matrix-vector product instead of an ``n x m`` exponential.
    When ``|F - F0|`` or ``|G - G0|`` exceeds ``ABSORB`` the kernels are recomputed at the current potentials.

    Returns:
        ``(F, G, iters, converged, change)``: the potentials, the iterations run, whether ``change < tol``
        stopped them, and ``change = max(|ΔF|, |ΔG|)`` at the last check (nan when none was made).
    """
    a, b = xp.exp(log_a), xp.exp(log_b)
    f = xp.zeros_like(log_a)
    g = xp.zeros_like(log_b)
    f0, g0 = f, g
    kr, kc, row_max, col_max = _stabilized_kernels(xp, cr, f0, g0)
    iters, converged, err = 0, False, float("nan")
    for it in range(max_iters):
        iters = it + 1
        check = (it + 1) % check_every == 0 or it + 1 == max_iters
        if check:
            f_prev, g_prev = f, g
        f = -phi_src * (xp.log((kr @ (b * xp.exp(g - g0))[..., :, None])[..., 0]) + row_max - f0)
        if xp.scalar(xp.amax(xp.abs(f - f0), None)) > ABSORB:
            f0, g0 = f, g
            kr, kc, row_max, col_max = _stabilized_kernels(xp, cr, f0, g0)
        g = -phi_tgt * (xp.log(((a * xp.exp(f - f0))[..., None, :] @ kc)[..., 0, :]) + col_max - g0)
        if xp.scalar(xp.amax(xp.abs(g - g0), None)) > ABSORB:
            f0, g0 = f, g
            kr, kc, row_max, col_max = _stabilized_kernels(xp, cr, f0, g0)
        if check:
            err = max(xp.scalar(xp.amax(xp.abs(f - f_prev), None)), xp.scalar(xp.amax(xp.abs(g - g_prev), None)))
            if err < tol:  # nan compares False: a non-finite problem runs to max_iters; callers check the plan
                converged = True
                break
    return f, g, iters, converged, err


def _marginal_error(xp, log_plan, log_a, log_b, f, g, phi_src: float, phi_tgt: float) -> float:
    """:attr:`SinkhornInfo.marginal_err` from the log plan and the potentials ``F = f / reg``, ``G = g / reg``.

    The fixed point's marginal is ``a exp(-f / tau) = a exp(-F (1 - phi) / phi)`` (``phi = tau / (tau + reg)``);
    both sides are compared after dividing by their largest entry, so the error stays meaningful when the
    plan's mass is far below float64's range (``C / reg`` in the thousands).
    """
    worst = 0.0
    for axis, log_w, pot, phi in ((-1, log_a, f, phi_src), (-2, log_b, g, phi_tgt)):
        if phi == 0.0:  # tau = 0: the marginal is free, no condition to violate
            continue
        peak = xp.amax(log_plan, axis)       # log-sum-exp of the plan along ``axis``, shifted by its max
        peak = xp.where(xp.isfinite(peak), peak, xp.zeros_like(peak))
        shifted = log_plan - (peak[..., :, None] if axis == -1 else peak[..., None, :])
        log_marg = xp.log(xp.sum(xp.exp(shifted), axis)) + peak
        log_want = log_w - pot * ((1.0 - phi) / phi)
        top = xp.amax(log_want, -1)[..., None]
        marg, want = xp.exp(log_marg - top), xp.exp(log_want - top)
        err = xp.scalar(xp.amax(xp.sum(xp.abs(marg - want), -1) / xp.sum(want, -1), None))
        if not math.isfinite(err):
            return float("nan")
        worst = max(worst, err)
    return worst


def _log_marginal(w, n: int, batch_shape: tuple) -> np.ndarray:
    """log of a marginal broadcastable to ``batch_shape + (n,)`` (float64 numpy); uniform ``1/n`` if None."""
    if w is None:
        return np.full((*batch_shape, n), -np.log(n))
    w = torch.as_tensor(w).detach().cpu().to(torch.float64).numpy() if not isinstance(w, np.ndarray) else w
    if w.shape[-1] != n:
        raise ValueError(f"marginal has {w.shape[-1]} entries, cost needs {n}")
    if np.any(w <= 0):
        raise ValueError("marginal weights must be strictly positive")
    return np.ascontiguousarray(np.broadcast_to(np.log(w.astype(np.float64)), (*batch_shape, n)))


@overload
def unbalanced_sinkhorn(cost: torch.Tensor, a: torch.Tensor | None = None, b: torch.Tensor | None = None, *,
                        reg: float, tau_src: float, tau_tgt: float, max_iters: int = 2000, tol: float = 1e-6,
                        check_every: int = 10, return_info: Literal[False] = False) -> torch.Tensor: ...


@overload
def unbalanced_sinkhorn(cost: torch.Tensor, a: torch.Tensor | None = None, b: torch.Tensor | None = None, *,
                        reg: float, tau_src: float, tau_tgt: float, max_iters: int = 2000, tol: float = 1e-6,
                        check_every: int = 10, return_info: Literal[True]) -> tuple[torch.Tensor, SinkhornInfo]: ...


def unbalanced_sinkhorn(
    cost: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    reg: float,
    tau_src: float,
    tau_tgt: float,
    max_iters: int = 2000,
    tol: float = 1e-6,
    check_every: int = 10,
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, SinkhornInfo]:
    """Solve the entropic unbalanced OT problem above and return the plan ``pi*``.

    Args:
        cost: ``[n, m]`` or ``[batch, n, m]`` cost matrix (any float dtype; never solved in half precision).
            ``+inf`` entries forbid a pair. The solver runs under ``no_grad`` on the detached cost: by the
            envelope theorem the gradient of the regularized OT value w.r.t. ``C`` is ``pi*`` itself, so
            losses use ``(pi.detach() * C).sum()`` and gradients reach the features through ``C`` only.
        a, b: strictly positive source / target weights (``[n]`` / ``[m]``, or batched); uniform if None.
        reg: entropic regularization ``> 0`` (in cost units).
        tau_src, tau_tgt: KL marginal penalties ``>= 0`` (``0``: that marginal is free; ``inf``: held exactly).
        max_iters: iteration cap. ``tol``: stop when ``max(|ΔF|, |ΔG|) < tol`` with ``F = f / reg``,
            ``G = g / reg`` (a change of ``tol`` in F is a relative change of ``tol`` in the plan); checked every
            ``check_every`` iterations. Hitting ``max_iters`` is not an error (the plan is the last iterate);
            ``return_info=True`` says whether it happened.
        return_info: also return a :class:`SinkhornInfo` (iterations, converged, final potential change and
            marginal error), as POT's ``log=True`` does.

    Returns:
        The plan (or ``(plan, info)`` with ``return_info=True``), same shape, dtype and device as ``cost``.
        Iterations run in float64 (the potentials reach ``C / reg ~ 1e4``, where float32's resolution would stall
        convergence); on CPU through numpy, whose per-operation overhead suits these small problems, on GPU
        through torch.

    Updates (potentials ``f, g`` in cost units, ``phi = tau / (tau + reg)``)::

        f_i = -phi_src * reg * LSE_j( log b_j + (g_j - C_ij) / reg )
        g_j = -phi_tgt * reg * LSE_i( log a_i + (f_i - C_ij) / reg )
        pi_ij = a_i b_j exp( (f_i + g_j - C_ij) / reg )

    computed exactly through a stabilized kernel with absorption (see ``_scaling_iterations``): no ``exp`` of
    a large positive number is taken, so the plan stays exact where kernel-domain solvers underflow
    (``C / reg`` in the thousands).
    """
    if cost.dim() not in (2, 3):
        raise ValueError(f"cost must be [n, m] or [batch, n, m], got shape {tuple(cost.shape)}")
    if not reg > 0:
        raise ValueError(f"reg must be > 0, got {reg}")
    if tau_src < 0 or tau_tgt < 0:
        raise ValueError(f"tau_src and tau_tgt must be >= 0, got {tau_src}, {tau_tgt}")
    if not cost.dtype.is_floating_point:
        raise TypeError(f"cost must be a floating tensor, got {cost.dtype}")
    phi_src = 1.0 if tau_src == float("inf") else tau_src / (tau_src + reg)
    phi_tgt = 1.0 if tau_tgt == float("inf") else tau_tgt / (tau_tgt + reg)

    batch_shape, n, m = tuple(cost.shape[:-2]), cost.shape[-2], cost.shape[-1]
    log_a, log_b = _log_marginal(a, n, batch_shape), _log_marginal(b, m, batch_shape)
    with torch.no_grad(), torch.autocast(device_type=cost.device.type, enabled=False):
        if cost.device.type == "cpu":
            with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                cr = cost.detach().to(torch.float64).numpy() / reg  # cast first: numpy has no bfloat16
                f, g, iters, converged, change = _scaling_iterations(_Numpy, cr, log_a, log_b, phi_src, phi_tgt,
                                                                     max_iters, tol, check_every)
                log_plan = log_a[..., :, None] + log_b[..., None, :] + f[..., :, None] + g[..., None, :] - cr
                plan = torch.from_numpy(np.exp(log_plan))
                if return_info:
                    err = _marginal_error(_Numpy, log_plan, log_a, log_b, f, g, phi_src, phi_tgt)
        else:
            cr = cost.detach().to(torch.float64) / reg
            la, lb = (torch.from_numpy(x).to(cr.device) for x in (log_a, log_b))
            f, g, iters, converged, change = _scaling_iterations(_Torch, cr, la, lb, phi_src, phi_tgt, max_iters,
                                                                 tol, check_every)
            log_plan = la[..., :, None] + lb[..., None, :] + f[..., :, None] + g[..., None, :] - cr
            plan = torch.exp(log_plan)
            if return_info:
                err = _marginal_error(_Torch, log_plan, la, lb, f, g, phi_src, phi_tgt)
        plan = plan.to(device=cost.device, dtype=cost.dtype)
        if not return_info:
            return plan
        return plan, SinkhornInfo(iters=iters, converged=converged, potential_change=change, marginal_err=err)
