"""Unbalanced entropic OT: the solver, the cost terms and the alignment loss."""

from dpot.ot.costs import label_features, normalize_cost, prior_cost_shift, sq_euclidean_cost
from dpot.ot.loss import DomainFeatures, OTAlignmentLoss, OTResult
from dpot.ot.sinkhorn import unbalanced_sinkhorn

__all__ = [
    "unbalanced_sinkhorn",
    "sq_euclidean_cost",
    "normalize_cost",
    "label_features",
    "prior_cost_shift",
    "DomainFeatures",
    "OTAlignmentLoss",
    "OTResult",
]
