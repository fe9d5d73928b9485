"""Building a training run (:func:`build_run`): the input checks, the policy and its processors, the two datasets
and the co-training sampler, the optimizer (and resume), the run's first files, the loaders and the evaluator.

Nothing is written before every input check has passed (:func:`check_run`, the pair file in :func:`build_data`).
The order matters for exact replay: the seed is set right before the policy is made (:func:`build_policy`, which
``dpot probe`` calls too, so step 0 of a probe is the run's initial weights); every other random stream has its own
seed (:mod:`dpot.data.seeds`).
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dpot import rundir
from dpot.atomic import check_output_location
from dpot.data.cotrain import (
    CoTrainBatchSampler,
    CoTrainDataset,
    DTWAlignment,
    EpisodeTable,
    split_episodes,
    val_batches,
)
from dpot.data.pairs import pair_info_for_run
from dpot.errors import UserError
from dpot.metrics_log import JsonlSink, truncate_metrics
from dpot.policy import get_hook
from dpot.train import checkpoint as ckpt_mod
from dpot.train.batches import prepare_eval_batch
from dpot.train.inputs import RunInputs, check_inputs, combined_stats
from dpot.train.offline_eval import OfflineEvaluator
from dpot.train.run import MetricWindow, TrainRun, TrainStep
from dpot.train.sinks import Sinks, TensorBoardSink, WandbSink

__all__ = ["build_run", "build_policy", "build_data", "check_run", "make_accelerator", "delivery_size",
           "image_transforms", "open_dataset", "open_cotrain_dataset", "resolve_optim", "trajectories",
           "PolicyParts", "RunData"]


def resolve_optim(cfg) -> None:
    """Apply LeRobot's policy presets when ``use_policy_training_preset`` (else keep the explicit
    optimizer/scheduler, which ``dpot.config.validate_config`` has checked are both given)."""
    if cfg.use_policy_training_preset:
        cfg.optimizer = cfg.policy.get_optimizer_preset()
        cfg.scheduler = cfg.policy.get_scheduler_preset()


def _default_output_dir(cfg) -> Path:
    now = dt.datetime.now()
    return Path("outputs/train") / now.strftime("%Y-%m-%d") / f"{now:%H-%M-%S}_{cfg.job_name or 'dpot'}"


def check_run(cfg) -> tuple[RunInputs, Path, Path | None]:
    """All input checks before anything is written: ``(inputs, output_dir, checkpoint to resume or None)``."""
    if cfg.output_dir is None:
        cfg.output_dir = _default_output_dir(cfg)
    out_dir = check_output_location(cfg.output_dir, "output_dir", directory=True)   # before any other work
    inputs = check_inputs(cfg)
    resume_ckpt = None
    if cfg.resume:
        resume_ckpt = ckpt_mod.resume_checkpoint(out_dir)
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"output_dir: {out_dir} already exists and is not empty; pass --resume=true to continue "
                        "that run or choose a new output_dir")
    if cfg.policy.pretrained_path:
        raise UserError("policy.pretrained_path: fine-tuning from a pretrained policy is not supported by dpot "
                        "train yet; remove it")
    resolve_optim(cfg)
    return inputs, out_dir, resume_ckpt


def make_accelerator(cfg):
    """LeRobot's accelerator settings (the scheduler is stepped by hand; bf16 when ``policy.use_amp``)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    return Accelerator(step_scheduler_with_optimizer=False, cpu=str(cfg.policy.device) == "cpu",
                       mixed_precision=("bf16" if cfg.policy.use_amp else None),
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])


def delivery_size(policy_config, image_transforms) -> tuple[int, int] | None:
    """The ``(h, w)`` the data pipeline delivers frames at: the policy's ``resize_shape`` (resized once, the policy's
    own Resize then a no-op), or None (the dataset's size) when there is none or when ``image_transforms`` are on:
    LeRobot applies them to the stored frames and the policy resizes after, so dpot does the same."""
    resize = getattr(policy_config, "resize_shape", None)
    return tuple(int(x) for x in resize) if resize and image_transforms is None else None


