"""Typed configuration of a DP+OT co-training run (draccus dataclasses extending LeRobot's train config).

``DpotTrainConfig`` is LeRobot's ``TrainPipelineConfig`` (``dataset`` is the *target* / real dataset, and all
optimizer, scheduler, policy, logging and checkpoint keys keep LeRobot's names) plus:

- ``source_dataset``: the *source* (simulation) dataset,
- ``camera_map``: source camera key -> target camera key, when the two datasets name cameras differently,
- ``ot``: the OT alignment (the seed's keys: ``lambda_ot``, ``reg``, ``tau_src``, ``tau_tgt``, ``heuristic``,
  ``batch_ratio``, ``window_size``, ``features``),
- ``eval``: offline evaluation on held-out target episodes (``n_batches``, ``val_episodes``), ``eval_freq``.

Configs load from a JSON file plus LeRobot-style ``--a.b=c`` overrides (:func:`load_train_config`). Every
error is a :class:`~dpot.errors.UserError` whose message is ``<field>: <what is wrong and how to fix it>``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import tempfile
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import draccus
from lerobot.configs.default import DatasetConfig, EvalConfig
from lerobot.configs.train import TrainPipelineConfig

from dpot.atomic import write_text
from dpot.errors import UserError, did_you_mean
from dpot.fork_config import lerobot_key_notes, translate_fork_config, translate_override
from dpot.ot.registry import method_names
from dpot.rundir import CONFIG_FILE
from dpot.train.precheck import check_learning_rate, read_config_file, split_train_args

__all__ = [
    "OTFeatureConfig",
    "EmbedFeatureConfig",
    "LabelFeatureConfig",
    "OTConfig",
    "DpotEvalConfig",
    "DpotTrainConfig",
    "load_train_config",
    "parse_train_args",
    "save_train_config",
    "validate_config",
]

ALIGNMENTS = ("phase", "dtw")
COST_NORMS = ("dim", "median", "none")
PRIORS = ("diagonal", "temporal", "none")
IMG_PREFIX = "observation.images."
STATE_KEY = "observation.state"
LABEL_KEYS = ("action", STATE_KEY)  # the batch tensors a label term can read
CONCAT_TERM = "obs_embed"           # the name of a concat=true embed term

log = logging.getLogger(__name__)


def _err(field_: str, msg: str) -> UserError:
    return UserError(f"{field_}: {msg}")


def _one_of(field_: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise _err(field_, f"unknown '{value}'{did_you_mean(value, choices)}; one of {list(choices)}")


@dataclass
class OTFeatureConfig(draccus.ChoiceRegistry):
    """One kind of OT cost term, chosen by its ``type`` in JSON (``{"type": "embed", ...}``), as LeRobot chooses
    policy types. Registered kinds: ``embed`` (:class:`EmbedFeatureConfig`), ``label`` (:class:`LabelFeatureConfig`).

    A kind carries its behaviour: the terms it adds (:meth:`term_kinds`), the label tensors it reads
    (:meth:`label_inputs`), its weighted cost matrices (:meth:`cost_terms`), the embeddings it aligns
    (:meth:`embedding_pairs`, for the MMD baseline) and its dataset checks (:meth:`check_dataset`), so a new kind is
    one new registered class. ``cost_norm``: this term's normalization (``dim`` | ``median`` | ``none``; None = the
    section's ``ot.cost_norm``).
    """

    cost_norm: str | None = None
    # the term's metric name (train/ot_cost/<term_name>) instead of the default (img_<camera>, obs_embed, <key>_lbl);
    # an embed term over several cameras (concat=false) logs <term_name>_<camera>
    term_name: str | None = None
    embeds_images = False  # class attribute: whether the kind aligns learned image embeddings

    @classmethod
    def default_choice_name(cls) -> str:
        return "embed"  # a feature without "type" was an embed term before the kinds were split

    @property
    def type(self) -> str:
        return self.get_choice_name(self.__class__)

    def validate(self, where: str) -> None:
        """Raise UserError naming ``<where>.<field>`` for a value out of range (dataset-free checks only)."""
        if self.cost_norm is not None:
            _one_of(f"{where}.cost_norm", self.cost_norm, COST_NORMS)

    def covers_all_cameras(self) -> bool:
        """Whether the term's names depend on the target cameras (an embed term with ``cameras: null``)."""
        return False

    def term_kinds(self, cameras: Sequence[str]) -> dict[str, str]:
        """Cost term name -> kind (``embed`` | ``label``) for target cameras ``cameras`` (short names)."""
        raise NotImplementedError

    def label_inputs(self) -> set[tuple[str, bool]]:
        """``(key, normalized)`` of every batch tensor the term reads from ``DomainFeatures.labels`` (normalized)
        or ``raw_labels`` (raw units): the trainer collects exactly these."""
        return set()

    def embedding_pairs(self, src, tgt) -> list[tuple[str, float, Any, Any]]:
        """``(term, weight, x [n_src, D], y [n_tgt, D])`` of the learned embeddings the term aligns (none for a
        label term); ``src``/``tgt`` are :class:`dpot.ot.loss.DomainFeatures`."""
        return []

    def cost_terms(self, src, tgt, cost_norm: str) -> dict[str, Any]:
        """Term name -> weighted cost matrix ``w C`` (``[n_src, n_tgt]``, float32) between the rows of ``src`` and
        ``tgt``; ``cost_norm`` is the section's default (:meth:`norm` picks this term's own when set)."""
        raise NotImplementedError

    def cost_parts(self, src, tgt, cost_norm: str) -> dict[str, float]:
        """``ot_cost_mean/<term>@<part>``: the mean weighted cost of each part of a term made of several (the
        cameras and the state of a concatenated embedding; none for a one-part term), so a reader can tell the
        images from the state inside one term. The parts' means add up to the term's mean."""
        return {}

    def norm(self, default: str) -> str:
        """This term's cost normalization: its own ``cost_norm`` or the section's ``default``."""
        return self.cost_norm or default

    def check_dataset(self, where: str, cameras: Sequence[str], shapes: dict[str, tuple[int, ...]]) -> None:
        """Raise UserError naming ``<where>.<field>`` when the term does not fit the target dataset (``cameras``:
        short camera names, ``shapes``: feature key -> shape)."""


