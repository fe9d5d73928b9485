"""Source/target alignment losses: unbalanced entropic OT (the solver, the cost terms, the loss) and the
energy-distance (MMD) baseline, chosen by ``ot.method`` through :func:`make_alignment_loss`."""

from __future__ import annotations

from collections.abc import Sequence

from dpot.ot.alignment import AlignmentLoss, DomainFeatures, OTResult, term_kinds
from dpot.ot.costs import label_features, normalize_cost, prior_cost_shift, sq_euclidean_cost
from dpot.ot.loss import OTAlignmentLoss
from dpot.ot.mmd import MMDAlignmentLoss, energy_distance
from dpot.ot.registry import ALIGNMENT_METHODS, method_names, register_method
from dpot.ot.sinkhorn import SinkhornInfo, unbalanced_sinkhorn

__all__ = [
    "unbalanced_sinkhorn",
    "SinkhornInfo",
    "sq_euclidean_cost",
    "normalize_cost",
    "label_features",
    "prior_cost_shift",
    "energy_distance",
    "DomainFeatures",
    "AlignmentLoss",
    "OTAlignmentLoss",
    "MMDAlignmentLoss",
    "OTResult",
    "term_kinds",
    "make_alignment_loss",
    "ALIGNMENT_METHODS",
    "method_names",
    "register_method",
]


def make_alignment_loss(cfg, cameras: Sequence[str] | None = None) -> AlignmentLoss:
    """The alignment loss registered as ``cfg.method`` (:mod:`dpot.ot.registry`).

    Args:
        cfg: a ``dpot.config.OTConfig`` (``method``: ``"uot"`` -> :class:`OTAlignmentLoss`, ``"mmd"`` ->
            :class:`MMDAlignmentLoss`).
        cameras: the target cameras (short or full names), so that ``term_kinds`` answers before the first call.

    Returns:
        A module called ``loss(src: DomainFeatures, tgt: DomainFeatures) -> OTResult`` exposing ``term_kinds``.

    Raises:
        ValueError: an unknown ``cfg.method``.
    """
    try:
        cls = ALIGNMENT_METHODS[cfg.method]
    except KeyError:
        raise ValueError(f"ot.method: unknown {cfg.method!r}; one of {list(method_names())}") from None
    return cls(cfg, cameras=cameras)
