"""Helpers for the trainer tests: a CPU-sized config writer and a metrics reader."""

from __future__ import annotations

import json
from pathlib import Path

from dpot.metrics_log import METRICS_FILE, load_metrics


def tiny_config(toy_data: dict, **over) -> dict:
    """A dpot train config (JSON dict) with a CPU-sized policy; ``over`` updates top-level keys (dicts merge)."""
    cfg = {
        "dataset": {"repo_id": "local/toy_target", "root": str(toy_data["tgt"])},
        "source_dataset": {"repo_id": "local/toy_source", "root": str(toy_data["src"])},
        "policy": {"type": "diffusion", "pretrained_backbone_weights": None, "use_group_norm": True,
                   "use_separate_rgb_encoder_per_camera": False, "down_dims": [16, 32], "horizon": 8,
                   "n_action_steps": 4, "n_obs_steps": 2, "noise_scheduler_type": "DDIM",
                   "num_inference_steps": 3, "diffusion_step_embed_dim": 32, "device": "cpu", "push_to_hub": False},
        "batch_size": 4, "steps": 4, "log_freq": 1, "save_freq": 1000, "eval_freq": 0, "num_workers": 0,
        "eval": {"n_batches": 2, "val_fraction": 0.25},
        "wandb": {"enable": False}, "env_eval_freq": 0, "seed": 0,
        "ot": {"lambda_ot": 0.1},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


#: a CPU-sized LeRobot ACT (ResNet18 backbone without pretrained weights, a one-layer transformer, chunk of 8)
TINY_ACT = {"type": "act", "pretrained_backbone_weights": None, "dim_model": 64, "n_heads": 2, "dim_feedforward": 128,
            "n_encoder_layers": 1, "n_decoder_layers": 1, "n_vae_encoder_layers": 1, "chunk_size": 8,
            "n_action_steps": 4, "latent_dim": 8, "device": "cpu", "push_to_hub": False}


def tiny_act_config(toy_data: dict, **over) -> dict:
    """:func:`tiny_config` with :data:`TINY_ACT` as the policy (``policy`` in ``over`` updates it)."""
    policy = {**TINY_ACT, **over.pop("policy", {})}
    cfg = tiny_config(toy_data, **over)
    cfg["policy"] = policy
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(json.dumps(cfg, indent=1))
    return path


def read_metrics(run_dir: Path) -> list[dict]:
    """The run's records, read strictly: the file must exist and hold no damaged line (not even a torn tail)."""
    assert (Path(run_dir) / METRICS_FILE).is_file(), f"no {METRICS_FILE} in {run_dir}"
    log = load_metrics(run_dir, strict=True)
    assert not log.torn_tail, f"{run_dir}: torn last line in {METRICS_FILE}"
    return log.rows
