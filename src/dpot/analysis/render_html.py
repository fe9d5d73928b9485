"""Self-contained interactive HTML pages for ``dpot report`` and ``dpot compare``.

Layout of the report page: the verdict first (the run in one line, each finding as a coloured badge with its
one-line reason, readable without hovering), then the plots large and side by side (curves; OT at a glance:
the plan of a logged step as a heatmap, the cost balance, the embedding spread), then the curve summary as a
table (metric | first | last | Δ% | best@step | trend), proposals, rollback triggers, config and notes.

Plots are plotly.js figures (:mod:`dpot.analysis.figures`); plotly.js is inlined once
(``plotly.offline.get_plotlyjs()``, ~4.8 MB; the page loads nothing from the network).
"""

from __future__ import annotations

import html
import importlib.util
import json
import math
from functools import lru_cache
from pathlib import Path

from dpot import metric_names as mn
from dpot.analysis import cfgkeys
from dpot.analysis.i18n import finding_text, prose, t
from dpot.analysis.predictivity import predictivity_line
from dpot.analysis.render_md import (
    CORE,
    OPTIONAL_OT_KEYS,
    OT_KEYS,
    appendix_ot,
    fmt,
    has_ot,
    rollback_triggers,
    seen_keys,
)
from dpot.analysis.summary import span_text
from dpot.metric_names import EVAL_LOSS

_CSS = """body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fff}
main{max-width:1500px;margin:0 auto;padding:12px 20px}
h1{font-size:1.35em;margin:.3em 0}h2{font-size:1.15em;border-bottom:1px solid #ddd;margin-top:1.4em}
code{background:#f3f3f3;padding:0 3px}
.verdict{border:1px solid #ccc;border-radius:6px;padding:10px 14px;background:#fafafa}
.runline{font-size:1.05em;margin-bottom:6px}
.badge{display:inline-block;border-radius:4px;padding:2px 8px;margin-right:6px;color:#fff;font-weight:600;
font-size:.9em;min-width:4.5em;text-align:center}
.alarm .badge{background:#c62828}.warn .badge{background:#ef6c00}.info .badge{background:#1565c0}
.ok .badge{background:#2e7d32}
.finding{margin:4px 0}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(620px,1fr));gap:12px}
.plot{height:420px;border:1px solid #e3e3e3;border-radius:4px}
table{border-collapse:collapse;margin:6px 0;font-size:.92em}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}
th{background:#f2f2f2}.nl{color:#888;text-align:left}
.card{border:1px solid #ddd;border-radius:6px;padding:6px 12px;margin:8px 0}
details{margin:6px 0}ul{margin:4px 0}"""


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """plotly.js as the installed plotly package ships it (``package_data/plotly.min.js``, the file
    ``plotly.offline.get_plotlyjs()`` returns), read without importing plotly (0.3 s); once per process."""
    spec = importlib.util.find_spec("plotly")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        path = Path(loc) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path.read_text(encoding="utf-8")
    from plotly.offline import get_plotlyjs  # an unusual install (zipped): let plotly find it

    return get_plotlyjs()


def _e(x) -> str:
    return html.escape(str(x))


def _json(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def _plots(figs: dict[str, dict], prefix: str = "plot") -> str:
    divs = "\n".join(f'<div class="plot" id="{prefix}-{k}"></div>' for k in figs)
    calls = ";\n".join(f'Plotly.newPlot("{prefix}-{k}",{_json(f["data"])},{_json(f["layout"])},'
                       f'{{"responsive":true,"displaylogo":false}})' for k, f in figs.items())
    return f'<div class="grid">\n{divs}\n</div>\n<script>\n{calls};\n</script>'


def _page(title: str, lang: str, body: str, with_plotly: bool) -> str:
    js = f"<script>{plotly_js()}</script>" if with_plotly else ""
    return (f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_CSS}</style>{js}</head>'
            f"<body><main>\n{body}\n</main></body></html>\n")


