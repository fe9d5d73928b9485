"""Rules as data: the registry matches rules.toml, the one late window, proposed values read from rules.toml,
and cost terms classified by the kind recorded at logging time (name rule only when none was recorded)."""

from __future__ import annotations

import json

import pytest

from dpot.analysis import analyze, load_rules, open_run
from dpot.analysis.diagnose import RULES, RuleContext, diagnose, term_kind
from dpot.analysis.readers import Run
from dpot.analysis.rules import default_rules
from dpot.analysis.windows import late_window, window_size
from dpot.errors import UserError


def test_every_rule_table_has_a_registered_rule_and_back():
    tables = {k for k, v in default_rules().items() if isinstance(v, dict) and "enabled" in v}
    assert tables == set(RULES)
    assert all(RULES[rid].id == rid for rid in RULES)


def test_rules_run_in_the_order_of_their_tables():
    """Report order within a severity is RULES' order: the families' orders one after another, as in rules.toml."""
    tables = [k for k, v in default_rules().items() if isinstance(v, dict) and "enabled" in v]
    assert list(RULES) == tables


@pytest.mark.parametrize("n,size", [(1, 1), (2, 2), (3, 3), (10, 3), (14, 3), (18, 4), (40, 8), (60, 12)])
def test_late_window_is_the_last_fifth_at_least_three(n, size):
    series = list(range(n))
    assert window_size(n) == size
    assert late_window(series) == series[n - size:]


def _dpot_dir(path, terms, levels, config_features, kinds=None):
    """A dpot run dir logging ``train/ot_cost_mean/<term>`` at constant ``levels``; ``ot_terms.json`` when
    ``kinds`` is given."""
    path.mkdir()
    cfg = {"steps": 100, "policy": {"type": "diffusion"}, "optimizer": {"lr": 1e-4},
           "ot": {"lambda_ot": 0.1, "reg": 0.02, "tau_src": 0.01, "tau_tgt": 0.01, "features": config_features}}
    (path / "train_config.json").write_text(json.dumps(cfg))
    if kinds is not None:
        (path / "ot_terms.json").write_text(json.dumps({"terms": kinds}))
    with open(path / "metrics.jsonl", "w") as fh:
        for step in range(10, 110, 10):
            rec = {"step": step, "train/loss": 1.0, "train/ot_pi_sum": 0.5, "train/ot_pi_diag": 0.15}
            rec.update({f"train/ot_cost_mean/{t}": lv for t, lv in zip(terms, levels)})
            fh.write(json.dumps(rec) + "\n")
    return path


FEATS = [{"type": "embed", "use_learned_embed": True, "weight_embed": 1.0},
         {"type": "label", "key": "action", "dim_slice": [0, 2], "weight_label": 5.0}]


def _dominance(path):
    return {f.id: f for f in analyze(str(path), load_rules()).findings}["cost_dominance"]


def test_recorded_kinds_decide_which_weights_move(tmp_path):
    """Opaque term names: only the recorded kind says the dominant term is a label term."""
    run = _dpot_dir(tmp_path / "rec", ["cam", "grip"], [1e-3, 5.0], FEATS, kinds={"cam": "embed", "grip": "label"})
    assert open_run(str(run)).term_kinds == {"cam": "embed", "grip": "label"}
    f = _dominance(run)
    assert f.evidence["dominant"] == "grip" and f.evidence["dominant_kind"] == "label"
    assert f.targets == {"ot.features.1.weight_label": 0.01}   # 5 / clip(5000 / 10, 10, 1000)
    assert f.changes == {"ot.features.1.weight_label": 2.0}    # one person's step: 5 / 4 -> the round value 2
    # the same kinds recorded the other way round: the embed weight moves instead
    swapped = _dpot_dir(tmp_path / "swap", ["cam", "grip"], [1e-3, 5.0], FEATS,
                        kinds={"cam": "label", "grip": "embed"})
    f = _dominance(swapped)
    assert f.targets == {"ot.features.0.weight_embed": 0.002} and f.changes == {"ot.features.0.weight_embed": 0.3}


def test_name_rule_only_when_no_kinds_were_recorded(tmp_path):
    named = _dpot_dir(tmp_path / "named", ["img_top", "action_lbl"], [1e-3, 5.0], FEATS)
    assert open_run(str(named)).term_kinds is None
    f = _dominance(named)
    assert f.evidence["dominant_kind"] == "label" and f.targets == {"ot.features.1.weight_label": 0.01}
    # an opaque name without recorded kinds: the kind is unknown, so no weight is guessed
    opaque = _dpot_dir(tmp_path / "opaque", ["cam", "grip"], [1e-3, 5.0], FEATS)
    f = _dominance(opaque)
    assert f.evidence["dominant_kind"] is None and f.changes == {}


def test_term_kind_prefers_the_record_over_the_name():
    run = Run("r", "dpot", "x", term_kinds={"img_top": "label"})
    assert term_kind(run, "img_top") == "label"
    assert term_kind(run, "wrist_lbl") == "label" and term_kind(run, "img_side") == "embed"
    assert term_kind(Run("r", "dpot", "x"), "img_top") == "embed"
    assert term_kind(Run("r", "dpot", "x"), "state") is None


def test_bad_ot_terms_file_is_a_user_error(tmp_path):
    run = _dpot_dir(tmp_path / "bad", ["cam", "grip"], [1e-3, 5.0], FEATS, kinds={"cam": "image"})
    with pytest.raises(UserError, match="ot_terms.json: terms: expected a mapping"):
        open_run(str(run))


