"""The OT alignment loss between the source and target items of a co-training batch (docs/architecture.md, "The OT
problem and its scale").

    C        = sum_k w_k C_k                       (the terms of the configured feature kinds: dpot.config)
    pi*      = the plan of C.detach() under the prior ``ot.prior`` (OTConfig.resolved_prior):
               none     : unbalanced_sinkhorn(C, reg, tau_src, tau_tgt)            (reference a b^T)
               temporal : the same on C + reg * (-log w)                           (dpot.ot.costs.prior_cost_shift)
               diagonal : diagonal_prior_plan(C, partner pairs, reg, tau_src, tau_tgt) (reference I/N, closed form)
    L_OT     = lambda_ot * <pi*, C>                (pi* constant: gradients reach the features through C)

Only the masked-in rows of each domain (``DomainFeatures.mask``) enter C, the plan and the metrics. The partner
pairs are the items that held the same position in the batch (source item i partners target item i).

Metrics (without the ``train/`` prefix; names and meanings: :mod:`dpot.metric_names`, the LeRobot OT fork's):
``ot_loss`` (``<pi*, C>``, before lambda_ot), ``ot_loss_scaled`` (``lambda_ot <pi*, C>``: what joins the BC
loss), ``ot_pi_sum`` (plan mass), ``ot_pi_diag`` (mass on the partner pairs; equal to ``ot_pi_sum`` under the
diagonal prior), ``ot_pi_diag_frac`` (= pi_diag / pi_sum; about 1/n for random pairing), ``ot_pi_pair_cv`` (diagonal
prior only: std / mean of the per-pair masses), ``ot_cost/<term>`` (mean
of ``w_k C_k``: the cost scale, visible even when the plan mass vanishes; ``ot_cost/<term>@<part>`` splits a
concatenated term into its cameras and the state, the parts summing to the term), ``ot_cost_plan/<term>``
(``<pi*, w_k C_k>``, summing to ``ot_loss``), ``ot_embed_spread/<camera>`` (mean within-domain pairwise squared
distance per feature dimension, averaged over the two domains: the embeddings' own scale, so that cross-domain
costs falling through alignment can be told from embeddings shrinking as a whole), ``ot_skipped`` (1 when a
non-finite cost or plan, or a domain with no masked-in row, made this step skip the OT term, else 0); when the
Sinkhorn solver ran (priors none and temporal): ``ot_sinkhorn_iters`` (its iterations) and ``ot_sinkhorn_maxed``
(1 when it stopped at ``ot.max_iters`` before meeting ``ot.tol``, else 0) and ``ot_sinkhorn_marginal_err`` (the
fixed point's relative marginal violation; :class:`dpot.ot.sinkhorn.SinkhornInfo`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from dpot import metric_names as mn
from dpot.ot.costs import prior_cost_shift, sq_euclidean_cost
from dpot.ot.diagonal import diagonal_prior_plan
from dpot.ot.registry import register_method
from dpot.ot.sinkhorn import unbalanced_sinkhorn

if TYPE_CHECKING:  # the OT core imports no config module (and so no LeRobot) at run time
    from dpot.config import OTFeatureConfig

__all__ = ["DomainFeatures", "OTResult", "OTAlignmentLoss", "term_kinds"]

IMG_PREFIX = "observation.images."


@dataclass
class DomainFeatures:
    """Features of one domain's items.

    ``embeds``: camera name -> ``[n, D]`` or ``[n, n_obs_steps, D]`` learned image embeddings.
    ``labels``: key -> normalized label tensors (``action``: ``[n, horizon, action_dim]``; ``observation.state``:
    ``[n, n_obs_steps, state_dim]``), the policy's own values.
    ``raw_labels``: key -> the same tensors in the dataset's raw units (only the keys a term asks for unnormalized).
    ``phase``: ``[n]`` aligned time in [0, 1], used by the temporal prior (``ot.prior=temporal``).
    ``mask``: ``[n]`` bool, the items taking part in the alignment term (None = all); the losses use only the
    masked-in rows (:meth:`selected`).
    """

    embeds: dict[str, torch.Tensor] = field(default_factory=dict)
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    phase: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    raw_labels: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        for t in (*self.embeds.values(), *self.labels.values(), *self.raw_labels.values()):
            return int(t.shape[0])
        return 0 if self.phase is None else int(self.phase.numel())

    def selected(self) -> DomainFeatures:
        """The masked-in rows only (``self`` when ``mask`` is None); differentiable (boolean row indexing)."""
        if self.mask is None:
            return self
        keep = self.mask.reshape(-1).to(torch.bool)
        if keep.numel() != len(self):
            raise ValueError(f"mask has {keep.numel()} entries for {len(self)} items")

        def rows(t: torch.Tensor) -> torch.Tensor:
            return t[keep.to(t.device)]

        return DomainFeatures(embeds={k: rows(v) for k, v in self.embeds.items()},
                              labels={k: rows(v) for k, v in self.labels.items()},
                              phase=None if self.phase is None else rows(self.phase.reshape(-1)),
                              raw_labels={k: rows(v) for k, v in self.raw_labels.items()})

    def any_tensor(self) -> torch.Tensor:
        """One of the domain's tensors (its device and dtype stand for all)."""
        return next(iter((*self.embeds.values(), *self.labels.values(), *self.raw_labels.values())))


