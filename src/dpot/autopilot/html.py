"""``autopilot.html``: the run tree (what changed, why, objective, decision, link to each run's report) and the
objective per iteration as an inline SVG chart. Self-contained and offline: no script, no external file."""

from __future__ import annotations

import html
import math

from dpot.autopilot.record import Decision, Shown, shown_state

# the colour of each decision a node shows (a halving rung that is not done is shown with the default)
COLOURS = {Shown.BEST: "#1a7f37", Decision.KEPT: "#2f6fdd", Decision.ROLLED_BACK: "#cf222e",
           Decision.RETRIED: "#bf8700", Decision.PRUNED: "#8c959f", Decision.FAILED: "#6e7781",
           Shown.TRAINING: "#8250df", Shown.QUEUED: "#d0d7de"}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v)) if v is not None else "–"


def _changes(ch: dict) -> str:
    if not ch:
        return ""
    items = []
    for k, (old, new) in ch.items():
        items.append(f"<code>{html.escape(k)}</code>: {html.escape(_val(old))} &rarr; {html.escape(_val(new))}")
    return "; ".join(items)


def _val(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={_val(x)}" for k, x in v.items()) + "}"
    return str(v)


def _tree(nodes: list[dict]) -> str:
    children: dict[str | None, list[dict]] = {}
    for n in nodes:
        children.setdefault(n["parent"], []).append(n)

    def li(n: dict) -> str:
        colour = COLOURS.get(shown_state(n) or "", "#57606a")
        link = (f' <a href="{html.escape(n["report"])}">report</a>' if n.get("report")
                else f' <a href="{html.escape(n["run"])}/">run dir</a>')
        why = (f"<div class=why>diagnoses: {', '.join(html.escape(d) for d in n['diagnoses'])}</div>"
               if n["diagnoses"] else "")
        ch = f"<div class=ch>{_changes(n['changes'])}</div>" if n["changes"] else ""
        sub = children.get(n["name"], [])
        inner = "<ul>" + "".join(li(c) for c in sub) + "</ul>" if sub else ""
        return (f"<li><span class=name>{html.escape(n['name'])}</span> <span class=dec style='background:{colour}'>"
                f"{html.escape(str(shown_state(n)))}</span> objective {_fmt(n['objective'])} "
                f"<span class=it>iteration {n['iteration']}</span>{link}"
                f"<div class=title>{html.escape(n.get('title') or '')}</div>{ch}{why}{inner}</li>")

    roots = [n for n in nodes if n["parent"] is None or n["parent"] not in {m["name"] for m in nodes}]
    return "<ul class=tree>" + "".join(li(r) for r in roots) + "</ul>"


