"""Diagnosis rules as data: one :class:`Rule` object per table of ``rules.toml``.

A rule is built from its table (thresholds, and a ``propose`` sub-table with the values it proposes), reads a
:class:`RuleContext` (the run, its summaries, throughput, parent run, late window) and returns one
:class:`Finding` (the numbers that triggered it as ``evidence``, the dotted config ``changes`` a next run should
try) or None. Rules register themselves in :data:`RULES` by id; :func:`diagnose` runs every enabled one.
Every "recent level" of a curve is read over the one late window of :mod:`dpot.analysis.windows`.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from statistics import median, pstdev
from typing import ClassVar

from dpot.analysis import cfgkeys, noise
from dpot.analysis.aliases import MEAN_COST_PREFIX, cost_prefix
from dpot.analysis.readers import Run
from dpot.analysis.steps import is_bounded, person_step
from dpot.analysis.summary import MetricSummary
from dpot.analysis.windows import LATE_FRAC, MIN_POINTS, late_window, window_size

SEVERITIES = ("info", "warn", "alarm")
EVAL_KEY = "eval/offline_eval/avg_loss"


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


def term_kind(run: Run, term: str) -> str | None:
    """Kind of OT cost term ``term``: ``"embed"`` | ``"label"`` | None (unknown).

    The kind recorded at logging time (``run.term_kinds``, from ``ot_terms.json`` / W&B ``dpot_ot_terms``)
    wins; a run that did not record it falls back to the trainer's naming rule: ``img_<camera>`` is an
    embedding term, ``<key>_lbl`` a label term.
    """
    if run.term_kinds and term in run.term_kinds:
        return run.term_kinds[term]
    if term.startswith("img_"):
        return "embed"
    if term.endswith("_lbl"):
        return "label"
    return None


def _r(x, nd=4):
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
        """``(policy type, low, high)``: the usual base-LR range of the run's policy (``rules.toml [lr_range]``)."""
        ranges = self.rules.get("lr_range") or {"default": [1e-5, 1e-3]}
        ptype = cfgkeys.policy_type(config) or "default"
        low, high = ranges.get(ptype, ranges["default"])
        return ptype, low, high

    @abstractmethod
    def check(self, ctx: RuleContext) -> Finding | None:
        """The finding for ``ctx.run``, or None when the rule does not trigger."""

    def finding(self, severity: str, evidence: dict, changes: dict | None = None,
                monitors: list[str] | None = None, id: str | None = None) -> Finding:
        """A :class:`Finding` of this rule (``monitors`` default to the rule's)."""
        return Finding(id or self.id, severity, evidence, changes or {}, self.group,
                       list(self.monitors if monitors is None else monitors))


RULES: dict[str, type[Rule]] = {}


def register(cls: type[Rule]) -> type[Rule]:
    """Class decorator: add a rule to :data:`RULES` under its ``id`` (registration order = report order)."""
    RULES[cls.id] = cls
    return cls


# ------------------------------------------------------------------ optimisation rules

@register
class LrFlat(Rule):
    """train/lr constant over the run: a warning with a proposal (an explicit warmup-cosine schedule) when a
    varying schedule is configured or none is; information only, with nothing to propose, when the configured
    schedule is constant (the run does what its config says: a choice, not a fault; the autopilot's sampler draws
    it, and a proposal here would undo that draw in the next iteration, as the issue-22 follow-up's first cells
    showed)."""

    id = "lr_flat"
    monitors = ("train/lr",)

    def check(self, ctx):
        lr = ctx.series("train/lr")
        if len(lr) < self.thr["min_points"]:
            return None
        vals = [v for _, v in lr]
        hi, lo = max(vals), min(vals)
        if hi <= 0 or (hi - lo) / hi >= self.thr["rel_tol"]:
            return None
        sch = cfgkeys.schedule(ctx.run.config)
        ev = {"lr_min": _r(lo), "lr_max": _r(hi), "points": len(vals), "steps": f"{lr[0][0]}-{lr[-1][0]}",
              "scheduler": (f"{sch['type']}/{sch['name']} warmup={sch['warmup']}" if sch else "none")}
        ptype, low, high = self.lr_range(ctx.run.config)
        if sch is None and ptype in self.thr.get("constant_ok", []):
            return None  # e.g. ACT: LeRobot's preset has no scheduler, a constant LR is the preset
        ev["configured_varies"] = bool(sch and sch["varies"])
        if sch is not None and not sch["varies"]:
            return self.finding("info", ev)
        changes = copy.deepcopy(self.propose)
        proposed_lr = cfgkeys.get(changes, cfgkeys.LR)
        if cfgkeys.is_number(proposed_lr):  # the policy's usual range (ACT: not Diffusion's 3e-4)
            changes = cfgkeys.set_(changes, cfgkeys.LR, min(high, max(low, proposed_lr)))
        steps = cfgkeys.get(ctx.run.config, cfgkeys.STEPS)
        warmup = cfgkeys.get(changes, cfgkeys.SCHEDULER_WARMUP)
        if isinstance(steps, int) and steps > 0 and isinstance(warmup, int):
            changes = cfgkeys.set_(changes, cfgkeys.SCHEDULER_WARMUP,
                                   min(warmup, max(1, round(self.thr["max_warmup_frac"] * steps))))
        return self.finding("warn", ev, changes)


