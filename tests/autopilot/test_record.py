"""The autopilot's typed state: a trial record survives the trip through Optuna's user attributes (and a real
study), attributes written by an older version still load, and the decision values are the stored strings."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from optuna.trial import TrialState

from dpot.autopilot.decisions import decide
from dpot.autopilot.record import Decision, IterationRecord, Kind, Shown, TrialRecord
from dpot.autopilot.store import TrialStore


def _full() -> TrialRecord:
    return TrialRecord(name="it2b", iteration=2, parent="it1a", kind=Kind.CANDIDATE, rung=1, budget=8,
                       prev_budget=4, budget_min=4, budgets=[4, 8], changes={"ot.reg": [0.02, 0.04]},
                       diagnoses=["ot_weak"], title="raise ot.reg", proposal="ot", params={"ot.reg": 0.04},
                       digest="abc", worker="host:1", heartbeat=12.5, objective=0.75, parent_objective=0.8,
                       parent_best=0.79, regression=-0.05, findings=["plateau"], decision=Decision.KEPT,
                       seconds=3.0, note="ok")


def test_round_trip_through_json_attrs():
    rec = _full()
    attrs = json.loads(json.dumps(rec.to_attrs()))             # what Optuna stores: JSON
    assert attrs["decision"] == "kept" and attrs["kind"] == "candidate"
    back = TrialRecord.from_attrs(attrs)
    assert back == rec and back.decision is Decision.KEPT and back.kind is Kind.CANDIDATE


def test_round_trip_through_a_study(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    store = TrialStore(optuna.create_study(storage=storage), storage)
    rec = _full()
    rec.worker = rec.heartbeat = None
    store.enqueue(rec)
    [entry] = store.entries()
    assert entry.state == TrialState.WAITING and entry.record == rec
    trial = store.study.ask()                                  # public API only: the same trial back by number
    assert store.handle(trial.number).number == trial.number and store.reported_steps(trial.number) == set()
    trial.report(0.5, 3)
    assert store.reported_steps(trial.number) == {3}


def test_an_older_study_loads_and_unknown_attributes_survive():
    old = {"name": "it1a", "iteration": 1, "parent": "base", "kind": "retry", "rung": 0, "budget": 6,
           "budget_min": 6, "changes": {"optimizer.lr": [1e-6, 1e-4]}, "diagnoses": ["lr_low"],
           "objective": "nan", "parent_objective": None, "decision": "rolled_back", "note": "",
           "from_a_later_version": [1, 2]}
    rec = TrialRecord.from_attrs(old)
    assert rec.decision is Decision.ROLLED_BACK and rec.kind is Kind.RETRY and rec.prev_budget == 0
    assert rec.objective == "nan" and rec.final_objective is None          # non-finite: no number to compare
    assert rec.extra == {"from_a_later_version": [1, 2]}
    assert rec.to_attrs()["from_a_later_version"] == [1, 2]
    with pytest.raises(ValueError):
        TrialRecord.from_attrs({**old, "decision": "best"})              # 'best' is shown, never stored


def test_objective_attr_and_next_rung_drop_the_results():
    assert TrialRecord.objective_attr(math.inf) == "inf" and TrialRecord.objective_attr(0.5) == 0.5
    assert TrialRecord.objective_attr(None) is None
    up = _full().next_rung([2, 4, 8], 2)
    assert (up.rung, up.budget, up.prev_budget) == (2, 8, 4)
    assert up.decision is None and up.objective is None and up.worker is None and up.findings == []
    assert up.changes == {"ot.reg": [0.02, 0.04]} and up.budgets == [4, 8]


def test_decision_values_are_the_stored_strings():
    assert [d.value for d in Decision] == ["kept", "rolled_back", "retried", "pruned", "failed", "halving"]
    assert Decision("kept") is Decision.KEPT and Decision.KEPT == "kept" and f"{Decision.ROLLED_BACK}" == "rolled_back"
    assert json.dumps({"d": Decision.RETRIED, "s": Shown.BEST}) == '{"d": "retried", "s": "best"}'
    assert not set(Shown) & set(Decision)                                   # shown states are never decisions
    d = decide(kind=Kind.CANDIDATE, final=True, failed=False, pruned=False, objective=1.0, regression=0.2,
               findings=[], max_regression=0.1)
    assert d is Decision.ROLLED_BACK


def test_iteration_record_round_trip():
    rec = IterationRecord(parent="base", best="it1a", next_parent="it1a", parent_objective=1.0, best_objective=0.5,
                          global_best=0.5)
    assert IterationRecord.from_attrs(json.loads(json.dumps(rec.to_attrs()))) == rec
    assert IterationRecord.from_attrs({"next_parent": "base", "extra": 1}).best is None
