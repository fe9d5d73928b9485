"""Configs written in the LeRobot OT fork's format (issue 20: the seed report's train_config/*.json)."""

from __future__ import annotations

import copy


def fork_config(tgt_root: str = "data/real", src_root: str = "data/sim", *, cams=("top", "wrist"),
                label_slice=(0, 8), **ot_over) -> dict:
    """A fork-format diffusion config (iter4a-like: AdamW 3e-4, cosine warmup 1000, heuristic true); ``ot_over``
    updates the ``ot`` block (``loss_config`` entries merge)."""
    features = [{"src_key": f"observation.images.{c}", "tgt_key": f"observation.images.{c}",
                 "use_learned_embed": True, "weight_embed": round(1 / len(cams), 4), "weight_label": 0.0,
                 "term_name": f"img_{c}"} for c in cams]
    features.append({"src_key": "action", "tgt_key": "action", "dim_slice": list(label_slice),
                     "use_learned_embed": False, "embed_name": None, "weight_embed": 0.0, "weight_label": 0.02,
                     "term_name": "action_lbl"})
    cfg = {
        "dataset": {"repo_id": "local/real", "root": tgt_root, "episodes": None, "streaming": False,
                    "use_imagenet_stats": True, "image_transforms": {"enable": False}},
        "policy": {"type": "diffusion", "device": "cpu", "use_amp": False, "push_to_hub": False,
                   "pretrained_backbone_weights": None, "optimizer_lr": 3e-4, "n_obs_steps": 2, "horizon": 16,
                   "n_action_steps": 8},
        "optimizer": {"type": "adamw", "lr": 3e-4, "weight_decay": 1e-4, "betas": [0.9, 0.999], "eps": 1e-8,
                      "grad_clip_norm": 10.0},
        "scheduler": {"type": "diffuser", "name": "cosine", "num_warmup_steps": 1000},
        "batch_size": 16, "num_workers": 4, "steps": 50000, "eval_freq": 1000, "log_freq": 100,
        "save_checkpoint": True, "save_freq": 10000, "seed": 1000, "use_policy_training_preset": False,
        "wandb": {"enable": False, "disable_artifact": True}, "output_dir": None,
        "ot": {"enable": True, "src_repo_id": "local/sim", "src_root": src_root,
               "pair_info_path": None, "batch_ratio": 0.5, "lambda_ot": 0.1,
               "obs_keys": [f"observation.images.{c}" for c in cams], "base_index_src": 0, "base_index_tgt": 0,
               "window_size": 20,
               "loss_config": {"features": features, "reg": 0.02, "tau_src": 0.01, "tau_tgt": 0.01,
                               "heuristic": True}},
    }
    ot = cfg["ot"]
    for k, v in copy.deepcopy(ot_over).items():
        if k == "loss_config":
            ot["loss_config"].update(v)
        else:
            ot[k] = v
    return cfg


def iter5b(cfg: dict) -> dict:
    """The report's iter5b shape: heuristic false, tau 0.005, action label weight 0.005."""
    cfg = copy.deepcopy(cfg)
    lc = cfg["ot"]["loss_config"]
    lc.update(heuristic=False, tau_src=0.005, tau_tgt=0.005)
    lc["features"][-1]["weight_label"] = 0.005
    return cfg
