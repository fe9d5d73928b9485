"""One claimed trial: train (or resume, or only read) its run, report the objective while it trains, decide, tell.

The objective of a run at a budget is read from its ``metrics.jsonl`` (:mod:`dpot.autopilot.runs`), or for
``bench:<task>`` is the closed-loop success rate of the checkpoint at that budget (``dpot bench eval``). When the
full budget is trained, ``dpot report`` on the run gives its findings, and
:func:`~dpot.autopilot.decisions.decide` the decision; a ``RETRIED`` one enqueues the LR-halved retry.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from dpot import rundir
from dpot.analysis import noise
from dpot.autopilot import runs, tools
from dpot.autopilot.candidates import Planner
from dpot.autopilot.claim import heartbeat
from dpot.autopilot.decisions import BROKEN_CURVE, beyond_noise, broken_curve, decide
from dpot.autopilot.record import Decision, Kind, TrialRecord
from dpot.autopilot.space import record_params
from dpot.autopilot.spec import Objective, SearchDir, Settings
from dpot.autopilot.store import TrialStore
from dpot.errors import UserError
from dpot.launch import launch_train
from dpot.metrics_log import read_metrics


class ObjectiveMissing(UserError):
    """The base run gives no objective (it failed, or does not log the metric): the search cannot start."""


class TrialRunner:
    """Trains and decides claimed trials.

    Args:
        settings: what ``dpot autopilot`` was asked for.
        objective: the parsed objective.
        steps: the full budget.
        dirs: the search directory.
        store: the study.
        planner: enqueues the retry of an unstable candidate.
        say: prints a progress line.
    """

    def __init__(self, settings: Settings, objective: Objective, steps: int, dirs: SearchDir, store: TrialStore,
                 planner: Planner, say):
        self.s, self.objective, self.steps, self.dirs = settings, objective, steps, dirs
        self.store, self.planner, self.say = store, planner, say

    def points(self, run_dir: Path, budget: int, evaluate: bool = True) -> list[tuple[int, float]]:
        """The objective's ``(step, value)`` points of a run up to ``budget``: from ``metrics.jsonl``, or for
        ``bench:<task>`` the closed-loop success rate of the checkpoint at ``budget`` (``dpot bench eval``, cached
        in ``<run>/bench_<task>_<budget>.json``; only computed when ``evaluate``)."""
        task = self.objective.bench_task
        if task is None:
            return runs.series(read_metrics(run_dir), self.objective.key, budget)
        rate = tools.bench_success(run_dir, task, budget, self.steps, self.s.bench_episodes, self.s.bench_max_steps,
                                   evaluate)
        return [] if rate is None else [(budget, rate)]

    def parent_best(self, parent: str | None, budget: int) -> tuple[float | None, float | None, float | None]:
        """(parent's objective, parent's best logged value, the noise sd of its objective series) up to step
        ``budget``: a child is compared with its parent at the same step (a successive-halving rung with the
        parent's curve up to the rung's budget, not with where the parent got to in the full budget)."""
        if parent is None:
            return None, None, None
        pts = self.points(self.dirs.run_dir(parent), budget)
        return runs.objective_value(pts), runs.best_value(pts, self.objective.direction), objective_noise(pts)

    def broken(self, run_dir: Path, parent: str | None) -> dict | None:
        """The finding of ``dpot report`` on the run so far that calls its curve broken
        (:func:`~dpot.autopilot.decisions.broken_curve`), or None (also when the report cannot be made yet)."""
        try:
            rep = tools.report(run_dir, self.dirs.run_dir(parent) if parent else None, self.s.rules)
        except (RuntimeError, ValueError, OSError):
            return None
        return broken_curve(rep.get("findings", []))

    def run(self, trial, record: TrialRecord) -> None:
        """Train (or resume, or only read) the trial's run, decide, tell; a heartbeat runs meanwhile.

        Raises:
            ObjectiveMissing: the base run failed or does not log the objective.
        """
        with heartbeat(trial):
            self._train_and_decide(trial, record)

    def _train_and_decide(self, trial, r: TrialRecord) -> None:
        from optuna.trial import TrialState

        name, budget, kind = r.name, int(r.budget), r.kind
        prev_budget = int(r.prev_budget)
        run_dir, cfg_path = self.dirs.run_dir(name), self.dirs.config_path(name)
        log_path = self.dirs.log_path(name)
        record_params(trial, r.params)     # every sampler of the study learns from this run
        t0 = time.time()
        reported: set[int] = self.store.reported_steps(trial.number)
        reason, rc = "", 0
        stopped_by: dict = {}          # the broken-curve finding that stopped the run, if one did

        def poll() -> str | None:
            new = False
            for step, v in self.points(run_dir, budget, evaluate=False):
                if step > prev_budget and step not in reported and math.isfinite(v):
                    trial.report(v, step)
                    reported.add(step)
                    new = True
                    if kind != Kind.BASE and trial.should_prune():
                        return "pruned"
            if budget < self.steps and rundir.is_finished(run_dir, budget):
                return "budget"
            if new and kind != Kind.BASE and self.s.prune_broken:
                found = self.broken(run_dir, r.parent)
                if found is not None:
                    stopped_by.update(found, step=max(reported))
                    return "pruned"
            return None

        if rundir.is_finished(run_dir, budget):
            reason = poll() or ""           # trained before a crash: only read it
        else:                               # resumes from its checkpoint, if any
            launch = launch_train(cfg_path, run_dir, log_path, name=name, launcher=self.s.launcher, poll=poll,
                                  interval=self.s.poll_s, who="autopilot")
            rc, reason = launch.returncode, launch.reason
        rows = read_metrics(run_dir)
        failed = rc != 0 and reason not in ("budget", "pruned") and not rundir.is_finished(run_dir, budget)
        if kind == Kind.BASE and failed:
            raise ObjectiveMissing(f"--config_path: the base run failed (exit {rc}): {_log_tail(log_path)}; see "
                                   f"{log_path}")
        try:
            pts = [] if failed else self.points(run_dir, budget)
        except RuntimeError as err:          # bench:<task>: the closed-loop evaluation failed
            if kind == Kind.BASE:
                raise ObjectiveMissing(f"--objective: {self.objective.key}: {err}") from None
            pts, failed, reason = [], True, ""
        objective = runs.objective_value(pts)
        if kind == Kind.BASE and objective is None:
            keys = runs.logged_keys(rows)
            raise ObjectiveMissing(f"--objective: {self.objective.key} is not logged by the runs; they log: "
                                   f"{', '.join(keys) if keys else 'nothing'}")
        parent_obj, parent_best, parent_noise = self.parent_best(r.parent, budget)
        own_noise = objective_noise(pts)
        findings: list[str] = [stopped_by["id"]] if stopped_by else []
        note = (f"stopped at step {stopped_by['step']}: {stopped_by['id']} ({BROKEN_CURVE[stopped_by['id']][1]})"
                if stopped_by else "")
        final = budget >= self.steps
        if final and not failed and reason != "pruned":
            try:
                rep = tools.report(run_dir, self.dirs.run_dir(r.parent) if r.parent else None, self.s.rules)
                findings = [f["id"] for f in rep.get("findings", [])]
            except (RuntimeError, ValueError) as err:
                note = str(err)
        regression = (self.objective.regression(objective, parent_best)
                      if runs.is_finite(objective) and runs.is_finite(parent_best) else None)
        if failed:
            note = note or _log_tail(log_path)
        worse = (regression or 0.0) * abs(parent_best) if runs.is_finite(parent_best) else 0.0
        decision = decide(kind=kind, final=final, failed=failed, pruned=reason == "pruned", objective=objective,
                          regression=regression, findings=findings, max_regression=self.s.max_regression,
                          regression_beyond_noise=beyond_noise(worse, own_noise, parent_noise))
        if decision == Decision.RETRIED:
            self.planner.enqueue_retry(r)
        r.objective = TrialRecord.objective_attr(objective)
        r.parent_objective, r.parent_best, r.regression = parent_obj, parent_best, regression
        r.objective_noise, r.trained_steps = own_noise, trained_steps(rows, prev_budget, budget)
        r.findings, r.decision, r.seconds, r.note = findings, decision, round(time.time() - t0, 1), note[:500]
        TrialStore.write(trial, r, ("objective", "parent_objective", "parent_best", "regression", "objective_noise",
                                    "trained_steps", "findings", "decision", "seconds", "note"))
        if decision == Decision.PRUNED:
            self.store.study.tell(trial, state=TrialState.PRUNED)
        elif decision == Decision.FAILED or not runs.is_finite(objective):
            self.store.study.tell(trial, state=TrialState.FAIL)
        else:
            self.store.study.tell(trial, objective)
        self._progress(r, objective, parent_obj, decision, time.time() - t0, budget)

    def _progress(self, r: TrialRecord, objective, parent_obj, decision: Decision, secs: float, budget: int) -> None:
        ch = "; ".join(f"{k} {_short(o)}->{_short(n)}" for k, (o, n) in r.changes.items())
        obj = f"{objective:.4g}" if runs.is_finite(objective) else str(objective)
        rel = ""
        if runs.is_finite(objective) and runs.is_finite(parent_obj) and parent_obj:
            rel = f" ({(objective - parent_obj) / abs(parent_obj) * 100:+.1f}% vs {r.parent})"
        rung = f" @{budget} steps" if budget < self.steps else ""
        self.say(f"autopilot: iter {r.iteration} {r.name}{rung} [{ch or r.kind}] "
                 f"{self.objective.key}={obj}{rel} -> {decision} ({secs:.0f}s)")


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}={_short(x)}" for k, x in v.items() if k in ("type", "name", "lr")) + "}"
    return json.dumps(v, default=str)


def _log_tail(path: Path) -> str:
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "(no log)"
    errs = [x for x in lines if x.startswith("error:") or "Error" in x]
    return (errs or lines or ["(empty log)"])[-1][:300]


def trained_steps(rows: list[dict], prev_budget: int, budget: int) -> int:
    """The steps a segment trained from ``prev_budget`` towards ``budget``: its last logged step (capped at
    ``budget``) minus ``prev_budget`` (0 when nothing past ``prev_budget`` was logged). A pruned run counts only what
    it trained; a run read back after its worker died counts what that worker trained (its trial had no results
    yet, so nothing is counted twice)."""
    last = max((int(r["step"]) for r in rows if isinstance(r.get("step"), int)), default=prev_budget)
    return max(0, min(last, budget) - prev_budget)


def objective_noise(points: list[tuple[int, float]]) -> float | None:
    """The per-point noise sd of a run's objective series (:func:`dpot.analysis.noise.noise_sd` over its finite
    values); None with fewer than 3 (a closed-loop ``bench:`` objective has one point per run)."""
    vals = [v for _, v in points if math.isfinite(v)]
    return noise.noise_sd(vals) if len(vals) >= 3 else None
