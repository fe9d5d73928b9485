"""OTAlignmentLoss: metrics, gradients into the features, temporal prior, skipping non-finite steps, masks."""

import math

import pytest
import torch

from dpot.config import EmbedFeatureConfig, LabelFeatureConfig, OTConfig
from dpot.ot import (
    DomainFeatures,
    OTAlignmentLoss,
    label_features,
    prior_cost_shift,
    sq_euclidean_cost,
    unbalanced_sinkhorn,
)


def _features(n=8, d=16, horizon=4, adim=6, seed=0, noise=0.05):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=g)
    src = DomainFeatures(embeds={"top": base.clone().requires_grad_(True),
                                 "wrist": torch.randn(n, d, generator=g).requires_grad_(True)},
                         labels={"action": torch.randn(n, horizon, adim, generator=g)},
                         phase=torch.linspace(0, 1, n))
    tgt = DomainFeatures(embeds={"top": (base + noise * torch.randn(n, d, generator=g)).requires_grad_(True),
                                 "wrist": torch.randn(n, d, generator=g).requires_grad_(True)},
                         labels={"action": torch.randn(n, horizon, adim, generator=g)},
                         phase=torch.linspace(0, 1, n))
    return src, tgt


def _cfg(**kw):
    kw.setdefault("features", [EmbedFeatureConfig(weight_embed=1.0),
                               LabelFeatureConfig(key="action", dim_slice=[0, 4], weight_label=0.05)])
    kw.setdefault("max_iters", 500)
    return OTConfig(**kw)


def test_metrics_keys_finite_and_consistent():
    src, tgt = _features()
    out = OTAlignmentLoss(_cfg(reg=0.05, tau_src=0.05, tau_tgt=0.05))(src, tgt)
    m = out.metrics
    expected = {"ot_loss", "ot_loss_scaled", "ot_pi_sum", "ot_pi_diag", "ot_pi_diag_frac", "ot_skipped",
                "ot_cost_plan/img_top", "ot_cost_plan/img_wrist", "ot_cost_plan/action_lbl", "ot_cost/img_top",
                "ot_cost/img_wrist", "ot_cost/action_lbl"}
    expected |= {"ot_embed_spread/top", "ot_embed_spread/wrist"}
    assert expected <= set(m)
    assert all(math.isfinite(v) for v in m.values())
    assert m["ot_skipped"] == 0.0
    assert m["ot_loss"] == pytest.approx(sum(m[f"ot_cost_plan/{t}"] for t in ("img_top", "img_wrist", "action_lbl")),
                                         rel=1e-5)
    assert m["ot_pi_sum"] == pytest.approx(float(out.plan.sum()))
    assert m["ot_pi_diag_frac"] == pytest.approx(m["ot_pi_diag"] / m["ot_pi_sum"])
    assert out.loss.item() == pytest.approx(m["ot_loss_scaled"], rel=1e-6)
    assert m["ot_loss_scaled"] == pytest.approx(0.1 * m["ot_loss"], rel=1e-6)   # the fork's ot_loss is before lambda
    # the top camera's embeddings are paired on the diagonal: far more diagonal mass than random (1/n)
    assert m["ot_pi_diag_frac"] > 3 / 8


def test_gradients_flow_into_embeddings_only_when_learned():
    src, tgt = _features()
    OTAlignmentLoss(_cfg())(src, tgt).loss.backward()
    assert src.embeds["top"].grad is not None and src.embeds["top"].grad.abs().sum() > 0
    assert tgt.embeds["wrist"].grad.abs().sum() > 0

    src, tgt = _features()
    frozen = _cfg(features=[EmbedFeatureConfig(use_learned_embed=False),
                            LabelFeatureConfig(weight_label=0.05)])
    out = OTAlignmentLoss(frozen)(src, tgt)
    assert not out.loss.requires_grad  # plan and metrics computed, no gradient to the encoder
    assert out.metrics["ot_pi_sum"] > 0


