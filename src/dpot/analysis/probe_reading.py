"""The domain probe in a report: ``eval/domain_probe/<camera>`` (:mod:`dpot.train.domain_probe`) read per camera.

A camera's reading compares the held-out accuracy of the sim-vs-real classifier with chance (0.5) through its 95 %
interval (``<key>_lo`` / ``<key>_hi``): *apart* (the interval lies above 0.5: the features still tell the domains
apart), *not apart* (it covers 0.5), and the change from the first probed step to the last.
"""

from __future__ import annotations

from dpot import metric_names as mn

__all__ = ["probe_series", "probe_lines"]


def probe_series(history: dict) -> dict[str, list[tuple[int, float, float | None, float | None]]]:
    """Camera -> ``[(step, accuracy, lo, hi), ...]`` from a run's history (key -> ``[(step, value)]``)."""
    out = {}
    for key, points in history.items():
        if not key.startswith(mn.PROBE) or key.endswith(("_lo", "_hi")):
            continue
        lo, hi = dict(history.get(key + "_lo", [])), dict(history.get(key + "_hi", []))
        out[key.removeprefix(mn.PROBE)] = [(int(s), float(v), lo.get(s), hi.get(s)) for s, v in points]
    return dict(sorted(out.items()))


def _interval(lo, hi) -> str:
    return "" if lo is None or hi is None else f" [{lo:.2f}, {hi:.2f}]"


def probe_lines(history: dict, lang: str = "en") -> list[str]:
    """One Markdown bullet per camera: first and last probed accuracy with intervals and the reading."""
    words = {"en": ("apart: the features still tell sim from real", "not apart: the interval covers chance (0.5)",
                    "step"),
             "zh": ("可区分：特征仍能区分仿真与真实", "不可区分：区间覆盖随机水平 (0.5)", "步")}[lang]
    lines = []
    for cam, pts in probe_series(history).items():
        s0, a0, lo0, hi0 = pts[0]
        s1, a1, lo1, hi1 = pts[-1]
        verdict = words[0] if lo1 is not None and lo1 > 0.5 else words[1]
        first = f"{words[2]} {s0}: {a0:.2f}{_interval(lo0, hi0)} → " if len(pts) > 1 else ""
        lines.append(f"- {cam}: {first}{words[2]} {s1}: {a1:.2f}{_interval(lo1, hi1)} — {verdict}")
    return lines
