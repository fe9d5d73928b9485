"""The report knows the prior (issue 30): under ``ot.prior=diagonal`` the diagonal share is 1 by construction and no
rule or plot reads it as evidence (the mass carries the coupling); the overview prints the prior and the cost scale;
runs written before the fork's metric meanings are read under today's names; plan snapshots mark the partner pairs
the metric sums."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dpot.analysis import analyze, load_rules, open_run
from dpot.analysis.figures import fig_plan, ot_mass_keys
from dpot.analysis.plans import load_plan
from dpot.analysis.render_md import render_markdown


def _run(path, ot: dict, rows: list[dict]):
    path.mkdir()
    cfg = {"steps": 2000, "policy": {"type": "diffusion"}, "optimizer": {"lr": 1e-4},
           "ot": {"lambda_ot": 0.1, "reg": 0.02, "tau_src": 0.01, "tau_tgt": 0.01, "heuristic": True,
                  "cost_norm": "none", **ot}}
    (path / "train_config.json").write_text(json.dumps(cfg))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows(pi_sum: float, diag_share: float, **extra):
    return [{"step": s, "train/loss": 1.0 / s, "train/ot_pi_sum": pi_sum, "train/ot_pi_diag": pi_sum * diag_share,
             "train/ot_loss": 0.01, "train/ot_loss_scaled": 0.001, **extra} for s in range(50, 2050, 50)]


def _ids(path) -> dict:
    return {f.id: f for f in analyze(str(path), load_rules()).findings}


def test_all_mass_on_the_pairs_is_evidence_only_without_the_diagonal_prior(tmp_path):
    """pi_diag = pi_sum = 0.3 (under the 0.4 ceiling, above half of it): with the temporal prior that is 'all mass on
    the diagonal' (ot_strong); with the diagonal prior it is true by construction and nothing fires."""
    temporal = _ids(_run(tmp_path / "temporal", {"prior": "temporal"}, _rows(0.3, 1.0)))
    diagonal = _ids(_run(tmp_path / "diagonal", {"prior": "diagonal"}, _rows(0.3, 1.0)))
    assert "ot_strong" in temporal and "ot_strong" not in diagonal
    assert "ot_weak" not in diagonal


def test_under_the_diagonal_prior_the_rules_read_the_mass(tmp_path):
    strong = _ids(_run(tmp_path / "strong", {"prior": "diagonal"}, _rows(0.6, 1.0)))["ot_strong"]
    assert strong.evidence["prior"] == "diagonal" and strong.evidence["pi_diag_over_pi_sum"] == "1 by construction"
    assert strong.evidence["coupling"].startswith("plan mass pi_sum")
    weak = _ids(_run(tmp_path / "weak", {"prior": "diagonal"}, _rows(0.05, 1.0)))["ot_weak"]
    assert weak.evidence["pi_diag_median"] == pytest.approx(0.05) and "pi_diag_frac" not in weak.evidence
    # a fork file's run says heuristic=true and prior=diagonal; an old dpot run without the key: heuristic -> temporal
    old = _ids(_run(tmp_path / "old", {}, _rows(0.05, 0.5)))["ot_weak"]
    assert old.evidence["coupling"] == "pi_diag" and old.evidence["pi_diag_median"] == pytest.approx(0.025)


def test_overview_prints_the_prior_and_the_cost_scale_and_the_plot_shades_the_mass(tmp_path):
    path = _run(tmp_path / "run", {"prior": "diagonal"}, _rows(0.3, 1.0, **{"train/ot_pi_pair_cv": 0.4}))
    a = analyze(str(path), load_rules())
    md = render_markdown(a)
    assert "prior=diagonal (c = I/N on the partner pairs" in md and "cost_norm=none (plain squared distances" in md
    assert "plan mass pi_sum" in md and "pi_diag = pi_sum by construction" in md
    keys, what = ot_mass_keys(a.run)
    assert keys == ["train/ot_pi_sum", "train/ot_pi_pair_cv"] and what == "plan mass (diagonal prior)"
    keys, what = ot_mass_keys(open_run(str(_run(tmp_path / "t", {"prior": "temporal"}, _rows(0.3, 0.5)))))
    assert "train/ot_pi_diag" in keys and what == "pi_diag"


def test_a_run_from_before_the_fork_meanings_is_read_under_todays_names(tmp_path):
    rows = [{"step": s, "train/loss": 1.0, "train/ot_loss": 0.002, "train/ot_cost/img_top": 0.01,
             "train/ot_cost_mean/img_top": 0.03, "train/ot_pi_sum": 0.2} for s in (10, 20, 30)]
    run = open_run(str(_run(tmp_path / "legacy", {"lambda_ot": 0.2}, rows)))
    h = run.history
    assert h["train/ot_loss_scaled"] == [(10, 0.002), (20, 0.002), (30, 0.002)]
    assert h["train/ot_loss"][0] == (10, pytest.approx(0.01))              # / lambda_ot
    assert h["train/ot_cost_plan/img_top"][0] == (10, 0.01) and h["train/ot_cost/img_top"][0] == (10, 0.03)
    assert not any(k.startswith("train/ot_cost_mean/") for k in h)
    assert any("before the fork's metric meanings" in n for n in run.notes)
    new = [{**r, "train/ot_loss_scaled": 0.0002} for r in rows]              # today's runs are read as they are
    for r in new:
        r.pop("train/ot_cost_mean/img_top")
    run = open_run(str(_run(tmp_path / "new", {"lambda_ot": 0.2}, new)))
    assert run.history["train/ot_loss"][0] == (10, 0.002) and run.history["train/ot_cost/img_top"][0] == (10, 0.01)


