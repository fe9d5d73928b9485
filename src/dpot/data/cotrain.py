"""Two-dataset co-training batches: source/target mixing by ``batch_ratio`` and temporally paired sampling.

Batch layout (per process, ``B = batch_size``): the first ``n_src = round(batch_ratio * B)`` items come from the
source dataset, the remaining ``n_tgt = B - n_src`` from the target dataset. Each item is a :class:`SampledItem`
``(domain, index, phase, ot_pair)``: ``domain`` 0 = source / 1 = target, ``index`` the dataset's global frame
index, ``phase`` the item's aligned time in [0, 1], ``ot_pair`` whether the item takes part in the OT term.

Sampling is a pure function of ``(seed, step)`` (:meth:`CoTrainBatchSampler.global_batch`): resuming at step k
replays the same batches, and with N processes the *global* batch (N*n_src source and N*n_tgt target items) is
the same as one process with batch size N*B; rank r takes the r-th slice of each domain.

Temporal pairing (``heuristic=True``): target frames (episode e_t, frame f_t) are drawn uniformly among the
training frames; for pair i (i < min(n_src, n_tgt)) a :class:`Pairing` strategy draws the source partner of
target item i: :class:`PhasePairing` (``alignment="phase"``) a uniform source episode e_s and the frame at the
same normalized phase, ``c = round(f_t / L_t * L_s)``; :class:`DTWPairing` (``alignment="dtw"``) one of the
target episode's DTW partner episodes and the DTW-aligned frame of f_t. The source item is
``clip(c + U{-window, window}, 0, L_s - 1 - drop_n_last_frames)``. Unpaired extra items and ``heuristic=False``
draw uniformly over training frames. The item's ``phase`` is ``f / L``; with DTW the source item's phase is the
phase of the target frame it is aligned with, so the OT temporal prior compares like with like.

Paired-region OT (``paired_region=True``): the OT term pairs target items only with source items of the
target episode's region (:mod:`dpot.data.regions`), while behaviour cloning sees all source data. The source
half of the batch is first drawn uniformly over all source frames, as without ``paired_region`` (so every region
keeps its natural share of the BC batch); then target item i takes one not yet used source slot of its own
region, if the batch has one, and that slot becomes its temporal partner from the region's episodes (position i,
``ot_pair`` True; with ``heuristic=False`` uniform over the region's frames, with DTW the partner subsets must come
from those episodes). The other slots stay where they were drawn, ``ot_pair`` False (left out of the OT term).
With target demos in one region and a source split evenly, about half the target items get a partner.

DTW-weighted pairing (a pair file ``ot.pair_info_path``, or dpot's own DTW pairs when ``sharpness`` / ``cutoff`` /
``topk_src_episodes`` / ``no_window`` are set; :mod:`dpot.data.pairs`): :class:`WeightedPairing` draws target item
i's partner demo with ``p ∝ exp(-sharpness * dist)`` among the ``topk`` closest (``p < cutoff`` dropped), the
centre among the source frames aligned with the paired target frame nearest f_t, the frame within the window (or
anywhere in the demo with ``no_window``); the source slots are claimed as under ``paired_region`` (the partner
demos playing the region), so BC keeps the natural source mix.

A separate OT pair batch (``pair_batch_size`` P > 0, ``ot.pair_batch_size``; the fork's and the paper's OT
dataloader beside the BC one): the BC half is drawn uniformly in both domains with no pairing (``ot_pair`` False,
the BC mix of naive co-training), and P pairs per process are appended after it: P target frames drawn uniformly
over the training frames, each with its partner from the pairing (any of the above; uniform source frames when
there is none), from their own stream ``default_rng([seed, OT_PAIRS, step])``. A rank's batch is then
``[n_src BC source, n_tgt BC target, P pair sources, P pair targets]``; only the pair rows enter the OT term
and only the BC rows the BC loss (:mod:`dpot.train.loop`). Every pair is a partner pair, whatever the cutoff.

DTW paths (:class:`DTWAlignment`) are computed once per (target episode, source episode) pair, for a fixed
random subset of at most ``max_partners`` source episodes per target episode (O(L_s * L_t) each), on the
per-episode action trajectories, and cached in an ``.npz`` file next to the run.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch

from dpot import atomic
from dpot.data import seeds
from dpot.data.dtw import dtw_path
from dpot.data.regions import region_partners

logger = logging.getLogger(__name__)

SRC, TGT = 0, 1


class SampledItem(NamedTuple):
    """One sampled frame: what :class:`CoTrainDataset` is indexed with."""

    domain: int
    index: int
    phase: float
    ot_pair: bool = True


@dataclass
class EpisodeTable:
    """Episodes of one dataset: ``episode`` ids, ``start`` global index, ``length`` in frames."""

    episode: np.ndarray
    start: np.ndarray
    length: np.ndarray

    @classmethod
    def from_meta(cls, meta) -> EpisodeTable:
        """Read ``meta.episodes`` (``episode_index``, ``dataset_from_index``, ``length``)."""
        eps = meta.episodes
        ep = np.asarray(eps["episode_index"], dtype=np.int64)
        start = np.asarray(eps["dataset_from_index"], dtype=np.int64)
        length = np.asarray(eps["length"], dtype=np.int64)
        return cls(ep, start, length)

    def subset(self, episodes) -> EpisodeTable:
        """The rows whose episode id is in ``episodes`` (table order kept)."""
        keep = np.isin(self.episode, np.asarray(list(episodes), dtype=np.int64))
        return EpisodeTable(self.episode[keep], self.start[keep], self.length[keep])

    def usable(self, drop_n_last_frames: int) -> np.ndarray:
        """Frames per episode that may be sampled: ``max(length - drop_n_last_frames, 1)``."""
        return np.maximum(self.length - int(drop_n_last_frames), 1)

    def __len__(self) -> int:
        return len(self.episode)


class DTWAlignment:
    """Cached DTW maps target frame -> source frame for a fixed subset of (target, source) episode pairs.

    ``tgt_traj`` / ``src_traj``: per-episode action trajectories ``[L, A]``. For each target episode,
    ``partners[e_t]`` = at most ``max_partners`` source episodes drawn without replacement (``default_rng(seed)``)
    from ``candidates[e_t]`` (default: every source episode; paired-region OT passes
    :func:`dpot.data.regions.region_partners`). ``t2s[(e_t, e_s)]`` maps each target frame to its (mean) aligned
    source frame, ``s2t`` the reverse. The paths are cached in ``cache_path`` (written atomically).
    """

    def __init__(self, tgt_traj: dict[int, np.ndarray], src_traj: dict[int, np.ndarray], *, seed: int,
                 max_partners: int = 8, cache_path: str | Path | None = None,
                 candidates: dict[int, list[int]] | None = None):
        rng = np.random.default_rng(seed)
        src_eps = sorted(src_traj)
        self.partners: dict[int, list[int]] = {}
        for et in sorted(tgt_traj):
            pool = src_eps if candidates is None else sorted(int(e) for e in candidates[et])
            k = min(max_partners, len(pool))
            self.partners[et] = sorted(rng.choice(pool, size=k, replace=False).tolist())
        cache: dict[str, np.ndarray] = {}
        if cache_path is not None and Path(cache_path).exists():
            with np.load(cache_path) as z:
                cache = {k: z[k] for k in z.files}
        computed = 0
        self.t2s: dict[tuple[int, int], np.ndarray] = {}
        self.s2t: dict[tuple[int, int], np.ndarray] = {}
        for et, ess in self.partners.items():
            for es in ess:
                key = f"{et}_{es}"
                if key not in cache or f"r{key}" not in cache:
                    cache[key] = dtw_path(tgt_traj[et], src_traj[es])
                    cache[f"r{key}"] = dtw_path(src_traj[es], tgt_traj[et])
                    computed += 1
                self.t2s[(et, es)] = cache[key]
                self.s2t[(et, es)] = cache[f"r{key}"]
        logger.info("DTW: %d episode pairs computed, %d from the cache", computed,
                    sum(map(len, self.partners.values())) - computed)
        if computed and cache_path is not None:
            buf = io.BytesIO()
            np.savez(buf, **cache)
            atomic.write_bytes(cache_path, buf.getvalue())


class Pairing(Protocol):
    """Draws the source partner of a target frame. Episodes are rows of the sampler's :class:`EpisodeTable`s."""

    def partner(self, rng: np.random.Generator, tgt_episode: int, tgt_frame: int) -> tuple[int, int, float]:
        """``(src_episode, src_frame, phase)`` for target row ``tgt_episode``, frame ``tgt_frame``."""
        ...


