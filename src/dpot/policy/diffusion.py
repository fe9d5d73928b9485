"""The Diffusion Policy hook: diffusion loss + per-camera image embeddings + denoised estimate, ONE forward pass.

LeRobot's ``DiffusionModel.compute_loss`` returns only a scalar and draws its own noise and timesteps; the per-camera
encoder outputs exist only inside ``_prepare_global_conditioning``. :func:`diffusion_loss_with_features` calls that
method itself (LeRobot's own conditioning: state, every camera's features, the environment state) while forward hooks
on the model's RGB encoder(s) keep their outputs (:class:`CameraFeatures`), so the OT loss uses exactly the embeddings
that condition the U-Net (gradients flow into the encoders) and no second encoder pass is made; then the U-Net on
the trainer's own noise and timesteps, and the loss as ``compute_loss`` forms it, per item as well.

Checked against LeRobot 0.6.1 (`tests/train/test_policy_hook.py` compares with ``DiffusionModel.compute_loss``
under the same noise and timesteps). :class:`DiffusionHook` is the trainer's entry point (registered for
``policy.type=diffusion``, :mod:`dpot.policy.hooks`).
"""

from __future__ import annotations

from dataclasses import dataclass

import einops
import torch
import torch.nn.functional as F
from torch import Tensor

from dpot.policy.hooks import PolicyHook, PolicyStepOutput, rank_rows, register_hook, step_generator

OBS_STATE = "observation.state"
OBS_IMAGES = "observation.images"
ACTION = "action"


@dataclass
class DiffusionStepOutput:
    """What one training forward returns.

    loss: LeRobot's diffusion loss (MSE of the U-Net target, mean over the batch) — a scalar.
    per_item_loss: ``[B]`` the same MSE averaged per item (for per-domain logging).
    embeds: camera name (the part after ``observation.images.``) -> ``[B, n_obs_steps, D]`` encoder features (a
        cost term flattens the steps, or takes one with ``time_index``).
    action: ``[B, horizon, action_dim]`` the normalized ground-truth action chunk (the label).
    x0_hat: ``[B, horizon, action_dim]`` the model's one-step denoised estimate of the chunk:
        ``x0_hat = (x_t - sqrt(1 - abar_t) * eps_hat) / sqrt(abar_t)`` for "epsilon", ``pred`` for "sample",
        clamped to ``±clip_sample_range`` when ``clip_sample`` (as the DDPM/DDIM ``step`` clamps it); unclamped,
        the estimate explodes at large t where ``abar_t -> 0``, and ``train/l1_loss`` would measure that instead.
    """

    loss: Tensor
    per_item_loss: Tensor
    embeds: dict[str, Tensor]
    action: Tensor
    x0_hat: Tensor


def stack_cameras(batch: dict[str, Tensor], image_keys: list[str], n_obs_steps: int) -> dict[str, Tensor]:
    """A shallow copy of ``batch`` with ``observation.images`` = ``[B, S, n_cams, C, H, W]`` (LeRobot's layout)."""
    batch = dict(batch)
    if image_keys:
        ims = []
        for key in image_keys:
            x = batch[key]
            if n_obs_steps == 1 and x.ndim == 4:
                x = x.unsqueeze(1)
            ims.append(x)
        batch[OBS_IMAGES] = torch.stack(ims, dim=-4)
    return batch


