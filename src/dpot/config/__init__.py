"""Typed configuration of a DP+OT co-training run (draccus dataclasses extending LeRobot's train config).

``DpotTrainConfig`` is LeRobot's ``TrainPipelineConfig`` (``dataset`` is the *target* / real dataset, and all
optimizer, scheduler, policy, logging and checkpoint keys keep LeRobot's names) plus:

- ``source_dataset``: the *source* (simulation) dataset,
- ``camera_map``: source camera key -> target camera key, when the two datasets name cameras differently,
- ``ot``: the OT alignment (the seed's keys: ``lambda_ot``, ``reg``, ``tau_src``, ``tau_tgt``, ``heuristic``,
  ``batch_ratio``, ``window_size``, ``features``),
- ``eval``: offline evaluation on held-out target episodes (``n_batches``, ``val_episodes``), ``eval_freq``.

One job per module:

- :mod:`dpot.config.ot`: the ``ot`` section (cost-term kinds, ``OTConfig``), with no LeRobot or torch import,
- :mod:`dpot.config.schema`: ``DpotTrainConfig``, ``DpotEvalConfig``, the ``--help`` key listing,
- :mod:`dpot.config.check`: the raw JSON's keys and types, before decoding,
- :mod:`dpot.config.validate`: value ranges and cross-section rules, after decoding,
- :mod:`dpot.config.load`: file + ``--a.b=c`` overrides -> a validated config, and saving it,
- :mod:`dpot.config.cli`: ``dpot config convert``.

The names below are importable from ``dpot.config`` itself; they load on first use, so ``import dpot.config.ot``
(the pre-check's light path) does not import LeRobot.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "dpot.config.ot": ("ALIGNMENTS", "COST_NORMS", "PRIORS", "IMG_PREFIX", "STATE_KEY", "LABEL_KEYS", "CONCAT_TERM",
                       "OTFeatureConfig", "EmbedFeatureConfig", "LabelFeatureConfig", "OTConfig"),
    "dpot.config.schema": ("DpotEvalConfig", "DpotTrainConfig", "dpot_keys_help"),
    "dpot.config.validate": ("validate_config", "check_policy_type"),
    "dpot.config.load": ("load_train_config", "parse_train_args", "read_raw_config", "merge_overrides",
                         "config_to_dict", "save_train_config"),
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    """``dpot.config.<name>`` from the module that defines it (PEP 562), imported on first use."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'dpot.config' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
