"""dp-ot-official: the official code's ground cost ``0.01 ||z_s - z_t||^2 + 0.05 ||p_s - p_t||^2`` as dpot's config
keys express it (a concat embed term with the state, a raw hand-position label, cost_norm none), checked against a
hand computation; per-term cost_norm; the feature kinds carry their own behaviour."""

import draccus
import pytest
import torch

from dpot.bench.presets import OFFICIAL_OT, PAPER_OT
from dpot.config import EmbedFeatureConfig, LabelFeatureConfig, OTConfig
from dpot.errors import UserError
from dpot.ot import DomainFeatures, OTAlignmentLoss, make_alignment_loss


def _domain(g, n=6, d=5, state_dim=4, n_obs=1, horizon=4, scale=1.0):
    raw_state = torch.randn(n, n_obs, state_dim, generator=g) * 0.1 + torch.tensor([0.0, 0.6, 0.2, 0.5])
    return DomainFeatures(embeds={"corner4": torch.randn(n, d, generator=g).requires_grad_(True),
                                  "gripperPOV": torch.randn(n, d, generator=g).requires_grad_(True)},
                          labels={"action": torch.randn(n, horizon, 4, generator=g),
                                  "observation.state": (raw_state - 0.3) / 0.2 * scale},   # "normalized"
                          raw_labels={"observation.state": raw_state},
                          phase=torch.linspace(0, 1, n))


def _official() -> OTConfig:
    return draccus.decode(OTConfig, OFFICIAL_OT)


def test_official_cost_terms_equal_the_hand_computation():
    g = torch.Generator().manual_seed(0)
    src, tgt = _domain(g), _domain(g)
    loss = OTAlignmentLoss(_official(), cameras=["corner4", "gripperPOV"])
    assert loss.term_kinds == {"obs_embed": "embed", "state_lbl": "label"}
    terms = loss.cost_terms(src, tgt)
    z_s = torch.cat([src.embeds["corner4"], src.embeds["gripperPOV"], src.labels["observation.state"].flatten(1)], 1)
    z_t = torch.cat([tgt.embeds["corner4"], tgt.embeds["gripperPOV"], tgt.labels["observation.state"].flatten(1)], 1)
    p_s, p_t = src.raw_labels["observation.state"][:, -1, :3], tgt.raw_labels["observation.state"][:, -1, :3]
    hand_embed = 0.01 * ((z_s[:, None, :] - z_t[None, :, :]) ** 2).sum(-1)
    hand_label = 0.05 * ((p_s[:, None, :] - p_t[None, :, :]) ** 2).sum(-1)
    torch.testing.assert_close(terms["obs_embed"], hand_embed, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["state_lbl"], hand_label, rtol=1e-5, atol=1e-7)
    out = loss(src, tgt)
    assert out.metrics["ot_skipped"] == 0.0 and out.metrics["ot_pi_sum"] > 0
    assert out.metrics["ot_cost/obs_embed"] == pytest.approx(float(hand_embed.detach().mean()), rel=1e-5)
    m = out.metrics   # the concatenated term split into its parts, which add up to it
    parts = {k: v for k, v in m.items() if k.startswith("ot_cost/obs_embed@")}
    assert set(parts) == {"ot_cost/obs_embed@img_corner4", "ot_cost/obs_embed@img_gripperPOV",
                          "ot_cost/obs_embed@state"}
    assert sum(parts.values()) == pytest.approx(m["ot_cost/obs_embed"], rel=1e-5)
    zs_state, zt_state = src.labels["observation.state"].flatten(1), tgt.labels["observation.state"].flatten(1)
    state_by_hand = 0.01 * ((zs_state[:, None] - zt_state[None]) ** 2).sum(-1).mean()
    assert parts["ot_cost/obs_embed@state"] == pytest.approx(float(state_by_hand), rel=1e-4)
    out.loss.backward()   # the embed term's gradient reaches every camera's features
    assert src.embeds["corner4"].grad.abs().sum() > 0 and tgt.embeds["gripperPOV"].grad.abs().sum() > 0


