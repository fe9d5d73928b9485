"""The DP+OT co-training loop (single process or ``accelerate launch``, DDP), in LeRobot's ``lerobot_train`` shape.

:func:`build_run` checks the inputs and builds everything once (a :class:`TrainRun`: policy, optimizer,
scheduler, sampler, loaders, OT loss, sinks, evaluator); :func:`train_step` is one update (LeRobot's
``update_policy`` plus the OT term); :func:`train` is the short loop around it with the log / eval / plan /
save helpers. Per step (``B = batch_size`` per process, ``n_src = round(ot.batch_ratio * B)`` source items
then ``B - n_src`` target items, see :mod:`dpot.data.cotrain`):

    out   = hook.forward(policy, normalize(batch), draws)   # one forward pass (dpot.policy: diffusion, act)
    L     = out.loss                                # the policy's own BC loss over the whole batch (both domains)
          + lambda_ot * <pi*, C(out.embeds, out.action)>   # OTAlignmentLoss on the all-gathered batch
                                                           # (ot.method=mmd: lambda_ot * sum_k w_k E_k instead)
    optimizer.step(); scheduler.step(); lr = optimizer.param_groups[0]["lr"]     # logged after the step

Only the items flagged ``ot_pair`` enter the alignment term (all of them unless ``ot.paired_region``). With
``ot.pair_batch_size`` P > 0 the batch carries P (source, target) pairs per process after the BC items: the BC
loss is over the BC items, the pair items pass through the image encoder only (``hook.encode``) and alone make
the OT term (the fork's separate OT batch).

The step's random draws (diffusion noise and timesteps; ACT's latent noise and dropout seed) come from a
generator seeded by ``(seed, step)`` for the global batch (each rank takes its slice: ``hook.step_draws``), and
the data order is a function of ``(seed, step)``: a resumed run and an N-process run
replay the same numbers. Metrics (docs/architecture.md, "Contracts") are averaged over the ``log_freq`` window
(``train/lr`` is the last post-step value; ``train/ot_skipped`` and ``train/ot_sinkhorn_maxed`` are counts in the
window) and averaged across processes. Besides metrics the run records ``ot_terms.json`` and plan snapshots
(:mod:`dpot.train.ot_records`).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dpot import metric_names as mn
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
from dpot.ot.loss import DomainFeatures
from dpot.policy import PolicyHook, get_hook
from dpot.train import checkpoint as ckpt_mod
from dpot.train.distributed import gather_with_grad, valid_share
from dpot.train.inputs import RunInputs, check_inputs, combined_stats
from dpot.train.offline_eval import OfflineEvaluator
from dpot.train.ot_records import plan_due, plan_snapshot, save_plan_snapshot
from dpot.train.sinks import Sinks, TensorBoardSink, WandbSink

log = logging.getLogger(__name__)
META_KEYS = ("domain", "phase", "frame_index", "episode_index", "ot_pair")
RAW_PREFIX = "raw/"  # meta key prefix of the unnormalized copies of OT labels (prepare_batch)
SUM_KEYS = ("train/ot_skipped", "train/ot_sinkhorn_maxed")
LAST_KEYS = ("train/lr",)


class TrainStep(nn.Module):
    """The module DDP wraps: ``forward(batch, draws)`` -> the policy hook's step output as a dict
    (``loss``, ``per_item``, ``embeds``, ``action``, ``extras``: :class:`dpot.policy.PolicyStepOutput`).

    With an OT pair batch (``n_bc`` set: the batch's first ``n_bc`` rows are the BC batch, the rest the pair rows)
    the BC forward sees the BC rows only and the pair rows go through the image encoder alone
    (:meth:`PolicyHook.encode`): their features are ``pair_embeds``, in the same pass DDP sees."""

    def __init__(self, policy, hook: PolicyHook, n_bc: int | None = None):
        super().__init__()
        self.policy = policy
        self.hook = hook
        self.n_bc = n_bc

    def forward(self, batch, draws):
        if self.n_bc is None:
            return self.hook.forward(self.policy, batch, draws).as_dict()
        bc, pairs = split_rows(batch, self.n_bc)
        out = self.hook.forward(self.policy, bc, draws).as_dict()
        out["pair_embeds"] = self.hook.encode(self.policy, pairs)
        return out


def split_rows(batch: dict, n: int) -> tuple[dict, dict]:
    """``(first n rows, the rest)`` of every tensor of a batch dict (other values go to both)."""
    head, tail = {}, {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor) and v.ndim > 0:
            head[k], tail[k] = v[:n], v[n:]
        else:
            head[k] = tail[k] = v
    return head, tail


class MetricWindow:
    """Running sums of per-step metrics between two log steps (state saved in checkpoints for exact resume)."""

    def __init__(self, state: dict | None = None):
        self.sums: dict[str, float] = dict((state or {}).get("sums", {}))
        self.counts: dict[str, int] = dict((state or {}).get("counts", {}))
        self.last: dict[str, float] = dict((state or {}).get("last", {}))

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            if k in LAST_KEYS:
                self.last[k] = float(v)
            else:
                self.sums[k] = self.sums.get(k, 0.0) + float(v)
                self.counts[k] = self.counts.get(k, 0) + 1

    def result(self) -> dict[str, float]:
        out = {k: (s if k in SUM_KEYS else s / max(self.counts[k], 1)) for k, s in self.sums.items()}
        out.update(self.last)
        return out

    def reset(self) -> None:
        self.sums, self.counts, self.last = {}, {}, {}

    def state_dict(self) -> dict:
        return {"sums": self.sums, "counts": self.counts, "last": self.last}


@dataclass
class TrainRun:
    """Everything a run needs, built once by :func:`build_run` (``step_module``/``optimizer`` are prepared)."""

    cfg: object
    accelerator: object
    out_dir: Path
    policy: nn.Module
    step_module: nn.Module
    optimizer: object
    scheduler: object
    preprocessor: object
    postprocessor: object
    sampler: CoTrainBatchSampler
    loader: torch.utils.data.DataLoader
    evaluator: OfflineEvaluator | None
    sinks: Sinks
    ot_loss_fn: nn.Module  # dpot.ot.make_alignment_loss: OTAlignmentLoss (uot) or MMDAlignmentLoss (mmd)
    gather_group: object
    window: MetricWindow
    image_keys: list[str]
    start_step: int
    seed: int
    use_ot: bool
    grad_clip: float
    params: list[torch.nn.Parameter]
    hook: PolicyHook  # dpot.policy.get_hook(policy.type): the policy's loss, features, draws and logged metrics

    @property
    def main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    @property
    def world(self) -> int:
        return int(self.accelerator.num_processes)

    @property
    def rank(self) -> int:
        return int(self.accelerator.process_index)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def n_src(self) -> int:
        return self.sampler.n_src

    @property
    def label_inputs(self) -> set[tuple[str, bool]]:
        """``(key, normalized)`` of every label the OT terms read (``OTFeatureConfig.label_inputs``)."""
        return set().union(*(f.label_inputs() for f in self.cfg.ot.features)) if self.use_ot else set()

    @property
    def raw_label_keys(self) -> tuple[str, ...]:
        """Batch keys whose unnormalized copy :func:`prepare_batch` keeps (labels in raw units)."""
        return tuple(sorted(k for k, normalized in self.label_inputs if not normalized))

    @property
    def n_tgt(self) -> int:
        return self.sampler.n_tgt

    @property
    def n_pair(self) -> int:
        """Pairs per process in the separate OT batch (``ot.pair_batch_size``; 0 = none)."""
        return self.sampler.n_pair

    def ot_rows(self) -> tuple[slice, slice, slice | None, slice | None]:
        """``(source rows, target rows)`` of the local batch that enter the OT term, then the same rows of the
        ``pair_embeds`` output (None: the embeddings are ``embeds``, indexed like the batch)."""
        nb = self.n_src + self.n_tgt
        if not self.n_pair:
            return slice(0, self.n_src), slice(self.n_src, nb), None, None
        p = self.n_pair
        return slice(nb, nb + p), slice(nb + p, nb + 2 * p), slice(0, p), slice(p, 2 * p)


def resolve_optim(cfg) -> None:
    """Apply LeRobot's policy presets when ``use_policy_training_preset`` (else keep the explicit
    optimizer/scheduler, which ``dpot.config.validate_config`` has checked are both given)."""
    if cfg.use_policy_training_preset:
        cfg.optimizer = cfg.policy.get_optimizer_preset()
        cfg.scheduler = cfg.policy.get_scheduler_preset()


def _default_output_dir(cfg) -> Path:
    now = dt.datetime.now()
    return Path("outputs/train") / now.strftime("%Y-%m-%d") / f"{now:%H-%M-%S}_{cfg.job_name or 'dpot'}"


def prepare_batch(raw: dict, preprocessor, image_keys: list[str],
                  raw_keys: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """Split a collated loader batch into the normalized policy batch and its per-item meta (``META_KEYS``, plus
    ``raw/<key>``: an unnormalized copy of each of ``raw_keys``, for OT label terms in raw units).

    Mutates ``raw`` (pass a copy to keep it): uint8 images become float in [0, 1] before the preprocessor.
    """
    meta = {k: raw.pop(k) for k in META_KEYS if k in raw}
    meta.update({f"{RAW_PREFIX}{k}": raw[k].clone() for k in raw_keys})
    for k in image_keys:
        if raw[k].dtype == torch.uint8:
            raw[k] = raw[k].float() / 255.0
    return preprocessor(raw), meta


def _prepare_eval_batch(raw: dict, preprocessor, image_keys: list[str]) -> dict:
    return prepare_batch(dict(raw), preprocessor, image_keys)[0]


# ------------------------------------------------------------------------------------------ building the run


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


def _image_transforms(cfg):
    """LeRobot's ``ImageTransforms`` of ``dataset.image_transforms`` when enabled (as ``make_dataset``), else None."""
    if not cfg.dataset.image_transforms.enable:
        return None
    from lerobot.transforms import ImageTransforms

    return ImageTransforms(cfg.dataset.image_transforms)


