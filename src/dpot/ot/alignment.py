"""What every alignment loss (``ot.method``: :mod:`dpot.ot.loss`'s unbalanced OT, :mod:`dpot.ot.mmd`'s energy
distance) shares: its input (:class:`DomainFeatures`, one per domain), its output (:class:`OTResult`), the cost
terms the configured features name (:func:`term_kinds`) and the base class :class:`AlignmentLoss` (the config, the
target cameras, the terms it logs, the embeddings' own scale ``ot_embed_spread``). A method subclasses it,
implements ``forward(src, tgt) -> OTResult`` and registers with :func:`dpot.ot.registry.register_method`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from dpot import metric_names as mn
from dpot.config.ot import IMG_PREFIX, OTFeatureConfig
from dpot.ot.costs import sq_euclidean_cost

__all__ = ["DomainFeatures", "OTResult", "AlignmentLoss", "term_kinds"]


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


class AlignmentLoss(nn.Module):
    """The base of an alignment loss: ``loss(src: DomainFeatures, tgt: DomainFeatures) -> OTResult``.

    Args:
        cfg: the ``ot`` section of the config (:class:`dpot.config.ot.OTConfig`).
        cameras: the target cameras (short or full names), for :attr:`term_kinds` before the first call (after a
            call, the cameras seen are used when none were given).
    """

    #: the kinds of cost term the method logs (None = all the features name; the MMD baseline: embed terms only)
    logged_kinds: tuple[str, ...] | None = None

    def __init__(self, cfg, cameras: Sequence[str] | None = None):
        super().__init__()
        self.cfg = cfg
        self.cameras = None if cameras is None else [c.removeprefix(IMG_PREFIX) for c in cameras]

    @property
    def term_kinds(self) -> dict[str, str]:
        """Term name -> kind of every term this loss logs: ``{"img_<camera>": "embed", "<key>_lbl": "label"}``."""
        if self.cameras is None and any(f.covers_all_cameras() for f in self.cfg.features):
            raise ValueError("term_kinds: an embed term covers all cameras; construct the loss with cameras=[...]")
        kinds = term_kinds(self.cfg.features, self.cameras or [])
        return kinds if self.logged_kinds is None else {k: v for k, v in kinds.items() if v in self.logged_kinds}

    def see_cameras(self, tgt: DomainFeatures) -> None:
        """Remember the target's cameras when none were given (what ``cameras: null`` expands to)."""
        if self.cameras is None and tgt.embeds:
            self.cameras = sorted(tgt.embeds)

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
        raise NotImplementedError
