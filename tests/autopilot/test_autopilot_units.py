"""The autopilot's pure parts: objective, rollback decisions, successive halving, config diffs, the page."""

from __future__ import annotations

import json
import math

import pytest

from dpot.autopilot import runs, spec
from dpot.autopilot.decisions import (
    broken_curve,
    decide,
    explore_moves,
    inert_moves,
    repeats_inert,
    scale_lr,
    sh_budgets,
)
from dpot.autopilot.html import render
from dpot.autopilot.record import TrialRecord
from dpot.autopilot.space import config_params as space_params
from dpot.autopilot.training import trained_steps
from dpot.errors import UserError
from dpot.launch import check_launcher, train_command
from dpot.metrics_log import read_metrics


def test_objective_parsing_and_regression():
    o = spec.parse_objective("eval/offline_eval/avg_loss")
    assert (o.key, o.direction) == ("eval/offline_eval/avg_loss", "min")
    assert spec.parse_objective("eval/success_rate").direction == "max"
    assert spec.parse_objective("train/l1_loss:max").direction == "max"
    assert o.regression(1.2, 1.0) == pytest.approx(0.2) and o.regression(0.9, 1.0) == pytest.approx(-0.1)
    m = spec.parse_objective("x:max")
    assert m.regression(0.8, 1.0) == pytest.approx(0.2) and m.better(2.0, 1.0) and not o.better(2.0, 1.0)
    b = spec.parse_objective("bench:push-v3")
    assert (b.key, b.direction, b.bench_task) == ("bench:push-v3", "max", "push-v3") and o.bench_task is None
    for bad in ("", "a b", ":min", "bench:", "bench:x:min"):
        with pytest.raises(UserError):
            spec.parse_objective(bad)


@pytest.mark.parametrize("kw, expected", [
    ({"failed": True}, "failed"),
    ({"pruned": True}, "pruned"),
    ({"final": False}, "halving"),
    ({"kind": "base", "objective": math.nan}, "kept"),
    ({"regression": 0.05}, "kept"),
    ({"regression": 0.11}, "rolled_back"),           # the seed's > 10 % trigger
    ({"objective": math.nan}, "retried"),            # diverged to NaN: LR halved and retried once
    ({"findings": ["instability"], "regression": -0.2}, "retried"),
    ({"kind": "retry", "findings": ["instability"], "regression": 0.0}, "kept"),
    ({"kind": "retry", "objective": math.inf}, "rolled_back"),
])
def test_decisions(kw, expected):
    args = {"kind": "candidate", "final": True, "failed": False, "pruned": False, "objective": 1.0,
            "regression": 0.0, "findings": [], "max_regression": 0.10, **kw}
    assert decide(**args) == expected


def test_successive_halving_budgets():
    assert sh_budgets(1, 100) == [100] and sh_budgets(2, 100) == [100]
    assert sh_budgets(3, 100) == [50, 100]
    assert sh_budgets(4, 100) == [25, 50, 100] and sh_budgets(8, 80) == [10, 20, 40, 80]
    assert sh_budgets(8, 2) == [1, 2]


def test_lr_halving_and_recorded_params():
    cfg = {"use_policy_training_preset": False, "optimizer": {"lr": 4e-4}, "ot": {"lambda_ot": 0.1, "reg": 0.02}}
    new, changed = scale_lr(cfg, 0.5)
    assert new["optimizer"]["lr"] == pytest.approx(2e-4) and changed == {"optimizer.lr": pytest.approx(2e-4)}
    assert cfg["optimizer"]["lr"] == 4e-4
    preset = {"policy": {"optimizer_lr": 1e-4}, "optimizer": {"lr": 1e-4}}
    assert set(scale_lr(preset, 0.5)[1]) == {"policy.optimizer_lr", "optimizer.lr"}
    assert space_params(cfg) == {"lr": 4e-4, "ot.lambda_ot": 0.1, "ot.reg": 0.02}


def _cand(name, changes, obj, parent_obj, **kw):
    return TrialRecord.from_attrs({"name": name, "iteration": 1, "parent": "base", "kind": "candidate",
                                   "decision": "kept", "changes": changes, "objective": obj,
                                   "parent_objective": parent_obj, **kw})