def _open_dataset(cfg, ds_cfg, root, meta):
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
    from accelerate.utils import set_seed
    from lerobot.optim.factory import make_optimizer_and_scheduler
    from lerobot.policies.factory import make_policy, make_pre_post_processors

    from dpot.config import save_train_config
    from dpot.ot import make_alignment_loss

    hook = get_hook(cfg.policy.type)  # an unsupported policy.type: one error line naming the supported ones
    inputs, out_dir, resume_ckpt = check_run(cfg)
    if accelerator is None:
        accelerator = make_accelerator(cfg)
    main = accelerator.is_main_process
    world, rank = accelerator.num_processes, accelerator.process_index
    cfg.policy.device = accelerator.device.type
    if cfg.seed is not None:
        set_seed(cfg.seed)  # same init on every rank (DDP also broadcasts)
    seed = int(cfg.seed or 0)

    # data: held-out target episodes, policy + normalization, the co-training sampler
    tgt_meta, src_meta = inputs.tgt_meta, inputs.src_meta
    tgt_eps_all = [int(e) for e in tgt_meta.episodes["episode_index"]]
    if cfg.eval.val_episodes is None:
        cfg.eval.val_episodes = split_episodes(tgt_eps_all, cfg.eval.val_fraction, seed)
    val_eps = sorted(int(e) for e in cfg.eval.val_episodes)
    train_eps = [e for e in tgt_eps_all if e not in set(val_eps)]

    policy = make_policy(cfg.policy, ds_meta=tgt_meta)
    image_keys = list(policy.config.image_features)
    keys = image_keys + ["observation.state", "action"]
    if policy.config.env_state_feature:
        keys.append("observation.environment_state")
    stats = combined_stats(inputs, keys, cfg.dataset.use_imagenet_stats)
    preprocessor, postprocessor = make_pre_post_processors(cfg.policy, dataset_stats=stats)

    tgt_ds = _open_dataset(cfg, cfg.dataset, inputs.tgt_root, tgt_meta)
    src_ds = _open_dataset(cfg, cfg.source_dataset, inputs.src_root, src_meta)
    src_table = EpisodeTable.from_meta(src_meta)
    tgt_table = EpisodeTable.from_meta(tgt_meta).subset(train_eps)
    all_tgt = EpisodeTable.from_meta(tgt_meta)
    pair_info = pair_info_for_run(  # ot.pair_info_path (validated here, before anything is written) or own DTW
        cfg.ot, src_lengths=dict(zip(src_table.episode.tolist(), src_table.length.tolist())),
        tgt_lengths=dict(zip(all_tgt.episode.tolist(), all_tgt.length.tolist())),
        trajectories=lambda: (_trajectories(tgt_ds, train_eps), _trajectories(src_ds, src_table.episode.tolist())),
        cache_path=out_dir / rundir.DTW_PAIRS_FILE if main else None)
    # frames delivered at the policy's resize_shape (resized once, when a video cache is built): the policy's own
    # Resize then has nothing left to do and a 480x640 batch moves 25x fewer bytes (within 0.5/255 of resizing
    # inside the policy; a no-op when the data already has that size)
    transforms = _image_transforms(cfg)
    dataset = CoTrainDataset(src_ds, tgt_ds, camera_map=inputs.camera_map, keys=keys,
                             image_size=delivery_size(policy.config, transforms), image_transforms=transforms)
    dtw = None
    if cfg.ot.heuristic and cfg.ot.alignment == "dtw":
        dtw = DTWAlignment(_trajectories(tgt_ds, train_eps), _trajectories(src_ds, src_table.episode.tolist()),
                           seed=seed, cache_path=out_dir / rundir.DTW_CACHE_FILE if main else None)
    sampler = CoTrainBatchSampler(src_table, tgt_table, batch_size=cfg.batch_size, batch_ratio=cfg.ot.batch_ratio,
                                  seed=seed, heuristic=cfg.ot.heuristic, window_size=cfg.ot.window_size,
                                  drop_n_last_frames=int(getattr(policy.config, "drop_n_last_frames", 0) or 0),
                                  num_processes=world, rank=rank, alignment=cfg.ot.alignment, dtw=dtw,
                                  paired_region=cfg.ot.paired_region, src_regions=inputs.src_regions,
                                  tgt_regions=inputs.tgt_regions, pair_info=pair_info, sharpness=cfg.ot.sharpness,
                                  topk_src_episodes=cfg.ot.topk_src_episodes, cutoff=cfg.ot.cutoff,
                                  no_window=cfg.ot.no_window,
                                  pair_batch_size=cfg.ot.pair_batch_size if cfg.ot.lambda_ot > 0 else 0)

    # optimizer, resume
    optimizer, scheduler = make_optimizer_and_scheduler(cfg, policy)
    start_step, dpot_state = 0, {}
    if resume_ckpt is not None:
        start_step, dpot_state = ckpt_mod.load_checkpoint(resume_ckpt, policy=policy, optimizer=optimizer,
                                                          scheduler=scheduler)
        sampler.load_state_dict(dpot_state.get("sampler", {"step": start_step}))
    window = MetricWindow(dpot_state.get("window"))
    ot_loss_fn = make_alignment_loss(cfg.ot, cameras=image_keys)  # ot.method: uot | mmd
    ot_terms = ot_loss_fn.term_kinds

    # outputs (first writes)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_train_config(cfg, rundir.config_path(out_dir))
        rundir.write_terms(out_dir, ot_terms)
        if resume_ckpt is not None:
            truncate_metrics(out_dir, start_step)
    accelerator.wait_for_everyone()
    sinks = _make_sinks(cfg, out_dir, main, ot_terms)

    loader_kwargs = {}
    if cfg.num_workers > 0:
        loader_kwargs = {"prefetch_factor": cfg.prefetch_factor,
                         "multiprocessing_context": cfg.dataloader_multiprocessing_context}
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers,
                                         pin_memory=accelerator.device.type == "cuda", **loader_kwargs)
    evaluator = None
    if main and cfg.eval_freq > 0 and val_eps:
        vt = EpisodeTable.from_meta(tgt_meta).subset(val_eps)
        vb = val_batches(vt, n_batches=cfg.eval.n_batches, batch_size=cfg.batch_size, seed=seed)
        with dataset.without_transforms():  # held-out batches unaugmented, as LeRobot's val set
            raw_batches = list(torch.utils.data.DataLoader(dataset, batch_sampler=vb, num_workers=0))
        evaluator = OfflineEvaluator(raw_batches, functools.partial(_prepare_eval_batch, preprocessor=preprocessor,
                                                                    image_keys=image_keys), seed=seed,
                                     predict=hook.predict_chunk)

    n_bc = sampler.n_src + sampler.n_tgt if sampler.n_pair else None
    step_module, optimizer = accelerator.prepare(TrainStep(policy, hook, n_bc), optimizer)
    gather_group = None
    if world > 1:
        import torch.distributed as dist

        gather_group = dist.new_group(backend="gloo" if accelerator.device.type == "cpu" else None)
    return TrainRun(
        cfg=cfg, accelerator=accelerator, out_dir=out_dir, policy=policy, step_module=step_module,
        optimizer=optimizer, scheduler=scheduler, preprocessor=preprocessor, postprocessor=postprocessor,
        sampler=sampler, loader=loader, evaluator=evaluator, sinks=sinks, ot_loss_fn=ot_loss_fn,
        gather_group=gather_group, window=window, image_keys=image_keys, start_step=start_step, seed=seed,
        use_ot=cfg.ot.lambda_ot > 0 and bool(cfg.ot.features),
        grad_clip=float(getattr(cfg.optimizer, "grad_clip_norm", 0.0) or 0.0),
        params=[p for p in policy.parameters() if p.requires_grad], hook=hook)


