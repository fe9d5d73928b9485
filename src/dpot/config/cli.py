"""``dpot config convert IN OUT``: write a config (dpot's or the LeRobot OT fork's format) in dpot's keys.

The output is the input's raw JSON translated by :func:`dpot.config.read_raw_config` (fork keys mapped, one warning
line per key dpot does not act on); it is written only after the input loads as a full run config, so
``dpot train --config_path=OUT`` resolves to the same config as ``--config_path=IN``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from dpot.atomic import check_output_location
from dpot.errors import UserErrorParser


def convert(src: str | Path, dst: str | Path) -> Path:
    """Translate ``src`` into dpot's keys and write it to ``dst`` atomically (nothing written on a UserError).

    Args:
        src: a config file, dpot's or the fork's format.
        dst: the output path.

    Returns:
        The written path.
    """
    from dpot.atomic import write_text
    from dpot.config import load_train_config, read_raw_config

    # the whole check (keys, types, values) before anything is written; warns once. LeRobot's "device 'cuda' is not
    # available, switching to 'cpu'" is about this machine, not the file: the file keeps its device
    device_log = logging.getLogger("lerobot.configs.policies")
    level = device_log.level
    device_log.setLevel(logging.ERROR)
    try:
        load_train_config(src)
    finally:
        device_log.setLevel(level)
    quiet = logging.getLogger("dpot.fork_config")
    was, quiet.disabled = quiet.disabled, True  # the same warnings again: already printed by the load
    try:
        raw = read_raw_config(json.loads(Path(src).read_text()))
    finally:
        quiet.disabled = was
    return write_text(dst, json.dumps(raw, indent=2) + "\n")


def main(argv: list[str], command: str = "config") -> int:
    parser = UserErrorParser(prog="dpot config", description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True, metavar="{convert}")
    conv = sub.add_parser("convert", help="write IN (dpot or fork format) as a dpot-format config OUT")
    conv.add_argument("input")
    conv.add_argument("output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    check_output_location(args.output, "OUT", directory=False)
    out = convert(args.input, args.output)
    print(f"wrote {out}")
    return 0
