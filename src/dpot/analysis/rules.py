"""Rule thresholds: the packaged ``rules.toml`` (defaults = the seed's numbers), overridable by a user file."""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path

from dpot.errors import UserError, did_you_mean


def default_rules() -> dict:
    """The packaged thresholds (``dpot/analysis/rules.toml``)."""
    text = resources.files("dpot.analysis").joinpath("rules.toml").read_text()
    return tomllib.loads(text)


def load_rules(path: str | Path | None = None) -> dict:
    """Defaults merged with the tables of ``path`` (a TOML file); unknown rules or keys raise UserError."""
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
        if not isinstance(values, dict):
            raise UserError(f"--rules {p}: [{table}] must be a table")
        for key, value in values.items():
            if key not in rules[table]:
                raise UserError(f"--rules {p}: unknown key {table}.{key}{did_you_mean(key, rules[table])}")
            if type(value) is not type(rules[table][key]) and not (
                    isinstance(value, (int, float)) and isinstance(rules[table][key], (int, float))):
                raise UserError(f"--rules {p}: {table}.{key} must be {type(rules[table][key]).__name__}")
            merged[table][key] = value
    return merged
