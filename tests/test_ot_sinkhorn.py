"""unbalanced_sinkhorn against an independent float64 reference, POT, the closed form, and properties."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from dpot.ot import SinkhornInfo, unbalanced_sinkhorn

GRID_N = [8, 16, 64, 256]
GRID_REG = [0.005, 0.01, 0.02]
GRID_TAU = [0.01, 0.02, 1.0]
GRID_SCALE = [1.0, 50.0]


def reference_plan(C: np.ndarray, reg: float, tau1: float, tau2: float, iters: int = 100_000) -> np.ndarray:
    """Independent float64 numpy log-domain solver (Chizat et al. 2018), run to potential changes < 1e-10."""
    n, m = C.shape
    la, lb = np.full(n, -np.log(n)), np.full(m, -np.log(m))
    f, g = np.zeros(n), np.zeros(m)
    k1, k2 = tau1 / (tau1 + reg), tau2 / (tau2 + reg)
    for _ in range(iters):
        f_new = -k1 * reg * logsumexp(lb[None, :] + (g[None, :] - C) / reg, axis=1)
        g_new = -k2 * reg * logsumexp(la[:, None] + (f_new[:, None] - C) / reg, axis=0)
        done = max(np.abs(f_new - f).max(), np.abs(g_new - g).max()) < 1e-10
        f, g = f_new, g_new
        if done:
            break
    return np.exp(la[:, None] + lb[None, :] + (f[:, None] + g[None, :] - C) / reg)


def _cost(n, scale, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, scale, size=(n, n))


@pytest.mark.parametrize("n", GRID_N)
def test_grid_matches_float64_reference_and_pot(n):
    """fp32 plan within 1e-5 of the fp64 reference on the whole grid, including C/reg ~ 1e4 where POT fails."""
    import ot

    pot_wrong_where_we_are_right = 0
    for reg in GRID_REG:
        for tau in GRID_TAU:
            for scale in GRID_SCALE:
                C = _cost(n, scale, seed=n + int(scale))
                if n <= 64:
                    ref = reference_plan(C, reg, tau, tau)
                    ours64 = unbalanced_sinkhorn(torch.tensor(C), reg=reg, tau_src=tau, tau_tgt=tau,
                                                 max_iters=100_000, tol=1e-10).numpy()
                    assert np.abs(ours64 - ref).max() < 1e-8  # our fp64 solve = the independent reference
                else:  # n=256: the fp64 solve, validated against the independent reference above, is the reference
                    ref = unbalanced_sinkhorn(torch.tensor(C), reg=reg, tau_src=tau, tau_tgt=tau,
                                              max_iters=100_000, tol=1e-9).numpy()
                ours = unbalanced_sinkhorn(torch.tensor(C, dtype=torch.float32), reg=reg, tau_src=tau, tau_tgt=tau,
                                           max_iters=5000, tol=1e-6)
                assert ours.dtype == torch.float32 and ours.shape == (n, n)
                err = np.abs(ours.double().numpy() - ref).max()
                assert err < 1e-5, (n, reg, tau, scale, err)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    a = np.full(n, 1.0 / n)
                    pot = ot.unbalanced.sinkhorn_unbalanced(a, a, C, reg, (tau, tau), numItermax=20000,
                                                            stopThr=1e-12)
                pot_err = np.abs(pot - ref).max() if np.all(np.isfinite(pot)) else np.inf
                if scale * 1.0 / reg < 200:  # well conditioned: POT is an oracle there
                    assert pot_err < 1e-5, (n, reg, tau, scale, pot_err)
                elif pot_err > 1e-5:
                    pot_wrong_where_we_are_right += 1
    if n == 8:  # the cells where POT's kernel underflows exist in the grid and we stay exact there
        assert pot_wrong_where_we_are_right > 0


def test_float64_in_float64_out_and_batched_equals_loop():
    C = torch.tensor(np.stack([_cost(16, 1.0, s) for s in range(4)]), dtype=torch.float64)
    batched = unbalanced_sinkhorn(C, reg=0.02, tau_src=0.01, tau_tgt=0.05, tol=1e-12, max_iters=5000)
    assert batched.dtype == torch.float64 and batched.shape == (4, 16, 16)
    for i in range(4):
        single = unbalanced_sinkhorn(C[i], reg=0.02, tau_src=0.01, tau_tgt=0.05, tol=1e-12, max_iters=5000)
        assert torch.allclose(batched[i], single, atol=1e-12)


@pytest.mark.parametrize("c", [0.05, 0.108, 0.2, 1.0, 30.0])
@pytest.mark.parametrize("reg,tau1,tau2", [(0.02, 0.01, 0.01), (0.005, 0.02, 1.0), (0.01, 0.3, 0.1)])
def test_closed_form_constant_cost(c, reg, tau1, tau2):
    """Uniform a, b, constant cost c: pi = exp(-c / (reg + tau_src + tau_tgt)) a b^T."""
    C = torch.full((8, 12), c, dtype=torch.float64)
    plan = unbalanced_sinkhorn(C, reg=reg, tau_src=tau1, tau_tgt=tau2, tol=1e-14, max_iters=100_000)
    mass = np.exp(-c / (reg + tau1 + tau2))
    assert plan.sum().item() == pytest.approx(mass, rel=1e-9, abs=1e-300)
    assert torch.allclose(plan, torch.full_like(plan, mass / 96), rtol=1e-9, atol=0)


def test_custom_marginals_match_reference():
    rng = np.random.default_rng(3)
    C = rng.uniform(0, 1, (10, 7))
    a, b = rng.uniform(0.5, 1.5, 10), rng.uniform(0.5, 1.5, 7)
    a, b = a / a.sum(), b / b.sum()
    import ot

    pot = ot.unbalanced.sinkhorn_unbalanced(a, b, C, 0.05, (0.1, 0.2), numItermax=50000, stopThr=1e-13)
    ours = unbalanced_sinkhorn(torch.tensor(C), torch.tensor(a), torch.tensor(b), reg=0.05, tau_src=0.1,
                               tau_tgt=0.2, tol=1e-13, max_iters=50000)
    assert np.abs(ours.numpy() - pot).max() < 1e-9


def uot_objective(P, C, reg, tau1, tau2):
    n, m = C.shape
    a, b = np.full(n, 1 / n), np.full(m, 1 / m)

    def kl(x, y):
        return float(np.sum(x * np.log(x / y) - x + y))

    return float((P * C).sum()) + reg * kl(P, np.outer(a, b)) + tau1 * kl(P.sum(1), a) + tau2 * kl(P.sum(0), b)


def test_envelope_gradient_is_the_plan():
    """d UOT_value / dC_ij = pi*_ij: the loss <pi*.detach(), C> has the exact gradient of the OT value."""
    C = _cost(6, 1.0, 7)
    reg, tau = 0.05, 0.1
    plan = unbalanced_sinkhorn(torch.tensor(C), reg=reg, tau_src=tau, tau_tgt=tau, tol=1e-14, max_iters=100_000)
    h = 1e-6
    for i, j in [(0, 0), (2, 5), (4, 1)]:
        vals = []
        for sgn in (1, -1):
            Cp = C.copy()
            Cp[i, j] += sgn * h
            Pp = unbalanced_sinkhorn(torch.tensor(Cp), reg=reg, tau_src=tau, tau_tgt=tau, tol=1e-14,
                                     max_iters=100_000).numpy()
            vals.append(uot_objective(Pp, Cp, reg, tau, tau))
        fd = (vals[0] - vals[1]) / (2 * h)
        assert fd == pytest.approx(plan[i, j].item(), rel=1e-4, abs=1e-9)


def test_gradients_reach_features_through_cost_not_solver():
    torch.manual_seed(0)
    x = torch.randn(8, 5, requires_grad=True)
    y = torch.randn(8, 5)
    C = torch.cdist(x, y) ** 2 / 5
    plan = unbalanced_sinkhorn(C, reg=0.02, tau_src=0.01, tau_tgt=0.01)
    assert not plan.requires_grad and plan.grad_fn is None
    (plan * C).sum().backward()
    expected = 2 / 5 * (plan.sum(1, keepdim=True) * x.detach() - plan @ y)
    assert torch.allclose(x.grad, expected, atol=1e-5)
    assert x.grad.abs().sum() > 0


def test_half_precision_and_autocast_are_solved_in_float32():
    C = torch.tensor(_cost(16, 5.0, 1), dtype=torch.float32)
    ref = unbalanced_sinkhorn(C.double(), reg=0.02, tau_src=0.01, tau_tgt=0.01, tol=1e-12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = unbalanced_sinkhorn(C, reg=0.02, tau_src=0.01, tau_tgt=0.01)
    assert under_autocast.dtype == torch.float32
    assert (under_autocast.double() - ref).abs().max() < 1e-6
    half = unbalanced_sinkhorn(C.half(), reg=0.02, tau_src=0.01, tau_tgt=0.01)
    assert half.dtype == torch.float16
    assert (half.double() - ref).abs().max() < 1e-3 * ref.max()  # only the output is rounded to half
    bf16 = unbalanced_sinkhorn(C.bfloat16(), reg=0.02, tau_src=0.01, tau_tgt=0.01)
    assert bf16.dtype == torch.bfloat16
    ref_bf16_cost = unbalanced_sinkhorn(C.bfloat16().double(), reg=0.02, tau_src=0.01, tau_tgt=0.01, tol=1e-12)
    assert (bf16.double() - ref_bf16_cost).abs().max() < 1e-2 * ref_bf16_cost.max()  # output rounded to bf16


def test_invalid_arguments():
    C = torch.rand(4, 4)
    with pytest.raises(ValueError, match="reg"):
        unbalanced_sinkhorn(C, reg=0.0, tau_src=0.1, tau_tgt=0.1)
    with pytest.raises(ValueError, match="tau"):
        unbalanced_sinkhorn(C, reg=0.1, tau_src=-1.0, tau_tgt=0.1)
    with pytest.raises(ValueError, match="shape"):
        unbalanced_sinkhorn(torch.rand(4), reg=0.1, tau_src=0.1, tau_tgt=0.1)
    with pytest.raises(ValueError, match="positive"):
        unbalanced_sinkhorn(C, torch.tensor([0.5, 0.5, 0.0, 0.0]), reg=0.1, tau_src=0.1, tau_tgt=0.1)


costs = st.integers(min_value=0, max_value=2**31 - 1).map(lambda s: np.random.default_rng(s).uniform(0, 1, (6, 9)))


@settings(max_examples=20, deadline=None)
@given(C=costs, reg=st.sampled_from([0.02, 0.05, 0.2]), tau1=st.floats(0.005, 2.0), tau2=st.floats(0.005, 2.0))
def test_property_transpose_symmetry(C, reg, tau1, tau2):
    """Swapping the domains (C -> C^T, tau_src <-> tau_tgt) transposes the plan."""
    P = unbalanced_sinkhorn(torch.tensor(C), reg=reg, tau_src=tau1, tau_tgt=tau2, tol=1e-11, max_iters=20_000)
    Pt = unbalanced_sinkhorn(torch.tensor(C.T), reg=reg, tau_src=tau2, tau_tgt=tau1, tol=1e-11, max_iters=20_000)
    assert torch.allclose(P.T, Pt, atol=1e-8)
    assert torch.all(P >= 0)


@settings(max_examples=15, deadline=None)
@given(C=costs, reg=st.sampled_from([0.02, 0.1]))
def test_property_marginals_tighten_as_tau_grows(C, reg):
    """Marginal violation |pi 1 - a| + |pi^T 1 - b| decreases as tau grows (towards 0 as tau -> inf)."""
    a, b = np.full(6, 1 / 6), np.full(9, 1 / 9)
    errs = []
    for tau in [0.01, 0.1, 1.0, 10.0]:
        P = unbalanced_sinkhorn(torch.tensor(C), reg=reg, tau_src=tau, tau_tgt=tau, tol=1e-11,
                                max_iters=20_000).numpy()
        errs.append(np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum())
    assert all(e2 <= e1 + 1e-9 for e1, e2 in zip(errs, errs[1:])), errs
    assert errs[-1] < 0.2 * errs[0] + 1e-6


def test_torch_backend_matches_numpy_backend():
    """The GPU code path (torch ops) gives the CPU path's potentials; run here on CPU tensors, batched."""
    from dpot.ot.sinkhorn import _Numpy, _scaling_iterations, _Torch

    rng = np.random.default_rng(5)
    cr = rng.uniform(0, 50, (3, 12, 9)) / 0.01  # C/reg up to 5000: absorption happens
    la, lb = np.full((3, 12), -np.log(12)), np.full((3, 9), -np.log(9))
    args = (0.02 / 0.03, 0.5 / 0.51, 5000, 1e-9, 10)
    f_np, g_np, iters_np, conv_np, _ = _scaling_iterations(_Numpy, cr, la, lb, *args)
    f_t, g_t, iters_t, conv_t, _ = _scaling_iterations(_Torch, torch.tensor(cr), torch.tensor(la), torch.tensor(lb),
                                                       *args)
    assert (iters_t, conv_t) == (iters_np, conv_np) and conv_np and iters_np < 5000
    assert np.allclose(f_t.numpy(), f_np, rtol=1e-10, atol=1e-8)
    assert np.allclose(g_t.numpy(), g_np, rtol=1e-10, atol=1e-8)
    assert np.all(np.isfinite(f_np)) and np.all(np.isfinite(g_np))


