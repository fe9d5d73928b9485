"""OT regimes on GENERATED 12k-step dpot runs (OT metrics from the real solver on real toy costs; see
runmaker.py for what is synthetic)."""

from __future__ import annotations

import pytest

from dpot.analysis import analyze, load_rules, open_run
from dpot.analysis.i18n import finding_text


def _found(path):
    a = analyze(str(path), load_rules())
    return a, {f.id: f for f in a.findings}


def test_healthy_ot_run_raises_nothing(gen_runs):
    a, found = _found(gen_runs["healthy"])
    assert found == {}, [(f.id, f.evidence) for f in a.findings]
    assert 0.1 <= a.summaries["train/ot_pi_diag"].smoothed_last <= 0.4


def test_weak_coupling_after_10k(gen_runs):
    a, found = _found(gen_runs["weak"])
    ev = found["ot_weak"].evidence
    assert ev["pi_diag_median"] < 0.10 and ev["reached_after_step"] is True
    assert found["ot_weak"].severity == "warn"
    assert found["ot_weak"].changes == {"ot.lambda_ot": 0.2, "ot.reg": 0.01}


def test_tiny_tau_destroys_mass(gen_runs):
    a, found = _found(gen_runs["tiny_tau"])
    ev = found["ot_mass_destroyed"].evidence
    assert ev["pi_sum_median"] < 0.05 and ev["tau_src"] == 1e-4
    assert found["ot_mass_destroyed"].changes == {"ot.tau_src": 2e-4, "ot.tau_tgt": 2e-4}


def test_huge_label_weight_dominates_and_kills_mass(gen_runs):
    a, found = _found(gen_runs["huge_label"])
    assert found["cost_dominance"].evidence["dominant"] == "action_lbl"
    assert found["ot_mass_destroyed"].severity == "alarm"
    assert found["ot_mass_destroyed"].evidence["mean_cost_total"] > 10


def test_strong_coupling(gen_runs):
    a, found = _found(gen_runs["strong"])
    ev = found["ot_strong"].evidence
    assert ev["pi_diag_median"] > 0.4 and ev["frac_above"] >= 0.8 and ev["pi_diag_over_pi_sum"] > 0.8
    assert found["ot_strong"].targets["ot.features.1.weight_label"] == pytest.approx(0.01)
    assert found["ot_strong"].changes["ot.features.1.weight_label"] == 0.03   # one step of at most x4


def test_solver_stopping_at_max_iters_is_flagged(gen_runs):
    """Every logged solve hit ot.max_iters=20: the report says so and proposes a 4x budget; the same problem with
    a budget it meets is silent on it, as is the healthy run (whose solves converge)."""
    run, found = _found(gen_runs["unconverged"])
    f = found["ot_not_converged"]
    assert f.severity == "warn" and f.group == "ot"
    assert f.evidence["maxed_pct"] == 100.0 and f.evidence["max_iters"] == 20 and f.evidence["median_iters"] == 20
    assert f.changes == {"ot.max_iters": 80}
    assert "ot.max_iters=20" in finding_text("en", f) and "100.0%" in finding_text("en", f)
    _, found = _found(gen_runs["converged"])
    assert "ot_not_converged" not in found
    healthy = open_run(str(gen_runs["healthy"])).history
    assert max(v for _, v in healthy["train/ot_sinkhorn_maxed"]) == 0.0
    assert 0 < max(v for _, v in healthy["train/ot_sinkhorn_iters"]) < 200


def test_grad_norm_spikes(gen_runs):
    a, found = _found(gen_runs["spiky"])
    ev = found["instability"].evidence
    assert ev["grad_norm_spikes"] == 3 and [s[0] for s in ev["spike_examples"]] == [4000, 4200, 8000]


def test_rules_override_file(gen_runs, tmp_path):
    p = tmp_path / "r.toml"
    p.write_text("[ot_weak]\nmin_pi_diag = 0.5\n")
    a = analyze(str(gen_runs["healthy"]), load_rules(p))
    assert any(f.id == "ot_weak" and f.evidence["threshold"] == 0.5 for f in a.findings)


def _edited(src, dst, edit):
    """A copy of a GENERATED run whose metrics.jsonl records are changed by ``edit(rec)``."""
    import json
    import shutil

    shutil.copytree(src, dst)
    recs = [json.loads(x) for x in (dst / "metrics.jsonl").read_text().splitlines()]
    (dst / "metrics.jsonl").write_text("".join(json.dumps(edit(r)) + "\n" for r in recs))
    return dst


def test_lr_flat_although_cosine_configured(gen_runs, tmp_path):
    run = _edited(gen_runs["healthy"], tmp_path / "r", lambda r: {**r, "train/lr": 1e-4})
    a, found = _found(run)
    f = found["lr_flat"]
    assert f.severity == "warn" and f.evidence["configured_varies"] is True
    assert f.evidence["scheduler"].startswith("diffuser/cosine") and f.evidence["lr_max"] == 1e-4
    # warmup: rules.toml's 1000, capped at max_warmup_frac (5 %) of the run's 12000 steps
    assert f.changes["scheduler"] == {"type": "diffuser", "name": "cosine", "num_warmup_steps": 600}
    assert f.changes["use_policy_training_preset"] is False and f.changes["optimizer"]["type"] == "adamw"


def test_data_bound_loop(gen_runs, tmp_path):
    run = _edited(gen_runs["healthy"], tmp_path / "r", lambda r: {**r, "train/dataloading_s": 0.3})
    a, found = _found(run)
    ev = found["data_bound"].evidence
    assert ev["data_share"] > 0.6 and ev["dataloading_s"] == 0.3
    assert found["data_bound"].changes == {"num_workers": 4}


def test_plateau(gen_runs, tmp_path):
    def flat_late(r):
        r = dict(r)
        if "eval/offline_eval/avg_loss" in r and r["step"] > 4000:
            r["eval/offline_eval/avg_loss"] = 0.3
        if r["step"] > 4000:
            r["train/loss"] = 0.3
        return r
    a, found = _found(_edited(gen_runs["healthy"], tmp_path / "r", flat_late))
    assert found["plateau"].evidence["second_half_gain"] < 0.1 * found["plateau"].evidence["first_half_gain"]
    assert not any(p.title == "longer training" for p in a.proposals)
