"""Two-dataset co-training batches: source/target mixing by ``batch_ratio`` and temporally paired sampling.

Batch layout (per process, ``B = batch_size``): the first ``n_src = round(batch_ratio * B)`` items come from the
source dataset, the remaining ``n_tgt = B - n_src`` from the target dataset. Each item carries ``domain``
(0 = source, 1 = target) and ``phase`` (the item's aligned time in [0, 1]).

Sampling is a pure function of ``(seed, step)`` (:meth:`CoTrainBatchSampler.global_batch`): resuming at step k
replays the same batches, and with N processes the *global* batch (N*n_src source and N*n_tgt target items) is
the same as one process with batch size N*B; rank r takes the r-th slice of each domain.

Temporal pairing (``heuristic=True``): for pair i (i < min(n_src, n_tgt)) a target frame (episode e_t, frame
f_t) is drawn uniformly among the training frames; a source episode e_s is drawn; the corresponding source frame
is ``c = round(f_t / L_t * L_s)`` (``alignment="phase"``: same normalized phase
``phase = frame_index / episode_length``) or the DTW-aligned frame of f_t (``alignment="dtw"``); the source
item is ``clip(c + U{-window, window}, 0, L_s - 1 - drop_n_last_frames)``. Unpaired extra items and
``heuristic=False`` draw uniformly over training frames. The item's ``phase`` is ``f / L``; with DTW the source item's phase is the phase of the target
frame it is aligned with, so the OT temporal prior compares like with like.

DTW paths are computed once per (target episode, source episode) pair, for a fixed random subset of at most
``dtw_max_partners`` source episodes per target episode (O(L_s * L_t) each) on the action trajectories, and cached
in an ``.npz`` file next to the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SRC, TGT = 0, 1
PASS_KEYS_SUFFIX = ("_is_pad",)


@dataclass
class EpisodeTable:
    """Episodes of one dataset: ``episode`` ids, ``start`` global index, ``length`` in frames."""

    episode: np.ndarray
    start: np.ndarray
    length: np.ndarray

    @classmethod
    def from_meta(cls, meta, episodes: list[int] | None = None) -> EpisodeTable:
        """Read ``meta.episodes`` (``episode_index``, ``dataset_from_index``, ``length``); keep ``episodes`` if given."""
        eps = meta.episodes
        ep = np.asarray(eps["episode_index"], dtype=np.int64)
        start = np.asarray(eps["dataset_from_index"], dtype=np.int64)
        length = np.asarray(eps["length"], dtype=np.int64)
        if episodes is not None:
            keep = np.isin(ep, np.asarray(episodes, dtype=np.int64))
            ep, start, length = ep[keep], start[keep], length[keep]
        return cls(ep, start, length)

    def subset(self, episodes) -> EpisodeTable:
        keep = np.isin(self.episode, np.asarray(list(episodes), dtype=np.int64))
        return EpisodeTable(self.episode[keep], self.start[keep], self.length[keep])

    def __len__(self) -> int:
        return len(self.episode)


def dtw_path(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Dynamic time warping of ``x`` ``[Lx, d]`` onto ``y`` ``[Ly, d]`` (squared Euclidean cost).

    Returns ``map_xy`` ``[Lx]``: for each frame of x, the mean index of the y frames on the optimal path.
    """
    lx, ly = len(x), len(y)
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    acc = np.full((lx + 1, ly + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, lx + 1):
        row = cost[i - 1]
        prev = acc[i - 1]
        cur = acc[i]
        diag_up = np.minimum(prev[:-1], prev[1:])  # (i-1, j-1), (i-1, j)
        for j in range(1, ly + 1):
            cur[j] = row[j - 1] + min(diag_up[j - 1], cur[j - 1])
    i, j = lx, ly
    pairs = []
    while i > 0 and j > 0:
        pairs.append((i - 1, j - 1))
        k = np.argmin([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]])
        if k == 0:
            i, j = i - 1, j - 1
        elif k == 1:
            i -= 1
        else:
            j -= 1
    out = np.zeros(lx)
    cnt = np.zeros(lx)
    for a, b in pairs:
        out[a] += b
        cnt[a] += 1
    return out / np.maximum(cnt, 1)


