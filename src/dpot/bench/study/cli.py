"""``dpot bench study`` options and entry point (registered lazily in :data:`dpot.bench.cli.SUBCOMMANDS`)."""

from __future__ import annotations

import logging
import os

from dpot import rundir
from dpot.bench.presets import get_preset, parse_methods
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


def thread_advice(env: dict, cpus: int | None, device: str | None) -> str | None:
    """The warning a CPU study prints when ``OMP_NUM_THREADS`` is unset on a small machine (None otherwise): each
    training and evaluation process then runs torch on every core, and two sittings side by side oversubscribe them
    (steps 4-8x slower on 2 cores, measured in session 14)."""
    if "OMP_NUM_THREADS" in env or (device or "cpu") != "cpu" or (cpus or 1) > 4:
        return None
    return (f"dpot bench study: OMP_NUM_THREADS is not set, so torch uses all {cpus or 1} cores in every training "
            "and evaluation process; with two sittings side by side set OMP_NUM_THREADS=1 for each (steps were 4-8x "
            "slower without it on 2 cores)")


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
    advice = thread_advice(dict(os.environ), os.cpu_count(), args.device or get_preset(args.preset).device)
    if advice:
        logging.getLogger("dpot.bench.study").warning(advice)
    res = run_study(args.preset, task=args.task, root=args.dir, seeds=args.seeds, only=args.only,
                    max_jobs=args.max_jobs, device=args.device, eval_workers=args.eval_workers, shift=args.shift)
    for name, m in res["methods"].items():
        cells = "  ".join(f"{d}: {pct(e)}" for d, e in m["domains"].items())
        print(f"{name:24s} seeds={len(m['seeds'])}  {cells}")
    return 0


__all__ = ["add_arguments", "run_cli"]