def _pot_log(C, a, b, reg, tau1, tau2, cap, thr):
    import ot

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POT warns when it stops at numItermax
        return ot.unbalanced.sinkhorn_unbalanced(a, b, C, reg, (tau1, tau2), numItermax=cap, stopThr=thr, log=True)


@pytest.mark.parametrize("cap", [5, 30])
def test_info_of_a_capped_solve_matches_pot(cap):
    """Stopped at max_iters: POT's iteration count and plan, converged False, and the marginal error of POT's own
    plan and potentials (``f = reg log u``): ||pi 1 - a exp(-f / tau_src)||_1 / ||a exp(-f / tau_src)||_1."""
    rng = np.random.default_rng(11)
    C = rng.uniform(0, 1, (10, 7))
    a, b = np.full(10, 1 / 10), np.full(7, 1 / 7)
    reg, tau1, tau2 = 0.05, 1.0, 0.5
    P, log = _pot_log(C, a, b, reg, tau1, tau2, cap, 1e-12)
    want_r, want_c = a * np.exp(-reg * log["logu"] / tau1), b * np.exp(-reg * log["logv"] / tau2)
    pot_err = max(np.abs(P.sum(1) - want_r).sum() / want_r.sum(), np.abs(P.sum(0) - want_c).sum() / want_c.sum())
    plan, info = unbalanced_sinkhorn(torch.tensor(C), reg=reg, tau_src=tau1, tau_tgt=tau2, max_iters=cap, tol=1e-12,
                                     return_info=True)
    assert isinstance(info, SinkhornInfo)
    assert info.iters == len(log["err"]) == cap and not info.converged
    assert np.abs(plan.numpy() - P).max() < 1e-14
    assert info.marginal_err == pytest.approx(pot_err, rel=1e-9) and info.marginal_err > 1e-4
    assert info.potential_change > 1e-12