@OTFeatureConfig.register_subclass("embed")
@dataclass
class EmbedFeatureConfig(OTFeatureConfig):
    """The policy's learned image embedding, weighted by ``weight_embed``; ``use_learned_embed=false`` detaches it
    (the plan is computed, no gradient reaches the encoder).

    ``concat=false``: one cost term ``img_<camera>`` per camera (``cameras``: None = all target cameras).
    ``time_index``: one observation step of an embedding with a time axis (Diffusion's ``[n, n_obs_steps, D]``;
    ``-1`` = the current frame, as the LeRobot OT fork encodes only the last frame); None = every step, flattened.
    An embedding without a time axis (ACT's) is used whole.
    ``concat=true``: ONE term ``obs_embed`` over the concatenation of those cameras' features and, with
    ``include_state=true``, the normalized ``observation.state`` (what the policy's U-Net is conditioned on): the
    official code's ``z = encoder(obs)`` flattened per item. A squared distance is a sum over dimensions, so the
    order of the concatenation does not change the cost.
    """

    use_learned_embed: bool = True
    weight_embed: float = 1.0
    cameras: list[str] | None = None
    concat: bool = False
    include_state: bool = False
    time_index: int | None = None
    embeds_images = True

    def validate(self, where: str) -> None:
        super().validate(where)
        if self.weight_embed < 0:
            raise _err(f"{where}.weight_embed", f"must be >= 0, got {self.weight_embed}")
        if self.include_state and not self.concat:
            raise _err(f"{where}.include_state", "needs concat=true (the state joins the concatenated embedding)")

    def covers_all_cameras(self) -> bool:
        return self.cameras is None

    def term_cameras(self, available: Sequence[str]) -> list[str]:
        """The cameras of this term: ``cameras`` (``observation.images.`` prefix optional) or all ``available``
        ones (sorted)."""
        if self.cameras is None:
            return sorted(available)
        return [c.removeprefix(IMG_PREFIX) for c in self.cameras]

    def camera_term(self, cam: str, n_cameras: int) -> str:
        """The name of camera ``cam``'s term (concat=false) among ``n_cameras``: ``img_<cam>``, or ``term_name``
        (one camera) / ``<term_name>_<cam>`` (several)."""
        if self.term_name is None:
            return f"img_{cam}"
        return self.term_name if n_cameras == 1 else f"{self.term_name}_{cam}"

    @property
    def concat_term(self) -> str:
        """The name of the concat=true term: ``term_name`` or ``obs_embed``."""
        return self.term_name or CONCAT_TERM

    def term_kinds(self, cameras: Sequence[str]) -> dict[str, str]:
        if self.concat:
            return {self.concat_term: "embed"}
        cams = self.term_cameras(cameras)
        return {self.camera_term(cam, len(cams)): "embed" for cam in cams}

    def label_inputs(self) -> set[tuple[str, bool]]:
        return {(STATE_KEY, True)} if self.include_state else set()

    def embedding_pairs(self, src, tgt) -> list[tuple[str, float, Any, Any]]:
        import torch

        from dpot.ot.costs import cost_dtype

        pairs = []
        cams = self.term_cameras(tgt.embeds)
        for cam in cams:
            if cam not in src.embeds or cam not in tgt.embeds:
                raise KeyError(f"camera '{cam}' has no embedding in both domains "
                               f"(source: {sorted(src.embeds)}, target: {sorted(tgt.embeds)})")
            x = cost_dtype(self.step_of(src.embeds[cam])).flatten(1)
            y = cost_dtype(self.step_of(tgt.embeds[cam])).flatten(1)
            if not self.use_learned_embed:
                x, y = x.detach(), y.detach()
            pairs.append((self.camera_term(cam, len(cams)), self.weight_embed, x, y))
        if not self.concat:
            return pairs
        xs, ys = [p[2] for p in pairs], [p[3] for p in pairs]
        if self.include_state:
            xs.append(cost_dtype(src.labels[STATE_KEY]).flatten(1))
            ys.append(cost_dtype(tgt.labels[STATE_KEY]).flatten(1))
        return [(self.concat_term, self.weight_embed, torch.cat(xs, dim=1), torch.cat(ys, dim=1))]

    def step_of(self, embed):
        """The embedding ``[n, S, D]`` at ``time_index`` (``[n, D]``), or unchanged (no time index, or no time axis)."""
        if self.time_index is None or embed.ndim < 3:
            return embed
        return embed[:, self.time_index]

    def cost_terms(self, src, tgt, cost_norm: str) -> dict[str, Any]:
        from dpot.ot.costs import normalize_cost, sq_euclidean_cost

        return {name: w * normalize_cost(sq_euclidean_cost(x, y), x.shape[1], self.norm(cost_norm))
                for name, w, x, y in self.embedding_pairs(src, tgt)}

    def cost_parts(self, src, tgt, cost_norm: str) -> dict[str, float]:
        import torch

        from dpot.ot.costs import sq_euclidean_cost

        if not self.concat:
            return {}
        with torch.no_grad():
            parts = {f"img_{name.removeprefix('img_')}": (x, y) for name, _, x, y in
                     EmbedFeatureConfig(use_learned_embed=False, cameras=self.cameras,
                                        time_index=self.time_index).embedding_pairs(src, tgt)}
            if self.include_state:
                parts["state"] = (src.labels[STATE_KEY].float().flatten(1), tgt.labels[STATE_KEY].float().flatten(1))
            sq = {k: sq_euclidean_cost(x, y) for k, (x, y) in parts.items()}
            total = torch.stack(list(sq.values())).sum(0).clamp_min(1e-30)
            term = self.cost_terms(src, tgt, cost_norm)[self.concat_term].detach()
            return {f"{self.concat_term}@{k}": float((term * v / total).mean()) for k, v in sq.items()}

    def check_dataset(self, where: str, cameras: Sequence[str], shapes: dict[str, tuple[int, ...]]) -> None:
        for cam in self.cameras or []:
            if cam.removeprefix(IMG_PREFIX) not in cameras:
                raise _err(f"{where}.cameras", f"'{cam}' is not a target camera; one of {list(cameras)}")
        if self.include_state and STATE_KEY not in shapes:
            raise _err(f"{where}.include_state", f"the target dataset has no {STATE_KEY}; set include_state=false")


