"""The autopilot's rules as pure functions: the seed's rollback triggers (:func:`decide`), the LR-halved retry,
successive-halving budgets, the candidate values recorded as Optuna params, the memory of moves that had no effect
(:func:`inert_moves`) and the one-step exploration moves used once the diagnoses are spent (:func:`explore_moves`)."""

from __future__ import annotations

import math
from typing import NamedTuple

from dpot.analysis import cfgkeys
from dpot.autopilot import runs, spec


class ParamRange(NamedTuple):
    """An Optuna float distribution: the config ``key`` it reads, ``low``..``high``, on a ``log`` scale or not."""

    key: str
    low: float
    high: float
    log: bool


# The distributions under which a candidate's values are recorded as its trial's (fixed) params, so that Optuna's
# samplers and plots can read them. The names are those of the TPE / random baselines in benchmarks/autopilot.py,
# which search narrower ranges of their own; these are wide on purpose: a diagnosis may go outside any prior.
SPACE = {"lr": ParamRange("lr", 1e-8, 10.0, True), "ot.lambda_ot": ParamRange("ot.lambda_ot", 0.0, 100.0, False),
         "ot.reg": ParamRange("ot.reg", 1e-5, 100.0, True)}


def space_params(cfg: dict) -> dict:
    """The candidate config's values of :data:`SPACE` (recorded as the trial's params)."""
    out = {}
    for name, (key, lo, hi, _) in SPACE.items():
        if name == "lr":
            keys = spec.lr_keys(cfg)
            val = cfgkeys.get(cfg, keys[0]) if keys else None
        else:
            val = cfgkeys.get(cfg, key)
        if cfgkeys.is_number(val) and lo <= float(val) <= hi:
            out[name] = float(val)
    return out


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


def decide(*, kind: str, final: bool, failed: bool, pruned: bool, objective: float | None,
           regression: float | None, findings: list[str], max_regression: float) -> str:
    """The decision on one finished trial (the seed's rollback triggers; see the module docstring):
    failed | pruned | halving (a short successive-halving rung) | kept | retried | rolled_back."""
    if failed:
        return "failed"
    if pruned:
        return "pruned"
    if not final:
        return "halving"
    if kind == "base":
        return "kept"
    unstable = not runs.is_finite(objective) or "instability" in findings
    if unstable and kind != "retry":
        return "retried"
    if not runs.is_finite(objective) or (regression is not None and regression > max_regression):
        return "rolled_back"
    return "kept"


def scale_lr(cfg: dict, factor: float) -> tuple[dict, dict]:
    """``cfg`` with its base learning rate(s) times ``factor``, and ``{key: new value}`` of what changed."""
    changed = {}
    for key in spec.lr_keys(cfg):
        lr = cfgkeys.get(cfg, key)
        if cfgkeys.is_number(lr):
            cfg = cfgkeys.set_(cfg, key, lr * factor)
            changed[key] = lr * factor
    return cfg, changed


# A change whose run moved the objective by at most this fraction of the parent's objective had no measurable
# effect (a seeded run repeats to ~1e-7; the autopilot benchmark saw label-weight changes leave it equal to 7 digits).
INERT_REL = 1e-4


def move_direction(old, new) -> int:
    """+1 / -1 when a number went up / down, 0 for any other change (a switch, a string, a list)."""
    if cfgkeys.is_number(old) and cfgkeys.is_number(new):
        return (new > old) - (new < old)
    return 0


def inert_moves(records, rel_tol: float = INERT_REL) -> dict[tuple[str, int], str]:
    """``{(key, direction): run}`` for every leaf change of a finished candidate that left the objective
    unchanged: ``|objective - parent_objective| <= rel_tol * |parent_objective|``. ``records`` are trial user
    attributes (``name``, ``kind``, ``changes`` = {key: [old, new]}, ``objective``, ``parent_objective``,
    ``decision``); only full-budget candidates that were kept or rolled back count."""
    out: dict[tuple[str, int], str] = {}
    for a in records:
        obj, par = a.get("objective"), a.get("parent_objective")
        if (a.get("kind") != "candidate" or a.get("decision") not in ("kept", "best", "rolled_back")
                or not (runs.is_finite(obj) and runs.is_finite(par))):
            continue
        if abs(obj - par) <= rel_tol * abs(par):
            for key, (old, new) in (a.get("changes") or {}).items():
                out.setdefault((key, move_direction(old, new)), a["name"])
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
    ot = cfg.get("ot") if isinstance(cfg.get("ot"), dict) else {}
    keys = [("ot.lambda_ot", "lambda_ot")]
    if ot.get("method", "uot") != "mmd":
        keys.append(("ot.reg", "reg"))
    for key, short in keys:
        val = cfgkeys.get(cfg, key)
        if not cfgkeys.is_number(val) or val <= 0:
            continue
        for factor, word in ((2.0, "up"), (0.5, "down")):
            new = cfgkeys.set_(cfg, key, val * factor)
            out.append((f"explore_{short}_{word}", f"explore: {short} x{factor:g}", new))
    return out
