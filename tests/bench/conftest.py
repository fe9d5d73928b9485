"""Shared fixtures: one tiny generated dataset and one untrained tiny Diffusion Policy saved from its stats."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from dpot.bench.generate import generate_dataset  # noqa: E402

SIZE = 64


@pytest.fixture(scope="session")
def push_dataset(tmp_path_factory):
    """(path, summary) of a 2-episode push-v3 source dataset at 64 px."""
    out = tmp_path_factory.mktemp("data") / "push_source"
    summary = generate_dataset("push-v3", "source", 2, out, image_size=SIZE, seed=0, progress=False)
    return out, summary


@pytest.fixture(scope="session")
def tiny_policy(push_dataset, tmp_path_factory):
    """A pretrained_model/ folder of an untrained tiny DiffusionPolicy (+ processors) for push_dataset's features."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.factory import make_pre_post_processors

    path, _ = push_dataset
    meta = LeRobotDatasetMetadata("local/push-v3_source", root=path)
    inputs = {f"observation.images.{c}": PolicyFeature(FeatureType.VISUAL, (3, SIZE, SIZE))
              for c in ("corner4", "gripperPOV")}
    inputs["observation.state"] = PolicyFeature(FeatureType.STATE, (7,))
    cfg = DiffusionConfig(input_features=inputs, output_features={"action": PolicyFeature(FeatureType.ACTION, (4,))},
                          n_obs_steps=2, horizon=16, n_action_steps=8, down_dims=(16, 32), vision_backbone="resnet18",
                          pretrained_backbone_weights=None, crop_shape=None, resize_shape=None,
                          num_inference_steps=2, noise_scheduler_type="DDIM", device="cpu", push_to_hub=False)
    policy = DiffusionPolicy(cfg)
    pre, post = make_pre_post_processors(cfg, dataset_stats=meta.stats)
    out = tmp_path_factory.mktemp("policy") / "pretrained_model"
    policy.save_pretrained(out)
    pre.save_pretrained(out)
    post.save_pretrained(out)
    return out