@dataclass
class OTResult:
    """``loss``: scalar tensor (lambda_ot already applied; constant 0 when skipped). ``metrics``: floats.

    ``plan``: the detached plan ``[n_src_selected, n_tgt_selected]`` (None when skipped or for a loss without a
    plan); ``costs``: term -> detached weighted cost matrix ``w_k C_k`` over the same rows (empty when skipped);
    ``paired``: ``[n_src_selected, n_tgt_selected]`` bool, the partner pairs (what ``ot_pi_diag`` sums).
    """

    loss: torch.Tensor
    metrics: dict[str, float]
    plan: torch.Tensor | None = None
    costs: dict[str, torch.Tensor] = field(default_factory=dict)
    paired: torch.Tensor | None = None


def term_kinds(features: Sequence[OTFeatureConfig], cameras: Sequence[str]) -> dict[str, str]:
    """Cost term name -> kind: e.g. ``{"img_<camera>": "embed", "action_lbl": "label"}`` for the configured
    features (each kind names its own terms), ``cameras`` being the target cameras' short names (what
    ``cameras: null`` expands to)."""
    kinds: dict[str, str] = {}
    for feat in features:
        kinds.update(feat.term_kinds(cameras))
    return kinds


def _no_row_metrics(names: Sequence[str]) -> dict[str, float]:
    out = {mn.OT_LOSS: 0.0, mn.OT_LOSS_SCALED: 0.0, mn.OT_PI_SUM: 0.0, mn.OT_PI_DIAG: 0.0, mn.OT_PI_DIAG_FRAC: 0.0,
           mn.OT_SKIPPED: 1.0}
    out.update({mn.cost_plan_key(k): 0.0 for k in names})
    out.update({mn.cost_key(k): 0.0 for k in names})
    return out


def _same_position(src: DomainFeatures, tgt: DomainFeatures) -> torch.Tensor:
    """Bool ``[n_src_in, n_tgt_in]`` over the masked-in rows: True where the source and target items held the same
    position in the batch (the paired diagonal; the plain diagonal when nothing is masked out)."""
    def positions(d: DomainFeatures) -> torch.Tensor:
        return torch.arange(len(d)) if d.mask is None else torch.nonzero(d.mask.reshape(-1).cpu().bool()).flatten()

    return positions(src)[:, None] == positions(tgt)[None, :]


