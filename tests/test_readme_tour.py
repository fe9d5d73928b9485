"""The README's 5-minute tour runs as written (issue 34): every ``dpot`` command of its code block, as the README
spells it, from a folder laid out like the repository root (``configs/`` beside it), sizes reduced only through
flags appended at the end (argparse and draccus take the last value). The GPU lines (``accelerate launch``) and the
study's long runs (step 5 without ``--plan``) are the ones not run here: tests/study covers the study."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

import dpotproc  # tests/: the commands run in processes forked from a pre-imported interpreter

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow

# flags appended to each kind of command (the tour's own flags stay; these come last and win)
SMALLER = {
    "bench generate": ["--episodes", "3"],
    "train": ["--steps=4", "--batch_size=4", "--num_workers=0", "--log_freq=1", "--save_freq=2", "--eval_freq=2",
              "--eval.n_batches=1"],
    "autopilot": ["--iterations", "0", "--steps", "2"],      # the base run: iterations are tests/autopilot's
    "bench eval": ["--episodes", "1", "--workers", "1"],
    "probe": ["--frames", "16"],
}


def tour_commands(readme: str) -> list[str]:
    """The shell commands of the README's tour block, continuation lines joined, trailing comments dropped."""
    block = readme.split("## A 5-minute tour", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands, current = [], ""
    for line in block.splitlines():
        code = re.split(r"\s+#", line, maxsplit=1)[0].rstrip() if not line.lstrip().startswith("#") else ""
        if not code and not current:
            continue
        current += " " + code.rstrip("\\").strip()
        if not code.endswith("\\"):
            commands.append(current.strip())
            current = ""
    return commands


def runnable(command: str) -> list[str] | None:
    """The argv to run for a tour command (with its SMALLER flags), or None for the lines not run here."""
    argv = shlex.split(command)
    env_free = [a for a in argv if not re.match(r"^[A-Z_]+=", a)]
    if not env_free or env_free[0] != "dpot":
        return None                     # source .venv/bin/activate, accelerate launch (GPU)
    sub = " ".join(env_free[1:3])
    if sub == "bench study" and "--plan" not in env_free:
        return None
    for kind, extra in SMALLER.items():
        if sub.startswith(kind):
            return env_free + extra
    return env_free


def test_the_tour_runs_as_written(tmp_path):
    commands = tour_commands((ROOT / "README.md").read_text())
    assert any(c.startswith("dpot train --config_path=configs/") for c in commands)
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    ran = []
    for command in commands:
        argv = runnable(command)
        if argv is None:
            continue
        res = dpotproc.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"{' '.join(argv)}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
        ran.append(argv[1])
    assert {"bench", "train", "report", "compare", "propose", "autopilot"} <= set(ran)
    assert (tmp_path / "outputs").is_dir() and list((tmp_path / "next").glob("*.json"))
