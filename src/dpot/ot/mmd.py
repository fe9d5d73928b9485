"""The distribution-matching baseline (``ot.method="mmd"``): energy distance between source and target embeddings.

For each embed term k (one per camera) with source embeddings ``x_1..x_n`` and target embeddings ``y_1..y_m``
(the masked-in rows; features divided by ``sqrt(D)`` unless ``cost_norm="none"``, so distances are per feature
dimension as the OT costs are):

    E_k   = 1/(n m) sum_ij ||x_i - y_j|| - 1/(2 n^2) sum_ik ||x_i - x_k|| - 1/(2 m^2) sum_jl ||y_j - y_l||
    L_MMD = lambda_ot * sum_k w_k E_k                  (w_k = weight_embed)

``E_k`` is the squared MMD (halved) of the energy kernel ``k(x, y) = -||x - y||``, the V-statistic that
``geomloss.SamplesLoss("energy")`` computes (the paper's baseline; benchmarks/mmd_loss.py checks the agreement):
>= 0, exactly 0 for identical samples, about ``E||x - y|| / n`` between two finite samples of one distribution.
No plan, no label term, no temporal prior. ``cost_norm="median"`` scales like ``dim``.

Metrics (without ``train/``): ``ot_loss`` (= ``sum_k w_k E_k``, before lambda_ot, as for OT), ``ot_loss_scaled``
(= L_MMD, what joins the BC loss), ``mmd/<term>`` (``w_k E_k``, term = ``img_<camera>``),
``ot_embed_spread/<camera>`` (as for OT), ``ot_skipped`` (1 when a domain has no masked-in row or a value is not
finite; the loss is then a constant 0).
"""

from __future__ import annotations

import math

import torch

from dpot import metric_names as mn
from dpot.ot.alignment import AlignmentLoss, DomainFeatures, OTResult, term_kinds
from dpot.ot.feature_costs import embedding_pairs
from dpot.ot.registry import register_method

__all__ = ["energy_distance", "MMDAlignmentLoss"]


def _mean_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # the direct difference (not the matmul expansion): exact zeros on identical rows, finite gradients there
    return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist").mean()


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``mean ||x_i - y_j|| - (mean ||x_i - x_k|| + mean ||y_j - y_l||) / 2`` for ``x [n, D]``, ``y [m, D]``
    (V-statistic; differentiable; equals ``geomloss.SamplesLoss("energy")(x, y)``)."""
    x, y = x.flatten(1), y.flatten(1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dims differ: {x.shape[1]} vs {y.shape[1]}")
    return _mean_dist(x, y) - 0.5 * (_mean_dist(x, x) + _mean_dist(y, y))


@register_method("mmd")
class MMDAlignmentLoss(AlignmentLoss):
    """The energy-distance baseline between source and target embeddings, configured by ``dpot.config.OTConfig``
    (uses ``lambda_ot``, ``cost_norm`` and the embed features; label features are ignored). Same call as
    :class:`~dpot.ot.loss.OTAlignmentLoss`: ``(src: DomainFeatures, tgt: DomainFeatures) -> OTResult``."""

    logged_kinds = ("embed",)  # logged as mmd/<term>; label features are ignored

    def forward(self, src: DomainFeatures, tgt: DomainFeatures) -> OTResult:
        """``lambda_ot * sum_k w_k E_k`` over the masked-in rows (see the module docstring)."""
        cfg = self.cfg
        self.see_cameras(tgt)
        any_tensor = src.any_tensor()
        src, tgt = src.selected(), tgt.selected()
        names = [k for k, kind in term_kinds(cfg.features, sorted(tgt.embeds)).items() if kind == "embed"]
        skipped = {mn.OT_LOSS: 0.0, mn.OT_LOSS_SCALED: 0.0, mn.OT_SKIPPED: 1.0, **{f"{mn.MMD}{k}": 0.0 for k in names}}
        if len(src) < 1 or len(tgt) < 1:
            return OTResult(loss=any_tensor.new_zeros((), dtype=torch.float32), metrics=skipped)
        with torch.autocast(device_type=any_tensor.device.type, enabled=False):
            terms: dict[str, torch.Tensor] = {}
            for feat in cfg.features:
                scaled = feat.norm(cfg.cost_norm) != "none"
                for name, weight, x, y in embedding_pairs(feat, src, tgt):
                    if scaled:
                        x, y = x / math.sqrt(x.shape[1]), y / math.sqrt(y.shape[1])
                    terms[name] = weight * energy_distance(x, y)
            if not terms:
                raise ValueError("ot.method=mmd needs an embed feature in ot.features")
            unscaled = torch.stack(list(terms.values())).sum()
            loss = cfg.lambda_ot * unscaled
            metrics = {mn.OT_LOSS: float(unscaled.detach()), mn.OT_LOSS_SCALED: float(loss.detach()),
                       mn.OT_SKIPPED: 0.0, **{f"{mn.MMD}{k}": float(v.detach()) for k, v in terms.items()}}
            metrics.update(self.embed_spread(src, tgt))
            if not all(math.isfinite(v) for v in metrics.values()):
                skipped.update({k: v for k, v in metrics.items() if k.startswith(mn.EMBED_SPREAD)})
                return OTResult(loss=loss.new_zeros(()),
                                metrics={k: v if math.isfinite(v) else 0.0 for k, v in skipped.items()})
        return OTResult(loss=loss, metrics=metrics)