def image_transforms(cfg):
    """LeRobot's ``ImageTransforms`` of ``dataset.image_transforms`` when enabled (as ``make_dataset``), else None."""
    if not cfg.dataset.image_transforms.enable:
        return None
    from lerobot.transforms import ImageTransforms

    return ImageTransforms(cfg.dataset.image_transforms)


def open_dataset(cfg, ds_cfg, root, meta):
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(ds_cfg.repo_id, root=root, delta_timestamps=resolve_delta_timestamps(cfg.policy, meta),
                          video_backend=ds_cfg.video_backend, return_uint8=True, tolerance_s=cfg.tolerance_s)


def _make_sinks(cfg, out_dir: Path, main: bool, ot_terms: dict[str, str]) -> Sinks:
    sinks = Sinks([])
    if main:
        sinks.sinks.append(JsonlSink(rundir.metrics_path(out_dir)))
        if cfg.wandb.enable:
            sinks.sinks.append(WandbSink(cfg, extra_config={"dpot_ot_terms": ot_terms}))
        if cfg.tensorboard:
            sinks.sinks.append(TensorBoardSink(out_dir / rundir.TENSORBOARD_DIR))
    return sinks


@dataclass
class PolicyParts:
    """The policy as :func:`build_policy` makes it, with the batch keys it reads and its processors."""

    policy: torch.nn.Module
    image_keys: list[str]
    keys: list[str]
    preprocessor: object
    postprocessor: object


def build_policy(cfg, inputs: RunInputs) -> PolicyParts:
    """The run's initial policy (``set_seed(cfg.seed)`` right before LeRobot's ``make_policy``: the same weights on
    every rank and in every rebuild) and its pre/post-processors on both domains' pooled stats."""
    from accelerate.utils import set_seed
    from lerobot.policies.factory import make_policy, make_pre_post_processors

    if cfg.seed is not None:
        set_seed(cfg.seed)  # same init on every rank (DDP also broadcasts)
    policy = make_policy(cfg.policy, ds_meta=inputs.tgt_meta)
    image_keys = list(policy.config.image_features)
    keys = image_keys + ["observation.state", "action"]
    if policy.config.env_state_feature:
        keys.append("observation.environment_state")
    stats = combined_stats(inputs, keys, cfg.dataset.use_imagenet_stats)
    preprocessor, postprocessor = make_pre_post_processors(cfg.policy, dataset_stats=stats)
    return PolicyParts(policy, image_keys, keys, preprocessor, postprocessor)


def open_cotrain_dataset(cfg, inputs: RunInputs, parts: PolicyParts, transforms=None):
    """``(CoTrainDataset, source LeRobotDataset, target LeRobotDataset)``: frames delivered at the policy's
    ``resize_shape`` (resized once, when a video cache is built: the policy's own Resize then has nothing left to
    do and a 480x640 batch moves 25x fewer bytes, within 0.5/255 of resizing inside the policy)."""
    tgt_ds = open_dataset(cfg, cfg.dataset, inputs.tgt_root, inputs.tgt_meta)
    src_ds = open_dataset(cfg, cfg.source_dataset, inputs.src_root, inputs.src_meta)
    dataset = CoTrainDataset(src_ds, tgt_ds, camera_map=inputs.camera_map, keys=parts.keys,
                             image_size=delivery_size(parts.policy.config, transforms), image_transforms=transforms)
    return dataset, src_ds, tgt_ds


@dataclass
class RunData:
    """The data side of a run: the co-training dataset and sampler, the held-out target episodes."""

    dataset: CoTrainDataset
    sampler: CoTrainBatchSampler
    val_eps: list[int]


