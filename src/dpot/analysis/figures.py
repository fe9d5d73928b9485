"""Interactive report figures as plotly.js figure dicts (``{"data", "layout"}``), drawn by the inlined plotly.js.

Built as plain dicts (no plotly Python objects: their validation costs seconds on 20k-step runs). Every trace is
a logged series (non-finite points dropped, at most :data:`MAX_POINTS` points, evenly strided, the last kept).
Costs and spreads default to a log y axis with a linear/log switch; every figure hovers, zooms and toggles
series from its legend (plotly.js defaults).
"""

from __future__ import annotations

import math

import numpy as np

from dpot import metric_names as mn
from dpot.analysis import cfgkeys, noise
from dpot.analysis.aliases import cost_prefix, label
from dpot.analysis.diagnose import coupling_band
from dpot.analysis.plans import PlanSnapshot
from dpot.metric_names import EVAL_LOSS, train

MAX_POINTS = 2500
BAND_COLOR = "rgba(0,160,0,0.15)"
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf"]


def _num(v: float) -> float:
    return float(f"{v:.6g}")


def xy(series, max_points: int = MAX_POINTS) -> tuple[list[int], list[float]]:
    """Steps and values of the finite points of ``series``, strided down to at most ``max_points``."""
    pts = [(s, v) for s, v in series if math.isfinite(v)]
    if len(pts) > max_points:
        stride = math.ceil(len(pts) / max_points)
        pts = pts[::-1][::stride][::-1]
    return [s for s, _ in pts], [_num(v) for _, v in pts]


def _layout(title: str, ytitle: str = "", log: bool = False, **kw) -> dict:
    lay = {"title": {"text": title, "font": {"size": 14}, "x": 0.01, "xanchor": "left", "y": 0.98, "yanchor": "top"},
           "xaxis": {"title": {"text": "step"}},
           "yaxis": {"title": {"text": ytitle}, "type": "log" if log else "linear"},
           "margin": {"l": 60, "r": 20, "t": 64, "b": 45}, "hovermode": "x unified",
           "legend": {"orientation": "h", "y": -0.2}, "template": None, "colorway": COLORS}
    lay.update(kw)
    return lay


def _scale_switch(log: bool) -> list[dict]:
    """A linear/log y-axis switch (plotly updatemenu buttons)."""
    return [{"type": "buttons", "direction": "right", "x": 1.0, "xanchor": "right", "y": 1.01, "yanchor": "bottom",
             "showactive": True, "active": 1 if log else 0, "pad": {"r": 2, "t": 0},
             "buttons": [{"label": "linear", "method": "relayout", "args": [{"yaxis.type": "linear"}]},
                         {"label": "log", "method": "relayout", "args": [{"yaxis.type": "log"}]}]}]


def _line(name: str, series, color: str | None = None, dash: str | None = None, markers: bool = False) -> dict:
    x, y = xy(series)
    tr = {"type": "scattergl" if len(x) > 1000 else "scatter", "mode": "lines+markers" if markers else "lines",
          "name": name, "x": x, "y": y, "line": {"width": 1.6}}
    if color:
        tr["line"]["color"] = color
    if dash:
        tr["line"]["dash"] = dash
    return tr


def _best_marker(s, name: str, color: str = "#d62728") -> dict:
    return {"type": "scatter", "mode": "markers", "name": f"best {name}", "x": [s.best_step], "y": [_num(s.best)],
            "hovertemplate": f"best {name} {s.best:.4g}@{s.best_step}<extra></extra>",
            "marker": {"color": color, "size": 9, "symbol": "star"}, "showlegend": False}


