"""The policy hook: one registered implementation per LeRobot policy type, one step output for the trainer.

The trainer (:mod:`dpot.train.loop`) never names a policy class. For the run's ``policy.type`` it asks
:func:`get_hook` for a :class:`PolicyHook`, which

- draws the step's random numbers for the *global* batch (:meth:`PolicyHook.step_draws`: diffusion noise and
  timesteps, ACT's VAE latent noise and dropout seed, ...) from a generator seeded by ``(seed, step)``, each
  process taking its rows (:func:`rank_rows`), so a resumed run and an N-process run replay the same numbers;
- encodes the OT pair batch's images with the policy's own image encoder (:meth:`PolicyHook.encode`);
- runs the policy's own training loss in one forward pass and returns a :class:`PolicyStepOutput` (BC loss,
  per-item loss, per-camera embeddings, the normalized action-chunk label, extra tensors to log);
- turns that output into the policy's logged metrics (:meth:`PolicyHook.log_metrics`, after the update);
- predicts the executed action chunk for the offline evaluation (:meth:`PolicyHook.predict_chunk`).

A third policy is one new module ``dpot/policy/<type>.py`` with a ``@register_hook("<type>")`` class and its row
in :data:`dpot.policy.traits.TRAITS` (config defaults, LR range, extra LR keys; the hook module is imported from
there).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from dpot.data import seeds
from dpot.errors import UserError
from dpot.policy.traits import hook_modules

#: the modules that register a hook (imported on first use; each holds one policy type's hook): dpot.policy.traits
HOOK_MODULES = hook_modules()
_REGISTRY: dict[str, type[PolicyHook]] = {}


@dataclass
class PolicyStepOutput:
    """What one training forward returns, whatever the policy.

    loss: the policy's own BC loss (a scalar, as its ``forward`` computes it for training).
    per_item_loss: ``[B]`` the same loss per item, detached (for per-domain logging).
    embeds: camera name (the part after ``observation.images.``) -> ``[B, D]`` (or ``[B, n_obs_steps, D]``) learned
        image features.
    action: ``[B, T, action_dim]`` the normalized ground-truth action chunk (the OT label).
    extras: tensors :meth:`PolicyHook.log_metrics` turns into logged metrics after the update.
    """

    loss: Tensor
    per_item_loss: Tensor
    embeds: dict[str, Tensor]
    action: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """The output as a plain dict (what the DDP-wrapped step module returns)."""
        return {"loss": self.loss, "per_item": self.per_item_loss, "embeds": self.embeds, "action": self.action,
                "extras": self.extras}


class PolicyHook:
    """Base class of the per-policy hooks (stateless; one instance per run)."""

    policy_type: ClassVar[str] = ""

    def step_draws(self, policy_config, seed: int, step: int, layout: tuple[int, int, int, int]) -> dict[str, Tensor]:
        """This process's random draws for step ``step`` (``layout = (n_src, n_tgt, world, rank)``)."""
        raise NotImplementedError

    def forward(self, policy, batch: dict[str, Tensor], draws: dict[str, Tensor]) -> PolicyStepOutput:
        """The policy's training loss on the normalized ``batch`` with the step's ``draws``, and its features."""
        raise NotImplementedError

    def encode(self, policy, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-camera image features of the normalized ``batch`` through the policy's image encoder only, the same
        tensors :meth:`forward` puts in ``embeds`` (gradients flow into the encoder), without the BC loss: the
        OT pair batch (``ot.pair_batch_size``), as the fork's ``encode_feature_for_ot``."""
        raise NotImplementedError

    def pad_normalized(self, policy_config) -> bool:
        """True when the BC loss is a mean over the batch's valid (non-padded) action steps: under DDP the
        trainer then passes ``draws["valid_share"]`` (:func:`dpot.train.distributed.valid_share`), the factor
        that makes the ranks' mean gradient equal the one-process gradient of the global batch."""
        return False

    def log_metrics(self, out: dict) -> dict[str, float]:
        """``train/<key>`` metrics of the policy (after the update) from the step module's output dict."""
        return {}

    def predict_chunk(self, policy, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(predicted, ground truth)`` executed action chunks ``[B, n_action_steps, A]`` (normalized) for the
        offline evaluation; called in eval mode under ``torch.no_grad`` inside a seeded ``fork_rng``."""
        raise NotImplementedError


def register_hook(policy_type: str):
    """Class decorator: register a :class:`PolicyHook` subclass for LeRobot's ``policy.type``."""

    def deco(cls: type[PolicyHook]) -> type[PolicyHook]:
        cls.policy_type = policy_type
        _REGISTRY[policy_type] = cls
        return cls

    return deco


def supported_policy_types() -> list[str]:
    """The policy types dpot can train (those with a registered hook), sorted."""
    for mod in HOOK_MODULES:
        importlib.import_module(mod)
    return sorted(_REGISTRY)


def get_hook(policy_type: str) -> PolicyHook:
    """The hook of ``policy_type``; UserError naming the supported types when there is none."""
    supported = supported_policy_types()
    if policy_type not in _REGISTRY:
        raise UserError(f"policy.type: '{policy_type}' is not supported by dpot train; supported types: "
                        f"{', '.join(supported)}")
    return _REGISTRY[policy_type]()


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of step ``step``'s random draws: ``SeedSequence([seed, DIFFUSION_NOISE, step])``."""
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([int(seed), seeds.DIFFUSION_NOISE, int(step)]).generate_state(1)[0]))
    return g


def rank_rows(x: Tensor, layout: tuple[int, int, int, int]) -> Tensor:
    """This process's rows of a global-batch tensor ordered ``[all ranks' source rows, all ranks' target rows]``:
    its ``n_src`` source rows then its ``n_tgt`` target rows (the local batch's order)."""
    n_src, n_tgt, world, rank = layout
    ns = n_src * world
    return torch.cat([x[rank * n_src:(rank + 1) * n_src], x[ns + rank * n_tgt:ns + (rank + 1) * n_tgt]])


__all__ = ["HOOK_MODULES", "PolicyHook", "PolicyStepOutput", "get_hook", "rank_rows", "register_hook",
           "step_generator", "supported_policy_types"]