def test_lambda_scales_loss_and_zero_weight_removes_term():
    src, tgt = _features()
    a = OTAlignmentLoss(_cfg(lambda_ot=0.1))(src, tgt)
    b = OTAlignmentLoss(_cfg(lambda_ot=0.3))(src, tgt)
    assert b.loss.item() == pytest.approx(3 * a.loss.item(), rel=1e-5)
    no_label = OTAlignmentLoss(_cfg(features=[EmbedFeatureConfig(),
                                              LabelFeatureConfig(weight_label=0.0)]))(src, tgt)
    assert no_label.metrics["ot_cost/action_lbl"] == 0.0


def test_temporal_prior_moves_mass_to_the_diagonal():
    src, tgt = _features(noise=3.0)  # embeddings barely related: without a prior the plan is spread
    # costs here are O(5): reg and tau on that scale keep the plan's mass (see the closed-form test)
    scale = dict(reg=1.0, tau_src=2.0, tau_tgt=2.0)
    no_prior = OTAlignmentLoss(_cfg(heuristic=False, **scale))(src, tgt).metrics
    prior = OTAlignmentLoss(_cfg(heuristic=True, prior_sigma=0.02, **scale))(src, tgt).metrics
    assert no_prior["ot_pi_sum"] > 1e-3
    assert prior["ot_pi_diag_frac"] > no_prior["ot_pi_diag_frac"] + 0.2


def test_prior_shift_is_normalized_reference():
    t = torch.linspace(0, 1, 5)
    shift = prior_cost_shift(t, t, sigma=0.1)
    w = torch.exp(-shift)
    assert float((w / 25).sum()) == pytest.approx(1.0, rel=1e-5)  # sum_ij a_i b_j w_ij = 1
    assert torch.argmin(shift, dim=1).tolist() == list(range(5))


def test_constant_cost_mass_matches_closed_form_through_the_loss():
    """The metric users read (pi_sum) follows exp(-c / (reg + 2 tau)): costs ~1 leave little mass."""
    n = 6
    src = DomainFeatures(labels={"action": torch.zeros(n, 1, 1)})
    for c in (0.05, 0.5):
        tgt = DomainFeatures(labels={"action": torch.full((n, 1, 1), math.sqrt(c))})
        cfg = _cfg(features=[LabelFeatureConfig(weight_label=1.0)], heuristic=False, tol=1e-9)
        m = OTAlignmentLoss(cfg)(src, tgt).metrics
        assert m["ot_pi_sum"] == pytest.approx(math.exp(-c / 0.04), rel=1e-4)


def test_non_finite_inputs_skip_the_step_without_nan():
    src, tgt = _features()
    with torch.no_grad():
        src.embeds["top"][0, 0] = float("nan")
    out = OTAlignmentLoss(_cfg())(src, tgt)
    assert out.metrics["ot_skipped"] == 1.0
    assert torch.isfinite(out.loss) and out.loss.item() == 0.0
    assert all(math.isfinite(v) for v in out.metrics.values())
    src, tgt = _features()
    with torch.no_grad():
        tgt.embeds["wrist"][1] = float("inf")
    assert OTAlignmentLoss(_cfg())(src, tgt).metrics["ot_skipped"] == 1.0


def test_cost_helpers():
    x, y = torch.randn(4, 3), torch.randn(5, 3)
    assert torch.allclose(sq_euclidean_cost(x, y), torch.cdist(x, y) ** 2, atol=1e-5)
    lab = torch.arange(2 * 3 * 8, dtype=torch.float32).reshape(2, 3, 8)
    assert label_features(lab, [0, 2]).shape == (2, 6)
    with pytest.raises(ValueError, match="beyond"):
        label_features(lab, [0, 9])


def test_autocast_does_not_reach_the_solver():
    src, tgt = _features()
    ref = OTAlignmentLoss(_cfg())(src, tgt).metrics
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = OTAlignmentLoss(_cfg())(src, tgt).metrics
    assert under["ot_pi_sum"] == pytest.approx(ref["ot_pi_sum"], rel=1e-6)


