"""Issue 14's diagnoses: the LR-too-high rule (generated and real lerobot-train runs), one LR convention in
curves / assessment / overview, proposals that move a value in bounded steps with titles that say what they
change, and an appendix that prints each OT feature's own fields only."""

from __future__ import annotations

import re

import pytest

from dpot.analysis import analyze, cfgkeys, load_rules
from dpot.analysis.render_md import FEATURE_FIELDS, render_markdown
from dpot.analysis.steps import person_step, steps_to


def _found(path):
    a = analyze(str(path), load_rules())
    return a, {f.id: f for f in a.findings}


def test_lr_high_fires_on_generated_high_lr_with_stalled_loss(gen_runs):
    a, found = _found(gen_runs["lr_high"])
    f = found["lr_high"]
    ev = f.evidence
    assert f.severity == "alarm" and ev["lr"] == 0.5 and ev["usual_range"] == [1e-4, 3e-4]
    assert ev["late_over_early"] >= 0.5 and ev["loss_late"] > 0.7
    # lowered into the usual range, as a person sets it (0.5 / 10, clipped to the top of 1e-4..3e-4)
    assert f.changes == {"policy.optimizer_lr": 3e-4} and not f.targets
    a_prop = a.proposals[0]
    assert a_prop.changes["policy.optimizer_lr"] == 3e-4 and "lr_high" in a_prop.findings
    assert "lower policy.optimizer_lr 0.5 → 0.0003" in a_prop.title, a_prop.title
    md = render_markdown(a)
    assert "**[alarm] lr_high**" in md and "far above the usual range" in md


@pytest.mark.parametrize("name", ["healthy", "lr_high_fine", "weak", "huge_label"])
def test_lr_high_silent_when_lr_usual_or_loss_falls(gen_runs, name):
    a, found = _found(gen_runs[name])
    assert "lr_high" not in found, found["lr_high"].evidence


def test_lr_high_on_real_lerobot_runs(real_runs):
    a, found = _found(real_runs["lr_high"])
    assert a.run.kind == "wandb-offline"
    f = found["lr_high"]
    assert f.evidence["lr"] == 0.3 and f.evidence["usual_range"] == [1e-4, 3e-4], f.evidence
    assert f.changes["policy.optimizer_lr"] == 3e-4
    for name in ("healthy", "planted"):
        assert "lr_high" not in _found(real_runs[name])[1]


def _lr_texts(md: str) -> list[str]:
    return re.findall(r"train/lr[^:\n]*?:? ([-\d.e]+ → [-\d.e]+(?: \(min [-\d.e]+, max [-\d.e]+\))?)", md)


def test_one_lr_convention_everywhere(gen_runs, real_runs):
    """Warmup then cosine (not monotone): first → last (min, max) in curves, assessment and overview alike."""
    a = analyze(str(gen_runs["healthy"]), load_rules())
    s = a.summaries["train/lr"]
    assert not s.monotone and s.first < s.max
    md = render_markdown(a)
    curves = [x for x in md.splitlines() if x.startswith("- train/lr: ")][0]
    assess = [x for x in md.splitlines() if x.startswith("- LR scheduling: ")][0]
    over = [x for x in md.splitlines() if x.startswith("- Optim: ")][0]
    want = f"{s.first:.4g} → {s.last:.4g} (min {s.min:.4g}, max {s.max:.4g})"
    for line in (curves, assess, over):
        assert want in line, line
    assert "varies" in assess
    # a monotone cosine (no warmup, real lerobot-train run): first → last, no min/max
    b = analyze(str(real_runs["lr_high"]), load_rules())
    sb = b.summaries["train/lr"]
    assert sb.monotone and 0.25 < sb.first <= 0.3 and sb.last < sb.first
    mdb = render_markdown(b)
    texts = _lr_texts(mdb)
    assert len(texts) >= 2 and set(texts) == {f"{sb.first:.4g} → {sb.last:.4g}"}, texts


def test_person_step_reproduces_the_seed_sequence():
    assert person_step(0.05, 0.00074, 4) == 0.02 and person_step(0.02, 0.00074, 4) == 0.005
    assert person_step(0.1, 0.2, 4) == 0.2 and person_step(0.1, 5.0, 4) == 0.3
    assert steps_to(0.02, 0.00074, 4) == 3


