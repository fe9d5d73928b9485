"""The run config's schema: ``DpotTrainConfig`` (LeRobot's ``TrainPipelineConfig`` plus dpot's sections) and
``DpotEvalConfig`` (draccus dataclasses), and the ``--help`` listing of dpot's own keys. The OT section's classes live
in :mod:`dpot.config.ot`; loading is :mod:`dpot.config.load`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import draccus
from lerobot.configs.default import DatasetConfig, EvalConfig
from lerobot.configs.train import TrainPipelineConfig

from dpot.config.ot import OTConfig, OTFeatureConfig
from dpot.errors import field_error

__all__ = ["DpotEvalConfig", "DpotTrainConfig", "dpot_keys_help"]


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
            raise field_error(f"{where}.n_batches", f"must be >= 1, got {self.n_batches}")
        if self.domain_probe_freq < 0:
            raise field_error(f"{where}.domain_probe_freq", f"must be >= 0 (0 = no domain probe), got "
                                                            f"{self.domain_probe_freq}")
        if self.domain_probe_frames < 4:
            raise field_error(f"{where}.domain_probe_frames", f"must be >= 4 (frames of each side, half per "
                                                              f"domain), got {self.domain_probe_frames}")
        if not 0 <= self.val_fraction < 1:
            raise field_error(f"{where}.val_fraction", f"must be in [0, 1), got {self.val_fraction}")


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