class _WindowedPairing:
    """Shared part of the temporal pairings: the source frame is ``clip(centre + U{-w, w}, 0, usable - 1)``."""

    def __init__(self, src: EpisodeTable, tgt: EpisodeTable, *, window_size: int, drop_n_last_frames: int,
                 allowed: list[np.ndarray] | None):
        self.src, self.tgt, self.window = src, tgt, int(window_size)
        self.last = np.maximum(src.usable(drop_n_last_frames) - 1, 0)
        self.allowed = allowed

    def _frame(self, rng: np.random.Generator, e_s: int, centre: int) -> int:
        return int(np.clip(centre + rng.integers(-self.window, self.window + 1), 0, int(self.last[e_s])))


class PhasePairing(_WindowedPairing):
    """Same normalized phase: a uniform source episode (within ``allowed[e_t]`` rows when given), centre frame
    ``round(f_t / L_t * L_s)``; the item's phase is ``f_s / L_s``."""

    def partner(self, rng, tgt_episode, tgt_frame):
        if self.allowed is None:
            e_s = int(rng.integers(len(self.src)))
        else:
            rows = self.allowed[tgt_episode]
            e_s = int(rows[rng.integers(len(rows))])
        centre = int(round(_phase(tgt_frame, self.tgt.length[tgt_episode]) * self.src.length[e_s]))
        f_s = self._frame(rng, e_s, centre)
        return e_s, f_s, _phase(f_s, self.src.length[e_s])