def fig_losses(run, summaries) -> dict | None:
    """train/loss, train/l1_loss and the eval loss on one axis (log switch), the best value of each marked."""
    keys = [k for k in ("train/loss", "train/l1_loss", EVAL_LOSS) if run.history.get(k)]
    if not keys:
        return None
    data = []
    for k in keys:
        data.append(_line(label(k), run.history[k], markers=k == EVAL_LOSS and len(run.history[k]) < 60))
        s = summaries.get(k)
        if s is not None and s.best is not None:
            data.append(_best_marker(s, label(k)))
    lay = _layout("losses", "loss", updatemenus=_scale_switch(False))
    lay["shapes"] = []
    for name, w, half in noise.verdict_bands([(st, v) for st, v in run.history.get(EVAL_LOSS, []) if math.isfinite(v)]):
        # the windows the overfitting / rollback verdicts compare: each window's mean, ±2 sd of that mean shaded
        lay["shapes"].append({"type": "rect", "xref": "x", "yref": "y", "x0": w.start, "x1": w.end,
                              "y0": w.mean - half, "y1": w.mean + half, "fillcolor": BAND_COLOR,
                              "line": {"width": 0}, "layer": "below"})
        data.append({"type": "scatter", "mode": "lines", "name": f"eval {name}", "x": [w.start, w.end],
                     "y": [_num(w.mean), _num(w.mean)], "line": {"width": 2.5, "color": "#2ca02c"},
                     "hovertemplate": f"{name}: mean {w.mean:.4g} ± {half:.2g} (2 sd)<extra></extra>"})
    return {"data": data, "layout": lay}


def fig_single(run, key: str, title: str, log: bool = False) -> dict | None:
    """One metric over steps (with a linear/log switch)."""
    if not run.history.get(key):
        return None
    return {"data": [_line(label(key), run.history[key])],
            "layout": _layout(title, label(key), log, showlegend=False, updatemenus=_scale_switch(log))}


def ot_mass_keys(run) -> tuple[list[str], str]:
    """The plan-mass series to draw and what the target band is about: ``pi_diag`` or, under the diagonal prior,
    the mass ``pi_sum`` alone (with the per-pair spread ``ot_pi_pair_cv``)."""
    if cfgkeys.ot_settings(run.config).diagonal:
        names, what = (mn.OT_PI_SUM, mn.OT_PI_PAIR_CV), "plan mass (diagonal prior)"
    else:
        names, what = (mn.OT_PI_SUM, mn.OT_PI_DIAG, mn.OT_PI_DIAG_FRAC), "pi_diag"
    return [train(n) for n in names if run.history.get(train(n))], what


def fig_ot_mass(run, band) -> dict | None:
    """pi_sum, pi_diag, pi_diag/pi_sum over steps; the coupling's target band shaded (on pi_diag, or on the mass
    pi_sum under the diagonal prior, where pi_diag = pi_sum by construction and only the mass is drawn)."""
    keys, what = ot_mass_keys(run)
    if not keys:
        return None
    lay = _layout("OT plan mass", "mass")
    lay["shapes"] = [{"type": "rect", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": band[0], "y1": band[1],
                      "fillcolor": BAND_COLOR, "line": {"width": 0}, "layer": "below"}]
    lay["annotations"] = [{"xref": "paper", "x": 0.01, "y": band[1], "yref": "y", "showarrow": False,
                           "text": f"{what} target {band[0]}–{band[1]}", "font": {"size": 10, "color": "#060"},
                           "xanchor": "left", "yanchor": "bottom"}]
    return {"data": [_line(k.split("/")[-1], run.history[k]) for k in keys], "layout": lay}


def fig_costs(run) -> dict | None:
    """Per-term OT cost over steps, log y by default (mean cost when logged, else plan-weighted)."""
    prefix = cost_prefix(run.history)
    keys = sorted(k for k in run.history if k.startswith(prefix) and run.history[k])
    if not keys:
        return None
    data = []
    for k in keys:
        tr = _line(k[len(prefix):], [(s, v) for s, v in run.history[k] if v > 0])
        data.append(tr)
    return {"data": data, "layout": _layout(f"cost per term ({prefix.rstrip('/')})", "cost", True,
                                             updatemenus=_scale_switch(True))}