def test_inert_moves_are_the_changes_that_left_the_objective_unchanged():
    w = "ot.features.1.w"
    recs = [_cand("it1a", {"optimizer.lr": [1e-5, 1e-4], w: [0.05, 0.02]}, 0.872, 0.912),   # moved: not inert
            _cand("it2a", {w: [0.02, 0.005]}, 0.87200004, 0.872),                       # unchanged to 7 digits
            _cand("it2b", {"ot.reg": [0.02, 0.04]}, 0.8721, 0.872),                      # 1.1e-4 relative: moved
            _cand("it3a", {"ot.lambda_ot": [0.1, 0.2]}, 0.5, 0.5, decision="failed"),   # failed runs say nothing
            _cand("it3b", {"ot.lambda_ot": [0.1, 0.05]}, 0.5, 0.5, budget=4, kind="retry")]
    inert = inert_moves(recs)
    assert inert == {(w, -1): "it2a"}
    assert repeats_inert({w: [0.005, 0.002]}, inert) == "it2a"                 # the same key, the same way
    assert repeats_inert({w: [0.005, 0.01]}, inert) is None                    # the other way is a new move
    assert repeats_inert({w: [0.005, 0.002], "optimizer.lr": [1e-4, 2e-4]}, inert) is None
    assert repeats_inert({}, inert) is None


def test_explore_moves_step_lr_lambda_and_reg_both_ways():
    cfg = {"use_policy_training_preset": False, "optimizer": {"lr": 1e-4}, "ot": {"lambda_ot": 0.1, "reg": 0.02}}
    moves = {name: c for name, _, c in explore_moves(cfg)}
    assert list(moves) == ["explore_lr_up", "explore_lr_down", "explore_lambda_ot_up", "explore_lambda_ot_down",
                           "explore_reg_up", "explore_reg_down"]
    assert moves["explore_lr_up"]["optimizer"]["lr"] == pytest.approx(2e-4)
    assert moves["explore_reg_down"]["ot"] == {"lambda_ot": 0.1, "reg": 0.01}
    assert cfg["ot"]["reg"] == 0.02                                               # the parent config is not touched
    naive_mmd = {"optimizer": {"lr": 1e-4}, "ot": {"lambda_ot": 0.0, "reg": 0.02, "method": "mmd"}}
    assert [n for n, _, _ in explore_moves(naive_mmd)] == ["explore_lr_up", "explore_lr_down"]


def test_leaf_changes_split_dicts_and_skip_equal_values():
    old = {"optimizer": {"type": "adamw", "lr": 1e-6}, "use_policy_training_preset": False,
           "ot": {"features": [{"w": 1.0}, {"w": 0.05}]}}
    new = {"optimizer": {"type": "adamw", "lr": 3e-4, "eps": 1e-8}, "use_policy_training_preset": False,
           "ot": {"features": [{"w": 1.0}, {"w": 0.005}]}}
    ch = spec.leaf_changes(old, new, ["optimizer", "use_policy_training_preset", "ot.features.1.w"])
    assert ch == {"optimizer.lr": [1e-6, 3e-4], "optimizer.eps": [None, 1e-8], "ot.features.1.w": [0.05, 0.005]}


def test_metrics_reader_skips_a_torn_line_and_keeps_the_last_value_of_a_step(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a": "nan"}\n{"step": 2, "a": 0.5}\n'
                                            '{"step": 3, "a": 0.')
    pts = runs.series(read_metrics(tmp_path), "a")
    assert pts == [(1, 1.0), (2, 0.5)]
    assert runs.objective_value(pts) == 0.5 and runs.best_value(pts, "max") == 1.0
    assert runs.series(read_metrics(tmp_path), "a", max_step=1) == [(1, 1.0)]


def test_launcher_template(tmp_path):
    check_launcher("srun --gres=gpu:1 {cmd}")
    for bad in ("srun", "srun {command}", "srun {cmd"):
        with pytest.raises(UserError):
            check_launcher(bad)
    argv = train_command(tmp_path / "c.json", True, "it1a", tmp_path / "r", "accelerate launch -m dpot.train {args}")
    assert argv[:2] == ["bash", "-c"] and argv[2].endswith(f"--config_path={tmp_path / 'c.json'} --resume=true")
    direct = train_command(tmp_path / "c.json", False, "x", tmp_path, None)
    assert direct[-2:] == ["train", f"--config_path={tmp_path / 'c.json'}"]


