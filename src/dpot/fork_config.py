"""Configs of the LeRobot OT fork (the seed report's ``train_config/*.json``), read as they are.

The fork keeps LeRobot's keys and adds one ``ot`` block::

    "ot": {"enable", "src_repo_id", "src_root", "pair_info_path", "batch_ratio", "lambda_ot", "obs_keys",
           "base_index_src", "base_index_tgt", "window_size", "sharpness", "no_window", "topk_src_episodes", "cutoff",
           "loss_config": {"features": [{"src_key", "tgt_key", "use_learned_embed", "embed_name", "weight_embed",
                                         "weight_label", "dim_slice", "term_name"}, ...],
                           "reg", "tau_src", "tau_tgt", "heuristic"}}

:func:`translate_fork_config` rewrites such a raw JSON dict into dpot's keys (:mod:`dpot.config`) before the
normal load path checks and decodes it; :func:`translate_override` does the same for one ``--a.b=value`` override
(``--ot.src_root=`` -> ``--source_dataset.root=``). Every fork key is either mapped (:data:`FORK_OT_KEYS`,
:data:`FORK_FEATURE_KEYS`: the dpot key it becomes) or reported by one warning line naming it and what dpot does
instead; an ``ot`` key in neither table is an error (nothing is dropped silently). docs/coming-from-the-fork.md
is the same table for users.

LeRobot's own keys keep their meaning; :func:`lerobot_key_notes` warns where dpot does not (yet) act on one.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from dpot import metric_names as mn
from dpot.errors import UserError, did_you_mean
from dpot.rundir import CHECKPOINTS_DIR

__all__ = ["FORK_OT_KEYS", "FORK_FEATURE_KEYS", "FORK_TIME_INDEX", "is_fork_config", "translate_fork_config",
           "translate_override", "fork_batches", "fork_prior", "lerobot_key_notes"]

log = logging.getLogger(__name__)

IMG_PREFIX = "observation.images."

# fork `ot.<key>` -> where it goes in dpot ("ot.x" / "source_dataset.x"), or what happens to it (a sentence: the
# key is reported with one warning line when it carries a value that matters)
FORK_OT_KEYS: dict[str, str] = {
    "enable": "true: nothing to do (dpot always co-trains with OT); false: ot.lambda_ot=0 (plain co-training)",
    "src_repo_id": "source_dataset.repo_id",
    "src_root": "source_dataset.root",
    "pair_info_path": "ot.pair_info_path",
    "batch_ratio": "the OT batch: ot.pair_batch_size = max(1, int(batch_size * batch_ratio)) pairs in a separate "
                   "OT batch (the fork's OT dataloader); the BC batch is the fork's half and half: ot.batch_ratio = "
                   "floor(batch_size / 2) / batch_size (fork_batches)",
    "lambda_ot": "ot.lambda_ot",
    "obs_keys": "not used: dpot loads every camera, observation.state and action the policy needs (checked "
                "against the datasets); the image terms come from loss_config.features",
    "base_index_src": "ot.pair_base_index_src",
    "base_index_tgt": "ot.pair_base_index_tgt",
    "window_size": "ot.window_size",
    "sharpness": "ot.sharpness",
    "no_window": "ot.no_window",
    "topk_src_episodes": "ot.topk_src_episodes",
    "cutoff": "ot.cutoff",
    "loss_config": "(block) features -> ot.features, the rest below",
    "loss_config.reg": "ot.reg",
    "loss_config.tau_src": "ot.tau_src",
    "loss_config.tau_tgt": "ot.tau_tgt",
    "loss_config.heuristic": "ot.heuristic",   # and ot.prior: true -> diagonal, false -> none (fork_prior)
    "loss_config.features": "each entry becomes one term of ot.features (see FORK_FEATURE_KEYS)",
}

# fork `ot.loss_config.features[i].<key>` -> its dpot counterpart
FORK_FEATURE_KEYS: dict[str, str] = {
    "src_key": "image key: the source camera (camera_map entry when it differs from tgt_key); other keys: must "
               "equal tgt_key",
    "tgt_key": "image key (observation.images.<cam>): an `embed` term with cameras=[<cam>]; other keys: a "
               "`label` term with key=<tgt_key>",
    "use_learned_embed": "embed term: use_learned_embed; label term: not used (the label is the raw value, as the "
                         "fork's OT batch is not normalized)",
    "embed_name": "not used (dpot's embed terms are the policy's per-camera image embeddings); a non-null value is "
                  "warned about",
    "weight_embed": "embed term: weight_embed; on a non-image key: dropped with a warning when > 0",
    "weight_label": "label term: weight_label; on an image key: dropped with a warning when > 0",
    "dim_slice": "label term: dim_slice; on an image key: dropped with a warning when set",
    "term_name": f"term_name (the metric name {mn.train(mn.cost_key('<term_name>'))})",
}

# ot keys whose presence marks the fork's format (dpot has no key of that name in ot)
_FORK_MARKERS = {"enable", "src_repo_id", "src_root", "obs_keys", "base_index_src", "base_index_tgt", "loss_config"}

# fork override names -> dpot override names (plain renames)
_OVERRIDE_RENAMES = {
    "ot.src_repo_id": "source_dataset.repo_id",
    "ot.src_root": "source_dataset.root",
    "ot.base_index_src": "ot.pair_base_index_src",
    "ot.base_index_tgt": "ot.pair_base_index_tgt",
    "ot.loss_config.reg": "ot.reg",
    "ot.loss_config.tau_src": "ot.tau_src",
    "ot.loss_config.tau_tgt": "ot.tau_tgt",
}

# the fork's time step per key (ot_loss.py's _collapse_time_if_needed): the first action of the chunk, the last
# observation step of a state; images: the last frame (the embed terms' time_index)
FORK_TIME_INDEX = {"action": 0, "observation.state": -1, "observation.environment_state": -1}
FORK_IMAGE_TIME_INDEX = -1


def is_fork_config(raw: dict) -> bool:
    """True when ``raw["ot"]`` holds a key only the fork's format has (``enable``, ``src_root``, ``loss_config``,
    ...)."""
    ot = raw.get("ot")
    return isinstance(ot, dict) and bool(_FORK_MARKERS & set(ot))


def _warn(warnings: list[str], msg: str) -> None:
    warnings.append(msg)
    log.warning("%s", msg)


def _feature(i: int, feat: Any, camera_map: dict[str, str], warnings: list[str]) -> dict:
    """One fork feature -> one dpot feature (``embed`` for an image key, ``label`` otherwise)."""
    where = f"ot.loss_config.features[{i}]"
    if not isinstance(feat, dict):
        raise UserError(f"{where}: expected an object with src_key, tgt_key, ..., got {json.dumps(feat)}")
    unknown = sorted(set(feat) - set(FORK_FEATURE_KEYS))
    if unknown:
        raise UserError(f"{where}.{unknown[0]}: unknown key{did_you_mean(unknown[0], FORK_FEATURE_KEYS)}; remove it "
                        "or fix its name")
    tgt_key = feat.get("tgt_key") or feat.get("src_key")
    src_key = feat.get("src_key") or tgt_key
    if not isinstance(tgt_key, str):
        raise UserError(f"{where}.tgt_key: missing; give the observation key this term compares, e.g. "
                        '"observation.images.front" or "action"')
    if feat.get("embed_name") is not None:
        _warn(warnings, f"{where}.embed_name={json.dumps(feat['embed_name'])} ignored: dpot's embed terms use the "
                        "policy's per-camera image embedding")
    term_name = feat.get("term_name")
    if tgt_key.startswith(IMG_PREFIX):
        for key, default in (("weight_label", 0.0), ("dim_slice", None)):
            if feat.get(key, default) not in (default, 0):
                _warn(warnings, f"{where}.{key}={json.dumps(feat[key])} ignored: an image key becomes an embed "
                                "term, which has no label part")
        if src_key != tgt_key:
            if not src_key.startswith(IMG_PREFIX):
                raise UserError(f"{where}.src_key: '{src_key}' is not an image key while tgt_key '{tgt_key}' is")
            camera_map[src_key.removeprefix(IMG_PREFIX)] = tgt_key.removeprefix(IMG_PREFIX)
        out = {"type": "embed", "use_learned_embed": bool(feat.get("use_learned_embed", True)),
               "weight_embed": feat.get("weight_embed", 1.0), "cameras": [tgt_key.removeprefix(IMG_PREFIX)],
               "time_index": FORK_IMAGE_TIME_INDEX}
    else:
        if src_key != tgt_key:
            raise UserError(f"{where}.src_key: '{src_key}' differs from tgt_key '{tgt_key}'; dpot compares one key "
                            "present in both datasets (rename the source feature or use the same key)")
        if feat.get("weight_embed", 0.0) not in (0, None):
            _warn(warnings, f"{where}.weight_embed={json.dumps(feat['weight_embed'])} ignored: '{tgt_key}' is not a "
                            "camera, so it becomes a label term weighted by weight_label")
        out = {"type": "label", "key": tgt_key, "dim_slice": feat.get("dim_slice"),
               "weight_label": feat.get("weight_label", 0.0), "normalized": False,
               "time_index": FORK_TIME_INDEX.get(tgt_key)}
    if term_name is not None:
        out["term_name"] = term_name
    return out


def translate_fork_config(raw: dict) -> tuple[dict, list[str]]:
    """Rewrite a fork-format config (raw JSON) into dpot's keys.

    Args:
        raw: the parsed JSON object of a fork config (not modified).

    Returns:
        ``(dpot_raw, warnings)``: the same config in dpot's keys (LeRobot's keys untouched, the ``ot`` block
        mapped by :data:`FORK_OT_KEYS`, ``ot.src_*`` -> ``source_dataset``, image features' src/tgt camera names
        -> ``camera_map``) and the warning lines (also logged) for the keys dpot does not act on.

    Raises:
        UserError: an ``ot`` key the fork does not have (with a suggestion), a feature dpot cannot express.
    """
    out = json.loads(json.dumps(raw))  # deep copy
    if not is_fork_config(out):
        return out, []
    fork_ot = out.pop("ot")
    warnings: list[str] = []
    loss_cfg = fork_ot.get("loss_config") or {}
    if not isinstance(loss_cfg, dict):
        raise UserError(f"ot.loss_config: expected an object, got {json.dumps(loss_cfg)}")
    for key in list(fork_ot) + [f"loss_config.{k}" for k in loss_cfg]:
        if key not in FORK_OT_KEYS:
            short = key.removeprefix("loss_config.")
            names = [k.removeprefix("loss_config.") for k in FORK_OT_KEYS if k.startswith("loss_config.") == (
                short != key)]
            raise UserError(f"ot.{key}: unknown key{did_you_mean(short, names)}; remove it or fix its name")
    ot: dict[str, Any] = {}
    for key, value in list(fork_ot.items()) + [(f"loss_config.{k}", v) for k, v in loss_cfg.items()]:
        dest = FORK_OT_KEYS[key]
        if dest.startswith("ot."):
            ot[dest.removeprefix("ot.")] = value
        elif dest.startswith("source_dataset."):
            src = out.setdefault("source_dataset", {})
            if not isinstance(src, dict):
                raise UserError(f"source_dataset: expected an object, got {json.dumps(src)}")
            src.setdefault(dest.removeprefix("source_dataset."), value)
    # the fork's "off" spellings: topk_src_episodes -1/0 = all partners, sharpness null = 0, window_size null = 0
    if ot.get("topk_src_episodes") in (-1, 0):
        ot["topk_src_episodes"] = None
    for key, off in (("sharpness", 0.0), ("window_size", 0), ("cutoff", 0.0)):
        if key in ot and ot[key] is None:
            ot[key] = off
    # the fork's batches (lerobot_train.py): BC half target, half source; OT a separate batch of pairs
    ot.update(fork_batches(out.get("batch_size", DEFAULT_BATCH_SIZE), fork_ot.get("batch_ratio", 0.5)))
    # the fork's loss (ot_loss.py): plain squared distances for every term, and heuristic = the diagonal reference
    ot["cost_norm"] = "none"
    if "heuristic" in ot:
        ot["prior"] = fork_prior(ot["heuristic"])
    if fork_ot.get("enable", True) is False:
        ot["lambda_ot"] = 0.0
        _warn(warnings, "ot.enable=false: dpot still co-trains on both datasets, with ot.lambda_ot=0 (no OT term); "
                        "for target-only training use lerobot-train")
    if fork_ot.get("obs_keys") is not None:
        _warn(warnings, f"ot.obs_keys={json.dumps(fork_ot['obs_keys'])} not used: dpot loads every camera, "
                        "observation.state and action the policy needs; the OT image terms are the "
                        "loss_config.features")
    if "features" in loss_cfg:
        if not isinstance(loss_cfg["features"], list):
            raise UserError(f"ot.loss_config.features: expected a list, got {json.dumps(loss_cfg['features'])}")
        camera_map = out.setdefault("camera_map", {})
        ot["features"] = [_feature(i, f, camera_map, warnings) for i, f in enumerate(loss_cfg["features"])]
        if not camera_map:
            out.pop("camera_map")
    out["ot"] = ot
    return out, warnings


DEFAULT_BATCH_SIZE = 8   # LeRobot's TrainPipelineConfig.batch_size, when a fork file gives none


def fork_batches(batch_size, batch_ratio) -> dict:
    """The fork's batch layout in dpot's keys (its ``lerobot_train.py``): BC = ``(B + 1) // 2`` target items and
    ``max(1, B - (B + 1) // 2)`` source items (``batch_ratio`` plays no part in it), and a separate OT batch of
    ``max(1, int(B * batch_ratio))`` (target frame, DTW partner) pairs. Returns ``{"batch_ratio": n_src / B,
    "pair_batch_size": n_pairs}`` (``round(batch_ratio * B)`` then gives exactly ``n_src``). Resolved from the
    file's ``batch_size``: a ``--batch_size`` override keeps the file's pair count (``--ot.pair_batch_size`` sets
    it)."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 2:
        raise UserError(f"batch_size: expected an integer >= 2 (half source, half target), got "
                        f"{json.dumps(batch_size)}")
    if not isinstance(batch_ratio, (int, float)) or isinstance(batch_ratio, bool) or not 0 < batch_ratio < 1:
        raise UserError(f"ot.batch_ratio: must be in (0, 1), got {json.dumps(batch_ratio)}")
    n_src = max(1, batch_size - (batch_size + 1) // 2)
    return {"batch_ratio": n_src / batch_size, "pair_batch_size": max(1, int(batch_size * batch_ratio))}


def fork_prior(heuristic) -> str:
    """The dpot prior of the fork's ``heuristic``: ``diagonal`` for true (its ``c[i, i] = 1/N``), else ``none``."""
    return "diagonal" if heuristic in (True, "true", "True", 1) else "none"


def translate_override(arg: str) -> list[str]:
    """One ``--a.b=value`` override with a fork name (``--ot.src_root=``, ``--ot.loss_config.reg=``, ...)
    rewritten to dpot's names; other arguments come back unchanged (a one-item list). ``--ot.enable=false`` becomes
    ``--ot.lambda_ot=0`` (``--ot.enable=true`` changes nothing: ``[]``); ``--ot.loss_config.heuristic=B`` sets
    ``ot.heuristic`` and the prior it means in the fork (:func:`fork_prior`)."""
    if not arg.startswith("--") or "=" not in arg:
        return [arg]
    key, value = arg[2:].split("=", 1)
    if key == "ot.enable":
        if value.lower() in ("false", "0"):
            log.warning("--ot.enable=false: co-training with ot.lambda_ot=0 (no OT term)")
            return ["--ot.lambda_ot=0"]
        return []
    if key == "ot.loss_config.heuristic":
        return [f"--ot.heuristic={value}", f"--ot.prior={fork_prior(value.strip().lower() in ('true', '1'))}"]
    return [f"--{_OVERRIDE_RENAMES.get(key, key)}={value}"]


def lerobot_key_notes(raw: dict) -> list[str]:
    """Warning lines for LeRobot keys that dpot reads but does not act on as ``lerobot-train`` does (logged).

    ``wandb.disable_artifact=false`` with W&B on: dpot never uploads checkpoints as W&B artifacts (they stay in the
    run directory). ``policy.use_amp``, ``dataset.use_imagenet_stats`` and ``dataset.image_transforms`` are
    honoured (bf16 autocast through accelerate; ImageNet camera stats; LeRobot's augmentation on the training
    items of both domains, :class:`dpot.data.cotrain.CoTrainDataset`) and need no note.
    """
    notes: list[str] = []
    wb = raw.get("wandb") if isinstance(raw.get("wandb"), dict) else {}
    if wb.get("enable") is True and wb.get("disable_artifact") is False:
        _warn(notes, "wandb.disable_artifact=false: dpot does not upload checkpoints as W&B artifacts; they stay "
                     f"in <output_dir>/{CHECKPOINTS_DIR}")
    return notes