@register
class LrLow(Rule):
    """Configured base LR below the usual range for the policy type."""

    id = "lr_low"
    monitors = ("train/loss", "train/grad_norm", "train/lr")
    into_range = True

    def check(self, ctx):
        config = ctx.run.config
        lr = cfgkeys.base_lr(config)
        if lr is None:
            return None
        ptype, low, high = self.lr_range(config)
        if lr >= low * (1 - 1e-9):
            return None
        new = min(high, max(low, lr * self.propose["lr_factor"]))
        return self.finding("warn", {"lr": lr, "policy": ptype, "usual_range": [low, high]},
                            cfgkeys.lr_changes(config, new))


@register
class LrHigh(Rule):
    """Configured base LR far above the usual range for the policy type AND a stalled train/loss: the late
    window's mean is above ``max_late_over_early`` × the start level (the first window's mean, or the first point
    when lower: a blow-up right after the start is no progress) by more than the noise allows (windows of the late
    window's length, :func:`dpot.analysis.noise.fall_since_start`; one-sided at alpha 0.05: a loss that ends near
    half its start does not flip to "stalled" with one noisy window), or the loss went non-finite. The symmetric
    case of :class:`LrLow`; proposes the LR divided by ``lr_divisor``, clipped into the usual range (a known-good
    value, as a person would set it)."""

    id = "lr_high"
    monitors = ("train/loss", "train/grad_norm", "train/lr")
    into_range = True

    def check(self, ctx):
        config = ctx.run.config
        lr = cfgkeys.base_lr(config)
        logged = ctx.series("train/lr")
        if lr is None and logged:
            lr = max(v for _, v in logged)
        if lr is None:
            return None
        ptype, low, high = self.lr_range(config)
        if lr <= high * self.thr["far_factor"]:
            return None
        raw = ctx.run.history.get("train/loss", [])
        loss = ctx.series("train/loss")
        n0 = self.thr["min_points"]
        non_finite = len(raw) - len(loss)
        ev = {"lr": _r(lr), "policy": ptype, "usual_range": [low, high], "far_factor": self.thr["far_factor"]}
        cmp = noise.fall_since_start(loss, ctx.frac, ctx.min_points) if len(loss) >= 2 * n0 else None
        if cmp is not None:
            # the start level: the first window's mean, or the very first point when lower (a blow-up right after
            # the start is no progress; not the window's lowest point, which noise alone pulls down); the late
            # level: the late window's mean
            early, late = min(loss[0][1], cmp.before.mean), cmp.after.mean
            ratio = late / early if early > 0 else math.inf
            ev.update({"loss_start": _r(early), "loss_late": _r(late), "late_over_early": _r(ratio, 3),
                       "max_late_over_early": self.thr["max_late_over_early"],
                       "window_steps": f"{cmp.after.start}-{cmp.after.end}",
                       **cmp.evidence("start", "late")})
            # not halved, beyond the noise: the late mean exceeds max_late_over_early x the start by more than
            # the sd of that difference allows (an edge case at ratio ~0.5 does not flip with one noisy window)
            margin = late - self.thr["max_late_over_early"] * early
            stalled = ratio >= self.thr["max_late_over_early"] and margin > noise.z_needed(1) * cmp.se
        if non_finite:
            ev["non_finite_loss"] = non_finite
            stalled = True
        if not stalled:
            return None
        parent = ctx.parent_run
        if parent is not None and ctx.series("train/loss", parent):
            ev["parent_loss_late"] = _r(ctx.late_median(ctx.series("train/loss", parent)))
            ev["parent_lr"] = cfgkeys.base_lr(parent.config)
        new = max(low, min(high, lr / self.propose["lr_divisor"]))
        return self.finding("alarm", ev, cfgkeys.lr_changes(config, _r(new)))


@register
class DataBound(Rule):
    """Dataloading share of the step time above the threshold."""

    id = "data_bound"
    monitors = ("train/dataloading_s", "train/update_s")

    def check(self, ctx):
        tp = ctx.throughput
        share = tp.get("data_share")
        if share is None or share <= self.thr["max_data_share"]:
            return None
        nw = cfgkeys.get(ctx.run.config, cfgkeys.NUM_WORKERS)
        ev = {"data_share": _r(share, 3), "dataloading_s": _r(tp["dataloading_s"]), "update_s": _r(tp["update_s"]),
              "num_workers": nw}
        changes = {}
        if isinstance(nw, int) or nw is None:
            changes[cfgkeys.NUM_WORKERS] = max(self.propose["min_workers"],
                                               self.propose["workers_factor"] * int(nw or 0))
        return self.finding("warn", ev, changes)


