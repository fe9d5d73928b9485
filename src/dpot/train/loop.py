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

import functools
import logging
import time
from pathlib import Path

import numpy as np
import torch

from dpot import metric_names as mn
from dpot import rundir
from dpot.metric_names import EVAL_LOSS, EVAL_S
from dpot.ot.alignment import DomainFeatures
from dpot.train import checkpoint as ckpt_mod
from dpot.train.batches import RAW_PREFIX, prepare_batch, prepare_eval_batch
from dpot.train.build import build_run
from dpot.train.distributed import gather_with_grad, valid_share
from dpot.train.ot_records import plan_due, plan_snapshot, save_plan_snapshot
from dpot.train.run import TrainRun

log = logging.getLogger(__name__)
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
    log.info("step %d: %s=%.4f (%.1fs)", step, EVAL_LOSS, res[EVAL_LOSS],
             res[EVAL_S])
    return res


def log_domain_probe(run: TrainRun, step: int) -> dict[str, float]:
    """The domain probe (:func:`dpot.train.domain_probe.domain_probe`) of the current policy on the run's own data
    (main process), logged at ``step`` as ``eval/domain_probe/<camera>`` (held-out accuracy) with its interval's
    ends (``.../<camera>_lo``, ``_hi``). Eval mode, no gradient and no random draw: training goes on unchanged."""
    from dpot.train.domain_probe import domain_probe

    cfg = run.cfg
    res = domain_probe(run.policy, run.hook, run.loader.dataset, run.sampler.src, run.sampler.tgt,
                       functools.partial(prepare_eval_batch, preprocessor=run.preprocessor,
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
    release_process_groups(run)
    return run.out_dir


def release_process_groups(run: TrainRun) -> None:
    """Free what holds the process groups (the DDP wrapper's reducer, the OT gather group), then destroy them.

    The order matters: a DDP reducer freed *after* ``destroy_process_group`` runs ``~ProcessGroupGloo`` on a
    destroyed group, which now and then deadlocks on its mutex (a 2-process CPU run trained, saved, printed
    ``done`` and never exited: tests/train/test_resume_and_ddp.py, 2026-12-07, stack from py-spy). So the references
    go first, through :meth:`accelerate.Accelerator.free_memory` (its own lists of prepared objects) and our own
    fields, then ``end_training`` destroys the groups with nothing left that points at them."""
    run.step_module = run.optimizer = run.gather_group = None
    run.accelerator.free_memory()        # drops the prepared model/optimizer lists and runs gc.collect()
    run.accelerator.end_training()       # trackers finished, every process group destroyed


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


__all__ = ["train", "train_step", "domain_features", "log_window", "evaluate", "log_domain_probe", "save",
           "release_process_groups"]
