"""Bounded proposal steps: a proposal moves a tuned value the way a person does, one bounded step at a time.

A rule says where a value should end up (its *target*); the next run gets one step towards it. Within
``×max_factor`` of the current value the step is the target itself; further away it is the "round" value
(``{1, 2, 3, 5} × 10^k``) nearest the bound on the current value's side: ``weight_label`` 0.05 → 0.02 → 0.005
with ``max_factor = 4`` (docs/architecture.md, "Where the rules' numbers come from"). The rationale says how many
such steps remain to the target if the next run confirms the direction.
"""

from __future__ import annotations

import fnmatch
import math

ROUND_MANTISSAS = (1.0, 2.0, 3.0, 5.0)


def _round_values(lo: float, hi: float) -> list[float]:
    """Round values ``{1, 2, 3, 5} × 10^k`` in ``[lo, hi]`` (``0 < lo <= hi``), ascending."""
    out = []
    for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        for m in ROUND_MANTISSAS:
            v = float(f"{m:g}e{k}")
            if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9):
                out.append(v)
    return out


def person_step(old: float, target: float, max_factor: float) -> float:
    """One step from ``old`` towards ``target`` (both > 0): ``target`` when ``max(old/target, target/old) <=
    max_factor``, else the round value furthest from ``old`` within ``×max_factor`` of it (the bound itself,
    to 2 significant digits, when no round value lies between)."""
    if old <= 0 or target <= 0 or max(old / target, target / old) <= max_factor * (1 + 1e-9):
        return target
    if target < old:
        bound = old / max_factor
        cands = _round_values(bound, old)
        new = cands[0] if cands and cands[0] < old else bound
    else:
        bound = old * max_factor
        cands = _round_values(old, bound)
        new = cands[-1] if cands and cands[-1] > old else bound
    return float(f"{new:.2g}")


def steps_to(old: float, target: float, max_factor: float) -> int:
    """Number of ``×max_factor`` steps from ``old`` to ``target`` (0 when equal; both > 0)."""
    if old <= 0 or target <= 0 or old == target:
        return 0
    return max(1, math.ceil(abs(math.log(target / old)) / math.log(max_factor) - 1e-9))


def is_bounded(key: str, patterns) -> bool:
    """Whether dotted config ``key`` is a tuned value whose moves are bounded (matches a glob of ``patterns``)."""
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)
