"""The run directory of ``dpot train``: its file names, its checkpoints, its readers, and how a run is launched.

Every file name of a run directory is spelled here and nowhere else in ``dpot`` (``metrics.jsonl``: in
:mod:`dpot.metrics_log`, which owns that format); the trainer writes through these names, the analysis, the
autopilot and the study read through them. A leaf module: it imports nothing of dpot's but ``atomic``, ``errors``
and ``metrics_log`` (no torch, no numpy), so every layer may use it.

Layout of ``<run>/`` (docs/architecture.md, "Run directory")::

    train_config.json                 the resolved config (dpot train --config_path=<it> loads it)
    metrics.jsonl                     one JSON object per logged step (dpot.metrics_log)
    ot_terms.json                     {"terms": {"img_<camera>": "embed", "<key>_lbl": "label", ...}}
    ot_plans/step_<step:06d>.npz      plan snapshots (dpot.train.ot_records)
    tensorboard/                      TensorBoard events (tensorboard=true)
    dtw_cache.npz                     DTW alignment cache (ot.alignment=dtw)
    checkpoints/<step>/               a complete checkpoint: pretrained_model/ (a plain LeRobot policy, plus
                                      train_config.json) and training_state/ (LeRobot's, plus dpot_state.json)
    checkpoints/last                  symlink to the newest complete checkpoint
    report.md, report.html, report.json and plots    once ``dpot report`` ran on it

``<step>`` is zero-padded to ``max(6, len(str(total_steps)))`` digits (:func:`checkpoint_name`, LeRobot's
``get_step_identifier``). A numbered checkpoint folder exists only once complete (the trainer renames it from
a temp folder), so "complete" = numbered, not a link, holding ``training_state/training_step.json``.

A folder that launches runs (the autopilot's ``--out``, a study's ``--dir``) keeps each run's output in
``logs/<name>.log`` (:func:`log_path`).
"""

from __future__ import annotations

import ctypes
import json
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

from dpot.atomic import write_text
from dpot.errors import UserError
from dpot.metrics_log import METRICS_FILE, load_metrics, read_metrics

# ---------------------------------------------------------------- names

CONFIG_FILE = "train_config.json"
TERMS_FILE = "ot_terms.json"
PLANS_DIR = "ot_plans"
PLAN_PREFIX, PLAN_SUFFIX = "step_", ".npz"
TENSORBOARD_DIR = "tensorboard"
DTW_CACHE_FILE = "dtw_cache.npz"
DTW_PAIRS_FILE = "dtw_pairs.json"          # dpot's own DTW pairs of a run (a pair file; resume reads it back)
LINEAGE_FILE = "lineage.json"              # a search / proposal folder's tree of runs (autopilot, dpot propose)
CHECKPOINTS_DIR = "checkpoints"
LAST_LINK = "last"
MODEL_DIR = "pretrained_model"             # LeRobot's names inside a checkpoint
STATE_DIR = "training_state"
STEP_FILE = "training_step.json"
WEIGHTS_FILE = "model.safetensors"
POLICY_CONFIG_FILE = "config.json"
DPOT_STATE_FILE = "dpot_state.json"        # dpot's part of training_state/
REPORT_MD, REPORT_HTML, REPORT_JSON = "report.md", "report.html", "report.json"
LOGS_DIR = "logs"

__all__ = [
    "CHECKPOINTS_DIR", "CONFIG_FILE", "DPOT_STATE_FILE", "DTW_CACHE_FILE", "DTW_PAIRS_FILE", "LAST_LINK",
    "LINEAGE_FILE", "LOGS_DIR", "METRICS_FILE",
    "MODEL_DIR", "PLANS_DIR", "POLICY_CONFIG_FILE", "REPORT_HTML", "REPORT_JSON", "REPORT_MD", "STATE_DIR",
    "STEP_FILE", "TENSORBOARD_DIR", "TERMS_FILE", "WEIGHTS_FILE", "Launch", "bench_result_path", "check_launcher",
    "checkpoint_dir", "checkpoint_name", "checkpoint_steps", "checkpoints_root", "child_env", "config_path",
    "is_finished", "is_run_dir", "kill_leftover", "last_checkpoint", "last_link", "launch_train", "load_metrics",
    "log_path", "metrics_path", "plan_files", "plan_path", "read_metrics", "read_terms", "set_env_defaults",
    "terms_path", "train_command", "write_terms",
]


def config_path(run_dir: str | Path) -> Path:
    """``<run>/train_config.json``."""
    return Path(run_dir) / CONFIG_FILE


def metrics_path(run_dir: str | Path) -> Path:
    """``<run>/metrics.jsonl``."""
    return Path(run_dir) / METRICS_FILE


def is_run_dir(path: str | Path) -> bool:
    """True when ``path`` is a dpot run directory (a folder holding ``metrics.jsonl``)."""
    return Path(path).is_dir() and metrics_path(path).exists()


def terms_path(run_dir: str | Path) -> Path:
    """``<run>/ot_terms.json``."""
    return Path(run_dir) / TERMS_FILE


def log_path(root: str | Path, name: str) -> Path:
    """``<root>/logs/<name>.log``: the output of run ``name`` launched from ``root`` (autopilot, study)."""
    return Path(root) / LOGS_DIR / f"{name}.log"


