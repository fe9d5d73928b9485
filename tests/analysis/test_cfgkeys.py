"""The one reader of saved configs outside train/ (dpot.analysis.cfgkeys) against configs the trainer resolves.

Every key cfgkeys spells must exist in a saved config, and a change made through it must reach the trainer's
config: a renamed field of dpot.config fails here, not silently in the rules, ``dpot propose`` or the autopilot.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from dpot.analysis import cfgkeys
from dpot.config import EmbedFeatureConfig, LabelFeatureConfig, OTConfig, config_to_dict, load_train_config
from dpot.train.build import resolve_optim

BASE = {
    "dataset": {"repo_id": "local/real", "root": "data/real"},
    "source_dataset": {"repo_id": "local/sim", "root": "data/sim"},
    "policy": {"type": "diffusion", "pretrained_backbone_weights": None, "down_dims": [64, 128],
               "push_to_hub": False},
    "ot": {"lambda_ot": 0.1, "features": [{"type": "embed", "use_learned_embed": True, "weight_embed": 1.0},
                                          {"type": "label", "key": "action", "dim_slice": [0, 8],
                                           "weight_label": 0.05}]},
    "batch_size": 16, "steps": 100,
}
EXPLICIT = {"use_policy_training_preset": False,
            "optimizer": {"type": "adamw", "lr": 3e-4, "weight_decay": 1e-4, "betas": [0.9, 0.999], "eps": 1e-8,
                          "grad_clip_norm": 10.0},
            "scheduler": {"type": "diffuser", "name": "constant", "num_warmup_steps": 0}}


def _load(tmp_path, data: dict):
    """The trainer's view of ``data``: load + validate, then the policy presets applied (as train/loop does)."""
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(data))
    cfg = load_train_config(path)
    resolve_optim(cfg)
    return cfg


def _saved(tmp_path, **over) -> dict:
    """What ``train_config.json`` holds for BASE (+ ``over``)."""
    return config_to_dict(_load(tmp_path, {**BASE, **over}))


def test_every_key_is_in_a_saved_config(tmp_path):
    keys = [v for k, v in vars(cfgkeys).items() if k.isupper() and isinstance(v, str) and k != "FEATURE_TYPE"]
    assert cfgkeys.OT_REG in keys and cfgkeys.PRESET in keys and len(keys) >= 20
    for saved in (_saved(tmp_path), _saved(tmp_path, **EXPLICIT)):
        missing = [k for k in keys if cfgkeys.get(saved, k, KeyError) is KeyError]
        assert not missing, f"cfgkeys names keys a saved config does not have: {missing}"
        ot = cfgkeys.ot_settings(saved)
        assert all(v is not None for v in dataclasses.astuple(ot)), ot
        for kind, weight in cfgkeys.FEATURE_WEIGHT.items():     # each kind's items found by type, with its weight
            found = cfgkeys.features(saved, kind)
            assert found and all(weight in f for _, f in found), (kind, cfgkeys.get(saved, cfgkeys.OT_FEATURES))


def test_defaults_and_feature_weights_are_otconfigs():
    ot = OTConfig()
    assert cfgkeys.OT_DEFAULTS == {k: getattr(ot, k) for k in cfgkeys.OT_DEFAULTS}
    assert {f.name for f in dataclasses.fields(EmbedFeatureConfig)} >= {cfgkeys.FEATURE_WEIGHT["embed"]}
    assert {f.name for f in dataclasses.fields(LabelFeatureConfig)} >= {cfgkeys.FEATURE_WEIGHT["label"]}


@pytest.mark.parametrize("over", [{}, EXPLICIT], ids=["policy preset", "explicit optimizer"])
def test_lr_read_and_changed_through_cfgkeys_reaches_the_trainer(tmp_path, over):
    saved = _saved(tmp_path, **over)
    trained = _load(tmp_path, {**BASE, **over})
    assert cfgkeys.base_lr(saved) == pytest.approx(trained.optimizer.lr)
    assert cfgkeys.lr_keys(saved) == (["optimizer.lr"] if over else ["policy.optimizer_lr", "optimizer.lr"])
    changed = saved
    for key, value in cfgkeys.lr_changes(saved, 7e-5).items():
        changed = cfgkeys.set_(changed, key, value)
    assert _load(tmp_path, changed).optimizer.lr == pytest.approx(7e-5)
    sch = cfgkeys.schedule(saved)
    assert (sch["name"], sch["warmup"], sch["varies"]) == ((trained.scheduler.name, trained.scheduler.num_warmup_steps,
                                                            trained.scheduler.name != "constant"))


COSINE = {**EXPLICIT, "scheduler": {"type": "diffuser", "name": "cosine", "num_warmup_steps": 7}}


@pytest.mark.parametrize("over", [{}, COSINE], ids=["policy preset", "explicit scheduler"])
def test_schedule_changed_through_cfgkeys_reaches_the_trainer(tmp_path, over):
    """schedule_changes makes a varying schedule constant (no warmup) and back (cosine, the warmup kept), in every
    key that sets it: what the trainer resolves follows, and schedule() reads it back."""
    saved = _saved(tmp_path, **over)
    assert cfgkeys.schedule(saved)["varies"] and cfgkeys.schedule_changes(saved, constant=False) == {}
    changed = saved
    for key, value in cfgkeys.schedule_changes(saved, constant=True).items():
        changed = cfgkeys.set_(changed, key, value)
    trained = _load(tmp_path, changed).scheduler
    assert (trained.name, trained.num_warmup_steps) == ("constant", 0)
    assert not cfgkeys.schedule(changed)["varies"] and cfgkeys.schedule_changes(changed, constant=True) == {}
    back = changed
    for key, value in cfgkeys.schedule_changes(changed, constant=False).items():
        back = cfgkeys.set_(back, key, value)
    again = _load(tmp_path, back).scheduler           # a constant schedule's warmup is 0, and so is the cosine's
    assert cfgkeys.schedule(back)["varies"] and (again.name, again.num_warmup_steps) == ("cosine", 0)
    assert cfgkeys.schedule_changes({"policy": {"type": "act"}, "use_policy_training_preset": False}, True) == {}


