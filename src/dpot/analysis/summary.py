"""Per-metric curve summaries and the run's throughput/eval-time shares."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import median

from dpot.analysis.aliases import direction
from dpot.analysis.windows import window_size
from dpot.metric_names import EVAL_LOSS, EVAL_S


@dataclass
class MetricSummary:
    """First → last, % change, best@step, smoothed last, trend over the last window, spikes."""

    key: str
    n: int
    first_step: int
    last_step: int
    first: float
    last: float
    change_pct: float | None
    best: float | None
    best_step: int | None
    direction: str | None
    smoothed_last: float
    trend_pct: float | None          # change of the smoothed value over the last window, in %
    window: int
    min: float
    max: float
    non_finite: int = 0
    spikes: list[tuple[int, float, float]] = field(default_factory=list)  # (step, value, rolling median)
    monotone: bool = True            # the finite values never go both up and down

    def as_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def span_text(s: MetricSummary, fmt=lambda x: f"{x:.4g}") -> str:
    """The one way a curve's range is written (train/lr included): ``first → last``, plus ``(min a, max b)``
    when the curve is not monotone and no best value is shown (metrics without a better direction)."""
    out = f"{fmt(s.first)} → {fmt(s.last)}"
    if not s.monotone and s.best is None:
        out += f" (min {fmt(s.min)}, max {fmt(s.max)})"
    return out


def _ema(values: list[float], alpha: float) -> list[float]:
    out, acc = [], None
    for v in values:
        acc = v if acc is None else alpha * v + (1 - alpha) * acc
        out.append(acc)
    return out


def find_spikes(series: list[tuple[int, float]], factor: float, window: int = 10) -> list[tuple[int, float, float]]:
    """Points above ``factor`` × the median of the previous ``window`` values (at least 3 of them)."""
    out = []
    vals = [v for _, v in series]
    for i in range(3, len(series)):
        ref = median(vals[max(0, i - window):i])
        if ref > 0 and vals[i] > factor * ref:
            out.append((series[i][0], vals[i], ref))
    return out


def summarize_metric(key: str, series: list[tuple[int, float]], *, window_frac: float = 0.2,
                     spike_factor: float = 3.0) -> MetricSummary:
    """Summarize one metric's ``(step, value)`` series (non-finite values are counted, then ignored)."""
    finite = [(s, v) for s, v in series if math.isfinite(v)]
    bad = len(series) - len(finite)
    if not finite:
        s0, s1 = series[0][0], series[-1][0]
        nan = float("nan")
        return MetricSummary(key, len(series), s0, s1, nan, nan, None, None, None, direction(key), nan, None,
                             0, nan, nan, bad)
    steps = [s for s, _ in finite]
    vals = [v for _, v in finite]
    d = direction(key)
    first, last = vals[0], vals[-1]
    change = (last - first) / abs(first) * 100 if first != 0 else None
    best = best_step = None
    if d is not None:
        idx = min(range(len(vals)), key=vals.__getitem__) if d == "min" else max(range(len(vals)), key=vals.__getitem__)
        best, best_step = vals[idx], steps[idx]
    window = window_size(len(vals), window_frac, min_points=2)   # the late window, at least 2 points
    smooth = _ema(vals, alpha=2 / (window + 1))
    trend = None
    if len(vals) > window:
        a, b = smooth[-window - 1], smooth[-1]
        trend = (b - a) / abs(a) * 100 if a != 0 else None
    spikes = find_spikes(finite, spike_factor) if "grad_norm" in key or "loss" in key else []
    ups = any(b > a for a, b in zip(vals, vals[1:]))
    downs = any(b < a for a, b in zip(vals, vals[1:]))
    return MetricSummary(key, len(series), steps[0], steps[-1], first, last, change, best, best_step, d,
                         smooth[-1], trend, window, min(vals), max(vals), bad, spikes, not (ups and downs))


def summarize(history: dict[str, list[tuple[int, float]]], **kw) -> dict[str, MetricSummary]:
    """Summaries of every metric in ``history``."""
    return {k: summarize_metric(k, v, **kw) for k, v in history.items() if v}


def _median_of(history, key) -> float | None:
    vals = [v for _, v in history.get(key, []) if math.isfinite(v)]
    if not vals:
        return None
    return median(vals[1:] if len(vals) > 2 else vals)  # the first step includes warm-up costs


def _wall_clock_eval_share(history, times, step_s) -> float | None:
    """Share of wall time spent in evals, from logged timestamps: the gap after each eval step minus the
    median gap of the other steps (or the logged update+data time when every step has an eval), summed, over
    the wall time (the final step, with its checkpoint, is left out).
    """
    evals = {s for s, _ in history.get(EVAL_LOSS, [])}
    if len(times) < 4 or not evals:
        return None
    gaps = {s: (t2 - t1) / max(1, s2 - s) for (s, t1), (s2, t2) in zip(times, times[1:])}
    plain = [g for s, g in gaps.items() if s not in evals]
    if not any(s in gaps for s in evals) or (not plain and step_s is None):
        return None
    ref = median(plain) if plain else step_s   # eval at every step: compare with the logged step time
    wall = times[-1][1] - times[0][1]
    if wall <= 0:
        return None
    excess = sum(max(0.0, g - ref) for s, g in gaps.items() if s in evals)
    return min(1.0, excess / wall)


def throughput(history: dict, config: dict, times: list | None = None) -> dict:
    """Step-time breakdown: median update_s, dataloading_s, data-wait share, eval-time share.

    ``eval_share`` uses logged eval seconds (``eval/offline_eval/eval_s``) when present; else None.
    """
    up = _median_of(history, "train/update_s")
    dl = _median_of(history, "train/dataloading_s")
    out = {"update_s": up, "dataloading_s": dl, "data_share": None, "eval_share": None,
           "eval_s": _median_of(history, EVAL_S), "first_update_s": None,
           "first_dataloading_s": None}
    for k, name in (("train/update_s", "first_update_s"), ("train/dataloading_s", "first_dataloading_s")):
        if history.get(k):
            out[name] = history[k][0][1]
    if up is not None and dl is not None and up + dl > 0:
        out["data_share"] = dl / (up + dl)
    eval_freq = _eval_freq(config)
    step_s = up + (dl or 0.0) if up is not None else None
    out["eval_share_source"] = None
    if out["eval_s"] is not None and step_s is not None and eval_freq:
        out["eval_share"] = out["eval_s"] / (out["eval_s"] + eval_freq * step_s)
        out["eval_share_source"] = "logged eval_s"
    elif times:
        out["eval_share"] = _wall_clock_eval_share(history, times, step_s)
        out["eval_share_source"] = "wall-clock estimate" if out["eval_share"] is not None else None
    out["eval_freq"] = eval_freq
    return out


def _eval_freq(config: dict) -> int | None:
    for key in ("eval_freq", "eval_steps"):
        v = config.get(key)
        if isinstance(v, (int, float)) and v > 0:
            return int(v)
    return None