def test_out_dir_identity(tmp_path):
    sp = spec.SearchSpec("abc", "x:min", 10, 2, "embedded", "dpot-autopilot-s")
    out = tmp_path / "s"
    assert spec.check_out_dir(out, sp) is False
    out.mkdir()
    (out / spec.SPEC_FILE).write_text(json.dumps(sp.as_dict()))
    assert spec.check_out_dir(out, sp) is True
    other = spec.SearchSpec("abd", "x:min", 20, 2, "embedded", "dpot-autopilot-s")
    with pytest.raises(UserError, match="another base config, steps 10"):
        spec.check_out_dir(out, other)
    assert spec.mask_url("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"


def test_page_is_self_contained():
    doc = {"objective": "eval/offline_eval/avg_loss:min", "steps": 8, "study": "s", "stop": "done",
           "iterations": [{"iteration": 0, "parent": None, "best": "base", "next_parent": "base",
                           "best_objective": 1.0}],
           "nodes": [{"name": "base", "parent": None, "changes": {}, "diagnoses": [], "objective": 1.0,
                      "decision": "kept", "iteration": 0, "run": "runs/base", "report": "runs/base/report.html"},
                     {"name": "it1a", "parent": "base", "changes": {"optimizer.lr": [1e-6, 3e-4]},
                      "diagnoses": ["lr_low"], "objective": 2.0, "decision": "rolled_back", "iteration": 1,
                      "run": "runs/it1a", "report": None, "title": "<b>x</b>"}]}
    page = render(doc)
    assert "<svg" in page and "<script" not in page and "src=" not in page
    assert "optimizer.lr</code>: 1e-06 &rarr; 0.0003" in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert page.index("it1a") > page.index("base")


def test_the_search_identity_records_strategy_and_sampler(tmp_path):
    """autopilot.json holds --strategy and --sampler: another one is another search; a file written before these
    fields existed is continued (with the asked values)."""
    sp = spec.SearchSpec("abc", "eval/offline_eval/avg_loss", 300, 2, "embedded sqlite (DIR/study.db)", "s",
                         strategy="rules", sampler="gp")
    (tmp_path / spec.SPEC_FILE).write_text(json.dumps(sp.as_dict()))
    assert spec.check_out_dir(tmp_path, sp) is True
    for other in ({"strategy": "both"}, {"sampler": "tpe"}):
        changed = spec.SearchSpec(**{**sp.as_dict(), **other})
        with pytest.raises(UserError, match=f"holds another search.*{next(iter(other))}"):
            spec.check_out_dir(tmp_path, changed)
    old = {k: v for k, v in sp.as_dict().items() if k not in spec.LATER_FIELDS}
    (tmp_path / spec.SPEC_FILE).write_text(json.dumps(old))
    assert spec.check_out_dir(tmp_path, spec.SearchSpec(**{**sp.as_dict(), "strategy": "both"})) is True


def test_the_search_seed_changes_the_draws_and_none_keeps_the_old_ones():
    from dpot.autopilot.sampling import make_sampler, sampler_seed

    assert sampler_seed(None, 7, 2) == 7002                       # searches before --seed reproduce
    assert sampler_seed(1, 7, 2) == sampler_seed(1, 7, 2)          # the same command draws the same
    assert len({sampler_seed(s, 7, 2) for s in range(20)}) == 20   # different seeds, different draws
    assert sampler_seed(1, 7, 2) != sampler_seed(1, 8, 2) != sampler_seed(1, 7, 3)
    import optuna

    def first_lr(seed):
        study = optuna.create_study(sampler=make_sampler("tpe", seed))
        return study.ask({"lr": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)}).params["lr"]
    assert first_lr(sampler_seed(1, 0, 0)) != first_lr(sampler_seed(2, 0, 0))


def test_a_broken_curve_is_named_by_its_diagnosis_at_the_severity_that_breaks_it():
    """Only the curve verdicts stop a run: a flat LR that the config asked for (info) or a warmup that is only long
    (warn) does not; the first breaking finding in report order is the one named."""
    assert broken_curve([{"id": "lr_flat", "severity": "info"}, {"id": "plateau", "severity": "info"},
                         {"id": "schedule_mismatch", "severity": "warn"}]) is None
    assert broken_curve([{"id": "ot_weak", "severity": "warn"}, {"id": "divergence", "severity": "alarm"},
                         {"id": "lr_flat", "severity": "warn"}])["id"] == "divergence"
    assert broken_curve([{"id": "schedule_mismatch", "severity": "alarm"}])["id"] == "schedule_mismatch"
    assert broken_curve([{"id": "lr_high", "severity": "alarm"}])["id"] == "lr_high"
    assert broken_curve([]) is None


def test_trained_steps_count_what_a_segment_really_trained():
    rows = [{"step": s, "train/loss": 1.0} for s in (1, 2, 3)] + [{"step": 3, "eval/x": 0.5}]
    assert trained_steps(rows, 0, 6) == 3            # stopped at step 3 of 6
    assert trained_steps(rows, 2, 6) == 1            # a rung resumed from step 2
    assert trained_steps(rows, 0, 2) == 2            # logged past the budget: capped
    assert trained_steps([], 4, 8) == 0


def test_no_prune_broken_turns_the_broken_curve_stop_off():
    from dpot.autopilot.cli import _parser

    assert _parser().parse_args(["--config_path", "c.json", "--out", "o"]).prune_broken is True
    assert _parser().parse_args(["--config_path", "c.json", "--out", "o", "--no_prune_broken"]).prune_broken is False
    assert spec.Settings(config_path="c.json", out="o").prune_broken is True
