"""``dpot train --config_path=cfg.json [--a.b=c ...]`` (also ``python -m dpot.train`` under ``accelerate launch``).

Multi-process: ``accelerate launch --multi_gpu --num_processes N -m dpot.train --config_path=cfg.json`` (GPUs; add
``--mixed_precision=bf16`` or set ``policy.use_amp=true`` — the OT solve is never autocast: the cost terms are
built in float32 and the Sinkhorn iterations run in float64, :func:`dpot.ot.unbalanced_sinkhorn`). On CPU use the same
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

from dpot.rundir import CONFIG_FILE

USAGE = ("usage: dpot train --config_path=cfg.json [--dotted.key=value ...]\n"
         f"       dpot train --config_path=<run>/{CONFIG_FILE} --resume=true\n"
         "multi-process: accelerate launch --multi_gpu --num_processes N -m dpot.train --config_path=cfg.json")


LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


class _ConsoleHandler(logging.StreamHandler):
    """Records in ``[level, below)`` to the current ``sys.<stream_name>`` (looked up per record, so a replaced
    stream is followed)."""

    def __init__(self, stream_name: str, level: int, below: int | None, fmt: str):
        super().__init__(getattr(sys, stream_name))
        self.stream_name = stream_name
        self.setLevel(level)
        if below is not None:
            self.addFilter(lambda record: record.levelno < below)
        self.setFormatter(logging.Formatter(fmt))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = getattr(sys, self.stream_name)
        super().emit(record)


def configure_logging() -> None:
    """``dpot.train``'s INFO messages (start-up line, offline-eval scores, closing line) to stdout as plain lines,
    its warnings and errors to stderr as ``LEVEL name: message``; other libraries' warnings to stderr through
    the root logger (``basicConfig``: a no-op when an import already configured it). Idempotent."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    train_log = logging.getLogger("dpot.train")
    if not any(isinstance(h, _ConsoleHandler) for h in train_log.handlers):
        train_log.addHandler(_ConsoleHandler("stdout", logging.INFO, logging.WARNING, "%(message)s"))
        train_log.addHandler(_ConsoleHandler("stderr", logging.WARNING, None, LOG_FORMAT))
    train_log.setLevel(logging.INFO)
    train_log.propagate = False  # the root handler (maybe set up by an import, at any level) would repeat them


def main(argv: list[str] | None = None, command: str = "train") -> int:
    """``dpot train``: parse the config, train, return the exit code.

    Args:
        argv: ``--config_path=cfg.json`` and ``--dotted.key=value`` overrides (None: ``sys.argv[1:]``).
        command: the command name, for messages.

    Returns:
        0 when training finished (``-h`` prints the keys and returns 0).

    Raises:
        UserError: a bad config or input (the ``dpot`` CLI prints it as one ``error:`` line, exit 2).
    """
    from dpot.train.precheck import precheck

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        from dpot.config import dpot_keys_help

        print(USAGE)
        print("\ndpot's keys (defaults shown; JSON in --config_path or --key=value overrides):")
        print(dpot_keys_help())
        print("\nLeRobot's keys keep their names and meaning (dataset = target, policy.*, optimizer.*,\n"
              "scheduler.*, use_policy_training_preset, steps, batch_size, log_freq, save_freq, seed, wandb.*,\n"
              "resume, output_dir); reference: docs/architecture.md, 'Config reference'.")
        return 0
    precheck(argv)   # the checks that need no LeRobot, before its ~5 s of imports (dpot.train.precheck)
    from dpot.config import parse_train_args
    from dpot.train.loop import train

    configure_logging()
    cfg = parse_train_args(argv)
    train(cfg)
    return 0