class DTWPairing(_WindowedPairing):
    """DTW: one of the target episode's DTW partner episodes, centre = the DTW-aligned frame of f_t; the item's
    phase is the phase of the target frame that ``f_s`` aligns with."""

    def __init__(self, src: EpisodeTable, tgt: EpisodeTable, dtw: DTWAlignment, **kwargs):
        super().__init__(src, tgt, **kwargs)
        self.dtw = dtw
        self.row = {int(e): i for i, e in enumerate(src.episode)}
        if self.allowed is not None:
            for e_t, rows in enumerate(self.allowed):
                ep_t = int(tgt.episode[e_t])
                outside = sorted(set(dtw.partners[ep_t]) - {int(src.episode[r]) for r in rows})
                if outside:
                    raise ValueError(f"DTW partners {outside} of target episode {ep_t} are outside its region; "
                                     "build DTWAlignment with candidates=region_partners(...)")

    def partner(self, rng, tgt_episode, tgt_frame):
        ep_t = int(self.tgt.episode[tgt_episode])
        partners = self.dtw.partners[ep_t]
        ep_s = int(partners[rng.integers(len(partners))])
        e_s = self.row[ep_s]
        centre = int(round(self.dtw.t2s[(ep_t, ep_s)][tgt_frame]))
        f_s = self._frame(rng, e_s, centre)
        return e_s, f_s, _phase(self.dtw.s2t[(ep_t, ep_s)][f_s], self.tgt.length[tgt_episode])


