"""The autopilot's rules as pure functions: the seed's rollback triggers (:func:`decide`), the LR-halved retry,
successive-halving budgets, and the candidate values recorded as Optuna params."""

from __future__ import annotations

import math

from dpot.analysis import cfgkeys
from dpot.autopilot import runs, spec

# Recorded trial parameters (Optuna distributions) for the values a candidate config holds: the search space of
# the TPE / random baselines in benchmarks/autopilot.py. Wide on purpose: a diagnosis may go outside any prior.
SPACE = {"lr": ("lr", 1e-8, 10.0, True), "ot.lambda_ot": ("ot.lambda_ot", 0.0, 100.0, False),
         "ot.reg": ("ot.reg", 1e-5, 100.0, True)}


def space_params(cfg: dict) -> dict:
    """The candidate config's values of :data:`SPACE` (recorded as the trial's params)."""
    out = {}
    for name, (key, lo, hi, _) in SPACE.items():
        if name == "lr":
            keys = spec.lr_keys(cfg)
            val = cfgkeys.get(cfg, keys[0]) if keys else None
        else:
            val = cfgkeys.get(cfg, key)
        if isinstance(val, (int, float)) and not isinstance(val, bool) and lo <= float(val) <= hi:
            out[name] = float(val)
    return out


def sh_budgets(n: int, steps: int) -> list[int]:
    """Successive-halving budgets for ``n`` candidates (eta = 2): ``[S]`` for n <= 2, else
    ``[S/2^R, ..., S/2, S]`` with ``R = floor(log2 n)`` rungs below the full budget; rung r keeps the best
    ``max(1, n_r // 2)`` candidates (n_0 = n)."""
    if n <= 2:
        return [steps]
    r = max(1, int(math.floor(math.log2(n))))
    while r > 0 and steps // (2 ** r) < 1:
        r -= 1
    return [steps // (2 ** (r - i)) for i in range(r)] + [steps]


def decide(*, kind: str, final: bool, failed: bool, pruned: bool, objective: float | None,
           regression: float | None, findings: list[str], max_regression: float) -> str:
    """The decision on one finished trial (the seed's rollback triggers; see the module docstring):
    failed | pruned | halving (a short successive-halving rung) | kept | retried | rolled_back."""
    if failed:
        return "failed"
    if pruned:
        return "pruned"
    if not final:
        return "halving"
    if kind == "base":
        return "kept"
    unstable = not runs.is_finite(objective) or "instability" in findings
    if unstable and kind != "retry":
        return "retried"
    if not runs.is_finite(objective) or (regression is not None and regression > max_regression):
        return "rolled_back"
    return "kept"


def halve_lr(cfg: dict) -> tuple[dict, dict]:
    """``cfg`` with its base learning rate(s) halved, and ``{key: new value}`` of what changed."""
    changed = {}
    for key in spec.lr_keys(cfg):
        lr = cfgkeys.get(cfg, key)
        if isinstance(lr, (int, float)) and not isinstance(lr, bool):
            cfg = cfgkeys.set_(cfg, key, lr / 2)
            changed[key] = lr / 2
    return cfg, changed