@OTFeatureConfig.register_subclass("label")
@dataclass
class LabelFeatureConfig(OTFeatureConfig):
    """A label: the ``key`` tensor of each item (``action``: the action chunk; ``observation.state``: the state
    over the observation horizon) restricted to the half-open range ``dim_slice=[lo, hi)`` of its last dimension
    (None = all) and, with ``time_index``, to one step of its time axis (``-1`` = the last: for
    ``observation.state`` the current step; None = the whole chunk). ``normalized=true`` uses the policy's
    normalized values (the same numbers in both domains: the stats are pooled); ``false`` the raw dataset units
    (e.g. metres for the hand position). One cost term ``<name>_lbl`` (``action_lbl``, ``state_lbl``), weighted
    by ``weight_label``."""

    key: str = "action"
    dim_slice: list[int] | None = None
    weight_label: float = 0.05
    time_index: int | None = None
    normalized: bool = True

    def validate(self, where: str) -> None:
        super().validate(where)
        if self.weight_label < 0:
            raise _err(f"{where}.weight_label", f"must be >= 0, got {self.weight_label}")
        if self.key not in LABEL_KEYS:
            raise _err(f"{where}.key", f"unknown label '{self.key}'{did_you_mean(self.key, LABEL_KEYS)}; "
                                       f"one of {list(LABEL_KEYS)}")
        ds = self.dim_slice
        if ds is not None:
            if len(ds) != 2:
                raise _err(f"{where}.dim_slice", f"must be two integers [start, stop], got {ds}")
            if ds[0] < 0 or ds[1] <= ds[0]:
                raise _err(f"{where}.dim_slice", f"must satisfy 0 <= start < stop, got {ds}")

    @property
    def label_term(self) -> str:
        """The term's name: ``term_name``, or ``<last part of key>_lbl`` (``action_lbl``, ``state_lbl``)."""
        return self.term_name or f"{self.key.rsplit('.', 1)[-1]}_lbl"

    def term_kinds(self, cameras: Sequence[str]) -> dict[str, str]:
        return {self.label_term: "label"}

    def label_inputs(self) -> set[tuple[str, bool]]:
        return {(self.key, self.normalized)}

    def values(self, domain):
        """``[n, F]``: this label of a domain's rows (``DomainFeatures``), sliced in time and dimension."""
        from dpot.ot.costs import cost_dtype, label_features

        labels = cost_dtype((domain.labels if self.normalized else domain.raw_labels)[self.key])
        if self.time_index is not None and labels.ndim >= 3:
            labels = labels[:, self.time_index]
        return label_features(labels, self.dim_slice)

    def cost_terms(self, src, tgt, cost_norm: str) -> dict[str, Any]:
        from dpot.ot.costs import normalize_cost, sq_euclidean_cost

        x, y = self.values(src), self.values(tgt)
        return {self.label_term: self.weight_label * normalize_cost(sq_euclidean_cost(x, y), x.shape[1],
                                                                   self.norm(cost_norm))}

    def check_dataset(self, where: str, cameras: Sequence[str], shapes: dict[str, tuple[int, ...]]) -> None:
        if self.key not in shapes:
            raise _err(f"{where}.key", f"the target dataset has no '{self.key}'; one of "
                                       f"{[k for k in LABEL_KEYS if k in shapes]}")
        dim = int(shapes[self.key][-1])
        if self.dim_slice is not None and self.dim_slice[1] > dim:
            raise _err(f"{where}.dim_slice", f"{self.dim_slice} goes beyond the {self.key} dim {dim}; "
                                             f"use a stop <= {dim}")


def _default_features() -> list[OTFeatureConfig]:
    return [EmbedFeatureConfig(use_learned_embed=True, weight_embed=1.0),
            LabelFeatureConfig(key="action", dim_slice=None, weight_label=0.05)]