class WeightedPairing(_WindowedPairing):
    """DTW-weighted partners from a pair file or dpot's own DTW (:mod:`dpot.data.pairs`): for target row e_t a
    partner demo d drawn with the probabilities of :func:`dpot.data.pairs.partner_distribution` (``sharpness``,
    ``topk``, ``cutoff``), one of the source frames aligned with the paired target frame nearest f_t (uniform among
    them) as the centre, then the windowed frame (any usable frame of the demo with ``no_window``). The item's
    phase is the target frame's, so the temporal prior compares the aligned times. A target episode the pairs do
    not cover falls back to :class:`PhasePairing`. ``allowed_sets[e_t]``: the source rows it can pair with (None =
    any; the batch sampler's slot claiming, as paired-region OT does)."""

    def __init__(self, src: EpisodeTable, tgt: EpisodeTable, pair_info, *, sharpness: float = 0.0,
                 topk: int | None = None, cutoff: float = 0.0, no_window: bool = False, **kwargs):
        from dpot.data.pairs import partner_distribution

        super().__init__(src, tgt, **kwargs)
        self.no_window = bool(no_window)
        self.usable = src.usable(kwargs.get("drop_n_last_frames", 0))
        self.fallback = PhasePairing(src, tgt, **kwargs)
        row = {int(e): i for i, e in enumerate(src.episode)}
        self.cands: list[tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, list[list[int]]]]] | None] = []
        self.allowed_sets: list[set[int] | None] = []
        for ep_t in tgt.episode.tolist():
            partners = [q for q in pair_info.get(int(ep_t), []) if q.src_episode in row]
            kept, prob = partner_distribution(partners, sharpness=sharpness, topk=topk, cutoff=cutoff)
            if not kept:
                self.cands.append(None)
                self.allowed_sets.append(None)
                continue
            rows = np.asarray([row[q.src_episode] for q in kept], dtype=np.int64)
            maps = [(np.asarray(sorted(q.pairing), dtype=np.int64), [q.pairing[k] for k in sorted(q.pairing)])
                    for q in kept]
            self.cands.append((rows, prob, maps))
            self.allowed_sets.append(set(rows.tolist()))

    def probabilities(self, tgt_episode: int) -> dict[int, float]:
        """Source row -> probability of being the partner demo of target row ``tgt_episode`` (empty: fallback)."""
        c = self.cands[tgt_episode]
        return {} if c is None else {int(r): float(p) for r, p in zip(c[0], c[1])}

    def partner(self, rng, tgt_episode, tgt_frame):
        c = self.cands[tgt_episode]
        if c is None:
            return self.fallback.partner(rng, tgt_episode, tgt_frame)
        rows, prob, maps = c
        k = int(rng.choice(len(rows), p=prob)) if len(rows) > 1 else 0
        e_s = int(rows[k])
        ph = _phase(tgt_frame, self.tgt.length[tgt_episode])
        if self.no_window:
            return e_s, int(rng.random() * self.usable[e_s]), ph
        keys, frames = maps[k]
        pos = int(np.searchsorted(keys, tgt_frame))
        if pos == len(keys) or (pos > 0 and tgt_frame - keys[pos - 1] <= keys[pos] - tgt_frame):
            pos -= 1
        aligned = frames[pos]
        centre = aligned[int(rng.integers(len(aligned)))] if len(aligned) > 1 else aligned[0]
        return e_s, self._frame(rng, e_s, int(centre)), ph


class RegionUniformPairing:
    """No temporal pairing (``heuristic=False``) but paired regions: a frame drawn uniformly over the usable
    frames of the source episodes in ``allowed[e_t]``; phase ``f_s / L_s``."""

    def __init__(self, src: EpisodeTable, *, drop_n_last_frames: int, allowed: list[np.ndarray]):
        self.src, self.allowed = src, allowed
        self.usable = src.usable(drop_n_last_frames)

    def partner(self, rng, tgt_episode, tgt_frame):
        rows = self.allowed[tgt_episode]
        w = self.usable[rows]
        e_s = int(rows[rng.choice(len(rows), p=w / w.sum())])
        f_s = int(rng.random() * self.usable[e_s])
        return e_s, f_s, _phase(f_s, self.src.length[e_s])


def make_pairing(src: EpisodeTable, tgt: EpisodeTable, *, heuristic: bool, alignment: str = "phase",
                 dtw: DTWAlignment | None = None, pair_info=None, window_size: int = 0, drop_n_last_frames: int = 0,
                 allowed: list[np.ndarray] | None = None, sharpness: float = 0.0, topk: int | None = None,
                 cutoff: float = 0.0, no_window: bool = False) -> Pairing | None:
    """The :class:`Pairing` of a sampler (None = no temporal pairing): :class:`WeightedPairing` with
    ``pair_info``; else without ``heuristic`` uniform frames of the item's region (:class:`RegionUniformPairing`,
    only with ``allowed``); else :class:`DTWPairing` (``alignment="dtw"``) or :class:`PhasePairing`."""
    windowed = {"window_size": window_size, "drop_n_last_frames": drop_n_last_frames, "allowed": allowed}
    if pair_info is not None:
        return WeightedPairing(src, tgt, pair_info, sharpness=sharpness, topk=topk, cutoff=cutoff,
                               no_window=no_window, **windowed)
    if not heuristic:
        return None if allowed is None else RegionUniformPairing(src, drop_n_last_frames=drop_n_last_frames,
                                                                 allowed=allowed)
    if alignment == "dtw":
        if dtw is None:
            raise ValueError("alignment='dtw' needs a DTWAlignment")
        return DTWPairing(src, tgt, dtw, **windowed)
    if alignment == "phase":
        return PhasePairing(src, tgt, **windowed)
    raise ValueError(f"alignment must be 'phase' or 'dtw', got {alignment!r}")


