"""dpot.launch: one launcher of a training run for the autopilot and the study, one place for the environment
defaults of dpot processes and their children."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from dpot import launch, rundir

SRC = Path(__file__).resolve().parents[1] / "src" / "dpot"


def _fake_checkpoint(run: Path, step: int, total: int) -> None:
    state = rundir.checkpoint_dir(run, step, total) / rundir.STATE_DIR
    state.mkdir(parents=True)
    (state / rundir.STEP_FILE).write_text(json.dumps({"step": step}))


def test_launch_train_resumes_from_a_checkpoint_and_starts_over_without_one(tmp_path):
    """The launcher template stands in for the trainer (``true {args}``): what matters here is the command, the
    log header, the resume decision and the clean start."""
    cfg, log = tmp_path / "c.json", tmp_path / "logs" / "r.log"
    run = tmp_path / "run"
    run.mkdir()
    (run / "stale.txt").write_text("a start that saved nothing")
    first = launch.launch_train(cfg, run, log, launcher="true {args}", who="study")
    assert (first.returncode, first.reason, first.resumed) == (0, "", False) and not run.exists()
    _fake_checkpoint(run, 2, 8)
    second = launch.launch_train(cfg, run, log, launcher="true {args}", who="study")
    assert second.resumed and second.command[-1].endswith(f"--config_path={cfg} --resume=true")
    headers = [x for x in log.read_text().splitlines() if x.startswith("# study ")]
    assert len(headers) == 2 and " fresh: " in headers[0] and " resumed: " in headers[1]
    assert not log.with_suffix(".pgid").exists()


def test_launch_train_stops_the_run_when_poll_says_so(tmp_path):
    t0 = time.monotonic()
    res = launch.launch_train(tmp_path / "c.json", tmp_path / "run", tmp_path / "r.log", launcher="sleep 60 # {cmd}",
                              poll=lambda: "budget", interval=0.05)
    assert res.reason == "budget" and res.returncode != 0 and time.monotonic() - t0 < 30


def test_environment_defaults_in_one_place(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    env = launch.child_env()
    assert env["MUJOCO_GL"] == "osmesa" and env["PYOPENGL_PLATFORM"] == "osmesa"   # a value the user set wins
    assert env["HF_HUB_OFFLINE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(SRC.parent)               # the child runs this dpot
    assert "HF_HUB_OFFLINE" not in os.environ                                      # child_env leaves ours alone
    assert launch.set_env_defaults({}) == launch.PROCESS_ENV


def test_launch_imports_only_errors_and_rundir_of_dpot():
    """Every layer that starts a process may use it (no torch, no numpy)."""
    import ast

    tree = ast.parse((SRC / "launch.py").read_text())
    mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert {m for m in mods if m.startswith("dpot")} == {"dpot.errors", "dpot.rundir"}
