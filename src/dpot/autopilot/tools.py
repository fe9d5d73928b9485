"""``dpot report | propose | train`` as subprocesses, and the ``--launcher`` command template.

The autopilot reads the analysis and drives the trainer only through their command lines, so each candidate is a
normal dpot run directory that ``dpot report/compare`` (and a person) can read.

Launcher template placeholders (``str.format``): ``{cmd}`` the whole train command, shell-quoted
(``python -m dpot train --config_path=... [--resume=true]``); ``{args}`` only its arguments (for ``accelerate launch
--config_file my.yaml -m dpot.train {args}``); ``{name}`` the run's name; ``{run_dir}`` its output directory;
``{python}`` this interpreter. The template runs through ``bash -c`` and must block until training ends (e.g.
``srun {cmd}`` or ``sbatch --wait ...``).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dpot.errors import UserError

log = logging.getLogger(__name__)
PLACEHOLDERS = ("cmd", "args", "name", "run_dir", "python")


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("WANDB_SILENT", "true")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("MUJOCO_GL", "egl")                  # dpot bench eval renders headless
    env.setdefault("PYOPENGL_PLATFORM", env["MUJOCO_GL"])
    src = str(Path(__file__).resolve().parents[2])        # the dpot being run, also for the child processes
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if src not in parts:
        env["PYTHONPATH"] = os.pathsep.join([src, *parts])
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGKILL when the autopilot dies (kill -9 leaves no orphan trainer behind)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except OSError:
        pass


def dpot_cmd(*args: str) -> list[str]:
    """``python -m dpot <args>`` with this interpreter."""
    return [sys.executable, "-m", "dpot", *args]


def check_launcher(template: str | None) -> None:
    """UserError when the template is not a ``str.format`` template over :data:`PLACEHOLDERS` using cmd or args."""
    if template is None:
        return
    import string

    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        raise UserError(f"--launcher: {err}; write literal braces as {{{{ }}}}") from None
    bad = sorted(fields - set(PLACEHOLDERS))
    if bad:
        raise UserError(f"--launcher: unknown placeholder {{{bad[0]}}}; use {{cmd}} (or {{args}}), {{name}}, "
                        f"{{run_dir}}, {{python}}")
    if not fields & {"cmd", "args"}:
        raise UserError("--launcher: the template must contain {cmd} or {args} (where the train command goes)")


def train_command(config_path: Path, resume: bool, name: str, run_dir: Path, launcher: str | None) -> list[str]:
    """The argv that trains (or resumes) one run: ``dpot train`` directly, or the launcher template through bash."""
    args = [f"--config_path={config_path}"] + (["--resume=true"] if resume else [])
    cmd = dpot_cmd("train", *args)
    if launcher is None:
        return cmd
    text = launcher.format(cmd=shlex.join(cmd), args=shlex.join(args), name=name, run_dir=shlex.quote(str(run_dir)),
                           python=shlex.quote(sys.executable))
    return ["bash", "-c", text]


def run_monitored(cmd: list[str], log_path: Path, poll: Callable[[], str | None],
                  interval: float = 0.5) -> tuple[int, str]:
    """Run ``cmd`` (output appended to ``log_path``) in its own process group; call ``poll()`` every ``interval`` s.
    When it returns a reason (e.g. ``"budget"``, ``"pruned"``), the group is stopped (SIGTERM, then SIGKILL after
    20 s). The group id is kept in ``<log>.pgid`` while it runs, so that a worker taking over after this one was
    killed can stop what it left behind (:func:`kill_leftover`). Returns ``(exit code, reason or "")``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pgid_file = log_path.with_suffix(".pgid")
    with open(log_path, "a", encoding="utf-8") as fh:
        fh.write(f"\n# autopilot {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env(), start_new_session=True,
                                preexec_fn=_die_with_parent)
        pgid_file.write_text(str(proc.pid))
        reason = ""
        try:
            while proc.poll() is None:
                time.sleep(interval)
                if not reason and proc.poll() is None:
                    reason = poll() or ""
                    if reason:
                        _stop(proc)
            if not reason:
                reason = poll() or ""      # the last lines written before exit
        except BaseException:
            _stop(proc)
            raise
        _stop(proc)                        # whatever the launcher left in the group
        pgid_file.unlink(missing_ok=True)
        return proc.returncode, reason


def kill_leftover(log_path: Path, marker: str) -> int:
    """SIGKILL the processes of the group recorded in ``<log>.pgid`` whose command line contains ``marker`` (the
    run's config path): a training left running by a killed worker on this machine. Returns how many."""
    pgid_file = log_path.with_suffix(".pgid")
    if not pgid_file.exists():
        return 0
    try:
        pgid = int(pgid_file.read_text().strip())
    except ValueError:
        return 0
    n = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if os.getpgid(int(proc.name)) != pgid:
                continue
            if marker in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                os.kill(int(proc.name), signal.SIGKILL)
                n += 1
        except (OSError, ValueError):
            continue
    pgid_file.unlink(missing_ok=True)
    return n


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _run_cli(args: list[str], what: str, timeout: float = 900) -> str:
    res = subprocess.run(dpot_cmd(*args), capture_output=True, text=True, env=_env(), timeout=timeout)
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"{what} failed (exit {res.returncode}): {tail}")
    return res.stdout


def report(run_dir: Path, parent_dir: Path | None = None, rules: str | None = None) -> dict:
    """``dpot report RUN --json [--parent P] [--rules R]``: the analysis as JSON (it also writes the run's
    ``report.md/html`` into the run directory)."""
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
