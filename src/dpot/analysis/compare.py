"""Runs side by side: key metrics (last/best), which run wins each, config keys that differ, rollback check."""

from __future__ import annotations

import json
import math
from pathlib import Path

from dpot import metric_names as mn
from dpot.analysis import cfgkeys
from dpot.analysis.aliases import direction
from dpot.analysis.render_md import fmt, seen_keys
from dpot.metric_names import EVAL_LOSS

KEY_METRICS = ["train/loss", EVAL_LOSS, "train/l1_loss", "train/grad_norm",
               *(mn.train(n) for n in (mn.OT_PI_SUM, mn.OT_PI_DIAG, mn.OT_LOSS)), "train/update_s"]
_IGNORED = ("output_dir", "job_name", "wandb.run_id", "wandb.notes", "checkpoint_path", "resume")


def _same(spec: str | None, run) -> bool:
    if not spec:
        return False
    p = Path(spec).expanduser()
    if p.exists() and run.local_dir is not None:
        return p.resolve() == Path(run.local_dir).resolve() or p.resolve() == Path(run.location).resolve()
    return spec.rstrip("/").split("/")[-1] == run.run_id


def _score(summary, key):
    """Value a run is judged on for ``key``: best for eval losses, smoothed last otherwise."""
    if summary is None:
        return None
    return summary.best if key.startswith("eval/") and summary.best is not None else summary.smoothed_last


def _winner(scores: list, d: str | None):
    """Index of the best score (``d`` = min | max), "tie", or None when fewer than two runs have one."""
    valid = [(v, i) for i, v in enumerate(scores) if v is not None]
    if not d or len(valid) < 2:
        return None
    best = (min(valid) if d == "min" else max(valid))[0]
    idx = [i for v, i in valid if v == best]
    return idx[0] if len(idx) == 1 else "tie"


def _at_step(series, step: int, key: str):
    """The value a run had reached by ``step``: its best so far for eval losses, else its last point <= step."""
    pts = [v for s, v in series if s <= step and math.isfinite(v)]
    if not pts:
        return None
    return min(pts) if key.startswith("eval/") and direction(key) == "min" else pts[-1]


def compare(analyses, rules) -> dict:
    """Comparison data: per-metric cells and winners, differing config keys, rollback checks.

    Where the runs logged a metric over different lengths, each cell also gets ``at_common`` (the value at the
    last step every run reached, ``common_step``; best-so-far for eval losses) and the row a
    ``winner_at_common_step``: a 300-step run does not beat a 60-step one on its last value alone."""
    rows = []
    for key in KEY_METRICS:
        cells, scores = [], []
        for a in analyses:
            s = a.summaries.get(key)
            if s is None:
                cells.append({"logged": False, "seen": seen_keys(a.run)})
                scores.append(None)
            else:
                cells.append({"logged": True, "last": s.last, "best": s.best, "best_step": s.best_step,
                              "source": a.run.sources.get(key, key), "last_step": s.last_step})
                scores.append(_score(s, key))
        d = direction(key)
        row = {"metric": key, "cells": cells, "winner": _winner(scores, d), "common_step": None,
               "lengths_differ": False}
        logged = [(a, c) for a, c in zip(analyses, cells) if c["logged"]]
        if len(logged) >= 2:
            common = min(c["last_step"] for _, c in logged)
            row["common_step"] = common
            row["lengths_differ"] = len({c["last_step"] for _, c in logged}) > 1
            common_scores = []
            for a, c in zip(analyses, cells):
                v = _at_step(a.run.history.get(key, []), common, key) if c["logged"] else None
                if c["logged"]:
                    c["at_common"] = v
                common_scores.append(v)
            row["winner_at_common_step"] = _winner(common_scores, d)
        rows.append(row)
    flats = [cfgkeys.flatten(a.run.config) for a in analyses]
    keys = sorted(set().union(*flats))
    diffs = {k: [f.get(k) for f in flats] for k in keys
             if not k.startswith(_IGNORED) and len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1}
    checks = []
    thr = rules["rollback"]["max_regression"]
    for i, a in enumerate(analyses):
        parents = [j for j, b in enumerate(analyses) if j != i and _same(a.run.parent, b.run)]
        if not parents and i > 0:
            parents, how = [0], "baseline (first run)"
        else:
            how = "recorded parent"
        for j in parents:
            pa, ch = analyses[j].summaries.get(EVAL_LOSS), a.summaries.get(EVAL_LOSS)
            if pa is None or ch is None or pa.best is None or ch.best is None:
                checks.append({"child": a.run.run_id, "parent": analyses[j].run.run_id, "how": how,
                               "status": "unchecked: eval loss not logged in both"})
                continue
            reg = (ch.best - pa.best) / abs(pa.best) if pa.best else 0.0
            checks.append({"child": a.run.run_id, "parent": analyses[j].run.run_id, "how": how,
                           "child_best": ch.best, "parent_best": pa.best, "regression_pct": 100 * reg,
                           "status": "ROLLBACK" if reg > thr else "ok"})
    return {"runs": [{"id": a.run.run_id, "kind": a.run.kind, "location": a.run.location,
                      "policy": cfgkeys.policy_type(a.run.config), "last_step": a.run.last_step}
                     for a in analyses],
            "rows": rows, "config_diffs": diffs, "rollback_checks": checks,
            "findings": {a.run.run_id: [f.id for f in a.findings] for a in analyses}}


