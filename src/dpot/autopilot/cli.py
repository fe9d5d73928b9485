"""``dpot autopilot``: report -> propose -> train -> compare -> rollback, run by the tool (see dpot.autopilot.engine).

    dpot autopilot --config_path BASE.json --out DIR [--iterations N] [--candidates K] [--steps S]
                   [--objective METRIC[:min|max]] [--storage URL] [--launcher TEMPLATE] [--rules PATH]
                   [--strategy rules|sampler|both|prior] [--sampler tpe|gp]

Rerun the same command to continue a stopped or killed search; start it several times (same arguments) to have
several workers share it (SQLite under DIR on one machine; --storage postgresql://... across machines).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dpot import rundir
from dpot.autopilot.sampling import STRATEGIES
from dpot.errors import UserErrorParser


def _parser() -> argparse.ArgumentParser:
    from dpot.autopilot.spec import DEFAULT_OBJECTIVE

    p = UserErrorParser(prog="dpot autopilot", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config_path", required=True, help="base dpot train config (JSON); trained first as 'base'")
    p.add_argument("--out", required=True,
                   help=f"search directory: study.db, runs/, configs/, {rundir.LINEAGE_FILE}, autopilot.html")
    p.add_argument("--iterations", type=int, default=3, help="propose/train rounds after the base run (default 3)")
    p.add_argument("--candidates", type=int, default=3,
                   help="at most this many proposals trained per iteration; > 2 uses successive halving (default 3)")
    p.add_argument("--steps", type=int, default=None, help="training steps of every run (default: the base config's)")
    p.add_argument("--objective", default=DEFAULT_OBJECTIVE,
                   help=f"logged metric to optimise, METRIC[:min|max] (default {DEFAULT_OBJECTIVE}), or bench:<task>: "
                        f"closed-loop target success of each run's checkpoint (dpot bench eval; bench data only)")
    p.add_argument("--storage", default=None, help="Optuna RDB URL shared by workers, e.g. "
                                                   "postgresql://user:pw@host/db (default: sqlite under --out)")
    p.add_argument("--launcher", default=None,
                   help="command template that runs one training, e.g. 'srun --gres=gpu:1 {cmd}' or 'accelerate "
                        "launch --config_file acc.yaml -m dpot.train {args}'; placeholders {cmd} {args} {name} "
                        "{run_dir} {python}; must block until the training ends")
    p.add_argument("--rules", default=None, help="TOML overriding diagnosis thresholds (passed to dpot report/propose)")
    p.add_argument("--max_regression", type=float, default=0.10,
                   help="roll back a candidate whose objective is worse than its parent's best by more than this "
                        "fraction (default 0.10, the seed's 10%%)")
    p.add_argument("--patience", type=int, default=2,
                   help="stop when the best objective improved by less than --min_delta over this many iterations "
                        "(0 = never; default 2)")
    p.add_argument("--min_delta", type=float, default=0.01, help="relative improvement counted as progress (0.01)")
    p.add_argument("--pruner", choices=("median", "halving", "none"), default="median",
                   help="Optuna pruner fed with the objective logged during training: median (default) or "
                        "successive halving (SuccessiveHalvingPruner)")
    p.add_argument("--no_prune_broken", dest="prune_broken", action="store_false",
                   help="let a candidate train on when dpot report calls its curve broken at an evaluation "
                        "(diverging, stalled at a far-too-high LR, a varying LR logged flat, a warmup as long as "
                        "the run); by default it is stopped there")
    p.add_argument("--bench_episodes", type=int, default=10,
                   help="episodes per closed-loop evaluation for --objective bench:<task> (default 10)")
    p.add_argument("--bench_max_steps", type=int, default=150, help="episode length for bench:<task> (150)")
    p.add_argument("--no_explore", dest="explore", action="store_false",
                   help="stop when the diagnoses are spent instead of trying one-step moves (lr, lambda_ot, "
                        "reg x2 and /2)")
    p.add_argument("--strategy", choices=STRATEGIES, default="both",
                   help="how candidates are found: 'both' (default) acts on the diagnoses first, then samples around "
                        "the best kept run with a model-based sampler told about every finished run; 'rules' only "
                        "diagnoses (then --no_explore's one-step moves); 'sampler' only samples around the base "
                        "config; 'prior' samples around the best kept run with its diagnoses as the prior (the LR "
                        "where no LR rule fires; fixes outside the searched space, e.g. a warmup cut, applied)")
    p.add_argument("--sampler", choices=("tpe", "gp"), default="tpe",
                   help="the model-based Optuna sampler of --strategy both|sampler|prior (default tpe)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the sampler's draws: searches with different seeds draw differently, the same "
                        "command draws the same (default: none, the fixed draws of earlier versions)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: list[str] | None = None, command: str = "autopilot") -> int:
    """Entry point used by ``dpot.cli``; returns the exit code (bad input: UserError -> ``error:`` line, exit 2)."""
    from dpot.autopilot.engine import Search, Settings

    a = _parser().parse_args(list(argv or []))
    s = Settings(config_path=a.config_path, out=Path(a.out), iterations=a.iterations, candidates=a.candidates,
                 steps=a.steps, objective=a.objective, storage=a.storage, launcher=a.launcher, rules=a.rules,
                 max_regression=a.max_regression, patience=a.patience, min_delta=a.min_delta, pruner=a.pruner,
                 prune_broken=a.prune_broken,
                 bench_episodes=a.bench_episodes, bench_max_steps=a.bench_max_steps, explore=a.explore,
                 strategy=a.strategy, sampler=a.sampler, seed=a.seed, quiet=a.quiet)
    search = Search(s)
    search.open()
    search.run()
    return 0
