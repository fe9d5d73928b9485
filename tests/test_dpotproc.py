"""tests/dpotproc.py, the forked-process runner of the end-to-end tests, behaves like ``subprocess`` for the
commands it takes: exit codes, output, working directory, environment, signals, uncaught exceptions; and it hands
everything else to ``subprocess``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dpotproc

DPOT = [sys.executable, "-m", "dpot"]


@pytest.fixture(autouse=True)
def _enabled(monkeypatch):
    monkeypatch.setattr(dpotproc, "ENABLED", True)


def _both(args, **kw):
    forked = dpotproc.run(args, capture_output=True, text=True, timeout=120, **kw)
    real = subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)
    return forked, real


def test_exit_code_and_output_are_the_console_scripts():
    """A usage error (exit 2, one error line) and help (exit 0, stdout): byte for byte as a real process."""
    forked, real = _both([*DPOT, "trian"])
    assert forked.returncode == real.returncode == 2
    assert forked.stderr == real.stderr and "did you mean 'train'" in forked.stderr and forked.stdout == ""
    forked, real = _both([*DPOT, "--help"])
    assert forked.returncode == real.returncode == 0 and forked.stdout == real.stdout and "train" in forked.stdout


def test_cwd_and_env_are_the_commands(tmp_path):
    """Relative paths resolve in ``cwd``; the child sees exactly ``env`` (a W&B key in it or not), whatever the
    caller's own environment holds: the same last line as a real process in both cases."""
    (tmp_path / "in.json").write_text((Path(__file__).resolve().parents[1] / "configs" / "tour_cpu.json").read_text())
    forked = dpotproc.run([*DPOT, "config", "convert", "in.json", "out.json"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert forked.returncode == 0 and forked.stdout.strip() == "wrote out.json" and (tmp_path / "out.json").is_file()

    base = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    for extra in ({}, {"WANDB_API_KEY": "x", "WANDB_BASE_URL": "http://127.0.0.1:9"}):   # a key only in env
        assert dpotproc._same_import_env(base | extra)          # forked, not handed to subprocess
        forked, real = _both([*DPOT, "report", "ent/proj/abc123"], env=base | extra)
        assert forked.returncode == real.returncode == 2
        assert forked.stderr.strip().splitlines()[-1] == real.stderr.strip().splitlines()[-1]
    assert "WANDB_API_KEY invalid" in forked.stderr and "x" not in forked.stderr.split("(", 1)[0]


def test_a_bad_config_ends_as_in_a_real_process(tmp_path):
    """A config that is not JSON: the same exit code and last stderr line as the console script's process."""
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    forked, real = _both([*DPOT, "train", f"--config_path={bad}"])
    assert forked.returncode == real.returncode != 0
    assert forked.stderr.strip().splitlines()[-1] == real.stderr.strip().splitlines()[-1]


def test_kill_poll_and_timeout_reach_the_forked_process(tmp_path):
    """A command blocked reading its run's metrics (a fifo no one writes): ``wait`` past its timeout raises
    TimeoutExpired, ``poll`` says running, it has its own session, ``killpg`` on its pid ends it (exit -9) and only
    it."""
    (tmp_path / "run").mkdir()
    os.mkfifo(tmp_path / "run" / "metrics.jsonl")
    with open(tmp_path / "log", "w") as log:
        proc = dpotproc.Popen([*DPOT, "report", str(tmp_path / "run")], stdout=log, stderr=subprocess.STDOUT)
    assert isinstance(proc, dpotproc.Popen)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(1.0)
    assert proc.poll() is None
    assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL and proc.poll() == -signal.SIGKILL
    assert dpotproc.run([*DPOT, "trian"], capture_output=True, timeout=60).returncode == 2   # the server lives on


def test_what_it_does_not_run_goes_to_subprocess(tmp_path, monkeypatch):
    """Other programs, an import-time variable set differently, piped output, or DPOT_TEST_FORKSERVER=0: a real
    ``subprocess.Popen``."""
    assert dpotproc._entry(["bash", "-c", "true"]) is None
    assert dpotproc._entry([*DPOT, "train"]) == ("dpot", ["train"])
    assert dpotproc._entry([sys.executable, "-m", "dpot.train", "--x=1"]) == ("dpot", ["train", "--x=1"])
    assert dpotproc._entry([str(Path(sys.executable).with_name("lerobot-train")), "--a"]) == ("lerobot-train", ["--a"])
    assert dpotproc._entry(["/elsewhere/bin/dpot", "train"]) is None       # another installation's script
    p = dpotproc.Popen(["true"])
    assert isinstance(p, subprocess.Popen) and p.wait(10) == 0
    env = {**os.environ, "OMP_NUM_THREADS": str(int(os.environ.get("OMP_NUM_THREADS", "1")) + 1)}
    p = dpotproc.Popen([*DPOT, "--help"], env=env, stdout=subprocess.DEVNULL)
    assert isinstance(p, subprocess.Popen) and p.wait(120) == 0
    p = dpotproc.Popen([*DPOT, "--help"], stdout=subprocess.PIPE)
    assert isinstance(p, subprocess.Popen) and b"train" in p.communicate(timeout=120)[0]
    monkeypatch.setattr(dpotproc, "ENABLED", False)
    p = dpotproc.Popen([*DPOT, "--help"], stdout=subprocess.DEVNULL)
    assert isinstance(p, subprocess.Popen) and p.wait(120) == 0


def test_a_command_left_running_does_not_hold_the_worker_at_exit(tmp_path):
    """A test that leaves a forked command running (blocked on a fifo) must not hang its pytest worker at exit:
    multiprocessing joins its children there, so dpotproc kills what is still running first."""
    (tmp_path / "run").mkdir()
    os.mkfifo(tmp_path / "run" / "metrics.jsonl")
    code = ("import sys, dpotproc; dpotproc.ENABLED = True; dpotproc.PRELOAD[:] = ['dpot.cli']; "
            f"p = dpotproc.Popen([sys.executable, '-m', 'dpot', 'report', {str(tmp_path / 'run')!r}]); "
            "assert isinstance(p, dpotproc.Popen); print(p.pid, flush=True)")
    tests_dir = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (tests_dir, os.environ.get("PYTHONPATH")) if p)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    status = Path(f"/proc/{int(r.stdout.split()[0])}/status")
    deadline = time.time() + 30
    while status.exists() and "\tZ" not in status.read_text().split("State:")[1].splitlines()[0]:
        assert time.time() < deadline, "the forked command outlived its worker"
        time.sleep(0.1)


@pytest.mark.skipif(not dpotproc.LAUNCHES, reason="DPOT_TEST_FORKSERVER=0 / DPOT_TEST_FORKED_LAUNCHES=0: all real")
def test_dpots_own_launches_are_forked_and_keep_the_contract(tmp_path):
    """conftest points dpot.launch.SPAWN at the forked runner: a ``python -m dpot`` launch is forked (its Popen is
    dpotproc's) and runs the preexec_fn in the child; run_dpot captures the command's output as text; a command
    dpot launches through a shell (a --launcher template) stays a real process."""
    from dpot import launch

    assert launch.SPAWN is dpotproc.SPAWNER
    mark = tmp_path / "preexec"
    with open(tmp_path / "log", "w") as fh:
        p = launch.SPAWN.Popen(launch.dpot_cmd("--help"), stdout=fh, stderr=subprocess.STDOUT,
                               env=launch.child_env(), start_new_session=True, preexec_fn=mark.touch)
        assert isinstance(p, dpotproc.Popen) and p.wait(120) == 0
    assert mark.exists() and "usage" in (tmp_path / "log").read_text().lower()
    res = launch.run_dpot("--help", timeout=120)
    assert res.returncode == 0 and isinstance(res.stdout, str) and "usage" in res.stdout.lower()
    shell = launch.SPAWN.Popen(["bash", "-c", "exit 3"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                               env=launch.child_env(), start_new_session=True, preexec_fn=None)
    assert isinstance(shell, subprocess.Popen) and shell.wait(60) == 3
