"""Every example config in configs/ loads with dpot's loader and keeps the seed's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpot.config import load_train_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["seed_p80qgmx9", "iter1", "iter4a", "iter4b", "iter5a", "iter5b", "iter5c"])
def test_example_config_loads(name):
    cfg = load_train_config(CONFIGS / f"{name}.json")
    assert cfg.policy.pretrained_backbone_weights is None
    assert list(cfg.policy.down_dims) == [512, 1024, 2048] and cfg.policy.horizon == 16
    assert cfg.ot.features[1].dim_slice == [0, 8]
    if name.startswith("iter4") or name.startswith("iter5"):
        assert not cfg.use_policy_training_preset and cfg.optimizer.type == "adamw" and cfg.optimizer.lr == 3e-4
        assert cfg.scheduler.num_warmup_steps == 1000 and cfg.eval_freq == 1000
    if name == "iter5b":
        assert cfg.ot.heuristic is False and cfg.ot.tau_src == 0.005
    if name == "iter4b":
        assert (cfg.ot.lambda_ot, cfg.ot.reg, cfg.ot.tau_tgt) == (0.2, 0.01, 0.02)
