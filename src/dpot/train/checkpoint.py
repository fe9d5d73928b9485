"""Atomic checkpoints in LeRobot's layout, and resume.

``<output_dir>/checkpoints/<step:06d>/``
    ``pretrained_model/`` — a plain LeRobot DiffusionPolicy: ``config.json``, ``model.safetensors``,
    ``policy_preprocessor.json`` / ``policy_postprocessor.json`` + normalizer ``.safetensors`` (combined stats),
    ``train_config.json`` (dpot's resolved config; ``dpot train --config_path=<it> --resume=true`` works).
    ``training_state/`` — LeRobot's ``optimizer_state.safetensors``, ``optimizer_param_groups.json``,
    ``scheduler_state.json``, ``rng_state.safetensors``, ``training_step.json``, plus ``dpot_state.json``
    (sampler position = step, the open metric window).
``<output_dir>/checkpoints/last`` — symlink to the newest complete checkpoint.

Atomicity: everything is written into ``checkpoints/.tmp-<step>``, which is renamed to ``<step:06d>`` only when
complete; ``last`` is replaced with ``os.replace`` of a fresh symlink. A SIGKILL leaves either the old or the new
checkpoint, never a half-written one. Weights are read with safetensors only.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from dpot.errors import UserError

CKPT_DIR = "checkpoints"
LAST = "last"
DPOT_STATE = "dpot_state.json"


def step_dir_name(step: int, total_steps: int) -> str:
    """Zero-padded step like LeRobot's ``get_step_identifier`` (at least 6 digits)."""
    return f"{step:0{max(6, len(str(total_steps)))}d}"


def save_checkpoint(output_dir: Path, step: int, *, cfg, policy, optimizer, scheduler, preprocessor,
                    postprocessor, dpot_state: dict, num_processes: int = 1) -> Path:
    """Write the checkpoint of ``step`` atomically and point ``checkpoints/last`` at it. Returns its path."""
    from lerobot.common.train_utils import save_checkpoint as lr_save_checkpoint

    from dpot.config import save_train_config

    root = Path(output_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step, cfg.steps)
    tmp = root / f".tmp-{final.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    lr_save_checkpoint(tmp, step, cfg, policy, optimizer, scheduler, preprocessor=preprocessor,
                       postprocessor=postprocessor, num_processes=num_processes, batch_size=cfg.batch_size)
    save_train_config(cfg, tmp / "pretrained_model" / "train_config.json")  # dpot's format, reloadable
    (tmp / "training_state" / DPOT_STATE).write_text(json.dumps(dpot_state))
    if final.exists():  # re-saving a step after a resume: replace the old copy
        trash = root / f".old-{final.name}"
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    link_tmp = root / f".{LAST}.tmp"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    link_tmp.symlink_to(final.name)
    os.replace(link_tmp, root / LAST)
    return final


def last_checkpoint(output_dir: Path) -> Path:
    """The newest complete checkpoint of a run; UserError when there is none.

    A numbered directory exists only once complete (it is renamed from ``.tmp-<step>``), so the highest-numbered
    one is the newest complete checkpoint even when a kill fell between that rename and the update of ``last``
    (``last`` then still names the previous one, or does not exist yet)."""
    root = Path(output_dir) / CKPT_DIR
    steps = [d for d in (root.iterdir() if root.is_dir() else [])
             if d.name.isdigit() and (d / "training_state" / "training_step.json").is_file()]
    if not steps:
        raise UserError(f"resume: no checkpoint in {root} (no complete checkpoints/<step> directory); "
                        "run without --resume=true or point output_dir at a run that saved one")
    return max(steps, key=lambda d: int(d.name)).resolve()


def load_checkpoint(ckpt: Path, *, policy, optimizer, scheduler) -> tuple[int, dict]:
    """Load weights (safetensors), optimizer, scheduler and RNG states into the given objects.

    Returns ``(step, dpot_state)``. ``policy`` is the unwrapped policy (load before ``accelerator.prepare``).
    """
    from lerobot.common.train_utils import load_training_state
    from safetensors.torch import load_file

    state = load_file(str(ckpt / "pretrained_model" / "model.safetensors"))
    missing, unexpected = policy.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("num_batches_tracked")]:
        raise UserError(f"resume: {ckpt} does not match this policy (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]}); resume with the run's own train_config.json")
    step, _, _ = load_training_state(ckpt, optimizer, scheduler)
    dpot_state = json.loads((ckpt / "training_state" / DPOT_STATE).read_text())
    return int(step), dpot_state
