"""Issue 22's diagnoses on generated runs: divergence (the loss falls, then blows up), overfitting (the offline eval
loss rises while the train loss falls) and a schedule that cannot do within the run what its config says (a
warmup longer than the run); each fires on the run made to have it and stays silent on a healthy one."""

from __future__ import annotations

import pytest

from dpot.analysis import analyze, cfgkeys, load_rules
from dpot.analysis.i18n import finding_text


def _found(path):
    return {f.id: f for f in analyze(str(path), load_rules()).findings}


@pytest.mark.parametrize("rule, run", [("divergence", "diverging"), ("overfitting", "overfitting"),
                                       ("schedule_mismatch", "long_warmup")])
def test_fires_on_the_run_made_to_have_it(gen_runs, rule, run):
    found = _found(gen_runs[run])
    assert rule in found, sorted(found)
    f = found[rule]
    assert f.changes, f.as_dict()                      # a bounded proposal
    for lang in ("en", "zh"):
        assert "n/a" not in finding_text(lang, f) or rule == "divergence"


@pytest.mark.parametrize("name", ["healthy", "spiky", "lr_high", "weak"])
@pytest.mark.parametrize("rule", ["divergence", "overfitting", "schedule_mismatch"])
def test_silent_on_runs_without_it(gen_runs, rule, name):
    found = _found(gen_runs[name])
    assert rule not in found, found[rule].evidence


def test_the_proposals_are_bounded_and_point_the_right_way(gen_runs):
    d = _found(gen_runs["diverging"])["divergence"]
    lr = cfgkeys.base_lr(__import__("json").loads((gen_runs["diverging"] / "train_config.json").read_text()))
    assert d.severity == "alarm" and d.evidence["rise"] > 3
    assert all(v == pytest.approx(lr * 0.25) for v in d.changes.values())     # LR / 4: one bounded step
    o = _found(gen_runs["overfitting"])["overfitting"]
    assert o.evidence["late_mean"] > 1.05 * o.evidence["best_mean"]                # late vs best window means
    assert o.evidence["change_noise_units"] > o.evidence["z_needed"]                # beyond the noise
    assert o.evidence["late_train"] < o.evidence["train_at_best"]
    w = _found(gen_runs["long_warmup"])["schedule_mismatch"]
    assert w.severity == "alarm" and w.evidence["warmup"] == 20000 and w.evidence["steps"] == 12000
    assert list(w.changes.values()) == [600]                                  # 5 % of 12000 steps