def _chart(nodes: list[dict], objective: str) -> str:
    pts = [(n["iteration"], float(n["objective"]), n) for n in nodes
           if isinstance(n["objective"], (int, float)) and math.isfinite(n["objective"])]
    if not pts:
        return "<p>no objective value yet</p>"
    w, h, pad = 640, 300, 50
    its = [p[0] for p in pts]
    vals = [p[1] for p in pts]
    x0, x1 = min(its), max(max(its), min(its) + 1)
    y0, y1 = min(vals), max(vals)
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5 * (abs(y0) or 1), y1 + 0.5 * (abs(y1) or 1)

    def sx(i):
        return pad + (i - x0) / (x1 - x0) * (w - 2 * pad)

    def sy(v):
        return h - pad - (v - y0) / (y1 - y0) * (h - 2 * pad)

    maximize = objective.endswith(":max")
    best_line, best = [], None
    for it in sorted(set(its)):
        for v in (p[1] for p in pts if p[0] == it and shown_state(p[2]) in (Decision.KEPT, Shown.BEST)):
            best = v if best is None else (max(best, v) if maximize else min(best, v))
        if best is not None:
            best_line.append(f"{sx(it):.1f},{sy(best):.1f}")
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' role='img'>",
             f"<line x1='{pad}' y1='{h - pad}' x2='{w - pad}' y2='{h - pad}' stroke='#888'/>",
             f"<line x1='{pad}' y1='{pad}' x2='{pad}' y2='{h - pad}' stroke='#888'/>",
             f"<text x='{w / 2}' y='{h - 12}' text-anchor='middle' font-size='12'>iteration</text>",
             f"<text x='12' y='{pad - 16}' font-size='12'>{html.escape(objective)}</text>"]
    for it in range(x0, x1 + 1):
        parts.append(f"<text x='{sx(it):.1f}' y='{h - pad + 16}' text-anchor='middle' font-size='11'>{it}</text>")
    for v in (y0, (y0 + y1) / 2, y1):
        parts.append(f"<text x='{pad - 4}' y='{sy(v) + 4:.1f}' text-anchor='end' font-size='10'>{v:.5g}</text>")
    if len(best_line) > 1:
        parts.append(f"<polyline fill='none' stroke='#1a7f37' stroke-width='2' points='{' '.join(best_line)}'/>")
    for it, v, n in pts:
        colour = COLOURS.get(shown_state(n) or "", "#57606a")
        parts.append(f"<circle cx='{sx(it):.1f}' cy='{sy(v):.1f}' r='5' fill='{colour}'><title>"
                     f"{html.escape(n['name'])}: {v:.4g} ({html.escape(str(shown_state(n)))})</title></circle>")
    parts.append("</svg>")
    return "".join(parts)


def render(data: dict) -> str:
    """The page for a lineage document (see :mod:`dpot.autopilot.lineage`)."""
    nodes = data["nodes"]
    rows = "".join(
        f"<tr><td>{n['iteration']}</td><td>{html.escape(n['name'])}</td><td>{html.escape(str(n['parent']))}</td>"
        f"<td>{_changes(n['changes'])}</td><td>{html.escape(', '.join(n['diagnoses']))}</td>"
        f"<td>{_fmt(n['objective'])}</td><td>{html.escape(str(shown_state(n)))}</td></tr>" for n in nodes)
    its = "".join(
        f"<tr><td>{r['iteration']}</td><td>{html.escape(str(r.get('parent')))}</td>"
        f"<td>{html.escape(str(r.get('best') or '–'))}</td><td>{_fmt(r.get('best_objective'))}</td>"
        f"<td>{html.escape(str(r.get('next_parent')))}</td></tr>" for r in data["iterations"])
    legend = " ".join(f"<span class=dec style='background:{c}'>{k}</span>" for k, c in COLOURS.items())
    stop = html.escape(str(data.get("stop") or "still running"))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dpot autopilot</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; }}
ul.tree, ul.tree ul {{ list-style: none; padding-left: 1.4em; border-left: 1px solid #d0d7de; }}
ul.tree li {{ margin: .5em 0; }}
.name {{ font-weight: 600; font-family: monospace; }}
.dec {{ color: white; border-radius: 3px; padding: 0 .4em; font-size: .85em; }}
.it, .title, .why, .ch {{ color: #57606a; font-size: .9em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #d0d7de; padding: .2em .5em; text-align: left; }}
</style></head><body>
<h1>dpot autopilot</h1>
<p>objective <code>{html.escape(data['objective'])}</code>, {data['steps']} steps per candidate; study
<code>{html.escape(str(data.get('study')))}</code>; status: {stop}.</p>
<p>{legend}</p>
<h2>Objective per iteration</h2>
{_chart(nodes, data['objective'])}
<p>dots: runs (colour = decision); line: best kept objective so far.</p>
<h2>Runs</h2>
{_tree(nodes)}
<h2>Iterations</h2>
<table><tr><th>iteration</th><th>parent</th><th>new best</th><th>best objective</th><th>next parent</th></tr>
{its}</table>
<h2>All runs</h2>
<table><tr><th>iteration</th><th>run</th><th>parent</th><th>changes</th><th>diagnoses</th><th>objective</th>
<th>decision</th></tr>{rows}</table>
</body></html>
"""
