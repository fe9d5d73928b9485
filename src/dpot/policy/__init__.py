"""How dpot takes the BC loss and features out of a LeRobot policy (no fork of LeRobot): one registered hook per
policy type (:mod:`dpot.policy.hooks`; Diffusion in :mod:`dpot.policy.diffusion`, ACT in :mod:`dpot.policy.act`)."""

from dpot.policy.hooks import PolicyHook, PolicyStepOutput, get_hook, register_hook, supported_policy_types

__all__ = ["PolicyHook", "PolicyStepOutput", "get_hook", "register_hook", "supported_policy_types"]
