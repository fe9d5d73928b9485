"""Loading and saving a run config: a JSON file (dpot's or a LeRobot OT fork's keys) plus LeRobot-style ``--a.b=c``
overrides -> a validated :class:`~dpot.config.schema.DpotTrainConfig`, and back to JSON.

The order of :func:`load_train_config`: the fork's keys translated (:mod:`dpot.fork_config`); the raw JSON's keys and
types checked (:mod:`dpot.config.check`); list-element overrides (``--ot.features[1].dim_slice=[0,4]``) applied; the
policy type's defaults filled (:mod:`dpot.policy.traits`); the overrides merged into the JSON exactly as
``draccus.parse`` merges them (:func:`merge_overrides`); ``draccus.decode``;
:func:`~dpot.config.validate.validate_config`.
Every error is a :class:`~dpot.errors.UserError` whose message is ``<field>: <what is wrong and how to fix it>``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import draccus
import mergedeep
from draccus import cfgparsing, utils

from dpot.atomic import write_text
from dpot.config.check import check_override_key, check_tree
from dpot.config.schema import DpotTrainConfig
from dpot.config.validate import check_policy_type, validate_config
from dpot.errors import UserError
from dpot.fork_config import lerobot_key_notes, translate_fork_config, translate_override
from dpot.policy.traits import traits_of
from dpot.train.precheck import override_value, read_config_file, split_train_args

__all__ = ["load_train_config", "parse_train_args", "read_raw_config", "merge_overrides", "config_to_dict",
           "save_train_config"]


def _split_override(arg: str) -> tuple[str, str]:
    if not arg.startswith("--") or "=" not in arg:
        raise UserError(f"{arg}: overrides look like --a.b=value")
    key, value = arg[2:].split("=", 1)
    return key, value


_ELEMENT = re.compile(r"^--([\w.]+)\[(\d+)\](?:\.([\w.]+))?=(.*)$", re.S)


def _apply_element_overrides(raw: dict, overrides: Sequence[str]) -> list[str]:
    """Apply ``--a.b[i].c=value`` / ``--a.b[i]=value`` (one element of a list, e.g.
    ``--ot.features[1].dim_slice=[0,4]``) to ``raw`` in place, the value read as JSON (else as a string); the other
    overrides come back unchanged.
    Raises UserError when the list is not in the config or has no element ``i`` (saying how to give it whole)."""
    rest = []
    for arg in overrides:
        m = _ELEMENT.match(arg)
        if m is None:
            rest.append(arg)
            continue
        dotted, index, field_, text = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        where = f"--{dotted}[{index}]"
        node: Any = raw
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, list):
            raise UserError(f"{where}: {dotted} is not a list in the config file; give the whole list, e.g. "
                            f"--{dotted}='[...]' (JSON)")
        if not 0 <= index < len(node):
            raise UserError(f"{where}: {dotted} has {len(node)} element(s) (0..{len(node) - 1}); give the whole list "
                            f"with --{dotted}='[...]' to add one")
        value = override_value(text)
        if field_ is None:
            node[index] = value
        else:
            target = node[index]
            *head, last = field_.split(".")
            for part in head:
                target = target.setdefault(part, {}) if isinstance(target, dict) else None
            if not isinstance(target, dict):
                raise UserError(f"{where}.{field_}: element {index} of {dotted} is not an object")
            target[last] = value
    if len(rest) != len(overrides):
        check_tree("", raw, DpotTrainConfig)   # the edited elements' keys and types, as a file's
    return rest


def merge_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    """``raw`` with the ``--a.b=c`` overrides merged in, as ``draccus.parse(cls, config_path, args)`` merges them
    before it decodes: each value read as YAML (``cfgparsing.parse_string``: ``0.1`` a float, ``[0,4]`` a list,
    ``local/real`` a string), the dotted keys nested (``utils.deflatten``), then ``mergedeep.merge`` into the file's
    dict (objects merged key by key, lists and scalars replaced; the last of repeated keys wins). ``raw`` is not
    changed. Without draccus' argparse parser (built for every field, help text included: ~0.5 s a load) and the
    temporary file ``draccus.parse`` reads the config from; the keys were checked before
    (:func:`dpot.config.check.check_override_key`)."""
    values = {}
    for arg in overrides:
        key, text = _split_override(arg)
        values[key] = cfgparsing.parse_string(text)
    return mergedeep.merge(copy.deepcopy(raw), utils.deflatten(values, sep="."))


def read_raw_config(raw: dict) -> dict:
    """A config's raw JSON in dpot's keys: a LeRobot OT fork config (``ot.enable``, ``ot.loss_config``, ...)
    translated by :func:`dpot.fork_config.translate_fork_config` (one warning line per key dpot does not act on),
    plus the notes on LeRobot keys dpot does not act on (:func:`dpot.fork_config.lerobot_key_notes`)."""
    raw, _ = translate_fork_config(raw)
    lerobot_key_notes(raw)
    return raw


def load_train_config(config_path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> DpotTrainConfig:
    """Load a run config: JSON file (may be None) + ``--a.b=c`` overrides, then :func:`validate_config`.

    Raises UserError (one line naming the field) for a missing/unreadable file, invalid JSON, unknown keys,
    wrong types and invalid values.
    """
    import lerobot.policies  # noqa: F401  (registers policy config choices such as "diffusion")

    raw: dict = {}  # edited in place by check_tree (derived keys dropped), then handed to draccus
    if config_path is not None:
        raw = read_raw_config(read_config_file(config_path))
        if isinstance(raw.get("policy"), dict) and isinstance(raw["policy"].get("type"), str):
            check_policy_type(raw["policy"]["type"])  # before its keys are checked against another policy's
        check_tree("", raw, DpotTrainConfig)
    overrides = [b for a in overrides for b in translate_override(a)]  # the fork's names (--ot.src_root=)
    _check_policy_override(overrides)
    overrides = _apply_element_overrides(raw, overrides)
    types = {k.removesuffix(".type"): v for k, v in map(_split_override, overrides) if k.endswith(".type")}
    for arg in overrides:
        key, _ = _split_override(arg)
        check_override_key(key, raw, DpotTrainConfig, types)
    _apply_policy_defaults(raw, overrides)
    if "dataset" not in raw and not any(a.startswith("--dataset.") for a in overrides):
        raise UserError('dataset: missing; give the target dataset, e.g. "dataset": {"repo_id": "local/real", '
                        '"root": "data/real"} or --dataset.repo_id=... --dataset.root=...')
    try:
        cfg = draccus.decode(DpotTrainConfig, merge_overrides(raw, overrides))
    except Exception as err:  # draccus DecodingError and friends: keep their message, on one line
        raise UserError(_one_line_draccus_error(err)) from None
    validate_config(cfg)
    return cfg


def _check_policy_override(overrides: Sequence[str]) -> None:
    """A ``--policy.type=`` override gets :func:`check_policy_type` before draccus decodes the policy's fields
    (the JSON's type is checked when the file is read)."""
    for arg in overrides:
        if arg.startswith("--policy.type="):
            check_policy_type(arg.split("=", 1)[1])


def _apply_policy_defaults(raw: dict, overrides: Sequence[str]) -> None:
    """Fill the policy type's ``config_defaults`` (:mod:`dpot.policy.traits`) into ``raw["policy"]`` for keys set
    neither there nor by an override; ``use_group_norm`` only when no pretrained weights are asked for (LeRobot
    refuses GroupNorm with them)."""
    policy = raw.get("policy")
    if not isinstance(policy, dict):
        return
    given = {a[2:].split("=", 1)[0].removeprefix("policy.") for a in overrides if a.startswith("--policy.")}
    traits = traits_of(policy.get("type", ""))
    for key, value in (traits.config_defaults if traits else {}).items():
        if key in policy or key in given:
            continue
        asks_weights = policy.get("pretrained_backbone_weights") or "pretrained_backbone_weights" in given
        if key == "use_group_norm" and asks_weights:
            continue
        policy[key] = value


def _one_line_draccus_error(err: Exception) -> str:
    msg = " ".join(str(err).split())
    # draccus: "`ot`: The fields `x` are not valid for OTConfig" / "`ot.reg`: Couldn't parse 'abc' ..."
    if msg.startswith("`") and "`:" in msg:
        field_, rest = msg[1:].split("`:", 1)
        return f"{field_}: {rest.strip()}"
    return f"config: {msg}"


def parse_train_args(argv: Sequence[str]) -> DpotTrainConfig:
    """Parse ``dpot train`` arguments: ``--config_path=PATH`` (optional) plus ``--a.b=c`` overrides."""
    config_path, overrides = split_train_args(argv)
    return load_train_config(config_path, overrides)


def config_to_dict(cfg: DpotTrainConfig) -> dict:
    """The resolved config as plain JSON data (draccus encoding, the format :func:`load_train_config` reads)."""
    data = json.loads(json.dumps(draccus.encode(cfg), default=str))
    for f in dataclasses.fields(cfg):
        if not f.init:
            data.pop(f.name, None)
    return data


def save_train_config(cfg: DpotTrainConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config as JSON atomically (temp file + rename). Secrets never enter the config."""
    return write_text(path, json.dumps(config_to_dict(cfg), indent=2) + "\n")
