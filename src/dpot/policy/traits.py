"""What dpot knows about each LeRobot policy type besides its hook, as data (no torch import: the config loader and
the report read it): the module of its hook, the config defaults dpot fills in, its usual learning-rate range and
the learning-rate keys that move with the base LR.

A new policy type is its hook module (``dpot/policy/<type>.py``, :mod:`dpot.policy.hooks`) plus one row of
:data:`TRAITS`; ``tests/test_policy_traits.py`` checks that every registered hook has a row and every row a hook.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PolicyTraits", "TRAITS", "traits_of", "extra_lr_keys", "hook_modules"]


@dataclass(frozen=True)
class PolicyTraits:
    """One policy type's data.

    hook_module: the module whose ``@register_hook`` class trains it.
    config_defaults: ``policy.<key>`` values dpot fills in where neither the file nor an override sets them
        (``use_group_norm`` only when no pretrained weights are asked for: LeRobot refuses GroupNorm with them).
    lr_range: the usual ``[low, high]`` base learning rate (the ``lr_low`` / ``lr_high`` rules and the autopilot's
        LR space; ``rules.toml [lr_range]`` may override it per type).
    extra_lr_keys: config keys of other learning rates that move with the base LR, keeping their ratio to it.
    preset_optimizer: the optimizer type LeRobot's training preset builds for it (``get_optimizer_preset().type``;
        the autopilot's search space switches between adam and adamw, :mod:`dpot.autopilot.space`).
    """

    hook_module: str
    config_defaults: dict = field(default_factory=dict)
    lr_range: tuple[float, float] = (1e-5, 1e-3)
    extra_lr_keys: tuple[str, ...] = ()
    preset_optimizer: str | None = None


# dpot's defaults where LeRobot's would download or misbehave: no ImageNet weights (nothing is fetched at run time),
# and then GroupNorm in the Diffusion encoder (BatchNorm would mix source and target batch statistics and is
# unstable at the small batches/images of CPU runs).
TRAITS: dict[str, PolicyTraits] = {
    # the seed report: 1e-5 "underpowered", 1e-4 to 3e-4 typical for diffusion
    "diffusion": PolicyTraits("dpot.policy.diffusion",
                              {"pretrained_backbone_weights": None, "use_group_norm": True}, (1e-4, 3e-4),
                              preset_optimizer="adam"),
    # LeRobot's ACT preset: AdamW lr 1e-5 (backbone 1e-5); high = 10x the preset; the backbone's param group
    # (ACTPolicy.get_optim_params) has its own LR
    "act": PolicyTraits("dpot.policy.act", {"pretrained_backbone_weights": None}, (1e-5, 1e-4),
                        ("policy.optimizer_lr_backbone",), preset_optimizer="adamw"),
}


def traits_of(policy_type: str) -> PolicyTraits | None:
    """The traits of ``policy_type`` (None for a type dpot has no hook for)."""
    return TRAITS.get(policy_type)


def extra_lr_keys() -> tuple[str, ...]:
    """Every policy's extra learning-rate keys (a config holds only its own policy's)."""
    return tuple(dict.fromkeys(k for t in TRAITS.values() for k in t.extra_lr_keys))


def hook_modules() -> tuple[str, ...]:
    """The modules that register the policy hooks."""
    return tuple(t.hook_module for t in TRAITS.values())
