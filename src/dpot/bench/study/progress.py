"""How far a study's jobs got, in one line each: for a sitting cut by a time guard (``scripts/gpu_study.sh``),
where only finished jobs reach ``results.json``.

    python -m dpot.bench.study.progress RUN_DIR...      # '<job>: last checkpoint step N; logged to step M, ...'
    python -m dpot.bench.study.progress --evals DIR     # 'eval <job> <cell> step N: s/e' per finished evaluation
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from dpot.metrics_log import read_metrics
from dpot.rundir import checkpoint_steps


def run_progress(run_dir: Path) -> str:
    """``'<job>: last checkpoint step N; logged to step M, median update P s/step (R steps/s)'`` from a run
    directory's numbered checkpoints and ``metrics.jsonl`` (``train/update_s`` is the mean seconds of one
    optimizer step over a logging window, CUDA synchronized). Missing pieces read ``none``."""
    run_dir = Path(run_dir)
    ckpts = checkpoint_steps(run_dir)
    last = f"step {ckpts[-1]}" if ckpts else "none"
    rows = [r for r in read_metrics(run_dir) if "train/update_s" in r]   # a line torn by a kill is skipped
    steps, update = [r["step"] for r in rows], [r["train/update_s"] for r in rows]
    speed = "no training steps logged"
    if update:
        med = statistics.median(update)
        speed = f"logged to step {max(steps)}, median update {med:.3f} s/step ({1 / med:.1f} steps/s)"
    return f"{run_dir.name}: last checkpoint {last}; {speed}"


def eval_lines(evals_dir: Path) -> list[str]:
    """One ``'eval <job> <cell> step N: s/e'`` line per evaluation JSON in ``evals_dir``, sorted by name
    (final evaluations and learning-curve points alike)."""
    out = []
    for path in sorted(Path(evals_dir).glob("*.json")):
        try:
            r = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        out.append(f"eval {r.get('job', path.stem)} {r.get('cell', '?')} step {r.get('step', '?')}: "
                   f"{r.get('successes')}/{r.get('episodes')}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--evals"]:
        for d in argv[1:]:
            print("\n".join(eval_lines(Path(d))) or f"no evaluations in {d}")
        return 0
    for d in argv:
        print(run_progress(Path(d)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
