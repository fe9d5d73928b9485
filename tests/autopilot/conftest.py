"""Fixtures for the autopilot tests: tiny toy datasets (helpers in aphelpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def toy(tmp_path_factory) -> dict[str, Path]:
    """Source and target toy datasets (one 32 px camera, 4 episodes each)."""
    from dpot.data.toy import make_toy_dataset

    root = tmp_path_factory.mktemp("autopilot_toy")
    make_toy_dataset(root / "src", "source", episodes=4, image_size=32, cameras=("top",))
    make_toy_dataset(root / "tgt", "target", episodes=4, image_size=32, cameras=("top",))
    return {"src": root / "src", "tgt": root / "tgt"}