# ------------------------------------------------------------------------------------------ one update


def _gather(x: torch.Tensor, run: TrainRun) -> torch.Tensor:
    return gather_with_grad(x, run.gather_group)


def domain_features(run: TrainRun, out: dict, meta: dict, sl: slice, batch: dict | None = None,
                    pair_sl: slice | None = None):
    """One domain's OT features (``sl`` = its rows of the local batch), all-gathered over processes.

    Labels (detached) are what the OT feature kinds ask for (``OTFeatureConfig.label_inputs``): the normalized
    action chunk and the normalized ``batch`` tensors of other keys, or the raw copies of
    :func:`prepare_batch`; ``mask`` is the items' ``ot_pair`` flag (None when the batch has none): the loss uses
    only the masked-in rows. ``pair_sl``: the rows are OT pair rows, their embeddings ``out["pair_embeds"]
    [pair_sl]`` (else ``out["embeds"][sl]``).
    """
    mask = None
    if "ot_pair" in meta:
        mask = _gather(meta["ot_pair"][sl].to(run.device, torch.uint8), run).bool()
    embeds = ({k: v[sl] for k, v in out["embeds"].items()} if pair_sl is None
              else {k: v[pair_sl] for k, v in out["pair_embeds"].items()})
    action = out["action"][sl] if pair_sl is None else batch["action"][sl]  # the pair rows skip the BC forward
    labels = {"action": _gather(action.detach(), run)}
    raw_labels = {}
    for key, normalized in sorted(run.label_inputs):
        if normalized and key not in labels:
            labels[key] = _gather(batch[key][sl].detach(), run)
        elif not normalized:
            raw_labels[key] = _gather(meta[f"{RAW_PREFIX}{key}"][sl].to(run.device), run)
    return DomainFeatures(embeds={k: _gather(v, run) for k, v in embeds.items()}, labels=labels,
                          phase=_gather(meta["phase"][sl].to(run.device), run), mask=mask, raw_labels=raw_labels)


