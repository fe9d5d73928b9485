"""Shared fixtures: tiny toy source/target datasets (64 px: ResNet's 2x2 feature map gives informative
embeddings) and a CPU-sized config writer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> dict[str, Path]:
    from dpot.data.toy import make_toy_dataset

    root = tmp_path_factory.mktemp("toy")
    make_toy_dataset(root / "src", "source", episodes=4, image_size=64, seed=0)
    make_toy_dataset(root / "tgt", "target", episodes=4, image_size=64, seed=0)
    return {"src": root / "src", "tgt": root / "tgt", "root": root}
