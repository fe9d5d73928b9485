"""Scripted experts: an explicit task -> MetaWorld policy map and a noisy rollout of one expert episode."""

from __future__ import annotations

import importlib
import warnings

import numpy as np

from dpot.bench.env import DomainEnv, check_task

EXPERTS = {
    "push-v3": "SawyerPushV3Policy",
    "pick-place-v3": "SawyerPickPlaceV3Policy",
    "door-open-v3": "SawyerDoorOpenV3Policy",
    "button-press-topdown-v3": "SawyerButtonPressTopdownV3Policy",
    "drawer-open-v3": "SawyerDrawerOpenV3Policy",
    "reach-v3": "SawyerReachV3Policy",
}


def make_expert(task: str):
    """MetaWorld's scripted policy for ``task`` (``.get_action(obs39) -> action4``)."""
    check_task(task)
    return getattr(importlib.import_module("metaworld.policies"), EXPERTS[task])()


def rollout_expert(env: DomainEnv, seed: int, *, noise: float = 0.05, extra_frames: int = 5,
                   max_steps: int = 150, record: bool = True, region: str = "all") -> dict:
    """Run the expert for one seeded episode with Gaussian action noise (std ``noise``).

    Records each frame's observation and the commanded action; stops ``extra_frames`` steps after the first
    success or at ``max_steps``. ``region``: the half of the layout range to draw the layout in
    (:meth:`DomainEnv.reset`). Returns ``{"success", "length", "images": {cam: (T,H,W,3)}, "state": (T,d),
    "action": (T,4), "layout": DomainEnv.layout()}``.
    """
    expert = make_expert(env.task)
    rng = np.random.default_rng([int(seed), 7])
    obs = env.reset(seed, render=record, region=region)
    layout = env.layout()
    images = {c: [] for c in env.cameras}
    states, actions = [], []
    success_at = None
    for t in range(max_steps):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            action = expert.get_action(env.raw_obs)
        action = np.clip(action + rng.normal(0.0, noise, 4), -1.0, 1.0).astype(np.float32)
        for c in (env.cameras if record else ()):
            images[c].append(obs["images"][c])
        states.append(obs["state"])
        actions.append(action)
        obs, success, _ = env.step(action, render=record)
        if success and success_at is None:
            success_at = t
        if success_at is not None and t >= success_at + extra_frames:
            break
    return {"success": success_at is not None, "length": len(actions),
            "images": {c: np.stack(v) for c, v in images.items() if v},
            "state": np.stack(states), "action": np.stack(actions), "layout": layout}