def _reason(lang: str, f) -> str:
    """The first sentence of a finding's text: its one-line reason."""
    text = finding_text(lang, f)
    cut = text.find(". ")
    return text[:cut + 1] if 0 < cut < len(text) - 2 else text


def run_line(a) -> str:
    """The run in one line: id, kind, policy, steps, the primary loss first → last and where it is heading."""
    run, s = a.run, a.summaries
    steps = cfgkeys.get(run.config, cfgkeys.STEPS)
    parts = [f"<b>{_e(run.run_id)}</b>", _e(run.kind), _e(cfgkeys.policy_type(run.config) or "policy n/a"),
             f"step {run.last_step}" + (f" of {steps}" if steps else "")]
    ev = s.get(EVAL_LOSS) or s.get("train/loss")
    if ev:
        txt = f"{ev.key} {span_text(ev, fmt)}" + (f" ({ev.change_pct:+.1f}%)" if ev.change_pct is not None else "")
        if ev.best is not None:
            txt += f", best {fmt(ev.best)}@{ev.best_step}"
        ids = {f.id for f in a.findings}
        txt += "; diminishing returns" if "plateau" in ids else (
            "; still improving" if (ev.trend_pct or 0) < -1 else "; flat over the last window")
        parts.append(_e(txt))
    return " · ".join(parts)


def verdict_html(a, lang: str) -> str:
    """The verdict block: the run line, then one coloured badge + one-line reason per finding."""
    rows = [f'<div class="runline">{run_line(a)}</div>']
    for f in a.findings:
        rows.append(f'<div class="finding {f.severity}"><span class="badge">{_e(f.severity)}</span>'
                    f"<b>{_e(f.id)}</b> — {_e(_reason(lang, f))}</div>")
    if not a.findings:
        rows.append(f'<div class="finding ok"><span class="badge">ok</span>{_e(t(lang, "no_findings"))}</div>')
    counts = {sev: sum(f.severity == sev for f in a.findings) for sev in ("alarm", "warn", "info")}
    summary = ", ".join(f"{n} {sev}" for sev, n in counts.items() if n) or "no finding"
    return (f'<section class="verdict" id="verdict" data-findings="{_e(summary)}">'
            + "\n".join(rows) + "</section>")


def summary_table(a, lang: str) -> str:
    """metric | first | last | Δ% | best@step | trend; an unlogged core metric says what the run logged."""
    run = a.run
    keys = list(CORE)
    if has_ot(run):
        keys += [k for k in OT_KEYS if k in run.history or k not in OPTIONAL_OT_KEYS]
        keys += sorted(k for k in run.history if k.startswith((mn.train(mn.COST_STEM), mn.train(mn.EMBED_SPREAD))))
    head = "<tr><th>metric</th><th>first</th><th>last</th><th>Δ%</th><th>best@step</th><th>trend</th></tr>"
    rows = []
    for k in keys:
        s = a.summaries.get(k)
        if s is None:
            rows.append(f'<tr><td>{_e(k)}</td><td class="nl" colspan="5">'
                        f'{_e(t(lang, "not_logged", seen=seen_keys(run)))}</td></tr>')
            continue
        best = f"{fmt(s.best)}@{s.best_step}" if s.best is not None else (
            f"min {fmt(s.min)}, max {fmt(s.max)}" if not s.monotone else "—")
        trend = f"{s.trend_pct:+.1f}% (last {s.window})" if s.trend_pct is not None else "—"
        if s.spikes:
            trend += f"; {len(s.spikes)} spikes"
        ch = f"{s.change_pct:+.1f}%" if s.change_pct is not None and math.isfinite(s.change_pct) else "—"
        src = run.sources.get(k, k)
        name = _e(k) + (f" <small>[{_e(src)}]</small>" if src != k else "")
        rows.append(f"<tr><td>{name}</td><td>{fmt(s.first)}</td><td>{fmt(s.last)}</td><td>{ch}</td>"
                    f"<td>{_e(best)}</td><td>{_e(trend)}</td></tr>")
    return f'<table id="summary">{head}{"".join(rows)}</table>'


