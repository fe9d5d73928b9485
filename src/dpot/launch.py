"""Starting dpot processes: the environment every dpot process and every child it starts gets, and the one
launcher of a training run (``dpot train [--resume=true]`` in a child process) used by the autopilot and the study.

Linux process control lives here and nowhere else in ``dpot``: the child's own process group, SIGKILL when its
parent dies (``prctl``), the group id kept in ``<log>.pgid`` and the ``/proc`` scan that stops a training a killed
launcher left behind. What a run directory holds and is called is :mod:`dpot.rundir`'s; this module only reads
whether a run has a complete checkpoint (resume) and removes a run directory that has none (a start that saved
nothing). Imports nothing of dpot's but ``errors`` and ``rundir`` (no torch, no numpy).
"""

from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dpot.errors import UserError
from dpot.rundir import checkpoint_steps

__all__ = [
    "CHILD_ENV", "PLACEHOLDERS", "PROCESS_ENV", "SPAWN", "Launch", "check_launcher", "child_env", "dpot_cmd",
    "kill_leftover", "launch_train", "run_dpot", "set_env_defaults", "train_command",
]

#: What starts dpot's own child processes: :func:`launch_train`'s trainings (``SPAWN.Popen``) and :func:`run_dpot`'s
#: ``dpot report | propose | bench eval`` calls (``SPAWN.run``); ``subprocess`` itself. The one seam for a caller
#: that starts ``python -m dpot ...`` command lines another way with the same contract (exit code, output to the
#: given file or captured, its own session, ``preexec_fn`` run in the child): the test suite forks them from a
#: process that has already imported dpot (tests/dpotproc.py), since importing torch and LeRobot is most of a tiny
#: run's time.
SPAWN = subprocess

# ---------------------------------------------------------------- environment

