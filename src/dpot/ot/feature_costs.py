"""What each OT cost-term kind computes: its weighted cost matrices, the embeddings it aligns, its cost parts.

A kind is declared in :mod:`dpot.config.ot` (its fields, names and checks); its computation is registered here for
its class with :func:`functools.singledispatch`, so the config stays free of torch and a new kind is one class
there plus its ``cost_terms`` (and, if it aligns embeddings, ``embedding_pairs``) here. ``src`` / ``tgt`` are
:class:`dpot.ot.alignment.DomainFeatures`: ``embeds`` (camera -> ``[n, D]`` or ``[n, S, D]``), ``labels`` (normalized)
and ``raw_labels`` (dataset units).

For an ``embed`` term with weight ``w`` and a ``label`` term with weight ``w_l`` (:mod:`dpot.ot.costs`)::

    C_img_<cam>[i, j] = w   * norm(||f_cam(x_i) - f_cam(y_j)||^2)
    C_<key>_lbl[i, j] = w_l * norm(||l(x_i) - l(y_j)||^2)       (l: the label sliced by time_index and dim_slice)

with ``norm`` the term's ``cost_norm`` (``dim``: divide by the feature dimension; ``median``: also by the detached
batch median; ``none``).
"""

from __future__ import annotations

from functools import singledispatch
from typing import Any

import torch

from dpot import metric_names as mn
from dpot.config.ot import STATE_KEY, EmbedFeatureConfig, LabelFeatureConfig, OTFeatureConfig
from dpot.ot.costs import cost_dtype, label_features, normalize_cost, sq_euclidean_cost

__all__ = ["cost_terms", "embedding_pairs", "cost_parts", "label_values", "has_cost_terms"]


@singledispatch
def cost_terms(feat: OTFeatureConfig, src, tgt, cost_norm: str) -> dict[str, torch.Tensor]:
    """Term name -> weighted cost matrix ``w C`` (``[n_src, n_tgt]``, float32; float64 stays float64) between the
    rows of ``src`` and ``tgt``; ``cost_norm`` is the section's default (the term's own ``cost_norm`` wins)."""
    raise NotImplementedError(f"the cost-term kind '{feat.type}' has no cost_terms: register one for "
                              f"{type(feat).__name__} in dpot.ot.feature_costs")


@singledispatch
def embedding_pairs(feat: OTFeatureConfig, src, tgt) -> list[tuple[str, float, Any, Any]]:
    """``(term, weight, x [n_src, D], y [n_tgt, D])`` of the learned embeddings the term aligns (none for a label
    term): what the MMD baseline (:mod:`dpot.ot.mmd`) matches."""
    return []


@singledispatch
def cost_parts(feat: OTFeatureConfig, src, tgt, cost_norm: str) -> dict[str, float]:
    """``<term>@<part>`` -> the mean weighted cost of each part of a term made of several (the cameras and the state
    of a concatenated embedding; none for a one-part term), logged as ``ot_cost_mean/<term>@<part>`` so a reader
    can tell the images from the state inside one term. The parts' means add up to the term's mean."""
    return {}


def has_cost_terms(kind: type) -> bool:
    """Whether a registered kind's class has its own ``cost_terms`` (the test that every kind is computable)."""
    return cost_terms.dispatch(kind) is not cost_terms.dispatch(OTFeatureConfig)


# --------------------------------------------------------------------------------------------------- embed


def _step_of(feat: EmbedFeatureConfig, embed: torch.Tensor) -> torch.Tensor:
    """The embedding ``[n, S, D]`` at ``time_index`` (``[n, D]``), or unchanged (no time index, or no time axis)."""
    if feat.time_index is None or embed.ndim < 3:
        return embed
    return embed[:, feat.time_index]


@embedding_pairs.register(EmbedFeatureConfig)
def _embed_pairs(feat: EmbedFeatureConfig, src, tgt) -> list[tuple[str, float, Any, Any]]:
    pairs = []
    cams = feat.term_cameras(tgt.embeds)
    for cam in cams:
        if cam not in src.embeds or cam not in tgt.embeds:
            raise KeyError(f"camera '{cam}' has no embedding in both domains "
                           f"(source: {sorted(src.embeds)}, target: {sorted(tgt.embeds)})")
        x = cost_dtype(_step_of(feat, src.embeds[cam])).flatten(1)
        y = cost_dtype(_step_of(feat, tgt.embeds[cam])).flatten(1)
        if not feat.use_learned_embed:
            x, y = x.detach(), y.detach()
        pairs.append((feat.camera_term(cam, len(cams)), feat.weight_embed, x, y))
    if not feat.concat:
        return pairs
    xs, ys = [p[2] for p in pairs], [p[3] for p in pairs]
    if feat.include_state:
        xs.append(cost_dtype(src.labels[STATE_KEY]).flatten(1))
        ys.append(cost_dtype(tgt.labels[STATE_KEY]).flatten(1))
    return [(feat.concat_term, feat.weight_embed, torch.cat(xs, dim=1), torch.cat(ys, dim=1))]


@cost_terms.register(EmbedFeatureConfig)
def _embed_costs(feat: EmbedFeatureConfig, src, tgt, cost_norm: str) -> dict[str, torch.Tensor]:
    return {name: w * normalize_cost(sq_euclidean_cost(x, y), x.shape[1], feat.norm(cost_norm))
            for name, w, x, y in embedding_pairs(feat, src, tgt)}


@cost_parts.register(EmbedFeatureConfig)
def _embed_parts(feat: EmbedFeatureConfig, src, tgt, cost_norm: str) -> dict[str, float]:
    if not feat.concat:
        return {}
    with torch.no_grad():
        per_camera = EmbedFeatureConfig(use_learned_embed=False, cameras=feat.cameras, time_index=feat.time_index)
        parts = {mn.image_term(mn.term_camera(name)): (x, y)
                 for name, _, x, y in embedding_pairs(per_camera, src, tgt)}
        if feat.include_state:
            parts["state"] = (src.labels[STATE_KEY].float().flatten(1), tgt.labels[STATE_KEY].float().flatten(1))
        sq = {k: sq_euclidean_cost(x, y) for k, (x, y) in parts.items()}
        total = torch.stack(list(sq.values())).sum(0).clamp_min(1e-30)
        term = cost_terms(feat, src, tgt, cost_norm)[feat.concat_term].detach()
        return {f"{feat.concat_term}@{k}": float((term * v / total).mean()) for k, v in sq.items()}


# --------------------------------------------------------------------------------------------------- label


def label_values(feat: LabelFeatureConfig, domain) -> torch.Tensor:
    """``[n, F]``: the label of a domain's rows, normalized or raw as the term asks, sliced in time and dimension."""
    labels = cost_dtype((domain.labels if feat.normalized else domain.raw_labels)[feat.key])
    if feat.time_index is not None and labels.ndim >= 3:
        labels = labels[:, feat.time_index]
    return label_features(labels, feat.dim_slice)


@cost_terms.register(LabelFeatureConfig)
def _label_costs(feat: LabelFeatureConfig, src, tgt, cost_norm: str) -> dict[str, torch.Tensor]:
    x, y = label_values(feat, src), label_values(feat, tgt)
    return {feat.label_term: feat.weight_label * normalize_cost(sq_euclidean_cost(x, y), x.shape[1],
                                                                feat.norm(cost_norm))}
