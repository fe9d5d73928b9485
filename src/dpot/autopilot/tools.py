"""``dpot report | propose | bench eval`` as subprocesses (training is launched by :func:`dpot.launch.launch_train`).

The autopilot reads the analysis and drives the trainer only through their command lines, so each candidate is a
normal dpot run directory that ``dpot report/compare`` (and a person) can read.
"""

from __future__ import annotations

import json
from pathlib import Path

from dpot import rundir
from dpot.launch import run_dpot


def _run_cli(args: list[str], what: str, timeout: float = 900) -> str:
    res = run_dpot(*args, timeout=timeout)
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"{what} failed (exit {res.returncode}): {tail}")
    return res.stdout


def report(run_dir: Path, parent_dir: Path | None = None, rules: str | None = None) -> dict:
    """``dpot report RUN --json [--parent P] [--rules R]``: the analysis as JSON (it also writes the run's
    report files into the run directory)."""
    args = ["report", str(run_dir), "--json"]
    if parent_dir is not None:
        args += ["--parent", str(parent_dir)]
    if rules:
        args += ["--rules", rules]
    out = _run_cli(args, f"dpot report {run_dir}")
    return json.loads(out)


def propose(run_dir: Path, out_dir: Path, rules: str | None = None) -> list[tuple[dict, dict]]:
    """``dpot propose RUN --out DIR --json``: ``[(proposal, complete next config), ...]`` in proposal order."""
    args = ["propose", str(run_dir), "--out", str(out_dir), "--json"]
    if rules:
        args += ["--rules", rules]
    props = json.loads(_run_cli(args, f"dpot propose {run_dir}"))
    return [(p, json.loads((out_dir / f"{p['name']}.json").read_text())) for p in props]


def bench_eval(policy: Path, task: str, episodes: int, max_steps: int, out: Path) -> dict:
    """``dpot bench eval --policy P --task T --domain target``: closed-loop success, written to ``out`` (JSON with
    ``success_rate``) and returned."""
    args = ["bench", "eval", "--policy", str(policy), "--task", task, "--domain", "target", "--episodes",
            str(episodes), "--max-steps", str(max_steps), "--gifs", "0", "--out", str(out)]
    _run_cli(args, f"dpot bench eval {policy}", timeout=3600)
    return json.loads(out.read_text())


def bench_success(run_dir: Path, task: str, step: int, total_steps: int, episodes: int, max_steps: int,
                  evaluate: bool = True) -> float | None:
    """The closed-loop success rate of the run's checkpoint at ``step``, cached in
    ``<run>/bench_<task>_<step>.json`` (:func:`dpot.rundir.bench_result_path`): read from the cache, else evaluated
    (:func:`bench_eval`) when ``evaluate`` and the checkpoint exists, else None.

    Raises:
        RuntimeError: the evaluation failed.
    """
    cache = rundir.bench_result_path(run_dir, task, step, total_steps)
    if not cache.exists():
        ckpt = rundir.checkpoint_dir(run_dir, step, total_steps) / rundir.MODEL_DIR
        if not evaluate or not ckpt.exists():
            return None
        bench_eval(ckpt, task, episodes, max_steps, cache)
    return float(json.loads(cache.read_text())["success_rate"])
