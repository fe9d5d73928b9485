"""The autopilot's rules as pure functions: the rollback triggers (:func:`decide`), closing an iteration
(:func:`close_iteration`: the best kept run becomes the next parent), the stop rules (:func:`stop_reason`), the
runs to fall back on (:func:`kept_runs`), the LR-halved retry, successive-halving budgets, the memory of moves
that had no effect (:func:`inert_moves`) and the one-step exploration moves used once the diagnoses are spent
(:func:`explore_moves`). The search space and the params every trial records: :mod:`.space`."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

from dpot import metric_names as mn
from dpot.analysis import cfgkeys, noise
from dpot.analysis.windows import late_window
from dpot.autopilot import runs
from dpot.autopilot.record import BASE_RUN, Decision, IterationRecord, Kind, TrialRecord
from dpot.autopilot.spec import Objective

# A change whose run moved the objective by at most this fraction of the parent's objective had no measurable
# effect (a seeded run repeats to ~1e-7; the autopilot benchmark saw label-weight changes leave it equal to 7 digits).
INERT_REL = 1e-4


# The OT term's share of the training loss below which changing OT settings cannot move a BC objective (the autopilot
# benchmark: at 0.01 % every label-weight / reg change left the offline eval loss equal to 7 digits). Candidates that
# change only OT settings are passed over on such a parent; the sampler then searches the LR alone.
OT_NEGLIGIBLE = 1e-3


# The diagnoses that call a curve broken, with the severities that do, and what each means: a candidate whose
# partial run one of them fires on is stopped at that evaluation (Decision.PRUNED), however its objective looks
# against the other trials' (Optuna's pruner, the baseline mechanism, judges only that). Each is judged on the run so
# far by ``dpot report``: the curve's own verdicts (divergence, the stall of a far-too-high LR) and the config's that
# no step fixes (a warmup as long as the run, a varying schedule logged flat).
BROKEN_CURVE: dict[str, tuple[tuple[str, ...], str]] = {
    "divergence": (("alarm",), "diverging"),
    "lr_high": (("alarm",), "stalled at a far-too-high LR"),
    "lr_flat": (("warn",), "a varying LR schedule logged flat"),
    "schedule_mismatch": (("alarm",), "the warmup never finishes within the run"),
}


def broken_curve(findings: Iterable[dict]) -> dict | None:
    """The first finding of ``dpot report --json`` that calls a run's curve broken (:data:`BROKEN_CURVE`: its id
    with one of the listed severities), or None."""
    for f in findings:
        rule = BROKEN_CURVE.get(f.get("id"))
        if rule is not None and f.get("severity") in rule[0]:
            return f
    return None


def ot_share(rows: list[dict]) -> float | None:
    """The OT term's share of the training loss late in a run: the median of ``train/ot_loss / train/loss`` over
    the late window (:func:`dpot.analysis.windows.late_window`, the one every diagnosis judges on) of the steps that
    log both: the λ-weighted term the trainer adds to the BC loss, ``train/ot_loss_scaled`` (a run written before
    the fork's metric meanings logged it as ``train/ot_loss``: :mod:`dpot.metric_names`). None when the run logs
    neither or its loss is not positive."""
    scaled = mn.train(mn.OT_LOSS_SCALED)
    ot = dict(runs.series(rows, scaled if any(scaled in r for r in rows) else mn.train(mn.OT_LOSS)))
    late = late_window([(ot[s], v) for s, v in runs.series(rows, "train/loss") if s in ot])
    shares = [o / v for o, v in late if math.isfinite(o) and math.isfinite(v) and v > 0]
    return statistics.median(shares) if shares else None


def only_ot_changes(keys: Iterable[str]) -> bool:
    """True when every changed dotted key is an OT setting (``ot.*``) and there is at least one."""
    keys = list(keys)
    return bool(keys) and all(k == cfgkeys.OT or k.startswith(cfgkeys.OT + ".") for k in keys)


def sh_budgets(n: int, steps: int) -> list[int]:
    """Successive-halving budgets for ``n`` candidates (eta = 2): ``[S]`` for n <= 2, else
    ``[S/2^R, ..., S/2, S]`` with ``R = floor(log2 n)`` rungs below the full budget; rung r keeps the best
    ``max(1, n_r // 2)`` candidates (n_0 = n)."""
    if n <= 2:
        return [steps]
    r = max(1, int(math.floor(math.log2(n))))
    while r > 0 and steps // (2 ** r) < 1:
        r -= 1
    return [steps // (2 ** (r - i)) for i in range(r)] + [steps]


def beyond_noise(diff: float, noise_a: float | None, noise_b: float | None, alpha: float = noise.ALPHA) -> bool:
    """Whether a difference ``diff`` (> 0) between two runs' objectives exceeds their noise: ``diff > z sqrt(
    noise_a^2 + noise_b^2)`` with ``z = Phi^-1(1 - alpha)`` (one-sided; each objective is one point of a series
    with that per-point noise sd). True when a noise is unknown (the relative thresholds then decide alone)."""
    if noise_a is None or noise_b is None:
        return True
    return diff > noise.z_needed(1, alpha) * math.sqrt(noise_a ** 2 + noise_b ** 2)


def decide(*, kind: Kind, final: bool, failed: bool, pruned: bool, objective: float | None,
           regression: float | None, findings: list[str], max_regression: float,
           regression_beyond_noise: bool = True) -> Decision:
    """The decision on one finished trial (the rollback triggers):

    failed training -> ``FAILED``; stopped by the pruner -> ``PRUNED``; a short successive-halving rung ->
    ``HALVING``; the base run -> ``KEPT``; a non-finite objective or the ``instability`` finding -> ``RETRIED``
    (once: a retry is not retried); a non-finite objective or ``regression > max_regression`` beyond the two runs'
    noise (``regression_beyond_noise``: :func:`beyond_noise`) -> ``ROLLED_BACK``; else ``KEPT``.

    Args:
        kind: the trial's kind.
        final: the trial trained the full budget.
        failed, pruned: training exited with an error / was stopped by the pruner.
        objective: the run's objective (None: nothing logged).
        regression: relative worsening against the parent's best (:meth:`Objective.regression`), None if unknown.
        findings: rule ids ``dpot report`` found on the run.
        max_regression: the rollback tolerance (``--max_regression``).
        regression_beyond_noise: the worsening exceeds the two runs' noise (True when unknown).
    Returns:
        The :class:`Decision`.
    """
    if failed:
        return Decision.FAILED
    if pruned:
        return Decision.PRUNED
    if not final:
        return Decision.HALVING
    if kind == Kind.BASE:
        return Decision.KEPT
    unstable = not runs.is_finite(objective) or "instability" in findings
    if unstable and kind != Kind.RETRY:
        return Decision.RETRIED
    if not runs.is_finite(objective) or (regression is not None and regression > max_regression
                                         and regression_beyond_noise):
        return Decision.ROLLED_BACK
    return Decision.KEPT


def final_trial(records: Iterable[TrialRecord], name: str, steps: int) -> TrialRecord | None:
    """The last trial of run ``name`` that trained the full budget ``steps`` (records in trial order), or None."""
    last = None
    for r in records:
        if r.name == name and r.budget >= steps:
            last = r
    return last


def final_objective(records: Iterable[TrialRecord], name: str, steps: int) -> tuple[float | None, Decision | None]:
    """``(objective, decision)`` of run ``name`` at the full budget; ``(None, None)`` before it got there. A
    non-finite objective reads as None."""
    r = final_trial(records, name, steps)
    if r is None:
        return None, None
    return r.final_objective, r.decision


def _noise(records: Iterable[TrialRecord], name: str, steps: int) -> float | None:
    r = final_trial(records, name, steps)
    return None if r is None else r.objective_noise


def kept_runs(records: list[TrialRecord], steps: int, objective: Objective, among: Iterable[str] | None = None
              ) -> list[tuple[float, str]]:
    """``(objective, name)`` of the runs kept at the full budget with a finite objective, best first (ties by
    name). ``among``: only these runs (default every run)."""
    names = sorted({r.name for r in records} if among is None else set(among))
    out = []
    for name in names:
        obj, decision = final_objective(records, name, steps)
        if decision == Decision.KEPT and obj is not None:
            out.append((obj, name))
    out.sort(reverse=objective.direction == "max")
    return out


def close_iteration(it: int, records: list[TrialRecord], previous: dict[int, IterationRecord], steps: int,
                    objective: Objective) -> IterationRecord:
    """Close iteration ``it``: its best kept run becomes the next parent when it beats the parent by more than a
    no-effect change does (``regression < -INERT_REL``) and by more than the two runs' noise (:func:`beyond_noise`
    on their ``objective_noise``), else the parent stays.

    Args:
        it: the iteration (0 = the base run).
        records: every trial of the search, in trial order.
        previous: the records of the iterations closed before (``it - 1`` at least, when ``it > 0``).
        steps: the full budget.
        objective: the search's objective.
    Returns:
        The :class:`IterationRecord`.
    """
    if it == 0:
        obj, _ = final_objective(records, BASE_RUN, steps)
        return IterationRecord(parent=None, best=BASE_RUN, next_parent=BASE_RUN, best_objective=obj, global_best=obj)
    parent = previous[it - 1].next_parent
    parent_obj, _ = final_objective(records, parent, steps)
    kept = kept_runs(records, steps, objective, among={r.name for r in records if r.iteration == it})
    best = kept[0] if kept else None
    nxt = parent
    if best is not None and (parent_obj is None or (
            objective.regression(best[0], parent_obj) < -INERT_REL
            and beyond_noise(abs(best[0] - parent_obj), _noise(records, best[1], steps), _noise(records, parent,
                                                                                                  steps)))):
        nxt = best[1]                 # beats the parent by more than a no-effect change does, and than the noise
    glob = previous[it - 1].global_best
    if best is not None and (glob is None or objective.better(best[0], glob)):
        glob = best[0]
    return IterationRecord(parent=parent, best=nxt if nxt != parent else None, next_parent=nxt,
                           parent_objective=parent_obj, best_objective=best[0] if best else None, global_best=glob)


def stop_reason(it: int, closed: dict[int, IterationRecord], iterations: int, patience: int, min_delta: float,
                objective: Objective) -> str | None:
    """Why the search stops after iteration ``it``, None when it goes on: ``iterations`` done, or a plateau (the
    best objective improved by less than ``min_delta``, relative, over the last ``patience`` iterations; 0 =
    never)."""
    if it >= iterations:
        return f"{iterations} iteration(s) done"
    if patience > 0 and it >= patience and it - patience in closed:
        old, new = closed[it - patience].global_best, closed[it].global_best
        if old is not None and new is not None:
            gain = objective.regression(old, new)    # relative improvement of new over old
            if gain < min_delta:
                return f"plateau: best {objective.key} improved by {gain * 100:.2f}% over the last {patience} " \
                       f"iteration(s) (< {min_delta * 100:g}%)"
    return None


def scale_lr(cfg: dict, factor: float) -> tuple[dict, dict]:
    """``cfg`` with its base learning rate(s) times ``factor``, and ``{key: new value}`` of what changed."""
    changed = {}
    for key in cfgkeys.lr_keys(cfg):
        lr = cfgkeys.get(cfg, key)
        if cfgkeys.is_number(lr):
            cfg = cfgkeys.set_(cfg, key, lr * factor)
            changed[key] = lr * factor
    return cfg, changed


def move_direction(old, new) -> int:
    """+1 / -1 when a number went up / down, 0 for any other change (a switch, a string, a list)."""
    if cfgkeys.is_number(old) and cfgkeys.is_number(new):
        return (new > old) - (new < old)
    return 0


def inert_moves(records: Iterable[TrialRecord], rel_tol: float = INERT_REL) -> dict[tuple[str, int], str]:
    """``{(key, direction): run}`` for every leaf change (``changes`` = {key: [old, new]}) of a finished candidate
    that left the objective unchanged: ``|objective - parent_objective| <= rel_tol * |parent_objective|``. Only
    candidates that were kept or rolled back (at the full budget) count."""
    out: dict[tuple[str, int], str] = {}
    for r in records:
        obj, par = r.final_objective, r.parent_objective
        if (r.kind != Kind.CANDIDATE or r.decision not in (Decision.KEPT, Decision.ROLLED_BACK)
                or not (runs.is_finite(obj) and runs.is_finite(par))):
            continue
        if abs(obj - par) <= rel_tol * abs(par):
            for key, (old, new) in r.changes.items():
                out.setdefault((key, move_direction(old, new)), r.name)
    return out


def repeats_inert(changes: dict, inert: dict[tuple[str, int], str]) -> str | None:
    """The run that showed every move of ``changes`` ({key: [old, new]}) to be without effect, or None when
    some move is new (a proposal that only repeats no-effect moves is not worth a run)."""
    seen = [inert.get((k, move_direction(o, n))) for k, (o, n) in changes.items()]
    return seen[0] if changes and all(seen) else None


def explore_moves(cfg: dict) -> list[tuple[str, str, dict]]:
    """One-step moves around ``cfg`` for when no diagnosis is left to act on: the base LR, ``ot.lambda_ot``
    (when > 0) and ``ot.reg`` (not for ``ot.method=mmd``, which has no plan), each x2 and /2 (bounded, round
    steps, as the rules take: analysis/steps.py), as ``(name, title, config)``, LR first."""
    out = []
    for factor, word in ((2.0, "up"), (0.5, "down")):
        new, changed = scale_lr(cfg, factor)
        if changed:
            out.append((f"explore_lr_{word}", f"explore: lr x{factor:g}", new))
    keys = [(cfgkeys.OT_LAMBDA, "lambda_ot")]
    if cfgkeys.ot_settings(cfg).has_plan:
        keys.append((cfgkeys.OT_REG, "reg"))
    for key, short in keys:
        val = cfgkeys.get(cfg, key)
        if not cfgkeys.is_number(val) or val <= 0:
            continue
        for factor, word in ((2.0, "up"), (0.5, "down")):
            new = cfgkeys.set_(cfg, key, val * factor)
            out.append((f"explore_{short}_{word}", f"explore: {short} x{factor:g}", new))
    return out
