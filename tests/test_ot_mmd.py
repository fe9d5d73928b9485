"""The MMD (energy distance) baseline: zero for identical samples, grows with a shift, gradients, mask, factory."""

import math

import pytest
import torch

from dpot.config import EmbedFeatureConfig, LabelFeatureConfig, OTConfig
from dpot.ot import DomainFeatures, MMDAlignmentLoss, OTAlignmentLoss, energy_distance, make_alignment_loss


def _cfg(**kw):
    kw.setdefault("features", [EmbedFeatureConfig(weight_embed=1.0), LabelFeatureConfig(weight_label=0.05)])
    return OTConfig(method="mmd", **kw)


def _domain(x, mask=None, cam="top"):
    return DomainFeatures(embeds={cam: x}, labels={"action": torch.zeros(x.shape[0], 2, 3)},
                          phase=torch.linspace(0, 1, x.shape[0]), mask=mask)


def _sample(n, d=64, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) + shift


def test_energy_distance_is_zero_for_identical_samples_and_matches_the_closed_form():
    x = _sample(16)
    assert energy_distance(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
    # two single points: E = ||x - y|| (the within-domain means are 0)
    a, b = torch.zeros(1, 3), torch.tensor([[3.0, 4.0, 0.0]])
    assert energy_distance(a, b).item() == pytest.approx(5.0)


def test_mmd_grows_monotonically_with_the_shift():
    src = _sample(32, seed=1)
    loss = MMDAlignmentLoss(_cfg(lambda_ot=1.0))
    values = [loss(_domain(src), _domain(_sample(32, shift=s, seed=2))).metrics["mmd/img_top"]
              for s in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert all(b > a for a, b in zip(values, values[1:])), values
    # same distribution, different samples: only the finite-sample bias E||x - y|| / (n sqrt(D)) ~ sqrt(2) / 32
    assert values[0] < 0.06 and values[-1] > 10 * values[0]
    same = loss(_domain(src), _domain(src.clone())).metrics["mmd/img_top"]
    assert same == pytest.approx(0.0, abs=1e-6)


def test_loss_is_lambda_times_weighted_terms_and_gradients_reach_the_embeddings():
    x = _sample(8, seed=3).requires_grad_(True)
    y = _sample(8, shift=0.5, seed=4).requires_grad_(True)
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    v = (torch.randn(8, 64, generator=torch.Generator().manual_seed(6)) + 1).requires_grad_(True)
    cfg = _cfg(lambda_ot=0.3, features=[EmbedFeatureConfig(weight_embed=2.0, cameras=["top"]),
                                        EmbedFeatureConfig(weight_embed=0.5, cameras=["wrist"])])
    src = DomainFeatures(embeds={"top": x, "wrist": w})
    tgt = DomainFeatures(embeds={"top": y, "wrist": v})
    out = MMDAlignmentLoss(cfg)(src, tgt)
    m = out.metrics
    assert set(m) >= {"ot_loss", "ot_skipped", "mmd/img_top", "mmd/img_wrist", "ot_embed_spread/top"}
    assert m["mmd/img_top"] == pytest.approx(2.0 * energy_distance(x / 8, y / 8).item(), rel=1e-5)
    assert m["ot_loss"] == pytest.approx(m["mmd/img_top"] + m["mmd/img_wrist"], rel=1e-5)   # before lambda
    assert m["ot_loss_scaled"] == pytest.approx(0.3 * m["ot_loss"], rel=1e-5)
    assert out.loss.item() == pytest.approx(m["ot_loss_scaled"]) and out.plan is None and m["ot_skipped"] == 0.0
    out.loss.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (x, y, w, v))
    # a gradient step on the target embeddings moves them toward the source: the distance falls
    with torch.no_grad():
        before = energy_distance(x, y).item()
        after = energy_distance(x, y - 5.0 * y.grad).item()
    assert after < before
    frozen = _cfg(features=[EmbedFeatureConfig(use_learned_embed=False)])
    assert not MMDAlignmentLoss(frozen)(_domain(x), _domain(y)).loss.requires_grad


def test_mask_uses_only_masked_in_rows():
    src = _sample(8, seed=7).requires_grad_(True)
    tgt = _sample(8, seed=8)
    far = tgt.clone()
    far[4:] += 100.0  # masked out: must change nothing
    keep = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0], dtype=torch.bool)
    loss = MMDAlignmentLoss(_cfg())
    masked = loss(_domain(src, keep), _domain(far, keep))
    ref = loss(_domain(src[:4]), _domain(tgt[:4]))
    assert masked.metrics["mmd/img_top"] == pytest.approx(ref.metrics["mmd/img_top"], rel=1e-6)
    masked.loss.backward()
    assert src.grad[4:].abs().sum() == 0 and src.grad[:4].abs().sum() > 0
    none = loss(_domain(src), _domain(tgt, torch.zeros(8, dtype=torch.bool)))
    assert none.metrics["ot_skipped"] == 1.0 and none.loss.item() == 0.0 and "mmd/img_top" in none.metrics


def test_non_finite_embeddings_skip_the_step():
    x = _sample(8)
    x[0, 0] = float("nan")
    out = MMDAlignmentLoss(_cfg())(_domain(x), _domain(_sample(8, seed=1)))
    assert out.metrics["ot_skipped"] == 1.0 and out.loss.item() == 0.0
    assert all(math.isfinite(v) for v in out.metrics.values())


def test_factory_picks_the_method_and_both_losses_share_the_call():
    uot = make_alignment_loss(OTConfig(), cameras=["observation.images.top"])
    mmd = make_alignment_loss(_cfg(), cameras=["top"])
    assert isinstance(uot, OTAlignmentLoss) and isinstance(mmd, MMDAlignmentLoss)
    assert uot.term_kinds == {"img_top": "embed", "action_lbl": "label"}
    assert mmd.term_kinds == {"img_top": "embed"}  # no label term in the baseline
    src, tgt = _domain(_sample(6)), _domain(_sample(6, shift=1.0, seed=1))
    for loss in (uot, mmd):
        out = loss(src, tgt)
        assert out.loss.ndim == 0 and "ot_loss" in out.metrics
    cfg = _cfg()
    cfg.method = "emd"
    with pytest.raises(ValueError, match="ot.method"):
        make_alignment_loss(cfg)


def test_energy_distance_agrees_with_geomloss():
    """The paper's baseline is geomloss's energy distance: same value (geomloss expands squared distances, ~1e-4)."""
    import geomloss  # a test dependency (pyproject [test])

    x, y = _sample(32, d=128, seed=11), _sample(24, d=128, shift=0.3, seed=12)
    assert energy_distance(x, y).item() == pytest.approx(geomloss.SamplesLoss("energy")(x, y).item(), rel=1e-3)
