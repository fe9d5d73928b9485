"""What every diagnosis rule is made of: :class:`Rule` (built from its ``rules.toml`` table), the
:class:`RuleContext` it reads and the :class:`Finding` it returns.

A rule reads a :class:`RuleContext` (the run, its summaries, throughput, parent run, late window) and returns one
:class:`Finding` (the numbers that triggered it as ``evidence``, the dotted config ``changes`` a next run should
try) or None. Every "recent level" of a curve is read over the one late window of :mod:`dpot.analysis.windows`.
The rules themselves live by family in :mod:`dpot.analysis.rules_optim`, :mod:`dpot.analysis.rules_ot` and
:mod:`dpot.analysis.rules_dynamics`; :mod:`dpot.analysis.diagnose` runs them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from statistics import median
from typing import ClassVar

from dpot import metric_names as mn
from dpot.analysis import cfgkeys
from dpot.analysis.readers import Run
from dpot.analysis.summary import MetricSummary
from dpot.analysis.windows import LATE_FRAC, MIN_POINTS, late_window

SEVERITIES = ("info", "warn", "alarm")


@dataclass
class Finding:
    """One triggered rule: ``id`` (rule name), ``severity``, ``evidence`` (numbers), proposed ``changes``."""

    id: str
    severity: str
    evidence: dict
    changes: dict = field(default_factory=dict)     # dotted config key -> new value (one bounded step)
    group: str = "optim"                            # which proposal it feeds: optim | ot | rollback
    monitors: list[str] = field(default_factory=list)
    targets: dict = field(default_factory=dict)     # dotted key -> where the rule would end up (when further)

    def as_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


@dataclass
class RuleContext:
    """What a rule reads: the run, its metric summaries, the throughput breakdown, the parent run (rollback)
    and the late window (``frac``, ``min_points`` of ``rules.toml [window]``)."""

    run: Run
    summaries: dict[str, MetricSummary] = field(default_factory=dict)
    throughput: dict = field(default_factory=dict)
    parent_run: Run | None = None
    frac: float = LATE_FRAC
    min_points: int = MIN_POINTS

    def series(self, key: str, run: Run | None = None) -> list[tuple[int, float]]:
        """The finite ``(step, value)`` points of ``key`` in ``run`` (default: this run)."""
        return [(s, v) for s, v in (run or self.run).history.get(key, []) if math.isfinite(v)]

    def late(self, series: list) -> list:
        """The late window of ``series`` (:func:`dpot.analysis.windows.late_window`)."""
        return late_window(series, self.frac, self.min_points)

    def late_median(self, series: list[tuple[int, float]]) -> float:
        """Median value over the late window of a non-empty ``(step, value)`` series."""
        return median(v for _, v in self.late(series))

    def late_median_of(self, key: str, run: Run | None = None) -> float | None:
        """:meth:`late_median` of ``key``'s finite points in ``run`` (default: this run); None when there are none."""
        series = self.series(key, run)
        return self.late_median(series) if series else None


def term_kind(run: Run, term: str) -> str | None:
    """Kind of OT cost term ``term``: ``"embed"`` | ``"label"`` | None (unknown).

    The kind recorded at logging time (``run.term_kinds``, from ``ot_terms.json`` / W&B ``dpot_ot_terms``)
    wins; a run that did not record it falls back to the trainer's naming rule: ``img_<camera>`` is an
    embedding term, ``<key>_lbl`` a label term.
    """
    if run.term_kinds and term in run.term_kinds:
        return run.term_kinds[term]
    return mn.kind_by_name(term)


def rounded(x, nd=4):
    """``x`` to ``nd`` significant digits when it is a finite float (evidence stays readable); else as it is."""
    return float(f"{x:.{nd}g}") if isinstance(x, float) and math.isfinite(x) else x


class Rule(ABC):
    """A diagnosis rule: ``id`` (its ``rules.toml`` table), ``group`` (the proposal it feeds), ``monitors``;
    built with its table (``thr``: thresholds, ``propose``: the values it proposes)."""

    id: ClassVar[str]
    group: ClassVar[str] = "optim"
    monitors: ClassVar[tuple[str, ...]] = ()
    into_range: ClassVar[bool] = False   # its changes land in a known-good range: applied without step bound

    def __init__(self, table: dict, rules: dict | None = None):
        self.thr = table
        self.propose = table.get("propose", {})
        self.rules = rules or {}

    def lr_range(self, config: dict) -> tuple[str, float, float]:
        """``(policy type, low, high)``: the usual base-LR range of the run's policy
        (:func:`dpot.analysis.cfgkeys.usual_lr_range`: the policy's own, ``rules.toml [lr_range]`` may override)."""
        ptype = cfgkeys.policy_type(config) or "default"
        low, high = cfgkeys.usual_lr_range(self.rules, ptype)
        return ptype, low, high

    @abstractmethod
    def check(self, ctx: RuleContext) -> Finding | None:
        """The finding for ``ctx.run``, or None when the rule does not trigger."""

    def finding(self, severity: str, evidence: dict, changes: dict | None = None,
                monitors: list[str] | None = None, id: str | None = None) -> Finding:
        """A :class:`Finding` of this rule (``monitors`` default to the rule's)."""
        return Finding(id or self.id, severity, evidence, changes or {}, self.group,
                       list(self.monitors if monitors is None else monitors))
