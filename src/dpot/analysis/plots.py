"""Report plots (PNG bytes, matplotlib Agg): curves with best@step, OT metrics with the target band,
per-term cost balance, step-time breakdown."""

from __future__ import annotations

import io
import math

import matplotlib

from dpot.metric_names import EVAL_LOSS

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dpot.analysis import noise  # noqa: E402
from dpot.analysis.aliases import cost_prefix, label  # noqa: E402
from dpot.analysis.diagnose import coupling_band  # noqa: E402
from dpot.analysis.figures import ot_mass_keys  # noqa: E402
from dpot.analysis.probe_reading import probe_series  # noqa: E402

CURVES = ["train/loss", "train/l1_loss", EVAL_LOSS, "train/grad_norm", "train/lr"]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _xy(series):
    pts = [(s, v) for s, v in series if math.isfinite(v)]
    return [s for s, _ in pts], [v for _, v in pts]


def plot_curves(run, summaries) -> bytes | None:
    """One panel per core metric that was logged; the best value is marked with its step."""
    keys = [k for k in CURVES if k in run.history]
    if not keys:
        return None
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 2.2 * len(keys)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        x, y = _xy(run.history[key])
        ax.plot(x, y, lw=1.2, marker="." if len(x) < 60 else None)
        s = summaries.get(key)
        if s is not None and s.best is not None:
            ax.scatter([s.best_step], [s.best], color="red", zorder=3)
            ax.annotate(f"best {s.best:.4g}@{s.best_step}", (s.best_step, s.best), textcoords="offset points",
                        xytext=(5, 5), color="red", fontsize=8)
        if key == EVAL_LOSS:   # the windows the verdicts compare: mean and ±2 sd of the mean
            for name, w, half in noise.verdict_bands(list(zip(x, y))):
                ax.fill_between([w.start, w.end], w.mean - half, w.mean + half, color="green", alpha=0.15)
                ax.plot([w.start, w.end], [w.mean, w.mean], color="green", lw=2, label=name)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        ax.set_title(f"{key} ({label(key)})", fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    return _png(fig)


def plot_ot(run, band) -> bytes | None:
    """pi_sum, pi_diag (target band shaded) and pi_diag/pi_sum over steps (the mass alone under the diagonal prior:
    :func:`dpot.analysis.figures.ot_mass_keys`)."""
    keys, what = ot_mass_keys(run)
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.axhspan(band[0], band[1], color="green", alpha=0.15, label=f"{what} target {band[0]}–{band[1]}")
    for k in keys:
        ax.plot(*_xy(run.history[k]), label=k.split("/")[-1])
    ax.set_xlabel("step")
    ax.set_title("OT plan mass", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_costs(run) -> bytes | None:
    """Per-term OT cost over steps, log scale (mean cost when logged, else plan-weighted)."""
    prefix = cost_prefix(run.history)
    keys = sorted(k for k in run.history if k.startswith(prefix))
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(8, 3))
    for k in keys:
        x, y = _xy(run.history[k])
        ax.plot(x, [max(v, 1e-12) for v in y], label=k[len(prefix):])
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(f"cost balance per term ({prefix.rstrip('/')})", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_step_time(run) -> bytes | None:
    """Stacked update_s + dataloading_s per logged step."""
    if "train/update_s" not in run.history:
        return None
    up = dict(run.history["train/update_s"])
    dl = dict(run.history.get("train/dataloading_s", []))
    steps = sorted(up)
    fig, ax = plt.subplots(figsize=(8, 3))
    a = [up[s] for s in steps]
    b = [dl.get(s, 0.0) for s in steps]
    ax.stackplot(steps, a, b, labels=["update_s", "dataloading_s"], alpha=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("s / step")
    ax.set_title("step time breakdown", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_probe(run) -> bytes | None:
    """The domain probe's held-out accuracy per camera over steps, with its 95 % interval and chance (0.5)."""
    series = probe_series(run.history)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.axhline(0.5, color="grey", linestyle="--", label="chance")
    for cam, pts in series.items():
        steps = [p[0] for p in pts]
        line, = ax.plot(steps, [p[1] for p in pts], marker="o", label=cam)
        if all(p[2] is not None for p in pts):
            ax.fill_between(steps, [p[2] for p in pts], [p[3] for p in pts], color=line.get_color(), alpha=0.15)
    ax.set_ylim(0.3, 1.02)
    ax.set_xlabel("step")
    ax.set_title("domain probe: sim-vs-real accuracy on the image features", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def make_plots(run, summaries, rules) -> dict[str, bytes]:
    """``{file name: PNG bytes}`` for the plots this run's metrics allow."""
    band = coupling_band(rules)
    out = {}
    for name, png in (("curves.png", plot_curves(run, summaries)), ("ot.png", plot_ot(run, band)),
                      ("costs.png", plot_costs(run)), ("step_time.png", plot_step_time(run)),
                      ("probe.png", plot_probe(run))):
        if png:
            out[name] = png
    return out