def fig_cost_share(run) -> dict | None:
    """Each term's share of the summed per-term cost over steps (stacked to 100 %): the cost balance."""
    prefix = cost_prefix(run.history)
    keys = sorted(k for k in run.history if k.startswith(prefix) and run.history[k])
    if len(keys) < 2:
        return None
    by_step: dict[int, dict[str, float]] = {}
    for k in keys:
        for s, v in run.history[k]:
            if math.isfinite(v):
                by_step.setdefault(s, {})[k] = abs(v)
    steps = [s for s in sorted(by_step) if len(by_step[s]) == len(keys) and sum(by_step[s].values()) > 0]
    if len(steps) > MAX_POINTS:
        steps = steps[::-1][::math.ceil(len(steps) / MAX_POINTS)][::-1]
    data = []
    for k in keys:
        y = [_num(100 * by_step[s][k] / sum(by_step[s].values())) for s in steps]
        data.append({"type": "scatter", "mode": "lines", "stackgroup": "share", "name": k[len(prefix):],
                     "x": steps, "y": y, "line": {"width": 0.5}})
    return {"data": data, "layout": _layout("cost balance (share of the summed cost)", "% of cost",
                                             yaxis={"title": {"text": "% of cost"}, "range": [0, 100]})}


def fig_spread(run) -> dict | None:
    """The embeddings' within-domain spread per camera (``train/ot_embed_spread/<camera>``), log y."""
    keys = sorted(k for k in run.history if k.startswith(train(mn.EMBED_SPREAD)) and run.history[k])
    if not keys:
        return None
    return {"data": [_line(k.split("/")[-1], [(s, v) for s, v in run.history[k] if v > 0]) for k in keys],
            "layout": _layout("embedding spread", "spread", True, updatemenus=_scale_switch(True))}


def fig_step_time(run) -> dict | None:
    """update_s and dataloading_s per logged step, stacked."""
    if not run.history.get("train/update_s"):
        return None
    data = []
    for k in ("train/update_s", "train/dataloading_s"):
        if run.history.get(k):
            x, y = xy(run.history[k])
            data.append({"type": "scatter", "mode": "lines", "stackgroup": "t", "name": k.split("/")[-1],
                         "x": x, "y": y, "line": {"width": 0.5}})
    return {"data": data, "layout": _layout("step time breakdown", "s / step")}


def _hover(p: PlanSnapshot) -> list[list[str]]:
    ns, nt = p.plan.shape
    rows = []
    for i in range(ns):
        row = []
        for j in range(nt):
            txt = [f"src {i}" + (f" (ep {int(p.src_episode[i])}, phase {p.src_phase[i]:.2f})"
                                 if p.src_episode is not None and p.src_phase is not None else ""),
                   f"tgt {j}" + (f" (ep {int(p.tgt_episode[j])}, phase {p.tgt_phase[j]:.2f})"
                                 if p.tgt_episode is not None and p.tgt_phase is not None else ""),
                   f"plan {p.plan[i, j]:.3g}"]
            txt += [f"cost {t} {c[i, j]:.3g}" for t, c in p.costs.items()]
            row.append("<br>".join(txt))
        rows.append(row)
    return rows