@dataclass
class OTConfig:
    """Unbalanced OT alignment between the source and target items of each batch (docs/architecture.md, "The OT
    problem and its scale").

    ``tau_*`` follow POT's ``reg_m`` convention: larger = marginals held tighter. With uniform marginals and a
    constant cost ``c`` the plan's mass is ``exp(-c / (reg + tau_src + tau_tgt))``: keep costs O(0.1).
    ``cost_norm``: ``dim`` divides each squared distance by the feature dimension; ``median`` additionally
    divides each term by its detached batch median (costs O(1) whatever the embedding scale); ``none`` keeps
    raw squared distances. ``heuristic``: temporally paired batches and the temporal prior
    ``K_ij ∝ a_i b_j exp(-|t_i - t_j| / prior_sigma)`` (t = aligned phase in [0, 1]; ``alignment`` =
    ``phase`` (frame / episode length) or ``dtw`` (DTW of the action trajectories)) as the entropic reference.
    ``prior``: the plan's entropic reference (docs/architecture.md, "The three priors"): ``diagonal`` (``c = I/N``
    on the batch's partner pairs, the fork's and the paper's ``heuristic``: the plan lives on the partner pairs,
    solved in closed form), ``temporal`` (the soft prior above), ``none`` (``a b^T``); None = from ``heuristic``
    (true: ``temporal``, false: ``none``), dpot's meaning before the key existed (:meth:`resolved_prior`).
    """

    lambda_ot: float = 0.1
    reg: float = 0.02
    tau_src: float = 0.01
    tau_tgt: float = 0.01
    heuristic: bool = True
    batch_ratio: float = 0.5
    window_size: int = 20
    features: list[OTFeatureConfig] = field(default_factory=_default_features)
    alignment: str = "phase"
    prior_sigma: float = 0.05
    cost_norm: str = "dim"
    prior: str | None = None
    max_iters: int = 200
    tol: float = 1e-5
    # "uot": the unbalanced entropic OT loss above; "mmd": the energy distance between source and target embeddings
    # per embed term (dpot.ot.mmd; no plan, no label term, no temporal prior)
    method: str = "uot"
    # OT partners of a target item only from source episodes of the target episode's region (the paper's paired
    # subsets; regions from the datasets' meta/dpot_bench.json); BC still sees every source item
    paired_region: bool = False
    # save one step's plan (and per-term costs) every log_freq * plan_log_every steps to <run>/ot_plans/; 0 = never
    plan_log_every: int = 10
    # DTW-weighted pairing (dpot.data.pairs): the source partner of a target frame comes from its DTW partner
    # demos, demo d drawn with p_d ∝ exp(-sharpness * dist_d) among the topk_src_episodes closest, p_d < cutoff
    # dropped (then renormalized), frame = aligned frame + U{-window_size, window_size}, or any frame of the demo
    # with no_window. Partners from pair_info_path (the fork's pair_info.json; episode names' digits minus
    # pair_base_index_* = episode index; batches are then always paired from it and heuristic switches only the
    # temporal prior) or, without a file, with heuristic=true and any of sharpness/cutoff/topk_src_episodes/
    # no_window set, from dpot's own DTW of the action trajectories.
    pair_info_path: str | None = None
    pair_base_index_src: int = 0
    pair_base_index_tgt: int = 0
    sharpness: float = 0.0
    cutoff: float = 0.0
    topk_src_episodes: int | None = None
    no_window: bool = False

    def resolved_prior(self) -> str:
        """The prior in force: ``prior``, or ``temporal`` / ``none`` from ``heuristic`` when ``prior`` is None."""
        if self.prior is not None:
            return self.prior
        return "temporal" if self.heuristic else "none"

    def pairs_batches(self) -> bool:
        """Whether the batch sampler pairs source item i with target item i (a pair file, ``heuristic``'s
        temporal pairing or paired regions): what ``prior=diagonal`` needs."""
        return self.heuristic or self.pair_info_path is not None or self.paired_region

    def validate(self, where: str = "ot") -> None:
        """Raise UserError naming ``<where>.<field>`` for a value out of range (each feature checks its own)."""
        if not self.reg > 0:
            raise _err(f"{where}.reg", f"must be > 0 (entropic regularization), got {self.reg}; try 0.02")
        for name in ("tau_src", "tau_tgt"):
            if getattr(self, name) < 0:
                raise _err(f"{where}.{name}", f"must be >= 0 (KL marginal penalty), got {getattr(self, name)}; "
                                              "try 0.01")
        if self.lambda_ot < 0:
            raise _err(f"{where}.lambda_ot", f"must be >= 0, got {self.lambda_ot}; 0 disables the OT loss")
        if not 0 < self.batch_ratio < 1:
            raise _err(f"{where}.batch_ratio", f"must be in (0, 1) (share of source items per batch), "
                                               f"got {self.batch_ratio}")
        if self.window_size < 0:
            raise _err(f"{where}.window_size", f"must be >= 0 frames, got {self.window_size}")
        _one_of(f"{where}.alignment", self.alignment, ALIGNMENTS)
        _one_of(f"{where}.cost_norm", self.cost_norm, COST_NORMS)
        if self.prior is not None:
            _one_of(f"{where}.prior", self.prior, PRIORS)
        if self.resolved_prior() == "diagonal" and not self.pairs_batches():
            raise _err(f"{where}.prior", "diagonal puts the plan on the batch's partner pairs, but this config pairs "
                                         "none; set ot.heuristic=true (temporal pairing) or give ot.pair_info_path "
                                         "(dpot pairs build), or use ot.prior=none")
        _one_of(f"{where}.method", self.method, method_names())
        if self.plan_log_every < 0:
            raise _err(f"{where}.plan_log_every", f"must be >= 0 (0 = never save plans), got {self.plan_log_every}")
        if not self.prior_sigma > 0:
            raise _err(f"{where}.prior_sigma", f"must be > 0 (phase units), got {self.prior_sigma}")
        if self.max_iters < 1:
            raise _err(f"{where}.max_iters", f"must be >= 1, got {self.max_iters}")
        if not self.tol > 0:
            raise _err(f"{where}.tol", f"must be > 0, got {self.tol}")
        if self.sharpness < 0:
            raise _err(f"{where}.sharpness", f"must be >= 0 (0 = every partner demo equally likely), got "
                                             f"{self.sharpness}")
        if not 0 <= self.cutoff < 1:
            raise _err(f"{where}.cutoff", f"must be in [0, 1) (partner demos below this probability are dropped), "
                                          f"got {self.cutoff}")
        if self.topk_src_episodes is not None and self.topk_src_episodes < 1:
            raise _err(f"{where}.topk_src_episodes", f"must be >= 1 or null (all partners), got "
                                                     f"{self.topk_src_episodes}")
        if self.lambda_ot > 0 and not self.features:
            raise _err(f"{where}.features", "is empty while ot.lambda_ot > 0; add an embed and/or a label term, "
                                            "or set ot.lambda_ot=0 for plain co-training")
        if self.method == "mmd" and self.lambda_ot > 0 and not any(f.embeds_images for f in self.features):
            raise _err(f"{where}.features", 'has no embed term while ot.method="mmd" (the MMD baseline matches '
                                            'image embeddings only); add {"type": "embed"}')
        for i, feat in enumerate(self.features):
            feat.validate(f"{where}.features[{i}]")
        weighted = (self.pair_info_path is not None or self.sharpness > 0 or self.cutoff > 0
                    or self.topk_src_episodes is not None or self.no_window)
        if weighted and self.paired_region:
            raise _err(f"{where}.paired_region", "cannot be combined with DTW-weighted pairing (pair_info_path, "
                                                 "sharpness, cutoff, topk_src_episodes, no_window) yet; use one")
        names = [f.term_name for f in self.features if f.term_name is not None]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise _err(f"{where}.features", f"term_name '{dup[0]}' is used twice; each term needs its own name")


