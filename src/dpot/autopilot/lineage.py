"""``DIR/lineage.json`` and ``DIR/autopilot.html`` from the study (the study is the only state; both files are
rewritten atomically after every trial, by whichever worker finished it).

lineage.json::

    {"objective": "eval/offline_eval/avg_loss:min", "steps": S, "stop": reason | null,
     "iterations": [{"iteration": i, "parent": name, "best": name | null, "next_parent": name, ...}, ...],
     "nodes": [{"name", "parent", "changes": {"<key>": [old, new]}, "diagnoses": [rule ids], "objective",
                "decision", "shown", "iteration", "kind", "title", "findings", "budget", "trained_steps", "run",
                "report", ...},
               ...]}

``decision`` is what the worker decided and stored (a :class:`~dpot.autopilot.record.Decision`, None while not
done); ``shown`` is what the page shows (that decision, or one of :class:`~dpot.autopilot.record.Shown`; files
written before ``shown`` existed had it in ``decision``: :func:`dpot.autopilot.record.shown_state` reads both).
``shown`` values: ``kept`` (within the rollback tolerance of its parent), ``best`` (shown only: the kept run with
the best objective of the whole search; ``became_parent`` marks every run an iteration started from),
``rolled_back`` (objective worse than the parent's best by more than the tolerance, or non-finite), ``retried``
(unstable: retried with the LR halved as ``<name>-r``), ``pruned`` (stopped early: by the pruner, by a diagnosis
that calls its curve broken (the finding's id in ``findings``), or not promoted by successive halving), ``failed``
(training exited with an error), ``training`` / ``queued`` (not done yet). ``trained_steps``: the steps the run
really trained, all its segments together (a pruned run counts what it trained); ``note``: why a run stopped
early or failed (``stopped at step 3: schedule_mismatch (...)``, the log's last error line).
"""

from __future__ import annotations

import json
from pathlib import Path

from dpot import rundir
from dpot.atomic import write_text
from dpot.autopilot.record import Decision, Shown


def nodes(search) -> list[dict]:
    """One node per run, in the order runs were first enqueued (see the module docstring)."""
    from optuna.trial import TrialState

    entries = sorted(search.store.entries(), key=lambda e: e.number)
    closed = search.iterations()
    became_parent = {r.best for r in closed.values() if r.best}
    by_name: dict[str, list] = {}
    for e in entries:
        by_name.setdefault(e.record.name, []).append(e)
    out = []
    for name, es in by_name.items():
        last = es[-1]
        r = last.record
        shown: str | None = r.decision        # the display state; "decision" stays the stored one
        if last.state == TrialState.WAITING:
            shown = Shown.QUEUED
        elif last.state == TrialState.RUNNING:
            shown = Shown.TRAINING
        elif r.decision == Decision.HALVING and r.iteration in closed:
            shown = Decision.PRUNED           # not promoted by successive halving
        run_dir = search.run_dir(name)
        report = run_dir / rundir.REPORT_HTML
        out.append({
            "name": name, "parent": r.parent, "changes": r.changes, "diagnoses": r.diagnoses,
            "objective": r.objective, "decision": r.decision, "shown": shown, "iteration": r.iteration,
            "kind": r.kind,
            "title": r.title, "findings": r.findings, "budget": r.budget,
            "parent_best": r.parent_best, "regression": r.regression,
            "trained_steps": sum(x.record.trained_steps or 0 for x in es),
            "rungs": [{"budget": x.record.budget, "objective": x.record.objective}
                      for x in es if x.record.objective is not None],
            "retry_of": r.retry_of, "seconds": r.seconds, "worker": r.worker,
            "run": str(run_dir.relative_to(search.out)),
            "report": str(report.relative_to(search.out)) if report.exists() else None,
            "note": r.note or None, "became_parent": name in became_parent,
        })
    kept = [n for n in out if n["shown"] == Decision.KEPT and isinstance(n["objective"], (int, float))]
    if kept:
        best = kept[0]
        for n in kept[1:]:
            if search.objective.better(n["objective"], best["objective"]):
                best = n
        best["shown"] = Shown.BEST
    return out


def lineage(search) -> dict:
    """The whole lineage document (see the module docstring)."""
    closed = search.iterations()
    return {"objective": search.objective.text, "steps": search.steps, "study": search.study.study_name,
            "stop": search.store.stop,
            "iterations": [{"iteration": i, **closed[i].to_attrs()} for i in sorted(closed)],
            "nodes": nodes(search)}


def write(search) -> tuple[Path, Path]:
    """Write ``lineage.json`` and ``autopilot.html`` atomically; returns both paths."""
    from dpot.autopilot.html import render

    data = lineage(search)
    p_json = write_text(search.out / rundir.LINEAGE_FILE, json.dumps(data, indent=2, default=str) + "\n")
    p_html = write_text(search.out / "autopilot.html", render(data))
    return p_json, p_html
