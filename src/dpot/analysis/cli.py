"""``dpot report | compare | propose``: argument parsing and file output for dpot.analysis.

    dpot report RUN [--out DIR] [--lang en|zh] [--json] [--rules PATH] [--parent RUN]
    dpot compare RUN RUN... [--out DIR] [--json] [--rules PATH]
    dpot propose RUN --out DIR [--rules PATH] [--parent RUN] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dpot import rundir
from dpot.errors import UserError, UserErrorParser
from dpot.rundir import CONFIG_FILE, METRICS_FILE, REPORT_HTML, REPORT_JSON, REPORT_MD

RUN_HELP = (f"a dpot run dir ({METRICS_FILE}), a W&B offline run (wandb/offline-run-*), a TensorBoard log dir, "
            "or a W&B run entity/project/run_id (a folder holding several runs is refused)")


def _parser(command: str) -> argparse.ArgumentParser:
    p = UserErrorParser(prog=f"dpot {command}", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    if command == "compare":
        p.add_argument("runs", nargs="+", metavar="RUN", help=f"runs to compare, the first is the baseline: {RUN_HELP}")
    else:
        p.add_argument("run", metavar="RUN", help=f"the run to analyse: {RUN_HELP}")
        p.add_argument("--parent", metavar="RUN",
                       help="parent run for the rollback check (default: the recorded parent, if any)")
    out_help = {"report": f"output directory for {REPORT_MD}, {REPORT_HTML}, {REPORT_JSON} and plots (default: the "
                          "run's own dir, else reports/<run id>)",
                "compare": "output directory for compare.md, compare.json and the interactive compare.html "
                           "(default: print only)",
                "propose": f"output directory for the next configs <name>.json, {rundir.LINEAGE_FILE} and "
                           "proposals.json (required)"}[command]
    p.add_argument("--out", metavar="DIR", help=out_help)
    p.add_argument("--rules", metavar="PATH",
                   help="TOML file overriding rule thresholds and proposed values (see dpot/analysis/rules.toml)")
    json_help = {"report": "print the report as JSON (run, summaries, not_logged, throughput, findings, proposals, "
                           "notes, files) instead of Markdown",
                 "compare": "print the comparison as JSON instead of Markdown",
                 "propose": "print the proposals as a JSON list instead of one line each"}[command]
    p.add_argument("--json", action="store_true", help=json_help)
    p.add_argument("--lang", default="en",
                   help="report language: en | zh (default: en)" if command == "report" else
                   "language: en | zh (default: en; only dpot report writes prose)")
    return p


def _default_out(run) -> Path:
    """Where a report goes without ``--out``: the run's directory; for a W&B or TensorBoard log inside a dpot run
    directory, next to that log (the dpot run's own report.md is the dpot run's, never replaced); else
    ``reports/<run id>``."""
    if run.local_dir is not None:
        local = Path(run.local_dir)
        if run.kind != "dpot" and rundir.metrics_path(local).is_file():
            log_path = Path(run.location)
            return log_path if log_path.is_dir() else log_path.parent
        return local
    return Path("reports") / run.run_id


def _report(args) -> int:
    from dpot.analysis.analyze import analyze
    from dpot.analysis.figures import report_figures
    from dpot.analysis.i18n import check_lang
    from dpot.analysis.plans import read_plans
    from dpot.analysis.plots import make_plots
    from dpot.analysis.render_html import render_report_html
    from dpot.analysis.render_md import render_markdown, to_json
    from dpot.analysis.rules import load_rules
    from dpot.atomic import write_bytes, write_text

    lang = check_lang(args.lang)
    a = analyze(args.run, load_rules(args.rules), parent=args.parent)
    for note in a.run.notes:   # a torn last line, renamed legacy metrics, ...: said on the console too
        print(f"warning: {a.run.run_id}: {note}", file=sys.stderr)
    out = Path(args.out) if args.out else _default_out(a.run)
    plots = make_plots(a.run, a.summaries, a.rules)
    md = render_markdown(a, lang, plots=list(plots))
    plans = read_plans(a.run.local_dir)
    page = render_report_html(a, report_figures(a.run, a.summaries, a.rules, plans), lang)
    data = to_json(a)
    data["files"] = {"markdown": str(out / REPORT_MD), "html": str(out / REPORT_HTML),
                     "plots": [str(out / n) for n in plots]}
    data["ot_plan_steps"] = [p.step for p in plans]
    for name, png in plots.items():
        write_bytes(out / name, png)
    write_text(out / REPORT_HTML, page)
    write_text(out / REPORT_JSON, json.dumps(data, indent=2, default=str) + "\n")
    write_text(out / REPORT_MD, md)
    print(json.dumps(data, indent=2, default=str) if args.json else md)
    print(f"wrote {out / REPORT_MD} and {out / REPORT_HTML}", file=sys.stderr)
    return 0


def _compare(args) -> int:
    from dpot.analysis.analyze import analyze
    from dpot.analysis.compare import KEY_METRICS, compare, render_compare_md
    from dpot.analysis.figures import compare_figures
    from dpot.analysis.render_html import render_compare_html
    from dpot.analysis.rules import load_rules
    from dpot.atomic import write_text

    if len(args.runs) < 2:
        raise UserError(f"RUN: dpot compare needs two or more runs, got one ({args.runs[0]}); for one run use "
                        f"dpot report {args.runs[0]}")
    rules = load_rules(args.rules)
    analyses = [analyze(r, rules) for r in args.runs]
    data = compare(analyses, rules)
    md = render_compare_md(data)
    if args.out:
        names = [f"{chr(65 + i)} [{a.run.run_id}]" for i, a in enumerate(analyses)]
        page = render_compare_html(data, compare_figures(analyses, KEY_METRICS, names))
        write_text(Path(args.out) / "compare.json", json.dumps(data, indent=2, default=str) + "\n")
        write_text(Path(args.out) / "compare.md", md)
        write_text(Path(args.out) / "compare.html", page)
    print(json.dumps(data, indent=2, default=str) if args.json else md)
    return 0


def _propose(args) -> int:
    from dpot.analysis.analyze import analyze
    from dpot.analysis.propose import write_proposals
    from dpot.analysis.rules import load_rules

    if not args.out:
        raise UserError("dpot propose: --out DIR is required (where the next configs are written)")
    a = analyze(args.run, load_rules(args.rules), parent=args.parent)
    if not a.run.config:
        raise UserError(f"{args.run}: no resolved config found ({CONFIG_FILE} or W&B config); "
                        f"cannot derive next configs")
    spec = str(Path(args.run).resolve()) if Path(args.run).exists() else args.run
    paths = write_proposals(a.proposals, Path(args.out), spec)
    if args.json:
        print(json.dumps([p.as_dict() for p in a.proposals], indent=2, default=str))
        return 0
    if not a.proposals:
        print("no proposal: no rule triggered a change and the run is not improving any more")
    for p, path in zip(a.proposals, paths):
        print(f"{path}: {p.title} — {p.rationale}")
        print(f"    monitors: {', '.join(p.monitors)}")
        print(f"    rollback: {p.rollback_triggers[0]}")
        for n in p.notes:
            print(f"    note: {n}")
    return 0


def main(argv: list[str] | None = None, command: str = "report") -> int:
    """Entry point used by ``dpot.cli``: ``command`` is report | compare | propose; returns the exit code."""
    if command not in ("report", "compare", "propose"):
        raise UserError(f"dpot.analysis: unknown command {command}")
    args = _parser(command).parse_args(list(argv or []))
    return {"report": _report, "compare": _compare, "propose": _propose}[command](args)
