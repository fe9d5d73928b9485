"""Metric sinks: W&B (``wandb.enable``) and TensorBoard (``tensorboard``); ``metrics.jsonl`` (always) is
:class:`dpot.metrics_log.JsonlSink`.

All sinks receive the same flat dict with the full keys of docs/architecture.md ("Contracts") (``train/loss``,
``eval/offline_eval/avg_loss``, ...) and the step, so the W&B / TensorBoard keys equal the JSONL keys.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from dpot.metrics_log import METRICS_FILE

log = logging.getLogger(__name__)


class WandbSink:
    """W&B through LeRobot's ``WandBLogger`` (run dir ``<output_dir>/wandb``).

    ``WANDB_MODE=offline|disabled`` in the environment is honoured: LeRobot passes ``mode="online"`` whenever
    ``wandb.mode`` is unset, which would override the variable, so the variable is copied into ``wandb.mode``
    first. Any failure to start (no API key, no network) becomes a warning and the run goes on with local logs.
    ``extra_config`` is added to the W&B run's config (e.g. ``dpot_ot_terms``: cost term -> kind).
    """

    def __init__(self, cfg, extra_config: dict | None = None):
        self.run = None
        self.error: str | None = None
        env_mode = os.environ.get("WANDB_MODE")
        if cfg.wandb.mode not in ("online", "offline", "disabled") and env_mode in ("online", "offline", "disabled"):
            cfg.wandb.mode = env_mode
        os.environ.setdefault("WANDB_INIT_TIMEOUT", "30")
        try:
            from lerobot.common.wandb_utils import WandBLogger

            self._logger = WandBLogger(cfg)
            self._wandb = self._logger._wandb
            self.run = self._wandb.run
        except Exception as err:  # noqa: BLE001 - W&B problems must never stop training
            self.error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            warnings.warn(f"W&B logging disabled ({self.error}); metrics still go to {METRICS_FILE}", stacklevel=2)
            log.warning("W&B logging disabled (%s); metrics still go to %s", self.error, METRICS_FILE)
        if extra_config and self.run is not None:
            try:
                self.run.config.update(extra_config, allow_val_change=True)
            except Exception as err:  # noqa: BLE001
                log.warning("W&B config update failed: %s", err)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.run is None:
            return
        try:
            self._wandb.log({k: float(v) for k, v in metrics.items()}, step=int(step))
        except Exception as err:  # noqa: BLE001
            log.warning("W&B log failed at step %s: %s", step, err)

    def close(self) -> None:
        if self.run is not None:
            try:
                self._wandb.finish()
            except Exception as err:  # noqa: BLE001
                log.warning("W&B finish failed: %s", err)


class TensorBoardSink:
    """TensorBoard scalars under ``<output_dir>/tensorboard`` (same keys as the JSONL)."""

    def __init__(self, log_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self._writer.add_scalar(k, float(v), global_step=int(step))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class Sinks:
    """Fan-out to every enabled sink."""

    def __init__(self, sinks: list):
        self.sinks = sinks

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for s in self.sinks:
            s.log(step, metrics)

    def close(self) -> None:
        for s in self.sinks:
            s.close()