def fig_plan(plans: list[PlanSnapshot]) -> dict | None:
    """The transport plan of a logged step as a heatmap (source rows × target columns, the partner pairs marked);
    one button per saved step (the latest shown first). Hover: items' episode/phase, plan value, term costs."""
    if not plans:
        return None
    latest = plans[-1]
    rows, cols = np.nonzero(latest.partners)

    def z(p):
        return [[_num(v) for v in row] for row in p.plan]

    data = [{"type": "heatmap", "z": z(latest), "text": _hover(latest), "hoverinfo": "text",
             "colorscale": "Viridis", "colorbar": {"title": {"text": "mass"}}, "name": "plan"},
            {"type": "scatter", "mode": "markers", "x": cols.tolist(), "y": rows.tolist(), "name": "partners",
             "marker": {"symbol": "square-open", "color": "#ff4136", "size": 8, "line": {"width": 1.5}},
             "hoverinfo": "skip"}]
    lay = _layout(f"OT plan, step {latest.step}", "source item", hovermode="closest", showlegend=False)
    partners = f"target item (red squares: the partner pairs, {train(mn.OT_PI_DIAG)}'s entries)"
    lay["xaxis"] = {"title": {"text": partners}, "constrain": "domain"}
    lay["yaxis"] = {"title": {"text": "source item"}, "autorange": "reversed", "scaleanchor": "x"}
    if len(plans) > 1:
        lay["updatemenus"] = [{"type": "buttons", "direction": "right", "x": 1.0, "xanchor": "right", "y": 1.01,
                               "yanchor": "bottom", "active": len(plans) - 1, "pad": {"r": 2, "t": 0},
                               "buttons": [{"label": f"step {p.step}", "method": "update",
                                            "args": [{"z": [z(p), None], "text": [_hover(p), None],
                                                      "x": [None, np.nonzero(p.partners)[1].tolist()],
                                                      "y": [None, np.nonzero(p.partners)[0].tolist()]},
                                                     {"title.text": f"OT plan, step {p.step}"}, [0, 1]]}
                                           for p in plans]}]
    return {"data": data, "layout": lay}


def fig_probe(run) -> dict | None:
    """The domain probe's held-out accuracy per camera (markers at the probed steps) and chance (0.5)."""
    from dpot.analysis.probe_reading import probe_series

    series = probe_series(run.history)
    if not series:
        return None
    data = []
    for cam, pts in series.items():
        line = _line(cam, [(p[0], p[1]) for p in pts], markers=True)
        if all(p[2] is not None for p in pts):
            line["error_y"] = {"type": "data", "symmetric": False, "array": [p[3] - p[1] for p in pts],
                               "arrayminus": [p[1] - p[2] for p in pts]}
        data.append(line)
    lay = _layout("domain probe: sim-vs-real accuracy (chance 0.5)", "held-out accuracy")
    lay["shapes"] = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": 0.5, "y1": 0.5,
                      "line": {"dash": "dash", "color": "#888"}}]
    return {"data": data, "layout": lay}


def report_figures(run, summaries, rules, plans: list[PlanSnapshot]) -> dict[str, dict]:
    """``{id: figure}`` of a run's report page, curves first, then OT at a glance (absent ones left out)."""
    band = coupling_band(rules)
    # two columns on a wide screen: curves on the left, OT at a glance beside them
    figs = {"losses": fig_losses(run, summaries), "ot_plan": fig_plan(plans),
            "grad_norm": fig_single(run, "train/grad_norm", "grad norm", True), "ot_mass": fig_ot_mass(run, band),
            "lr": fig_single(run, "train/lr", "learning rate"), "costs": fig_costs(run),
            "step_time": fig_step_time(run), "cost_share": fig_cost_share(run), "spread": fig_spread(run),
            "probe": fig_probe(run)}
    return {k: v for k, v in figs.items() if v is not None}


def compare_figures(analyses, keys: list[str], names: list[str]) -> dict[str, dict]:
    """One figure per metric in ``keys`` logged by any run, every run overlaid on shared axes."""
    figs = {}
    for key in keys:
        data = []
        for i, (a, name) in enumerate(zip(analyses, names)):
            if a.run.history.get(key):
                data.append(_line(name, a.run.history[key], COLORS[i % len(COLORS)]))
        if data:
            log = key.startswith((train(mn.COST_STEM), "train/grad_norm"))
            figs[key.replace("/", "_")] = {"data": data, "layout": _layout(f"{key} ({label(key)})", label(key), log,
                                                                         updatemenus=_scale_switch(log))}
    return figs
