"""User-facing errors: bad config, dataset, run id or CLI arguments.

Raise ``UserError("<field or path>: <what is wrong and how to fix it>")`` anywhere; the ``dpot`` CLI prints
``error: <message>`` as one line on stderr and exits with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable


class UserError(Exception):
    """An error caused by the user's input. Its message is one line, ready to print after ``error: ``."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class UserErrorParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` for dpot's commands: a usage error (missing or unknown argument, bad choice) raises
    ``UserError("<prog>: <argparse's message>")`` (one ``error:`` line, exit 2) instead of printing the usage and
    exiting; ``--help`` still prints and exits 0. Subparsers made by ``add_subparsers`` are of this class too."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to ``name``, or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def field_error(field: str, msg: str) -> UserError:
    """``UserError("<field>: <msg>")``: the one shape of a config value's error (``ot.reg: must be > 0, ...``)."""
    return UserError(f"{field}: {msg}")


def check_choice(field: str, value: str, choices: Iterable[str]) -> None:
    """Raise ``<field>: unknown '<value>' (did you mean ...); one of [...]`` when ``value`` is not in ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise field_error(field, f"unknown '{value}'{did_you_mean(value, choices)}; one of {choices}")