def test_info_of_a_converged_solve():
    """Converged: iterations within one check period of POT's (stopping tests differ), far below the cap, and a
    marginal error at the tolerance's level; the same plan, bit for bit, as without ``return_info``."""
    rng = np.random.default_rng(12)
    C = rng.uniform(0, 1, (10, 7))
    a, b = np.full(10, 1 / 10), np.full(7, 1 / 7)
    _, log = _pot_log(C, a, b, 0.05, 1.0, 0.5, 100_000, 1e-9)
    kw = dict(reg=0.05, tau_src=1.0, tau_tgt=0.5, max_iters=100_000, tol=1e-9)
    plan, info = unbalanced_sinkhorn(torch.tensor(C), return_info=True, **kw)
    assert info.converged and info.potential_change < 1e-9
    assert abs(info.iters - len(log["err"])) <= 10 and info.iters < 100_000
    assert info.marginal_err < 1e-8
    assert torch.equal(plan, unbalanced_sinkhorn(torch.tensor(C), **kw))


def test_info_balanced_limit_is_the_plain_marginal_error():
    """tau = inf: the condition is pi 1 = a, so the error is ||pi 1 - a||_1 (a sums to 1) as POT reports it."""
    C = torch.tensor(_cost(12, 1.0, 4))
    plan, info = unbalanced_sinkhorn(C, reg=0.05, tau_src=float("inf"), tau_tgt=float("inf"), max_iters=7,
                                     return_info=True)
    a = np.full(12, 1 / 12)
    row_err = np.abs(plan.numpy().sum(1) - a).sum()
    col_err = np.abs(plan.numpy().sum(0) - a).sum()
    assert not info.converged and info.iters == 7
    assert info.marginal_err == pytest.approx(max(row_err, col_err), rel=1e-9) and row_err > 1e-3


