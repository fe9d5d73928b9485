"""The coordination step on a real Optuna study, without training: successive-halving promotion, closing an
iteration (the best kept run becomes the next parent), the plateau stop, and a plan interrupted by a kill."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from dpot.autopilot.decisions import close_iteration, stop_reason
from dpot.autopilot.engine import Search, Settings
from dpot.autopilot.record import IterationRecord, TrialRecord


def _search(tmp_path, **kw) -> Search:
    tmp_path.mkdir(parents=True, exist_ok=True)
    s = Search(Settings(config_path="unused.json", out=tmp_path, quiet=True, **kw))
    s.steps = 8
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    s.attach(optuna.create_study(storage=storage, direction="minimize"), storage)
    return s


def _rec(name: str, **attrs) -> TrialRecord:
    return TrialRecord.from_attrs({"name": name, "iteration": 1, "parent": "base", "kind": "candidate", "rung": 0,
                                   "budget": 8, "budget_min": 8, **attrs})


def _close(s: Search, it: int, previous: dict) -> IterationRecord:
    return close_iteration(it, s.records(), previous, s.steps, s.objective)


def _add(s: Search, name: str, value, **attrs) -> None:
    a = {"name": name, "iteration": 1, "parent": "base", "kind": "candidate", "rung": 0, "budget": 8,
         "decision": "kept", "objective": value, **attrs}
    state = TrialState.COMPLETE if value is not None else TrialState.FAIL
    s.study.add_trial(create_trial(state=state, value=value, user_attrs=a))


def _waiting(s: Search) -> list[TrialRecord]:
    return [TrialRecord.from_attrs(t.user_attrs) for t in s.study.get_trials(states=(TrialState.WAITING,))]


def test_successive_halving_promotes_the_best_half(tmp_path):
    s = _search(tmp_path, candidates=4)
    budgets = [2, 4, 8]
    for name, v in (("it1a", 0.4), ("it1b", 0.1), ("it1c", 0.3), ("it1d", 0.2)):
        _add(s, name, v, rung=0, budget=2, budget_min=2, budgets=budgets, decision="halving")
    assert s.planner.promote(1, s.store.entries())
    up = _waiting(s)
    assert sorted(a.name for a in up) == ["it1b", "it1d"]
    assert all(a.rung == 1 and a.budget == 4 and a.prev_budget == 2 and a.decision is None for a in up)
    cfg = s.planner.config_of("it1b")
    assert cfg["save_freq"] == 2 and cfg["steps"] == 8            # checkpoints at every rung budget


def test_closing_an_iteration_picks_the_best_kept_run_as_next_parent(tmp_path):
    s = _search(tmp_path)
    _add(s, "base", 1.0, iteration=0, parent=None, kind="base")
    _add(s, "it1a", 0.5, decision="rolled_back")                  # better but rolled back: never a parent
    _add(s, "it1b", 0.9)
    _add(s, "it1c", 0.8)
    rec0 = _close(s, 0, {})
    assert rec0.next_parent == "base" and rec0.global_best == 1.0
    rec1 = _close(s, 1, {0: rec0})
    assert rec1.next_parent == "it1c" and rec1.best == "it1c" and rec1.global_best == 0.8


def test_no_kept_improvement_keeps_the_parent(tmp_path):
    s = _search(tmp_path)
    _add(s, "base", 1.0, iteration=0, parent=None, kind="base")
    _add(s, "it1a", 1.05)                                         # kept (within 10 %) but not better
    _add(s, "it1c", 1.0 - 5e-8)                                   # better by a no-effect margin: not a new parent
    _add(s, "it1b", None, decision="failed")
    rec0 = _close(s, 0, {})
    rec1 = _close(s, 1, {0: rec0})
    assert rec1.next_parent == "base" and rec1.best is None


@pytest.mark.parametrize("bests, stop", [((1.0, 0.9, 0.8), None), ((1.0, 0.999, 0.995), "plateau")])
def test_plateau_stop(tmp_path, bests, stop):
    s = _search(tmp_path, iterations=5, patience=2, min_delta=0.01)
    records = {i: IterationRecord(parent=None, best=None, next_parent="base", global_best=b)
               for i, b in enumerate(bests)}
    reason = stop_reason(2, records, s.s.iterations, s.s.patience, s.s.min_delta, s.objective)
    assert (reason is None) if stop is None else reason.startswith(stop)
    assert stop_reason(5, records, s.s.iterations, s.s.patience, s.s.min_delta, s.objective).startswith(
        "5 iteration(s) done")


def test_a_plan_cut_by_a_kill_is_completed(tmp_path):
    whole = _search(tmp_path / "whole")
    whole.planner.enqueue_planned("plan:1:0", [(_rec("it1a"), {"seed": 1}), (_rec("it1b"), {"seed": 2})])
    assert sorted(a.name for a in _waiting(whole)) == ["it1a", "it1b"]
    assert not whole.planner.complete_plans(whole.records())
    # the state a worker killed between the two enqueues leaves: configs and plan written, only it1a enqueued
    s = _search(tmp_path / "cut")
    s.planner.write_config("it1a", {"seed": 1}, 8)
    s.planner.write_config("it1b", {"seed": 2}, 8)
    s.study.set_user_attr("plan:1:0", whole.study.user_attrs["plan:1:0"])
    s.planner.enqueue(_rec("it1a"), {"seed": 1})
    assert s.planner.complete_plans(s.records())
    assert sorted(a.name for a in _waiting(s)) == ["it1a", "it1b"]
    assert not s.planner.complete_plans(s.records())
    assert s.planner.config_of("it1b")["seed"] == 2


def test_used_up_parent_falls_back_to_the_next_best_kept_run(tmp_path, monkeypatch):
    """Base's only proposal was tried (it1a: kept, not better) and it1b was rolled back: iteration 2 comes from
    it1a's proposals (the next best kept run), never from the rolled-back it1b; with nothing anywhere: None."""
    s = _search(tmp_path)
    _add(s, "base", 1.0, iteration=0, parent=None, kind="base")
    _add(s, "it1a", 1.05)
    _add(s, "it1b", 0.5, decision="rolled_back")
    _add(s, "it1c", 1.02)
    _add(s, "it1d", None, decision="failed")
    asked = []
    monkeypatch.setattr(s.planner, "propose", lambda it, run, records: asked.append((it, run)) or run == "it1a")
    assert s.planner.fallback_parents("base", s.records()) == ["base", "it1c", "it1a"]
    assert s.planner.propose_next(2, "base", s.records()) == "it1a"
    assert asked == [(2, "base"), (2, "it1c"), (2, "it1a")]
    monkeypatch.setattr(s.planner, "propose", lambda it, run, records: False)
    assert s.planner.propose_next(2, "base", s.records()) is None


