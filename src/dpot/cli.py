"""``dpot`` command line: ``dpot <command> [args]``.

Commands (each lives in its own module; this file only dispatches and turns user errors into one line):
    train     DP+OT co-training            (dpot.train.cli)
    demo      the README's main job         (dpot.demo)
    report    one run -> Markdown/HTML      (dpot.analysis.cli)
    compare   runs side by side             (dpot.analysis.cli)
    propose   next configs for a run        (dpot.analysis.cli)
    bench     two-domain benchmark          (dpot.bench.cli)
    autopilot report/propose/train loop   (dpot.autopilot.cli)
    config    config conversion (fork -> dpot keys)  (dpot.config.cli)
    pairs     DTW pair files                (dpot.data.pairs_cli)
    probe     sim-vs-real domain probe      (dpot.train.probe_cli)
"""

from __future__ import annotations

import importlib
import os
import sys

from dpot import launch
from dpot.errors import UserError, did_you_mean

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("dpot.train.cli", "train DP+OT: dpot train --config_path=cfg.json [--a.b=c ...]"),
    "demo": ("dpot.demo", "generate demo data, train DP+OT briefly, evaluate, report"),
    "report": ("dpot.analysis.cli", "summarize one run: dpot report RUN [--out DIR]"),
    "compare": ("dpot.analysis.cli", "compare runs: dpot compare RUN RUN... [--out DIR]"),
    "propose": ("dpot.analysis.cli", "write next configs: dpot propose RUN --out DIR"),
    "bench": ("dpot.bench.cli", "two-domain benchmark: dpot bench generate|eval|gap|study ..."),
    "autopilot": ("dpot.autopilot.cli", "search: dpot autopilot --config_path BASE.json --out DIR"),
    "config": ("dpot.config.cli", "convert a config to dpot's keys: dpot config convert IN OUT"),
    "pairs": ("dpot.data.pairs_cli", "DTW pair file: dpot pairs build --source ROOT --target ROOT --out FILE"),
    "probe": ("dpot.train.probe_cli", "sim-vs-real separability of a run's features: dpot probe RUN"),
}


def _usage() -> str:
    lines = ["usage: dpot <command> [args]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dpot`` console script. Returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command '{command}'{did_you_mean(command, COMMANDS)}; "
              f"run 'dpot --help' for the list", file=sys.stderr)
        return 2
    launch.set_env_defaults()
    try:
        module = importlib.import_module(COMMANDS[command][0])
        return int(module.main(rest, command=command) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` etc.: stop quietly, like other Unix tools
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the interpreter flushes it at exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
