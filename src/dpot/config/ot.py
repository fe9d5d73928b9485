"""dpot's own OT section of a run config, with no LeRobot or torch import: the cost-term kinds (``embed``,
``label``) and ``OTConfig`` (draccus dataclasses). :mod:`dpot.config.schema` builds the whole run config on them;
``dpot train``'s pre-check (:mod:`dpot.train.precheck`) checks a config's ``ot`` section with them before LeRobot's
~6 s of imports. What a kind computes (its cost matrices) lives with the OT code, :mod:`dpot.ot.feature_costs`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import draccus

from dpot import metric_names as mn
from dpot.errors import check_choice, did_you_mean, field_error

__all__ = ["ALIGNMENTS", "COST_NORMS", "PRIORS", "IMG_PREFIX", "STATE_KEY", "LABEL_KEYS", "CONCAT_TERM",
           "OTFeatureConfig", "EmbedFeatureConfig", "LabelFeatureConfig", "OTConfig"]

ALIGNMENTS = ("phase", "dtw")
COST_NORMS = ("dim", "median", "none")
PRIORS = ("diagonal", "temporal", "none")
IMG_PREFIX = "observation.images."
STATE_KEY = "observation.state"
LABEL_KEYS = ("action", STATE_KEY)  # the batch tensors a label term can read
CONCAT_TERM = "obs_embed"           # the name of a concat=true embed term


@dataclass
class OTFeatureConfig(draccus.ChoiceRegistry):
    """One kind of OT cost term, chosen by its ``type`` in JSON (``{"type": "embed", ...}``), as LeRobot chooses
    policy types. Registered kinds: ``embed`` (:class:`EmbedFeatureConfig`), ``label`` (:class:`LabelFeatureConfig`).

    A kind declares what it is: the terms it adds (:meth:`term_kinds`), the label tensors it reads
    (:meth:`label_inputs`) and its checks (:meth:`validate`, :meth:`check_dataset`); what it computes (its weighted
    cost matrices, the embeddings it aligns for the MMD baseline) is registered for its class in
    :mod:`dpot.ot.feature_costs`, so a new kind is one class here and its cost functions there. ``cost_norm``:
    this term's normalization (``dim`` | ``median`` | ``none``; None = the section's ``ot.cost_norm``).
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
            check_choice(f"{where}.cost_norm", self.cost_norm, COST_NORMS)

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
            raise field_error(f"{where}.weight_embed", f"must be >= 0, got {self.weight_embed}")
        if self.include_state and not self.concat:
            raise field_error(f"{where}.include_state",
                              "needs concat=true (the state joins the concatenated embedding)")

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
            return mn.image_term(cam)
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

    def check_dataset(self, where: str, cameras: Sequence[str], shapes: dict[str, tuple[int, ...]]) -> None:
        for cam in self.cameras or []:
            if cam.removeprefix(IMG_PREFIX) not in cameras:
                raise field_error(f"{where}.cameras", f"'{cam}' is not a target camera; one of {list(cameras)}")
        if self.include_state and STATE_KEY not in shapes:
            raise field_error(f"{where}.include_state",
                              f"the target dataset has no {STATE_KEY}; set include_state=false")


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
            raise field_error(f"{where}.weight_label", f"must be >= 0, got {self.weight_label}")
        if self.key not in LABEL_KEYS:
            raise field_error(f"{where}.key", f"unknown label '{self.key}'{did_you_mean(self.key, LABEL_KEYS)}; "
                                              f"one of {list(LABEL_KEYS)}")
        ds = self.dim_slice
        if ds is not None:
            if len(ds) != 2:
                raise field_error(f"{where}.dim_slice", f"must be two integers [start, stop], got {ds}")
            if ds[0] < 0 or ds[1] <= ds[0]:
                raise field_error(f"{where}.dim_slice", f"must satisfy 0 <= start < stop, got {ds}")

    @property
    def label_term(self) -> str:
        """The term's name: ``term_name``, or ``<last part of key>_lbl`` (``action_lbl``, ``state_lbl``)."""
        return self.term_name or mn.label_term(self.key.rsplit(".", 1)[-1])

    def term_kinds(self, cameras: Sequence[str]) -> dict[str, str]:
        return {self.label_term: "label"}

    def label_inputs(self) -> set[tuple[str, bool]]:
        return {(self.key, self.normalized)}

    def check_dataset(self, where: str, cameras: Sequence[str], shapes: dict[str, tuple[int, ...]]) -> None:
        if self.key not in shapes:
            raise field_error(f"{where}.key", f"the target dataset has no '{self.key}'; one of "
                                              f"{[k for k in LABEL_KEYS if k in shapes]}")
        dim = int(shapes[self.key][-1])
        if self.dim_slice is not None and self.dim_slice[1] > dim:
            raise field_error(f"{where}.dim_slice", f"{self.dim_slice} goes beyond the {self.key} dim {dim}; "
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
    # a separate OT batch of this many (target frame, partner) pairs per process beside the BC batch, encoded with
    # the policy's image encoder only (the fork's and the paper's OT dataloader: the fork's size is
    # max(1, int(batch_size * batch_ratio))); the BC batch is then unpaired and BC-only. 0 = the OT term pairs the
    # BC batch's own items (dpot.data.cotrain)
    pair_batch_size: int = 0

    def resolved_prior(self) -> str:
        """The prior in force: ``prior``, or ``temporal`` / ``none`` from ``heuristic`` when ``prior`` is None."""
        if self.prior is not None:
            return self.prior
        return "temporal" if self.heuristic else "none"

    def pairs_batches(self) -> bool:
        """Whether the batch sampler pairs source item i with target item i (a pair file, ``heuristic``'s
        temporal pairing or paired regions): what ``prior=diagonal`` needs."""
        return self.heuristic or self.pair_info_path is not None or self.paired_region

    def validate(self, where: str = "ot", check_method: bool = True) -> None:
        """Raise UserError naming ``<where>.<field>`` for a value out of range (each feature checks its own);
        ``check_method=False`` skips ``ot.method`` (its registry imports torch: the pre-check's light pass)."""
        if not self.reg > 0:
            raise field_error(f"{where}.reg", f"must be > 0 (entropic regularization), got {self.reg}; try 0.02")
        for name in ("tau_src", "tau_tgt"):
            if getattr(self, name) < 0:
                raise field_error(f"{where}.{name}", f"must be >= 0 (KL marginal penalty), got {getattr(self, name)}; "
                                                     "try 0.01")
        if self.lambda_ot < 0:
            raise field_error(f"{where}.lambda_ot", f"must be >= 0, got {self.lambda_ot}; 0 disables the OT loss")
        if not 0 < self.batch_ratio < 1:
            raise field_error(f"{where}.batch_ratio", f"must be in (0, 1) (share of source items per batch), "
                                                      f"got {self.batch_ratio}")
        if self.window_size < 0:
            raise field_error(f"{where}.window_size", f"must be >= 0 frames, got {self.window_size}")
        check_choice(f"{where}.alignment", self.alignment, ALIGNMENTS)
        check_choice(f"{where}.cost_norm", self.cost_norm, COST_NORMS)
        if self.prior is not None:
            check_choice(f"{where}.prior", self.prior, PRIORS)
        if self.resolved_prior() == "diagonal" and not self.pairs_batches():
            raise field_error(f"{where}.prior", "diagonal puts the plan on the batch's partner pairs, but this config "
                                                "pairs none; set ot.heuristic=true (temporal pairing) or give "
                                                "ot.pair_info_path (dpot pairs build), or use ot.prior=none")
        if check_method:
            from dpot.ot.registry import method_names

            check_choice(f"{where}.method", self.method, method_names())
        if self.plan_log_every < 0:
            raise field_error(f"{where}.plan_log_every",
                              f"must be >= 0 (0 = never save plans), got {self.plan_log_every}")
        if not self.prior_sigma > 0:
            raise field_error(f"{where}.prior_sigma", f"must be > 0 (phase units), got {self.prior_sigma}")
        if self.pair_batch_size < 0:
            raise field_error(f"{where}.pair_batch_size", f"must be >= 0 (pairs per process in the separate OT "
                                                          f"batch; 0 = pair the BC batch's items), got "
                                                          f"{self.pair_batch_size}")
        if self.max_iters < 1:
            raise field_error(f"{where}.max_iters", f"must be >= 1, got {self.max_iters}")
        if not self.tol > 0:
            raise field_error(f"{where}.tol", f"must be > 0, got {self.tol}")
        if self.sharpness < 0:
            raise field_error(f"{where}.sharpness", f"must be >= 0 (0 = every partner demo equally likely), got "
                                                    f"{self.sharpness}")
        if not 0 <= self.cutoff < 1:
            raise field_error(f"{where}.cutoff", f"must be in [0, 1) (partner demos below this probability are "
                                                 f"dropped), got {self.cutoff}")
        if self.topk_src_episodes is not None and self.topk_src_episodes < 1:
            raise field_error(f"{where}.topk_src_episodes", f"must be >= 1 or null (all partners), got "
                                                            f"{self.topk_src_episodes}")
        if self.lambda_ot > 0 and not self.features:
            raise field_error(f"{where}.features", "is empty while ot.lambda_ot > 0; add an embed and/or a label term, "
                                                   "or set ot.lambda_ot=0 for plain co-training")
        if self.method == "mmd" and self.lambda_ot > 0 and not any(f.embeds_images for f in self.features):
            raise field_error(f"{where}.features", 'has no embed term while ot.method="mmd" (the MMD baseline matches '
                                                   'image embeddings only); add {"type": "embed"}')
        for i, feat in enumerate(self.features):
            feat.validate(f"{where}.features[{i}]")
        weighted = (self.pair_info_path is not None or self.sharpness > 0 or self.cutoff > 0
                    or self.topk_src_episodes is not None or self.no_window)
        if weighted and self.paired_region:
            raise field_error(f"{where}.paired_region", "cannot be combined with DTW-weighted pairing (pair_info_path, "
                                                        "sharpness, cutoff, topk_src_episodes, no_window) yet; use one")
        names = [f.term_name for f in self.features if f.term_name is not None]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise field_error(f"{where}.features", f"term_name '{dup[0]}' is used twice; each term needs its own name")