def proposals_html(a, lang: str) -> str:
    """One card per proposal: name — title, rationale, changes (old → new, the rule's target when further)."""
    if not a.proposals:
        return f"<p>{_e(t(lang, 'no_proposals'))}</p>"
    out = []
    for p in a.proposals:
        rows = "".join(f"<tr><td><code>{_e(k)}</code></td><td>{_e(json.dumps(cfgkeys.get(a.run.config, k)))}</td>"
                       f"<td>{_e(json.dumps(v))}</td><td>{_e(p.targets.get(k, '') if p.targets else '')}</td></tr>"
                       for k, v in p.changes.items())
        out.append(f'<div class="card"><h3>{_e(p.name)} — {_e(prose(lang, p.title))}</h3>'
                   f"<p>{_e(prose(lang, p.rationale))}</p>"
                   f"<table><tr><th>key</th><th>now</th><th>next run</th><th>target if confirmed</th></tr>{rows}"
                   f"</table><p>triggered by: {_e(', '.join(p.findings) or '—')}; monitors: "
                   f"{_e(', '.join(p.monitors))}</p>"
                   + "".join(f"<p>note: {_e(n)}</p>" for n in p.notes) + "</div>")
    return "\n".join(out)


def render_report_html(a, figs: dict[str, dict], lang: str = "en") -> str:
    """The report page of one analysis (see the module docstring for the layout)."""
    run = a.run
    ev_rows = "".join(f"<li><b>[{_e(f.severity)}] {_e(f.id)}</b> — {_e(finding_text(lang, f))}<br><small>"
                      f"{_e(json.dumps(f.evidence, ensure_ascii=False, default=str))}</small></li>"
                      for f in a.findings)
    trig = rollback_triggers(a)
    flat = cfgkeys.flatten(run.config)
    cfg = {k: flat[k] for k in ("batch_size", "steps", "seed", "use_policy_training_preset", "policy.type",
                                "policy.optimizer_lr", "optimizer.type", "optimizer.lr", "scheduler.type",
                                "scheduler.name", "scheduler.num_warmup_steps", "eval_freq", "eval_steps",
                                "log_freq", "save_freq", "num_workers") if k in flat}
    cfg.update(appendix_ot(run.config))
    cfg_rows = "".join(f"<tr><td><code>{_e(k)}</code></td><td>{_e(json.dumps(v))}</td></tr>" for k, v in cfg.items())
    tp = a.throughput
    tp_txt = ", ".join(f"{k}={fmt(v)}" for k, v in tp.items() if v is not None and not isinstance(v, str))
    pred = predictivity_line(run.config, lang) if EVAL_LOSS in a.summaries else None
    body = [f"<h1>{_e(t(lang, 'title', run_id=run.run_id))}</h1>", verdict_html(a, lang),
            f"<h2>{_e(t(lang, 'plots'))}</h2>",
            _plots(figs) if figs else "<p>no metric to plot</p>",
            *([f'<p class="predictivity">{_e(pred.removeprefix("- "))}</p>'] if pred else []),
            f"<h2>{_e(t(lang, 'curves'))}</h2>", summary_table(a, lang),
            f"<p>{_e(t(lang, 'throughput'))}: {_e(tp_txt)}</p>",
            f"<details open><summary>{_e(t(lang, 'risks'))} — {_e(t(lang, 'evidence'))}</summary>"
            f"<ul>{ev_rows or '<li>' + _e(t(lang, 'no_findings')) + '</li>'}</ul></details>",
            f"<h2>{_e(t(lang, 'plan'))}</h2>", proposals_html(a, lang),
            f"<h2>{_e(t(lang, 'rollback'))}</h2><ul>" + "".join(f"<li>{_e(prose(lang, x))}</li>" for x in trig)
            + "</ul>",
            f"<h2>{_e(t(lang, 'appendix'))}</h2><p>{_e(run.kind)} — {_e(run.location)}</p>"
            f"<table id='config'>{cfg_rows}</table>"]
    if a.notes:
        body.append(f"<h2>{_e(t(lang, 'notes'))}</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in a.notes) + "</ul>")
    return _page(f"dpot report {run.run_id}", lang, "\n".join(body), bool(figs))


def _cell(c: dict, field: str) -> str:
    if not c["logged"]:
        return f'<td class="nl">{_e("not logged (seen: " + c["seen"] + ")")}</td>'
    v = c.get(field)
    if field == "best" and v is not None:
        return f"<td>{fmt(v)}@{c['best_step']}</td>"
    return f"<td>{fmt(v)}</td>"


def render_compare_html(data: dict, figs: dict[str, dict]) -> str:
    """The comparison page: runs, overlaid plots on shared axes, last / best / value at the last common step
    side by side, differing config keys, rollback checks, findings per run."""
    runs = data["runs"]
    names = [f"{chr(65 + i)} [{r['id']}]" for i, r in enumerate(runs)]
    lines = "".join(f"<li><b>{_e(n)}</b> — {_e(r['policy'])} | {_e(r['kind'])} | {_e(r['location'])} | steps "
                    f"{r['last_step']} | findings: {_e(', '.join(data['findings'].get(r['id'], [])) or 'no alarm')}"
                    f"</li>" for n, r in zip(names, runs))
    head = "<tr><th>metric</th>" + "".join(f"<th>{_e(n)} last</th><th>{_e(n)} best@step</th>" for n in names)
    differ = any(r.get("common_step") is not None and r.get("lengths_differ") for r in data["rows"])
    if differ:
        head += "".join(f"<th>{_e(n)} @common step</th>" for n in names)
    head += "<th>wins</th></tr>"
    rows = []
    for row in data["rows"]:
        cells = "".join(_cell(c, "last") + _cell(c, "best") for c in row["cells"])
        if differ:
            cells += "".join(_cell(c, "at_common") for c in row["cells"])
        win = row.get("winner_at_common_step", row["winner"]) if row.get("lengths_differ") else row["winner"]
        win_txt = {None: "—", "tie": "tie"}.get(win) if not isinstance(win, int) else names[win]
        if row.get("lengths_differ") and row.get("common_step") is not None and win is not None:
            win_txt += f" (at step {row['common_step']})"
        rows.append(f"<tr><td>{_e(row['metric'])}</td>{cells}<td>{_e(win_txt)}</td></tr>")
    diffs = "".join(f"<tr><td><code>{_e(k)}</code></td>" + "".join(f"<td>{_e(json.dumps(v))}</td>" for v in vals)
                    + "</tr>" for k, vals in data["config_diffs"].items())
    checks = "".join(f"<li>{_e(c['child'])} vs {_e(c['parent'])} ({_e(c['how'])}): {_e(c['status'])}"
                     + (f" — eval best {fmt(c['child_best'])} vs {fmt(c['parent_best'])} "
                        f"({c['regression_pct']:+.1f}%)" if "regression_pct" in c else "") + "</li>"
                     for c in data["rollback_checks"]) or "<li>single run: nothing to check</li>"
    body = ["<h1>Run Comparison</h1>", f'<section class="verdict"><ul>{lines}</ul></section>',
            "<h2>Curves (runs overlaid)</h2>", _plots(figs, "cmp") if figs else "<p>no metric to plot</p>",
            "<h2>Key metrics</h2>", f'<table id="metrics">{head}{"".join(rows)}</table>',
            "<h2>Config keys that differ</h2>",
            f"<table><tr><th>key</th>{''.join(f'<th>{_e(n)}</th>' for n in names)}</tr>{diffs}</table>"
            if diffs else "<p>none</p>",
            f"<h2>Rollback check</h2><ul>{checks}</ul>"]
    return _page("dpot compare", "en", "\n".join(body), bool(figs))