@register
class EvalTooFrequent(Rule):
    """Too many evals for the run length, or too much wall time in eval."""

    id = "eval_too_frequent"
    monitors = ("train/update_s",)

    def check(self, ctx):
        tp, config = ctx.throughput, ctx.run.config
        freq = tp.get("eval_freq")
        steps = cfgkeys.get(config, cfgkeys.STEPS) or ctx.run.last_step
        if not freq or not steps:
            return None
        max_evals, max_share = self.thr["max_evals"], self.thr["max_eval_share"]
        n_evals = steps / freq
        share = tp.get("eval_share")
        if n_evals <= max_evals and (share is None or share <= max_share):
            return None
        need = steps / max_evals
        if share is not None and share > max_share:   # share ~ 1/eval_freq
            need = max(need, freq * share * (1 - max_share) / (max_share * (1 - share)))
        unit = self.propose["round_to"]
        new = int(math.ceil(need / unit) * unit) if need >= unit else int(math.ceil(need))
        new = max(new, freq + 1)
        if new > steps:       # never beyond the run's own length: one eval, at the end
            new = int(steps)
        key = "eval_freq" if "eval_freq" in config or "eval_steps" not in config else "eval_steps"
        ev = {key: freq, "steps": steps, "evals": int(n_evals),
              "eval_share": _r(share, 3) if share is not None else None}
        return self.finding("warn", ev, {key: new})


# ------------------------------------------------------------------ OT rules

def coupling_band(rules: dict) -> tuple[float, float]:
    """The coupling's band, one source for the plots, the assessment and the rules: ``[ot_weak.min_pi_diag,
    ot_strong.max_pi_diag]`` of rules.toml (below it ``ot_weak`` fires, above it sustained ``ot_strong`` does)."""
    return (rules.get("ot_weak", {}).get("min_pi_diag", 0.1), rules.get("ot_strong", {}).get("max_pi_diag", 0.4))


def coupling_key(ot) -> tuple[str, str]:
    """``(series key, name)`` of the coupling's strength: ``train/ot_pi_diag`` (the mass on the partner pairs), or
    under ``ot.prior=diagonal``, where ``pi_diag == pi_sum`` by construction, the plan mass ``train/ot_pi_sum``."""
    if ot.diagonal:
        return "train/ot_pi_sum", "plan mass pi_sum (diagonal prior: pi_diag = pi_sum by construction)"
    return "train/ot_pi_diag", "pi_diag"


@register
class OtWeak(Rule):
    """Median coupling (:func:`coupling_key`: pi_diag, or the mass under the diagonal prior) of the late window
    (of the points past ``after_step`` when there are any) below the threshold; warn once past ``after_step``, info
    before."""

    id = "ot_weak"
    group = "ot"
    monitors = ("train/ot_pi_diag", "train/ot_pi_sum", EVAL_KEY)

    def check(self, ctx):
        ot = cfgkeys.ot_settings(ctx.run.config)
        key, name = coupling_key(ot)
        series = ctx.series(key)
        if not series:
            return None
        after = self.thr["after_step"]
        mature_points = [p for p in series if p[0] >= after]
        win = ctx.late(mature_points or series)
        med = median(v for _, v in win)
        if med >= self.thr["min_pi_diag"]:
            return None
        lam, reg = ot.lambda_ot, ot.reg
        pr = self.propose
        changes = {}
        if ot.active:
            changes[cfgkeys.OT_LAMBDA] = _r(min(pr["lambda_ot_max_factor"] * lam,
                                                max(lam * pr["lambda_ot_min_factor"], pr["lambda_ot_target"])))
        if cfgkeys.is_number(reg):
            changes[cfgkeys.OT_REG] = _r(reg * pr["reg_factor"])
        mature = bool(mature_points)
        ev = {"coupling": name, "pi_diag_median": _r(med), "window_steps": f"{win[0][0]}-{win[-1][0]}",
              "threshold": self.thr["min_pi_diag"], "after_step": after, "reached_after_step": mature,
              "lambda_ot": lam, "reg": reg, "prior": ot.prior}
        frac = ctx.series("train/ot_pi_diag_frac")
        if frac and not ot.diagonal:
            ev["pi_diag_frac"] = _r(ctx.late_median(frac))
        return self.finding("warn" if mature else "info", ev, changes)