@dataclass
class DpotEvalConfig(EvalConfig):
    """LeRobot's EvalConfig plus offline evaluation on held-out target episodes.

    ``val_episodes``: target episodes held out of training (resolved from ``val_fraction`` at the first run and
    recorded in the saved config, so a resumed or repeated run holds out the same ones). ``n_batches``: batches
    of full diffusion sampling per offline eval (``eval/offline_eval/avg_loss`` = mean L1 over them).
    """

    n_batches: int = 20
    val_episodes: list[int] | None = None
    val_fraction: float = 0.1

    def validate(self, where: str = "eval") -> None:
        """Raise UserError naming ``<where>.<field>`` for a value out of range."""
        if self.n_batches < 1:
            raise _err(f"{where}.n_batches", f"must be >= 1, got {self.n_batches}")
        if not 0 <= self.val_fraction < 1:
            raise _err(f"{where}.val_fraction", f"must be in [0, 1), got {self.val_fraction}")


@dataclass
class DpotTrainConfig(TrainPipelineConfig):
    """A DP+OT co-training run. ``dataset`` = target (real), ``source_dataset`` = source (sim)."""

    source_dataset: DatasetConfig | None = None
    camera_map: dict[str, str] = field(default_factory=dict)
    ot: OTConfig = field(default_factory=OTConfig)
    eval: DpotEvalConfig = field(default_factory=DpotEvalConfig)
    eval_freq: int = 1000
    tensorboard: bool = False
    num_workers: int = 2


def dpot_keys_help() -> str:
    """The keys dpot adds to LeRobot's ``TrainPipelineConfig``, one line each with its default (for ``--help``),
    read from the dataclasses themselves so the text cannot drift from the code."""

    def default(f: dataclasses.Field) -> Any:
        if f.default is not dataclasses.MISSING:
            return f.default
        if f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            if isinstance(value, list):  # the feature list: each item with its registered type
                return [draccus.encode(v) | {"type": v.type} for v in value]
            return draccus.encode(value)
        return "required"

    lines = []
    own = {f.name for f in dataclasses.fields(TrainPipelineConfig)}
    for f in dataclasses.fields(DpotTrainConfig):
        if f.name in ("ot", "eval") or (f.name in own and f.name != "num_workers"):
            continue
        lines.append(f"  --{f.name}={json.dumps(default(f), default=str)}")
    for prefix, cls in (("ot", OTConfig), ("eval", DpotEvalConfig)):
        base = {g.name for g in dataclasses.fields(EvalConfig)} if cls is DpotEvalConfig else set()
        for f in dataclasses.fields(cls):
            if f.name not in base:
                lines.append(f"  --{prefix}.{f.name}={json.dumps(default(f), default=str)}")
    for name, cls in OTFeatureConfig.get_known_choices().items():
        fields_ = ", ".join(f"{f.name}={json.dumps(default(f))}" for f in dataclasses.fields(cls))
        lines.append(f'  ot.features[] {{"type": "{name}"}}: {fields_}')
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- validation


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _check_leaf(path: str, value: Any, tp: Any) -> None:
    """Raise UserError when a JSON value cannot be the annotated type (only for simple, decidable types)."""
    tp, optional = _strip_optional(tp)
    if value is None:
        if not optional and tp in (int, float, bool, str):
            raise UserError(f"{path}: null is not allowed; give a {_type_name(tp)}")
        return
    ok = True
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is str or tp is Path:
        ok = isinstance(value, str)
    elif typing.get_origin(tp) in (list, tuple, Sequence):
        ok = isinstance(value, list)
    elif typing.get_origin(tp) is dict:
        ok = isinstance(value, dict)
    if not ok:
        raise UserError(f"{path}: expected {_type_name(tp)}, got {json.dumps(value)} ({type(value).__name__})")


