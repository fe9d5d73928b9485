"""The one way to read a saved train config outside ``train/``: dotted-key access, and what the settings mean.

A saved config is ``train_config.json`` (``dpot.config.config_to_dict`` of the resolved ``DpotTrainConfig``), or
the config a W&B / TensorBoard run recorded. The report, the rules (``diagnose``), ``propose``, the autopilot and
the study read the learning rate, its schedule and the OT settings here and nowhere else, through the key constants
below (the only place outside ``config.py`` that spells them) and the accessors :func:`lr_keys`, :func:`base_lr`,
:func:`lr_changes`, :func:`schedule`, :func:`schedule_changes`, :func:`optimizer_type`, :func:`optimizer_changes`,
:func:`weight_decay`, :func:`weight_decay_changes`, :func:`ot_settings`, :func:`features`, :func:`feature_weights`.
``tests/analysis/test_cfgkeys.py`` resolves real configs through ``dpot.config`` and checks every key and default
here against them: a renamed config field fails that test instead of silently turning a rule or a proposal off.
This module imports nothing of dpot's (analysis never imports train, nor the heavy config module).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from dpot.policy.traits import extra_lr_keys, traits_of

_MISSING = object()

# ------------------------------------------------------------------ keys of a saved config
PRESET = "use_policy_training_preset"     # true: LeRobot's policy presets set the optimizer and the scheduler
LR = "optimizer.lr"                       # the explicit (or the resolved preset) optimizer's LR
POLICY_LR = "policy.optimizer_lr"         # the LR the policy preset uses
#: policy-specific LR keys (not in every saved config; dpot.policy.traits): ACT's backbone param group, used with or
#: without the preset (ACTPolicy.get_optim_params)
BACKBONE_LR = extra_lr_keys()
OPTIMIZER = "optimizer"
OPTIMIZER_TYPE = "optimizer.type"         # adam | adamw | ... of the explicit (or the resolved preset) optimizer
OPTIMIZER_WD = "optimizer.weight_decay"
POLICY_WD = "policy.optimizer_weight_decay"   # the weight decay the policy preset uses
SCHEDULER = "scheduler"                   # {type, name, num_warmup_steps, ...}
SCHEDULER_TYPE = "scheduler.type"
SCHEDULER_NAME = "scheduler.name"
SCHEDULER_WARMUP = "scheduler.num_warmup_steps"
POLICY_SCHEDULER = "policy.scheduler_name"
POLICY_WARMUP = "policy.scheduler_warmup_steps"
POLICY_TYPE = "policy.type"
STEPS = "steps"
NUM_WORKERS = "num_workers"
OT = "ot"
OT_LAMBDA = "ot.lambda_ot"
OT_REG = "ot.reg"
OT_TAU_SRC = "ot.tau_src"
OT_TAU_TGT = "ot.tau_tgt"
OT_METHOD = "ot.method"
OT_COST_NORM = "ot.cost_norm"
OT_HEURISTIC = "ot.heuristic"
OT_PRIOR = "ot.prior"
OT_MAX_ITERS = "ot.max_iters"             # the Sinkhorn solve's iteration cap
OT_FEATURES = "ot.features"
FEATURE_TYPE = "type"                     # of an ot.features item: "embed" | "label"
FEATURE_WEIGHT = {"embed": "weight_embed", "label": "weight_label"}   # the weight field of each feature kind

# OTConfig's defaults for keys a saved config may lack (older runs, W&B configs); checked against OTConfig by
# tests/analysis/test_cfgkeys.py, never restated elsewhere.
OT_DEFAULTS = {"method": "uot", "cost_norm": "dim"}
PLANLESS_METHODS = ("mmd",)               # alignment methods without a transport plan (no reg, no pi metrics)


def is_number(x) -> bool:
    """A config value that is a real number (int or float; a bool is a switch, not a number)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def get(config: dict, dotted: str, default=None):
    """``config['a']['b']`` for ``'a.b'``; list items by index (``ot.features.1.weight_label``)."""
    node = config
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return default
    return node