def _snapshot(run: TrainRun, res, src, tgt, meta: dict) -> dict[str, np.ndarray] | None:
    """The plan snapshot arrays of this step (collectives on every rank; arrays on the main process only)."""
    ep = meta["episode_index"].to(run.device)
    src_rows, tgt_rows, _, _ = run.ot_rows()
    episodes = torch.cat([_gather(ep[src_rows], run), _gather(ep[tgt_rows], run)])
    if not run.main:
        return None
    gmeta = {"phase": torch.cat([src.phase, tgt.phase]), "episode_index": episodes}
    if src.mask is not None and tgt.mask is not None:
        gmeta["ot_pair"] = torch.cat([src.mask, tgt.mask])
    return plan_snapshot(res, gmeta, len(src.phase))


def train_step(run: TrainRun, batch: dict, meta: dict, step: int, *, keep_plan: bool = False
               ) -> tuple[dict[str, float], dict[str, np.ndarray] | None]:
    """One update of the run's policy (LeRobot's ``update_policy`` plus the OT term) for the step numbered ``step``
    (0-based: it seeds the noise). Forward, ``loss = bc + ot``, backward, grad clip, optimizer and scheduler step.

    Returns ``(metrics, plan snapshot arrays or None)``: the ``train/*`` metrics of this step (``train/lr``
    after the scheduler step; ``train/dataloading_s`` is the caller's), and the snapshot when ``keep_plan``.
    """
    t0 = time.perf_counter()
    acc = run.accelerator
    n_src, n_tgt = run.n_src, run.n_tgt
    draws = run.hook.step_draws(run.policy.config, run.seed, step, (n_src, n_tgt, run.world, run.rank))
    if run.world > 1 and run.hook.pad_normalized(run.policy.config):
        draws["valid_share"] = valid_share(batch["action_is_pad"][:n_src + n_tgt], run.gather_group)
    with acc.autocast():
        out = run.step_module(batch, {k: v.to(run.device) for k, v in draws.items()})
    bc = out["loss"]
    loss = bc
    metrics: dict[str, float] = {}
    snapshot = src = tgt = res = None
    if run.use_ot:
        src_rows, tgt_rows, src_pairs, tgt_pairs = run.ot_rows()
        src = domain_features(run, out, meta, src_rows, batch, src_pairs)
        tgt = domain_features(run, out, meta, tgt_rows, batch, tgt_pairs)
        res = run.ot_loss_fn(src, tgt)
        loss = loss + res.loss
        metrics.update({f"train/{k}": v for k, v in res.metrics.items()})
    else:
        metrics.update({mn.train(mn.OT_LOSS): 0.0, mn.train(mn.OT_LOSS_SCALED): 0.0})
    acc.backward(loss)
    if run.grad_clip > 0:
        gn = acc.clip_grad_norm_(run.params, run.grad_clip)
    else:
        gn = torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in run.params if p.grad is not None]))
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.scheduler is not None:
        run.scheduler.step()
    if run.device.type == "cuda":  # kernels run asynchronously: wait for them, or update_s undercounts the step
        torch.cuda.synchronize(run.device)  # (the float() of the metrics below would wait anyway: no extra cost)
    update_s = time.perf_counter() - t0
    if run.use_ot and keep_plan:  # after the update, outside train/update_s (the features keep their values)
        snapshot = _snapshot(run, res, src, tgt, meta)
    per_item = out["per_item"].detach()
    metrics.update({
        "train/loss": float(loss.detach()), "train/bc_loss": float(bc.detach()),
        "train/bc_loss_src": float(per_item[:n_src].mean()),
        "train/bc_loss_tgt": float(per_item[n_src:n_src + n_tgt].mean()),
        **run.hook.log_metrics(out), "train/grad_norm": float(gn),
        "train/lr": float(run.optimizer.param_groups[0]["lr"]),
        "train/update_s": update_s,
    })
    return metrics, snapshot