@register_method("uot")
class OTAlignmentLoss(nn.Module):
    """Unbalanced entropic OT loss between source and target features (the module docstring's formulas).

    Args:
        cfg: the ``ot`` section of the config (``dpot.config.OTConfig``): ``features`` (cost terms), ``cost_norm``,
            ``reg``, ``tau_src``, ``tau_tgt``, ``prior`` (:meth:`resolved_prior`) + ``prior_sigma``, ``max_iters``,
            ``tol``, ``lambda_ot``.
        cameras: the target cameras' short names, for :attr:`term_kinds` before the first call (after a call, the
            cameras seen are used when none were given).
    """

    def __init__(self, cfg, cameras: Sequence[str] | None = None):
        super().__init__()
        self.cfg = cfg
        self.cameras = None if cameras is None else [c.removeprefix(IMG_PREFIX) for c in cameras]

    @property
    def term_kinds(self) -> dict[str, str]:
        """``{"img_<camera>": "embed", "<key>_lbl": "label"}``: the kind of every cost term this loss logs."""
        needs_cameras = any(f.covers_all_cameras() for f in self.cfg.features)
        if needs_cameras and self.cameras is None:
            raise ValueError("term_kinds: an embed term covers all cameras; construct the loss with cameras=[...]")
        return term_kinds(self.cfg.features, self.cameras or [])

    def cost_terms(self, src: DomainFeatures, tgt: DomainFeatures) -> dict[str, torch.Tensor]:
        """Weighted cost matrices ``w_k C_k`` (float32, ``[n_src, n_tgt]``) by term name (all rows given), each
        built by its feature kind (``OTFeatureConfig.cost_terms``) with its own or the section's ``cost_norm``."""
        terms: dict[str, torch.Tensor] = {}
        for feat in self.cfg.features:
            terms.update(feat.cost_terms(src, tgt, self.cfg.cost_norm))
        return terms

    @staticmethod
    def embed_spread(src: DomainFeatures, tgt: DomainFeatures) -> dict[str, float]:
        """``ot_embed_spread/<camera>``: mean off-diagonal ``||x_i - x_k||^2 / D`` within each domain, averaged."""
        out = {}
        with torch.no_grad():
            for cam in sorted(set(src.embeds) & set(tgt.embeds)):
                vals = []
                for x in (src.embeds[cam], tgt.embeds[cam]):
                    x = x.detach().float().flatten(1)
                    n = x.shape[0]
                    if n > 1:
                        vals.append(float(sq_euclidean_cost(x, x).sum() / (n * (n - 1) * x.shape[1])))
                if vals:
                    out[mn.embed_spread_key(cam)] = sum(vals) / len(vals)
        return out

    def forward(self, src: DomainFeatures, tgt: DomainFeatures) -> OTResult:
        """Compute the plan on the detached cost of the masked-in rows and return ``lambda_ot * <pi*, C>``.

        Args:
            src, tgt: the source and target items' features (``DomainFeatures``; ``mask`` selects the rows that
                take part; the two masks' positions define the paired diagonal).

        Returns:
            An :class:`OTResult`: the scalar loss (differentiable w.r.t. the features through ``C``; a constant 0
            when the step is skipped), the metrics of the module docstring, the detached plan and per-term costs.
        """
        cfg = self.cfg
        if self.cameras is None and tgt.embeds:
            self.cameras = sorted(tgt.embeds)
        device_type = src.any_tensor().device.type
        paired = _same_position(src, tgt)        # [n_src_in, n_tgt_in]: source item i partners target item i
        src, tgt = src.selected(), tgt.selected()
        if len(src) < 1 or len(tgt) < 1:  # nothing to align on one side: skip like a non-finite step
            zero = src.any_tensor().new_zeros((), dtype=torch.float32)
            names = term_kinds(cfg.features, sorted(tgt.embeds))
            return OTResult(loss=zero, metrics=_no_row_metrics(list(names)))
        with torch.autocast(device_type=device_type, enabled=False):
            terms = self.cost_terms(src, tgt)
            cost = torch.stack(list(terms.values())).sum(0)
            metrics: dict[str, float] = {mn.cost_key(k): float(v.detach().mean()) for k, v in terms.items()}
            for feat in cfg.features:   # parts of a term made of several (a concatenated embedding)
                metrics.update({mn.cost_key(k): v for k, v in feat.cost_parts(src, tgt, cfg.cost_norm).items()})
            metrics.update(self.embed_spread(src, tgt))
            plan = self.plan(cost.detach(), src, tgt, paired, metrics)
            if plan is None or not bool(torch.isfinite(plan).all()):
                metrics.update({k: v for k, v in _no_row_metrics(list(terms)).items() if not k.startswith(mn.COST)})
                metrics = {k: v if math.isfinite(v) else 0.0 for k, v in metrics.items()}
                return OTResult(loss=cost.new_zeros(()), metrics=metrics)
            plan = plan.detach()
            prior = cfg.resolved_prior()
            unscaled = (plan * cost).sum()
            loss = cfg.lambda_ot * unscaled
            on_pairs = paired.to(plan.device)
            pi_diag = float(plan[on_pairs].sum())
            # diagonal prior: every entry off the pairs is exactly 0, so the mass IS the pairs' mass (bit for bit)
            pi_sum = pi_diag + float(plan[~on_pairs].sum()) if prior == "diagonal" else float(plan.sum())
            metrics.update({
                mn.OT_LOSS: float(unscaled.detach()),
                mn.OT_LOSS_SCALED: float(loss.detach()),
                mn.OT_PI_SUM: pi_sum,
                mn.OT_PI_DIAG: pi_diag,
                mn.OT_PI_DIAG_FRAC: pi_diag / pi_sum if pi_sum > 0 else 0.0,
                mn.OT_SKIPPED: 0.0,
            })
            metrics.update({mn.cost_plan_key(k): float((plan * v.detach()).sum()) for k, v in terms.items()})
            if prior == "diagonal":
                pair_mass = plan[on_pairs].double()
                mean = float(pair_mass.mean()) if pair_mass.numel() else 0.0
                metrics[mn.OT_PI_PAIR_CV] = float(pair_mass.std(unbiased=False)) / mean if mean > 0 else 0.0
        return OTResult(loss=loss, metrics=metrics, plan=plan, costs={k: v.detach() for k, v in terms.items()},
                        paired=paired)

    def plan(self, cost: torch.Tensor, src: DomainFeatures, tgt: DomainFeatures, paired: torch.Tensor,
             metrics: dict[str, float]) -> torch.Tensor | None:
        """The plan of the detached ``cost`` under ``ot.prior`` (module docstring); None when the cost is not
        finite. ``paired``: the partner pairs (``[n_src, n_tgt]`` bool over the masked-in rows). Adds the solver's
        ``ot_sinkhorn_*`` metrics to ``metrics`` when Sinkhorn ran."""
        cfg = self.cfg
        if not bool(torch.isfinite(cost).all()):
            return None
        prior = cfg.resolved_prior()
        if prior == "diagonal":
            return diagonal_prior_plan(cost, paired.to(cost.device), cfg.reg, cfg.tau_src, cfg.tau_tgt)
        if prior == "temporal" and src.phase is not None and tgt.phase is not None:
            cost = cost + cfg.reg * prior_cost_shift(src.phase, tgt.phase, cfg.prior_sigma).to(cost)
            if not bool(torch.isfinite(cost).all()):
                return None
        plan, info = unbalanced_sinkhorn(cost, reg=cfg.reg, tau_src=cfg.tau_src, tau_tgt=cfg.tau_tgt,
                                         max_iters=cfg.max_iters, tol=cfg.tol, return_info=True)
        metrics.update({mn.OT_SINKHORN_ITERS: float(info.iters), mn.OT_SINKHORN_MAXED: float(not info.converged),
                        mn.OT_SINKHORN_MARGINAL_ERR: float(info.marginal_err)})
        return plan