def test_the_plan_figure_marks_the_partner_pairs_not_the_matrix_diagonal(tmp_path):
    paired = np.zeros((3, 4), dtype=bool)
    paired[[0, 1, 2], [0, 2, 3]] = True      # a masked-out source item shifts the rows
    plan = np.where(paired, 0.1, 0.0).astype(np.float32)
    np.savez(tmp_path / "step_000010.npz", plan=plan, cost_img_top=np.ones_like(plan), paired=paired)
    snap = load_plan(10, tmp_path / "step_000010.npz")
    assert snap.pi_diag == pytest.approx(0.3) and float(np.trace(snap.plan)) == pytest.approx(0.1)
    assert snap.cost == pytest.approx(0.3)
    fig = fig_plan([snap])
    marks = fig["data"][1]
    assert list(zip(marks["y"], marks["x"])) == [(0, 0), (1, 2), (2, 3)]
    np.savez(tmp_path / "step_000020.npz", plan=plan)    # an old snapshot without `paired`: the matrix diagonal
    assert load_plan(20, tmp_path / "step_000020.npz").pi_diag == pytest.approx(0.1)


def test_a_proposal_that_switches_the_prior_says_what_changes():
    from dpot.analysis.propose import _describe

    parent = {"ot": {"heuristic": True, "prior": "diagonal", "lambda_ot": 0.1}}
    text = _describe({"ot.prior": "none"}, parent)
    assert "prior diagonal → none: the plan is a matching over the whole batch" in text
    old = {"ot": {"heuristic": True, "lambda_ot": 0.1}}          # no prior key: heuristic decides
    assert "prior temporal → none" in _describe({"ot.heuristic": False}, old)
    assert "prior" not in _describe({"ot.heuristic": False}, {"ot": {"heuristic": True, "prior": "none"}})


def test_the_rollback_trigger_reads_the_mass_under_the_diagonal_prior(tmp_path):
    from dpot.analysis.propose import build_proposals

    for prior, key in (("diagonal", "train/ot_pi_sum > 0.4"), ("temporal", "train/ot_pi_diag > 0.4")):
        path = _run(tmp_path / prior, {"prior": prior}, _rows(0.3, 1.0))
        cfg = json.loads((path / "train_config.json").read_text())
        cfg["optimizer"]["lr"] = 1e-5        # below diffusion's usual range: lr_low gives a proposal
        (path / "train_config.json").write_text(json.dumps(cfg))
        a = analyze(str(path), load_rules())
        props = build_proposals(a.run, a.findings, load_rules(), str(path))
        assert props and all(any(t.startswith(key) for t in p.rollback_triggers) for p in props)


def test_a_fork_runs_wandb_config_is_read_in_dpot_keys():
    """A W&B run logged by the fork: its config's ot block is the fork's; the reader translates it, so the rules
    know the diagonal prior and the plain squared distances, and its metric names already mean the fork's."""
    from dpot.analysis import cfgkeys
    from dpot.analysis.readers import _train_config_of

    fork = {"policy": {"type": "diffusion"},
            "ot": {"enable": True, "src_root": "data/sim", "lambda_ot": 0.1,
                   "loss_config": {"reg": 0.02, "tau_src": 0.01, "tau_tgt": 0.01, "heuristic": True,
                                   "features": [{"src_key": "action", "tgt_key": "action", "dim_slice": [0, 8],
                                                 "weight_label": 0.02, "use_learned_embed": False}]}}}
    ot = cfgkeys.ot_settings(_train_config_of(fork))
    assert (ot.prior, ot.cost_norm, ot.reg) == ("diagonal", "none", 0.02)


def test_a_strong_coupling_in_a_negligible_ot_term_is_not_ot_strong(tmp_path):
    """Plan mass 0.99 under the diagonal prior (v4's dp-ot-faithful): with the λ-scaled OT loss 0.3 % of the training
    loss the term cannot mask BC, so ot_strong stays silent; the same mass with the term at 5 % fires, and says the
    share."""
    def rows(scaled):
        return [{"step": s, "train/loss": 0.1, "train/ot_pi_sum": 0.99, "train/ot_pi_diag": 0.99,
                 "train/ot_loss": scaled * 10, "train/ot_loss_scaled": scaled} for s in range(50, 2050, 50)]

    assert "ot_strong" not in _ids(_run(tmp_path / "tiny", {"prior": "diagonal", "lambda_ot": 0.1}, rows(3e-4)))
    strong = _ids(_run(tmp_path / "big", {"prior": "diagonal", "lambda_ot": 0.1}, rows(5e-3)))["ot_strong"]
    assert strong.evidence["ot_loss_share"] == pytest.approx(0.05)