def bench_result_path(run_dir: str | Path, task: str, step: int, total_steps: int) -> Path:
    """``<run>/bench_<task>_<step>.json``: the closed-loop evaluation of the checkpoint at ``step``."""
    return Path(run_dir) / f"bench_{task}_{checkpoint_name(step, total_steps)}.json"


# ---------------------------------------------------------------- checkpoints

def checkpoint_name(step: int, total_steps: int) -> str:
    """The folder name of the checkpoint at ``step`` of a run of ``total_steps``: zero-padded to
    ``max(6, len(str(total_steps)))`` digits, like LeRobot's ``get_step_identifier``.

    Args:
        step: the checkpoint's step.
        total_steps: the run's ``steps`` (sets the width).
    Returns:
        e.g. ``"000002"`` for step 2 of 8, ``"0000002"`` for step 2 of 1_000_000.
    """
    return f"{step:0{max(6, len(str(total_steps)))}d}"


def checkpoints_root(run_dir: str | Path) -> Path:
    """``<run>/checkpoints``."""
    return Path(run_dir) / CHECKPOINTS_DIR


def checkpoint_dir(run_dir: str | Path, step: int, total_steps: int) -> Path:
    """``<run>/checkpoints/<step>`` (:func:`checkpoint_name`); whether it exists is not checked."""
    return checkpoints_root(run_dir) / checkpoint_name(step, total_steps)


def last_link(run_dir: str | Path) -> Path:
    """``<run>/checkpoints/last`` (a symlink to the newest complete checkpoint, once one was saved)."""
    return checkpoints_root(run_dir) / LAST_LINK


def _complete(d: Path) -> bool:
    return d.name.isdigit() and d.is_dir() and not d.is_symlink() and (d / STATE_DIR / STEP_FILE).is_file()


def checkpoint_steps(run_dir: str | Path) -> list[int]:
    """Steps of the complete checkpoints of a run, ascending (``[]`` when none).

    Complete = a numbered folder (not a link) holding ``training_state/training_step.json``; the trainer renames
    a finished temp folder into place, so a numbered one is complete unless someone made it by hand."""
    root = checkpoints_root(run_dir)
    if not root.is_dir():
        return []
    return sorted(int(d.name) for d in root.iterdir() if _complete(d))


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder (resolved), None when there is none.

    The highest-numbered complete folder, not ``last``: a kill between the rename of a new checkpoint and the
    update of ``last`` leaves ``last`` on the previous one (or absent)."""
    root = checkpoints_root(run_dir)
    steps = [d for d in (root.iterdir() if root.is_dir() else []) if _complete(d)]
    return max(steps, key=lambda d: int(d.name)).resolve() if steps else None


def is_finished(run_dir: str | Path, steps: int) -> bool:
    """A run is *finished* to ``steps`` when it holds a complete checkpoint at ``steps`` or later: its training
    to ``steps`` is done and kept (the one definition used by the autopilot and the study)."""
    done = checkpoint_steps(run_dir)
    return bool(done) and done[-1] >= steps


# ---------------------------------------------------------------- OT records

def write_terms(run_dir: str | Path, terms: dict[str, str]) -> Path:
    """Write ``<run>/ot_terms.json`` = ``{"terms": terms}`` atomically; returns its path."""
    return write_text(terms_path(run_dir), json.dumps({"terms": terms}, indent=1) + "\n")


def read_terms(run_dir: str | Path) -> object | None:
    """The ``terms`` entry of ``<run>/ot_terms.json`` as stored (the caller checks its shape), None when the file
    is absent. UserError naming the file when it is not a JSON object."""
    path = terms_path(run_dir)
    if not path.exists():
        return None
    return load_json_object(path).get("terms")


def load_json_object(path: Path) -> dict:
    """The JSON object in ``path``; UserError naming the file when it cannot be read or is not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read JSON ({err}); fix or remove the file") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def plan_path(run_dir: str | Path, step: int) -> Path:
    """``<run>/ot_plans/step_<step:06d>.npz``: the plan snapshot of ``step``."""
    return Path(run_dir) / PLANS_DIR / f"{PLAN_PREFIX}{step:06d}{PLAN_SUFFIX}"


def plan_files(run_dir: str | Path | None) -> list[tuple[int, Path]]:
    """``(step, path)`` of the plan snapshots of a run, by step (empty when there are none)."""
    if run_dir is None or not (Path(run_dir) / PLANS_DIR).is_dir():
        return []
    out = []
    for p in (Path(run_dir) / PLANS_DIR).iterdir():
        digits = p.name.removeprefix(PLAN_PREFIX).removesuffix(PLAN_SUFFIX)
        if p.name.startswith(PLAN_PREFIX) and p.name.endswith(PLAN_SUFFIX) and digits.isdigit():
            out.append((int(digits), p))
    return sorted(out)


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


# ---------------------------------------------------------------- launching a training

PLACEHOLDERS = ("cmd", "args", "name", "run_dir", "python")


def dpot_cmd(*args: str) -> list[str]:
    """``python -m dpot <args>`` with this interpreter."""
    return [sys.executable, "-m", "dpot", *args]


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
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=child_env(), start_new_session=True,
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
