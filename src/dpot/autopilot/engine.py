"""The autopilot loop on an Optuna study: one trial per training segment, the loop's state in the study.

Trials carry the search in their user attributes: ``name`` (run), ``iteration`` (0 = the base run), ``parent``,
``kind`` (base | candidate | retry), ``rung``/``budget`` (successive halving), ``changes`` ({key: [old, new]}),
``diagnoses`` (rule ids that motivated the candidate), then the worker's results (``objective``, ``decision``,
``findings``). Candidates are enqueued (``study.enqueue_trial`` with their values of :data:`SPACE` as fixed params);
workers pop them with ``study.ask()`` (the storage hands a waiting trial to one worker only), so several processes
on one study (SQLite under DIR, or any RDB URL) train different candidates. Intermediate objective values are
reported from ``metrics.jsonl`` while a run trains; the study's pruner (median) may stop a hopeless one.

One coordination step at a time (a lock file in DIR): when no trial waits or runs, the step promotes successive-
halving survivors, or closes the iteration (the best kept run becomes the next parent) and enqueues the next one
from ``dpot propose`` on that parent, or records why the search stops.

Per candidate, when its full budget is trained (the seed's rollback triggers):
    objective non-finite, or the report finds ``instability`` (grad-norm spikes / loss oscillation)
        -> ``retried``: the same candidate with the LR halved is enqueued (once);
    (objective - parent_best) / |parent_best| > max_regression (0.10; sign flipped for max) -> ``rolled_back``;
    else -> ``kept``.  The best kept run of an iteration becomes the next parent when it beats the parent by more
    than ``INERT_REL`` (relative; ``best``); otherwise the parent stays.

Candidates, in this order: the parent's ``dpot propose`` proposals; when those are all tried, the next best kept
run's (backtracking); when no kept run has an untried proposal, one-step exploration moves (LR, ``ot.lambda_ot``,
``ot.reg`` x2 and /2) around the parent, then around the other kept runs (``--no_explore`` turns this off). A
proposal that only repeats moves (key and direction) which left the objective unchanged before (within
:data:`~dpot.autopilot.decisions.INERT_REL`, relative) is passed over, with a line saying which run showed it.

Stops: ``iterations`` done, a plateau (the best objective improved by less than ``min_delta`` (relative) over the
last ``patience`` iterations), or no untried candidate for the parent nor for any other kept run.

Crash safety: a run trains through ``dpot train`` and checkpoints; a trial whose worker died (same host and its pid
gone, or no heartbeat for :data:`STALE_S`) is taken over by the next worker, which resumes the run from its last
checkpoint (``--resume=true``) or only reads it when it already reached its budget. Finished trials are never redone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dpot import rundir
from dpot.analysis import cfgkeys
from dpot.atomic import write_text
from dpot.autopilot import runs, spec, tools
from dpot.autopilot.decisions import (
    INERT_REL,
    SPACE,
    decide,
    explore_moves,
    inert_moves,
    repeats_inert,
    scale_lr,
    sh_budgets,
    space_params,
)
from dpot.errors import UserError
from dpot.metrics_log import read_metrics

log = logging.getLogger(__name__)

STALE_S = 180.0          # a running trial without heartbeat for this long is taken over
HEARTBEAT_S = 15.0


@dataclass
class Settings:
    """Everything ``dpot autopilot`` was asked for (see :mod:`dpot.autopilot.cli`)."""

    config_path: str
    out: Path
    iterations: int = 3
    candidates: int = 3
    steps: int | None = None
    objective: str = spec.DEFAULT_OBJECTIVE
    storage: str | None = None
    launcher: str | None = None
    rules: str | None = None
    max_regression: float = 0.10
    patience: int = 2
    min_delta: float = 0.01
    pruner: str = "median"
    bench_episodes: int = 10
    bench_max_steps: int = 150
    explore: bool = True
    poll_s: float = 0.5
    quiet: bool = False


class ObjectiveMissing(UserError):
    pass


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Search:
    """One autopilot search in ``settings.out`` (see the module docstring)."""

    def __init__(self, s: Settings):
        self.s = s
        self.out = Path(s.out).resolve()
        self.objective = spec.parse_objective(s.objective)
        rundir.check_launcher(s.launcher)
        if s.iterations < 0:
            raise UserError("--iterations: must be >= 0")
        if s.candidates < 1:
            raise UserError("--candidates: must be >= 1")
        if s.steps is not None and s.steps < 1:
            raise UserError("--steps: must be >= 1")
        if s.rules and not Path(s.rules).is_file():
            raise UserError(f"--rules: {s.rules} does not exist")
        self.worker = _worker_id()
        self.fresh = False
        self.study = None

    # ------------------------------------------------------------------ set-up (all checks before any write)

    def open(self) -> None:
        """Validate inputs, connect the storage, create or reopen the study; writes DIR only when all is valid."""
        import optuna

        base = spec.load_base_config(self.s.config_path)
        self.steps = int(self.s.steps or base.get("steps") or 0)
        if self.steps < 1:
            raise UserError("--steps: the base config has no steps; give --steps N")
        if self.objective.bench_task is not None:
            _check_bench_data(base, self.objective.bench_task)
        if self.objective.key.startswith("eval/") and not base.get("eval_freq"):
            raise UserError(f"--objective: {self.objective.key} is an offline-eval metric but the base config has "
                            f"eval_freq={base.get('eval_freq')}; set eval_freq > 0 or choose a train/ metric")
        base["steps"] = self.steps
        self.base_cfg = base
        url = self.s.storage or f"sqlite:///{self.out / 'study.db'}"
        sp = spec.SearchSpec(spec.config_digest(base), self.objective.text, self.steps, self.s.candidates,
                             spec.mask_url(self.s.storage) if self.s.storage else "embedded sqlite (DIR/study.db)",
                             study_name=f"dpot-autopilot-{self.out.name}")
        resuming = spec.check_out_dir(self.out, sp)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = names = None
        if self.s.storage is not None:            # a server: reach it before anything is written
            storage = self._storage(url)
            names = [x.study_name for x in optuna.get_all_study_summaries(storage)]
            if sp.study_name in names and not resuming:
                raise UserError(f"--storage: {spec.mask_url(url)} already holds a study {sp.study_name!r} for "
                                f"another directory; use the --out it was run with or another directory name")
        self.out.mkdir(parents=True, exist_ok=True)
        if not resuming:                          # first, so that a second worker starting now sees a search
            write_text(self.out / spec.SPEC_FILE, json.dumps(sp.as_dict(), indent=2) + "\n")
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0) if self.s.pruner == "median"
                  else optuna.pruners.NopPruner())
        with self._lock():                        # workers starting together: one creates the tables and study
            if storage is None:
                storage = self._storage(url)
                names = [x.study_name for x in optuna.get_all_study_summaries(storage)]
            self.fresh = not resuming and sp.study_name not in names
            self.study = optuna.create_study(storage=storage, study_name=sp.study_name, load_if_exists=True,
                                             direction="minimize" if self.objective.direction == "min"
                                             else "maximize", pruner=pruner,
                                             sampler=optuna.samplers.RandomSampler(seed=0))
        self._say(f"autopilot: {'continuing' if resuming else 'new'} search in {self.out} (study "
                  f"{sp.study_name}, {spec.mask_url(url) if self.s.storage else 'sqlite under DIR'}); objective "
                  f"{self.objective.text}, {self.steps} steps per candidate, <= {self.s.candidates} candidates x "
                  f"{self.s.iterations} iterations")

    def _storage(self, url: str):
        import optuna

        kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except Exception as err:  # SQLAlchemy / driver errors: unreachable, bad URL, missing driver
            msg = " ".join(str(err).split())[:300]
            raise UserError(f"--storage: cannot open {spec.mask_url(url)}: {msg}; check the URL, that the server "
                            f"is up and reachable, and the credentials") from None

    def abort_fresh(self) -> None:
        """Remove what this invocation created (bad input found only after the base run): DIR and the study."""
        import optuna

        if not self.fresh or self.study is None:
            return
        with contextlib.suppress(Exception):
            optuna.delete_study(study_name=self.study.study_name, storage=self.study._storage)
        shutil.rmtree(self.out, ignore_errors=True)

    # ------------------------------------------------------------------ helpers over the study

    def _trials(self):
        return [t for t in self.study.get_trials(deepcopy=False) if "name" in t.user_attrs
                and not t.user_attrs.get("duplicate")]

    def _iter_records(self) -> dict[int, dict]:
        attrs = self.study.user_attrs
        return {int(k.split(":")[1]): v for k, v in attrs.items() if k.startswith("iteration:")}

    def _say(self, msg: str) -> None:
        if not self.s.quiet:
            print(msg, flush=True)

    @contextlib.contextmanager
    def _lock(self):
        with open(self.out / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _orphan(self, t) -> bool:
        from optuna.trial import TrialState

        if t.state != TrialState.RUNNING:
            return False
        owner = str(t.user_attrs.get("worker", ""))
        host, _, pid = owner.rpartition(":")
        if owner == self.worker:
            return False
        if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
            return True
        beat = t.user_attrs.get("heartbeat")
        return beat is None or time.time() - float(beat) > STALE_S

    def run_dir(self, name: str) -> Path:
        return self.out / "runs" / name

    def config_path(self, name: str) -> Path:
        return self.out / "configs" / f"{name}.json"

    # ------------------------------------------------------------------ main loop

    def run(self) -> str:
        """Work until the search stops; returns the stop reason."""
        from dpot.autopilot import lineage

        try:
            while True:
                trial = self._claim()
                if trial is not None:
                    self._run_trial(trial)
                    lineage.write(self)
                    continue
                with self._lock():
                    state = self._advance()
                lineage.write(self)
                if state == "done":
                    reason = self.study.user_attrs.get("stop", "")
                    self._say(f"autopilot: stopped ({reason}); lineage: {self.out / 'lineage.json'}, "
                              f"page: {self.out / 'autopilot.html'}")
                    return reason
                if state == "wait":
                    time.sleep(max(self.s.poll_s, 1.0))
        except ObjectiveMissing:
            self.abort_fresh()
            raise

    def _claim(self):
        """A trial for this worker: an orphaned running one (taken over) or a waiting one; None when none."""
        import optuna
        from optuna.trial import TrialState

        trials = self._trials()
        orphans = [t for t in trials if self._orphan(t)]
        if orphans:
            with self._lock():
                for t in self._trials():
                    if self._orphan(t):
                        trial = optuna.trial.Trial(self.study, t._trial_id)
                        trial.set_user_attr("worker", self.worker)
                        trial.set_user_attr("heartbeat", time.time())
                        self._say(f"autopilot: taking over {t.user_attrs['name']} (worker "
                                  f"{t.user_attrs.get('worker')} is gone)")
                        return trial
        while any(t.state == TrialState.WAITING for t in self.study.get_trials(deepcopy=False,
                                                                              states=(TrialState.WAITING,))):
            trial = self.study.ask()
            attrs = trial.user_attrs
            if "name" not in attrs:        # another worker took the last waiting one first: a sampler trial
                trial.set_user_attr("duplicate", True)
                self.study.tell(trial, state=TrialState.FAIL)
                continue
            key = (attrs["name"], attrs["rung"])
            done = [t for t in self._trials() if (t.user_attrs["name"], t.user_attrs["rung"]) == key
                    and t.number != trial.number and t.state != TrialState.WAITING]
            if done:                       # enqueued twice by a race between machines: keep the first
                trial.set_user_attr("duplicate", True)
                self.study.tell(trial, state=TrialState.FAIL)
                continue
            trial.set_user_attr("worker", self.worker)
            trial.set_user_attr("heartbeat", time.time())
            return trial
        return None

    # ------------------------------------------------------------------ one trial

    def _points(self, run_dir: Path, budget: int, evaluate: bool = True) -> list[tuple[int, float]]:
        """The objective's ``(step, value)`` points of a run up to ``budget``: from ``metrics.jsonl``, or for
        ``bench:<task>`` the closed-loop success rate of the checkpoint at ``budget`` (``dpot bench eval``, cached
        in ``<run>/bench_<task>_<budget>.json``; only computed when ``evaluate``)."""
        task = self.objective.bench_task
        if task is None:
            return runs.series(read_metrics(run_dir), self.objective.key, budget)
        cache = rundir.bench_result_path(run_dir, task, budget, self.steps)
        if not cache.exists():
            ckpt = rundir.checkpoint_dir(run_dir, budget, self.steps) / rundir.MODEL_DIR
            if not evaluate or not ckpt.exists():
                return []
            tools.bench_eval(ckpt, task, self.s.bench_episodes, self.s.bench_max_steps, cache)
        return [(budget, float(json.loads(cache.read_text())["success_rate"]))]

    def _parent_best(self, parent: str | None) -> tuple[float | None, float | None]:
        """(parent's final objective, parent's best logged value) at the full budget."""
        if parent is None:
            return None, None
        pts = self._points(self.run_dir(parent), self.steps)
        return runs.objective_value(pts), runs.best_value(pts, self.objective.direction)

    def _run_trial(self, trial) -> None:
        """Train (or resume, or only read) the trial's run, decide, tell; a heartbeat thread runs meanwhile."""
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(trial, stop), daemon=True)
        beat.start()
        try:
            self._train_and_decide(trial)
        finally:
            stop.set()

    def _train_and_decide(self, trial) -> None:
        from optuna.trial import TrialState

        a = dict(trial.user_attrs)
        name, budget, kind = a["name"], int(a["budget"]), a["kind"]
        prev_budget = int(a.get("prev_budget", 0))
        run_dir, cfg_path = self.run_dir(name), self.config_path(name)
        for pname in a.get("params") or {}:       # record the enqueued (fixed) params, TPE-compatible
            trial.suggest_float(pname, SPACE[pname][1], SPACE[pname][2], log=SPACE[pname][3])
        t0 = time.time()
        reported: set[int] = set(int(k) for k in trial.storage.get_trial(trial._trial_id).intermediate_values)
        reason, rc = "", 0

        def poll() -> str | None:
            for step, v in self._points(run_dir, budget, evaluate=False):
                if step > prev_budget and step not in reported and math.isfinite(v):
                    trial.report(v, step)
                    reported.add(step)
                    if kind != "base" and trial.should_prune():
                        return "pruned"
            if budget < self.steps and rundir.is_finished(run_dir, budget):
                return "budget"
            return None

        log_file = rundir.log_path(self.out, name)
        if rundir.is_finished(run_dir, budget):
            reason = poll() or ""           # trained before a crash: only read it
        else:                               # resumes from its checkpoint, if any
            launch = rundir.launch_train(cfg_path, run_dir, log_file, name=name, launcher=self.s.launcher, poll=poll,
                                         interval=self.s.poll_s, who="autopilot")
            rc, reason = launch.returncode, launch.reason
        rows = read_metrics(run_dir)
        failed = rc != 0 and reason not in ("budget", "pruned") and not rundir.is_finished(run_dir, budget)
        if kind == "base" and failed:
            tail = _log_tail(log_file)
            raise ObjectiveMissing(f"--config_path: the base run failed (exit {rc}): {tail}; see {log_file}")
        try:
            pts = [] if failed else self._points(run_dir, budget)
        except RuntimeError as err:          # bench:<task>: the closed-loop evaluation failed
            if kind == "base":
                raise ObjectiveMissing(f"--objective: {self.objective.key}: {err}") from None
            pts, failed, reason = [], True, ""
        objective = runs.objective_value(pts)
        if kind == "base" and objective is None:
            keys = runs.logged_keys(rows)
            raise ObjectiveMissing(f"--objective: {self.objective.key} is not logged by the runs; they log: "
                                   f"{', '.join(keys) if keys else 'nothing'}")
        parent_obj, parent_best = self._parent_best(a.get("parent"))
        findings: list[str] = []
        note = ""
        final = budget >= self.steps
        if final and not failed and reason != "pruned":
            try:
                rep = tools.report(run_dir, self.run_dir(a["parent"]) if a.get("parent") else None, self.s.rules)
                findings = [f["id"] for f in rep.get("findings", [])]
            except (RuntimeError, ValueError) as err:
                note = str(err)
        regression = (self.objective.regression(objective, parent_best)
                      if runs.is_finite(objective) and runs.is_finite(parent_best) else None)
        if failed:
            note = note or _log_tail(log_file)
        decision = decide(kind=kind, final=final, failed=failed, pruned=reason == "pruned", objective=objective,
                          regression=regression, findings=findings, max_regression=self.s.max_regression)
        if decision == "retried":
            self._enqueue_retry(a)
        for k, v in {"objective": objective if runs.is_finite(objective) else (None if objective is None else
                                                                                str(objective)),
                     "parent_objective": parent_obj, "parent_best": parent_best, "regression": regression,
                     "findings": findings, "decision": decision, "seconds": round(time.time() - t0, 1),
                     "note": note[:500]}.items():
            trial.set_user_attr(k, v)
        if decision == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        elif decision == "failed" or not runs.is_finite(objective):
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            self.study.tell(trial, objective)
        self._progress(a, objective, parent_obj, decision, time.time() - t0, budget)

    def _heartbeat(self, trial, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):
                trial.set_user_attr("heartbeat", time.time())

    def _progress(self, a: dict, objective, parent_obj, decision: str, secs: float, budget: int) -> None:
        ch = "; ".join(f"{k} {_short(o)}->{_short(n)}" for k, (o, n) in (a.get("changes") or {}).items())
        obj = f"{objective:.4g}" if runs.is_finite(objective) else str(objective)
        rel = ""
        if runs.is_finite(objective) and runs.is_finite(parent_obj) and parent_obj:
            rel = f" ({(objective - parent_obj) / abs(parent_obj) * 100:+.1f}% vs {a.get('parent')})"
        rung = f" @{budget} steps" if budget < self.steps else ""
        self._say(f"autopilot: iter {a['iteration']} {a['name']}{rung} [{ch or a['kind']}] "
                  f"{self.objective.key}={obj}{rel} -> {decision} ({secs:.0f}s)")

    # ------------------------------------------------------------------ enqueueing

    def _write_config(self, name: str, cfg: dict, attrs: dict) -> dict:
        """The run's config (name, output dir, budget, checkpoints at every rung budget), written once."""
        if self.config_path(name).exists():
            return self._config_of(name)
        cfg = dict(cfg)
        cfg["job_name"], cfg["output_dir"] = name, str(self.run_dir(name))
        cfg["steps"], cfg["resume"] = self.steps, False
        cfg.pop("checkpoint_path", None)
        b0 = attrs["budget_min"]
        save = int(cfg.get("save_freq") or self.steps)
        cfg["save_freq"] = math.gcd(save, b0) if b0 < self.steps else save
        write_text(self.config_path(name), json.dumps(cfg, indent=2) + "\n")
        return cfg

    def _enqueue(self, name: str, cfg: dict, attrs: dict) -> None:
        cfg = self._write_config(name, cfg, attrs)
        params = space_params(cfg)
        self.study.enqueue_trial(params, user_attrs={**attrs, "name": name, "params": params,
                                                     "digest": spec.config_digest(cfg)})

    def _enqueue_planned(self, key: str, items: list[tuple[str, dict, dict]]) -> None:
        """Enqueue several trials so that a kill in between loses none: configs first, then the plan (study
        attribute ``key``), then the trials; :meth:`_complete_plans` enqueues what a killed worker did not."""
        for name, cfg, attrs in items:
            self._write_config(name, cfg, attrs)
        self.study.set_user_attr(key, [[name, attrs] for name, _, attrs in items])
        for name, cfg, attrs in items:
            self._enqueue(name, cfg, attrs)

    def _complete_plans(self, trials) -> bool:
        have = {(t.user_attrs["name"], t.user_attrs["rung"]) for t in trials}
        added = False
        for key, items in self.study.user_attrs.items():
            if not key.startswith("plan:"):
                continue
            for name, attrs in items:
                if (name, attrs["rung"]) not in have:
                    self._enqueue(name, self._config_of(name), attrs)
                    added = True
        return added

    def _enqueue_retry(self, a: dict) -> None:
        name = f"{a['name']}-r"
        if any(t.user_attrs["name"] == name for t in self._trials()):
            return
        cfg = json.loads(self.config_path(a["name"]).read_text())
        parent_cfg = self._config_of(a["parent"])
        changes = dict(a.get("changes") or {})
        cfg, halved = scale_lr(cfg, 0.5)
        for key, new in halved.items():
            changes[key] = [cfgkeys.get(parent_cfg, key), new]
        attrs = {**{k: a[k] for k in ("iteration", "parent", "rung", "budget", "prev_budget", "budget_min",
                                      "title") if k in a},
                 "kind": "retry", "changes": changes, "diagnoses": list(a.get("diagnoses") or []) + ["instability"],
                 "retry_of": a["name"]}
        attrs["prev_budget"] = 0
        self._enqueue(name, cfg, attrs)

    def _config_of(self, name: str) -> dict:
        path = self.config_path(name)
        return json.loads(path.read_text()) if path.exists() else {}

    # ------------------------------------------------------------------ coordination

    def _advance(self) -> str:
        """One coordination step (under the lock): 'work' (something was enqueued), 'wait' or 'done'."""
        from optuna.trial import TrialState

        attrs = self.study.user_attrs
        if attrs.get("stop") and not (attrs.get("stop_at_iterations") is not None
                                      and self.s.iterations > attrs["stop_at_iterations"]):
            return "done"                 # stopped (a larger --iterations continues a search stopped by the count)
        trials = self._trials()
        if self._complete_plans(trials):
            return "work"
        if any(t.state == TrialState.WAITING for t in trials):
            return "work"
        if any(t.state == TrialState.RUNNING for t in trials):
            return "wait"
        if not trials:
            self._enqueue("base", self.base_cfg, {"iteration": 0, "parent": None, "kind": "base", "rung": 0,
                                                  "budget": self.steps, "budget_min": self.steps, "changes": {},
                                                  "diagnoses": [], "title": "base config"})
            return "work"
        it = max(t.user_attrs["iteration"] for t in trials)
        cur = [t for t in trials if t.user_attrs["iteration"] == it]
        if it > 0 and self._promote(it, cur):
            return "work"
        records = self._iter_records()
        if it not in records:
            records[it] = self._close_iteration(it, cur, records)
            self.study.set_user_attr(f"iteration:{it}", records[it])
            self._say(f"autopilot: iteration {it} done: best {records[it]['best'] or '-'}; next parent "
                      f"{records[it]['next_parent']}")
        reason = self._stop_reason(it, records)
        if reason is None:
            parent = records[it]["next_parent"]
            if self._propose_next(it + 1, parent, trials) is not None:
                return "work"
            reason = f"nothing new proposed (diagnoses{' or exploration moves' if self.s.explore else ''}) " \
                     f"for {parent} or any other kept run"
        self.study.set_user_attr("stop_at_iterations", it if reason.endswith("iteration(s) done") else None)
        self.study.set_user_attr("stop", reason)
        return "done"

    def _promote(self, it: int, cur) -> bool:
        """Successive halving: when the highest rung of iteration ``it`` is done below the full budget, enqueue
        its best half at the next rung. Returns True when it enqueued."""
        budgets = next((t.user_attrs["budgets"] for t in cur if t.user_attrs.get("budgets")), [self.steps])
        top = max(t.user_attrs["rung"] for t in cur)
        if top >= len(budgets) - 1:
            return False
        at = [t for t in cur if t.user_attrs["rung"] == top and t.user_attrs["kind"] == "candidate"]
        ok = [t for t in at if t.user_attrs.get("decision") == "halving" and t.value is not None]
        ok.sort(key=lambda t: t.value, reverse=self.objective.direction == "max")
        keep = ok[:max(1, len(at) // 2)]
        if not keep:
            return False
        items = []
        for t in keep:
            a = dict(t.user_attrs)
            for k in ("objective", "parent_objective", "parent_best", "regression", "findings", "decision",
                      "seconds", "note", "worker", "heartbeat", "params", "digest", "name"):
                a.pop(k, None)
            a.update({"rung": top + 1, "budget": budgets[top + 1], "prev_budget": budgets[top]})
            items.append((t.user_attrs["name"], self._config_of(t.user_attrs["name"]), a))
        self._enqueue_planned(f"plan:{it}:{top + 1}", items)
        self._say(f"autopilot: iteration {it}: successive halving keeps {', '.join(t.user_attrs['name'] for t in keep)}"
                  f" for {budgets[top + 1]} steps")
        return True

    def _final_objective(self, name: str, trials) -> tuple[float | None, str | None]:
        best = [t for t in trials if t.user_attrs["name"] == name and t.user_attrs["budget"] >= self.steps]
        if not best:
            return None, None
        t = max(best, key=lambda t: t.number)
        obj = t.user_attrs.get("objective")
        return (obj if isinstance(obj, (int, float)) else None), t.user_attrs.get("decision")

    def _close_iteration(self, it: int, cur, records) -> dict:
        trials = self._trials()
        if it == 0:
            obj, _ = self._final_objective("base", trials)
            return {"parent": None, "best": "base", "next_parent": "base", "parent_objective": None,
                    "best_objective": obj, "global_best": obj}
        parent = records[it - 1]["next_parent"]
        parent_obj, _ = self._final_objective(parent, trials)
        kept = []
        for name in sorted({t.user_attrs["name"] for t in cur}):
            obj, decision = self._final_objective(name, trials)
            if decision == "kept" and obj is not None:
                kept.append((obj, name))
        kept.sort(reverse=self.objective.direction == "max")
        best = kept[0] if kept else None
        nxt = parent
        if best is not None and (parent_obj is None or self.objective.regression(best[0], parent_obj) < -INERT_REL):
            nxt = best[1]                 # beats the parent by more than a no-effect change does
        prev_global = records[it - 1].get("global_best")
        glob = prev_global
        if best is not None and (glob is None or self.objective.better(best[0], glob)):
            glob = best[0]
        return {"parent": parent, "best": nxt if nxt != parent else None, "next_parent": nxt,
                "parent_objective": parent_obj, "best_objective": best[0] if best else None, "global_best": glob}

    def _stop_reason(self, it: int, records) -> str | None:
        if it >= self.s.iterations:
            return f"{self.s.iterations} iteration(s) done"
        p = self.s.patience
        if p > 0 and it >= p and it - p in records:
            old, new = records[it - p].get("global_best"), records[it].get("global_best")
            if old is not None and new is not None:
                gain = self.objective.regression(old, new)    # relative improvement of new over old
                if gain < self.s.min_delta:
                    return f"plateau: best {self.objective.key} improved by {gain * 100:.2f}% over the last {p} " \
                           f"iteration(s) (< {self.s.min_delta * 100:g}%)"
        return None

    def _fallback_parents(self, parent: str, trials) -> list[str]:
        """``parent``, then every other run that was kept at the full budget, best objective first: where the
        best run's diagnoses are used up (each proposal already tried), the search goes on from the next best
        run's, as the seed's person went back to iter4a's branch after iter5 — rather than stopping."""
        others = []
        for name in sorted({t.user_attrs["name"] for t in trials} - {parent}):
            obj, decision = self._final_objective(name, trials)
            if decision in ("kept", "best") and obj is not None and math.isfinite(obj):
                others.append((obj, name))
        others.sort(reverse=self.objective.direction == "max")
        return [parent, *(name for _, name in others)]

    def _propose_next(self, it: int, parent: str, trials) -> str | None:
        """Enqueue iteration ``it`` from ``parent`` or, when nothing untried is proposed there, from the first
        fallback run (:meth:`_fallback_parents`) that has something; when no run's diagnoses are left, one-step
        exploration moves (:func:`explore_moves`) around the same runs in the same order, unless ``explore`` is
        off. Returns the run used, None when none."""
        for run in self._fallback_parents(parent, trials):
            if self._propose(it, run, trials):
                if run != parent:
                    self._say(f"autopilot: nothing new proposed for {parent}; iteration {it} continues from "
                              f"{run}, the next best kept run")
                return run
        if self.s.explore:
            for run in self._fallback_parents(parent, trials):
                if self._explore(it, run, trials):
                    self._say(f"autopilot: no diagnosis left to act on for {parent} or any other kept run; "
                              f"iteration {it} explores one step around {run}")
                    return run
        return None

    def _propose(self, it: int, parent: str, trials) -> bool:
        """Enqueue up to K untried candidates of ``dpot propose`` on ``parent`` for iteration ``it``."""
        prop_dir = self.out / "proposals" / parent
        try:
            props = tools.propose(self.run_dir(parent), prop_dir, self.s.rules)
        except (RuntimeError, ValueError) as err:
            self._say(f"autopilot: dpot propose {parent} failed: {err}")
            return False
        cands = [(p.get("name"), p.get("title", p["name"]), list(p.get("findings") or []), cfg,
                  list(p.get("changes") or {})) for p, cfg in props
                 if "steps" not in p.get("changes", {})]   # 'longer training': the budget per candidate is fixed
        return self._enqueue_candidates(it, parent, cands, trials)

    def _explore(self, it: int, parent: str, trials) -> bool:
        """Enqueue up to K untried one-step exploration moves around ``parent`` for iteration ``it``."""
        cands = [(name, title, ["explore"], cfg, None) for name, title, cfg in explore_moves(self._config_of(parent))]
        return self._enqueue_candidates(it, parent, cands, trials)

    def _enqueue_candidates(self, it: int, parent: str, cands: list, trials) -> bool:
        """Enqueue the first K of ``cands`` (``(name, title, diagnoses, config, changed keys or None = any)``) that
        are neither tried (same config digest) nor equal to ``parent``, nor only repeat moves that left the
        objective unchanged before (:func:`inert_moves`); successive halving when more than 2. True if any."""
        parent_cfg = self._config_of(parent)
        parent_digest = spec.config_digest(parent_cfg)
        tried = {t.user_attrs.get("digest") for t in trials}
        inert = inert_moves(t.user_attrs for t in trials)
        chosen = []
        for name, title, diagnoses, cfg, keys in cands:
            cfg = {**cfg, "steps": self.steps}
            digest = spec.config_digest(cfg)
            if digest in tried or digest == parent_digest:
                continue
            changes = spec.leaf_changes(parent_cfg, cfg, list(cfg) if keys is None else keys)
            proof = repeats_inert(changes, inert)
            if proof is not None:
                self._say(f"autopilot: passing over '{title}' on {parent}: the same move of "
                          f"{', '.join(changes)} left {self.objective.key} unchanged in {proof}")
                continue
            tried.add(digest)
            chosen.append((name, title, diagnoses, cfg, changes))
            if len(chosen) >= self.s.candidates:
                break
        if not chosen:
            return False
        budgets = sh_budgets(len(chosen), self.steps)
        letters = "abcdefghijklmnopqrstuvwxyz"
        items = []
        for i, (name, title, diagnoses, cfg, changes) in enumerate(chosen):
            items.append((f"it{it}{letters[i]}", cfg,
                          {"iteration": it, "parent": parent, "kind": "candidate", "rung": 0, "budget": budgets[0],
                           "prev_budget": 0, "budget_min": budgets[0], "budgets": budgets, "changes": changes,
                           "diagnoses": diagnoses, "title": title, "proposal": name}))
        self._enqueue_planned(f"plan:{it}:0", items)
        self._say(f"autopilot: iteration {it} from {parent}: {len(chosen)} candidate(s) "
                  f"({', '.join(c[1] for c in chosen)})"
                  + (f"; successive halving at {budgets} steps" if len(budgets) > 1 else ""))
        return True


def _check_bench_data(base: dict, task: str) -> None:
    """``bench:<task>`` needs target data made by ``dpot bench generate`` for that task (meta/dpot_bench.json)."""
    root = (base.get("dataset") or {}).get("root")
    meta = Path(root) / "meta" / "dpot_bench.json" if root else None
    if meta is None or not meta.exists():
        raise UserError(f"--objective: bench:{task} evaluates in the dpot bench simulator, but the target dataset "
                        f"({root}) was not made by 'dpot bench generate' (no meta/dpot_bench.json); use a logged "
                        f"metric such as {spec.DEFAULT_OBJECTIVE}")
    made_for = (json.loads(meta.read_text()).get("settings") or {}).get("task")
    if made_for and made_for != task:
        raise UserError(f"--objective: bench:{task}: the target data was generated for task {made_for}; use "
                        f"bench:{made_for}")


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
