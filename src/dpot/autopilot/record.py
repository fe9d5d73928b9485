"""The autopilot's typed state: what one trial carries (:class:`TrialRecord`), what closing an iteration decided
(:class:`IterationRecord`), and the values of its closed vocabularies (:class:`Decision`, :class:`Kind`,
:class:`Shown`).

Optuna stores a trial's user attributes and a study's attributes as JSON; each record converts to and from that
form in one place (``to_attrs`` / ``from_attrs``). The enums are ``StrEnum``: the stored values are the plain
strings (``"kept"``, ``"candidate"``), so a study written before these types existed loads unchanged, and a
person reading ``study.db`` or ``lineage.json`` sees words. Attributes this version does not know are kept in
``extra`` and written back, so a record read and written again loses nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from enum import StrEnum

BASE_RUN = "base"         # the name of the run of the base config (iteration 0)


class Kind(StrEnum):
    """Why a trial exists: the base config, a candidate of an iteration, or the LR-halved retry of one."""

    BASE = "base"
    CANDIDATE = "candidate"
    RETRY = "retry"


class Decision(StrEnum):
    """What the worker decided on a finished trial (see :func:`dpot.autopilot.decisions.decide`).

    ``HALVING``: a short successive-halving rung was trained (promotion is decided when the rung is done)."""

    KEPT = "kept"
    ROLLED_BACK = "rolled_back"
    RETRIED = "retried"
    PRUNED = "pruned"
    FAILED = "failed"
    HALVING = "halving"


class Shown(StrEnum):
    """States ``lineage.json`` / ``autopilot.html`` show besides a :class:`Decision`; never stored on a trial.

    ``BEST``: the kept run with the best objective of the whole search; ``TRAINING`` / ``QUEUED``: not done."""

    BEST = "best"
    TRAINING = "training"
    QUEUED = "queued"


def shown_state(node: dict) -> str | None:
    """A ``lineage.json`` node's display state: ``shown``, or ``decision`` in a file written before ``shown``
    existed (it then held the display state)."""
    return node.get("shown", node.get("decision"))


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


@dataclass
class TrialRecord:
    """One training segment of the search (an Optuna trial's user attributes).

    Set when enqueued: ``name`` (run), ``iteration`` (0 = the base run), ``parent`` (run it was derived from,
    None for the base), ``kind``, ``rung`` / ``budget`` / ``prev_budget`` (successive halving: train from
    ``prev_budget`` to ``budget`` steps), ``budget_min`` (the first rung's budget: checkpoints must fall on it),
    ``budgets`` (every rung's budget of the iteration), ``changes`` ({dotted key: [old, new]} against the parent),
    ``diagnoses`` (rule ids that motivated it), ``title``, ``proposal`` (the proposal's name), ``retry_of``,
    ``params`` (the values recorded as Optuna params), ``digest`` (config digest).
    Set by the worker that trains it: ``worker`` (host:pid), ``heartbeat`` (unix time); then the results:
    ``objective`` (a finite number, or the text of a non-finite one: ``"nan"``; None when nothing was logged),
    ``parent_objective``, ``parent_best``, ``regression``, ``objective_noise`` (the per-point noise sd of the
    objective's series, :func:`dpot.analysis.noise.noise_sd`; None with fewer than 3 points), ``trained_steps``
    (the steps this segment really trained, from ``prev_budget`` to the last logged step: less than the budget when
    pruned), ``findings`` (report rule ids), ``decision``, ``seconds``, ``note``.
    """

    name: str
    iteration: int
    parent: str | None
    kind: Kind
    rung: int = 0
    budget: int = 0
    prev_budget: int = 0
    budget_min: int | None = None
    budgets: list[int] | None = None
    changes: dict = field(default_factory=dict)
    diagnoses: list[str] = field(default_factory=list)
    title: str = ""
    proposal: str | None = None
    retry_of: str | None = None
    params: dict = field(default_factory=dict)
    digest: str | None = None
    worker: str | None = None
    heartbeat: float | None = None
    objective: float | str | None = None
    parent_objective: float | None = None
    parent_best: float | None = None
    regression: float | None = None
    objective_noise: float | None = None
    trained_steps: int | None = None
    findings: list[str] = field(default_factory=list)
    decision: Decision | None = None
    seconds: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    # the fields a worker writes once it has trained the trial (a promoted rung starts without them)
    RESULT_FIELDS = ("objective", "parent_objective", "parent_best", "regression", "objective_noise",
                     "trained_steps", "findings", "decision", "seconds", "note", "worker", "heartbeat")

    @property
    def final_objective(self) -> float | None:
        """The objective as a number, None when it is missing or was not finite."""
        v = _number(self.objective)
        return v if v is not None and math.isfinite(v) else None

    @staticmethod
    def objective_attr(value: float | None) -> float | str | None:
        """How an objective is stored: finite numbers as they are, non-finite ones as text (JSON has no nan)."""
        if value is None or math.isfinite(value):
            return value
        return str(value)

    def to_attrs(self) -> dict:
        """The trial's user attributes: every field that is set (``parent`` always), enums as their strings."""
        out = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            if f.name != "parent" and (v is None or (f.name in ("note", "title") and v == "")):
                continue
            out[f.name] = v.value if isinstance(v, StrEnum) else v
        return {**self.extra, **out}

    @classmethod
    def from_attrs(cls, attrs: dict) -> TrialRecord:
        """A record from a trial's user attributes (as :meth:`to_attrs` writes them, or as an older version did:
        missing fields take their defaults, unknown ones go to ``extra``).

        Raises:
            ValueError: ``kind`` or ``decision`` holds a value outside :class:`Kind` / :class:`Decision`.
        """
        known = {f.name for f in fields(cls)} - {"extra"}
        kw = {k: v for k, v in attrs.items() if k in known}
        kw["kind"] = Kind(kw["kind"])
        if kw.get("decision") is not None:
            kw["decision"] = Decision(kw["decision"])
        for key in ("changes", "params"):
            kw[key] = dict(kw.get(key) or {})
        for key in ("diagnoses", "findings"):
            kw[key] = list(kw.get(key) or [])
        kw["note"] = kw.get("note") or ""
        kw["title"] = kw.get("title") or ""
        return cls(**kw, extra={k: v for k, v in attrs.items() if k not in known})

    def next_rung(self, budgets: list[int], rung: int) -> TrialRecord:
        """This run at successive-halving rung ``rung``: trained on from ``budgets[rung - 1]`` to
        ``budgets[rung]`` steps, without this trial's results."""
        kw = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.RESULT_FIELDS}
        kw.update(rung=rung, budget=budgets[rung], prev_budget=budgets[rung - 1], params={}, digest=None)
        return TrialRecord(**kw)


@dataclass
class IterationRecord:
    """What closing iteration ``i`` decided (study attribute ``iteration:<i>``): the ``parent`` it started from,
    ``best`` (the run that beat the parent and becomes the next parent, else None), ``next_parent``, the
    parent's and the best kept run's objective, and ``global_best`` (the best objective of the search so far)."""

    parent: str | None
    best: str | None
    next_parent: str
    parent_objective: float | None = None
    best_objective: float | None = None
    global_best: float | None = None

    def to_attrs(self) -> dict:
        """The study attribute's value (JSON)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_attrs(cls, attrs: dict) -> IterationRecord:
        """The record from a study attribute's value (unknown keys ignored, missing ones None)."""
        known = {f.name for f in fields(cls)}
        return cls(**{"parent": None, "best": None, **{k: v for k, v in attrs.items() if k in known}})
