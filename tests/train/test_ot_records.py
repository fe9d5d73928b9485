"""Plan snapshots and ot_terms.json (dpot.train.ot_records), and the trainer's OT features (the ot_pair mask)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dpot.rundir import plan_path, write_terms
from dpot.train.ot_records import plan_due, plan_snapshot, save_plan_snapshot


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


def test_no_plan_means_no_snapshot():
    assert plan_snapshot(SimpleNamespace(plan=None, costs={}), _meta(2, 2), n_src=2) is None  # skipped OT step
    assert plan_snapshot(SimpleNamespace(loss=torch.zeros(())), _meta(2, 2), n_src=2) is None  # MMD: no plan


def test_plan_over_masked_in_rows_keeps_those_items_only():
    # 3 source items (the second not an OT partner), 2 target items; the loss solves on the masked-in rows only
    meta = _meta(3, 2, ot_pair=[True, False, True, True, True])
    snap = plan_snapshot(SimpleNamespace(plan=torch.rand(2, 2), costs={"c": torch.rand(2, 2)}), meta, n_src=3)
    assert snap["src_episode"].tolist() == [10, 12] and snap["tgt_episode"].tolist() == [13, 14]
    np.testing.assert_allclose(snap["src_phase"], [0.0, 0.5])
    assert snap["cost_c"].shape == (2, 2)
    # a plan over every item does not match the mask: no snapshot rather than misaligned rows
    assert plan_snapshot(SimpleNamespace(plan=torch.rand(3, 2), costs={}), meta, n_src=3) is None


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


def test_ot_terms_file(tmp_path):
    path = write_terms(tmp_path, {"img_wrist": "embed", "action_lbl": "label"})
    assert path == tmp_path / "ot_terms.json"
    assert json.loads(path.read_text()) == {"terms": {"img_wrist": "embed", "action_lbl": "label"}}


@pytest.mark.parametrize("with_flag", [True, False])
def test_domain_features_carry_the_ot_pair_mask(with_flag):
    from dpot.train.loop import domain_features

    run = SimpleNamespace(device=torch.device("cpu"), gather_group=None, label_inputs=set())  # action only
    out = {"embeds": {"top": torch.rand(4, 6)}, "action": torch.rand(4, 8, 2)}
    meta = {"phase": torch.tensor([0.1, 0.2, 0.3, 0.4])}
    if with_flag:
        meta["ot_pair"] = torch.tensor([True, False, True, True])
    src = domain_features(run, out, meta, slice(0, 2))
    tgt = domain_features(run, out, meta, slice(2, None))
    assert torch.equal(src.embeds["top"], out["embeds"]["top"][:2]) and tgt.labels["action"].shape == (2, 8, 2)
    torch.testing.assert_close(tgt.phase, torch.tensor([0.3, 0.4]))
    if with_flag:
        assert src.mask.dtype == torch.bool and src.mask.tolist() == [True, False] and tgt.mask.tolist() == [True] * 2
        assert len(src.selected()) == 1  # the loss sees the partner rows only
    else:
        assert src.mask is None and tgt.mask is None
