"""Pathologies planted in REAL runs (plain lerobot-train, dpot train) are found with their evidence;
the healthy run raises no alarm; the seed's three-run comparison prints real numbers."""

from __future__ import annotations

import json

from runmaker import dpot_cli

from dpot.analysis import analyze, load_rules


def _ids(a, severities=("warn", "alarm")):
    return {f.id: f for f in a.findings if f.severity in severities}


def test_healthy_lerobot_run_raises_no_alarm(real_runs):
    a = analyze(str(real_runs["healthy"]), load_rules())
    assert a.run.kind == "wandb-offline"
    assert _ids(a) == {}, [(f.id, f.evidence) for f in a.findings]
    assert "train/loss" in a.summaries and a.summaries["train/loss"].n == 8
    # plain lerobot-train logs its held-out loss as eval/eval_loss: folded onto the canonical key
    assert a.run.sources["eval/offline_eval/avg_loss"] == "eval/eval_loss"


def test_planted_lerobot_run_findings(real_runs):
    a = analyze(str(real_runs["planted"]), load_rules())
    found = {f.id: f for f in a.findings}
    assert {"lr_flat", "lr_low", "eval_too_frequent"} <= set(found), [(f.id, f.evidence) for f in a.findings]
    lr = found["lr_flat"].evidence
    assert lr["lr_min"] == lr["lr_max"] == 1e-05 and lr["points"] == 8 and "constant" in lr["scheduler"]
    assert found["lr_low"].evidence["lr"] == 1e-05 and found["lr_low"].evidence["usual_range"] == [1e-4, 3e-4]
    ev = found["eval_too_frequent"].evidence
    assert ev["eval_steps"] == 1 and ev["eval_share"] > 0.15
    # the healthy run's LR ramps (warmup): the rule must not fire there, so the evidence is what matters
    assert a.summaries["train/lr"].min == a.summaries["train/lr"].max


def test_dpot_train_huge_weight_label(real_runs):
    a = analyze(str(real_runs["dpot_label"]), load_rules())
    assert a.run.kind == "dpot"
    found = {f.id: f for f in a.findings}
    dom = found["cost_dominance"].evidence
    assert dom["dominant"] == "action_lbl" and (dom["ratio"] == "inf" or dom["ratio"] > 100)
    assert dom["dominant_cost"] > 100 * dom["next_cost"]
    mass = found["ot_mass_destroyed"]
    assert mass.severity == "alarm" and mass.evidence["pi_sum_median"] < 0.005
    assert "ot.features.1.weight_label" in found["cost_dominance"].changes
    # next term ~0: scale the label so its mean cost (~1e3 here) comes to ~0.1, at most /1000
    assert found["cost_dominance"].targets["ot.features.1.weight_label"] == 1.0
    assert found["cost_dominance"].changes["ot.features.1.weight_label"] == 300.0   # one step: 1000 / 4 -> 300


def test_three_run_comparison_prints_real_numbers(real_runs, tmp_path):
    r = dpot_cli("compare", str(real_runs["healthy"]), str(real_runs["planted"]), str(real_runs["dpot_label"]),
                 "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "None" not in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| train/") or
            line.startswith("| eval/")}
    for key in ("train/loss", "train/grad_norm", "eval/offline_eval/avg_loss"):
        cells = [c.strip() for c in rows[key].split("|")[2:5]]
        assert all(c[0].isdigit() for c in cells), rows[key]
    # l1 is logged by dpot train only: the lerobot runs say so, with the keys they did log
    l1 = [c.strip() for c in rows["train/l1_loss"].split("|")[2:5]]
    assert l1[0].startswith("not logged") and l1[2][0].isdigit()
    assert "seen: eval/eval_loss, train/dataloading_s" in out
    data = json.loads((tmp_path / "compare.json").read_text())
    assert "policy.optimizer_lr" in data["config_diffs"]
    assert data["config_diffs"]["policy.optimizer_lr"][:2] == [1e-4, 1e-5]
    # runs 2 and 3 are checked against the first (the baseline): two checks, each with a verdict
    statuses = [c["status"] for c in data["rollback_checks"]]
    assert len(statuses) == 2, data["rollback_checks"]
    assert set(statuses) <= {"ok", "ROLLBACK"}