def test_embed_collapse_uses_recorded_embed_terms(tmp_path):
    """A camera term not named img_<cam> is judged as an embedding term because the run recorded it so."""
    path = tmp_path / "collapse"
    path.mkdir()
    cfg = {"steps": 400, "policy": {"type": "diffusion"}, "ot": {"lambda_ot": 0.1, "cost_norm": "dim"}}
    (path / "train_config.json").write_text(json.dumps(cfg))
    with open(path / "metrics.jsonl", "w") as fh:
        for i, step in enumerate(range(10, 410, 10)):
            f = i / 39
            fh.write(json.dumps({"step": step, "train/loss": 1.0, "train/ot_cost_mean/wrist": 5e-3 * 0.004 ** f,
                                 "train/ot_embed_spread/wrist": 6e-3 * 0.003 ** f}) + "\n")
    assert "embed_collapse" not in {f.id for f in analyze(str(path), load_rules()).findings}
    (path / "ot_terms.json").write_text(json.dumps({"terms": {"wrist": "embed"}}))
    found = {f.id: f for f in analyze(str(path), load_rules()).findings}
    assert found["embed_collapse"].evidence["cameras"]["wrist"]["spread_first_last_ratio"][2] < 0.05


def test_a_flat_lr_is_a_fault_only_when_the_config_says_it_varies():
    """lr_flat: configured cosine (or no schedule) and a flat logged LR is a warning with a proposal; a configured
    constant schedule logging a flat LR is information with nothing to propose (so the autopilot never undoes its
    sampler's constant-LR draw)."""
    base = {"policy": {"type": "diffusion"}, "optimizer": {"lr": 2e-4}, "use_policy_training_preset": False}
    flat = {"train/lr": [(s, 2e-4) for s in range(1, 9)]}
    found = {}
    for name in ("cosine", "constant"):
        cfg = {**base, "scheduler": {"type": "diffuser", "name": name, "num_warmup_steps": 0}}
        found[name] = {f.id: f for f in diagnose(RuleContext(Run("r", "dpot", "x", config=cfg, history=flat)),
                                                 load_rules())}["lr_flat"]
    none = {f.id: f for f in diagnose(RuleContext(Run("r", "dpot", "x", config=base, history=flat)), load_rules())}
    assert (found["cosine"].severity, bool(found["cosine"].changes)) == ("warn", True)
    assert (none["lr_flat"].severity, bool(none["lr_flat"].changes)) == ("warn", True)
    assert (found["constant"].severity, found["constant"].changes) == ("info", {})
    assert found["constant"].evidence["configured_varies"] is False
    from dpot.analysis.i18n import finding_text

    assert "nothing to fix" in finding_text("en", found["constant"])
    assert "无需修正" in finding_text("zh", found["constant"])
    assert "switch to an explicit AdamW" in finding_text("en", found["cosine"])


def test_proposed_values_come_from_rules_toml(tmp_path):
    run = Run("r", "dpot", "x", config={"policy": {"type": "diffusion"}, "optimizer": {"lr": 1e-5},
                                         "use_policy_training_preset": False},
              history={"train/lr": [(s, 1e-5) for s in range(1, 9)]})
    rules = load_rules()
    found = {f.id: f for f in diagnose(RuleContext(run), rules)}
    assert found["lr_low"].changes == {"optimizer.lr": pytest.approx(1e-4)}   # 1e-5 x lr_factor 10, in range
    assert found["lr_flat"].changes["scheduler"]["num_warmup_steps"] == 1000
    p = tmp_path / "r.toml"
    p.write_text("[lr_low.propose]\nlr_factor = 20\n[lr_flat.propose.scheduler]\nnum_warmup_steps = 50\n")
    rules = load_rules(p)
    found = {f.id: f for f in diagnose(RuleContext(run), rules)}
    assert found["lr_low"].changes == {"optimizer.lr": pytest.approx(2e-4)}
    assert found["lr_flat"].changes["scheduler"] == {"type": "diffuser", "name": "cosine", "num_warmup_steps": 50}
    short = Run("s", "dpot", "x", config={**run.config, "steps": 300}, history=run.history)
    found = {f.id: f for f in diagnose(RuleContext(short), load_rules())}
    assert found["lr_flat"].changes["scheduler"]["num_warmup_steps"] == 15  # 5 % of a 300-step run, not 1000
    p.write_text("[lr_low.propose]\nlr_factr = 20\n")
    with pytest.raises(UserError, match=r"unknown key lr_low.propose.lr_factr \(did you mean 'lr_factor'\?\)"):
        load_rules(p)


def test_the_window_table_changes_every_rule_window(tmp_path):
    """ot_weak's median over the late window: the last 20 % are low, the earlier points high."""
    hist = {"train/ot_pi_diag": [(s, 0.05 if s > 80 else 0.3) for s in range(1, 101)]}
    run = Run("r", "dpot", "x", history=hist)
    assert "ot_weak" in {f.id for f in diagnose(RuleContext(run), load_rules())}
    wide = RuleContext(run, frac=0.5)
    assert "ot_weak" not in {f.id for f in diagnose(wide, load_rules())}
    p = tmp_path / "w.toml"
    p.write_text("[window]\nfrac = 0.5\n")
    assert load_rules(p)["window"] == {"frac": 0.5, "min_points": 3}
