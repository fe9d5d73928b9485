"""The checks of a ``dpot train`` command that need no LeRobot, run before its heavy imports (LeRobot's config
classes and policies take ~5-7 s to import on a 2-core CPU): the arguments' shape, the config file (exists, is a
JSON object; a LeRobot OT fork file is translated), the learning rates, the output location and the dataset roots
given as paths, dpot's own ``ot`` section (:mod:`dpot.config.ot`). Each problem is the same one ``error:`` line the
full load gives (:mod:`dpot.config` and
:mod:`dpot.train.inputs` call the same functions), only seconds earlier; everything else is checked after the
imports as before. This module imports nothing heavier than the standard library and dpot's light modules.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from dpot.atomic import check_output_location
from dpot.errors import UserError
from dpot.fork_config import translate_fork_config, translate_override

__all__ = ["split_train_args", "read_config_file", "check_learning_rate", "check_dataset_root", "precheck"]

LR_KEYS = ("policy.optimizer_lr", "policy.optimizer_lr_backbone", "optimizer.lr")


def split_train_args(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """``(config path or None, overrides)`` of ``dpot train`` arguments (``--config_path=PATH`` + ``--a.b=c``)."""
    config_path = None
    overrides: list[str] = []
    for arg in argv:
        if arg.startswith("--config_path="):
            config_path = arg.split("=", 1)[1]
        elif arg == "--config_path":
            raise UserError("--config_path: write it as --config_path=PATH")
        else:
            overrides.append(arg)
    return config_path, overrides


def read_config_file(config_path: str | Path) -> dict:
    """The JSON object of a config file (UserError when missing, not JSON or not an object)."""
    path = Path(config_path)
    if not path.is_file():
        raise UserError(f"--config_path: {path} does not exist; give the path of a JSON config file")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"--config_path: {path} is not valid JSON ({err.msg} at line {err.lineno}, "
                        f"column {err.colno})") from None
    if not isinstance(raw, dict):
        raise UserError(f"--config_path: {path} must hold a JSON object")
    return raw


def check_learning_rate(name: str, lr) -> None:
    """A learning rate must be > 0 (a negative one is torch's traceback at the first step, 0 trains nothing)."""
    if isinstance(lr, (int, float)) and not isinstance(lr, bool) and not lr > 0:
        raise UserError(f"{name}: must be > 0, got {float(lr)}; a diffusion policy trains at 1e-4 to 3e-4, ACT at "
                        "1e-5 (0 would train nothing)")


def check_dataset_root(root: str | Path, field: str) -> Path:
    """A dataset root must exist and hold a LeRobot dataset (``meta/info.json``)."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"{field}.root: {root} does not exist; generate the dataset first or fix the path")
    if not (root / "meta" / "info.json").is_file():
        raise UserError(f"{field}.root: {root} is not a LeRobot dataset (no meta/info.json)")
    return root


def override_value(text: str):
    """An override's value as the config reads it: JSON when it parses (``0.1``, ``true``, ``[0,4]``, ``null``),
    else the text itself (``cosine``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def precheck(argv: Sequence[str]) -> None:
    """Raise the first UserError among the light checks of a ``dpot train`` command (module docstring); silent
    when they pass (the full load checks the rest)."""
    config_path, overrides = split_train_args(argv)
    raw: dict = {}
    if config_path is not None:
        raw, _ = translate_fork_config(read_config_file(config_path))
    values: dict[str, object] = {}
    for arg in (b for a in overrides for b in translate_override(a)):
        if not arg.startswith("--") or "=" not in arg:
            raise UserError(f"{arg}: overrides look like --a.b=value")
        key, text = arg[2:].split("=", 1)
        values[key] = override_value(text)

    def get(dotted: str):
        if dotted in values:
            return values[dotted]
        node = raw
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    # the full load's order: the config's own values first, then the output location, then the datasets
    for key in LR_KEYS:
        check_learning_rate(key, get(key))
    check_ot_section(raw.get("ot"), {k[3:]: v for k, v in values.items() if k.startswith("ot.")})
    if get("output_dir") and get("resume") not in (True, "true"):
        check_output_location(str(get("output_dir")), "output_dir", directory=True)
    for field in ("dataset", "source_dataset"):
        root = get(f"{field}.root")
        if isinstance(root, str) and root:
            check_dataset_root(root, field)


def check_ot_section(ot_raw, overrides: dict) -> None:
    """dpot's ``ot`` section without LeRobot (:mod:`dpot.config.ot`): unknown keys (a file's or an override's, the
    same messages as the full load) and the values ``OTConfig.validate`` judges (not ``ot.method``: its registry
    imports torch). A section draccus cannot decode here (types, legacy keys) is left to the full load."""
    import dataclasses

    import draccus

    from dpot.config.ot import OTConfig
    from dpot.errors import did_you_mean
    from dpot.rundir import CONFIG_FILE

    names = {f.name for f in dataclasses.fields(OTConfig)}
    section = dict(ot_raw) if isinstance(ot_raw, dict) else {}
    for key in section:
        if key not in names:
            raise UserError(f"ot.{key}: unknown key{did_you_mean(key, names)}; remove it or fix its name")
    for key, value in overrides.items():
        top = key.split(".", 1)[0].split("[", 1)[0]
        if top not in names:
            raise UserError(f"--ot.{top}: unknown key{did_you_mean(top, names)}; see the config reference in "
                            f"docs/architecture.md or a saved {CONFIG_FILE}")
        if "." not in key and "[" not in key:
            section[key] = value
    try:
        cfg = draccus.decode(OTConfig, section)
    except Exception:  # noqa: BLE001 - types and legacy keys: the full load gives their one-line errors
        return
    cfg.validate("ot", check_method=False)