@register
class OtMassDestroyed(Rule):
    """Median pi_sum below the threshold: the unbalanced marginals destroy the mass."""

    id = "ot_mass_destroyed"
    group = "ot"
    monitors = ("train/ot_pi_sum", "train/ot_loss")

    def check(self, ctx):
        series = ctx.series("train/ot_pi_sum")
        if not series:
            return None
        med = ctx.late_median(series)
        low = self.thr["min_pi_sum"]
        if med >= low:
            return None
        ot = cfgkeys.ot_settings(ctx.run.config)
        reg, ts, tt = ot.reg, ot.tau_src, ot.tau_tgt
        ev = {"pi_sum_median": _r(med), "threshold": low, "reg": reg, "tau_src": ts, "tau_tgt": tt}
        if all(cfgkeys.is_number(x) for x in (reg, ts, tt)) and med > 0:
            ev["implied_cost"] = _r(-math.log(med) * (reg + ts + tt))   # mass = exp(-c / (reg + tau_src + tau_tgt))
        means = [ctx.series(k) for k in ctx.run.history if k.startswith(MEAN_COST_PREFIX)]
        if means:
            ev["mean_cost_total"] = _r(sum(ctx.late_median(s) for s in means if s))
        changes = {key: _r(self.propose["tau_factor"] * val)
                   for key, val in ((cfgkeys.OT_TAU_SRC, ts), (cfgkeys.OT_TAU_TGT, tt)) if cfgkeys.is_number(val)}
        return self.finding("alarm" if med < low * self.thr["alarm_frac"] else "warn", ev, changes)


@register
class OtStrong(Rule):
    """Coupling (:func:`coupling_key`) above the threshold in most of the late window, or (priors without the
    diagonal) pi_diag ≈ pi_sum: all mass on the partner pairs. Under the diagonal prior that equality holds by
    construction and is not evidence."""

    id = "ot_strong"
    group = "ot"
    monitors = ("train/ot_pi_diag", EVAL_KEY, "train/l1_loss")

    def check(self, ctx):
        ot = cfgkeys.ot_settings(ctx.run.config)
        key, name = coupling_key(ot)
        diag = ctx.series(key)
        if not diag:
            return None
        win = ctx.late(diag)
        top = self.thr["max_pi_diag"]
        above = sum(v > top for _, v in win) / len(win)
        med_diag = median(v for _, v in win)
        pisum = ctx.series("train/ot_pi_sum")
        ratio = None
        if pisum and not ot.diagonal:
            s = ctx.late_median(pisum)
            ratio = med_diag / s if s > 0 else None
        sustained = above >= self.thr["sustained_frac"]
        on_diag = ratio is not None and ratio > self.thr["diag_equals_sum"] and med_diag > top / 2
        if not (sustained or on_diag):
            return None
        changes = {key: _r(w * self.propose["weight_label_factor"])
                   for key, w in cfgkeys.feature_weights(ctx.run.config, "label").items()}
        if cfgkeys.is_number(ot.reg):
            changes[cfgkeys.OT_REG] = _r(ot.reg * self.propose["reg_factor"])
        ev = {"coupling": name, "pi_diag_median": _r(med_diag), "frac_above": _r(above, 3), "max_pi_diag": top,
              "pi_diag_over_pi_sum": "1 by construction" if ot.diagonal else (
                  _r(ratio, 3) if ratio is not None else None),
              "heuristic": ot.heuristic, "prior": ot.prior}
        return self.finding("warn", ev, changes)


@register
class CostDominance(Rule):
    """Largest per-term cost more than max_ratio × the next one; the weights of the dominant term's kind
    (:func:`term_kind`) are divided down."""

    id = "cost_dominance"
    group = "ot"

    def check(self, ctx):
        run = ctx.run
        prefix = cost_prefix(run.history)
        terms = {k[len(prefix):]: ctx.series(k) for k in run.history if k.startswith(prefix)}
        levels = {t: median(abs(v) for _, v in ctx.late(s)) for t, s in terms.items() if s}
        if len(levels) < 2:
            return None
        ranked = sorted(levels.items(), key=lambda kv: -kv[1])
        (top, a), (second, b) = ranked[0], ranked[1]
        ratio = a / b if b > 0 else math.inf
        if ratio <= self.thr["max_ratio"]:
            return None
        # bring the dominant term to ~target_ratio x the next one (or, next one ~0, its mean cost to ~target_cost)
        pr = self.propose
        factor = ratio / pr["target_ratio"] if math.isfinite(ratio) else a / pr["target_cost"]
        factor = min(max(factor, pr["min_factor"]), pr["max_factor"])
        kind = term_kind(run, top)
        changes = {}
        if kind in cfgkeys.FEATURE_WEIGHT:
            changes = {key: float(f"{w / factor:.2g}") for key, w in cfgkeys.feature_weights(run.config, kind).items()}
        ev = {"dominant": top, "dominant_kind": kind, "dominant_cost": _r(a), "next": second, "next_cost": _r(b),
              "ratio": _r(ratio, 3) if math.isfinite(ratio) else "inf", "metric": prefix.rstrip("/"),
              "levels": {t: _r(v) for t, v in levels.items()}}
        return self.finding("warn", ev, changes, [prefix + top, prefix + second])


