"""The ACT hook: LeRobot's ACT loss (L1 + kl_weight * KL) and per-camera image features from ONE forward pass.

LeRobot's ``ACT.forward`` runs unchanged (no re-implementation of the transformer); three forward hooks on its
own modules, active only during dpot's call, take out what the OT loss needs and make the step reproducible:

- per-camera features: ``encoder_img_feat_input_proj`` (the 1x1 conv from the backbone's ``layer4`` map to
  ``dim_model``) runs once per camera in ``config.image_features`` order; its output ``[B, dim_model, h, w]`` is
  mean-pooled over ``(h, w)`` -> ``[B, dim_model]`` per camera. These are the image tokens' content (before the
  positional embedding) that the transformer attends to; the gradient of the OT cost reaches the projection and
  the backbone. Why this and not the raw ``layer4`` map, the unpooled map or the encoder's output tokens:
  docs/architecture.md ("ACT's image features"), measured by ``benchmarks/act_embed_scale.py``.
- VAE latent noise: ``latent = mu + exp(log_sigma_x2 / 2) * eps`` with ``eps`` from the step's draws instead of
  ``torch.randn_like`` (a pre-hook on ``encoder_latent_input_proj`` replaces the sampled latent with this one;
  ``mu`` and ``log_sigma_x2`` come from ``vae_encoder_latent_output_proj``'s output of the same pass), so the
  latent noise is a function of ``(seed, step)`` and of the item, not of the process count.
- dropout: the forward runs inside ``torch.random.fork_rng`` seeded from the step's draws (per process), so a
  resumed run replays the same masks. Dropout masks are drawn per process: an N-process run equals the
  1-process run exactly only with ``policy.dropout=0`` (as the 1-vs-2-process test runs it).

The loss lines are ``ACTPolicy.forward``'s (checked equal in ``tests/train/test_act_policy.py``), plus the
per-item loss: ``l1_i + kl_weight * kld_i``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dpot.policy.hooks import PolicyHook, PolicyStepOutput, rank_rows, register_hook, step_generator

OBS_IMAGES = "observation.images"
ACTION = "action"


class _Capture:
    """The forward hooks of one ACT pass (registered on enter, removed on exit)."""

    def __init__(self, model, eps: Tensor | None):
        self.model, self.eps = model, eps
        self.cam_maps: list[Tensor] = []
        self.latent_params: Tensor | None = None
        self.handles = []

    def __enter__(self):
        m = self.model
        if getattr(m, "encoder_img_feat_input_proj", None) is not None:
            self.handles.append(m.encoder_img_feat_input_proj.register_forward_hook(
                lambda _mod, _inp, out: self.cam_maps.append(out)))
        if self.eps is not None and m.config.use_vae:
            self.handles.append(m.vae_encoder_latent_output_proj.register_forward_hook(self._keep_params))
            self.handles.append(m.encoder_latent_input_proj.register_forward_pre_hook(self._replace_latent))
        return self

    def _keep_params(self, _mod, _inp, out):
        self.latent_params = out

    def _replace_latent(self, _mod, inp):
        if self.latent_params is None:  # no VAE pass this time (eval mode): the zero latent stays
            return None
        d = self.model.config.latent_dim
        mu, log_sigma_x2 = self.latent_params[:, :d], self.latent_params[:, d:]
        eps = self.eps.to(mu.device, mu.dtype)
        return (mu + log_sigma_x2.div(2).exp() * eps,)

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        return False


def act_loss_with_features(policy, batch: dict[str, Tensor], *, latent_eps: Tensor | None = None,
                           dropout_seed: int | None = None, valid_share: Tensor | None = None) -> PolicyStepOutput:
    """LeRobot's ACT training loss on the normalized ``batch`` and the per-camera features of the same pass.

    ``loss = l1 + kl_weight * kld`` with ``l1 = sum(|a - a_hat| * valid) / (n_valid * A)`` (``valid = not
    action_is_pad``) and ``kld = mean_b sum_l -0.5 (1 + log_sigma_x2 - mu^2 - exp(log_sigma_x2))`` (only with
    ``use_vae`` in training mode), as ``ACTPolicy.forward``. ``latent_eps`` ``[B, latent_dim]`` replaces the
    VAE's ``randn_like`` noise; ``dropout_seed`` seeds the dropout masks (inside ``fork_rng``). Without them the
    global RNG is used, as LeRobot does. ``valid_share`` (under DDP: ``world * n_valid_local / n_valid_global``)
    scales ``l1`` so the ranks' mean is the global batch's masked mean. A batch without ``action_is_pad`` raises
    ValueError.

    Returns:
        PolicyStepOutput with ``embeds[camera] = mean_{h,w} proj(layer4(image))`` ``[B, dim_model]`` and extras
        ``l1_loss``, ``kld_loss`` (scalars; ``kld_loss`` absent without the VAE term).
    """
    cfg = policy.config
    if "action_is_pad" not in batch:
        raise ValueError("You need to provide 'action_is_pad' in the batch: ACT's L1 loss masks padded actions.")
    image_keys = list(cfg.image_features) if cfg.image_features else []
    batch = dict(batch)
    if image_keys:
        batch[OBS_IMAGES] = [batch[k] for k in image_keys]
    model = policy.model
    devices = [batch[ACTION].device] if batch[ACTION].device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=dropout_seed is not None):
        if dropout_seed is not None:
            torch.manual_seed(int(dropout_seed))
        with _Capture(model, latent_eps) as cap:
            actions_hat, (mu, log_sigma_x2) = model(batch)
    if len(cap.cam_maps) != len(image_keys):
        raise RuntimeError(f"ACT ran its image projection {len(cap.cam_maps)} times for {len(image_keys)} cameras")
    embeds = {k.removeprefix(OBS_IMAGES + "."): m.mean(dim=(-2, -1)) for k, m in zip(image_keys, cap.cam_maps)}

    action = batch[ACTION]
    abs_err = F.l1_loss(action, actions_hat, reduction="none")
    valid = ~batch["action_is_pad"].unsqueeze(-1)
    l1 = (abs_err * valid).sum() / (valid.sum() * abs_err.shape[-1]).clamp_min(1)
    per_item = (abs_err * valid).sum((1, 2)) / (valid.sum((1, 2)) * abs_err.shape[-1]).clamp_min(1)
    if valid_share is not None:
        l1 = l1 * valid_share.to(l1.device, l1.dtype)
    extras = {"l1_loss": l1.detach()}
    loss = l1
    if cfg.use_vae and log_sigma_x2 is not None:
        kld_items = (-0.5 * (1 + log_sigma_x2 - mu.pow(2) - log_sigma_x2.exp())).sum(-1)
        kld = kld_items.mean()
        extras["kld_loss"] = kld.detach()
        loss = l1 + kld * cfg.kl_weight
        per_item = per_item + kld_items * cfg.kl_weight
    return PolicyStepOutput(loss=loss, per_item_loss=per_item.detach(), embeds=embeds, action=action, extras=extras)


@register_hook("act")
class ACTHook(PolicyHook):
    """LeRobot's ``ACTPolicy``: BC = ACT's loss, embeddings = pooled projected backbone maps per camera; logs
    ``train/l1_loss`` and ``train/kld_loss`` (LeRobot's keys)."""

    def step_draws(self, policy_config, seed, step, layout):
        """VAE latent noise ``[B, latent_dim]`` for the global batch, then one dropout seed per process."""
        n_src, n_tgt, world, rank = layout
        g = step_generator(seed, step)
        eps = torch.randn((n_src + n_tgt) * world, int(policy_config.latent_dim), generator=g)
        dropout_seeds = torch.randint(0, 2**62, (world,), generator=g)
        return {"latent_eps": rank_rows(eps, layout), "dropout_seed": dropout_seeds[rank]}

    def forward(self, policy, batch, draws):
        return act_loss_with_features(policy, batch, latent_eps=draws["latent_eps"],
                                      dropout_seed=int(draws["dropout_seed"]), valid_share=draws.get("valid_share"))

    def encode(self, policy, batch):
        """``mean_{h,w} encoder_img_feat_input_proj(backbone(image)["feature_map"])`` ``[B, dim_model]`` per camera,
        the features :func:`act_loss_with_features` captures."""
        model = policy.model
        out = {}
        for key in list(policy.config.image_features or []):
            fmap = model.backbone(batch[key])["feature_map"]
            out[key.removeprefix(OBS_IMAGES + ".")] = model.encoder_img_feat_input_proj(fmap).mean(dim=(-2, -1))
        return out

    def pad_normalized(self, policy_config):
        return True

    def log_metrics(self, out):
        return {f"train/{k}": float(v) for k, v in out["extras"].items()}

    def predict_chunk(self, policy, batch):
        """ACT's chunk in eval mode (zero latent), its first ``n_action_steps`` actions."""
        n = policy.config.n_action_steps
        return policy.predict_action_chunk(batch)[:, :n], batch[ACTION][:, :n]


__all__ = ["ACTHook", "act_loss_with_features"]