def test_the_label_reads_raw_units_and_the_current_step_only():
    g = torch.Generator().manual_seed(1)
    src, tgt = _domain(g, n_obs=2), _domain(g, n_obs=2)
    loss = OTAlignmentLoss(_official(), cameras=["corner4", "gripperPOV"])
    before = loss.cost_terms(src, tgt)["state_lbl"]
    src.labels["observation.state"] = src.labels["observation.state"] * 7.0      # normalized values: not read
    src.raw_labels["observation.state"][:, 0] += 5.0                           # an earlier step: not read
    src.raw_labels["observation.state"][:, -1, 3] += 5.0                       # the gripper (dim 3): not read
    torch.testing.assert_close(loss.cost_terms(src, tgt)["state_lbl"], before)
    src.raw_labels["observation.state"][:, -1, 0] += 0.1                       # hand x of the current step: read
    assert not torch.allclose(loss.cost_terms(src, tgt)["state_lbl"], before)


def test_per_term_cost_norm_overrides_the_section():
    g = torch.Generator().manual_seed(2)
    src, tgt = _domain(g), _domain(g)
    cfg = OTConfig(cost_norm="dim", features=[
        EmbedFeatureConfig(weight_embed=1.0, cameras=["corner4"]),
        EmbedFeatureConfig(weight_embed=1.0, cameras=["gripperPOV"], cost_norm="none")])
    terms = OTAlignmentLoss(cfg).cost_terms(src, tgt)
    raw = ((src.embeds["gripperPOV"][:, None] - tgt.embeds["gripperPOV"][None]) ** 2).sum(-1)
    torch.testing.assert_close(terms["img_gripperPOV"], raw, rtol=1e-5, atol=1e-6)
    per_dim = ((src.embeds["corner4"][:, None] - tgt.embeds["corner4"][None]) ** 2).mean(-1)
    torch.testing.assert_close(terms["img_corner4"], per_dim, rtol=1e-5, atol=1e-6)


def test_paper_arm_is_unchanged_by_the_new_keys():
    """dp-ot-paper keeps its per-camera terms on the normalized action chunk (its study numbers stay valid)."""
    cfg = draccus.decode(OTConfig, PAPER_OT)
    assert OTAlignmentLoss(cfg, cameras=["a", "b"]).term_kinds == {"img_a": "embed", "img_b": "embed",
                                                                   "action_lbl": "label"}
    assert all(f.cost_norm is None for f in cfg.features) and cfg.cost_norm == "dim"


def test_mmd_uses_the_concatenated_embedding_and_no_label():
    g = torch.Generator().manual_seed(3)
    src, tgt = _domain(g), _domain(g)
    cfg = _official()
    cfg.method = "mmd"
    mmd = make_alignment_loss(cfg, cameras=["corner4", "gripperPOV"])
    assert mmd.term_kinds == {"obs_embed": "embed"}
    out = mmd(src, tgt)
    assert set(k for k in out.metrics if k.startswith("mmd/")) == {"mmd/obs_embed"} and out.metrics["ot_loss"] > 0


@pytest.mark.parametrize("bad, field", [
    ({"type": "label", "key": "observation.goal"}, "key"),
    ({"type": "label", "cost_norm": "l2"}, "cost_norm"),
    ({"type": "embed", "include_state": True}, "include_state"),
])
def test_bad_feature_values_name_their_field(bad, field):
    cfg = draccus.decode(OTConfig, {"features": [bad]})
    with pytest.raises(UserError, match=rf"ot\.features\[0\]\.{field}"):
        cfg.validate()


def test_an_unknown_method_lists_the_registered_ones():
    with pytest.raises(UserError, match=r"ot\.method: unknown 'sinkhorn'.*'uot', 'mmd'"):
        OTConfig(method="sinkhorn").validate()


def test_label_terms_check_the_dataset():
    feat = LabelFeatureConfig(key="observation.state", dim_slice=[0, 3])
    feat.check_dataset("ot.features[1]", ["top"], {"observation.state": (4,), "action": (4,)})
    with pytest.raises(UserError, match=r"ot\.features\[1\]\.dim_slice"):
        LabelFeatureConfig(key="observation.state", dim_slice=[0, 6]).check_dataset(
            "ot.features[1]", ["top"], {"observation.state": (4,)})
    with pytest.raises(UserError, match=r"ot\.features\[1\]\.key"):
        feat.check_dataset("ot.features[1]", ["top"], {"action": (4,)})