def set_(config: dict, dotted: str, value) -> dict:
    """Return a deep copy of ``config`` with ``dotted`` set to ``value`` (creates missing dicts)."""
    out = copy.deepcopy(config)
    parts = dotted.split(".")
    node = out
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
            continue
        if not isinstance(node.get(part), (dict, list)):
            node[part] = {}
        node = node[part]
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value
    return out


def flatten(config, prefix: str = "") -> dict:
    """``{'a.b': v, ...}`` for every leaf (lists of dicts are indexed: ``ot.features.0.type``)."""
    out = {}
    if isinstance(config, dict):
        for k, v in config.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(config, list) and config and all(isinstance(x, dict) for x in config):
        for i, v in enumerate(config):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = config
    return out


def lr_keys(config: dict) -> list[str]:
    """The dotted keys that set the base LR the trainer uses.

    ``optimizer.lr`` when the policy presets are off (``use_policy_training_preset: false``: the explicit
    optimizer); else ``policy.optimizer_lr`` (what the preset reads), plus ``optimizer.lr`` when the config holds
    the resolved optimizer (a saved config does; changing both keeps them equal).

    Args:
        config: a saved train config (JSON data).
    Returns:
        The keys, the one the trainer reads first.
    """
    if config.get(PRESET) is False:
        return [LR]
    return [POLICY_LR] + ([LR] if isinstance(config.get(OPTIMIZER), dict) else [])


def base_lr(config: dict) -> float | None:
    """The configured base LR: the value of the first of :func:`lr_keys` that holds a number, else None."""
    for key in lr_keys(config):
        v = get(config, key)
        if is_number(v):
            return float(v)
    return None


def weight_decay_keys(config: dict) -> list[str]:
    """The keys that hold the weight decay the run trains with: ``optimizer.weight_decay`` of an explicit
    optimizer, ``policy.optimizer_weight_decay`` under the policy preset (only those holding a number)."""
    keys = [POLICY_WD] if config.get(PRESET, True) else []
    if isinstance(config.get(OPTIMIZER), dict):
        keys.append(OPTIMIZER_WD)
    return [k for k in keys if is_number(get(config, k))]


def weight_decay(config: dict) -> float | None:
    """The weight decay the run trains with: the value of the first of :func:`weight_decay_keys`, else None."""
    keys = weight_decay_keys(config)
    return float(get(config, keys[0])) if keys else None


def weight_decay_changes(config: dict, new: float) -> dict:
    """``{key: new}`` for every key of :func:`weight_decay_keys` (``optimizer.weight_decay`` with the presets off,
    ``policy.optimizer_weight_decay`` under them, when none holds a number yet)."""
    keys = weight_decay_keys(config) or [POLICY_WD if config.get(PRESET, True) else OPTIMIZER_WD]
    return {key: new for key in keys}


def optimizer_type(config: dict) -> str | None:
    """The type of the optimizer the trainer builds (``adam``, ``adamw``, ...): under the policy preset the preset's
    (:attr:`dpot.policy.traits.PolicyTraits.preset_optimizer`, else the resolved table a saved config holds), else
    the explicit ``optimizer.type``; None when unknown."""
    if config.get(PRESET, True):
        traits = traits_of(policy_type(config) or "")
        if traits is not None and traits.preset_optimizer:
            return traits.preset_optimizer
    typ = get(config, OPTIMIZER_TYPE)
    return typ if isinstance(typ, str) else None


