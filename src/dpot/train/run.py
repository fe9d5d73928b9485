"""The objects of one training run: :class:`TrainRun` (everything :func:`dpot.train.build.build_run` builds),
:class:`TrainStep` (the module DDP wraps) and :class:`MetricWindow` (the metrics between two log steps)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dpot import metric_names as mn
from dpot.data.cotrain import CoTrainBatchSampler
from dpot.policy import PolicyHook
from dpot.train.batches import split_rows
from dpot.train.offline_eval import OfflineEvaluator
from dpot.train.sinks import Sinks

__all__ = ["SUM_KEYS", "LAST_KEYS", "TrainStep", "MetricWindow", "TrainRun"]

SUM_KEYS = (mn.train(mn.OT_SKIPPED), mn.train(mn.OT_SINKHORN_MAXED))
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