def _bounded_ok(a, rules) -> None:
    mf = rules["step"]["max_factor"]
    low, high = cfgkeys.usual_lr_range(rules, cfgkeys.policy_type(a.run.config) or "default")
    for p in a.proposals:
        if p.kind == "rollback":
            continue
        for k, v in p.changes.items():
            old = cfgkeys.get(a.run.config, k)
            if not (isinstance(v, (int, float)) and isinstance(old, (int, float)) and old > 0 and v > 0):
                continue
            if k in ("optimizer.lr", "policy.optimizer_lr") and not (low <= old <= high):
                assert low <= v <= high, (p.name, k, old, v)         # into the usual range
            elif k.startswith("ot.") or k.endswith("lr"):
                assert max(v / old, old / v) <= mf + 1e-9, (p.name, k, old, v)
            if k in p.targets:
                assert f"target is {p.targets[k]:g}" in p.rationale and "if the next run confirms" in p.rationale


@pytest.mark.parametrize("name", ["huge_label", "strong", "weak", "tiny_tau", "lr_high", "spiky"])
def test_proposal_steps_are_bounded(gen_runs, name):
    rules = load_rules()
    a = analyze(str(gen_runs[name]), rules)
    assert a.proposals
    _bounded_ok(a, rules)


def test_proposal_steps_bounded_on_real_runs(real_runs):
    rules = load_rules()
    for name in real_runs:
        _bounded_ok(analyze(str(real_runs[name]), rules), rules)


def test_titles_say_what_changes(gen_runs):
    a = analyze(str(gen_runs["huge_label"]), load_rules())
    p = {x.name: x for x in a.proposals}
    assert p["iter2a"].title.startswith("lower weight_label (action) 500 → 200"), p["iter2a"].title
    assert "tau_src" in p["iter2b"].title and "(on top of a)" in p["iter2b"].title
    assert "hygiene" not in " ".join(x.title for x in a.proposals)


def test_appendix_prints_each_feature_type_its_own_fields(gen_runs):
    a = analyze(str(gen_runs["healthy"]), load_rules())
    md = render_markdown(a)
    appendix = md.split("## Appendix")[1]
    feats = cfgkeys.get(a.run.config, "ot.features")
    for i, feat in enumerate(feats):
        shown = set(re.findall(rf"- ot\.features\.{i}\.(\w+)=", appendix))
        assert shown and shown <= set(FEATURE_FIELDS[feat["type"]]), (feat["type"], shown)
    assert "ot.features.0.weight_label" not in appendix and "ot.features.1.weight_embed" not in appendix
    assert "ot.features.0.weight_embed=1.0" in appendix and "ot.features.1.weight_label=0.1" in appendix


def test_a_proposal_title_states_the_lr_the_config_trains_at():
    """Issue 32: lr_low (policy.optimizer_lr 1e-6 -> 1e-4) merged with lr_flat (the presets off, an AdamW table at
    3e-4) was titled 'raise policy.optimizer_lr 1e-06 → 0.0001' and trained at 3e-4: the title states the LR the
    config trains at, on the key the trainer reads; an LR key the trainer does not read says so."""
    from dpot.analysis.propose import title_of

    parent = {"use_policy_training_preset": True, "optimizer": None, "scheduler": None,
              "policy": {"type": "diffusion", "optimizer_lr": 1e-6, "scheduler_name": "constant",
                         "scheduler_warmup_steps": 0},
              "ot": {"features": [{"type": "embed"}, {"type": "label", "key": "action", "weight_label": 0.05}]}}
    changes = {"policy.optimizer_lr": 1e-4, "use_policy_training_preset": False,
               "optimizer": {"type": "adamw", "lr": 3e-4, "weight_decay": 1e-4},
               "scheduler": {"type": "diffuser", "name": "cosine", "num_warmup_steps": 5},
               "ot.features.1.weight_label": 0.02}
    title = title_of(changes, parent)
    assert title.startswith("raise optimizer.lr 1e-06 → 0.0003; use_policy_training_preset = false; "
                            "set optimizer (adamw)"), title
    assert "0.0001" not in title
    # the usual case is unchanged: the preset's key (the resolved optimizer's moves with it) or the explicit one
    resolved = {**parent, "optimizer": {"type": "adam", "lr": 1e-6}}
    assert title_of({"policy.optimizer_lr": 1e-4, "optimizer.lr": 1e-4}, resolved) == \
        "raise policy.optimizer_lr 1e-06 → 0.0001"
    explicit = {**parent, "use_policy_training_preset": False, "optimizer": {"type": "adamw", "lr": 1e-5}}
    assert title_of({"optimizer.lr": 4e-5}, explicit) == "raise optimizer.lr 1e-05 → 4e-05"
    assert title_of({"policy.optimizer_lr": 1e-4}, explicit) == \
        "raise policy.optimizer_lr 1e-06 → 0.0001 (the run still trains at 1e-05)"