def _choice_class(base: Any, value: dict, path: str) -> Any:
    """Resolve a draccus ChoiceRegistry subclass (e.g. ``policy``, ``optimizer``) from its ``type`` key."""
    if not hasattr(base, "get_known_choices"):
        return base
    choices = base.get_known_choices()
    name = value.get("type")
    if name is None:
        default = getattr(base, "default_choice_name", lambda: None)()
        if default is None:
            raise UserError(f"{path}.type: missing; one of {sorted(choices)}")
        name = default
    if name not in choices:
        raise UserError(f"{path}.type: unknown '{name}'{did_you_mean(name, choices)}; one of {sorted(choices)}")
    return choices[name]


def _drop_other_kind_keys(path: str, value: dict, kind: type) -> None:
    """Drop the keys of the other feature kinds from a feature's raw JSON.

    Configs saved before the kinds were split hold every key on every feature (``{"type": "embed", ...,
    "dim_slice": null, "weight_label": 0.05}``); those keys were never read for that kind, so they load and are
    dropped (with a warning when the value is not the default, i.e. someone set it expecting an effect).
    """
    own = {f.name for f in dataclasses.fields(kind)}
    for other in OTFeatureConfig.get_known_choices().values():
        for f in dataclasses.fields(other):
            if f.name in value and f.name not in own:
                dropped = value.pop(f.name)
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                if dropped != default:
                    log.warning("%s.%s=%s ignored: it belongs to a '%s' feature, not '%s'", path, f.name,
                                json.dumps(dropped), OTFeatureConfig.get_choice_name(other),
                                OTFeatureConfig.get_choice_name(kind))


def _field_default(tp: Any, name: str) -> Any:
    """The declared default of dataclass ``tp``'s field ``name`` (None when it has none)."""
    f = next(f for f in dataclasses.fields(tp) if f.name == name)
    return None if f.default is dataclasses.MISSING else f.default


def _check_tree(path: str, value: Any, tp: Any) -> None:
    """Walk raw JSON against the dataclass tree: unknown keys (with a suggestion) and wrong leaf types."""
    declared = tp
    tp, _ = _strip_optional(tp)
    if _is_dataclass_type(tp):
        if value is None:
            return
        if not isinstance(value, dict):
            raise UserError(f"{path}: expected an object with fields of {tp.__name__}, got {json.dumps(value)}")
        tp = _choice_class(tp, value, path)
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        derived = {f.name for f in dataclasses.fields(tp) if not f.init}
        for key in [k for k in value if k in derived]:
            del value[key]  # derived fields (e.g. checkpoint_path) are recomputed, never read back
        if issubclass(tp, OTFeatureConfig):
            _drop_other_kind_keys(path, value, tp)
        for key, sub in value.items():
            if key == "type" and hasattr(tp, "get_known_choices"):
                continue
            sub_path = f"{path}.{key}" if path else key
            if key not in names:
                raise UserError(f"{sub_path}: unknown key{did_you_mean(key, names)}; remove it or fix its name")
            if isinstance(sub, bool) and isinstance(_field_default(tp, key), bool):
                continue  # LeRobot's own `int = False` fields (ACT's replace_final_stride_with_dilation) save a bool
            _check_tree(sub_path, sub, hints[key])
        return
    origin = typing.get_origin(tp)
    if origin is list and isinstance(value, list):
        (item_tp,) = typing.get_args(tp) or (Any,)
        for i, item in enumerate(value):
            _check_tree(f"{path}[{i}]", item, item_tp)
        return
    _check_leaf(path, value, declared)


def validate_config(cfg: DpotTrainConfig) -> None:
    """Check value ranges and cross-field rules that need no dataset (raises UserError).

    The one value check of a loaded config: each dpot config dataclass checks its own fields in ``validate()``
    (``ot``, its ``features``, ``eval``); the rules across sections live here. Keys and JSON types were checked
    before decoding (:func:`_check_tree`). Dataset-dependent checks (action dims, camera keys, ``dim_slice``
    beyond the action dim) are done by the trainer once the datasets are open.
    """
    cfg.ot.validate("ot")
    if cfg.source_dataset is None:
        raise _err("source_dataset", "missing; give the sim dataset, e.g. "
                                     '"source_dataset": {"repo_id": "local/sim", "root": "data/sim"}')
    for name in ("steps", "batch_size", "log_freq"):
        if getattr(cfg, name) < 1:
            raise _err(name, f"must be >= 1, got {getattr(cfg, name)}")
    if cfg.batch_size < 2:
        raise _err("batch_size", f"must be >= 2 to hold one source and one target item, got {cfg.batch_size}")
    ot = cfg.ot
    n_src = round(ot.batch_ratio * cfg.batch_size)
    if n_src < 1 or n_src > cfg.batch_size - 1:
        raise _err("batch_size", f"{cfg.batch_size} with ot.batch_ratio={ot.batch_ratio} gives {n_src} source and "
                                 f"{cfg.batch_size - n_src} target items; each domain needs at least one: "
                                 "raise batch_size or move batch_ratio toward 0.5")
    if cfg.eval_freq < 0 or cfg.save_freq < 1:
        raise _err("eval_freq" if cfg.eval_freq < 0 else "save_freq", "must be >= 0 (eval) / >= 1 (save)")
    cfg.eval.validate("eval")
    if cfg.policy is None:
        raise _err("policy", 'missing; e.g. "policy": {"type": "diffusion", "pretrained_backbone_weights": null}')
    check_policy_type(cfg.policy.type)
    if not cfg.use_policy_training_preset and (cfg.optimizer is None or cfg.scheduler is None):
        missing = "optimizer" if cfg.optimizer is None else "scheduler"
        raise _err(missing, "missing while use_policy_training_preset=false; give both optimizer and scheduler "
                            '(e.g. "optimizer": {"type": "adamw", "lr": 3e-4}) or set use_policy_training_preset=true')
    _check_learning_rates(cfg)