# ------------------------------------------------------------------------------------------ log / eval / save


def log_window(run: TrainRun, step: int, bar) -> None:
    """Reduce the open metric window over processes, send it to the sinks (main process) and reset it."""
    logged = _reduce(run.accelerator, run.window.result())
    run.window.reset()
    if run.main:
        run.sinks.log(step, logged)
        bar.set_postfix(loss=f"{logged['train/loss']:.4f}", lr=f"{logged['train/lr']:.2e}",
                        ot=f"{logged.get(mn.train(mn.OT_LOSS_SCALED), 0.0):.2e}")


def evaluate(run: TrainRun, step: int) -> dict[str, float]:
    """Offline evaluation on the held-out target batches (main process), logged at ``step``."""
    res = run.evaluator(run.policy)
    run.sinks.log(step, res)
    log.info("step %d: eval/offline_eval/avg_loss=%.4f (%.1fs)", step, res["eval/offline_eval/avg_loss"],
             res["eval/offline_eval/eval_s"])
    return res


def log_domain_probe(run: TrainRun, step: int) -> dict[str, float]:
    """The domain probe (:func:`dpot.train.domain_probe.domain_probe`) of the current policy on the run's own data
    (main process), logged at ``step`` as ``eval/domain_probe/<camera>`` (held-out accuracy) with its interval's
    ends (``.../<camera>_lo``, ``_hi``). Eval mode, no gradient and no random draw: training goes on unchanged."""
    from dpot.train.domain_probe import domain_probe

    cfg = run.cfg
    res = domain_probe(run.policy, run.hook, run.loader.dataset, run.sampler.src, run.sampler.tgt,
                       functools.partial(_prepare_eval_batch, preprocessor=run.preprocessor,
                                         image_keys=run.image_keys),
                       n=cfg.eval.domain_probe_frames, seed=run.seed, device=run.device)
    out = {}
    for cam, r in res.items():
        out[mn.probe(cam)] = r.accuracy
        out[mn.probe(cam) + "_lo"], out[mn.probe(cam) + "_hi"] = r.ci95
    run.sinks.log(step, out)
    return out