def test_embed_spread_tracks_embedding_scale_not_alignment():
    """Shrinking every embedding by k shrinks the spread by k^2; moving the domains together leaves it."""
    src, tgt = _features(noise=1.0)
    loss = OTAlignmentLoss(_cfg())
    base = loss(src, tgt).metrics
    small = loss(DomainFeatures({c: 0.1 * e for c, e in src.embeds.items()}, src.labels, src.phase),
                 DomainFeatures({c: 0.1 * e for c, e in tgt.embeds.items()}, tgt.labels, tgt.phase)).metrics
    assert small["ot_embed_spread/top"] == pytest.approx(0.01 * base["ot_embed_spread/top"], rel=1e-4)
    aligned = loss(src, DomainFeatures(dict(src.embeds), tgt.labels, tgt.phase)).metrics  # target = source
    assert aligned["ot_cost/img_top"] < 0.7 * base["ot_cost/img_top"]  # cross-domain cost falls ...
    assert aligned["ot_embed_spread/top"] == pytest.approx(  # ... while the spread is the source's own
        OTAlignmentLoss.embed_spread(src, src)["ot_embed_spread/top"], rel=1e-6)


def test_mask_selects_rows_before_the_costs():
    """Masked-out rows change nothing: same loss, plan and costs as calling with the selected rows only."""
    src, tgt = _features(n=8)
    keep_s = torch.tensor([1, 1, 0, 1, 0, 1, 1, 0], dtype=torch.bool)
    keep_t = torch.tensor([1, 0, 1, 1, 1, 1, 0, 1], dtype=torch.bool)
    loss = OTAlignmentLoss(_cfg(reg=0.05, tau_src=0.05, tau_tgt=0.05))
    masked = loss(DomainFeatures(src.embeds, src.labels, src.phase, mask=keep_s),
                  DomainFeatures(tgt.embeds, tgt.labels, tgt.phase, mask=keep_t))

    def rows(d, keep):
        return DomainFeatures({k: v[keep] for k, v in d.embeds.items()}, {k: v[keep] for k, v in d.labels.items()},
                              d.phase[keep])

    ref = loss(rows(src, keep_s), rows(tgt, keep_t))
    assert masked.plan.shape == (5, 6) and not masked.plan.requires_grad
    torch.testing.assert_close(masked.plan, ref.plan)
    diag = {"ot_pi_diag", "ot_pi_diag_frac"}
    assert {k: v for k, v in masked.metrics.items() if k not in diag} == pytest.approx(
        {k: v for k, v in ref.metrics.items() if k not in diag})
    # the paired diagonal is by position in the batch: kept source 0, 3, 5 meet kept target 0, 3, 5
    # (rows 0, 2, 3 of the plan; columns 0, 2, 4), not the plan's own diagonal
    p = masked.plan
    assert masked.metrics["ot_pi_diag"] == pytest.approx(float(p[0, 0] + p[2, 2] + p[3, 4]), rel=1e-6)
    assert masked.metrics["ot_pi_diag_frac"] == pytest.approx(masked.metrics["ot_pi_diag"] / float(p.sum()))
    assert ref.metrics["ot_pi_diag"] == pytest.approx(float(torch.diagonal(ref.plan).sum()), rel=1e-6)
    assert set(masked.costs) == {"img_top", "img_wrist", "action_lbl"}
    assert all(c.shape == (5, 6) and not c.requires_grad for c in masked.costs.values())
    # the weighted cost matrices are the ones the loss uses: <plan, sum_k C_k> * lambda = loss
    total = sum(masked.costs.values())
    assert float(0.1 * (masked.plan * total).sum()) == pytest.approx(masked.loss.item(), rel=1e-5)
    masked.loss.backward()  # gradients reach only the masked-in rows
    assert src.embeds["top"].grad[~keep_s].abs().sum() == 0 and src.embeds["top"].grad[keep_s].abs().sum() > 0


def test_a_domain_with_no_masked_in_row_skips_the_term():
    src, tgt = _features(n=4)
    none = DomainFeatures(tgt.embeds, tgt.labels, tgt.phase, mask=torch.zeros(4, dtype=torch.bool))
    out = OTAlignmentLoss(_cfg())(src, none)
    assert out.metrics["ot_skipped"] == 1.0 and out.loss.item() == 0.0 and out.plan is None
    assert {"ot_cost/img_top", "ot_cost/action_lbl"} <= set(out.metrics)
    assert all(math.isfinite(v) for v in out.metrics.values())


