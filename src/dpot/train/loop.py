"""The DP+OT co-training loop (single process or ``accelerate launch``, DDP).

Per step (``B = batch_size`` per process, ``n_src = round(ot.batch_ratio * B)`` source items then ``B - n_src``
target items, see :mod:`dpot.data.cotrain`):

    out   = diffusion_loss_with_features(policy, normalize(batch), noise, t)   # one forward pass
    L     = out.loss                                # LeRobot's diffusion loss over the whole batch (both domains)
          + lambda_ot * <pi*, C(out.embeds, out.action)>   # OTAlignmentLoss on the all-gathered batch
    optimizer.step(); scheduler.step(); lr = optimizer.param_groups[0]["lr"]     # logged after the step

Noise and diffusion timesteps come from a generator seeded by ``(seed, step)`` for the global batch (each rank
takes its slice), and the data order is a function of ``(seed, step)``: a resumed run and an N-process run
replay the same numbers. Metrics (docs/architecture.md, "Contracts") are averaged over the ``log_freq`` window (``train/lr`` is the
last post-step value; ``train/ot_skipped`` is the count in the window) and averaged across processes.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dpot.data.cotrain import (
    CoTrainBatchSampler,
    CoTrainDataset,
    DTWAlignment,
    EpisodeTable,
    split_episodes,
    val_batches,
)
from dpot.errors import UserError
from dpot.policy.features import diffusion_loss_with_features
from dpot.train import checkpoint as ckpt_mod
from dpot.train.distributed import gather_with_grad
from dpot.train.inputs import check_inputs, combined_stats
from dpot.train.offline_eval import OfflineEvaluator
from dpot.train.sinks import JsonlSink, Sinks, TensorBoardSink, WandbSink, truncate_jsonl

log = logging.getLogger(__name__)
META_KEYS = ("domain", "phase", "frame_index", "episode_index")
SUM_KEYS = ("train/ot_skipped",)
LAST_KEYS = ("train/lr",)


class TrainStep(nn.Module):
    """The module DDP wraps: ``forward(batch, noise, timesteps)`` -> dict of the training forward's outputs."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy

    def forward(self, batch, noise, timesteps):
        out = diffusion_loss_with_features(self.policy, batch, noise=noise, timesteps=timesteps)
        return {"loss": out.loss, "per_item": out.per_item_loss, "embeds": out.embeds, "action": out.action,
                "x0_hat": out.x0_hat}


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


def resolve_optim(cfg) -> None:
    """Apply LeRobot's policy presets (``use_policy_training_preset``) or keep the explicit optimizer/scheduler."""
    if cfg.use_policy_training_preset:
        cfg.optimizer = cfg.policy.get_optimizer_preset()
        cfg.scheduler = cfg.policy.get_scheduler_preset()
    elif cfg.optimizer is None or cfg.scheduler is None:
        raise UserError("optimizer: use_policy_training_preset=false needs both optimizer and scheduler")


def _step_generator(seed: int, step: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([int(seed), 31337, int(step)]).generate_state(1)[0]))
    return g