def _check_learning_rates(cfg: DpotTrainConfig) -> None:
    """Every learning rate set anywhere (the policy preset's ``optimizer_lr*``, the explicit ``optimizer.lr``) must
    be > 0: a negative one is torch's traceback at the first step, a zero one trains nothing without a word."""
    where = [(f"policy.{f.name}", getattr(cfg.policy, f.name)) for f in dataclasses.fields(cfg.policy)
             if f.name.startswith("optimizer_lr")]
    if cfg.optimizer is not None and hasattr(cfg.optimizer, "lr"):
        where.append(("optimizer.lr", cfg.optimizer.lr))
    for name, lr in where:
        check_learning_rate(name, lr)


# the policy types the trainer supports (dpot.policy.features re-expresses the diffusion loss); the one place to
# extend when another policy lands


def check_policy_type(policy_type: str) -> None:
    """Raise UserError (``policy.type: '<type>' is not supported by dpot train; supported types: act,
    diffusion``) for a LeRobot policy type without a dpot policy hook (:func:`dpot.policy.supported_policy_types`),
    and ``policy.type: unknown '<type>' (did you mean ...)`` for a name LeRobot does not know."""
    from lerobot.configs.policies import PreTrainedConfig

    from dpot.policy import get_hook, supported_policy_types

    known = PreTrainedConfig.get_known_choices()
    if policy_type not in known:
        raise _err("policy.type", f"unknown '{policy_type}'{did_you_mean(policy_type, known)}; dpot train supports "
                                  f"{', '.join(supported_policy_types())}")
    get_hook(policy_type)


# ------------------------------------------------------------------------------------------ load / save


def _split_override(arg: str) -> tuple[str, str]:
    if not arg.startswith("--") or "=" not in arg:
        raise UserError(f"{arg}: overrides look like --a.b=value")
    key, value = arg[2:].split("=", 1)
    return key, value


def _check_override_key(key: str, raw: dict, types: dict[str, str] | None = None) -> None:
    """Check that a dotted override key names an existing field (with a suggestion when it does not); ``types``:
    the choice types other overrides of the same command set (``{"scheduler": "diffuser"}`` from
    ``--scheduler.type=diffuser``), so a choice type and its fields compose in one command."""
    tp: Any = DpotTrainConfig
    node: Any = raw
    parts = key.split(".")
    for depth, part in enumerate(parts):
        tp, _ = _strip_optional(tp)
        if not _is_dataclass_type(tp):
            return  # inside a dict/list-valued field: draccus decides
        if hasattr(tp, "get_known_choices") and isinstance(node, dict):
            if part == "type":
                return
            prefix = ".".join(parts[:depth])
            if (types or {}).get(prefix) is not None:
                node = {**node, "type": types[prefix]}
            tp = _choice_class(tp, node, prefix)
        names = {f.name for f in dataclasses.fields(tp) if f.init} | {"path"}
        if part not in names:
            prefix = ".".join(parts[:depth])
            where = f"{prefix}.{part}" if prefix else part
            raise UserError(f"--{where}: unknown key{did_you_mean(part, names)}; see the config reference in "
                            f"docs/architecture.md or a saved {CONFIG_FILE}")
        if part == "path":
            return
        tp = typing.get_type_hints(tp)[part]
        node = node.get(part, {}) if isinstance(node, dict) else {}


_ELEMENT = re.compile(r"^--([\w.]+)\[(\d+)\](?:\.([\w.]+))?=(.*)$", re.S)


def _apply_element_overrides(raw: dict, overrides: Sequence[str]) -> list[str]:
    """Apply ``--a.b[i].c=value`` / ``--a.b[i]=value`` (one element of a list, e.g.
    ``--ot.features[1].dim_slice=[0,4]``) to ``raw`` in place, the value read as JSON (else as a string); the other
    overrides come back unchanged.
    Raises UserError when the list is not in the config or has no element ``i`` (saying how to give it whole)."""
    rest = []
    for arg in overrides:
        m = _ELEMENT.match(arg)
        if m is None:
            rest.append(arg)
            continue
        dotted, index, field_, text = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        where = f"--{dotted}[{index}]"
        node: Any = raw
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, list):
            raise UserError(f"{where}: {dotted} is not a list in the config file; give the whole list, e.g. "
                            f"--{dotted}='[...]' (JSON)")
        if not 0 <= index < len(node):
            raise UserError(f"{where}: {dotted} has {len(node)} element(s) (0..{len(node) - 1}); give the whole list "
                            f"with --{dotted}='[...]' to add one")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if field_ is None:
            node[index] = value
        else:
            target = node[index]
            *head, last = field_.split(".")
            for part in head:
                target = target.setdefault(part, {}) if isinstance(target, dict) else None
            if not isinstance(target, dict):
                raise UserError(f"{where}.{field_}: element {index} of {dotted} is not an object")
            target[last] = value
    if len(rest) != len(overrides):
        _check_tree("", raw, DpotTrainConfig)   # the edited elements' keys and types, as a file's
    return rest


def read_raw_config(raw: dict) -> dict:
    """A config's raw JSON in dpot's keys: a LeRobot OT fork config (``ot.enable``, ``ot.loss_config``, ...)
    translated by :func:`dpot.fork_config.translate_fork_config` (one warning line per key dpot does not act on),
    plus the notes on LeRobot keys dpot does not act on (:func:`dpot.fork_config.lerobot_key_notes`)."""
    raw, _ = translate_fork_config(raw)
    lerobot_key_notes(raw)
    return raw