def optimizer_changes(config: dict, kind: str) -> dict:
    """``{key: new}``: the changes that make the trainer build optimizer ``kind`` (``adam`` | ``adamw``, which take
    the same fields); ``{}`` when it already does or the config's optimizer is unknown (:func:`optimizer_type`).

    With the presets off: ``optimizer.type`` (every other field kept). Under the policy preset, which fixes the
    optimizer, the preset is turned off and written out as it trains: ``optimizer`` = the resolved table a saved
    config holds (if any) with the preset's fields the policy holds (``policy.optimizer_lr`` / ``_betas`` /
    ``_eps`` / ``_weight_decay``) and the new type; ``scheduler`` = the preset's (``policy.scheduler_name`` /
    ``_warmup_steps``, else the resolved table; a constant LR when the preset has none: with the presets off the
    trainer needs one). ``config`` must be resolved (``train_config.json``,
    :func:`dpot.autopilot.spec.load_base_config`): a field it lacks takes the optimizer class's default, not the
    preset's.
    """
    old = optimizer_type(config)
    if old is None or old == kind:
        return {}
    if config.get(PRESET, True) is False:
        return {OPTIMIZER_TYPE: kind}
    table = config.get(OPTIMIZER)
    opt = copy.deepcopy(table) if isinstance(table, dict) else {}
    opt["type"] = kind
    lr = base_lr(config)
    if lr is not None:
        opt["lr"] = lr
    for name in ("betas", "eps", "weight_decay"):
        v = get(config, f"policy.optimizer_{name}")
        if v is not None:
            opt[name] = copy.deepcopy(v)
    if get(config, POLICY_SCHEDULER):
        warmup = get(config, POLICY_WARMUP)
        sched = {"type": "diffuser", "name": get(config, POLICY_SCHEDULER),
                 "num_warmup_steps": int(warmup) if is_number(warmup) else 0}
    elif isinstance(config.get(SCHEDULER), dict) and config[SCHEDULER]:
        sched = copy.deepcopy(config[SCHEDULER])
    else:
        sched = {"type": "diffuser", "name": "constant", "num_warmup_steps": 0}
    return {PRESET: False, OPTIMIZER: opt, SCHEDULER: sched}


def usual_lr_range(rules: dict, policy_type: str) -> tuple[float, float]:
    """The usual ``(low, high)`` base LR of a policy type: ``rules.toml [lr_range] <type>`` when given, else the
    type's own range (:mod:`dpot.policy.traits`), else ``[lr_range] default``."""
    ranges = rules.get("lr_range") or {}
    traits = traits_of(policy_type)
    low, high = ranges.get(policy_type) or (traits.lr_range if traits else None) or ranges.get("default", (1e-5, 1e-3))
    return float(low), float(high)


def lr_changes(config: dict, new: float) -> dict:
    """``{key: new}`` for every key of :func:`lr_keys`: the changes that set the base LR to ``new``; a backbone
    LR the config holds (:data:`BACKBONE_LR`, ACT) moves with it, keeping its ratio to the base LR."""
    changes = {key: new for key in lr_keys(config)}
    old = base_lr(config)
    for key in BACKBONE_LR:
        v = get(config, key)
        if is_number(v) and old:
            changes[key] = float(f"{new * v / old:.6g}")
    return changes


def schedule(config: dict) -> dict | None:
    """``{'type', 'name', 'warmup', 'varies'}`` of the configured LR schedule, None when there is none."""
    sch = config.get(SCHEDULER)
    if isinstance(sch, dict) and sch:
        typ = get(config, SCHEDULER_TYPE)
        name = get(config, SCHEDULER_NAME)
        warmup = get(config, SCHEDULER_WARMUP)
    elif config.get(PRESET, True) and get(config, POLICY_SCHEDULER):
        typ, name = "diffuser", get(config, POLICY_SCHEDULER)
        warmup = get(config, POLICY_WARMUP)
    else:
        return None
    varies = not (typ == "diffuser" and name == "constant") and typ not in (None, "constant")
    return {"type": typ, "name": name, "warmup": warmup, "varies": varies}


