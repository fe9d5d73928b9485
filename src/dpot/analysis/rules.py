"""Rule thresholds: the packaged ``rules.toml`` (defaults = the seed's numbers), overridable by a user file."""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path

from dpot.errors import UserError, did_you_mean
from dpot.policy.traits import TRAITS


def default_rules() -> dict:
    """The packaged thresholds (``dpot/analysis/rules.toml``)."""
    text = resources.files("dpot.analysis").joinpath("rules.toml").read_text()
    return tomllib.loads(text)


def load_rules(path: str | Path | None = None) -> dict:
    """Defaults merged with the tables of ``path`` (a TOML file, sub-tables such as ``[ot_weak.propose]`` key by
    key); unknown rules or keys and wrong types raise UserError."""
    rules = default_rules()
    if path is None:
        return rules
    p = Path(path)
    try:
        user = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise UserError(f"--rules {p}: no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"--rules {p}: not valid TOML ({err})") from None
    merged = copy.deepcopy(rules)
    for table, values in user.items():
        if table not in rules:
            raise UserError(f"--rules {p}: unknown rule [{table}]{did_you_mean(table, rules)}")
        _merge_table(merged[table], values, table, p)
    return merged


def _merge_table(into: dict, values, name: str, p: Path) -> None:
    """Set the keys of the user table ``values`` in ``into`` (a defaults table); sub-tables merge key by key."""
    if not isinstance(values, dict):
        raise UserError(f"--rules {p}: [{name}] must be a table")
    for key, value in values.items():
        if name == "lr_range" and key not in into and key in TRAITS:   # a policy type's own range, overridden
            if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)):
                raise UserError(f"--rules {p}: lr_range.{key} must be [low, high]")
            into[key] = value
            continue
        if key not in into:
            raise UserError(f"--rules {p}: unknown key {name}.{key}{did_you_mean(key, [*into, *TRAITS])}")
        default = into[key]
        if isinstance(default, dict):
            _merge_table(default, value, f"{name}.{key}", p)
            continue
        if type(value) is not type(default) and not (
                isinstance(value, (int, float)) and isinstance(default, (int, float))):
            raise UserError(f"--rules {p}: {name}.{key} must be {type(default).__name__}")
        into[key] = value