@register
class EmbedCollapse(Rule):
    """Image-embedding cost and the embeddings' own spread both fall to a tiny fraction of their start.

    With a scale-dependent cost (``ot.cost_norm`` ``dim`` or ``none``) the OT loss on learned embeddings has a
    trivial minimizer: shrinking the embeddings (the next layers rescale them); BC alone can also make them
    near-constant (in the cpu-small study naive co-training, lambda_ot=0, shrank them as much, measured offline
    on its checkpoints). Either way the image terms fade and the labels alone decide the plan. Alignment lowers
    the cross-domain cost but not the within-domain spread (``train/ot_embed_spread/<camera>``), so both must
    collapse; runs without the spread metric are not judged. ``cost_norm=median`` divides each term by its
    batch median: scale-invariant. The embedding terms are those of kind ``embed`` (:func:`term_kind`).
    """

    id = "embed_collapse"
    group = "ot"

    def _drop(self, ctx, key):
        """(first, last, last/first): start = the first min_points points (the collapse can be over within a
        fifth of the run: in the cpu-small study the image cost fell 40x in the first 60 of 600 steps);
        end = the late window."""
        series = ctx.series(key)
        n0 = self.thr["min_points"]
        if len(series) < 2 * n0:
            return None
        first = median(v for _, v in series[:n0])
        last = ctx.late_median(series)
        return (_r(first), _r(last), _r(last / first, 3)) if first > 0 else None

    def check(self, ctx):
        norm = cfgkeys.ot_settings(ctx.run.config).cost_norm
        if norm in self.thr["skip_cost_norms"]:
            return None
        prefix, limit = MEAN_COST_PREFIX, self.thr["max_ratio"]
        collapsed, monitors = {}, []
        for key in ctx.run.history:
            term = key[len(prefix):]
            if not key.startswith(prefix) or term_kind(ctx.run, term) != "embed":
                continue
            cam = term.removeprefix("img_")
            spread_key = f"train/ot_embed_spread/{cam}"
            cost, spread = self._drop(ctx, key), self._drop(ctx, spread_key)
            if cost and spread and cost[2] < limit and spread[2] < limit:
                collapsed[cam] = {"cost_first_last_ratio": cost, "spread_first_last_ratio": spread}
                monitors.append((spread_key, key))
        if not collapsed:
            return None
        summary = ", ".join(f"{c}: cost x{v['cost_first_last_ratio'][2]}, spread x{v['spread_first_last_ratio'][2]}"
                            for c, v in collapsed.items())
        ev = {"cost_norm": norm, "max_ratio": limit, "cameras": collapsed, "summary": summary}
        mons = [s for s, _ in monitors] + [c for _, c in monitors]
        return self.finding("warn", ev, {cfgkeys.OT_COST_NORM: self.propose["cost_norm"]}, mons)


@register
class OtSkipped(Rule):
    """OT term skipped (non-finite cost or plan) more often than allowed."""

    id = "ot_skipped"
    group = "ot"
    monitors = ("train/ot_skipped",)

    def check(self, ctx):
        sk = ctx.series("train/ot_skipped")
        if not sk:
            return None
        total = max(v for _, v in sk)
        if total <= self.thr["max_skipped"]:
            return None
        return self.finding("alarm", {"ot_skipped": total, "last_step": sk[-1][0]})


@register
class OtNotConverged(Rule):
    """The Sinkhorn solve stopped at ``ot.max_iters`` before meeting ``ot.tol`` on more than ``max_share`` of the
    late window's steps (``train/ot_sinkhorn_maxed``: capped solves per log window, summed)."""

    id = "ot_not_converged"
    group = "ot"
    monitors = ("train/ot_sinkhorn_maxed", "train/ot_sinkhorn_iters")

    def check(self, ctx):
        maxed = ctx.series("train/ot_sinkhorn_maxed")
        if not maxed:
            return None
        late = ctx.late(maxed)
        before = len(maxed) - len(late)
        start = maxed[before - 1][0] if before > 0 else 0   # the late window's records cover steps (start, last]
        n_steps = late[-1][0] - start
        share = sum(v for _, v in late) / n_steps if n_steps > 0 else 0.0
        if share <= self.thr["max_share"]:
            return None
        iters = ctx.late(ctx.series("train/ot_sinkhorn_iters"))
        max_iters = cfgkeys.get(ctx.run.config, cfgkeys.OT_MAX_ITERS)
        ev = {"maxed_pct": _r(100 * min(share, 1.0), 3), "steps": f"{late[0][0]}-{late[-1][0]}",
              "median_iters": _r(median(v for _, v in iters)) if iters else None, "max_iters": max_iters}
        changes = {}
        if cfgkeys.is_number(max_iters) and max_iters > 0:
            changes[cfgkeys.OT_MAX_ITERS] = int(max_iters * self.propose["max_iters_factor"])
        return self.finding("warn", ev, changes)


