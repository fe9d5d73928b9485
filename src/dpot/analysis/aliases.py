"""Metric-name normalization: every logged key variant maps to one canonical key (docs/architecture.md, "Contracts").

Canonical keys are the exact keys of the run-directory contract (``train/loss``, ``train/ot_pi_diag``,
``eval/offline_eval/avg_loss``, ...). The seed's variants (``ot_pi_diag``, ``train/ot_ot_pi_diag``,
``eval/avg_loss``) and plain ``lerobot-train``'s keys (``eval/eval_loss``) are folded onto them.
"""

from __future__ import annotations

import re

from dpot import metric_names as mn
from dpot.metric_names import EVAL_LOSS, EVAL_S, train

# Canonical key -> (short label, direction: "min" | "max" | None when neither is "better").
CANONICAL: dict[str, tuple[str, str | None]] = {
    "train/loss": ("train loss", "min"),
    "train/l1_loss": ("train L1", "min"),
    "train/kld_loss": ("train KL (ACT)", "min"),
    "train/grad_norm": ("grad norm", "min"),
    "train/lr": ("learning rate", None),
    "train/update_s": ("update s/step", "min"),
    "train/dataloading_s": ("data s/step", "min"),
    "train/samples_per_s": ("samples/s", "max"),
    train(mn.OT_LOSS): ("OT loss (before lambda)", None),
    train(mn.OT_LOSS_SCALED): ("OT loss (x lambda)", None),
    train(mn.OT_PI_SUM): ("pi_sum", None),
    train(mn.OT_PI_DIAG): ("pi_diag", None),
    train(mn.OT_PI_DIAG_FRAC): ("pi_diag/pi_sum", None),
    train(mn.OT_SKIPPED): ("OT skipped", "min"),
    train(mn.OT_SINKHORN_ITERS): ("Sinkhorn iterations", None),
    train(mn.OT_SINKHORN_MAXED): ("Sinkhorn solves at max_iters", "min"),
    train(mn.OT_SINKHORN_MARGINAL_ERR): ("Sinkhorn marginal error", "min"),
    EVAL_LOSS: ("eval loss", "min"),
    EVAL_S: ("eval s", "min"),
}
# per-term costs: the batch mean of w_k C_k (the fork's ot_cost/<term>) and the plan-weighted sum pi * w_k C_k
MEAN_COST_PREFIX, PLAN_COST_PREFIX = train(mn.COST), train(mn.COST_PLAN)
COST_PREFIXES = (MEAN_COST_PREFIX, PLAN_COST_PREFIX)

# Explicit aliases (lower-cased). Anything else goes through the generic rules in ``canonical_key``.
ALIASES: dict[str, str] = {
    "eval/avg_loss": EVAL_LOSS,
    "eval/eval_loss": EVAL_LOSS,          # plain lerobot-train held-out loss
    "eval/offline_eval/l1": EVAL_LOSS,
    "offline_eval/avg_loss": EVAL_LOSS,
    "eval_loss": EVAL_LOSS,
    "avg_loss": EVAL_LOSS,
    "eval/eval_s": EVAL_S,
    "eval_s": EVAL_S,
    "train/l1": "train/l1_loss",
    "l1": "train/l1_loss",
    train(mn.OT_PREFIX + mn.OT_LOSS): train(mn.OT_LOSS),    # the seed's doubled prefix (train/ot_ot_loss)
}
# the seed's doubled OT prefix (``train/ot_ot_<name>``, ``ot_ot_<name>``) -> the single one
_DOUBLED = {train(mn.OT_PREFIX * 2): train(mn.OT_PREFIX), mn.OT_PREFIX * 2: mn.OT_PREFIX}
# the per-term cost families, logged with or without the train/ prefix (today's and the legacy mean's)
_COST_FAMILIES = (mn.COST, mn.LEGACY_COST_MEAN, mn.COST_PLAN)
_COST_KEY = re.compile("^(" + "|".join(re.escape(train(f)) for f in _COST_FAMILIES) + ")(.+)$")

_TRAIN_BASES = {k.split("/", 1)[1] for k in CANONICAL if k.startswith("train/")}


def canonical_key(raw: str) -> str:
    """Return the canonical key for a logged key; unknown keys come back unchanged (still usable)."""
    key = raw.strip()
    low = key.lower()
    if low in ALIASES:
        return ALIASES[low]
    if low in CANONICAL:
        return low
    for doubled, single in _DOUBLED.items():
        if low.startswith(doubled):
            low = single + low[len(doubled):]
    if low.startswith(_COST_FAMILIES):
        low = train(low)
    m = _COST_KEY.match(low)
    if m:
        return m.group(1) + key.split("/")[-1]
    if low in CANONICAL:
        return low
    if "/" not in low and low in _TRAIN_BASES:
        return train(low)
    return key


def direction(key: str) -> str | None:
    """'min' when lower is better, 'max' when higher is better, None when neither (lr, pi_*, costs)."""
    if key in CANONICAL:
        return CANONICAL[key][1]
    if key.startswith(COST_PREFIXES):
        return None
    low = key.lower()
    if "loss" in low:
        return "min"
    if "success" in low or "reward" in low:
        return "max"
    return None


def label(key: str) -> str:
    """Short human label for a canonical key."""
    if key in CANONICAL:
        return CANONICAL[key][0]
    for prefix, name in ((PLAN_COST_PREFIX, "plan-weighted cost"), (MEAN_COST_PREFIX, "mean cost")):
        if key.startswith(prefix):
            return f"{name} {key[len(prefix):]}"
    return key


def cost_prefix(keys) -> str:
    """The per-term OT cost metric prefix to read among canonical ``keys``: the mean cost (``train/ot_cost/``,
    :mod:`dpot.metric_names`) when logged, else the plan-weighted cost (``train/ot_cost_plan/``)."""
    mean = any(k.startswith(MEAN_COST_PREFIX) for k in keys)
    return MEAN_COST_PREFIX if mean or not any(k.startswith(PLAN_COST_PREFIX) for k in keys) else PLAN_COST_PREFIX
