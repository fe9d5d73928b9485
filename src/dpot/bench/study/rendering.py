"""The study's pages: the Markdown results page and the learning-curve plot."""

from __future__ import annotations

import statistics
from pathlib import Path

from dpot.bench.study.contrasts import render_contrasts


def pct(d: dict) -> str:
    lo, hi = d["ci95"]
    return f"{d['successes']}/{d['episodes']} = {100 * d['success_rate']:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"


def render_markdown(results: dict, curves_png: str | None = None) -> str:
    """The results page of a study: success table, learning curves, OT metrics per run."""
    curve_cell = results.get("curve_cell") or "target"
    intro = (f"{results['steps']} training steps per run; {results['eval_episodes']} closed-loop episodes per "
             f"cell per run (final checkpoint), {results['curve_episodes']} {curve_cell} episodes per "
             "intermediate checkpoint. Success: pooled over all episodes of all seeds, 95% Wilson interval in "
             "brackets (treats episodes of different seeds as independent; per-seed values beside it).")
    cells_info = results.get("eval_cells")
    if cells_info:
        intro += " Cells: " + "; ".join(f"{c} = {i['domain']} domain, region {i['region']}"
                                        for c, i in cells_info.items()) + "."
    names = list(cells_info) if cells_info else [
        d for d in ("target", "source") if any(d in m["domains"] for m in results["methods"].values())]
    for m in results["methods"].values():
        names += [d for d in m["domains"] if d not in names]
    lines = [f"# Study: {results['preset']} on {results['task']}", "", intro, "",
             "| method | seeds | " + " | ".join(f"{d} success | per seed" for d in names) + " |",
             "|---|---|" + "---|---|" * len(names)]
    for name, m in results["methods"].items():
        cells = []
        for domain in names:
            d = m["domains"].get(domain)
            per_seed = ", ".join(f"{s['successes']}/{s['episodes']}" for s in d["per_seed"]) if d else "–"
            if d and d.get("seed_std") is not None:
                per_seed += f" ({100 * d['seed_mean']:.0f} ± {100 * d['seed_std']:.0f}%)"
            cells += [pct(d) if d else "–", per_seed]
        lines.append(f"| {name} | {len(m['seeds'])} | " + " | ".join(cells) + " |")
    lines += differences(results["methods"], names)
    lines += render_contrasts(results.get("contrasts") or [])
    lines += ["", f"## Learning curves ({curve_cell} success per checkpoint, pooled over seeds)", ""]
    if curves_png:
        lines += [f"![curves]({curves_png})", ""]
    for name, m in results["methods"].items():
        for cell, curve in (m.get("curves") or {curve_cell: m["curve"]}).items():
            pts = ", ".join(f"{s}: {100 * c['success_rate']:.0f}% ({c['successes']}/{c['episodes']})"
                            for s, c in sorted(curve.items(), key=lambda kv: int(kv[0])))
            lines.append(f"- {name} ({cell}): {pts}")
    lines += ["", "## OT metrics (mean over the last 10% of logged steps per run)", ""]
    keys = sorted({k for m in results["methods"].values() for r in m["runs"].values() for k in r
                   if k != "last_step" and not k.startswith("first/")})
    short = [k.replace("train/", "") for k in keys]
    lines += ["| run | " + " | ".join(short) + " |", "|---|" + "---|" * len(keys)]
    for m in results["methods"].values():
        for job, r in m["runs"].items():
            lines.append(f"| {job} | " + " | ".join(_fmt(r.get(k)) for k in keys) + " |")
    v = results["versions"]
    lines += ["", "Versions: " + ", ".join(f"{k} {x}" for k, x in v.items()), ""]
    return "\n".join(lines)


REFERENCES = ("naive-cotrain", "target-only")


def differences(methods: dict, cells: list[str], references: tuple[str, ...] = REFERENCES) -> list[str]:
    """Markdown lines: each method's success minus each reference method's (the ones present), per cell:
    pooled difference with its 95% Newcombe interval, and the per-seed paired differences (same seed number)
    with their mean ± sd. An interval that contains 0 is no evidence of a difference at this sample size."""
    from dpot.bench.evaluate import newcombe_interval

    refs = [r for r in references if r in methods]
    if not refs or len(methods) < 2:
        return []
    out = ["", "## Differences (method − reference, percentage points)", "",
           "Pooled: difference of the pooled rates, 95% Newcombe interval (independent episodes). Paired: per "
           "seed, the method's rate minus the reference's at the same seed; mean ± sd over seeds.", "",
           "| method − reference | " + " | ".join(f"{c} pooled | {c} paired" for c in cells) + " |",
           "|---|" + "---|---|" * len(cells)]
    for i, ref in enumerate(refs):
        for name, m in methods.items():
            if name in refs[:i + 1]:  # itself, or a pair already shown the other way round
                continue
            row = []
            for cell in cells:
                a, b = m["domains"].get(cell), methods[ref]["domains"].get(cell)
                if not a or not b:
                    row += ["–", "–"]
                    continue
                lo, hi = newcombe_interval(a["successes"], a["episodes"], b["successes"], b["episodes"])
                d = a["successes"] / a["episodes"] - b["successes"] / b["episodes"]
                row.append(f"{100 * d:+.0f} [{100 * lo:+.0f}, {100 * hi:+.0f}]")
                rb = {s["seed"]: s["success_rate"] for s in b["per_seed"]}
                pd = [s["success_rate"] - rb[s["seed"]] for s in a["per_seed"] if s["seed"] in rb]
                if len(pd) > 1:
                    row.append(f"{100 * statistics.mean(pd):+.0f} ± {100 * statistics.stdev(pd):.0f} "
                               f"({len(pd)} seeds)")
                else:
                    row.append(", ".join(f"{100 * x:+.0f}" for x in pd) or "–")
            out.append(f"| {name} − {ref} | " + " | ".join(row) + " |")
    return out


def _fmt(x) -> str:
    if x is None:
        return "–"
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def plot_curves(results: dict, path: Path) -> Path | None:
    """Target success vs training step per method (pooled over seeds, Wilson band); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, m in results["methods"].items():
        pts = sorted((int(s), c) for s, c in m["curve"].items())
        if not pts:
            continue
        xs = [s for s, _ in pts]
        ax.plot(xs, [c["success_rate"] for _, c in pts], marker="o", label=f"{name} ({len(m['seeds'])} seeds)")
        ax.fill_between(xs, [c["ci95"][0] for _, c in pts], [c["ci95"][1] for _, c in pts], alpha=0.15)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{results.get('curve_cell') or 'target'} success")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{results['task']} ({results['preset']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["pct", "plot_curves", "render_markdown"]