class CoTrainBatchSampler:
    """Batch sampler of :class:`SampledItem` lists; deterministic per ``(seed, step)``.

    Iterating yields this rank's batch for steps ``start_step, start_step + 1, ...`` forever. Position is the step
    (``state_dict()["step"]``), so resume needs nothing else. ``paired_region`` needs ``src_regions`` and
    ``tgt_regions`` (:func:`dpot.data.regions.episode_regions`); see the module docstring.
    """

    def __init__(self, src: EpisodeTable, tgt: EpisodeTable, *, batch_size: int, batch_ratio: float, seed: int,
                 heuristic: bool, window_size: int, drop_n_last_frames: int = 0, num_processes: int = 1,
                 rank: int = 0, alignment: str = "phase", dtw: DTWAlignment | None = None, start_step: int = 0,
                 paired_region: bool = False, src_regions: dict[int, str] | None = None,
                 tgt_regions: dict[int, str] | None = None, pair_info=None, sharpness: float = 0.0,
                 topk_src_episodes: int | None = None, cutoff: float = 0.0, no_window: bool = False,
                 pair_batch_size: int = 0):
        self.n_src, self.n_tgt = split_batch(batch_size, batch_ratio)
        self.n_pair = int(pair_batch_size)
        self.src, self.tgt = src, tgt
        self.seed, self.heuristic = int(seed), bool(heuristic)
        self.drop = int(drop_n_last_frames)
        self.world, self.rank = int(num_processes), int(rank)
        self.paired_region = bool(paired_region)
        self.step = int(start_step)
        allowed = None
        if self.paired_region:
            partners = region_partners(tgt.episode.tolist(), src.episode.tolist(), tgt_regions, src_regions)
            row = {int(e): i for i, e in enumerate(src.episode)}
            allowed = [np.asarray([row[e] for e in partners[int(ep)]], dtype=np.int64) for ep in tgt.episode]
            self._allowed_sets = [set(a.tolist()) for a in allowed]
        if pair_info is not None and self.paired_region:
            raise ValueError("pair_info and paired_region cannot be combined yet")
        self.pairing = make_pairing(src, tgt, heuristic=heuristic, alignment=alignment, dtw=dtw, pair_info=pair_info,
                                    window_size=window_size, drop_n_last_frames=self.drop, allowed=allowed,
                                    sharpness=sharpness, topk=topk_src_episodes, cutoff=cutoff, no_window=no_window)
        self.claim_slots = self.paired_region or isinstance(self.pairing, WeightedPairing)
        if isinstance(self.pairing, WeightedPairing):
            self._allowed_sets = self.pairing.allowed_sets

    @classmethod
    def from_config(cls, ot, src: EpisodeTable, tgt: EpisodeTable, *, batch_size: int, seed: int,
                    drop_n_last_frames: int = 0, num_processes: int = 1, rank: int = 0,
                    dtw: DTWAlignment | None = None, src_regions: dict[int, str] | None = None,
                    tgt_regions: dict[int, str] | None = None, pair_info=None) -> CoTrainBatchSampler:
        """The sampler of a run's ``ot`` section (:class:`dpot.config.ot.OTConfig`): its batch ratio, pairing
        (``heuristic``, ``alignment``, ``window_size``, ``paired_region``, the DTW weighting) and pair batch
        (``pair_batch_size``, only when the OT term is on: ``lambda_ot > 0``)."""
        return cls(src, tgt, batch_size=batch_size, batch_ratio=ot.batch_ratio, seed=seed, heuristic=ot.heuristic,
                   window_size=ot.window_size, drop_n_last_frames=drop_n_last_frames, num_processes=num_processes,
                   rank=rank, alignment=ot.alignment, dtw=dtw, paired_region=ot.paired_region,
                   src_regions=src_regions, tgt_regions=tgt_regions, pair_info=pair_info, sharpness=ot.sharpness,
                   topk_src_episodes=ot.topk_src_episodes, cutoff=ot.cutoff, no_window=ot.no_window,
                   pair_batch_size=ot.pair_batch_size if ot.lambda_ot > 0 else 0)

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])

    def _uniform(self, rng, table: EpisodeTable, n: int):
        usable = table.usable(self.drop)
        # uniform over frames: episode chosen proportionally to its usable length
        e = rng.choice(len(table), size=n, p=usable / usable.sum())
        f = (rng.random(n) * usable[e]).astype(np.int64)
        return e, f

    def global_batch(self, step: int) -> tuple[list[SampledItem], list[SampledItem]]:
        """All processes' ``(src_items, tgt_items)`` for ``step``; source item i < min(ns, nt) partners target
        item i when there is a pairing (under ``paired_region`` only where its ``ot_pair`` is True)."""
        rng = np.random.default_rng([self.seed, seeds.SAMPLER, int(step)])
        ns, nt = self.n_src * self.world, self.n_tgt * self.world
        te, tf = self._uniform(rng, self.tgt, nt)
        if self.n_pair:  # the OT term has its own pair batch (global_pairs): BC rows unpaired, out of the OT term
            se, sf = self._uniform(rng, self.src, ns)
            return ([SampledItem(SRC, int(self.src.start[e] + f), _phase(f, self.src.length[e]), False)
                     for e, f in zip(se, sf)],
                    [SampledItem(TGT, int(self.tgt.start[e] + f), _phase(f, self.tgt.length[e]), False)
                     for e, f in zip(te, tf)])
        tgt_items = [SampledItem(TGT, int(self.tgt.start[e] + f), _phase(f, self.tgt.length[e]))
                     for e, f in zip(te, tf)]
        if self.claim_slots:
            return self._paired_region_sources(rng, ns, te, tf), tgt_items
        n_pair = min(ns, nt) if self.pairing is not None else 0
        src_items = []
        for i in range(n_pair):
            e_s, f_s, ph = self.pairing.partner(rng, int(te[i]), int(tf[i]))
            src_items.append(SampledItem(SRC, int(self.src.start[e_s] + f_s), ph))
        if ns > n_pair:
            se, sf = self._uniform(rng, self.src, ns - n_pair)
            src_items += [SampledItem(SRC, int(self.src.start[e] + f), _phase(f, self.src.length[e]))
                          for e, f in zip(se, sf)]
        return src_items, tgt_items

    def _paired_region_sources(self, rng, ns: int, te, tf) -> list[SampledItem]:
        """The ``ns`` source items under ``paired_region`` or DTW-weighted pairing (module docstring): uniform
        slots, then target item i (i < ns) claims the first unused slot whose episode is in its region (its
        partner demos; None = any) and gets its partner there."""
        se, sf = self._uniform(rng, self.src, ns)
        used = np.zeros(ns, dtype=bool)
        items: list[SampledItem | None] = [None] * ns
        for i in range(min(ns, len(te))):
            allowed = self._allowed_sets[int(te[i])]
            j = next((j for j in range(ns) if not used[j] and (allowed is None or int(se[j]) in allowed)), None)
            if j is None:
                continue
            used[j] = True
            e_s, f_s, ph = self.pairing.partner(rng, int(te[i]), int(tf[i]))
            items[i] = SampledItem(SRC, int(self.src.start[e_s] + f_s), ph)
        rest = iter(SampledItem(SRC, int(self.src.start[se[j]] + sf[j]), _phase(sf[j], self.src.length[se[j]]), False)
                    for j in range(ns) if not used[j])
        return [it if it is not None else next(rest) for it in items]

    def global_pairs(self, step: int) -> tuple[list[SampledItem], list[SampledItem]]:
        """All processes' OT pair batch for ``step`` (``pair_batch_size * num_processes`` pairs; empty when
        ``pair_batch_size`` is 0): ``(sources, targets)``, source i the partner of target i."""
        n = self.n_pair * self.world
        if n == 0:
            return [], []
        rng = np.random.default_rng([self.seed, seeds.OT_PAIRS, int(step)])
        te, tf = self._uniform(rng, self.tgt, n)
        tgt_items = [SampledItem(TGT, int(self.tgt.start[e] + f), _phase(f, self.tgt.length[e]))
                     for e, f in zip(te, tf)]
        if self.pairing is None:
            se, sf = self._uniform(rng, self.src, n)
            return ([SampledItem(SRC, int(self.src.start[e] + f), _phase(f, self.src.length[e]))
                     for e, f in zip(se, sf)], tgt_items)
        src_items = []
        for e_t, f_t in zip(te, tf):
            e_s, f_s, ph = self.pairing.partner(rng, int(e_t), int(f_t))
            src_items.append(SampledItem(SRC, int(self.src.start[e_s] + f_s), ph))
        return src_items, tgt_items

    def batch_for_step(self, step: int) -> list[SampledItem]:
        """This rank's batch: its slice of the source items, then its slice of the target items, then (with a pair
        batch) its slices of the pair sources and the pair targets."""
        src_items, tgt_items = self.global_batch(step)
        r = self.rank
        batch = src_items[r * self.n_src:(r + 1) * self.n_src] + tgt_items[r * self.n_tgt:(r + 1) * self.n_tgt]
        if self.n_pair:
            ps, pt = self.global_pairs(step)
            p = self.n_pair
            batch += ps[r * p:(r + 1) * p] + pt[r * p:(r + 1) * p]
        return batch

    def __iter__(self):
        while True:
            batch = self.batch_for_step(self.step)
            self.step += 1
            yield batch

    def __len__(self) -> int:  # effectively infinite; DataLoader only needs it for len()
        return 2**31


