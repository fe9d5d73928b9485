"""A config's raw JSON checked against the schema before draccus decodes it: unknown keys (with a suggestion), JSON
types that cannot be the annotated type, choice types (``policy.type``, ``ot.features[i].type``) that do not exist,
and override keys (``--a.b=c``) that name no field.

Why not draccus alone: its decode errors name a dataclass, not the field's path, and suggest nothing for a
misspelt key (in a file or an override); each check here answers with dpot's one line
``<field path>: <what is wrong and how to fix it>`` and leaves the decoding itself to draccus. It also drops keys
that older saved configs carry and this version derives or no longer reads (derived fields, another feature kind's
keys), so every saved ``train_config.json`` loads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dpot.config.ot import OTFeatureConfig
from dpot.errors import UserError, did_you_mean
from dpot.rundir import CONFIG_FILE

log = logging.getLogger(__name__)

__all__ = ["check_tree", "check_override_key"]


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _check_leaf(path: str, value: Any, tp: Any) -> None:
    """Raise UserError when a JSON value cannot be the annotated type (only for simple, decidable types)."""
    tp, optional = _strip_optional(tp)
    if value is None:
        if not optional and tp in (int, float, bool, str):
            raise UserError(f"{path}: null is not allowed; give a {_type_name(tp)}")
        return
    ok = True
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is str or tp is Path:
        ok = isinstance(value, str)
    elif typing.get_origin(tp) in (list, tuple, Sequence):
        ok = isinstance(value, list)
    elif typing.get_origin(tp) is dict:
        ok = isinstance(value, dict)
    if not ok:
        raise UserError(f"{path}: expected {_type_name(tp)}, got {json.dumps(value)} ({type(value).__name__})")


def _choice_class(base: Any, value: dict, path: str) -> Any:
    """Resolve a draccus ChoiceRegistry subclass (e.g. ``policy``, ``optimizer``) from its ``type`` key."""
    if not hasattr(base, "get_known_choices"):
        return base
    choices = base.get_known_choices()
    name = value.get("type")
    if name is None:
        default = getattr(base, "default_choice_name", lambda: None)()
        if default is None:
            raise UserError(f"{path}.type: missing; one of {sorted(choices)}")
        name = default
    if name not in choices:
        raise UserError(f"{path}.type: unknown '{name}'{did_you_mean(name, choices)}; one of {sorted(choices)}")
    return choices[name]


def _drop_other_kind_keys(path: str, value: dict, kind: type) -> None:
    """Drop the keys of the other feature kinds from a feature's raw JSON.

    Configs saved before the kinds were split hold every key on every feature (``{"type": "embed", ...,
    "dim_slice": null, "weight_label": 0.05}``); those keys were never read for that kind, so they load and are
    dropped (with a warning when the value is not the default, i.e. someone set it expecting an effect).
    """
    own = {f.name for f in dataclasses.fields(kind)}
    for other in OTFeatureConfig.get_known_choices().values():
        for f in dataclasses.fields(other):
            if f.name in value and f.name not in own:
                dropped = value.pop(f.name)
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                if dropped != default:
                    log.warning("%s.%s=%s ignored: it belongs to a '%s' feature, not '%s'", path, f.name,
                                json.dumps(dropped), OTFeatureConfig.get_choice_name(other),
                                OTFeatureConfig.get_choice_name(kind))


def _field_default(tp: Any, name: str) -> Any:
    """The declared default of dataclass ``tp``'s field ``name`` (None when it has none)."""
    f = next(f for f in dataclasses.fields(tp) if f.name == name)
    return None if f.default is dataclasses.MISSING else f.default


def check_tree(path: str, value: Any, tp: Any) -> None:
    """Walk raw JSON against the dataclass tree: unknown keys (with a suggestion) and wrong leaf types."""
    declared = tp
    tp, _ = _strip_optional(tp)
    if _is_dataclass_type(tp):
        if value is None:
            return
        if not isinstance(value, dict):
            raise UserError(f"{path}: expected an object with fields of {tp.__name__}, got {json.dumps(value)}")
        tp = _choice_class(tp, value, path)
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        derived = {f.name for f in dataclasses.fields(tp) if not f.init}
        for key in [k for k in value if k in derived]:
            del value[key]  # derived fields (e.g. checkpoint_path) are recomputed, never read back
        if issubclass(tp, OTFeatureConfig):
            _drop_other_kind_keys(path, value, tp)
        for key, sub in value.items():
            if key == "type" and hasattr(tp, "get_known_choices"):
                continue
            sub_path = f"{path}.{key}" if path else key
            if key not in names:
                raise UserError(f"{sub_path}: unknown key{did_you_mean(key, names)}; remove it or fix its name")
            if isinstance(sub, bool) and isinstance(_field_default(tp, key), bool):
                continue  # LeRobot's own `int = False` fields (ACT's replace_final_stride_with_dilation) save a bool
            check_tree(sub_path, sub, hints[key])
        return
    origin = typing.get_origin(tp)
    if origin is list and isinstance(value, list):
        (item_tp,) = typing.get_args(tp) or (Any,)
        for i, item in enumerate(value):
            check_tree(f"{path}[{i}]", item, item_tp)
        return
    _check_leaf(path, value, declared)


def check_override_key(key: str, raw: dict, root: type, types: dict[str, str] | None = None) -> None:
    """Check that a dotted override key names an existing field of dataclass ``root`` (with a suggestion when it
    does not); ``raw``: the config file's JSON (it tells a choice field's type); ``types``: the choice types other
    overrides of the same command set (``{"scheduler": "diffuser"}`` from ``--scheduler.type=diffuser``), so a
    choice type and its fields compose in one command."""
    tp: Any = root
    node: Any = raw
    parts = key.split(".")
    for depth, part in enumerate(parts):
        tp, _ = _strip_optional(tp)
        if not _is_dataclass_type(tp):
            return  # inside a dict/list-valued field: draccus decides
        if hasattr(tp, "get_known_choices") and isinstance(node, dict):
            if part == "type":
                return
            prefix = ".".join(parts[:depth])
            if (types or {}).get(prefix) is not None:
                node = {**node, "type": types[prefix]}
            tp = _choice_class(tp, node, prefix)
        names = {f.name for f in dataclasses.fields(tp) if f.init} | {"path"}
        if part not in names:
            prefix = ".".join(parts[:depth])
            where = f"{prefix}.{part}" if prefix else part
            raise UserError(f"--{where}: unknown key{did_you_mean(part, names)}; see the config reference in "
                            f"docs/architecture.md or a saved {CONFIG_FILE}")
        if part == "path":
            return
        tp = typing.get_type_hints(tp)[part]
        node = node.get(part, {}) if isinstance(node, dict) else {}
