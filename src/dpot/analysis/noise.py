"""Noise-aware comparisons of a logged series' levels: every rule that says a curve rose, fell, stalled or
regressed judges window means against the series' own noise, not one lucky point.

A held-out diffusion loss is a random-timestep denoising loss on a few episodes: its points scatter by ~10 % around
their level, and the minimum of 40 such points sits ~2 sd below their mean, so "the best value vs the late level"
calls a flat curve a rise. Here:

- **windows**: the late window (:func:`dpot.analysis.windows.late_window`: the last 20 %, at least 3 points, so
  its length follows the logging rate) and, before it, non-overlapping windows of the same length, aligned to end
  where the late window starts;
- **noise** ``sigma``: the per-point noise sd estimated from the series itself, ``1.4826 * MAD(diff) / sqrt(2)``
  (first differences cancel a slow trend; the median absolute deviation ignores the few large steps of an early
  drop);
- **the test**: a change between two window means ``m_b`` (``w_b`` points) and ``m_l`` (``w_l`` points) is decided
  when ``(m_l - m_b) / se > z`` with ``se = sigma * sqrt(1 / w_b + 1 / w_l)``. When ``m_b`` is the best of ``k``
  candidate windows, ``z = Phi^-1(1 - alpha / k)`` (Bonferroni over the candidates); with one fixed window,
  ``z = Phi^-1(1 - alpha)``; either widened to a Student-t quantile for the sd's effective degrees of freedom
  (:func:`z_needed`).

False-alarm rate: on a flat series with independent noise the chance that any candidate window clears the bar is
at most ``alpha`` (default 0.05) by the union bound, up to the error of estimating ``sigma`` from the series
(the t-quantile of :func:`z_needed` absorbs most of it: benchmarks/noise_rules.py measured 0–5.0 % false alarms
per rule over 400 seeds at 20–100 points and 5–25 % noise, docs/benchmarks.md "Noise-aware diagnoses"). A change
is also required to matter (each rule's relative threshold, e.g. ``overfitting.min_rise``): both tests must pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist, median

from dpot.analysis.windows import LATE_FRAC, MIN_POINTS, window_size

__all__ = ["ALPHA", "Window", "Comparison", "noise_sd", "windows", "z_needed", "compare", "rise_since_best",
           "fall_since_start", "verdict_bands"]

ALPHA = 0.05
MAD_TO_SD = 1.4826          # sd of a normal distribution = 1.4826 x its median absolute deviation


@dataclass(frozen=True)
class Window:
    """``n`` consecutive points from ``start`` to ``end`` (steps) with mean ``mean``."""

    start: int
    end: int
    mean: float
    n: int

    @classmethod
    def of(cls, points: list[tuple[int, float]]) -> Window:
        return cls(points[0][0], points[-1][0], sum(v for _, v in points) / len(points), len(points))

    @property
    def centre(self) -> int:
        """The step in the middle of the window (the checkpoint to keep when this is the best window)."""
        return (self.start + self.end) // 2

    def text(self) -> str:
        return f"steps {self.start}-{self.end}"


@dataclass(frozen=True)
class Comparison:
    """Window ``b`` (before) against window ``a`` (after): ``change = a.mean - b.mean``, ``se`` its sd when nothing
    changed, ``z = change / se`` (the change in noise units), ``z_needed`` the bar (module docstring)."""

    before: Window
    after: Window
    noise: float
    se: float
    z: float
    z_needed: float

    @property
    def change(self) -> float:
        return self.after.mean - self.before.mean

    @property
    def rel(self) -> float:
        """The relative change ``after / before - 1`` (inf when ``before`` is 0)."""
        return self.after.mean / self.before.mean - 1 if self.before.mean else math.inf

    @property
    def rose(self) -> bool:
        """The rise is beyond the noise: ``z > z_needed``."""
        return self.z > self.z_needed

    @property
    def fell(self) -> bool:
        """The fall is beyond the noise: ``-z > z_needed``."""
        return -self.z > self.z_needed

    def evidence(self, before: str = "best", after: str = "late") -> dict:
        """The windows, their means, the noise and the change in noise units (rounded, JSON-ready)."""
        return {f"{before}_window": self.before.text(), f"{before}_mean": _r(self.before.mean),
                f"{after}_window": self.after.text(), f"{after}_mean": _r(self.after.mean),
                "noise_sd": _r(self.noise), "change_noise_units": _r(self.z, 3), "z_needed": _r(self.z_needed, 3)}


def _r(x: float, nd: int = 4) -> float:
    return float(f"{x:.{nd}g}") if math.isfinite(x) else x


def noise_sd(values: list[float]) -> float:
    """Per-point noise sd of a series: ``1.4826 * median(|d - median(d)|) / sqrt(2)`` over its first differences
    ``d`` (0 for fewer than 3 points)."""
    if len(values) < 3:
        return 0.0
    d = [b - a for a, b in zip(values, values[1:])]
    md = median(d)
    return MAD_TO_SD * median(abs(x - md) for x in d) / math.sqrt(2)


def windows(series: list[tuple[int, float]], frac: float = LATE_FRAC, min_points: int = MIN_POINTS
            ) -> tuple[list[Window], Window]:
    """``(earlier windows, late window)``: the late window and the non-overlapping windows of its length before
    it, aligned to end where it starts (a shorter remainder at the start is dropped). ``series`` must not be
    empty."""
    if not series:
        raise ValueError("windows of an empty series")
    w = window_size(len(series), frac, min_points)
    late = Window.of(series[len(series) - w:])
    earlier, end = [], len(series) - w
    while end - w >= 0:
        earlier.append(Window.of(series[end - w:end]))
        end -= w
    return earlier[::-1], late


MAD_EFFICIENCY = 0.37       # a MAD-based sd has the precision of a classical one from ~37 % as many points


def z_needed(k: int, alpha: float = ALPHA, n_noise: int | None = None) -> float:
    """The one-sided bar for the best of ``k`` candidates: ``Phi^-1(1 - alpha / k)``; with ``n_noise`` (the points
    the noise sd was estimated from) the Student-t quantile for the estimate's effective degrees of freedom
    ``df = 0.37 (n_noise - 1)`` (Cornish-Fisher: ``z (1 + (z^2 + 1) / (4 df))``), so an sd estimated from a short
    series does not push the false-alarm rate above ``alpha``."""
    z = NormalDist().inv_cdf(1 - alpha / max(1, k))
    if n_noise is None:
        return z
    df = max(1.0, MAD_EFFICIENCY * (n_noise - 1))
    return z * (1 + (z * z + 1) / (4 * df))


def compare(before: Window, after: Window, noise: float, k: int = 1, alpha: float = ALPHA,
            noise_after: float | None = None, n_noise: int | None = None) -> Comparison:
    """The :class:`Comparison` of two windows with per-point noise ``noise`` (``noise_after`` for the second window
    when it comes from another series, e.g. a parent run); ``k``: candidates ``before`` was the best of;
    ``n_noise``: the points the noise was estimated from (the smaller series' when two; :func:`z_needed`)."""
    na = noise if noise_after is None else noise_after
    se = math.sqrt(noise ** 2 / before.n + na ** 2 / after.n)
    change = after.mean - before.mean
    z = change / se if se > 0 else (math.copysign(math.inf, change) if change else 0.0)
    return Comparison(before, after, noise, se, z, z_needed(k, alpha, n_noise))


def rise_since_best(series: list[tuple[int, float]], frac: float = LATE_FRAC, min_points: int = MIN_POINTS,
                    alpha: float = ALPHA) -> Comparison | None:
    """The late window against the best (lowest-mean) earlier window; None without an earlier window."""
    if len(series) < 2:
        return None
    earlier, late = windows(series, frac, min_points)
    if not earlier:
        return None
    best = min(earlier, key=lambda w: w.mean)
    return compare(best, late, noise_sd([v for _, v in series]), k=len(earlier), alpha=alpha, n_noise=len(series))


def fall_since_start(series: list[tuple[int, float]], frac: float = LATE_FRAC, min_points: int = MIN_POINTS,
                     alpha: float = ALPHA) -> Comparison | None:
    """The late window against the first window of the same length (a fixed pair: ``k = 1``); None when the
    two would overlap."""
    w = window_size(len(series), frac, min_points)
    if len(series) < 2 * w:
        return None
    return compare(Window.of(series[:w]), Window.of(series[len(series) - w:]), noise_sd([v for _, v in series]),
                   alpha=alpha, n_noise=len(series))


def verdict_bands(series: list[tuple[int, float]], frac: float = LATE_FRAC, min_points: int = MIN_POINTS
                  ) -> list[tuple[str, Window, float]]:
    """What a plot draws on a held-out curve: ``(label, window, half-width)`` for the best earlier window and the
    late window the rise test compares (``half-width`` = 2 sd of the window's mean, ``2 sigma / sqrt(n)``); empty
    when the series has no earlier window."""
    cmp = rise_since_best(series, frac, min_points)
    if cmp is None:
        return []
    return [(f"best window ({cmp.before.text()})", cmp.before, 2 * cmp.noise / math.sqrt(cmp.before.n)),
            (f"late window ({cmp.after.text()}; {cmp.z:+.1f} noise units)", cmp.after,
             2 * cmp.noise / math.sqrt(cmp.after.n))]