#: Defaults of every dpot process (a value already set wins): no Hugging Face download at run time, headless
#: MuJoCo rendering (must be set before mujoco is first imported).
PROCESS_ENV = {"HF_HUB_OFFLINE": "1", "MUJOCO_GL": "egl"}
#: Added for the processes the autopilot and the study start: quiet W&B and tokenizers, unbuffered logs, and
#: PyOpenGL on MuJoCo's platform.
CHILD_ENV = {"WANDB_SILENT": "true", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


def set_env_defaults(env: dict | None = None) -> dict:
    """Set :data:`PROCESS_ENV` in ``env`` (default ``os.environ``) where unset; returns ``env``."""
    env = os.environ if env is None else env
    for k, v in PROCESS_ENV.items():
        env.setdefault(k, v)
    return env


def child_env() -> dict:
    """The environment of a child dpot process: this one's, plus :data:`PROCESS_ENV` and :data:`CHILD_ENV` where
    unset, ``PYOPENGL_PLATFORM`` = ``MUJOCO_GL`` and this dpot's source first on ``PYTHONPATH`` (the child runs
    the same dpot)."""
    env = set_env_defaults(dict(os.environ))
    for k, v in CHILD_ENV.items():
        env.setdefault(k, v)
    env.setdefault("PYOPENGL_PLATFORM", env["MUJOCO_GL"])
    src = str(Path(__file__).resolve().parents[1])
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if src not in parts:
        env["PYTHONPATH"] = os.pathsep.join([src, *parts])
    return env


# ---------------------------------------------------------------- launching a training and other dpot commands

PLACEHOLDERS = ("cmd", "args", "name", "run_dir", "python")


def dpot_cmd(*args: str) -> list[str]:
    """``python -m dpot <args>`` with this interpreter."""
    return [sys.executable, "-m", "dpot", *args]


def run_dpot(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -m dpot <args>`` in a child process with :func:`child_env`, its output captured as text; waits at
    most ``timeout`` s (``subprocess.TimeoutExpired``)."""
    return SPAWN.run(dpot_cmd(*args), capture_output=True, text=True, env=child_env(), timeout=timeout)


def check_launcher(template: str | None) -> None:
    """UserError when ``template`` (``--launcher``) is not a ``str.format`` template over :data:`PLACEHOLDERS`
    using ``{cmd}`` or ``{args}``; None passes.

    Placeholders: ``{cmd}`` the whole train command, shell-quoted (``python -m dpot train --config_path=...
    [--resume=true]``); ``{args}`` only its arguments (``accelerate launch -m dpot.train {args}``); ``{name}`` the
    run's name; ``{run_dir}`` its output directory; ``{python}`` this interpreter. The template runs through
    ``bash -c`` and must block until training ends (``srun {cmd}``, ``sbatch --wait ...``)."""
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


def train_command(config: Path, resume: bool, name: str, run_dir: Path, launcher: str | None) -> list[str]:
    """The argv that trains (or resumes) one run: ``dpot train --config_path=<config> [--resume=true]`` directly,
    or the ``launcher`` template (:func:`check_launcher`) through ``bash -c``."""
    args = [f"--config_path={config}"] + (["--resume=true"] if resume else [])
    cmd = dpot_cmd("train", *args)
    if launcher is None:
        return cmd
    text = launcher.format(cmd=shlex.join(cmd), args=shlex.join(args), name=name, run_dir=shlex.quote(str(run_dir)),
                           python=shlex.quote(sys.executable))
    return ["bash", "-c", text]


@dataclass(frozen=True)
class Launch:
    """What :func:`launch_train` did: the exit code, the reason ``poll`` stopped it (``""`` when it did not),
    whether it resumed from a checkpoint, and the command."""

    returncode: int
    reason: str
    resumed: bool
    command: list[str]


def launch_train(config: str | Path, run_dir: str | Path, log: str | Path, *, name: str | None = None,
                 launcher: str | None = None, poll: Callable[[], str | None] | None = None, interval: float = 0.5,
                 who: str = "dpot") -> Launch:
    """Train the run of ``config`` (whose ``output_dir`` is ``run_dir``) in a child process, or resume it.

    When ``run_dir`` holds a complete checkpoint the run resumes (``--resume=true``); otherwise a ``run_dir`` left
    by a start that saved nothing is removed and training starts fresh. Before that, a training left running by a
    killed launcher of the same ``log`` is stopped (:func:`kill_leftover`). The child gets :func:`child_env`, its
    own process group and SIGKILL when this process dies; its output is appended to ``log`` after a header line
    ``# <who> <time> <fresh|resumed>: <command>``.

    Args:
        config: the train config to pass as ``--config_path``.
        run_dir: the run's output directory (the config's ``output_dir``).
        log: the log file (appended).
        name: the run's name for the launcher template (default: ``run_dir``'s name).
        launcher: a ``--launcher`` template (:func:`check_launcher`), None to run ``dpot train`` directly.
        poll: called every ``interval`` s while the child runs; a returned reason (e.g. ``"budget"``) stops it.
        who: the header's first word (``autopilot``, ``study``).
    Returns:
        :class:`Launch`.
    """
    run_dir, log = Path(run_dir), Path(log)
    if kill_leftover(log, str(config)):
        time.sleep(1.0)
    resumed = bool(checkpoint_steps(run_dir))
    if not resumed and run_dir.exists():
        shutil.rmtree(run_dir)                 # started, but no checkpoint yet: start over
    cmd = train_command(Path(config), resumed, name or run_dir.name, run_dir, launcher)
    header = f"# {who} {time.strftime('%Y-%m-%d %H:%M:%S')} {'resumed' if resumed else 'fresh'}: {shlex.join(cmd)}"
    rc, reason = _run_monitored(cmd, log, poll or (lambda: None), interval, header)
    return Launch(rc, reason, resumed, cmd)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGKILL when its parent dies (kill -9 leaves no orphan trainer behind)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except OSError:
        pass


def _run_monitored(cmd: list[str], log: Path, poll: Callable[[], str | None], interval: float,
                   header: str) -> tuple[int, str]:
    """Run ``cmd`` (output appended to ``log``) in its own process group; call ``poll()`` every ``interval`` s.
    When it returns a reason, the group is stopped (SIGTERM, then SIGKILL after 20 s). The group id is kept in
    ``<log>.pgid`` while it runs, for :func:`kill_leftover`. Returns ``(exit code, reason or "")``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    pgid_file = log.with_suffix(".pgid")
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"\n{header}\n")
        fh.flush()
        proc = SPAWN.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=child_env(), start_new_session=True,
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


def kill_leftover(log: Path, marker: str) -> int:
    """SIGKILL the processes of the group recorded in ``<log>.pgid`` whose command line contains ``marker`` (the
    run's config path): a training left running by a killed launcher on this machine. Returns how many."""
    pgid_file = Path(log).with_suffix(".pgid")
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
