"""The OT alignment loss between the source and target items of a co-training batch (docs/architecture.md, "The OT
problem and its scale").

    C        = sum_k w_k C_k                       (the configured kinds' terms: dpot.ot.feature_costs)
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

import torch

from dpot import metric_names as mn
from dpot.ot.alignment import AlignmentLoss, DomainFeatures, OTResult, term_kinds
from dpot.ot.costs import prior_cost_shift
from dpot.ot.diagonal import diagonal_prior_plan
from dpot.ot.feature_costs import cost_parts, cost_terms
from dpot.ot.registry import register_method
from dpot.ot.sinkhorn import unbalanced_sinkhorn

__all__ = ["OTAlignmentLoss"]


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
class OTAlignmentLoss(AlignmentLoss):
    """Unbalanced entropic OT loss between source and target features (the module docstring's formulas).

    Args:
        cfg: the ``ot`` section of the config (``dpot.config.OTConfig``): ``features`` (cost terms), ``cost_norm``,
            ``reg``, ``tau_src``, ``tau_tgt``, ``prior`` (:meth:`resolved_prior`) + ``prior_sigma``, ``max_iters``,
            ``tol``, ``lambda_ot``.
        cameras: the target cameras' short names, for :attr:`term_kinds` before the first call (after a call, the
            cameras seen are used when none were given).
    """

    def cost_terms(self, src: DomainFeatures, tgt: DomainFeatures) -> dict[str, torch.Tensor]:
        """Weighted cost matrices ``w_k C_k`` (float32, ``[n_src, n_tgt]``) by term name (all rows given), each
        built by its feature kind (:func:`dpot.ot.feature_costs.cost_terms`) with its own or the section's
        ``cost_norm``."""
        terms: dict[str, torch.Tensor] = {}
        for feat in self.cfg.features:
            terms.update(cost_terms(feat, src, tgt, self.cfg.cost_norm))
        return terms

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
        self.see_cameras(tgt)
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
                metrics.update({mn.cost_key(k): v for k, v in cost_parts(feat, src, tgt, cfg.cost_norm).items()})
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