def build_data(cfg, inputs: RunInputs, parts: PolicyParts, *, out_dir: Path, main: bool, world: int, rank: int,
               seed: int) -> RunData:
    """Held-out target episodes (``eval.val_episodes``, resolved once and saved), the pairs the run samples from
    (``ot.pair_info_path`` validated here, before anything is written, or dpot's own DTW, cached in the run), the
    co-training dataset and the sampler (:meth:`CoTrainBatchSampler.from_config`)."""
    tgt_meta = inputs.tgt_meta
    tgt_eps_all = [int(e) for e in tgt_meta.episodes["episode_index"]]
    if cfg.eval.val_episodes is None:
        cfg.eval.val_episodes = split_episodes(tgt_eps_all, cfg.eval.val_fraction, seed)
    val_eps = sorted(int(e) for e in cfg.eval.val_episodes)
    train_eps = [e for e in tgt_eps_all if e not in set(val_eps)]
    dataset, src_ds, tgt_ds = open_cotrain_dataset(cfg, inputs, parts, image_transforms(cfg))
    src_table = EpisodeTable.from_meta(inputs.src_meta)
    tgt_table = EpisodeTable.from_meta(tgt_meta).subset(train_eps)
    all_tgt = EpisodeTable.from_meta(tgt_meta)

    def both_trajectories():
        return trajectories(tgt_ds, train_eps), trajectories(src_ds, src_table.episode.tolist())

    pair_info = pair_info_for_run(
        cfg.ot, src_lengths=dict(zip(src_table.episode.tolist(), src_table.length.tolist())),
        tgt_lengths=dict(zip(all_tgt.episode.tolist(), all_tgt.length.tolist())), trajectories=both_trajectories,
        cache_path=out_dir / rundir.DTW_PAIRS_FILE if main else None)
    dtw = None
    if cfg.ot.heuristic and cfg.ot.alignment == "dtw":
        dtw = DTWAlignment(*both_trajectories(), seed=seed,
                           cache_path=out_dir / rundir.DTW_CACHE_FILE if main else None)
    sampler = CoTrainBatchSampler.from_config(
        cfg.ot, src_table, tgt_table, batch_size=cfg.batch_size, seed=seed,
        drop_n_last_frames=int(getattr(parts.policy.config, "drop_n_last_frames", 0) or 0), num_processes=world,
        rank=rank, dtw=dtw, src_regions=inputs.src_regions, tgt_regions=inputs.tgt_regions, pair_info=pair_info)
    return RunData(dataset, sampler, val_eps)


def _write_first_files(cfg, out_dir: Path, ot_terms: dict[str, str], resume_step: int | None) -> None:
    """``train_config.json`` and ``ot_terms.json``; on resume ``metrics.jsonl`` cut back to the checkpoint's step."""
    from dpot.config import save_train_config

    out_dir.mkdir(parents=True, exist_ok=True)
    save_train_config(cfg, rundir.config_path(out_dir))
    rundir.write_terms(out_dir, ot_terms)
    if resume_step is not None:
        truncate_metrics(out_dir, resume_step)


def _loader(cfg, data: RunData, device_type: str) -> torch.utils.data.DataLoader:
    kwargs = {}
    if cfg.num_workers > 0:
        kwargs = {"prefetch_factor": cfg.prefetch_factor,
                  "multiprocessing_context": cfg.dataloader_multiprocessing_context}
    return torch.utils.data.DataLoader(data.dataset, batch_sampler=data.sampler, num_workers=cfg.num_workers,
                                       pin_memory=device_type == "cuda", **kwargs)


def _evaluator(cfg, inputs: RunInputs, parts: PolicyParts, data: RunData, hook, seed: int) -> OfflineEvaluator:
    """The offline evaluator on fixed held-out target batches (unaugmented, as LeRobot's val set)."""
    vt = EpisodeTable.from_meta(inputs.tgt_meta).subset(data.val_eps)
    vb = val_batches(vt, n_batches=cfg.eval.n_batches, batch_size=cfg.batch_size, seed=seed)
    with data.dataset.without_transforms():
        raw_batches = list(torch.utils.data.DataLoader(data.dataset, batch_sampler=vb, num_workers=0))
    prepare = functools.partial(prepare_eval_batch, preprocessor=parts.preprocessor, image_keys=parts.image_keys)
    return OfflineEvaluator(raw_batches, prepare, seed=seed, predict=hook.predict_chunk)