# ------------------------------------------------------------------ dynamics rules

@register
class Instability(Rule):
    """grad_norm spikes, train/loss oscillation around its EMA (span = the late window) over the late
    window, or non-finite loss."""

    id = "instability"
    monitors = ("train/grad_norm", "train/loss")

    def check(self, ctx):
        run, thr = ctx.run, self.thr
        ev, sev = {}, None
        gn = ctx.summaries.get("train/grad_norm")
        if gn and len(gn.spikes) >= thr["min_spikes"]:
            ev["grad_norm_spikes"] = len(gn.spikes)
            ev["spike_examples"] = [[s, _r(v), _r(m)] for s, v, m in gn.spikes[:3]]
            sev = "warn"
        bad = sum(1 for _, v in run.history.get("train/loss", []) if not math.isfinite(v))
        if bad:
            ev["non_finite_loss"] = bad
            sev = "alarm"
        loss = ctx.series("train/loss")
        if len(loss) >= thr["min_points"]:
            vals = [v for _, v in loss]
            win = window_size(len(vals), ctx.frac, ctx.min_points)
            alpha, acc, resid = 2 / (win + 1), vals[0], []
            for v in vals:
                acc = alpha * v + (1 - alpha) * acc
                resid.append((v - acc, acc))
            tail = resid[-win:]
            level = median(abs(a) for _, a in tail)
            osc = pstdev([r for r, _ in tail]) / level if level > 0 else 0.0
            if osc > thr["max_loss_osc"]:
                ev["loss_oscillation"] = _r(osc, 3)
                sev = sev or "warn"
        if sev is None:
            return None
        changes = {}
        lr = cfgkeys.base_lr(run.config)
        if lr:
            changes = cfgkeys.lr_changes(run.config, _r(lr * self.propose["lr_factor"]))
        return self.finding(sev, ev, changes)


@register
class Divergence(Rule):
    """The loss went down, then blew up: the late window's mean of train/loss is above ``max_rise`` × the lowest
    earlier window's mean and above it by more than the noise (:func:`dpot.analysis.noise.rise_since_best`), or
    the loss turned non-finite after finite values. Proposes the base LR × ``lr_factor`` (a bounded step);
    rolled back as any candidate (objective worse than the parent's by more than ``[rollback] max_regression``)."""

    id = "divergence"
    monitors = ("train/loss", "train/grad_norm")

    def check(self, ctx):
        raw = ctx.run.history.get("train/loss", [])
        loss = ctx.series("train/loss")
        if len(loss) < self.thr["min_points"]:
            return None
        cmp = noise.rise_since_best(loss, ctx.frac, ctx.min_points, self.thr["alpha"])
        first_finite = next((i for i, (_, v) in enumerate(raw) if math.isfinite(v)), None)
        blown = first_finite is not None and any(not math.isfinite(v) for _, v in raw[first_finite:])
        low = cmp.before.mean if cmp is not None else None
        rise = cmp.after.mean / low if cmp is not None and low > 0 else None
        risen = rise is not None and rise > self.thr["max_rise"] and cmp.rose
        if not blown and not risen:
            return None
        late = ctx.late(loss)
        ev = {"loss_low": _r(low) if low is not None else None, "loss_late": _r(cmp.after.mean if cmp else
                                                                             median(v for _, v in late)),
              "rise": _r(rise, 3) if rise is not None else None, "max_rise": self.thr["max_rise"],
              "non_finite_after_finite": blown, "window_steps": f"{late[0][0]}-{late[-1][0]}",
              **(cmp.evidence("low", "late") if cmp is not None else {})}
        lr = cfgkeys.base_lr(ctx.run.config)
        changes = cfgkeys.lr_changes(ctx.run.config, _r(lr * self.propose["lr_factor"])) if lr else {}
        return self.finding("alarm", ev, changes)


