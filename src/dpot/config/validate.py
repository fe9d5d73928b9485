"""A decoded run config's value checks: ranges and the rules across sections that need no dataset
(:func:`validate_config`), and the policy type dpot can train (:func:`check_policy_type`). Dataset-dependent checks
are the trainer's (:mod:`dpot.train.inputs`)."""

from __future__ import annotations

import dataclasses

from dpot.config.schema import DpotTrainConfig
from dpot.errors import did_you_mean, field_error
from dpot.train.precheck import check_learning_rate

__all__ = ["validate_config", "check_policy_type"]


def validate_config(cfg: DpotTrainConfig) -> None:
    """Check value ranges and cross-field rules that need no dataset (raises UserError).

    The one value check of a loaded config: each dpot config dataclass checks its own fields in ``validate()``
    (``ot``, its ``features``, ``eval``); the rules across sections live here. Keys and JSON types were checked
    before decoding (:func:`dpot.config.check.check_tree`). Dataset-dependent checks (action dims, camera keys,
    ``dim_slice`` beyond the action dim) are done by the trainer once the datasets are open.
    """
    cfg.ot.validate("ot")
    if cfg.source_dataset is None:
        raise field_error("source_dataset", "missing; give the sim dataset, e.g. "
                                            '"source_dataset": {"repo_id": "local/sim", "root": "data/sim"}')
    for name in ("steps", "batch_size", "log_freq"):
        if getattr(cfg, name) < 1:
            raise field_error(name, f"must be >= 1, got {getattr(cfg, name)}")
    if cfg.batch_size < 2:
        raise field_error("batch_size", f"must be >= 2 to hold one source and one target item, got {cfg.batch_size}")
    ot = cfg.ot
    n_src = round(ot.batch_ratio * cfg.batch_size)
    if n_src < 1 or n_src > cfg.batch_size - 1:
        raise field_error("batch_size", f"{cfg.batch_size} with ot.batch_ratio={ot.batch_ratio} gives {n_src} source "
                                        f"and {cfg.batch_size - n_src} target items; each domain needs at least one: "
                                        "raise batch_size or move batch_ratio toward 0.5")
    if cfg.eval_freq < 0 or cfg.save_freq < 1:
        raise field_error("eval_freq" if cfg.eval_freq < 0 else "save_freq", "must be >= 0 (eval) / >= 1 (save)")
    cfg.eval.validate("eval")
    if cfg.policy is None:
        raise field_error("policy",
                          'missing; e.g. "policy": {"type": "diffusion", "pretrained_backbone_weights": null}')
    check_policy_type(cfg.policy.type)
    if not cfg.use_policy_training_preset and (cfg.optimizer is None or cfg.scheduler is None):
        missing = "optimizer" if cfg.optimizer is None else "scheduler"
        raise field_error(missing, "missing while use_policy_training_preset=false; give both optimizer and "
                                   'scheduler (e.g. "optimizer": {"type": "adamw", "lr": 3e-4}) or set '
                                   "use_policy_training_preset=true")
    _check_learning_rates(cfg)


def _check_learning_rates(cfg: DpotTrainConfig) -> None:
    """Every learning rate set anywhere (the policy preset's ``optimizer_lr*``, the explicit ``optimizer.lr``) must
    be > 0: a negative one is torch's traceback at the first step, a zero one trains nothing without a word."""
    where = [(f"policy.{f.name}", getattr(cfg.policy, f.name)) for f in dataclasses.fields(cfg.policy)
             if f.name.startswith("optimizer_lr")]
    if cfg.optimizer is not None and hasattr(cfg.optimizer, "lr"):
        where.append(("optimizer.lr", cfg.optimizer.lr))
    for name, lr in where:
        check_learning_rate(name, lr)


def check_policy_type(policy_type: str) -> None:
    """Raise UserError (``policy.type: '<type>' is not supported by dpot train; supported types: act,
    diffusion``) for a LeRobot policy type without a dpot policy hook (:func:`dpot.policy.supported_policy_types`),
    and ``policy.type: unknown '<type>' (did you mean ...)`` for a name LeRobot does not know."""
    from lerobot.configs.policies import PreTrainedConfig

    from dpot.policy import get_hook, supported_policy_types

    known = PreTrainedConfig.get_known_choices()
    if policy_type not in known:
        raise field_error("policy.type", f"unknown '{policy_type}'{did_you_mean(policy_type, known)}; dpot train "
                                         f"supports {', '.join(supported_policy_types())}")
    get_hook(policy_type)

