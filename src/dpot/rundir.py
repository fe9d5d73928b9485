"""The run directory of ``dpot train``: its file names, its checkpoints, its readers. It launches nothing (a run is
started by :mod:`dpot.launch`).

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

import json
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
    "STEP_FILE", "TENSORBOARD_DIR", "TERMS_FILE", "WEIGHTS_FILE", "bench_result_path", "checkpoint_dir",
    "checkpoint_name", "checkpoint_steps", "checkpoints_root", "config_path", "is_finished", "is_run_dir",
    "last_checkpoint", "last_link", "load_metrics", "log_path", "metrics_path", "plan_files", "plan_path",
    "read_metrics", "read_terms", "terms_path", "write_terms",
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