def test_ot_keys_and_feature_weights_changed_through_cfgkeys_reach_the_trainer(tmp_path):
    saved = _saved(tmp_path)
    ot = cfgkeys.ot_settings(saved)
    assert (ot.lambda_ot, ot.reg, ot.method, ot.active, ot.has_plan) == (0.1, OTConfig().reg, "uot", True, True)
    weights = {**cfgkeys.feature_weights(saved, "embed"), **cfgkeys.feature_weights(saved, "label")}
    assert weights == {"ot.features.0.weight_embed": 1.0, "ot.features.1.weight_label": 0.05}
    changes = {cfgkeys.OT_LAMBDA: 0.3, cfgkeys.OT_REG: 0.04, cfgkeys.OT_TAU_SRC: 0.5, cfgkeys.OT_TAU_TGT: 0.6,
               cfgkeys.OT_COST_NORM: "median", **{k: w / 2 for k, w in weights.items()}}
    changed = saved
    for key, value in changes.items():
        changed = cfgkeys.set_(changed, key, value)
    got = _load(tmp_path, changed).ot
    assert (got.lambda_ot, got.reg, got.tau_src, got.tau_tgt, got.cost_norm) == (0.3, 0.04, 0.5, 0.6, "median")
    assert (got.features[0].weight_embed, got.features[1].weight_label) == (0.5, 0.025)
    assert not cfgkeys.ot_settings(cfgkeys.set_(saved, cfgkeys.OT_METHOD, "mmd")).has_plan
    assert not cfgkeys.ot_settings({"policy": {}}).present


def test_the_neutral_ot_block_of_proposals_is_dpots_default_with_the_term_off(tmp_path):
    """``dpot propose`` adds NEUTRAL_OT to a parent without an OT block: it must resolve to OTConfig()'s defaults
    with lambda_ot=0 (analysis never imports dpot.config, so the block is spelled out and pinned here)."""
    from dpot.analysis.propose import NEUTRAL_OT

    assert _load(tmp_path, {**BASE, "ot": NEUTRAL_OT}).ot == dataclasses.replace(OTConfig(), lambda_ot=0.0)


@pytest.mark.parametrize("over", [{}, COSINE], ids=["policy preset", "explicit optimizer"])
def test_optimizer_and_weight_decay_changed_through_cfgkeys_reach_the_trainer(tmp_path, over):
    """optimizer_changes switches Adam <-> AdamW: with the presets off it sets the type; under the policy preset
    (Diffusion: Adam) it writes the preset out as it trains (same LR, betas, eps, weight decay, schedule), so the
    way back to Adam trains exactly the preset's optimizer and scheduler. weight_decay_changes reaches the trainer
    on whichever key it reads."""
    saved = _saved(tmp_path, **over)
    trained = _load(tmp_path, {**BASE, **over})
    kind = cfgkeys.optimizer_type(saved)
    assert kind == trained.optimizer.type == ("adamw" if over else "adam")
    assert cfgkeys.optimizer_changes(saved, kind) == {}
    other = "adam" if kind == "adamw" else "adamw"

    def apply(cfg, changes):
        for key, value in changes.items():
            cfg = cfgkeys.set_(cfg, key, value)
        return cfg

    switched = apply(saved, cfgkeys.optimizer_changes(saved, other))
    got = _load(tmp_path, switched)
    assert got.optimizer.type == cfgkeys.optimizer_type(switched) == other
    for name in ("lr", "betas", "eps", "weight_decay", "grad_clip_norm"):
        assert getattr(got.optimizer, name) == getattr(trained.optimizer, name), name
    assert got.scheduler == trained.scheduler
    back = _load(tmp_path, apply(switched, cfgkeys.optimizer_changes(switched, kind)))
    assert back.optimizer == trained.optimizer and back.scheduler == trained.scheduler
    decayed = apply(switched, cfgkeys.weight_decay_changes(switched, 3e-3))
    assert _load(tmp_path, decayed).optimizer.weight_decay == cfgkeys.weight_decay(decayed) == 3e-3
    assert cfgkeys.weight_decay(saved) == trained.optimizer.weight_decay
    assert cfgkeys.optimizer_changes({"policy": {"type": "nope"}}, "adamw") == {}     # unknown: nothing to switch


def test_act_preset_switched_to_adam_keeps_its_fields_and_gets_a_constant_schedule(tmp_path):
    """ACT's preset is AdamW without a scheduler; written out as Adam it keeps the LR and weight decay and gets a
    constant LR (with the presets off the trainer needs a scheduler)."""
    act = {**BASE, "policy": {"type": "act", "pretrained_backbone_weights": None, "push_to_hub": False}}
    saved = config_to_dict(_load(tmp_path, act))
    trained = _load(tmp_path, act)
    assert cfgkeys.optimizer_type(saved) == trained.optimizer.type == "adamw" and trained.scheduler is None
    changed = saved
    for key, value in cfgkeys.optimizer_changes(saved, "adam").items():
        changed = cfgkeys.set_(changed, key, value)
    got = _load(tmp_path, changed)
    assert got.optimizer.type == "adam" and (got.optimizer.lr, got.optimizer.weight_decay) == (
        trained.optimizer.lr, trained.optimizer.weight_decay)
    assert (got.scheduler.name, got.scheduler.num_warmup_steps) == ("constant", 0)