def build_run(cfg, *, accelerator=None) -> TrainRun:
    """Check the inputs (nothing written before they pass), then build the run and write its first files
    (``train_config.json``, ``ot_terms.json``; ``metrics.jsonl`` cut back to the checkpoint on resume).

    Args:
        cfg: a validated ``dpot.config.DpotTrainConfig`` (:func:`dpot.config.load_train_config`).
        accelerator: an ``accelerate.Accelerator`` to train under (None: one made from ``cfg``).

    Returns:
        The :class:`TrainRun` (policy, optimizer and scheduler prepared, sampler, loaders, OT loss, sinks,
        evaluator), positioned at ``start_step`` (the checkpoint's step on resume, else 0).

    Raises:
        UserError: a bad input (datasets, cameras, dims, resume checkpoint, output_dir), before anything is written.
    """
    from lerobot.optim.factory import make_optimizer_and_scheduler

    from dpot.ot import make_alignment_loss

    hook = get_hook(cfg.policy.type)  # an unsupported policy.type: one error line naming the supported ones
    inputs, out_dir, resume_ckpt = check_run(cfg)
    if accelerator is None:
        accelerator = make_accelerator(cfg)
    main = accelerator.is_main_process
    world, rank = accelerator.num_processes, accelerator.process_index
    cfg.policy.device = accelerator.device.type
    seed = int(cfg.seed or 0)
    parts = build_policy(cfg, inputs)
    data = build_data(cfg, inputs, parts, out_dir=out_dir, main=main, world=world, rank=rank, seed=seed)

    optimizer, scheduler = make_optimizer_and_scheduler(cfg, parts.policy)
    start_step, dpot_state = 0, {}
    if resume_ckpt is not None:
        start_step, dpot_state = ckpt_mod.load_checkpoint(resume_ckpt, policy=parts.policy, optimizer=optimizer,
                                                          scheduler=scheduler)
        data.sampler.load_state_dict(dpot_state.get("sampler", {"step": start_step}))
    ot_loss_fn = make_alignment_loss(cfg.ot, cameras=parts.image_keys)  # ot.method: uot | mmd
    if main:
        _write_first_files(cfg, out_dir, ot_loss_fn.term_kinds, start_step if resume_ckpt is not None else None)
    accelerator.wait_for_everyone()
    sinks = _make_sinks(cfg, out_dir, main, ot_loss_fn.term_kinds)
    loader = _loader(cfg, data, accelerator.device.type)
    evaluator = None
    if main and cfg.eval_freq > 0 and data.val_eps:
        evaluator = _evaluator(cfg, inputs, parts, data, hook, seed)
    sampler = data.sampler
    n_bc = sampler.n_src + sampler.n_tgt if sampler.n_pair else None
    step_module, optimizer = accelerator.prepare(TrainStep(parts.policy, hook, n_bc), optimizer)
    gather_group = None
    if world > 1:
        import torch.distributed as dist

        gather_group = dist.new_group(backend="gloo" if accelerator.device.type == "cpu" else None)
    return TrainRun(
        cfg=cfg, accelerator=accelerator, out_dir=out_dir, policy=parts.policy, step_module=step_module,
        optimizer=optimizer, scheduler=scheduler, preprocessor=parts.preprocessor,
        postprocessor=parts.postprocessor, sampler=sampler, loader=loader, evaluator=evaluator, sinks=sinks,
        ot_loss_fn=ot_loss_fn,
        gather_group=gather_group, window=MetricWindow(dpot_state.get("window")), image_keys=parts.image_keys,
        start_step=start_step, seed=seed, use_ot=cfg.ot.lambda_ot > 0 and bool(cfg.ot.features),
        grad_clip=float(getattr(cfg.optimizer, "grad_clip_norm", 0.0) or 0.0),
        params=[p for p in parts.policy.parameters() if p.requires_grad], hook=hook)


def trajectories(ds, episodes: list[int]) -> dict[int, np.ndarray]:
    """Per-episode action trajectories ``[L, A]`` (for DTW), read from the dataset's parquet columns."""
    hf = ds.hf_dataset.with_format("numpy")
    ep = np.asarray(hf["episode_index"])
    act = np.stack(list(hf["action"])).astype(np.float32)
    fi = np.asarray(hf["frame_index"])
    out = {}
    for e in episodes:
        m = ep == e
        out[int(e)] = act[m][np.argsort(fi[m])]
    return out
