"""The feature hook reproduces LeRobot's diffusion loss and lets OT gradients reach the image encoder."""

from __future__ import annotations

import pytest
import torch
from train_helpers import tiny_config, write_config

from dpot.config import load_train_config
from dpot.ot.alignment import DomainFeatures
from dpot.ot.loss import OTAlignmentLoss
from dpot.policy.diffusion import DiffusionHook, diffusion_loss_with_features


def _policy_and_batch(toy_data, tmp_path, **over):
    from lerobot.policies.factory import make_policy

    from dpot.train.inputs import check_inputs

    cfg = load_train_config(write_config(tmp_path / "c.json", tiny_config(toy_data, **over)))
    inputs = check_inputs(cfg)
    torch.manual_seed(0)
    policy = make_policy(cfg.policy, ds_meta=inputs.tgt_meta)
    g = torch.Generator().manual_seed(1)
    b = 6
    batch = {k: torch.rand(b, 2, 3, 64, 64, generator=g) for k in policy.config.image_features}
    batch["observation.state"] = torch.rand(b, 2, 4, generator=g)
    batch["action"] = torch.rand(b, 8, 4, generator=g) * 2 - 1
    batch["action_is_pad"] = torch.zeros(b, 8, dtype=torch.bool)
    return cfg, policy, batch


def _ours_and_lerobots(policy, batch, seed: int):
    """(our hook's output, LeRobot's loss) in eval mode with the noise and timesteps LeRobot draws after ``seed``."""
    policy.eval()  # no random crop; deterministic
    torch.manual_seed(seed)
    ref, _ = policy.forward(dict(batch))
    torch.manual_seed(seed)
    eps = torch.randn(batch["action"].shape)
    t = torch.randint(0, policy.config.num_train_timesteps, (batch["action"].shape[0],)).long()
    return diffusion_loss_with_features(policy, batch, noise=eps, timesteps=t), ref, eps, t


def test_hook_matches_lerobot_loss(toy_data, tmp_path):
    _, policy, batch = _policy_and_batch(toy_data, tmp_path)
    out, ref, eps, t = _ours_and_lerobots(policy, batch, 123)
    torch.testing.assert_close(out.loss, ref)
    assert set(out.embeds) == {"top", "wrist"}
    assert out.embeds["top"].shape == (6, 2, 64)   # [B, n_obs_steps, D]
    # x0_hat inverts the forward noising: with the true eps it recovers the action exactly
    abar = policy.diffusion.noise_scheduler.alphas_cumprod[t].view(-1, 1, 1)
    xt = policy.diffusion.noise_scheduler.add_noise(batch["action"], eps, t)
    torch.testing.assert_close((xt - (1 - abar).sqrt() * eps) / abar.sqrt(), batch["action"], atol=1e-4, rtol=1e-4)
    assert out.x0_hat.shape == batch["action"].shape
    # clamped like the scheduler's predicted original sample, so train/l1_loss stays in the action range
    assert policy.config.clip_sample
    assert out.x0_hat.abs().max() <= policy.config.clip_sample_range


def test_ot_gradient_reaches_encoder_and_changes_it(toy_data, tmp_path):
    cfg, policy, batch = _policy_and_batch(toy_data, tmp_path)
    out = diffusion_loss_with_features(policy, batch)
    n = 3
    sl_s, sl_t = slice(0, n), slice(n, None)
    feats = lambda sl: DomainFeatures(embeds={k: v[sl] for k, v in out.embeds.items()},  # noqa: E731
                                      labels={"action": out.action[sl]}, phase=torch.linspace(0, 1, 3))
    res = OTAlignmentLoss(cfg.ot)(feats(sl_s), feats(sl_t))
    assert res.metrics["ot_skipped"] == 0.0 and res.loss.item() > 0
    res.loss.backward()
    enc = policy.diffusion.rgb_encoder
    grads = [p.grad for p in enc.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in policy.diffusion.unet.parameters())
    before = [p.detach().clone() for p in enc.parameters()]
    torch.optim.SGD(enc.parameters(), lr=1.0).step()
    assert any(not torch.equal(a, p) for a, p in zip(before, enc.parameters()))


@pytest.mark.parametrize("separate", [False, True])
def test_each_camera_gets_its_own_encoder_output(toy_data, tmp_path, separate):
    """The features kept by the hooks on LeRobot's own conditioning pass are, per camera, what that camera's encoder
    gives for that camera's images (one shared encoder, or one per camera), and the loss is still LeRobot's."""
    cfg, policy, batch = _policy_and_batch(toy_data, tmp_path,
                                           policy={**tiny_config(toy_data)["policy"],
                                                   "use_separate_rgb_encoder_per_camera": separate})
    out, ref, _, _ = _ours_and_lerobots(policy, batch, 5)
    torch.testing.assert_close(out.loss, ref)
    keys = list(policy.config.image_features)
    encoders = list(policy.diffusion.rgb_encoder) if separate else [policy.diffusion.rgb_encoder] * len(keys)
    with torch.no_grad():
        for key, enc in zip(keys, encoders, strict=True):
            direct = enc(batch[key].flatten(0, 1)).view(6, 2, -1)
            torch.testing.assert_close(out.embeds[key.removeprefix("observation.images.")], direct)
    enc = DiffusionHook().encode(policy, batch)
    for cam, f in out.embeds.items():
        torch.testing.assert_close(enc[cam], f)