def _phase(frame: int, length: int) -> float:
    return float(frame) / float(max(int(length), 1))


def split_batch(batch_size: int, batch_ratio: float) -> tuple[int, int]:
    """``(n_src, n_tgt)`` with ``n_src = round(batch_ratio * batch_size)`` (Python's round-half-even)."""
    n_src = int(round(batch_ratio * batch_size))
    return n_src, int(batch_size) - n_src


class CoTrainDataset(torch.utils.data.Dataset):
    """Index with a :class:`SampledItem`; returns the LeRobot item with source cameras renamed.

    Returned keys: ``keys`` (target names: cameras, state, action) + their ``*_is_pad`` flags, ``frame_index``,
    ``episode_index``, ``domain`` (long: 0 src / 1 tgt), ``phase`` (float32) and ``ot_pair`` (bool); the default
    collate stacks them into ``[B]`` tensors.

    Cameras come out as uint8 ``[..., C, H, W]`` in both domains (a PNG domain's ``v / 255`` floats are turned
    back into ``v`` exactly; the trainer's ``float() / 255`` gives LeRobot's floats again), so a video domain and
    a PNG domain stack into one batch. A source camera whose size differs from its target camera is resized to
    the target's size (what the policy is built for) with :func:`dpot.data.framecache.resize_frames`.
    Construction builds the video frame caches (:meth:`dpot.data.frames.FrameReader.prepare`) in the calling
    process, before any DataLoader worker starts.

    ``image_size`` ``(h, w)`` (e.g. the policy's ``resize_shape``): every camera of both domains is delivered at
    that size, resized once when the video cache is built (PNG: per read). The policy's own ``Resize`` then has
    nothing left to do, and a batch is ``H*W / (h*w)`` times smaller to move between processes (480x640 ->
    96x128: 25x). Tolerance against resizing inside the policy (torchvision ``Resize``, bilinear + antialias
    on float frames): the frame is rounded to uint8 after the resize, so each pixel differs by at most
    0.5/255 before normalization (tests/train/test_mismatch_inputs.py checks it).

    ``image_transforms`` (LeRobot's ``ImageTransforms`` when ``dataset.image_transforms.enable``): applied to each
    camera's ``[T, C, H, W]`` frames of every item of both domains, as ``LeRobotDataset`` applies it (one draw of
    the random parameters per camera and item), on the ``[0, 1]`` floats, the result rounded back to uint8, after
    any ``image_size`` resize (the trainer passes no ``image_size`` when transforms are on, so they see the stored
    frames as in ``lerobot-train``: :func:`dpot.train.build.delivery_size`); off inside :meth:`without_transforms`.
    """

    def __init__(self, source, target, *, camera_map: dict[str, str], keys: list[str],
                 image_size: tuple[int, int] | None = None, image_transforms=None):
        from dpot.data.frames import FrameReader

        self.image_transforms = image_transforms

        self.rename = {SRC: dict(camera_map), TGT: {}}
        self.keys = list(keys)
        inv = {v: k for k, v in self.rename[SRC].items()}
        tgt_hw = {k: image_hw(target.meta.features[k]) for k in self.keys if k in target.meta.camera_keys}
        if image_size is not None:
            tgt_hw = {k: tuple(int(x) for x in image_size) for k in tgt_hw}
        src_size = {inv.get(k, k): hw for k, hw in tgt_hw.items()
                    if image_hw(source.meta.features[inv.get(k, k)]) != hw}
        tgt_size = {k: hw for k, hw in tgt_hw.items() if image_hw(target.meta.features[k]) != hw}
        self.camera_keys = list(tgt_hw)
        # items as LeRobotDataset returns them, without its per-row image decoding (dpot.data.frames)
        self.datasets = {SRC: FrameReader(source, [inv.get(k, k) for k in self.keys], image_size=src_size).prepare(),
                         TGT: FrameReader(target, self.keys, image_size=tgt_size).prepare()}

    def __len__(self) -> int:
        return len(self.datasets[SRC]) + len(self.datasets[TGT])

    @contextlib.contextmanager
    def without_transforms(self):
        """Items without ``image_transforms`` inside the block (the held-out batches, as LeRobot's val set)."""
        saved, self.image_transforms = self.image_transforms, None
        try:
            yield self
        finally:
            self.image_transforms = saved

    def __getitem__(self, item):
        domain, idx, phase, ot_pair = item
        raw = self.datasets[domain][int(idx)]
        inv = {v: k for k, v in self.rename[domain].items()}
        out = {}
        for key in self.keys:
            src_key = inv.get(key, key)
            val = raw[src_key]
            if key in self.camera_keys and val.dtype != torch.uint8:
                val = (val * 255).round().to(torch.uint8)  # exact for LeRobot's v / 255 (ToTensor)
            if key in self.camera_keys and self.image_transforms is not None:
                val = (self.image_transforms(val.float() / 255).clamp(0, 1) * 255).round().to(torch.uint8)
            out[key] = val
            pad = f"{src_key}_is_pad"
            if pad in raw:
                out[f"{key}_is_pad"] = raw[pad]
        out["frame_index"] = raw["frame_index"]
        out["episode_index"] = raw["episode_index"]
        out["domain"] = torch.tensor(domain, dtype=torch.long)
        out["phase"] = torch.tensor(phase, dtype=torch.float32)
        out["ot_pair"] = torch.tensor(bool(ot_pair), dtype=torch.bool)
        return out