class DTWAlignment:
    """Cached DTW maps target frame -> source frame for a fixed subset of (target, source) episode pairs."""

    def __init__(self, tgt_traj: dict[int, np.ndarray], src_traj: dict[int, np.ndarray], *, seed: int,
                 max_partners: int = 8, cache_path: str | Path | None = None):
        rng = np.random.default_rng(seed)
        src_eps = sorted(src_traj)
        self.partners: dict[int, list[int]] = {}
        for et in sorted(tgt_traj):
            k = min(max_partners, len(src_eps))
            self.partners[et] = sorted(rng.choice(src_eps, size=k, replace=False).tolist())
        cache: dict[str, np.ndarray] = {}
        if cache_path is not None and Path(cache_path).exists():
            with np.load(cache_path) as z:
                cache = {k: z[k] for k in z.files}
        changed = False
        self.t2s: dict[tuple[int, int], np.ndarray] = {}
        self.s2t: dict[tuple[int, int], np.ndarray] = {}
        for et, ess in self.partners.items():
            for es in ess:
                key = f"{et}_{es}"
                if key not in cache or f"r{key}" not in cache:
                    cache[key] = dtw_path(tgt_traj[et], src_traj[es])
                    cache[f"r{key}"] = dtw_path(src_traj[es], tgt_traj[et])
                    changed = True
                self.t2s[(et, es)] = cache[key]
                self.s2t[(et, es)] = cache[f"r{key}"]
        if changed and cache_path is not None:
            Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(str(cache_path) + ".tmp.npz")
            np.savez(tmp, **cache)
            tmp.replace(cache_path)