def load_train_config(config_path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> DpotTrainConfig:
    """Load a run config: JSON file (may be None) + ``--a.b=c`` overrides, then :func:`validate_config`.

    Raises UserError (one line naming the field) for a missing/unreadable file, invalid JSON, unknown keys,
    wrong types and invalid values.
    """
    import lerobot.policies  # noqa: F401  (registers policy config choices such as "diffusion")

    raw: dict = {}  # edited in place by _check_tree (derived keys dropped), then handed to draccus
    if config_path is not None:
        raw = read_raw_config(read_config_file(config_path))
        if isinstance(raw.get("policy"), dict) and isinstance(raw["policy"].get("type"), str):
            check_policy_type(raw["policy"]["type"])  # before its keys are checked against another policy's
        _check_tree("", raw, DpotTrainConfig)
    overrides = [b for a in overrides for b in translate_override(a)]  # the fork's names (--ot.src_root=)
    _check_policy_override(overrides)
    overrides = _apply_element_overrides(raw, overrides)
    types = {k.removesuffix(".type"): v for k, v in map(_split_override, overrides) if k.endswith(".type")}
    for arg in overrides:
        key, _ = _split_override(arg)
        _check_override_key(key, raw, types)
    _apply_policy_defaults(raw, overrides)
    if "dataset" not in raw and not any(a.startswith("--dataset.") for a in overrides):
        raise UserError('dataset: missing; give the target dataset, e.g. "dataset": {"repo_id": "local/real", '
                        '"root": "data/real"} or --dataset.repo_id=... --dataset.root=...')
    try:
        if overrides:  # draccus' argparse merges the --a.b=c values into the file's (it builds the --help text too)
            with tempfile.TemporaryDirectory(prefix="dpot-config-") as tmp:
                cleaned = Path(tmp) / "config.json"
                cleaned.write_text(json.dumps(raw))
                cfg = draccus.parse(DpotTrainConfig, config_path=str(cleaned), args=list(overrides))
        else:  # what draccus.parse decodes when there are no arguments, without building a parser (~100x faster)
            cfg = draccus.decode(DpotTrainConfig, raw)
    except SystemExit as err:  # draccus/argparse report and exit on bad CLI values
        raise UserError(f"invalid arguments {list(overrides)}: check the values' types (exit {err.code})") from None
    except Exception as err:  # draccus DecodingError and friends: keep their message, on one line
        raise UserError(_one_line_draccus_error(err)) from None
    validate_config(cfg)
    return cfg


# dpot's defaults where LeRobot's would download or misbehave: no ImageNet weights (nothing is fetched at run
# time), and then GroupNorm in the encoder (BatchNorm would mix source and target batch statistics and is
# unstable at the small batches/images of CPU runs). An explicit value in the JSON or on the CLI wins.
POLICY_DEFAULTS = {"diffusion": {"pretrained_backbone_weights": None, "use_group_norm": True},
                   "act": {"pretrained_backbone_weights": None}}


def _check_policy_override(overrides: Sequence[str]) -> None:
    """A ``--policy.type=`` override gets :func:`check_policy_type` before draccus decodes the policy's fields
    (the JSON's type is checked when the file is read)."""
    for arg in overrides:
        if arg.startswith("--policy.type="):
            check_policy_type(arg.split("=", 1)[1])


def _apply_policy_defaults(raw: dict, overrides: Sequence[str]) -> None:
    """Fill :data:`POLICY_DEFAULTS` into ``raw["policy"]`` for keys set neither there nor by an override;
    ``use_group_norm`` only when no pretrained weights are asked for (LeRobot refuses GroupNorm with them)."""
    policy = raw.get("policy")
    if not isinstance(policy, dict):
        return
    given = {a[2:].split("=", 1)[0].removeprefix("policy.") for a in overrides if a.startswith("--policy.")}
    for key, value in POLICY_DEFAULTS.get(policy.get("type", ""), {}).items():
        if key in policy or key in given:
            continue
        asks_weights = policy.get("pretrained_backbone_weights") or "pretrained_backbone_weights" in given
        if key == "use_group_norm" and asks_weights:
            continue
        policy[key] = value


def _one_line_draccus_error(err: Exception) -> str:
    msg = " ".join(str(err).split())
    # draccus: "`ot`: The fields `x` are not valid for OTConfig" / "`ot.reg`: Couldn't parse 'abc' ..."
    if msg.startswith("`") and "`:" in msg:
        field_, rest = msg[1:].split("`:", 1)
        return f"{field_}: {rest.strip()}"
    return f"config: {msg}"


def parse_train_args(argv: Sequence[str]) -> DpotTrainConfig:
    """Parse ``dpot train`` arguments: ``--config_path=PATH`` (optional) plus ``--a.b=c`` overrides."""
    config_path, overrides = split_train_args(argv)
    return load_train_config(config_path, overrides)


def config_to_dict(cfg: DpotTrainConfig) -> dict:
    """The resolved config as plain JSON data (draccus encoding, the format :func:`load_train_config` reads)."""
    data = json.loads(json.dumps(draccus.encode(cfg), default=str))
    for f in dataclasses.fields(cfg):
        if not f.init:
            data.pop(f.name, None)
    return data


def save_train_config(cfg: DpotTrainConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config as JSON atomically (temp file + rename). Secrets never enter the config."""
    return write_text(path, json.dumps(config_to_dict(cfg), indent=2) + "\n")