def test_spent_diagnoses_lead_to_exploration_and_no_effect_moves_are_passed_over(tmp_path, monkeypatch):
    """The parent's only proposal repeats a label-weight decrease that left the objective unchanged in it2a: it is
    passed over; no run has anything else, so iteration 3 explores one step around the parent (LR first). With
    exploration off the search has nothing to run."""
    from dpot.autopilot import tools

    s = _search(tmp_path, candidates=2)
    w = "ot.features.1.w"
    parent_cfg = {"use_policy_training_preset": False, "optimizer": {"lr": 1e-4}, "steps": 8,
                  "ot": {"lambda_ot": 0.1, "reg": 0.02, "features": [{"w": 1.0}, {"w": 0.02}]}}
    lower = {**parent_cfg, "ot": {**parent_cfg["ot"], "features": [{"w": 1.0}, {"w": 0.005}]}}
    for name, cfg in (("base", {**parent_cfg, "optimizer": {"lr": 1e-5}}), ("it1a", parent_cfg), ("it2a", lower)):
        s.planner.write_config(name, cfg, 8)
    _add(s, "base", 1.0, iteration=0, parent=None, kind="base")
    _add(s, "it1a", 0.872, changes={"optimizer.lr": [1e-5, 1e-4]}, parent_objective=1.0)
    _add(s, "it2a", 0.872, iteration=2, parent="it1a", changes={w: [0.02, 0.005]}, parent_objective=0.872)
    monkeypatch.setattr(tools, "propose", lambda run, out, rules: [
        ({"name": "cost_dominance", "title": "balance cost terms", "changes": {w: 0.005},
          "findings": ["cost_dominance"]}, lower)])
    said = []
    monkeypatch.setattr(s.planner, "say", said.append)
    assert s.planner.propose_next(3, "it1a", s.records()) == "it1a"
    up = sorted(_waiting(s), key=lambda a: a.name)
    assert [a.proposal for a in up] == ["explore_lr_up", "explore_lr_down"]
    assert up[0].changes == {"optimizer.lr": [1e-4, 2e-4]} and up[0].diagnoses == ["explore"]
    assert s.planner.config_of("it3b")["optimizer"]["lr"] == 5e-5
    assert any("passing over 'balance cost terms'" in x and "it2a" in x for x in said)
    off = _search(tmp_path / "off", candidates=2, explore=False)
    for name, cfg in (("base", {**parent_cfg, "optimizer": {"lr": 1e-5}}), ("it1a", parent_cfg), ("it2a", lower)):
        off.planner.write_config(name, cfg, 8)
    _add(off, "base", 1.0, iteration=0, parent=None, kind="base")
    _add(off, "it1a", 0.872, changes={"optimizer.lr": [1e-5, 1e-4]}, parent_objective=1.0)
    _add(off, "it2a", 0.872, iteration=2, parent="it1a", changes={w: [0.02, 0.005]}, parent_objective=0.872)
    assert off.planner.propose_next(3, "it1a", off.records()) is None
