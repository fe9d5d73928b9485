"""Plan snapshots and cost-term kinds (dpot.train.ot_records), and the trainer's OT features (mask pass-through)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dpot.config import OTConfig
from dpot.train.ot_records import (
    ot_term_kinds,
    plan_due,
    plan_path,
    plan_snapshot,
    save_plan_snapshot,
    write_ot_terms,
)


def _meta(n_src: int, n_tgt: int, ot_pair=None) -> dict:
    n = n_src + n_tgt
    meta = {"phase": torch.linspace(0, 1, n, dtype=torch.float64), "episode_index": torch.arange(10, 10 + n)}
    if ot_pair is not None:
        meta["ot_pair"] = torch.tensor(ot_pair, dtype=torch.bool)
    return meta


def test_snapshot_arrays_have_the_contract_names_shapes_and_dtypes():
    plan = torch.rand(3, 2, dtype=torch.float64)
    costs = {"img_top": torch.rand(3, 2), "action_lbl": torch.rand(3, 2)}
    snap = plan_snapshot(SimpleNamespace(plan=plan, costs=costs), _meta(3, 2), n_src=3)
    assert set(snap) == {"plan", "cost_img_top", "cost_action_lbl", "src_phase", "tgt_phase", "src_episode",
                         "tgt_episode"}
    assert snap["plan"].shape == (3, 2) and snap["plan"].dtype == np.float32
    np.testing.assert_allclose(snap["plan"], plan.numpy(), rtol=1e-6)
    np.testing.assert_allclose(snap["cost_action_lbl"], costs["action_lbl"].numpy())
    assert snap["cost_img_top"].dtype == np.float32
    assert snap["src_phase"].dtype == snap["tgt_phase"].dtype == np.float32
    np.testing.assert_allclose(snap["tgt_phase"], [0.75, 1.0])
    assert snap["src_episode"].tolist() == [10, 11, 12] and snap["tgt_episode"].tolist() == [13, 14]
    assert np.issubdtype(snap["src_episode"].dtype, np.integer)


def test_explicit_costs_override_and_no_plan_means_no_snapshot():
    plan = torch.ones(2, 2)
    snap = plan_snapshot(SimpleNamespace(plan=plan), _meta(2, 2), n_src=2, costs={"x": torch.zeros(2, 2)})
    assert set(snap) >= {"plan", "cost_x"}
    assert plan_snapshot(SimpleNamespace(plan=None, costs={}), _meta(2, 2), n_src=2) is None  # skipped OT step
    assert plan_snapshot(SimpleNamespace(loss=torch.zeros(())), _meta(2, 2), n_src=2) is None  # MMD: no plan


def test_plan_over_masked_in_rows_keeps_those_items_only():
    # 3 source items (the last not an OT partner), 2 target items, plan solved on the masked-in rows only
    meta = _meta(3, 2, ot_pair=[True, False, True, True, True])
    snap = plan_snapshot(SimpleNamespace(plan=torch.rand(2, 2), costs={}), meta, n_src=3)
    assert snap["src_episode"].tolist() == [10, 12] and snap["tgt_episode"].tolist() == [13, 14]
    # a full-size plan (zero rows for masked-out items) keeps every item
    snap = plan_snapshot(SimpleNamespace(plan=torch.rand(3, 2), costs={}), meta, n_src=3)
    assert snap["src_episode"].tolist() == [10, 11, 12]


def test_mismatched_shapes_skip_or_leave_out():
    assert plan_snapshot(SimpleNamespace(plan=torch.rand(4, 2)), _meta(3, 2), n_src=3) is None
    snap = plan_snapshot(SimpleNamespace(plan=torch.rand(3, 2), costs={"bad": torch.rand(2, 2)}), _meta(3, 2), 3)
    assert "cost_bad" not in snap and "plan" in snap


def test_plan_due_every_log_freq_times_plan_log_every():
    due = [s for s in range(1, 31) if plan_due(s, log_freq=5, plan_log_every=2, use_ot=True)]
    assert due == [10, 20, 30]
    assert not any(plan_due(s, 5, 0, True) for s in range(1, 31))
    assert not any(plan_due(s, 5, 2, False) for s in range(1, 31))


def test_saved_snapshot_is_atomic_and_loads(tmp_path):
    arrays = {"plan": np.eye(2, dtype=np.float32), "src_episode": np.array([1, 2])}
    path = save_plan_snapshot(tmp_path, 12, arrays)
    assert path == plan_path(tmp_path, 12) == tmp_path / "ot_plans" / "step_000012.npz"
    assert [p.name for p in (tmp_path / "ot_plans").iterdir()] == ["step_000012.npz"]  # no temp file left
    with np.load(path) as d:
        np.testing.assert_array_equal(d["plan"], arrays["plan"])
        assert d["src_episode"].tolist() == [1, 2]


def test_term_kinds_from_the_config_with_the_loss_naming(tmp_path):
    cfg = OTConfig()  # default features: one embed term on every camera, one label term on the action chunk
    image_keys = ["observation.images.wrist", "observation.images.top"]
    loss = SimpleNamespace()  # a loss without term_kinds
    assert ot_term_kinds(loss, cfg, image_keys) == {"img_top": "embed", "img_wrist": "embed", "action_lbl": "label"}
    cfg.features[0].cameras = ["wrist"]
    assert ot_term_kinds(loss, cfg, image_keys) == {"img_wrist": "embed", "action_lbl": "label"}
    # the names agree with the cost terms the loss computes
    from dpot.ot.loss import DomainFeatures, OTAlignmentLoss

    feats = DomainFeatures(embeds={"top": torch.rand(2, 4), "wrist": torch.rand(2, 4)},
                           labels={"action": torch.rand(2, 3, 2)})
    real = OTAlignmentLoss(OTConfig())
    assert set(real.cost_terms(feats, feats)) == set(ot_term_kinds(real, OTConfig(), image_keys))
    path = write_ot_terms(tmp_path, {"img_wrist": "embed"})
    assert json.loads(path.read_text()) == {"terms": {"img_wrist": "embed"}}


def test_term_kinds_from_the_loss_when_it_has_them():
    cfg = OTConfig()
    assert ot_term_kinds(SimpleNamespace(term_kinds={"img_a": "embed"}), cfg, []) == {"img_a": "embed"}
    as_method = SimpleNamespace(term_kinds=lambda: {"action_lbl": "label"})
    assert ot_term_kinds(as_method, cfg, []) == {"action_lbl": "label"}
    empty = SimpleNamespace(term_kinds={})  # nothing known yet: derived from the config
    assert ot_term_kinds(empty, cfg, ["observation.images.top"]) == {"img_top": "embed", "action_lbl": "label"}


@dataclass
class _MaskedFeatures:
    embeds: dict
    labels: dict
    phase: torch.Tensor | None = None
    mask: torch.Tensor | None = None


@pytest.mark.parametrize("pass_mask", [True, False])
def test_domain_features_pass_the_ot_pair_mask_only_when_supported(monkeypatch, pass_mask):
    import dpot.ot.loss
    from dpot.train.loop import domain_features

    monkeypatch.setattr(dpot.ot.loss, "DomainFeatures", _MaskedFeatures)
    run = SimpleNamespace(pass_mask=pass_mask, device=torch.device("cpu"), gather_group=None)
    out = {"embeds": {"top": torch.rand(4, 6)}, "action": torch.rand(4, 8, 2)}
    meta = {"phase": torch.tensor([0.1, 0.2, 0.3, 0.4]), "ot_pair": torch.tensor([True, False, True, True])}
    src = domain_features(run, out, meta, slice(0, 2))
    tgt = domain_features(run, out, meta, slice(2, None))
    assert torch.equal(src.embeds["top"], out["embeds"]["top"][:2]) and tgt.labels["action"].shape == (2, 8, 2)
    torch.testing.assert_close(tgt.phase, torch.tensor([0.3, 0.4]))
    if pass_mask:
        assert src.mask.dtype == torch.bool and src.mask.tolist() == [True, False] and tgt.mask.tolist() == [True] * 2
    else:
        assert src.mask is None and tgt.mask is None
