"""Source/target alignment losses: unbalanced entropic OT (the solver, the cost terms, the loss) and the
energy-distance (MMD) baseline, chosen by ``ot.method`` through :func:`make_alignment_loss`."""

from __future__ import annotations

from collections.abc import Sequence

from dpot.ot.costs import label_features, normalize_cost, prior_cost_shift, sq_euclidean_cost
from dpot.ot.loss import DomainFeatures, OTAlignmentLoss, OTResult, term_kinds
from dpot.ot.mmd import MMDAlignmentLoss, energy_distance
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
    "OTAlignmentLoss",
    "MMDAlignmentLoss",
    "OTResult",
    "term_kinds",
    "make_alignment_loss",
]

ALIGNMENT_LOSSES = {"uot": OTAlignmentLoss, "mmd": MMDAlignmentLoss}


def make_alignment_loss(cfg, cameras: Sequence[str] | None = None) -> OTAlignmentLoss | MMDAlignmentLoss:
    """The alignment loss of ``cfg.method``: the trainer's only entry point to this package.

    Args:
        cfg: the ``ot`` section of the config (``dpot.config.OTConfig``): ``method`` ``"uot"`` ->
            :class:`OTAlignmentLoss`, ``"mmd"`` -> :class:`MMDAlignmentLoss`.
        cameras: the target cameras (short or ``observation.images.`` names), so that ``term_kinds`` can answer
            before the first call (None: known after it).

    Returns:
        The loss module: called ``loss(src: DomainFeatures, tgt: DomainFeatures) -> OTResult``, with
        ``term_kinds`` (cost term -> ``"embed"`` | ``"label"``).

    Raises:
        ValueError: an unknown ``cfg.method``.
    """
    try:
        cls = ALIGNMENT_LOSSES[cfg.method]
    except KeyError:
        raise ValueError(f"ot.method: unknown {cfg.method!r}; one of {sorted(ALIGNMENT_LOSSES)}") from None
    return cls(cfg, cameras=cameras)