def render_compare_md(data: dict) -> str:
    """Markdown for :func:`compare`'s data."""
    runs = data["runs"]
    names = [f"{chr(65 + i)} [{r['id']}]" for i, r in enumerate(runs)]
    L = ["# Run Comparison", ""]
    for n, r in zip(names, runs):
        L.append(f"- Run {n} — {r['policy']} | {r['kind']} | {r['location']} | steps {r['last_step']}")
    L += ["", "## Key metrics (last / best@step)", "", "| metric | " + " | ".join(names) + " | wins |",
          "|---|" + "---|" * len(names) + "---|"]
    footnotes = {}
    for row in data["rows"]:
        cells = []
        for i, c in enumerate(row["cells"]):
            if not c["logged"]:
                cells.append("not logged (seen: see below)")
                footnotes[names[i]] = c["seen"]
            else:
                best = f" / {fmt(c['best'])}@{c['best_step']}" if c["best"] is not None else ""
                cells.append(f"{fmt(c['last'])}{best}")
        win = {None: "—", "tie": "tie"}.get(row["winner"]) or names[row["winner"]]
        if row.get("lengths_differ") and direction(row["metric"]):
            wc = row.get("winner_at_common_step")
            win += f"; at step {row['common_step']}: " + ({None: "—", "tie": "tie"}.get(wc) or names[wc])
        L.append(f"| {row['metric']} | " + " | ".join(cells) + f" | {win} |")
    for n, seen in footnotes.items():
        L.append(f"\n- {n} not logged metrics — seen: {seen}")
    common = [r for r in data["rows"] if r.get("lengths_differ")]
    if common:
        L += ["", "## At the last common step (the runs have different lengths)", "",
              "| metric | step | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for row in common:
            vals = [fmt(c.get("at_common")) if c["logged"] else "not logged" for c in row["cells"]]
            L.append(f"| {row['metric']} | {row['common_step']} | " + " | ".join(vals) + " |")
    L += ["", "## Config keys that differ"]
    if data["config_diffs"]:
        L += ["", "| key | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for k, vals in data["config_diffs"].items():
            L.append(f"| `{k}` | " + " | ".join(json.dumps(v) for v in vals) + " |")
    else:
        L.append("- none")
    L += ["", "## Rollback check"]
    for c in data["rollback_checks"] or []:
        if "regression_pct" in c:
            L.append(f"- {c['child']} vs {c['parent']} ({c['how']}): eval best {fmt(c['child_best'])} vs "
                     f"{fmt(c['parent_best'])} ({c['regression_pct']:+.1f}%) → {c['status']}")
        else:
            L.append(f"- {c['child']} vs {c['parent']} ({c['how']}): {c['status']}")
    if not data["rollback_checks"]:
        L.append("- single run: nothing to check")
    L += ["", "## Findings per run"] + [f"- {k}: {', '.join(v) or 'no alarm'}" for k, v in data["findings"].items()]
    return "\n".join(L) + "\n"
