"""How dpot takes the BC loss and features out of a LeRobot policy (no fork of LeRobot): one registered hook per
policy type (:mod:`dpot.policy.hooks`; Diffusion in :mod:`dpot.policy.diffusion`, ACT in :mod:`dpot.policy.act`), and
what dpot knows about each type as data (:mod:`dpot.policy.traits`: config defaults, LR range, extra LR keys)."""

__all__ = ["PolicyHook", "PolicyStepOutput", "get_hook", "register_hook", "supported_policy_types"]


def __getattr__(name: str):
    """The hook API, imported on first use (``dpot.policy.traits`` stays importable without torch)."""
    if name in __all__:
        from dpot.policy import hooks

        return getattr(hooks, name)
    raise AttributeError(f"module 'dpot.policy' has no attribute {name!r}")