@register
class Overfitting(Rule):
    """The offline eval loss rose beyond its own noise while train/loss kept falling: the late window's mean of
    ``eval/offline_eval/avg_loss`` is above the best earlier window's mean by more than the noise allows
    (:func:`dpot.analysis.noise.rise_since_best`: false alarms <= ``alpha`` on a flat, noisy curve) and by at least
    ``min_rise`` of it, while train/loss's late-window mean is below its mean over the best window's steps.
    Proposes the weight decay (``optimizer.weight_decay``, or ``policy.optimizer_weight_decay`` under the policy
    preset) × ``weight_decay_factor`` (at most ``max_weight_decay``; from ``min_weight_decay`` when it is 0);
    evidence names the windows, the noise and the rise in noise units, and the best window's centre step (its
    checkpoint is the one to keep). Rolled back as any candidate (``[rollback] max_regression``)."""

    id = "overfitting"
    monitors = (EVAL_KEY, "train/loss")

    def check(self, ctx):
        ev_s, loss = ctx.series(EVAL_KEY), ctx.series("train/loss")
        if len(ev_s) < self.thr["min_points"] or len(loss) < self.thr["min_points"]:
            return None
        cmp = noise.rise_since_best(ev_s, ctx.frac, ctx.min_points, self.thr["alpha"])
        if cmp is None or cmp.before.mean <= 0 or not cmp.rose or cmp.rel < self.thr["min_rise"]:
            return None
        near = [v for s, v in loss if cmp.before.start <= s <= cmp.before.end]
        if not near:   # train/loss logged more sparsely than the eval: its points up to the window's end
            near = [v for s, v in loss if s <= cmp.before.end][-window_size(len(loss), ctx.frac, ctx.min_points):]
        late_train = sum(v for _, v in ctx.late(loss)) / len(ctx.late(loss))
        if not near or late_train >= sum(near) / len(near):
            return None
        ev = {**cmp.evidence(), "rise_pct": _r(100 * cmp.rel, 3), "best_step": cmp.before.centre,
              "train_at_best": _r(sum(near) / len(near)), "late_train": _r(late_train)}
        changes = {}
        for key in cfgkeys.weight_decay_keys(ctx.run.config):
            wd = cfgkeys.get(ctx.run.config, key)
            new = max(self.propose["min_weight_decay"], wd * self.propose["weight_decay_factor"])
            new = min(self.propose["max_weight_decay"], new)
            if new > wd:
                changes[key] = _r(new)
        return self.finding("warn", ev, changes)


@register
class ScheduleMismatch(Rule):
    """A varying LR schedule that cannot do within the run what its config says: its warmup is at least
    ``max_warmup_frac`` of the run's steps (a warmup as long as the run never reaches the base LR, and leaves no
    decay), or the logged train/lr never reaches ``min_reached`` × the base LR. Proposes the warmup cut to
    ``target_warmup_frac`` of the steps (at least 1), on the key that holds it; rolled back as any candidate."""

    id = "schedule_mismatch"
    monitors = ("train/lr",)

    def check(self, ctx):
        config = ctx.run.config
        sch = cfgkeys.schedule(config)
        steps = cfgkeys.get(config, cfgkeys.STEPS)
        if sch is None or not sch["varies"] or not isinstance(steps, int) or steps <= 0:
            return None          # a constant schedule ignores its warmup
        warmup = sch["warmup"] if isinstance(sch["warmup"], int) else 0
        lr = ctx.series("train/lr")
        base = cfgkeys.base_lr(config)
        reached = max(v for _, v in lr) / base if lr and base else None
        long_warmup = warmup >= self.thr["max_warmup_frac"] * steps
        never = reached is not None and len(lr) >= self.thr["min_points"] and reached < self.thr["min_reached"]
        if not (long_warmup or never):
            return None
        ev = {"warmup": warmup, "steps": steps, "warmup_frac": _r(warmup / steps, 3),
              "lr_reached_frac": _r(reached, 3) if reached is not None else None,
              "scheduler": f"{sch['type']}/{sch['name']}"}
        key = cfgkeys.SCHEDULER_WARMUP if isinstance(config.get(cfgkeys.SCHEDULER), dict) else cfgkeys.POLICY_WARMUP
        new = max(1, round(self.propose["target_warmup_frac"] * steps))
        changes = {key: new} if warmup > new else {}
        return self.finding("alarm" if warmup >= steps else "warn", ev, changes)


