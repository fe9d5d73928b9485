"""Atomic checkpoints in LeRobot's layout, and resume (names and the complete-checkpoint rule: :mod:`dpot.rundir`).

``<output_dir>/checkpoints/<step>/`` (:func:`dpot.rundir.checkpoint_name`)
    ``pretrained_model/`` — a plain LeRobot DiffusionPolicy: ``config.json``, ``model.safetensors``,
    ``policy_preprocessor.json`` / ``policy_postprocessor.json`` + normalizer ``.safetensors`` (combined stats),
    ``train_config.json`` (dpot's resolved config; ``dpot train --config_path=<it> --resume=true`` works).
    ``training_state/`` — LeRobot's ``optimizer_state.safetensors``, ``optimizer_param_groups.json``,
    ``scheduler_state.json``, ``rng_state.safetensors``, ``training_step.json``, plus ``dpot_state.json``
    (sampler position = step, the open metric window).
``<output_dir>/checkpoints/last`` — symlink to the newest complete checkpoint.

Atomicity: everything is written into ``checkpoints/.tmp-<step>``, which is renamed to ``<step>`` only when
complete; ``last`` is replaced with ``os.replace`` of a fresh symlink. A SIGKILL leaves either the old or the new
checkpoint, never a half-written one. Weights are read with safetensors only.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from dpot import rundir
from dpot.errors import UserError


def save_checkpoint(output_dir: Path, step: int, *, cfg, policy, optimizer, scheduler, preprocessor,
                    postprocessor, dpot_state: dict, num_processes: int = 1) -> Path:
    """Write the checkpoint of ``step`` atomically and point ``checkpoints/last`` at it. Returns its path."""
    from lerobot.common.train_utils import save_checkpoint as lr_save_checkpoint

    from dpot.config import save_train_config

    root = rundir.checkpoints_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = rundir.checkpoint_dir(output_dir, step, cfg.steps)
    tmp = root / f".tmp-{final.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    lr_save_checkpoint(tmp, step, cfg, policy, optimizer, scheduler, preprocessor=preprocessor,
                       postprocessor=postprocessor, num_processes=num_processes, batch_size=cfg.batch_size)
    save_train_config(cfg, rundir.config_path(tmp / rundir.MODEL_DIR))  # dpot's format, reloadable
    (tmp / rundir.STATE_DIR / rundir.DPOT_STATE_FILE).write_text(json.dumps(dpot_state))
    if final.exists():  # re-saving a step after a resume: replace the old copy
        trash = root / f".old-{final.name}"
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    link_tmp = root / f".{rundir.LAST_LINK}.tmp"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    link_tmp.symlink_to(final.name)
    os.replace(link_tmp, rundir.last_link(output_dir))
    return final


def resume_checkpoint(output_dir: Path) -> Path:
    """The checkpoint ``--resume=true`` continues from: :func:`dpot.rundir.last_checkpoint`; UserError when the
    run has none."""
    ckpt = rundir.last_checkpoint(output_dir)
    if ckpt is None:
        raise UserError(f"resume: no checkpoint in {rundir.checkpoints_root(output_dir)} (no complete numbered "
                        "checkpoint directory); run without --resume=true or point output_dir at a run that saved one")
    return ckpt


def load_checkpoint(ckpt: Path, *, policy, optimizer, scheduler) -> tuple[int, dict]:
    """Load weights (safetensors), optimizer, scheduler and RNG states into the given objects.

    Returns ``(step, dpot_state)``. ``policy`` is the unwrapped policy (load before ``accelerator.prepare``).
    """
    from lerobot.common.train_utils import load_training_state
    from safetensors.torch import load_file

    state = load_file(str(ckpt / rundir.MODEL_DIR / rundir.WEIGHTS_FILE))
    missing, unexpected = policy.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("num_batches_tracked")]:
        raise UserError(f"resume: {ckpt} does not match this policy (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]}); resume with the run's own {rundir.CONFIG_FILE}")
    step, _, _ = load_training_state(ckpt, optimizer, scheduler)
    dpot_state = json.loads((ckpt / rundir.STATE_DIR / rundir.DPOT_STATE_FILE).read_text())
    return int(step), dpot_state