class CoTrainBatchSampler:
    """Batch sampler of ``(domain, global_index, phase)`` triples; deterministic per ``(seed, step)``.

    Iterating yields this rank's batch for steps ``start_step, start_step + 1, ...`` forever. Position is the step
    (``state_dict()["step"]``), so resume needs nothing else.
    """

    def __init__(self, src: EpisodeTable, tgt: EpisodeTable, *, batch_size: int, batch_ratio: float, seed: int,
                 heuristic: bool, window_size: int, drop_n_last_frames: int = 0, num_processes: int = 1,
                 rank: int = 0, alignment: str = "phase", dtw: DTWAlignment | None = None, start_step: int = 0):
        self.n_src, self.n_tgt = split_batch(batch_size, batch_ratio)
        self.src, self.tgt = src, tgt
        self.seed, self.heuristic, self.window = int(seed), bool(heuristic), int(window_size)
        self.drop = int(drop_n_last_frames)
        self.world, self.rank = int(num_processes), int(rank)
        self.alignment, self.dtw = alignment, dtw
        self.step = int(start_step)
        if alignment == "dtw" and heuristic and dtw is None:
            raise ValueError("alignment='dtw' needs a DTWAlignment")

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])

    def _usable(self, table: EpisodeTable) -> np.ndarray:
        return np.maximum(table.length - self.drop, 1)

    def _uniform(self, rng, table: EpisodeTable, n: int):
        usable = self._usable(table)
        # uniform over frames: episode chosen proportionally to its usable length
        e = rng.choice(len(table), size=n, p=usable / usable.sum())
        f = (rng.random(n) * usable[e]).astype(np.int64)
        return e, f

    def global_batch(self, step: int) -> tuple[list[tuple[int, int, float]], list[tuple[int, int, float]]]:
        """All processes' source and target items for ``step``: ``(src_items, tgt_items)`` of ``(domain, idx, phase)``."""
        rng = np.random.default_rng([self.seed, 7919, int(step)])
        ns, nt = self.n_src * self.world, self.n_tgt * self.world
        te, tf = self._uniform(rng, self.tgt, nt)
        tgt_items = [(TGT, int(self.tgt.start[e] + f), _phase(f, self.tgt.length[e])) for e, f in zip(te, tf)]
        src_items = []
        n_pair = min(ns, nt) if self.heuristic else 0
        for i in range(n_pair):
            e_t, f_t = te[i], tf[i]
            ep_t = int(self.tgt.episode[e_t])
            if self.alignment == "dtw":
                partners = self.dtw.partners[ep_t]
                ep_s = int(partners[rng.integers(len(partners))])
                e_s = int(np.nonzero(self.src.episode == ep_s)[0][0])
                centre = int(round(self.dtw.t2s[(ep_t, ep_s)][f_t]))
            else:
                e_s = int(rng.integers(len(self.src)))
                centre = int(round(_phase(f_t, self.tgt.length[e_t]) * self.src.length[e_s]))
            L_s = int(self.src.length[e_s])
            hi = max(int(self._usable(self.src)[e_s]) - 1, 0)
            f_s = int(np.clip(centre + rng.integers(-self.window, self.window + 1), 0, hi))
            if self.alignment == "dtw":
                ep_s = int(self.src.episode[e_s])
                ph = _phase(self.dtw.s2t[(ep_t, ep_s)][f_s], self.tgt.length[e_t])
            else:
                ph = _phase(f_s, L_s)
            src_items.append((SRC, int(self.src.start[e_s] + f_s), ph))
        if ns > n_pair:
            se, sf = self._uniform(rng, self.src, ns - n_pair)
            src_items += [(SRC, int(self.src.start[e] + f), _phase(f, self.src.length[e])) for e, f in zip(se, sf)]
        return src_items, tgt_items

    def batch_for_step(self, step: int) -> list[tuple[int, int, float]]:
        """This rank's batch: its slice of the source items, then its slice of the target items."""
        src_items, tgt_items = self.global_batch(step)
        r = self.rank
        return src_items[r * self.n_src:(r + 1) * self.n_src] + tgt_items[r * self.n_tgt:(r + 1) * self.n_tgt]

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
    """Index with ``(domain, global_index, phase)``; returns the LeRobot item with source cameras renamed.

    Returned keys: ``keys`` (target names: cameras, state, action) + their ``*_is_pad`` flags, ``frame_index``,
    ``episode_index``, ``domain`` (0 src / 1 tgt) and ``phase`` (float32).
    """

    def __init__(self, source, target, *, camera_map: dict[str, str], keys: list[str]):
        from dpot.data.frames import FrameReader

        self.rename = {SRC: dict(camera_map), TGT: {}}
        self.keys = list(keys)
        inv = {v: k for k, v in self.rename[SRC].items()}
        # items as LeRobotDataset returns them, without its per-row image decoding (dpot.data.frames)
        self.datasets = {SRC: FrameReader(source, [inv.get(k, k) for k in self.keys]),
                         TGT: FrameReader(target, self.keys)}

    def __len__(self) -> int:
        return len(self.datasets[SRC]) + len(self.datasets[TGT])

    def __getitem__(self, item):
        domain, idx, phase = item
        raw = self.datasets[domain][int(idx)]
        inv = {v: k for k, v in self.rename[domain].items()}
        out = {}
        for key in self.keys:
            src_key = inv.get(key, key)
            out[key] = raw[src_key]
            pad = f"{src_key}_is_pad"
            if pad in raw:
                out[f"{key}_is_pad"] = raw[pad]
        out["frame_index"] = raw["frame_index"]
        out["episode_index"] = raw["episode_index"]
        out["domain"] = torch.tensor(domain, dtype=torch.long)
        out["phase"] = torch.tensor(phase, dtype=torch.float32)
        return out


def split_episodes(episodes: list[int], val_fraction: float, seed: int) -> list[int]:
    """Held-out target episodes: ``max(1, round(val_fraction * n))`` episodes drawn with ``seed`` (none if fraction 0).

    At least one episode always stays for training.
    """
    n = len(episodes)
    if val_fraction <= 0 or n < 2:
        return []
    k = min(max(1, int(round(val_fraction * n))), n - 1)
    rng = np.random.default_rng([int(seed), 1337])
    return sorted(int(e) for e in rng.choice(np.asarray(episodes), size=k, replace=False))


def val_batches(tgt: EpisodeTable, *, n_batches: int, batch_size: int, seed: int) -> list[list[tuple[int, int, float]]]:
    """A fixed list of ``n_batches`` batches of held-out target items (same every evaluation).

    Frames are drawn without replacement while possible (all frames of the held-out episodes).
    """
    if len(tgt) == 0:
        return []
    items = [(TGT, int(s + f), _phase(f, L)) for s, L in zip(tgt.start, tgt.length) for f in range(int(L))]
    rng = np.random.default_rng([int(seed), 4242])
    order = rng.permutation(len(items))
    need = n_batches * batch_size
    reps = math.ceil(need / len(items))
    order = np.concatenate([order] * reps)[:need]
    return [[items[i] for i in order[b * batch_size:(b + 1) * batch_size]] for b in range(n_batches)]
