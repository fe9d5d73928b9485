"""``DIR/lineage.json`` and ``DIR/autopilot.html`` from the study (the study is the only state; both files are
rewritten atomically after every trial, by whichever worker finished it).

lineage.json::

    {"objective": "eval/offline_eval/avg_loss:min", "steps": S, "stop": reason | null,
     "iterations": [{"iteration": i, "parent": name, "best": name | null, "next_parent": name, ...}, ...],
     "nodes": [{"name", "parent", "changes": {"<key>": [old, new]}, "diagnoses": [rule ids], "objective",
                "decision", "iteration", "kind", "title", "findings", "budget", "run", "report", ...}, ...]}

Decisions: ``kept`` (within the rollback tolerance of its parent), ``best`` (the kept run with the best objective of
the whole search; ``became_parent`` marks every run an iteration started from),
``rolled_back`` (objective worse than the parent's best by more than the tolerance, or non-finite), ``retried``
(unstable: retried with the LR halved as ``<name>-r``), ``pruned`` (stopped early by the pruner or not promoted by
successive halving), ``failed`` (training exited with an error), ``training`` / ``queued`` (not done yet).
"""

from __future__ import annotations

import json
from pathlib import Path

from dpot import rundir
from dpot.atomic import write_text


def nodes(search) -> list[dict]:
    """One node per run, in the order runs were first enqueued."""
    from optuna.trial import TrialState

    trials = sorted(search._trials(), key=lambda t: t.number)
    records = search._iter_records()
    best_names = {r.get("best") for r in records.values() if r.get("best")}
    by_name: dict[str, list] = {}
    for t in trials:
        by_name.setdefault(t.user_attrs["name"], []).append(t)
    out = []
    for name, ts in by_name.items():
        last = ts[-1]
        a = last.user_attrs
        decision = a.get("decision")
        if last.state == TrialState.WAITING:
            decision = "queued"
        elif last.state == TrialState.RUNNING:
            decision = "training"
        elif decision == "halving" and a["iteration"] in records:
            decision = "pruned"           # not promoted by successive halving
        run_dir = search.run_dir(name)
        report = run_dir / rundir.REPORT_HTML
        out.append({
            "name": name, "parent": a.get("parent"), "changes": a.get("changes") or {},
            "diagnoses": a.get("diagnoses") or [], "objective": a.get("objective"), "decision": decision,
            "iteration": a["iteration"], "kind": a["kind"], "title": a.get("title", ""),
            "findings": a.get("findings") or [], "budget": a.get("budget"),
            "parent_best": a.get("parent_best"), "regression": a.get("regression"),
            "rungs": [{"budget": t.user_attrs.get("budget"), "objective": t.user_attrs.get("objective")}
                      for t in ts if t.user_attrs.get("objective") is not None],
            "retry_of": a.get("retry_of"), "seconds": a.get("seconds"), "worker": a.get("worker"),
            "run": str(run_dir.relative_to(search.out)),
            "report": str(report.relative_to(search.out)) if report.exists() else None,
            "note": a.get("note") or None, "became_parent": name in best_names,
        })
    kept = [n for n in out if n["decision"] == "kept" and isinstance(n["objective"], (int, float))]
    if kept:
        best = kept[0]
        for n in kept[1:]:
            if search.objective.better(n["objective"], best["objective"]):
                best = n
        best["decision"] = "best"
    return out


def lineage(search) -> dict:
    """The whole lineage document (see the module docstring)."""
    records = search._iter_records()
    return {"objective": search.objective.text, "steps": search.steps, "study": search.study.study_name,
            "stop": search.study.user_attrs.get("stop"),
            "iterations": [{"iteration": i, **records[i]} for i in sorted(records)],
            "nodes": nodes(search)}


def write(search) -> tuple[Path, Path]:
    """Write ``lineage.json`` and ``autopilot.html`` atomically; returns both paths."""
    from dpot.autopilot.html import render

    data = lineage(search)
    p_json = write_text(search.out / "lineage.json", json.dumps(data, indent=2, default=str) + "\n")
    p_html = write_text(search.out / "autopilot.html", render(data))
    return p_json, p_html