def test_term_kinds_name_every_logged_cost_term():
    src, tgt = _features()
    loss = OTAlignmentLoss(_cfg(), cameras=["observation.images.top", "wrist"])
    kinds = loss.term_kinds
    assert kinds == {"img_top": "embed", "img_wrist": "embed", "action_lbl": "label"}
    logged = {k.removeprefix("ot_cost/") for k in loss(src, tgt).metrics if k.startswith("ot_cost/")}
    assert logged == set(kinds)
    one_cam = OTAlignmentLoss(_cfg(features=[EmbedFeatureConfig(cameras=["wrist"])]))
    assert one_cam.term_kinds == {"img_wrist": "embed"}  # explicit cameras: known before any call
    with pytest.raises(ValueError, match="cameras"):
        OTAlignmentLoss(_cfg()).term_kinds  # noqa: B018  (all cameras, none given, no call yet)


def test_solver_iterations_and_cap_in_the_metrics():
    """``ot_sinkhorn_iters`` / ``ot_sinkhorn_maxed`` are the solve's own SinkhornInfo: a generous budget converges
    (maxed 0, iterations below the cap); a budget of 3 iterations at a near-balanced tau stops at the cap."""
    src, tgt = _features()
    ok = OTAlignmentLoss(_cfg(reg=0.05, tau_src=0.05, tau_tgt=0.05, max_iters=500, tol=1e-5))(src, tgt).metrics
    assert ok["ot_sinkhorn_maxed"] == 0.0 and 0 < ok["ot_sinkhorn_iters"] < 500
    capped_cfg = _cfg(reg=0.05, tau_src=10.0, tau_tgt=10.0, max_iters=3, tol=1e-5, heuristic=False)
    res = OTAlignmentLoss(capped_cfg)(src, tgt)
    assert res.metrics["ot_sinkhorn_maxed"] == 1.0 and res.metrics["ot_sinkhorn_iters"] == 3.0
    cost = sum(res.costs.values())
    plan, info = unbalanced_sinkhorn(cost, reg=0.05, tau_src=10.0, tau_tgt=10.0, max_iters=3, tol=1e-5,
                                     return_info=True)
    assert torch.equal(plan, res.plan) and info.iters == 3 and not info.converged
    # the fixed point's marginal violation is logged too: small when converged, larger when stopped at the cap
    assert res.metrics["ot_sinkhorn_marginal_err"] == pytest.approx(info.marginal_err)
    assert ok["ot_sinkhorn_marginal_err"] < res.metrics["ot_sinkhorn_marginal_err"]


def test_window_counts_capped_solves_and_averages_iterations():
    """In the log window the cap count is summed (like ot_skipped) and the iterations averaged."""
    from dpot.train.run import MetricWindow

    win = MetricWindow()
    for iters, maxed in ((10, 0.0), (200, 1.0), (200, 1.0), (30, 0.0)):
        win.add({"train/ot_sinkhorn_iters": float(iters), "train/ot_sinkhorn_maxed": maxed})
    out = win.result()
    assert out["train/ot_sinkhorn_maxed"] == 2.0 and out["train/ot_sinkhorn_iters"] == pytest.approx(110.0)


def test_window_counts_are_not_multiplied_by_the_process_count():
    """Every rank solves the same OT problem on the all-gathered batch: the logged count is the count, not its sum
    over ranks (and means stay means)."""
    from types import SimpleNamespace

    from dpot.train.loop import _reduce

    two_ranks = SimpleNamespace(num_processes=2, device="cpu", reduce=lambda t, reduction: t * 2)  # equal ranks
    out = _reduce(two_ranks, {"train/ot_sinkhorn_maxed": 3.0, "train/ot_skipped": 1.0, "train/loss": 0.5})
    assert out == {"train/ot_sinkhorn_maxed": 3.0, "train/ot_skipped": 1.0, "train/loss": 0.5}
