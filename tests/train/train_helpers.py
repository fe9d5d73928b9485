"""Helpers for the trainer tests: a CPU-sized config writer and a metrics reader."""

from __future__ import annotations

import json
from pathlib import Path


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


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(json.dumps(cfg, indent=1))
    return path


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if x.strip()]
