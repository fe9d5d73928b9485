"""``dpot bench study`` options and entry point (registered lazily in :data:`dpot.bench.cli.SUBCOMMANDS`)."""

from __future__ import annotations

import logging

from dpot import rundir
from dpot.bench.presets import parse_methods
from dpot.bench.study.plan import plan_jobs
from dpot.bench.study.rendering import pct
from dpot.bench.study.runner import make_study, run_study


def add_arguments(p) -> None:
    """The options of ``dpot bench study`` (registered in :data:`dpot.bench.cli.SUBCOMMANDS`)."""
    from dpot.bench.presets import METHOD_TABLES, PRESETS

    p.add_argument("--preset", default="cpu-small", help=" | ".join(PRESETS) + " (default cpu-small; "
                   "cpu-idood: the paper's ID/OOD protocol)")
    p.add_argument("--task", default=None, help="default: the preset's first task")
    p.add_argument("--shift", default=None, help="target domain: target (visual + dynamics) | target-visual "
                   "(camera pose + table texture); default: the preset's")
    p.add_argument("--dir", default=None, help="study directory (default outputs/study/<preset>-<task>[-<shift>])")
    p.add_argument("--seeds", type=int, default=None, help="seeds per method (default: the preset's, 3)")
    p.add_argument("--only", default=None, help="comma-separated methods of the preset: " + "; ".join(
        f"{name} presets: {', '.join(t)}" for name, t in METHOD_TABLES.items()))
    p.add_argument("--max-jobs", type=int, default=None, help="run at most K unfinished jobs this sitting")
    p.add_argument("--device", default=None, help="training/eval device (default: the preset's)")
    p.add_argument("--eval-workers", type=int, default=None, help="evaluation processes")
    p.add_argument("--plan", action="store_true", help="print the jobs and their state; run nothing")


def run_cli(args) -> int:
    """``dpot bench study`` with parsed ``args``; returns the exit code."""
    if args.plan:
        study = make_study(args.preset, task=args.task, root=args.dir, shift=args.shift)
        jobs = plan_jobs(parse_methods(args.only, study.preset.method_table), args.seeds or study.preset.seeds,
                         cap=args.seeds)
        total = 0.0
        for job in jobs:
            state = "done" if study.is_done(job) else (
                "partial" if rundir.last_checkpoint(study.run_dir(job)) is not None else "todo")
            left = study.cpu_seconds_left(job)
            total += left
            est = f"~{left / 60:.0f} core-min left" if left else ""
            print(f"{job.id:32s} {state:8s} {est}")
        print(f"{sum(not study.is_done(j) for j in jobs)} of {len(jobs)} jobs left, ~{total / 3600:.1f} core-hours "
              f"(estimate: {study.preset.cpu_s_per_step} s/step, {study.preset.cpu_s_per_episode} s/episode on one "
              "core)")
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("dpot.bench.study").setLevel(logging.INFO)
    res = run_study(args.preset, task=args.task, root=args.dir, seeds=args.seeds, only=args.only,
                    max_jobs=args.max_jobs, device=args.device, eval_workers=args.eval_workers, shift=args.shift)
    for name, m in res["methods"].items():
        cells = "  ".join(f"{d}: {pct(e)}" for d, e in m["domains"].items())
        print(f"{name:24s} seeds={len(m['seeds'])}  {cells}")
    return 0


__all__ = ["add_arguments", "run_cli"]
