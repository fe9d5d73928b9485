"""ACT runs are judged by ACT's ranges: LeRobot's ACT preset (AdamW 1e-5, backbone 1e-5, no scheduler) is not a
low or flat LR, an LR below it moves the backbone LR along, and ACT's loss keys are known metrics."""

from __future__ import annotations

import json

import pytest

from dpot.analysis import analyze, load_rules
from dpot.analysis.aliases import CANONICAL, canonical_key
from dpot.analysis.diagnose import RuleContext, diagnose
from dpot.analysis.readers import Run
from dpot.analysis.render_md import render_markdown

ACT_PRESET = {"policy": {"type": "act", "optimizer_lr": 1e-5, "optimizer_lr_backbone": 1e-5, "chunk_size": 100,
                         "n_action_steps": 100, "n_obs_steps": 1},
              "use_policy_training_preset": True, "steps": 100,
              "optimizer": {"type": "adamw", "lr": 1e-5, "weight_decay": 1e-4}, "scheduler": None}


def _found(config, lr):
    run = Run("r", "dpot", "x", config=config, history={"train/lr": [(s, lr) for s in range(1, 11)]})
    return {f.id: f for f in diagnose(RuleContext(run), load_rules())}


def test_act_preset_is_neither_low_nor_flat():
    found = _found(ACT_PRESET, 1e-5)
    assert "lr_low" not in found and "lr_flat" not in found and "lr_high" not in found
    # the same numbers on a diffusion policy are both (Diffusion's range is 1e-4..3e-4, its preset has a schedule)
    diff = json.loads(json.dumps(ACT_PRESET))
    diff["policy"]["type"] = "diffusion"
    found = _found(diff, 1e-5)
    assert found["lr_low"].evidence["usual_range"] == [1e-4, 3e-4] and "lr_flat" in found


def test_act_lr_below_its_range_moves_the_backbone_lr_with_it():
    cfg = json.loads(json.dumps(ACT_PRESET))
    cfg["policy"].update(optimizer_lr=1e-6, optimizer_lr_backbone=5e-7)
    cfg["optimizer"]["lr"] = 1e-6
    f = _found(cfg, 1e-6)["lr_low"]
    assert f.evidence["policy"] == "act" and f.evidence["usual_range"] == [1e-5, 1e-4]
    assert f.changes == {"policy.optimizer_lr": pytest.approx(1e-5), "optimizer.lr": pytest.approx(1e-5),
                         "policy.optimizer_lr_backbone": pytest.approx(5e-6)}


def test_act_with_a_flat_configured_schedule_gets_an_lr_in_acts_range():
    cfg = json.loads(json.dumps(ACT_PRESET))
    cfg["scheduler"] = {"type": "diffuser", "name": "cosine", "num_warmup_steps": 10}
    f = _found(cfg, 1e-5)["lr_flat"]
    assert f.changes["optimizer"]["lr"] == pytest.approx(1e-4)  # not Diffusion's 3e-4


def test_act_loss_keys_are_canonical_and_reported(tmp_path):
    assert canonical_key("train/kld_loss") == "train/kld_loss" and "train/kld_loss" in CANONICAL
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps(ACT_PRESET))
    rows = [{"step": s, "train/loss": 30.0 - s, "train/l1_loss": 1.0 - 0.05 * s, "train/kld_loss": 2.9 - 0.1 * s,
             "train/lr": 1e-5} for s in range(1, 11)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    a = analyze(str(run), load_rules())
    assert a.summaries["train/kld_loss"].last == pytest.approx(1.9)
    assert not {"lr_low", "lr_flat", "lr_high"} & {f.id for f in a.findings}
    md = render_markdown(a)
    assert "- Policy: act (n_obs_steps=1, n_action_steps=100, chunk_size=100)" in md
