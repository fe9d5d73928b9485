"""Dotted-key access to resolved train configs, and the key settings a report shows (LR, schedule, OT)."""

from __future__ import annotations

import copy

_MISSING = object()


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


def base_lr(config: dict) -> float | None:
    """The configured base LR: ``optimizer.lr`` (resolved) else ``policy.optimizer_lr``."""
    for key in ("optimizer.lr", "policy.optimizer_lr"):
        v = get(config, key)
        if isinstance(v, (int, float)):
            return float(v)
    return None


def schedule(config: dict) -> dict | None:
    """``{'type', 'name', 'warmup', 'varies'}`` of the configured LR schedule, None when there is none."""
    sch = config.get("scheduler")
    if isinstance(sch, dict) and sch:
        typ = sch.get("type")
        name = sch.get("name")
        warmup = sch.get("num_warmup_steps")
    elif config.get("use_policy_training_preset", True) and get(config, "policy.scheduler_name"):
        typ, name = "diffuser", get(config, "policy.scheduler_name")
        warmup = get(config, "policy.scheduler_warmup_steps")
    else:
        return None
    varies = not (typ == "diffuser" and name == "constant") and typ not in (None, "constant")
    return {"type": typ, "name": name, "warmup": warmup, "varies": varies}


def label_features(config: dict) -> list[tuple[int, dict]]:
    """``(index, feature)`` for the OT ``label`` terms of ``ot.features``."""
    feats = get(config, "ot.features", []) or []
    return [(i, f) for i, f in enumerate(feats) if isinstance(f, dict) and f.get("type") == "label"]


def embed_features(config: dict) -> list[tuple[int, dict]]:
    """``(index, feature)`` for the OT ``embed`` terms of ``ot.features``."""
    feats = get(config, "ot.features", []) or []
    return [(i, f) for i, f in enumerate(feats) if isinstance(f, dict) and f.get("type") == "embed"]


def policy_type(config: dict) -> str | None:
    """``policy.type`` (e.g. ``diffusion``)."""
    return get(config, "policy.type")
