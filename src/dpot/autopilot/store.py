"""The search's state in an Optuna study, through Optuna's public API only.

Per trial a :class:`~dpot.autopilot.record.TrialRecord` (its user attributes); per study the attributes
``iteration:<i>`` (:class:`~dpot.autopilot.record.IterationRecord`), ``plan:<i>:<rung>`` (the trials an
iteration's rung enqueues, written before they are, see :meth:`TrialStore.enqueue_planned`), ``stop`` (why the
search stopped) and ``stop_at_iterations`` (set when it stopped on the iteration count, which a larger
``--iterations`` continues). A trial the sampler made when another worker took the last waiting one carries only
``duplicate`` and is no record.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpot.autopilot.record import IterationRecord, TrialRecord

DUPLICATE = "duplicate"          # user attribute of a trial that is not part of the search


@dataclass(frozen=True)
class Entry:
    """A stored trial: its Optuna ``number``, ``state`` (``optuna.trial.TrialState``), reported ``value`` and
    its :class:`TrialRecord`."""

    number: int
    state: object
    value: float | None
    record: TrialRecord


class TrialStore:
    """One study and its storage: reads and writes the records (see the module docstring).

    Args:
        study: the ``optuna.Study``.
        storage: the ``optuna.storages.BaseStorage`` the study was created on (kept so that trials are addressed
            by their public number, never through private attributes).
    """

    def __init__(self, study, storage):
        self.study = study
        self.storage = storage
        self._study_id = storage.get_study_id_from_name(study.study_name)

    # -------------------------------------------------------------- trials

    def entries(self) -> list[Entry]:
        """Every trial of the search (duplicates left out), by number."""
        out = []
        for t in self.study.get_trials(deepcopy=False):
            if "name" in t.user_attrs and not t.user_attrs.get(DUPLICATE):
                out.append(Entry(t.number, t.state, t.value, TrialRecord.from_attrs(t.user_attrs)))
        return out

    def any_waiting(self) -> bool:
        """True when a trial waits to be asked for (enqueued, not yet claimed)."""
        from optuna.trial import TrialState

        return bool(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def trial_id(self, number: int) -> int:
        """The storage's id of trial ``number`` (public storage API)."""
        return self.storage.get_trial_id_from_study_id_trial_number(self._study_id, number)

    def handle(self, number: int):
        """An ``optuna.trial.Trial`` for the running trial ``number`` (to report to and set attributes on)."""
        import optuna

        return optuna.trial.Trial(self.study, self.trial_id(number))

    def reported_steps(self, number: int) -> set[int]:
        """The steps at which trial ``number`` already has an intermediate value."""
        return {int(k) for k in self.storage.get_trial(self.trial_id(number)).intermediate_values}

    def enqueue(self, record: TrialRecord) -> None:
        """Enqueue a trial for ``record`` (its ``params`` as fixed params, the record as user attributes)."""
        self.study.enqueue_trial(dict(record.params), user_attrs=record.to_attrs())

    @staticmethod
    def write(trial, record: TrialRecord, keys) -> None:
        """Set the user attributes ``keys`` of ``record`` on the live ``trial`` (an ``optuna.trial.Trial``)."""
        attrs = record.to_attrs()
        for key in keys:
            trial.set_user_attr(key, attrs.get(key))

    def mark_duplicate(self, trial) -> None:
        """Close a trial that is not part of the search (failed, marked ``duplicate``)."""
        from optuna.trial import TrialState

        trial.set_user_attr(DUPLICATE, True)
        self.study.tell(trial, state=TrialState.FAIL)

    # -------------------------------------------------------------- plans

    def plans(self) -> dict[str, list[tuple[str, TrialRecord]]]:
        """``{plan key: [(run name, record), ...]}`` of every plan written."""
        out = {}
        for key, items in self.study.user_attrs.items():
            if key.startswith("plan:"):
                out[key] = [(name, TrialRecord.from_attrs({**attrs, "name": name})) for name, attrs in items]
        return out

    def write_plan(self, key: str, records: list[TrialRecord]) -> None:
        """Record the trials a plan will enqueue (study attribute ``key``), before enqueueing them."""
        self.study.set_user_attr(key, [[r.name, {k: v for k, v in r.to_attrs().items() if k != "name"}]
                                       for r in records])

    # -------------------------------------------------------------- iterations and stop

    def iterations(self) -> dict[int, IterationRecord]:
        """``{iteration: record}`` of every closed iteration."""
        return {int(k.split(":")[1]): IterationRecord.from_attrs(v) for k, v in self.study.user_attrs.items()
                if k.startswith("iteration:")}

    def close_iteration(self, it: int, record: IterationRecord) -> None:
        self.study.set_user_attr(f"iteration:{it}", record.to_attrs())

    @property
    def stop(self) -> str | None:
        """Why the search stopped, None while it goes on."""
        return self.study.user_attrs.get("stop")

    @property
    def stop_at_iterations(self) -> int | None:
        """The iteration count the search stopped at (None when it stopped for another reason)."""
        return self.study.user_attrs.get("stop_at_iterations")

    def set_stop(self, reason: str, at_iterations: int | None) -> None:
        self.study.set_user_attr("stop_at_iterations", at_iterations)
        self.study.set_user_attr("stop", reason)
