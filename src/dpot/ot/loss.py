"""The OT alignment loss between the source and target items of a co-training batch (docs/architecture.md, "The OT problem and its scale").

    C        = sum_k w_k C_k                       (embed term per camera, label term on the action chunk)
    pi*      = unbalanced_sinkhorn(C.detach() [+ reg * prior shift], reg, tau_src, tau_tgt)
    L_OT     = lambda_ot * <pi*, C>                (pi* constant: gradients reach the features through C)

Metrics (without the ``train/`` prefix): ``ot_loss`` (= the scaled loss), ``ot_pi_sum`` (plan mass),
``ot_pi_diag`` (mass on the paired diagonal ``sum_i pi[i, i]``), ``ot_pi_diag_frac`` (= pi_diag / pi_sum; about
1/n for random pairing), ``ot_cost/<term>`` (``<pi*, w_k C_k>``), ``ot_cost_mean/<term>`` (mean of ``w_k C_k``:
the cost scale, visible even when the plan mass vanishes), ``ot_embed_spread/<camera>`` (mean within-domain
pairwise squared distance per feature dimension, averaged over the two domains: the embeddings' own scale, so
that cross-domain costs falling through alignment can be told from embeddings shrinking as a whole),
``ot_skipped`` (1 when a non-finite cost or plan made this step skip the OT term, else 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from dpot.ot.costs import label_features, normalize_cost, prior_cost_shift, sq_euclidean_cost
from dpot.ot.sinkhorn import unbalanced_sinkhorn

__all__ = ["DomainFeatures", "OTResult", "OTAlignmentLoss"]


@dataclass
class DomainFeatures:
    """Features of one domain's items.

    ``embeds``: camera name -> ``[n, D]`` learned image embeddings (n_obs_steps flattened into D).
    ``labels``: key (``action``) -> ``[n, horizon, action_dim]`` normalized label chunks.
    ``phase``: ``[n]`` aligned time in [0, 1], used by the temporal prior when ``heuristic`` is on.
    """

    embeds: dict[str, torch.Tensor] = field(default_factory=dict)
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    phase: torch.Tensor | None = None

    def __len__(self) -> int:
        for t in (*self.embeds.values(), *self.labels.values()):
            return int(t.shape[0])
        return 0 if self.phase is None else int(self.phase.numel())


@dataclass
class OTResult:
    """``loss``: scalar tensor (lambda_ot already applied; constant 0 when skipped). ``metrics``: floats."""

    loss: torch.Tensor
    metrics: dict[str, float]
    plan: torch.Tensor | None = None


class OTAlignmentLoss(nn.Module):
    """Unbalanced entropic OT loss between source and target features, configured by ``dpot.config.OTConfig``."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg

    def cost_terms(self, src: DomainFeatures, tgt: DomainFeatures) -> dict[str, torch.Tensor]:
        """Weighted cost matrices ``w_k C_k`` (float32, ``[n_src, n_tgt]``) by term name."""
        terms: dict[str, torch.Tensor] = {}
        for feat in self.cfg.features:
            if feat.type == "embed":
                cams = feat.cameras if feat.cameras is not None else sorted(tgt.embeds)
                for cam in cams:
                    if cam not in src.embeds or cam not in tgt.embeds:
                        raise KeyError(f"camera '{cam}' has no embedding in both domains "
                                       f"(source: {sorted(src.embeds)}, target: {sorted(tgt.embeds)})")
                    x, y = src.embeds[cam].float(), tgt.embeds[cam].float()
                    if not feat.use_learned_embed:
                        x, y = x.detach(), y.detach()
                    c = normalize_cost(sq_euclidean_cost(x, y), x.flatten(1).shape[1], self.cfg.cost_norm)
                    terms[f"img_{cam}"] = feat.weight_embed * c
            else:
                x = label_features(src.labels[feat.key].float(), feat.dim_slice)
                y = label_features(tgt.labels[feat.key].float(), feat.dim_slice)
                c = normalize_cost(sq_euclidean_cost(x, y), x.shape[1], self.cfg.cost_norm)
                terms[f"{feat.key}_lbl"] = feat.weight_label * c
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
                    out[f"ot_embed_spread/{cam}"] = sum(vals) / len(vals)
        return out

    def forward(self, src: DomainFeatures, tgt: DomainFeatures) -> OTResult:
        """Compute the plan on the detached cost and return ``lambda_ot * <pi*, C>`` with its metrics."""
        cfg = self.cfg
        device_type = next(iter((*src.embeds.values(), *src.labels.values()))).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            terms = self.cost_terms(src, tgt)
            cost = torch.stack(list(terms.values())).sum(0)
            metrics: dict[str, float] = {f"ot_cost_mean/{k}": float(v.detach().mean()) for k, v in terms.items()}
            metrics.update(self.embed_spread(src, tgt))
            solve_cost = cost.detach()
            if cfg.heuristic and src.phase is not None and tgt.phase is not None:
                shift = prior_cost_shift(src.phase, tgt.phase, cfg.prior_sigma).to(solve_cost)
                solve_cost = solve_cost + cfg.reg * shift
            finite = bool(torch.isfinite(solve_cost).all())
            plan = None
            if finite:
                plan = unbalanced_sinkhorn(solve_cost, reg=cfg.reg, tau_src=cfg.tau_src, tau_tgt=cfg.tau_tgt,
                                           max_iters=cfg.max_iters, tol=cfg.tol)
                finite = bool(torch.isfinite(plan).all())
            if not finite:
                zero = cost.new_zeros(())
                metrics.update({"ot_loss": 0.0, "ot_pi_sum": 0.0, "ot_pi_diag": 0.0, "ot_pi_diag_frac": 0.0,
                                "ot_skipped": 1.0})
                metrics.update({f"ot_cost/{k}": 0.0 for k in terms})
                metrics = {k: v if math.isfinite(v) else 0.0 for k, v in metrics.items()}
                return OTResult(loss=zero, metrics=metrics, plan=None)
            loss = cfg.lambda_ot * (plan * cost).sum()
            pi_sum = float(plan.sum())
            pi_diag = float(torch.diagonal(plan).sum())
            metrics.update({
                "ot_loss": float(loss.detach()),
                "ot_pi_sum": pi_sum,
                "ot_pi_diag": pi_diag,
                "ot_pi_diag_frac": pi_diag / pi_sum if pi_sum > 0 else 0.0,
                "ot_skipped": 0.0,
            })
            metrics.update({f"ot_cost/{k}": float((plan * v.detach()).sum()) for k, v in terms.items()})
        return OTResult(loss=loss, metrics=metrics, plan=plan)
