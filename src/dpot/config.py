"""Typed configuration of a DP+OT co-training run (draccus dataclasses extending LeRobot's train config).

``DpotTrainConfig`` is LeRobot's ``TrainPipelineConfig`` (``dataset`` is the *target* / real dataset, and all
optimizer, scheduler, policy, logging and checkpoint keys keep LeRobot's names) plus:

- ``source_dataset``: the *source* (simulation) dataset,
- ``camera_map``: source camera key -> target camera key, when the two datasets name cameras differently,
- ``ot``: the OT alignment (the seed's keys: ``lambda_ot``, ``reg``, ``tau_src``, ``tau_tgt``, ``heuristic``,
  ``batch_ratio``, ``window_size``, ``features``),
- ``eval``: offline evaluation on held-out target episodes (``n_batches``, ``val_episodes``), ``eval_freq``.

Configs load from a JSON file plus LeRobot-style ``--a.b=c`` overrides (:func:`load_train_config`). Every
error is a :class:`~dpot.errors.UserError` whose message is ``<field>: <what is wrong and how to fix it>``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import tempfile
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import draccus
from lerobot.configs.default import DatasetConfig, EvalConfig
from lerobot.configs.train import TrainPipelineConfig

from dpot.atomic import write_text
from dpot.config_ot import (  # noqa: F401  (re-exported: dpot's OT section lives in dpot.config_ot)
    ALIGNMENTS,
    CONCAT_TERM,
    COST_NORMS,
    IMG_PREFIX,
    LABEL_KEYS,
    PRIORS,
    STATE_KEY,
    EmbedFeatureConfig,
    LabelFeatureConfig,
    OTConfig,
    OTFeatureConfig,
    _err,
    _one_of,
)
from dpot.errors import UserError, did_you_mean
from dpot.fork_config import lerobot_key_notes, translate_fork_config, translate_override
from dpot.policy.traits import traits_of
from dpot.rundir import CONFIG_FILE
from dpot.train.precheck import check_learning_rate, override_value, read_config_file, split_train_args

log = logging.getLogger(__name__)

__all__ = [
    "OTFeatureConfig",
    "EmbedFeatureConfig",
    "LabelFeatureConfig",
    "OTConfig",
    "DpotEvalConfig",
    "DpotTrainConfig",
    "load_train_config",
    "parse_train_args",
    "save_train_config",
    "validate_config",
]


@dataclass
class DpotEvalConfig(EvalConfig):
    """LeRobot's EvalConfig plus offline evaluation on held-out target episodes.

    ``val_episodes``: target episodes held out of training (resolved from ``val_fraction`` at the first run and
    recorded in the saved config, so a resumed or repeated run holds out the same ones). ``n_batches``: batches
    of full diffusion sampling per offline eval (``eval/offline_eval/avg_loss`` = mean L1 over them).
    """

    n_batches: int = 20
    val_episodes: list[int] | None = None
    val_fraction: float = 0.1
    # the domain probe (dpot.train.domain_probe): held-out accuracy of a linear sim-vs-real classifier on the
    # policy's per-camera image features, logged as eval/domain_probe/<camera> at step 0 and every
    # domain_probe_freq steps (0 = never); domain_probe_frames fit and as many held-out frames
    domain_probe_freq: int = 0
    domain_probe_frames: int = 256

    def validate(self, where: str = "eval") -> None:
        """Raise UserError naming ``<where>.<field>`` for a value out of range."""
        if self.n_batches < 1:
            raise _err(f"{where}.n_batches", f"must be >= 1, got {self.n_batches}")
        if self.domain_probe_freq < 0:
            raise _err(f"{where}.domain_probe_freq", f"must be >= 0 (0 = no domain probe), got "
                                                     f"{self.domain_probe_freq}")
        if self.domain_probe_frames < 4:
            raise _err(f"{where}.domain_probe_frames", f"must be >= 4 (frames of each side, half per domain), got "
                                                       f"{self.domain_probe_frames}")
        if not 0 <= self.val_fraction < 1:
            raise _err(f"{where}.val_fraction", f"must be in [0, 1), got {self.val_fraction}")


@dataclass
class DpotTrainConfig(TrainPipelineConfig):
    """A DP+OT co-training run. ``dataset`` = target (real), ``source_dataset`` = source (sim)."""

    source_dataset: DatasetConfig | None = None
    camera_map: dict[str, str] = field(default_factory=dict)
    ot: OTConfig = field(default_factory=OTConfig)
    eval: DpotEvalConfig = field(default_factory=DpotEvalConfig)
    eval_freq: int = 1000
    tensorboard: bool = False
    num_workers: int = 2


def dpot_keys_help() -> str:
    """The keys dpot adds to LeRobot's ``TrainPipelineConfig``, one line each with its default (for ``--help``),
    read from the dataclasses themselves so the text cannot drift from the code."""

    def default(f: dataclasses.Field) -> Any:
        if f.default is not dataclasses.MISSING:
            return f.default
        if f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            if isinstance(value, list):  # the feature list: each item with its registered type
                return [draccus.encode(v) | {"type": v.type} for v in value]
            return draccus.encode(value)
        return "required"

    lines = []
    own = {f.name for f in dataclasses.fields(TrainPipelineConfig)}
    for f in dataclasses.fields(DpotTrainConfig):
        if f.name in ("ot", "eval") or (f.name in own and f.name != "num_workers"):
            continue
        lines.append(f"  --{f.name}={json.dumps(default(f), default=str)}")
    for prefix, cls in (("ot", OTConfig), ("eval", DpotEvalConfig)):
        base = {g.name for g in dataclasses.fields(EvalConfig)} if cls is DpotEvalConfig else set()
        for f in dataclasses.fields(cls):
            if f.name not in base:
                lines.append(f"  --{prefix}.{f.name}={json.dumps(default(f), default=str)}")
    for name, cls in OTFeatureConfig.get_known_choices().items():
        fields_ = ", ".join(f"{f.name}={json.dumps(default(f))}" for f in dataclasses.fields(cls))
        lines.append(f'  ot.features[] {{"type": "{name}"}}: {fields_}')
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- validation


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


def _check_tree(path: str, value: Any, tp: Any) -> None:
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
            _check_tree(sub_path, sub, hints[key])
        return
    origin = typing.get_origin(tp)
    if origin is list and isinstance(value, list):
        (item_tp,) = typing.get_args(tp) or (Any,)
        for i, item in enumerate(value):
            _check_tree(f"{path}[{i}]", item, item_tp)
        return
    _check_leaf(path, value, declared)


def validate_config(cfg: DpotTrainConfig) -> None:
    """Check value ranges and cross-field rules that need no dataset (raises UserError).

    The one value check of a loaded config: each dpot config dataclass checks its own fields in ``validate()``
    (``ot``, its ``features``, ``eval``); the rules across sections live here. Keys and JSON types were checked
    before decoding (:func:`_check_tree`). Dataset-dependent checks (action dims, camera keys, ``dim_slice``
    beyond the action dim) are done by the trainer once the datasets are open.
    """
    cfg.ot.validate("ot")
    if cfg.source_dataset is None:
        raise _err("source_dataset", "missing; give the sim dataset, e.g. "
                                     '"source_dataset": {"repo_id": "local/sim", "root": "data/sim"}')
    for name in ("steps", "batch_size", "log_freq"):
        if getattr(cfg, name) < 1:
            raise _err(name, f"must be >= 1, got {getattr(cfg, name)}")
    if cfg.batch_size < 2:
        raise _err("batch_size", f"must be >= 2 to hold one source and one target item, got {cfg.batch_size}")
    ot = cfg.ot
    n_src = round(ot.batch_ratio * cfg.batch_size)
    if n_src < 1 or n_src > cfg.batch_size - 1:
        raise _err("batch_size", f"{cfg.batch_size} with ot.batch_ratio={ot.batch_ratio} gives {n_src} source and "
                                 f"{cfg.batch_size - n_src} target items; each domain needs at least one: "
                                 "raise batch_size or move batch_ratio toward 0.5")
    if cfg.eval_freq < 0 or cfg.save_freq < 1:
        raise _err("eval_freq" if cfg.eval_freq < 0 else "save_freq", "must be >= 0 (eval) / >= 1 (save)")
    cfg.eval.validate("eval")
    if cfg.policy is None:
        raise _err("policy", 'missing; e.g. "policy": {"type": "diffusion", "pretrained_backbone_weights": null}')
    check_policy_type(cfg.policy.type)
    if not cfg.use_policy_training_preset and (cfg.optimizer is None or cfg.scheduler is None):
        missing = "optimizer" if cfg.optimizer is None else "scheduler"
        raise _err(missing, "missing while use_policy_training_preset=false; give both optimizer and scheduler "
                            '(e.g. "optimizer": {"type": "adamw", "lr": 3e-4}) or set use_policy_training_preset=true')
    _check_learning_rates(cfg)


def _check_learning_rates(cfg: DpotTrainConfig) -> None:
    """Every learning rate set anywhere (the policy preset's ``optimizer_lr*``, the explicit ``optimizer.lr``) must
    be > 0: a negative one is torch's traceback at the first step, a zero one trains nothing without a word."""
    where = [(f"policy.{f.name}", getattr(cfg.policy, f.name)) for f in dataclasses.fields(cfg.policy)
             if f.name.startswith("optimizer_lr")]
    if cfg.optimizer is not None and hasattr(cfg.optimizer, "lr"):
        where.append(("optimizer.lr", cfg.optimizer.lr))
    for name, lr in where:
        check_learning_rate(name, lr)


# the policy types the trainer supports (dpot.policy.features re-expresses the diffusion loss); the one place to
# extend when another policy lands


def check_policy_type(policy_type: str) -> None:
    """Raise UserError (``policy.type: '<type>' is not supported by dpot train; supported types: act,
    diffusion``) for a LeRobot policy type without a dpot policy hook (:func:`dpot.policy.supported_policy_types`),
    and ``policy.type: unknown '<type>' (did you mean ...)`` for a name LeRobot does not know."""
    from lerobot.configs.policies import PreTrainedConfig

    from dpot.policy import get_hook, supported_policy_types

    known = PreTrainedConfig.get_known_choices()
    if policy_type not in known:
        raise _err("policy.type", f"unknown '{policy_type}'{did_you_mean(policy_type, known)}; dpot train supports "
                                  f"{', '.join(supported_policy_types())}")
    get_hook(policy_type)


# ------------------------------------------------------------------------------------------ load / save


def _split_override(arg: str) -> tuple[str, str]:
    if not arg.startswith("--") or "=" not in arg:
        raise UserError(f"{arg}: overrides look like --a.b=value")
    key, value = arg[2:].split("=", 1)
    return key, value


def _check_override_key(key: str, raw: dict, types: dict[str, str] | None = None) -> None:
    """Check that a dotted override key names an existing field (with a suggestion when it does not); ``types``:
    the choice types other overrides of the same command set (``{"scheduler": "diffuser"}`` from
    ``--scheduler.type=diffuser``), so a choice type and its fields compose in one command."""
    tp: Any = DpotTrainConfig
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
        _check_tree("", raw, DpotTrainConfig)   # the edited elements' keys and types, as a file's
    return rest


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

    raw: dict = {}  # edited in place by _check_tree (derived keys dropped), then handed to draccus
    if config_path is not None:
        raw = read_raw_config(read_config_file(config_path))
        if isinstance(raw.get("policy"), dict) and isinstance(raw["policy"].get("type"), str):
            check_policy_type(raw["policy"]["type"])  # before its keys are checked against another policy's
        _check_tree("", raw, DpotTrainConfig)
    overrides = [b for a in overrides for b in translate_override(a)]  # the fork's names (--ot.src_root=)
    _check_policy_override(overrides)
    overrides = _apply_element_overrides(raw, overrides)
    types = {k.removesuffix(".type"): v for k, v in map(_split_override, overrides) if k.endswith(".type")}
    for arg in overrides:
        key, _ = _split_override(arg)
        _check_override_key(key, raw, types)
    _apply_policy_defaults(raw, overrides)
    if "dataset" not in raw and not any(a.startswith("--dataset.") for a in overrides):
        raise UserError('dataset: missing; give the target dataset, e.g. "dataset": {"repo_id": "local/real", '
                        '"root": "data/real"} or --dataset.repo_id=... --dataset.root=...')
    try:
        if overrides:  # draccus' argparse merges the --a.b=c values into the file's (it builds the --help text too)
            with tempfile.TemporaryDirectory(prefix="dpot-config-") as tmp:
                cleaned = Path(tmp) / "config.json"
                cleaned.write_text(json.dumps(raw))
                cfg = draccus.parse(DpotTrainConfig, config_path=str(cleaned), args=list(overrides))
        else:  # what draccus.parse decodes when there are no arguments, without building a parser (~100x faster)
            cfg = draccus.decode(DpotTrainConfig, raw)
    except SystemExit as err:  # draccus/argparse report and exit on bad CLI values
        raise UserError(f"invalid arguments {list(overrides)}: check the values' types (exit {err.code})") from None
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
