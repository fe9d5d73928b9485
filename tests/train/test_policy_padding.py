"""The feature hook masks copy-padded actions as LeRobot does, and refuses a batch without the padding mask."""

from __future__ import annotations

import pytest
import torch
from train_helpers import tiny_config, write_config

from dpot.config import load_train_config
from dpot.policy.diffusion import diffusion_loss_with_features


@pytest.fixture(scope="module")
def padded_policy(toy_data, tmp_path_factory):
    from lerobot.policies.factory import make_policy

    from dpot.train.inputs import check_inputs

    over = {"policy": {**tiny_config(toy_data)["policy"], "do_mask_loss_for_padding": True}}
    cfg = load_train_config(write_config(tmp_path_factory.mktemp("pad") / "c.json", tiny_config(toy_data, **over)))
    torch.manual_seed(0)
    policy = make_policy(cfg.policy, ds_meta=check_inputs(cfg).tgt_meta)
    policy.eval()
    g = torch.Generator().manual_seed(1)
    b = 4
    batch = {k: torch.rand(b, 2, 3, 64, 64, generator=g) for k in policy.config.image_features}
    batch["observation.state"] = torch.rand(b, 2, 4, generator=g)
    batch["action"] = torch.rand(b, 8, 4, generator=g) * 2 - 1
    return policy, batch


def test_missing_action_is_pad_raises_like_lerobot(padded_policy):
    policy, batch = padded_policy
    assert policy.config.do_mask_loss_for_padding
    with pytest.raises(ValueError, match="action_is_pad"):
        diffusion_loss_with_features(policy, dict(batch))
    policy.config.do_mask_loss_for_padding = False  # no mask asked for: none needed (as LeRobot)
    try:
        assert torch.isfinite(diffusion_loss_with_features(policy, dict(batch)).loss)
    finally:
        policy.config.do_mask_loss_for_padding = True


def test_padding_mask_drops_padded_steps_from_the_loss(padded_policy):
    policy, batch = padded_policy
    eps = torch.randn(batch["action"].shape, generator=torch.Generator().manual_seed(2))
    t = torch.full((batch["action"].shape[0],), 10, dtype=torch.long)
    pad = torch.zeros(batch["action"].shape[:2], dtype=torch.bool)
    pad[:, 5:] = True  # the last 3 steps of every chunk are copies past the episode's end
    masked = diffusion_loss_with_features(policy, dict(batch, action_is_pad=pad), noise=eps, timesteps=t)
    full = diffusion_loss_with_features(policy, dict(batch, action_is_pad=torch.zeros_like(pad)), noise=eps,
                                        timesteps=t)
    assert not torch.isclose(masked.loss, full.loss)
    # the masked loss is the MSE over the first 5 steps only: recompute it from the unmasked pass's prediction
    pred = policy.diffusion.unet(policy.diffusion.noise_scheduler.add_noise(batch["action"], eps, t), t,
                                 global_cond=_global_cond(policy, batch))
    torch.testing.assert_close(masked.loss, ((pred - eps)[:, :5] ** 2).mean())


def _global_cond(policy, batch):
    stacked = dict(batch, **{"observation.images": torch.stack([batch[k] for k in policy.config.image_features],
                                                               dim=-4)})
    return policy.diffusion._prepare_global_conditioning(stacked)
