"""``dpot train --config_path=cfg.json [--a.b=c ...]`` (also ``python -m dpot.train`` under ``accelerate launch``).

Multi-process: ``accelerate launch --multi_gpu --num_processes N -m dpot.train --config_path=cfg.json`` (GPUs; add
``--mixed_precision=bf16`` or set ``policy.use_amp=true`` — the OT solve stays float32). On CPU use the same
command with ``--policy.device=cpu`` (gloo): accelerate's ``--cpu`` flag starts a single process, the
``--multi_gpu`` launcher (torchrun) is what starts N. ``batch_size`` is per process (the global batch is
N * batch_size, each rank takes its slice of every domain) and the OT loss is computed on the all-gathered batch
(:mod:`dpot.train.distributed`), so N processes x B == 1 process x N*B (tested).
Resume: ``dpot train --config_path=<run>/train_config.json --resume=true``.

Output: the trainer's INFO messages (the start-up line, offline-eval scores, the closing line) go to stdout as
plain lines; warnings and errors to stderr (:func:`configure_logging`).
"""

from __future__ import annotations

import logging
import sys

USAGE = ("usage: dpot train --config_path=cfg.json [--dotted.key=value ...]\n"
         "       dpot train --config_path=<run>/train_config.json --resume=true\n"
         "multi-process: accelerate launch --multi_gpu --num_processes N -m dpot.train --config_path=cfg.json")


class _StdoutHandler(logging.StreamHandler):
    """Plain INFO lines to the current ``sys.stdout`` (looked up per record, so a replaced stdout is followed)."""

    def __init__(self):
        super().__init__(sys.stdout)
        self.setLevel(logging.INFO)
        self.addFilter(lambda record: record.levelno < logging.WARNING)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def configure_logging() -> None:
    """Warnings and errors of every library to stderr (``LEVEL name: message``); ``dpot.train``'s INFO messages
    to stdout as plain lines. Idempotent."""
    root = logging.getLogger()
    if not root.handlers:
        err = logging.StreamHandler()
        err.setLevel(logging.WARNING)
        err.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(err)
        root.setLevel(logging.WARNING)
    train_log = logging.getLogger("dpot.train")
    train_log.setLevel(logging.INFO)
    if not any(isinstance(h, _StdoutHandler) for h in train_log.handlers):
        train_log.addHandler(_StdoutHandler())


def main(argv: list[str] | None = None, command: str = "train") -> int:
    """Parse the config (UserError on bad input), train, return 0."""
    from dpot.config import parse_train_args
    from dpot.train.loop import train

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    configure_logging()
    cfg = parse_train_args(argv)
    train(cfg)
    return 0