def _probe_due(cfg, step: int) -> bool:
    freq = cfg.eval.domain_probe_freq
    return freq > 0 and (step % freq == 0 or step == cfg.steps)


def save(run: TrainRun, step: int) -> None:
    """Checkpoint ``step`` (main process writes; every process waits before and after)."""
    acc = run.accelerator
    acc.wait_for_everyone()
    if run.main:
        ckpt_mod.save_checkpoint(
            run.out_dir, step, cfg=run.cfg, policy=acc.unwrap_model(run.step_module).policy,
            optimizer=run.optimizer, scheduler=run.scheduler, preprocessor=run.preprocessor,
            postprocessor=run.postprocessor, num_processes=run.world,
            dpot_state={"sampler": {"step": step}, "window": run.window.state_dict(), "step": step})
    acc.wait_for_everyone()


def _save_due(cfg, step: int) -> bool:
    return cfg.save_checkpoint and ((cfg.save_freq > 0 and step % cfg.save_freq == 0) or step == cfg.steps)


# ------------------------------------------------------------------------------------------ the loop


def train(cfg, *, accelerator=None) -> Path:
    """Run (or resume) a co-training run: :func:`build_run`, then :func:`train_step` up to ``cfg.steps`` with
    logging, offline evaluation, plan snapshots and checkpoints at their periods.

    All input checks (datasets, cameras, dims, resume checkpoint, output_dir) happen before anything is written.

    Args:
        cfg: a validated ``dpot.config.DpotTrainConfig`` (``cfg.resume=True`` continues from the last checkpoint).
        accelerator: an ``accelerate.Accelerator`` (None: one made from ``cfg``; under ``accelerate launch``
            it joins the launched processes).

    Returns:
        The run directory (``cfg.output_dir``): ``train_config.json``, ``metrics.jsonl``, ``checkpoints/``, ...
        (docs/architecture.md, "Contracts").

    Raises:
        UserError: a bad input, before anything is written.
    """
    from tqdm.auto import tqdm

    run = build_run(cfg, accelerator=accelerator)
    step = run.start_step
    if run.main:
        log.info("dpot train: %d process(es), %d source + %d target items per process (global batch %d), OT %s, "
                 "%s -> %s", run.world, run.n_src, run.n_tgt, run.world * cfg.batch_size,
                 "on" if run.use_ot else "off",
                 f"resuming at step {run.start_step}" if run.start_step else "from scratch", run.out_dir)
    data_iter = iter(run.loader)
    bar = tqdm(total=cfg.steps, initial=step, disable=not run.main, dynamic_ncols=True, desc="dpot train")
    run.policy.train()
    if run.main and step == 0 and _probe_due(cfg, 0):
        log_domain_probe(run, 0)
    try:
        while step < cfg.steps:
            t0 = time.perf_counter()
            batch, meta = prepare_batch(next(data_iter), run.preprocessor, run.image_keys, run.raw_label_keys)
            data_s = time.perf_counter() - t0
            keep_plan = plan_due(step + 1, cfg.log_freq, cfg.ot.plan_log_every, run.use_ot)
            metrics, snapshot = train_step(run, batch, meta, step, keep_plan=keep_plan)
            step += 1
            metrics["train/dataloading_s"] = data_s
            run.window.add(metrics)
            bar.update(1)
            if step % cfg.log_freq == 0 or step == cfg.steps:
                log_window(run, step, bar)
            if snapshot is not None:
                save_plan_snapshot(run.out_dir, step, snapshot)
            if run.evaluator is not None and (step % cfg.eval_freq == 0 or step == cfg.steps):
                evaluate(run, step)
            if run.main and _probe_due(cfg, step):
                log_domain_probe(run, step)
            if _save_due(cfg, step):
                save(run, step)
    finally:
        bar.close()
        run.sinks.close()
    run.accelerator.wait_for_everyone()
    if run.main:
        log.info("dpot train: done (%d steps). metrics: %s  %s", step, rundir.metrics_path(run.out_dir),
                 _checkpoint_note(run.out_dir))
    run.accelerator.end_training()
    return run.out_dir


def _checkpoint_note(out_dir: Path) -> str:
    """``checkpoint: <run>/checkpoints/last/pretrained_model`` when the run holds one, else says there is none
    (``save_checkpoint=false``): the end line names only what exists."""
    model = rundir.last_link(out_dir) / rundir.MODEL_DIR
    return f"checkpoint: {model}" if model.is_dir() else "no checkpoint saved"


def _reduce(accelerator, metrics: dict[str, float]) -> dict[str, float]:
    """Mean of each metric over processes; identity with one process. The window counts (``SUM_KEYS``) are
    averaged too: every rank solves the same OT problem on the all-gathered batch, so each holds the whole count."""
    if accelerator.num_processes == 1:
        return metrics
    keys = sorted(metrics)
    vals = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    vals = accelerator.reduce(vals, reduction="sum")
    return {k: v / accelerator.num_processes for k, v in zip(keys, vals.tolist(), strict=True)}


def _trajectories(ds, episodes: list[int]) -> dict[int, np.ndarray]:
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


__all__ = ["train", "build_run", "train_step", "TrainRun", "TrainStep", "MetricWindow", "resolve_optim",
           "prepare_batch"]
