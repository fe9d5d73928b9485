"""Log-domain unbalanced entropic optimal transport (Sinkhorn–Knopp scaling in the dual).

Problem (POT's ``sinkhorn_unbalanced(..., reg_type="kl", reg_m=(tau_src, tau_tgt))`` convention)::

    pi* = argmin_{pi >= 0}  <pi, C> + reg * KL(pi | a b^T)
                             + tau_src * KL(pi 1 | a) + tau_tgt * KL(pi^T 1 | b)

with KL the generalized Kullback–Leibler divergence ``KL(x|y) = sum x log(x/y) - x + y``.
Larger ``tau`` holds the marginals tighter (``tau -> inf`` is balanced OT); small ``tau`` lets mass be
destroyed, so ``sum(pi) < 1``. For uniform ``a``, ``b`` and a constant cost ``c`` the optimal plan is
``exp(-c / (reg + tau_src + tau_tgt)) * a b^T``.

Reference: Chizat, Peyré, Schmitzer, Vialard, "Scaling algorithms for unbalanced optimal transport
problems", Math. Comp. 2018 (Algorithm 1, KL marginal penalties, log-domain form).
"""

from __future__ import annotations

import torch

__all__ = ["unbalanced_sinkhorn"]

def _uniform_log(n: int, like: torch.Tensor, batch_shape: torch.Size) -> torch.Tensor:
    return torch.full((*batch_shape, n), -torch.log(torch.tensor(float(n), dtype=torch.float64)).item(),
                      dtype=like.dtype, device=like.device)


def _as_log_marginal(w: torch.Tensor | None, n: int, cost: torch.Tensor) -> torch.Tensor:
    """log of a marginal weight vector broadcastable to ``cost.shape[:-2] + (n,)``; uniform ``1/n`` if None."""
    batch_shape = cost.shape[:-2]
    if w is None:
        return _uniform_log(n, cost, batch_shape)
    w = torch.as_tensor(w, device=cost.device).to(cost.dtype)
    if w.shape[-1] != n:
        raise ValueError(f"marginal has {w.shape[-1]} entries, cost needs {n}")
    if torch.any(w <= 0):
        raise ValueError("marginal weights must be strictly positive")
    return torch.log(w).expand(*batch_shape, n)


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
) -> torch.Tensor:
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
            ``check_every`` iterations, so at most one host sync per ``check_every`` iterations on GPU.

    Returns:
        The plan, same shape, dtype and device as ``cost``. The iterations always run in float64: the
        potentials reach ``C / reg ~ 1e4`` where float32's resolution (~1e-3 there) stalls convergence, and
        these small problems are latency-bound, so float64 costs about the same as float32.

    Log-domain updates with potentials ``f, g`` (cost units) and ``phi = tau / (tau + reg)``::

        f_i = -phi_src * reg * LSE_j( log b_j + (g_j - C_ij) / reg )
        g_j = -phi_tgt * reg * LSE_i( log a_i + (f_i - C_ij) / reg )
        pi_ij = a_i b_j exp( (f_i + g_j - C_ij) / reg )

    No ``exp`` of a large positive number is ever taken, so the solver stays exact where kernel-domain
    solvers underflow (``C / reg`` in the thousands).
    """
    if cost.dim() not in (2, 3):
        raise ValueError(f"cost must be [n, m] or [batch, n, m], got shape {tuple(cost.shape)}")
    if not reg > 0:
        raise ValueError(f"reg must be > 0, got {reg}")
    if tau_src < 0 or tau_tgt < 0:
        raise ValueError(f"tau_src and tau_tgt must be >= 0, got {tau_src}, {tau_tgt}")
    out_dtype = cost.dtype
    if not (out_dtype.is_floating_point):
        raise TypeError(f"cost must be a floating tensor, got {out_dtype}")
    work_dtype = torch.float64

    device_type = cost.device.type
    with torch.no_grad(), torch.autocast(device_type=device_type, enabled=False):
        c = cost.detach().to(work_dtype)
        n, m = c.shape[-2], c.shape[-1]
        log_a = _as_log_marginal(a, n, c)
        log_b = _as_log_marginal(b, m, c)
        # Scaled quantities: F = f / reg, G = g / reg, Cr = C / reg.
        cr = c / reg
        phi_src = 1.0 if tau_src == float("inf") else tau_src / (tau_src + reg)
        phi_tgt = 1.0 if tau_tgt == float("inf") else tau_tgt / (tau_tgt + reg)
        neg_cr = -cr
        f = torch.zeros_like(log_a)
        g = torch.zeros_like(log_b)
        for it in range(max_iters):
            check = (it + 1) % check_every == 0 or it + 1 == max_iters
            if check:
                f_prev, g_prev = f, g
            f = -phi_src * torch.logsumexp(neg_cr + (log_b + g).unsqueeze(-2), dim=-1)
            g = -phi_tgt * torch.logsumexp(neg_cr + (log_a + f).unsqueeze(-1), dim=-2)
            if check:
                err = torch.maximum((f - f_prev).abs().amax(), (g - g_prev).abs().amax())
                # nan compares False: a non-finite problem runs to max_iters and the caller checks the plan.
                if bool(err < tol):
                    break
        log_pi = log_a.unsqueeze(-1) + log_b.unsqueeze(-2) + f.unsqueeze(-1) + g.unsqueeze(-2) + neg_cr
        return torch.exp(log_pi).to(out_dtype)