def test_info_when_mass_underflows_and_when_not_finite():
    """C/reg ~ 1e4 (plan mass below float64's range in places): the error is still finite and small once converged.
    A non-finite cost never converges: it runs to the cap and reports nan."""
    C = torch.tensor(_cost(8, 50.0, 9))
    _, info = unbalanced_sinkhorn(C, reg=0.005, tau_src=0.02, tau_tgt=0.02, max_iters=5000, tol=1e-9,
                                  return_info=True)
    assert info.converged and 0 <= info.marginal_err < 1e-8
    bad = C.clone()
    bad[0, 0] = float("nan")
    _, info = unbalanced_sinkhorn(bad, reg=0.02, tau_src=0.01, tau_tgt=0.01, max_iters=40, return_info=True)
    assert info.iters == 40 and not info.converged and np.isnan(info.marginal_err)


def test_info_batched_counts_the_joint_iterations():
    """A batch is iterated jointly: its count is the slowest problem's, its error the worst problem's."""
    C = torch.tensor(np.stack([_cost(9, 1.0, s) for s in range(3)]))
    kw = dict(reg=0.05, tau_src=1.0, tau_tgt=1.0, tol=1e-8, max_iters=10_000)
    _, info = unbalanced_sinkhorn(C, return_info=True, **kw)
    singles = [unbalanced_sinkhorn(C[i], return_info=True, **kw)[1] for i in range(3)]
    assert info.converged and info.iters == max(s.iters for s in singles)
    same_iters = [unbalanced_sinkhorn(C[i], return_info=True, **{**kw, "tol": 0.0, "max_iters": info.iters})[1]
                  for i in range(3)]
    assert info.marginal_err == pytest.approx(max(s.marginal_err for s in same_iters), rel=1e-9)


def test_torch_backend_marginal_error_matches_numpy():
    """The GPU path's marginal error (torch ops) equals the CPU path's (numpy), here on CPU tensors, batched."""
    from dpot.ot.sinkhorn import _marginal_error, _Numpy, _scaling_iterations, _Torch

    rng = np.random.default_rng(6)
    cr = rng.uniform(0, 1, (2, 7, 5)) / 0.05
    la, lb = np.full((2, 7), -np.log(7)), np.full((2, 5), -np.log(5))
    phis = (1.0 / 1.05, 0.5 / 0.55)
    f, g, *_ = _scaling_iterations(_Numpy, cr, la, lb, *phis, 12, 0.0, 10)
    log_plan = la[..., :, None] + lb[..., None, :] + f[..., :, None] + g[..., None, :] - cr
    err_np = _marginal_error(_Numpy, log_plan, la, lb, f, g, *phis)
    err_t = _marginal_error(_Torch, *(torch.tensor(x) for x in (log_plan, la, lb, f, g)), *phis)
    assert err_np > 1e-4 and err_t == pytest.approx(err_np, rel=1e-12)
