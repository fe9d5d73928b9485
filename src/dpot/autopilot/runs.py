"""The objective of a dpot run, from its logged metrics (read by :mod:`dpot.metrics_log`; checkpoints and "finished":
:mod:`dpot.rundir`).

The objective of a run at a budget ``b`` is the last finite value of the objective metric logged at a step
``<= b`` (the value of the checkpoint one keeps); a run's *best* is the min (or max) over those values.
"""

from __future__ import annotations

import math


def _float(v) -> float:
    try:
        return float(v)     # the trainer writes non-finite values as the strings "nan" / "inf"
    except (TypeError, ValueError):
        return math.nan


def series(rows: list[dict], key: str, max_step: int | None = None) -> list[tuple[int, float]]:
    """``(step, value)`` of ``key`` in logging order, up to ``max_step``; a resumed run's repeated steps keep
    the last value written."""
    out: dict[int, float] = {}
    for row in rows:
        step = int(row["step"])
        if key in row and (max_step is None or step <= max_step):
            out[step] = _float(row[key])
    return sorted(out.items())


def logged_keys(rows: list[dict]) -> list[str]:
    """Sorted metric names logged by a run."""
    return sorted({k for row in rows for k in row if k != "step"})


def objective_value(points: list[tuple[int, float]]) -> float | None:
    """The last logged value (``nan`` when the run diverged to non-finite values), None when nothing logged."""
    if not points:
        return None
    return points[-1][1]


def best_value(points: list[tuple[int, float]], direction: str) -> float | None:
    """Best finite value over the run (min or max); None when there is none."""
    vals = [v for _, v in points if math.isfinite(v)]
    if not vals:
        return None
    return min(vals) if direction == "min" else max(vals)


def is_finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)
