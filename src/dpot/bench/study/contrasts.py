"""The pre-registered contrasts of a study (docs/results.md, "Pre-registration"): arm A − arm B per evaluation cell.

Main test, **paired over seeds**: ``d_s = p_A(s) - p_B(s)`` for every seed s that both arms finished (the same
seed number trains both arms with the same data order and noise streams), ``d̄ = mean(d_s)``,
``se = sd(d_s) / sqrt(n)``, the t intervals ``d̄ ± t_{n-1, 1-α/2} se`` at 90 % and 95 %, and the p-values of
``t = d̄ / se`` (one-sided for "A > B", two-sided).

Secondary, **paired over layouts**: every arm is evaluated on the same episode seeds (layouts) in a cell, so for
layout k, ``e_k = mean_s success_A(s, k) - mean_s success_B(s, k)`` over the arms' common seeds; ``ē ± t se`` over
the layouts (inference to new layouts for these trained seeds).

Inputs are the evaluation JSONs' ``episode_success`` strings (one character per episode, in episode-seed order).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TInterval:
    """Mean, sample sd, n, t intervals (90 %, 95 %) and p-values of a sample of differences."""

    n: int
    mean: float
    sd: float | None
    ci90: tuple[float, float] | None
    ci95: tuple[float, float] | None
    p_greater: float | None     # one-sided p of "mean > 0"
    p_two_sided: float | None


def t_summary(diffs: list[float]) -> TInterval:
    """The paired-t summary of ``diffs`` (intervals and p-values need n >= 2 and sd > 0; a zero sd gives
    degenerate intervals at the mean and p 0 or 1)."""
    from scipy import stats

    n = len(diffs)
    if n == 0:
        raise ValueError("no differences to summarize")
    mean = statistics.fmean(diffs)
    if n < 2:
        return TInterval(n, mean, None, None, None, None, None)
    sd = statistics.stdev(diffs)
    se = sd / math.sqrt(n)
    if se == 0:
        p = 0.0 if mean > 0 else 1.0
        return TInterval(n, mean, sd, (mean, mean), (mean, mean), p, 0.0 if mean != 0 else 1.0)
    q90, q95 = stats.t.ppf(0.95, n - 1), stats.t.ppf(0.975, n - 1)
    t = mean / se
    return TInterval(n, mean, sd, (mean - q90 * se, mean + q90 * se), (mean - q95 * se, mean + q95 * se),
                     float(stats.t.sf(t, n - 1)), float(2 * stats.t.sf(abs(t), n - 1)))


def seed_rates(evals: dict[int, str]) -> dict[int, float]:
    """Seed -> success rate from seed -> ``episode_success`` string."""
    return {s: e.count("1") / len(e) for s, e in evals.items() if e}


def paired_over_seeds(a: dict[int, str], b: dict[int, str], seeds: list[int] | None = None) -> TInterval:
    """Paired t over the seeds both arms have (restricted to ``seeds`` when given); ``a``, ``b``: seed ->
    ``episode_success``."""
    ra, rb = seed_rates(a), seed_rates(b)
    common = sorted(set(ra) & set(rb) & (set(seeds) if seeds is not None else set(ra)))
    return t_summary([ra[s] - rb[s] for s in common])


def paired_over_layouts(a: dict[int, str], b: dict[int, str], seeds: list[int] | None = None) -> TInterval:
    """Paired t over layouts: per episode index, arm A's success averaged over the common seeds minus arm B's."""
    common = sorted(set(a) & set(b) & (set(seeds) if seeds is not None else set(a)))
    if not common:
        raise ValueError("the arms have no common seed")
    n_ep = {len(a[s]) for s in common} | {len(b[s]) for s in common}
    if len(n_ep) != 1:
        raise ValueError(f"the arms' evaluations differ in episodes: {sorted(n_ep)}")
    k = n_ep.pop()
    diffs = [statistics.fmean(int(a[s][i]) for s in common) - statistics.fmean(int(b[s][i]) for s in common)
             for i in range(k)]
    return t_summary(diffs)


def contrast(a_name: str, b_name: str, cell: str, a: dict[int, str], b: dict[int, str],
             seeds: list[int] | None = None) -> dict:
    """One contrast's JSON record: the arms, the cell, the seeds used, the seed-paired and layout-paired
    summaries and the per-seed differences."""
    ra, rb = seed_rates(a), seed_rates(b)
    used = sorted(set(ra) & set(rb) & (set(seeds) if seeds is not None else set(ra)))
    return {"a": a_name, "b": b_name, "cell": cell, "seeds": used,
            "per_seed": {str(s): ra[s] - rb[s] for s in used},
            "seed_paired": asdict(paired_over_seeds(a, b, used)) if used else None,
            "layout_paired": asdict(paired_over_layouts(a, b, used)) if used else None}


def render_contrasts(records: list[dict]) -> list[str]:
    """Markdown lines: one row per contrast (percentage points): seed-paired mean [90 %] [95 %], one-sided and
    two-sided p, per-seed differences, layout-paired mean [95 %]."""
    if not records:
        return []

    def pp(x: float) -> str:
        return f"{100 * x:+.1f}"

    def ci(c) -> str:
        return "–" if c is None else f"[{pp(c[0])}, {pp(c[1])}]"

    def p(x) -> str:
        return "–" if x is None else f"{x:.3f}"

    out = ["", "## Pre-registered contrasts (arm A − arm B, percentage points)", "",
           "Seed-paired: mean of the per-seed differences with its 90 % and 95 % t intervals and the paired t-test's "
           "one-sided (A > B) and two-sided p. Layout-paired: per layout, A's success averaged over the seeds minus "
           "B's; mean over layouts with its 95 % t interval.", "",
           "| A − B | cell | seeds | seed-paired mean | 90 % | 95 % | p (A > B) | p (two-sided) | per seed | "
           "layout-paired mean [95 %] |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        s, lay = r["seed_paired"], r["layout_paired"]
        if s is None:
            continue
        per = ", ".join(pp(v) for v in r["per_seed"].values())
        out.append(f"| {r['a']} − {r['b']} | {r['cell']} | {len(r['seeds'])} | {pp(s['mean'])} | {ci(s['ci90'])} | "
                   f"{ci(s['ci95'])} | {p(s['p_greater'])} | {p(s['p_two_sided'])} | {per} | "
                   f"{pp(lay['mean'])} {ci(lay['ci95'])} |")
    return out


__all__ = ["TInterval", "contrast", "paired_over_layouts", "paired_over_seeds", "render_contrasts", "seed_rates",
           "t_summary"]