def image_hw(feature: dict) -> tuple[int, int]:
    """``(height, width)`` of a LeRobot image/video feature (``shape`` ordered by its ``names``, default HWC)."""
    shape = [int(x) for x in feature["shape"]]
    names = list(feature.get("names") or [])
    if "height" in names and "width" in names:
        return shape[names.index("height")], shape[names.index("width")]
    return shape[0], shape[1]


def split_episodes(episodes: list[int], val_fraction: float, seed: int) -> list[int]:
    """Held-out target episodes: ``max(1, round(val_fraction * n))`` episodes drawn with ``seed`` (none if
    fraction 0).

    At least one episode always stays for training.
    """
    n = len(episodes)
    if val_fraction <= 0 or n < 2:
        return []
    k = min(max(1, int(round(val_fraction * n))), n - 1)
    rng = np.random.default_rng([int(seed), seeds.VAL_SPLIT])
    return sorted(int(e) for e in rng.choice(np.asarray(episodes), size=k, replace=False))


def val_batches(tgt: EpisodeTable, *, n_batches: int, batch_size: int, seed: int) -> list[list[SampledItem]]:
    """A fixed list of ``n_batches`` batches of held-out target items (same every evaluation; ``ot_pair`` True).

    Frames are drawn without replacement while possible (all frames of the held-out episodes).
    """
    if len(tgt) == 0:
        return []
    items = [SampledItem(TGT, int(s + f), _phase(f, L))
             for s, L in zip(tgt.start, tgt.length) for f in range(int(L))]
    rng = np.random.default_rng([int(seed), seeds.VAL_BATCHES])
    order = rng.permutation(len(items))
    need = n_batches * batch_size
    reps = math.ceil(need / len(items))
    order = np.concatenate([order] * reps)[:need]
    return [[items[i] for i in order[b * batch_size:(b + 1) * batch_size]] for b in range(n_batches)]
