"""The one "late window" every diagnosis rule judges a curve on.

A series of ``n`` logged points has a late window of ``window_size(n) = min(n, max(min_points,
round(frac * n)))`` points: its last ``frac`` (default 20 %), never fewer than ``min_points`` (default 3) so
that a median over it means something on short runs. The defaults live in ``rules.toml`` (``[window]``).
"""

from __future__ import annotations

LATE_FRAC = 0.2
MIN_POINTS = 3


def window_size(n: int, frac: float = LATE_FRAC, min_points: int = MIN_POINTS) -> int:
    """Points in the late window of ``n`` points: ``min(n, max(min_points, round(frac * n)))``."""
    return min(n, max(min_points, int(round(n * frac))))


def late_window[T](series: list[T], frac: float = LATE_FRAC, min_points: int = MIN_POINTS) -> list[T]:
    """The last ``window_size(len(series), frac, min_points)`` items of ``series``."""
    return series[len(series) - window_size(len(series), frac, min_points):]