class CameraFeatures:
    """Forward hooks on a ``DiffusionModel``'s RGB encoder(s) that keep their outputs while LeRobot's own
    ``_prepare_global_conditioning`` runs (``with CameraFeatures(model) as cams: model._prepare_global_conditioning(
    batch)``); :meth:`per_camera` gives them back per camera. The kept tensors are the ones the conditioning is built
    from (same autograd graph), in LeRobot's layout: one shared encoder sees ``(b s n)`` images, one encoder per
    camera sees ``(b s)``."""

    def __init__(self, model):
        self.model = model
        self.outs: list[Tensor] = []
        self.handles: list = []

    def __enter__(self) -> CameraFeatures:
        m = self.model
        encoders = m.rgb_encoder if m.config.use_separate_rgb_encoder_per_camera else [m.rgb_encoder]
        for enc in encoders:
            self.handles.append(enc.register_forward_hook(lambda _mod, _inp, out: self.outs.append(out)))
        return self

    def __exit__(self, *exc) -> bool:
        for h in self.handles:
            h.remove()
        return False

    def per_camera(self, b: int, s: int, n: int) -> list[Tensor]:
        """Per-camera features ``[B, S, D]`` (``b`` items, ``s`` observation steps, ``n`` cameras)."""
        if self.model.config.use_separate_rgb_encoder_per_camera:
            return [out.view(b, s, -1) for out in self.outs]
        (out,) = self.outs
        return list(einops.rearrange(out, "(b s n) d -> n b s d", b=b, s=s, n=n))


def conditioning_with_features(model, batch: dict[str, Tensor], image_keys: list[str]) -> tuple[Tensor, dict]:
    """``(global_cond [B, S * cond_dim] flattened, {camera: [B, S, D]})`` of a batch already stacked by
    :func:`stack_cameras`: LeRobot's ``_prepare_global_conditioning`` with the cameras' features kept."""
    with CameraFeatures(model) as cams:
        global_cond = model._prepare_global_conditioning(batch)
    if not image_keys:
        return global_cond, {}
    b, s = batch[OBS_STATE].shape[:2]
    feats = cams.per_camera(b, s, len(image_keys))
    return global_cond, {k.removeprefix(OBS_IMAGES + "."): f for k, f in zip(image_keys, feats, strict=True)}


def diffusion_loss_with_features(
    policy,
    batch: dict[str, Tensor],
    *,
    noise: Tensor | None = None,
    timesteps: Tensor | None = None,
) -> DiffusionStepOutput:
    """Compute LeRobot's diffusion loss and return the per-camera embeddings and ``x0_hat`` of the same pass.

    ``policy`` is a (possibly DDP-unwrapped) ``DiffusionPolicy``; ``batch`` is the *normalized* batch (after the
    preprocessor) with one key per camera. ``noise`` (``[B, horizon, action_dim]``) and ``timesteps`` (``[B]``)
    default to fresh samples from the global RNG exactly as ``compute_loss`` draws them; the trainer passes
    them explicitly (drawn from a per-step generator) so runs are reproducible across resume and process counts.

    global_cond = flatten_{s}([state_s, f_cam1_s, ..., f_camN_s, env_state_s]) from LeRobot's own
    ``DiffusionModel._prepare_global_conditioning`` (:func:`conditioning_with_features`); loss = mean((unet(x_t, t,
    global_cond) - target)^2), masked by ``action_is_pad`` when ``do_mask_loss_for_padding`` (a batch without it
    raises ValueError, as LeRobot does).
    """
    cfg = policy.config
    if cfg.do_mask_loss_for_padding and "action_is_pad" not in batch:
        # as DiffusionModel.compute_loss (checked before the forward pass): never drop the padding mask silently
        raise ValueError(f"You need to provide 'action_is_pad' in the batch when {cfg.do_mask_loss_for_padding=}.")
    model = policy.diffusion
    image_keys = list(cfg.image_features) if cfg.image_features else []
    batch = stack_cameras(batch, image_keys, cfg.n_obs_steps)
    bsz = batch[OBS_STATE].shape[0]
    global_cond, embeds = conditioning_with_features(model, batch, image_keys)

    trajectory = batch[ACTION]
    if noise is None:
        noise = torch.randn(trajectory.shape, device=trajectory.device)
    if timesteps is None:
        timesteps = torch.randint(0, model.noise_scheduler.config.num_train_timesteps, (bsz,),
                                  device=trajectory.device).long()
    noise = noise.to(trajectory.device, trajectory.dtype)
    timesteps = timesteps.to(trajectory.device).long()
    noisy = model.noise_scheduler.add_noise(trajectory, noise, timesteps)
    pred = model.unet(noisy, timesteps, global_cond=global_cond)

    if cfg.prediction_type == "epsilon":
        target = noise
        abar = model.noise_scheduler.alphas_cumprod.to(trajectory.device)[timesteps].view(-1, 1, 1).to(pred.dtype)
        x0_hat = (noisy - (1 - abar).sqrt() * pred) / abar.sqrt()
    elif cfg.prediction_type == "sample":
        target = trajectory
        x0_hat = pred
    else:
        raise ValueError(f"Unsupported prediction type {cfg.prediction_type}")
    if cfg.clip_sample:  # as the noise scheduler's step() clips its predicted original sample
        x0_hat = x0_hat.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)

    err = F.mse_loss(pred, target, reduction="none")
    if cfg.do_mask_loss_for_padding:
        mask = (~batch["action_is_pad"]).unsqueeze(-1).to(err.dtype)
        loss = (err * mask).sum() / (mask.sum() * err.shape[-1]).clamp_min(1)
        per_item = (err * mask).sum((1, 2)) / (mask.sum((1, 2)) * err.shape[-1]).clamp_min(1)
    else:
        loss = err.mean()
        per_item = err.mean((1, 2))
    return DiffusionStepOutput(loss=loss, per_item_loss=per_item.detach(), embeds=embeds, action=trajectory,
                               x0_hat=x0_hat)