def step_noise(seed: int, step: int, n_src: int, n_tgt: int, world: int, rank: int, horizon: int, action_dim: int,
               num_train_timesteps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's diffusion noise ``[B, horizon, A]`` and timesteps ``[B]`` for ``step``, drawn for the global batch."""
    g = _step_generator(seed, step)
    ns, nt = n_src * world, n_tgt * world
    noise = torch.randn(ns + nt, horizon, action_dim, generator=g)
    t = torch.randint(0, num_train_timesteps, (ns + nt,), generator=g)
    sl = lambda x: torch.cat([x[rank * n_src:(rank + 1) * n_src], x[ns + rank * n_tgt:ns + (rank + 1) * n_tgt]])  # noqa: E731
    return sl(noise), sl(t)


def _default_output_dir(cfg) -> Path:
    now = dt.datetime.now()
    return Path("outputs/train") / now.strftime("%Y-%m-%d") / f"{now:%H-%M-%S}_{cfg.job_name or 'dpot'}"


def _uint8_to_float(batch: dict, image_keys: list[str]) -> dict:
    for k in image_keys:
        if batch[k].dtype == torch.uint8:
            batch[k] = batch[k].float() / 255.0
    return batch


def train(cfg, *, accelerator=None) -> Path:
    """Run (or resume) a co-training run described by a ``DpotTrainConfig``. Returns the output directory.

    All input checks (datasets, cameras, dims, resume checkpoint, output_dir) happen before anything is written.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.optim.factory import make_optimizer_and_scheduler
    from lerobot.policies.factory import make_policy, make_pre_post_processors
    from tqdm.auto import tqdm

    from dpot.config import save_train_config
    from dpot.ot.loss import DomainFeatures, OTAlignmentLoss

    # ---------------------------------------------------------------- checks (nothing written yet)
    inputs = check_inputs(cfg)
    if cfg.output_dir is None:
        cfg.output_dir = _default_output_dir(cfg)
    out_dir = Path(cfg.output_dir)
    resume_ckpt = None
    if cfg.resume:
        resume_ckpt = ckpt_mod.last_checkpoint(out_dir)
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"output_dir: {out_dir} already exists and is not empty; pass --resume=true to continue "
                        "that run or choose a new output_dir")
    if cfg.policy.pretrained_path:
        raise UserError("policy.pretrained_path: fine-tuning from a pretrained policy is not supported by dpot "
                        "train yet; remove it")
    resolve_optim(cfg)

    if accelerator is None:
        from accelerate.utils import DistributedDataParallelKwargs

        force_cpu = str(cfg.policy.device) == "cpu"
        accelerator = Accelerator(step_scheduler_with_optimizer=False, cpu=force_cpu,
                                  mixed_precision=("bf16" if cfg.policy.use_amp else None),
                                  kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])
    main = accelerator.is_main_process
    world, rank = accelerator.num_processes, accelerator.process_index
    cfg.policy.device = accelerator.device.type
    if cfg.seed is not None:
        set_seed(cfg.seed)  # same init on every rank (DDP also broadcasts)
    seed = int(cfg.seed or 0)

    # ---------------------------------------------------------------- data
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

    def open_ds(ds_cfg, root, meta):
        return LeRobotDataset(ds_cfg.repo_id, root=root, delta_timestamps=resolve_delta_timestamps(cfg.policy, meta),
                              video_backend=ds_cfg.video_backend, return_uint8=True, tolerance_s=cfg.tolerance_s)

    tgt_ds = open_ds(cfg.dataset, inputs.tgt_root, tgt_meta)
    src_ds = open_ds(cfg.source_dataset, inputs.src_root, src_meta)
    dataset = CoTrainDataset(src_ds, tgt_ds, camera_map=inputs.camera_map, keys=keys)
    src_table = EpisodeTable.from_meta(src_meta)
    tgt_table = EpisodeTable.from_meta(tgt_meta).subset(train_eps)
    dtw = None
    if cfg.ot.heuristic and cfg.ot.alignment == "dtw":
        dtw = DTWAlignment(_trajectories(tgt_ds, train_eps), _trajectories(src_ds, src_table.episode.tolist()),
                           seed=seed, cache_path=out_dir / "dtw_cache.npz" if main else None)
    sampler = CoTrainBatchSampler(src_table, tgt_table, batch_size=cfg.batch_size, batch_ratio=cfg.ot.batch_ratio,
                                  seed=seed, heuristic=cfg.ot.heuristic, window_size=cfg.ot.window_size,
                                  drop_n_last_frames=int(getattr(policy.config, "drop_n_last_frames", 0) or 0),
                                  num_processes=world, rank=rank, alignment=cfg.ot.alignment, dtw=dtw)
    n_src, n_tgt = sampler.n_src, sampler.n_tgt

    # ---------------------------------------------------------------- optimizer, resume
    optimizer, scheduler = make_optimizer_and_scheduler(cfg, policy)
    start_step, dpot_state = 0, {}
    if resume_ckpt is not None:
        start_step, dpot_state = ckpt_mod.load_checkpoint(resume_ckpt, policy=policy, optimizer=optimizer,
                                                          scheduler=scheduler)
        sampler.load_state_dict(dpot_state.get("sampler", {"step": start_step}))
    window = MetricWindow(dpot_state.get("window"))

    # ---------------------------------------------------------------- outputs (first writes)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_train_config(cfg, out_dir / "train_config.json")
        if resume_ckpt is not None:
            truncate_jsonl(out_dir / "metrics.jsonl", start_step)
    accelerator.wait_for_everyone()
    sinks = Sinks([])
    if main:
        sinks.sinks.append(JsonlSink(out_dir / "metrics.jsonl"))
        if cfg.wandb.enable:
            sinks.sinks.append(WandbSink(cfg))
        if cfg.tensorboard:
            sinks.sinks.append(TensorBoardSink(out_dir / "tensorboard"))

    loader_kwargs = {}
    if cfg.num_workers > 0:
        loader_kwargs = {"prefetch_factor": cfg.prefetch_factor,
                         "multiprocessing_context": cfg.dataloader_multiprocessing_context}
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers,
                                         pin_memory=accelerator.device.type == "cuda", **loader_kwargs)

    device = accelerator.device

    def prepare(raw: dict) -> tuple[dict, dict]:
        meta = {k: raw.pop(k) for k in META_KEYS if k in raw}
        raw = _uint8_to_float(raw, image_keys)
        batch = preprocessor(raw)
        return batch, meta

    evaluator = None
    if main and cfg.eval_freq > 0 and val_eps:
        vt = EpisodeTable.from_meta(tgt_meta).subset(val_eps)
        vb = val_batches(vt, n_batches=cfg.eval.n_batches, batch_size=cfg.batch_size, seed=seed)
        eval_loader = torch.utils.data.DataLoader(dataset, batch_sampler=vb, num_workers=0)
        raw_batches = list(eval_loader)
        evaluator = OfflineEvaluator(raw_batches, lambda r: prepare(dict(r))[0], seed=seed)

    step_module = TrainStep(policy)
    step_module, optimizer = accelerator.prepare(step_module, optimizer)
    ot_loss_fn = OTAlignmentLoss(cfg.ot)
    gather_group = None
    if world > 1:
        import torch.distributed as dist

        gather_group = dist.new_group(backend="gloo" if device.type == "cpu" else None)
    pcfg = policy.config
    action_dim = int(pcfg.output_features["action"].shape[0])
    num_train_timesteps = int(pcfg.num_train_timesteps)
    use_ot = cfg.ot.lambda_ot > 0 and bool(cfg.ot.features)
    params = [p for p in policy.parameters() if p.requires_grad]
    grad_clip = float(getattr(cfg.optimizer, "grad_clip_norm", 0.0) or 0.0)

    step = start_step
    if main:
        print(f"dpot train: {world} process(es), {n_src} source + {n_tgt} target items per process "
              f"(global batch {world * cfg.batch_size}), OT {'on' if use_ot else 'off'}, "
              f"{'resuming at step ' + str(start_step) if start_step else 'from scratch'} -> {out_dir}", flush=True)
    data_iter = iter(loader)
    bar = tqdm(total=cfg.steps, initial=start_step, disable=not main, dynamic_ncols=True, desc="dpot train")
    policy.train()
    try:
        while step < cfg.steps:
            t0 = time.perf_counter()
            raw = next(data_iter)
            batch, meta = prepare(raw)
            data_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            noise, tsteps = step_noise(seed, step, n_src, n_tgt, world, rank, pcfg.horizon, action_dim,
                                       num_train_timesteps)
            with accelerator.autocast():
                out = step_module(batch, noise.to(device), tsteps.to(device))
            bc = out["loss"]
            loss = bc
            metrics: dict[str, float] = {}
            if use_ot:
                def feats(sl):
                    return DomainFeatures(
                        embeds={k: gather_with_grad(v[sl], gather_group) for k, v in out["embeds"].items()},
                        labels={"action": gather_with_grad(out["action"][sl].detach(), gather_group)},
                        phase=gather_with_grad(meta["phase"][sl].to(device), gather_group))
                res = ot_loss_fn(feats(slice(0, n_src)), feats(slice(n_src, None)))
                loss = loss + res.loss
                metrics.update({f"train/{k}": v for k, v in res.metrics.items()})
            else:
                metrics.update({"train/ot_loss": 0.0})
            accelerator.backward(loss)
            if grad_clip > 0:
                gn = accelerator.clip_grad_norm_(params, grad_clip)
            else:
                gn = torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params if p.grad is not None]))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step() if scheduler is not None else None
            step += 1
            update_s = time.perf_counter() - t1
            per_item = out["per_item"].detach()
            l1 = (out["x0_hat"].detach().float() - out["action"].detach().float()).abs().mean()
            metrics.update({
                "train/loss": float(loss.detach()), "train/bc_loss": float(bc.detach()),
                "train/bc_loss_src": float(per_item[:n_src].mean()), "train/bc_loss_tgt": float(per_item[n_src:].mean()),
                "train/l1_loss": float(l1), "train/grad_norm": float(gn),
                "train/lr": float(optimizer.param_groups[0]["lr"]),
                "train/update_s": update_s, "train/dataloading_s": data_s,
            })
            window.add(metrics)
            bar.update(1)
            if step % cfg.log_freq == 0 or step == cfg.steps:
                logged = _reduce(accelerator, window.result())
                window.reset()
                if main:
                    sinks.log(step, logged)
                    bar.set_postfix(loss=f"{logged['train/loss']:.4f}", lr=f"{logged['train/lr']:.2e}",
                                    ot=f"{logged.get('train/ot_loss', 0.0):.2e}")
            if evaluator is not None and (step % cfg.eval_freq == 0 or step == cfg.steps):
                res_eval = evaluator(policy)
                sinks.log(step, res_eval)
                bar.write(f"step {step}: eval/offline_eval/avg_loss={res_eval['eval/offline_eval/avg_loss']:.4f} "
                          f"({res_eval['eval/offline_eval/eval_s']:.1f}s)")
            if cfg.save_checkpoint and ((cfg.save_freq > 0 and step % cfg.save_freq == 0) or step == cfg.steps):
                accelerator.wait_for_everyone()
                if main:
                    ckpt_mod.save_checkpoint(
                        out_dir, step, cfg=cfg, policy=accelerator.unwrap_model(step_module).policy,
                        optimizer=optimizer, scheduler=scheduler, preprocessor=preprocessor,
                        postprocessor=postprocessor, num_processes=world,
                        dpot_state={"sampler": {"step": step}, "window": window.state_dict(), "step": step})
                accelerator.wait_for_everyone()
    finally:
        bar.close()
        sinks.close()
    accelerator.wait_for_everyone()
    if main:
        print(f"dpot train: done ({step} steps). metrics: {out_dir / 'metrics.jsonl'}  "
              f"checkpoint: {out_dir / 'checkpoints' / 'last' / 'pretrained_model'}")
    accelerator.end_training()
    return out_dir


def _reduce(accelerator, metrics: dict[str, float]) -> dict[str, float]:
    """Mean of each metric over processes (sums for counts); identity with one process."""
    if accelerator.num_processes == 1:
        return metrics
    keys = sorted(metrics)
    vals = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    vals = accelerator.reduce(vals, reduction="sum")
    out = {}
    for k, v in zip(keys, vals.tolist(), strict=True):
        out[k] = v if k in SUM_KEYS else v / accelerator.num_processes
    return out


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


__all__ = ["train", "TrainStep", "MetricWindow", "resolve_optim", "step_noise"]
