"""Open and check the two datasets of a run; combine their normalization stats.

Everything here runs before anything is written to ``output_dir``: each problem is a one-line UserError.

Datasets that do not match (source recorded differently from target):

- camera names: ``camera_map`` (``{"source cam": "target cam"}``); unmapped target cameras need a source camera
  of the same name.
- image sizes: allowed when the channel count matches; source frames are resized to the target camera's size
  (the policy is built from the target's features) in :class:`dpot.data.cotrain.CoTrainDataset` with
  :func:`dpot.data.framecache.resize_frames` (video sources are cached already resized).
- fps: allowed (logged): each dataset is read in its own frames (``n_obs_steps`` and ``horizon`` count frames
  of that dataset, LeRobot's ``resolve_delta_timestamps`` per dataset); the action chunk then spans a
  different duration in each domain, so prefer resampled data when the ratio is far from 1.
- state or action dimensions: an error naming both shapes (no implicit padding or slicing: the policy has one
  action space; map the data offline).
- missing normalization stats (``meta/stats.json`` absent or without a key): numeric features are computed
  from the parquet data (:func:`lerobot.datasets.compute_stats.get_feature_stats`); camera stats are not
  needed with ``dataset.use_imagenet_stats`` (the default), otherwise an error.
- video in one domain, PNG in the other: allowed; both come out as uint8 frames (CoTrainDataset).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dpot.data.regions import META_FILE as REGIONS_FILE
from dpot.data.regions import episode_regions, region_partners
from dpot.errors import UserError
from dpot.train.precheck import check_dataset_root

IMG_PREFIX = "observation.images."
STATS_KEYS = ("mean", "std", "min", "max", "count")
logger = logging.getLogger(__name__)


@dataclass
class RunInputs:
    """Both datasets' metadata + the resolved camera map (full source key -> full target key).

    ``src_regions`` / ``tgt_regions``: ``{episode_index: region}`` of each dataset
    (:func:`dpot.data.regions.episode_regions`), loaded only when ``ot.paired_region`` (None otherwise).
    """

    src_meta: object
    tgt_meta: object
    camera_map: dict[str, str]
    src_root: Path
    tgt_root: Path
    src_regions: dict[int, str] | None = None
    tgt_regions: dict[int, str] | None = None


def _full_cam(key: str) -> str:
    return key if key.startswith(IMG_PREFIX) else IMG_PREFIX + key


def dataset_root(ds_cfg, field: str) -> Path:
    """Local root of a dataset config (``root``, or LeRobot's cache dir for ``repo_id``); must hold a LeRobot
    dataset."""
    from lerobot.utils.constants import HF_LEROBOT_HOME

    if not ds_cfg.repo_id:
        raise UserError(f"{field}.repo_id: missing; give a name such as local/sim and {field}.root=PATH")
    return check_dataset_root(Path(ds_cfg.root) if ds_cfg.root else Path(HF_LEROBOT_HOME) / ds_cfg.repo_id, field)


def open_meta(ds_cfg, field: str):
    """``LeRobotDatasetMetadata`` of a local dataset (no hub access); UserError when unreadable."""
    from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata

    root = dataset_root(ds_cfg, field)
    try:
        meta = LeRobotDatasetMetadata(ds_cfg.repo_id, root=root)
    except Exception as err:  # noqa: BLE001 - any failure to read is a bad dataset
        raise UserError(f"{field}.root: {root} is not a readable LeRobot dataset ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''})") from None
    return meta, root


def check_inputs(cfg) -> RunInputs:
    """Open both datasets' metadata and check: action/state dims agree, cameras map onto each other, OT cameras
    exist, ``dim_slice`` fits the action dim, target has >= 2 episodes when a validation split is asked for; with
    ``ot.paired_region``, both datasets record a region per episode and every target region has source episodes."""
    tgt_meta, tgt_root = open_meta(cfg.dataset, "dataset")
    src_meta, src_root = open_meta(cfg.source_dataset, "source_dataset")
    for key in ("action", "observation.state"):
        if key not in tgt_meta.features:
            raise UserError(f"dataset: {tgt_root} has no '{key}' feature; the diffusion policy needs it")
        if key not in src_meta.features:
            raise UserError(f"source_dataset: {src_root} has no '{key}' feature; the diffusion policy needs it")
        s, t = tuple(src_meta.features[key]["shape"]), tuple(tgt_meta.features[key]["shape"])
        if s != t:
            raise UserError(f"source_dataset: '{key}' has shape {list(s)} but the target dataset's is {list(t)}; "
                            "source and target must share the action and state spaces")
    tgt_cams, src_cams = list(tgt_meta.camera_keys), list(src_meta.camera_keys)
    if not tgt_cams:
        raise UserError(f"dataset: {tgt_root} has no camera (observation.images.*) feature")
    cam_map: dict[str, str] = {}
    for s_key, t_key in (cfg.camera_map or {}).items():
        fs, ft = _full_cam(s_key), _full_cam(t_key)
        if fs not in src_cams:
            raise UserError(f"camera_map: source camera '{s_key}' is not in source_dataset (has "
                            f"{[c.removeprefix(IMG_PREFIX) for c in src_cams]})")
        if ft not in tgt_cams:
            raise UserError(f"camera_map: target camera '{t_key}' is not in dataset (has "
                            f"{[c.removeprefix(IMG_PREFIX) for c in tgt_cams]})")
        cam_map[fs] = ft
    mapped_targets = set(cam_map.values())
    for t in tgt_cams:
        if t in mapped_targets:
            continue
        if t not in src_cams:
            raise UserError(f"camera_map: target camera '{t.removeprefix(IMG_PREFIX)}' has no source camera; "
                            f"source_dataset has {[c.removeprefix(IMG_PREFIX) for c in src_cams]}: add "
                            f"--camera_map='{{\"<source cam>\": \"{t.removeprefix(IMG_PREFIX)}\"}}'")
        cam_map.setdefault(t, t)
    from dpot.data.cotrain import image_hw

    inv = {v: k for k, v in cam_map.items()}
    for t in tgt_cams:
        s = inv[t]
        cs, ct = _channels(src_meta.features[s]), _channels(tgt_meta.features[t])
        if cs != ct:
            raise UserError(f"camera_map: source '{s}' has {cs} channels but target '{t}' has {ct}; the policy "
                            "needs one channel count (map an RGB camera to an RGB camera)")
        if image_hw(src_meta.features[s]) != image_hw(tgt_meta.features[t]):
            logger.info("source camera %s %s is resized to the target's %s", s, image_hw(src_meta.features[s]),
                        image_hw(tgt_meta.features[t]))
    if not cfg.dataset.use_imagenet_stats:
        for field, meta, root, cams in (("dataset", tgt_meta, tgt_root, tgt_cams),
                                        ("source_dataset", src_meta, src_root, [inv[t] for t in tgt_cams])):
            missing = [c for c in cams if not _has_stats(meta, c)]
            if missing:
                raise UserError(f"dataset.use_imagenet_stats: {field} {root} has no normalization stats for "
                                f"{missing}; keep --dataset.use_imagenet_stats=true or write them to meta/stats.json "
                                "(LeRobot's dataset_tools.recompute_stats(ds, skip_image_video=False))")
    short = [c.removeprefix(IMG_PREFIX) for c in tgt_cams]
    shapes = {k: tuple(v["shape"]) for k, v in tgt_meta.features.items()}
    for i, feat in enumerate(cfg.ot.features):
        feat.check_dataset(f"ot.features[{i}]", short, shapes)
    if cfg.eval.val_episodes is not None:
        bad = [e for e in cfg.eval.val_episodes if not 0 <= int(e) < tgt_meta.total_episodes]
        if bad:
            raise UserError(f"eval.val_episodes: {bad} not in the target dataset (0..{tgt_meta.total_episodes - 1})")
        if len(set(cfg.eval.val_episodes)) >= tgt_meta.total_episodes:
            raise UserError("eval.val_episodes: holds out every target episode; keep at least one for training")
    src_regions = tgt_regions = None
    if cfg.ot.paired_region:
        src_regions, tgt_regions = _regions(src_root), _regions(tgt_root)
        region_partners([int(e) for e in tgt_meta.episodes["episode_index"]],
                        [int(e) for e in src_meta.episodes["episode_index"]], tgt_regions, src_regions)
    if src_meta.fps != tgt_meta.fps:  # warned only once every check passed: bad input stays one error line
        logger.warning("source_dataset is recorded at %s fps, dataset at %s fps: n_obs_steps and horizon count "
                       "frames of each dataset, so the action chunk spans a different time in each domain",
                       src_meta.fps, tgt_meta.fps)
    return RunInputs(src_meta, tgt_meta, cam_map, src_root, tgt_root, src_regions, tgt_regions)


def _channels(feature: dict) -> int:
    shape = [int(x) for x in feature["shape"]]
    names = list(feature.get("names") or [])
    return shape[names.index("channels")] if "channels" in names else shape[-1]


def _has_stats(meta, key: str) -> bool:
    stats = meta.stats or {}
    return key in stats and all(s in stats[key] for s in STATS_KEYS)


def _domain_stats(meta, root: Path, keys: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """``meta.stats`` restricted to ``keys``; a numeric key without stats gets them computed from the parquet
    data (LeRobot's ``get_feature_stats``, what its writer stores); a camera without stats gets ImageNet's
    mean/std over [0, 1] (used only with ``use_imagenet_stats``, which replaces them anyway)."""
    from lerobot.datasets.compute_stats import get_feature_stats
    from lerobot.utils.constants import IMAGENET_STATS

    out = {}
    for k in keys:
        if _has_stats(meta, k):
            out[k] = {s: np.asarray(v) for s, v in meta.stats[k].items()}
        elif k in meta.camera_keys:
            mean = np.asarray(IMAGENET_STATS["mean"], dtype=np.float32)
            out[k] = {"mean": mean, "std": np.asarray(IMAGENET_STATS["std"], dtype=np.float32),
                      "min": np.zeros_like(mean), "max": np.ones_like(mean),
                      "count": np.asarray([meta.total_frames])}
        else:
            logger.warning("%s: no normalization stats for '%s'; computing them from the data", root, k)
            data = _column(root, k)
            out[k] = get_feature_stats(data, axis=0, keepdims=data.ndim == 1)
    return out


def _column(root: Path, key: str) -> np.ndarray:
    """Every row of a numeric feature of the dataset at ``root`` as float64 ``[N, ...]``."""
    import pyarrow.parquet as pq

    parts = []
    for f in sorted((root / "data").rglob("*.parquet")):
        col = pq.read_table(f, columns=[key]).column(key).to_pylist()
        parts.append(np.asarray(col, dtype=np.float64))
    return np.concatenate(parts)


def _regions(root: Path) -> dict[int, str]:
    """Per-episode regions of the dataset at ``root``; one-line ``ot.paired_region`` error when absent/broken."""
    try:
        regions = episode_regions(root)
    except ValueError as err:
        raise UserError(f"ot.paired_region: cannot read the episode regions: {err}") from None
    if regions is None:
        raise UserError(f"ot.paired_region: {root} records no per-episode regions ({REGIONS_FILE} 'episodes'); "
                        "generate the dataset with `dpot bench generate` or set --ot.paired_region=false")
    return regions


def combined_stats(inputs: RunInputs, keys: list[str], use_imagenet_stats: bool) -> dict[str, dict[str, np.ndarray]]:
    """One set of normalization stats for both domains (so an action means the same number in both).

    ``aggregate_stats([source (cameras renamed to target keys), target])`` from LeRobot: count-weighted pooled
    mean/std, min over mins and max over maxes (the union of ranges), restricted to ``keys``; stats missing
    from a dataset's ``meta/stats.json`` are filled by :func:`_domain_stats`. Camera mean/std
    are then replaced by ImageNet's when ``use_imagenet_stats`` (as LeRobot's ``make_dataset`` does).
    """
    from lerobot.datasets.compute_stats import aggregate_stats
    from lerobot.utils.constants import IMAGENET_STATS

    inv = {v: k for k, v in inputs.camera_map.items()}
    src_own = _domain_stats(inputs.src_meta, inputs.src_root, [inv.get(k, k) for k in keys])
    src_stats = {k: src_own[inv.get(k, k)] for k in keys}
    tgt_stats = _domain_stats(inputs.tgt_meta, inputs.tgt_root, keys)
    stats = aggregate_stats([src_stats, tgt_stats])
    if use_imagenet_stats:
        for k in keys:
            if k.startswith(IMG_PREFIX):
                for name, val in IMAGENET_STATS.items():
                    stats[k][name] = np.asarray(val, dtype=np.float32)
    return {k: {s: torch.as_tensor(np.asarray(v), dtype=torch.float32) if s != "count" else np.asarray(v)
                for s, v in d.items()} for k, d in stats.items()}