@register_hook("diffusion")
class DiffusionHook(PolicyHook):
    """LeRobot's ``DiffusionPolicy``: BC = its diffusion loss, embeddings = its RGB encoder outputs,
    ``train/l1_loss`` = mean ``|x0_hat - action|`` (normalized action space)."""

    def step_draws(self, policy_config, seed, step, layout):
        """Noise ``[B, horizon, A]`` then timesteps ``[B]``, drawn in that order for the global batch."""
        n_src, n_tgt, world, _ = layout
        g = step_generator(seed, step)
        n = (n_src + n_tgt) * world
        noise = torch.randn(n, policy_config.horizon, int(policy_config.output_features[ACTION].shape[0]), generator=g)
        t = torch.randint(0, int(policy_config.num_train_timesteps), (n,), generator=g)
        return {"noise": rank_rows(noise, layout), "timesteps": rank_rows(t, layout)}

    def forward(self, policy, batch, draws):
        out = diffusion_loss_with_features(policy, batch, noise=draws["noise"], timesteps=draws["timesteps"])
        return PolicyStepOutput(loss=out.loss, per_item_loss=out.per_item_loss, embeds=out.embeds,
                                action=out.action, extras={"x0_hat": out.x0_hat})

    def encode(self, policy, batch):
        """``rgb_encoder`` features ``[B, n_obs_steps, D]`` per camera, from LeRobot's own conditioning pass
        (:func:`conditioning_with_features`; the U-Net is not run)."""
        cfg = policy.config
        image_keys = list(cfg.image_features) if cfg.image_features else []
        if not image_keys:
            return {}
        batch = stack_cameras(batch, image_keys, cfg.n_obs_steps)
        return conditioning_with_features(policy.diffusion, batch, image_keys)[1]

    def log_metrics(self, out):
        l1 = (out["extras"]["x0_hat"].detach().float() - out["action"].detach().float()).abs().mean()
        return {"train/l1_loss": float(l1)}

    def predict_chunk(self, policy, batch):
        """The full reverse diffusion (``generate_actions``) from noise drawn from the global RNG."""
        cfg = policy.config
        start = cfg.n_obs_steps - 1
        gt = batch[ACTION][:, start:start + cfg.n_action_steps]
        image_keys = list(cfg.image_features) if cfg.image_features else []
        b = stack_cameras(batch, image_keys, cfg.n_obs_steps)
        noise = torch.randn(gt.shape[0], cfg.horizon, gt.shape[-1], device=gt.device)
        return policy.diffusion.generate_actions(b, noise=noise), gt