@register
class Plateau(Rule):
    """Diminishing returns: the first half fell beyond the noise and the second half gains less than
    ``late_gain_frac`` of it (levels = window means at the start, the middle and the end, windows of the late
    window's length; the first half's fall judged by :func:`dpot.analysis.noise.compare`, so a flat, noisy curve
    is no plateau of a fall that never happened)."""

    id = "plateau"

    def check(self, ctx):
        min_points = self.thr["min_points"]
        key = EVAL_KEY if len(ctx.run.history.get(EVAL_KEY, [])) >= min_points else "train/loss"
        series = ctx.series(key)
        if len(series) < min_points:
            return None
        h = len(series) // 2
        w = window_size(len(series), ctx.frac, ctx.min_points)
        start = noise.Window.of(series[:w])
        mid = noise.Window.of(series[max(0, h - w // 2):h - w // 2 + w])
        end = noise.Window.of(series[len(series) - w:])
        sd = noise.noise_sd([v for _, v in series])
        first = noise.compare(start, mid, sd, alpha=self.thr["alpha"], n_noise=len(series))
        gain1, gain2 = start.mean - mid.mean, mid.mean - end.mean
        if not first.fell or gain2 >= self.thr["late_gain_frac"] * gain1:
            return None
        se2 = noise.compare(mid, end, sd).se
        ev = {"metric": key, "first_half_gain": _r(gain1), "second_half_gain": _r(gain2),
              "steps": f"{series[0][0]}-{series[h][0]}-{series[-1][0]}", "noise_sd": _r(sd),
              "first_half_gain_noise_units": _r(-first.z, 3),
              "second_half_gain_noise_units": _r(gain2 / se2, 3) if se2 > 0 else None}
        return self.finding("info", ev, monitors=[key])


@register
class Rollback(Rule):
    """The late window's mean eval loss worse than the parent run's late-window mean by more than
    ``max_regression`` AND by more than the two runs' noise (:func:`dpot.analysis.noise.compare`, one-sided at
    ``alpha``)."""

    id = "rollback"
    group = "rollback"
    monitors = (EVAL_KEY,)

    def check(self, ctx):
        parent = ctx.parent_run
        if parent is None:
            return None
        mine, theirs = ctx.series(EVAL_KEY), ctx.series(EVAL_KEY, parent)
        if not mine or not theirs:
            return self.finding("info", {"parent": parent.run_id, "metric": EVAL_KEY, "child_logged": bool(mine),
                                         "parent_logged": bool(theirs)}, id="rollback_unchecked")
        child, par = noise.Window.of(ctx.late(mine)), noise.Window.of(ctx.late(theirs))
        cmp = noise.compare(par, child, noise.noise_sd([v for _, v in theirs]), alpha=self.thr["alpha"],
                            noise_after=noise.noise_sd([v for _, v in mine]), n_noise=min(len(mine), len(theirs)))
        reg = cmp.change / abs(par.mean) if par.mean else 0.0
        if reg <= self.thr["max_regression"] or not cmp.rose:
            return None
        changes = {}
        flat_p, flat_c = cfgkeys.flatten(parent.config), cfgkeys.flatten(ctx.run.config)
        for k in sorted(set(flat_p) | set(flat_c)):
            if k.split(".")[0] in self.thr["ignore_keys"]:
                continue
            if flat_p.get(k) != flat_c.get(k) and k in flat_p:
                changes[k] = flat_p[k]
        ev = {"parent": parent.run_id, "child_eval": _r(child.mean), "parent_eval": _r(par.mean),
              **cmp.evidence("parent", "child"),
              "regression_pct": _r(100 * reg, 3), "threshold_pct": 100 * self.thr["max_regression"],
              "reverted_keys": sorted(changes)[:12]}
        return self.finding("alarm", ev, changes)


def build_rules(rules: dict) -> list[Rule]:
    """The enabled rules of :data:`RULES`, each built with its table of ``rules`` (see :func:`load_rules`)."""
    return [cls(rules.get(rid, {}), rules) for rid, cls in RULES.items() if rules.get(rid, {}).get("enabled", True)]


def bound_steps(finding: Finding, config: dict, step: dict) -> Finding:
    """Cut each numeric change of a tuned key (``step.bounded`` globs) to one person's step towards it
    (:func:`dpot.analysis.steps.person_step`, at most ×``step.max_factor``); the full value goes to
    ``finding.targets``. Rollbacks (the parent's values) are left as they are."""
    if finding.group == "rollback":
        return finding
    for key, target in list(finding.changes.items()):
        old = cfgkeys.get(config, key)
        if not (cfgkeys.is_number(old) and cfgkeys.is_number(target) and old > 0 and target > 0
                and is_bounded(key, step["bounded"])):
            continue
        new = person_step(float(old), float(target), step["max_factor"])
        if new != target:
            finding.changes[key] = new
            finding.targets[key] = target
    return finding


def diagnose(ctx: RuleContext, rules: dict) -> list[Finding]:
    """Run every enabled rule on ``ctx``; findings sorted alarm → warn → info (registration order within).
    Changes are bounded steps (:func:`bound_steps`) except those of rules that move a value into its usual
    range (``into_range``: e.g. an LR far outside that range moves into it in one proposal)."""
    step = rules.get("step") or {"max_factor": 4.0, "bounded": []}
    out = []
    for rule in build_rules(rules):
        f = rule.check(ctx)
        if f is not None:
            out.append(f if rule.into_range else bound_steps(f, ctx.run.config, step))
    order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
    return sorted(out, key=lambda f: order[f.severity])
