"""Run ``dpot ...`` and ``lerobot-train ...`` command lines in processes forked from an interpreter that has already
imported torch, LeRobot and dpot: drop-ins for the ``subprocess.run`` / ``subprocess.Popen`` calls of the end-to-end
tests.

Why: a small ``dpot train`` process spends ~60 % of its CPU importing torch, torchvision, LeRobot's policy registry
(every policy's config, diffusers, datasets, pandas) before it trains a step; the suite starts dozens of them.
Python's ``multiprocessing`` forkserver (one per pytest worker, started on first use) imports those modules once
(``PRELOAD``); each command is then a fresh process forked from it, in its own session (``os.setsid``), with the
command's working directory, environment and argv, running the same entry point the console script runs
(``dpot.cli:main``; ``lerobot.scripts.lerobot_train:main``) and exiting with its exit code (an uncaught exception:
traceback on stderr, exit 1, as Python does). Output goes to files the caller reads (``run``) or names (``Popen``:
a log file).

What differs from a fresh interpreter, and the guard for each:

* modules are imported before the command's environment is set, so a command whose environment differs from the
  server's in a variable read at import time (``IMPORT_TIME_ENV``) runs as a real subprocess instead;
* atexit handlers registered by the command run at its end (``atexit._run_exitfuncs``): multiprocessing children
  leave through ``os._exit``;
* the console scripts themselves (``.venv/bin/dpot``) are not executed: the tests of bad input, exit codes and
  console-script behaviour keep ``subprocess`` (tests/test_config.py, tests/train/test_bad_input*.py, ...).

The commands dpot itself starts (the autopilot's and the study's trainings, the autopilot's ``dpot report |
propose | bench eval``) go through ``dpot.launch.SPAWN``, which :func:`use_for_launches` points at this module
(tests/conftest.py, in each worker) and every forked command points at it too: a ``python -m dpot ...`` command
that dpot launches, from a pytest worker or from a forked command (an autopilot or a study sitting run by a test),
is forked from the worker's server. What differs from a real process: the launcher's ``preexec_fn`` (SIGKILL when
its parent dies) runs in the child, whose parent is the server, not the launcher, so a launcher killed alone
leaves its training running; and the child's command line in ``/proc`` is the server's, which
``dpot.launch.kill_leftover``'s scan does not match. A test that kills a launcher and goes on sets
``DPOT_TEST_FORKED_LAUNCHES=0`` in that launcher's environment; the scan's own tests start real processes
(tests/test_launch.py). A ``--launcher`` template (``bash -c``) is a real process.

``DPOT_TEST_FORKSERVER=0`` runs every command as a real subprocess (the same tests, the slow way); in a command's
environment it makes that command's own launches real subprocesses.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.util
import os
import signal
import subprocess
import sys
import tempfile
import types
from pathlib import Path

PRELOAD = ["torch", "torchvision.models", "lerobot.policies.factory", "lerobot.datasets.lerobot_dataset",
           "lerobot.policies.diffusion.modeling_diffusion", "lerobot.policies.act.modeling_act",
           "lerobot.scripts.lerobot_train", "dpot.cli", "dpot.train.loop", "dpot.train.build", "dpot.analysis.cli",
           "dpot.analysis.plots", "dpot.autopilot.cli", "dpot.bench.cli", "wandb"]
# read by torch / huggingface / MuJoCo / Python itself when their modules are imported (or when the interpreter
# starts): a command that sets any of them differently from the server is run as a real subprocess
IMPORT_TIME_ENV = ("PYTHONPATH", "PYTHONHASHSEED", "PYTHONWARNINGS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                   "CUDA_VISIBLE_DEVICES", "HF_HUB_OFFLINE", "HF_HOME", "HF_LEROBOT_HOME", "HF_DATASETS_CACHE",
                   "HF_DATASETS_OFFLINE", "HF_HUB_CACHE", "TRANSFORMERS_OFFLINE", "MUJOCO_GL", "PYOPENGL_PLATFORM",
                   "TORCH_HOME", "XDG_CACHE_HOME", "HOME")
ENABLED = os.environ.get("DPOT_TEST_FORKSERVER", "1") != "0"
LAUNCHES = ENABLED and os.environ.get("DPOT_TEST_FORKED_LAUNCHES", "1") != "0"   # 0: dpot's launches real processes

_ctx = None
_server_env: dict[str, str] | None = None
_live: set = set()          # the forked commands not yet seen to end (multiprocessing.Process objects)


def _kill_leftovers() -> None:
    """At the worker's exit, end the commands a test left running: multiprocessing's exit hook joins every child
    after running its finalizers of priority >= 0 (this is one), and would wait for them forever."""
    for proc in list(_live):
        if proc.is_alive():
            for kill in (os.killpg, os.kill):       # its session's group (what it started), then itself: a command
                with contextlib.suppress(ProcessLookupError, PermissionError):   # not yet in its own session
                    kill(proc.pid, signal.SIGKILL)


multiprocessing.util.Finalize(None, _kill_leftovers, exitpriority=100)


def _context():
    global _ctx, _server_env
    if _ctx is None:
        _ctx = multiprocessing.get_context("forkserver")
        _ctx.set_forkserver_preload(PRELOAD)
        _server_env = dict(os.environ)     # the forkserver starts with this process's environment
    return _ctx


def _entry(argv: list[str]) -> tuple[str, list[str]] | None:
    """``("dpot" | "lerobot-train", args)`` for a command line this module runs, else None."""
    argv = [str(a) for a in argv]
    if len(argv) >= 3 and argv[1] == "-m" and argv[2] in ("dpot", "dpot.train") and Path(argv[0]).name.startswith(
            "python"):
        return ("dpot", (["train"] if argv[2] == "dpot.train" else []) + argv[3:])
    name = Path(argv[0]).name if argv else ""
    if name in ("dpot", "lerobot-train") and (os.sep not in argv[0] or Path(argv[0]).parent == Path(
            sys.executable).parent):
        return (name, argv[1:])
    return None


def _paths(value: str | None) -> list[str]:
    src = str(Path(__file__).resolve().parents[1] / "src")      # the editable install's path: the same modules
    return [p for p in (value or "").split(os.pathsep) if p and p != src]


def _same_import_env(env: dict[str, str]) -> bool:
    _context()
    for key in IMPORT_TIME_ENV:
        a, b = env.get(key), _server_env.get(key)
        if key == "PYTHONPATH":
            if _paths(a) != _paths(b):
                return False
        elif a != b:
            return False
    return True


def _child(kind: str, args: list[str], argv0: str, cwd: str, env: dict[str, str], out: str, err: str,
           preexec_fn=None) -> None:
    if preexec_fn is not None:
        preexec_fn()
    os.setsid()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        if path is not None:                  # None: the server's own stdout / stderr (the pytest worker's)
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(target, fd)
            os.close(target)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - fresh buffers on the redirected descriptors
    sys.stderr = open(2, "w", closefd=False, buffering=1)  # noqa: SIM115
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = [argv0, *args]
    if env.get("DPOT_TEST_FORKSERVER", "1") != "0" and env.get("DPOT_TEST_FORKED_LAUNCHES", "1") != "0":
        server = multiprocessing.forkserver._forkserver
        if server._forkserver_address is not None and server._forkserver_pid is None:
            # a child of the server knows its address and holds its "alive" pipe: ask it, rather than start a
            # server of its own (multiprocessing would: only the process that started a server reuses it)
            server.ensure_running = lambda: None
        use_for_launches()
    try:
        if kind == "dpot":
            from dpot.cli import main
            code = main(args)
        else:
            from lerobot.scripts.lerobot_train import main
            code = main()
    except SystemExit as exc:
        code = exc.code
    finally:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code)


class Popen:
    """The part of ``subprocess.Popen`` the tests use, for a command run in a forked process (see the module
    docstring). ``stdout``: None, DEVNULL, or an open file whose ``name`` is a path (appended to); ``stderr``: the
    same, or STDOUT."""

    def __new__(cls, args, *, env=None, cwd=None, stdout=None, stderr=None, start_new_session=False,
                preexec_fn=None, **kw):
        env = dict(os.environ if env is None else env)
        entry = _entry(list(args)) if ENABLED and not kw else None
        if entry is None or not _same_import_env(env) or not _file_target(stdout) or not (
                stderr == subprocess.STDOUT or _file_target(stderr)):
            return subprocess.Popen(args, env=env, cwd=cwd, stdout=stdout, stderr=stderr,
                                    start_new_session=start_new_session, preexec_fn=preexec_fn, **kw)
        self = super().__new__(cls)
        out = _target_path(stdout)
        err = out if stderr == subprocess.STDOUT else _target_path(stderr)
        self.args = list(args)
        self._proc = _context().Process(target=_child, args=(*entry, str(args[0]), str(cwd or os.getcwd()), env,
                                                             out, err, preexec_fn), daemon=False)
        self._proc.start()
        self.pid = self._proc.pid
        self.returncode = None
        _live.add(self._proc)
        return self

    def poll(self):
        if self.returncode is None and not self._proc.is_alive():
            self.returncode = self._proc.exitcode
            _live.discard(self._proc)
        return self.returncode

    def wait(self, timeout=None):
        self._proc.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig):
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)


def _file_target(stream) -> bool:
    return stream is None or stream == subprocess.DEVNULL or isinstance(getattr(stream, "name", None), str)


def _target_path(stream) -> str | None:
    if stream is None:
        return None
    if stream == subprocess.DEVNULL:
        return os.devnull
    stream.flush()
    return stream.name


def run(args, *, env=None, cwd=None, timeout=None, capture_output=False, text=False, check=False,
        **kw) -> subprocess.CompletedProcess:
    """``subprocess.run`` for a command run in a forked process (output captured to temporary files when
    ``capture_output``); anything this module does not run goes to ``subprocess.run`` itself."""
    env = dict(os.environ if env is None else env)
    if not (ENABLED and not kw and _entry(list(args)) and _same_import_env(env)):
        return subprocess.run(args, env=env, cwd=cwd, timeout=timeout, capture_output=capture_output, text=text,
                              check=check, **kw)
    with tempfile.TemporaryDirectory(prefix="dpotproc-") as tmp:
        out, err = Path(tmp) / "out", Path(tmp) / "err"
        with open(out, "w") as fo, open(err, "w") as fe:
            proc = Popen(args, env=env, cwd=cwd, stdout=fo if capture_output else None,
                         stderr=fe if capture_output else None)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
                raise
        stdout = stderr = None
        if capture_output:
            stdout, stderr = out.read_bytes(), err.read_bytes()
            if text:
                stdout, stderr = stdout.decode(), stderr.decode()
    res = subprocess.CompletedProcess(list(args), proc.returncode, stdout, stderr)
    if check:
        res.check_returncode()
    return res


#: ``dpot.launch.SPAWN`` for the suite (:func:`use_for_launches`)
SPAWNER = types.SimpleNamespace(Popen=Popen, run=run)


def use_for_launches() -> None:
    """Point ``dpot.launch.SPAWN`` at :data:`SPAWNER` (unless ``DPOT_TEST_FORKSERVER=0`` or
    ``DPOT_TEST_FORKED_LAUNCHES=0``, which keeps only dpot's own launches real processes: the measurement's
    baseline, benchmarks/forkserver_speed.py): the trainings and dpot commands that dpot itself starts in this
    process are forked too (see the module docstring)."""
    if LAUNCHES:
        import dpot.launch

        dpot.launch.SPAWN = SPAWNER
