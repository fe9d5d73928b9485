"""The autopilot loop on an Optuna study: one trial per training segment, the loop's state in the study.

The pieces, each in its module: :mod:`.record` (the typed state: what a trial carries, what closing an iteration
decided, the decision values), :mod:`.store` (that state in the study, public Optuna API only), :mod:`.claim`
(which worker trains which trial: asking, take-over of a dead worker's trial, heartbeats, the coordination lock),
:mod:`.candidates` (what is trained next and how it is enqueued), :mod:`.training` (one trial: train, report the
objective to the pruner, decide, tell), :mod:`.decisions` (the rules as pure functions). This module opens the
search and runs the loop: claim a trial and train it, or take one coordination step.

Candidates are enqueued (``study.enqueue_trial``, their values of the search space as fixed params,
:func:`~dpot.autopilot.space.config_params`); workers pop them with ``study.ask()`` (the storage hands a waiting
trial to one worker only), so several processes on one study (SQLite under DIR, or any RDB URL) train different
candidates. Intermediate objective values are reported from ``metrics.jsonl`` while a run trains; the study's
pruner (``--pruner``: median, successive halving, none) may stop a hopeless one, and at each new evaluation a
candidate whose curve ``dpot report`` calls broken (:data:`~dpot.autopilot.decisions.BROKEN_CURVE`: diverging,
stalled at a far-too-high LR, a varying LR logged flat, a warmup as long as the run) is stopped there
(``--no_prune_broken`` turns it off); a trial records the steps it really trained (``trained_steps``).

One coordination step at a time (a lock file in DIR): when no trial waits or runs, the step promotes successive-
halving survivors, or closes the iteration (:func:`~dpot.autopilot.decisions.close_iteration`: the best kept run
becomes the next parent when it beats the parent by more than ``INERT_REL``, relative) and enqueues the next one
(:class:`~dpot.autopilot.candidates.Planner`), or records why the search stops.

Per candidate, when its full budget is trained (:func:`~dpot.autopilot.decisions.decide`):
    objective non-finite, or the report finds ``instability`` (grad-norm spikes / loss oscillation)
        -> ``retried``: the same candidate with the LR halved is enqueued (once);
    (objective - parent_best) / |parent_best| > max_regression (0.10; sign flipped for max) -> ``rolled_back``,
        parent_best being the parent's best logged value up to the candidate's step;
    else -> ``kept``.

Stops: ``iterations`` done, a plateau (the best objective improved by less than ``min_delta`` (relative) over the
last ``patience`` iterations), or no untried candidate for the parent nor for any other kept run.

Crash safety: a run trains through ``dpot train`` and checkpoints; a trial whose worker died (same host and its pid
gone, or no heartbeat for :data:`~dpot.autopilot.claim.STALE_S`) is taken over by the next worker, which resumes the
run from its last checkpoint (``--resume=true``) or only reads it when it already reached its budget. Finished
trials are never redone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from pathlib import Path

from dpot import launch, rundir
from dpot.atomic import write_text
from dpot.autopilot import spec
from dpot.autopilot.candidates import Planner
from dpot.autopilot.claim import Claimer, dir_lock, worker_id
from dpot.autopilot.decisions import close_iteration, stop_reason
from dpot.autopilot.record import IterationRecord, TrialRecord
from dpot.autopilot.spec import SearchDir, Settings
from dpot.autopilot.store import TrialStore
from dpot.autopilot.training import ObjectiveMissing, TrialRunner
from dpot.errors import UserError

__all__ = ["ObjectiveMissing", "Search", "Settings"]

log = logging.getLogger(__name__)


class Search:
    """One autopilot search in ``settings.out`` (see the module docstring)."""

    def __init__(self, s: Settings):
        self.s = s
        self.out = Path(s.out).resolve()
        self.objective = spec.parse_objective(s.objective)
        launch.check_launcher(s.launcher)
        if s.iterations < 0:
            raise UserError("--iterations: must be >= 0")
        if s.candidates < 1:
            raise UserError("--candidates: must be >= 1")
        if s.steps is not None and s.steps < 1:
            raise UserError("--steps: must be >= 1")
        from dpot.autopilot.sampling import SAMPLERS, STRATEGIES

        if s.strategy not in STRATEGIES:
            raise UserError(f"--strategy: {s.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if s.sampler not in SAMPLERS:
            raise UserError(f"--sampler: {s.sampler!r} is not one of {', '.join(SAMPLERS)}")
        if s.rules and not Path(s.rules).is_file():
            raise UserError(f"--rules: {s.rules} does not exist")
        self.worker = worker_id()
        self.dirs = SearchDir(self.out)
        self.fresh = False
        self.store: TrialStore | None = None

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
                             study_name=f"dpot-autopilot-{self.out.name}", strategy=self.s.strategy,
                             sampler=self.s.sampler)
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
        pruner = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0),
                  "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
                  "none": optuna.pruners.NopPruner}[self.s.pruner]()
        with dir_lock(self.out):                  # workers starting together: one creates the tables and study
            if storage is None:
                storage = self._storage(url)
                names = [x.study_name for x in optuna.get_all_study_summaries(storage)]
            self.fresh = not resuming and sp.study_name not in names
            study = optuna.create_study(storage=storage, study_name=sp.study_name, load_if_exists=True,
                                        direction="minimize" if self.objective.direction == "min" else "maximize",
                                        pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0))
        self.attach(study, storage)
        self._say(f"autopilot: {'continuing' if resuming else 'new'} search in {self.out} (study "
                  f"{sp.study_name}, {spec.mask_url(url) if self.s.storage else 'sqlite under DIR'}); objective "
                  f"{self.objective.text}, {self.steps} steps per candidate, <= {self.s.candidates} candidates x "
                  f"{self.s.iterations} iterations")

    def attach(self, study, storage) -> None:
        """Work on ``study`` (created on ``storage``, an ``optuna.storages.BaseStorage``); needs ``self.steps``."""
        self.store = TrialStore(study, storage)
        self.planner = Planner(self.store, self.dirs, self.steps, self.objective, self.s.candidates, self.s.rules,
                               self.s.explore, self._say, strategy=self.s.strategy, sampler=self.s.sampler,
                               seed=self.s.seed)
        self.runner = TrialRunner(self.s, self.objective, self.steps, self.dirs, self.store, self.planner, self._say)
        self.claimer = Claimer(self.store, self.out, self.worker, self._say)

    @property
    def study(self):
        """The ``optuna.Study`` (None before :meth:`open`)."""
        return self.store.study if self.store is not None else None

    @staticmethod
    def _storage(url: str):
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

        if not self.fresh or self.store is None:
            return
        with contextlib.suppress(Exception):
            optuna.delete_study(study_name=self.store.study.study_name, storage=self.store.storage)
        shutil.rmtree(self.out, ignore_errors=True)

    def _say(self, msg: str) -> None:
        if not self.s.quiet:
            print(msg, flush=True)

    def records(self) -> list[TrialRecord]:
        """Every trial's record, in trial order."""
        return [e.record for e in self.store.entries()]

    def iterations(self) -> dict[int, IterationRecord]:
        """The closed iterations' records."""
        return self.store.iterations()

    def run_dir(self, name: str) -> Path:
        return self.dirs.run_dir(name)

    # ------------------------------------------------------------------ main loop

    def run(self) -> str:
        """Work until the search stops.

        Returns:
            The stop reason.
        Raises:
            ObjectiveMissing: the base run gives no objective (what this invocation created is removed first).
        """
        from dpot.autopilot import lineage

        try:
            while True:
                claimed = self.claimer.claim()
                if claimed is not None:
                    self.runner.run(*claimed)
                    lineage.write(self)
                    continue
                with dir_lock(self.out):
                    state = self.advance()
                lineage.write(self)
                if state == "done":
                    reason = self.store.stop or ""
                    self._say(f"autopilot: stopped ({reason}); lineage: {self.out / rundir.LINEAGE_FILE}, "
                              f"page: {self.out / 'autopilot.html'}")
                    return reason
                if state == "wait":
                    time.sleep(max(self.s.poll_s, 1.0))
        except ObjectiveMissing:
            self.abort_fresh()
            raise

    # ------------------------------------------------------------------ coordination

    def advance(self) -> str:
        """One coordination step (under the lock): 'work' (something was enqueued), 'wait' or 'done'."""
        from optuna.trial import TrialState

        store = self.store
        if store.stop and not (store.stop_at_iterations is not None
                               and self.s.iterations > store.stop_at_iterations):
            return "done"                 # stopped (a larger --iterations continues a search stopped by the count)
        entries = store.entries()
        records = [e.record for e in entries]
        if self.planner.complete_plans(records):
            return "work"
        if any(e.state == TrialState.WAITING for e in entries):
            return "work"
        if any(e.state == TrialState.RUNNING for e in entries):
            return "wait"
        if not entries:
            self.planner.enqueue_base(self.base_cfg)
            return "work"
        it = max(r.iteration for r in records)
        current = [e for e in entries if e.record.iteration == it]
        if it > 0 and self.planner.promote(it, current):
            return "work"
        closed = store.iterations()
        if it not in closed:
            closed[it] = close_iteration(it, records, closed, self.steps, self.objective)
            store.close_iteration(it, closed[it])
            self._say(f"autopilot: iteration {it} done: best {closed[it].best or '-'}; next parent "
                      f"{closed[it].next_parent}")
        reason = stop_reason(it, closed, self.s.iterations, self.s.patience, self.s.min_delta, self.objective)
        if reason is None:
            parent = closed[it].next_parent
            if self.planner.propose_next(it + 1, parent, records) is not None:
                return "work"
            what = {"rules": "diagnoses" + (" or exploration moves" if self.s.explore else ""),
                    "both": "diagnoses or sampler", "sampler": "sampler", "prior": "sampler"}[self.s.strategy]
            reason = f"nothing new proposed ({what}) for {parent} or any other kept run"
        store.set_stop(reason, it if reason.endswith("iteration(s) done") else None)
        return "done"


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