def schedule_changes(config: dict, constant: bool) -> dict:
    """``{key: new}``: the changes that make the configured LR schedule constant (``constant``: diffusers'
    ``constant``, no warmup) or, from a constant one, varying (diffusers' ``cosine``, the warmup kept); ``{}`` when
    the config has no schedule (:func:`schedule` is None) or already is what is asked. Like :func:`lr_changes`
    every key that sets it moves: the explicit ``scheduler`` table (set whole, so no field of another scheduler
    type is left behind) and, under the policy preset, ``policy.scheduler_name`` / ``policy.scheduler_warmup_steps``
    (what the preset reads).
    """
    sch = schedule(config)
    if sch is None or sch["varies"] != constant:
        return {}
    name = "constant" if constant else "cosine"
    warmup = 0 if constant else (sch["warmup"] if is_number(sch["warmup"]) else 0)
    changes: dict = {}
    if isinstance(config.get(SCHEDULER), dict) and config[SCHEDULER]:
        changes[SCHEDULER] = {"type": "diffuser", "name": name, "num_warmup_steps": int(warmup)}
    if config.get(PRESET, True) and get(config, POLICY_SCHEDULER):
        changes[POLICY_SCHEDULER] = name
        changes[POLICY_WARMUP] = int(warmup)
    return changes


def features(config: dict, kind: str) -> list[tuple[int, dict]]:
    """``(index, feature)`` for the OT cost terms of ``kind`` (``embed`` | ``label``) in ``ot.features``."""
    feats = get(config, OT_FEATURES, []) or []
    return [(i, f) for i, f in enumerate(feats) if isinstance(f, dict) and f.get(FEATURE_TYPE) == kind]


def label_features(config: dict) -> list[tuple[int, dict]]:
    """``(index, feature)`` for the OT ``label`` terms of ``ot.features``."""
    return features(config, "label")


def embed_features(config: dict) -> list[tuple[int, dict]]:
    """``(index, feature)`` for the OT ``embed`` terms of ``ot.features``."""
    return features(config, "embed")


def feature_weights(config: dict, kind: str) -> dict[str, float]:
    """``{dotted weight key: weight}`` of the ``kind`` features whose weight is a positive number
    (``ot.features.<i>.weight_label`` / ``.weight_embed``)."""
    field_name = FEATURE_WEIGHT[kind]
    out = {}
    for i, f in features(config, kind):
        w = f.get(field_name)
        if is_number(w) and w > 0:
            out[f"{OT_FEATURES}.{i}.{field_name}"] = w
    return out


@dataclass(frozen=True)
class OtSettings:
    """The OT block of a saved config; a value the config lacks is None (``method`` / ``cost_norm``: OTConfig's
    default). ``present``: the config has an OT block (a plain LeRobot run has none)."""

    present: bool
    lambda_ot: float | None
    reg: float | None
    tau_src: float | None
    tau_tgt: float | None
    heuristic: bool | None
    method: str
    cost_norm: str
    prior: str = "none"

    @property
    def diagonal(self) -> bool:
        """The plan lives on the partner pairs (``ot.prior=diagonal``): ``pi_diag == pi_sum`` by construction, so
        the diagonal share says nothing and the mass (``pi_sum``) carries the coupling's strength."""
        return self.prior == "diagonal"

    @property
    def active(self) -> bool:
        """The alignment term is on: ``lambda_ot`` a number > 0."""
        return is_number(self.lambda_ot) and self.lambda_ot > 0

    @property
    def has_plan(self) -> bool:
        """The method solves a transport plan (``reg`` and the pi metrics mean something)."""
        return self.method not in PLANLESS_METHODS


def ot_settings(config: dict) -> OtSettings:
    """The :class:`OtSettings` of a saved config."""
    return OtSettings(present=isinstance(config.get(OT), dict), lambda_ot=get(config, OT_LAMBDA),
                      reg=get(config, OT_REG), tau_src=get(config, OT_TAU_SRC), tau_tgt=get(config, OT_TAU_TGT),
                      heuristic=get(config, OT_HEURISTIC),
                      method=get(config, OT_METHOD, OT_DEFAULTS["method"]),
                      cost_norm=get(config, OT_COST_NORM, OT_DEFAULTS["cost_norm"]),
                      prior=get(config, OT_PRIOR) or ("temporal" if get(config, OT_HEURISTIC, True) else "none"))


def policy_type(config: dict) -> str | None:
    """``policy.type`` (e.g. ``diffusion``)."""
    return get(config, POLICY_TYPE)
