"""DTW pair files: which source demos pair with each target episode, and how their frames align.

File format (the LeRobot OT fork's ``pair_info.json``, read and written as is)::

    {"<target episode>": [{"demo_name": "<source episode>", "raw_dtw_dist": 0.0012,
                           "pairing": {"0": [0], "1": [1, 2], ...}}, ...], ...}

``pairing`` maps a target frame (within its episode) to the source frames (within the demo) the DTW path aligns it
with. Episode names: any string whose digits, minus ``base_index`` (``ot.pair_base_index_src`` /
``ot.pair_base_index_tgt``, default 0), give the LeRobot ``episode_index`` (``episode_0003`` -> 3, as the fork
reads them; set the base index to 1 for 1-based names). dpot writes ``episode_<index:06d>`` names, base 0.

:func:`build_pair_info` computes a file's content from per-episode sequences (z-scored state or action,
pooled over both datasets): for every (target, source) episode pair the DTW path of :func:`dpot.data.cotrain.
dtw_align` (optionally a Sakoe-Chiba band and every ``stride``-th frame), ``raw_dtw_dist`` = accumulated squared
distance / path length (the mean squared z-distance per aligned step, so ``exp(-sharpness * dist)`` is comparable
across episode lengths), and the ``top_k`` closest demos per target episode, closest first.

:func:`partner_distribution` turns one target episode's partners into sampling probabilities (the DTW-weighted
pairing of ``ot.sharpness``, ``ot.topk_src_episodes``, ``ot.cutoff``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dpot.errors import UserError

__all__ = ["Partner", "PairInfo", "dtw_function", "episode_name", "episode_index", "zscore", "build_pair_info",
           "pair_info_to_json", "write_pair_file", "read_pair_file", "partner_distribution", "pair_info_for_run"]


@dataclass
class Partner:
    """One source demo paired with a target episode: ``src_episode`` (LeRobot index), ``dist`` (``raw_dtw_dist``),
    ``pairing``: target frame -> aligned source frames (sorted by target frame)."""

    src_episode: int
    dist: float
    pairing: dict[int, list[int]]


PairInfo = dict[int, list[Partner]]  # target episode index -> its partners


def episode_name(index: int) -> str:
    """The name dpot writes for episode ``index``: ``episode_<index:06d>`` (LeRobot's file naming)."""
    return f"episode_{int(index):06d}"


def episode_index(name: str, base_index: int = 0) -> int | None:
    """The episode index a name stands for: its digits minus ``base_index`` (None when it has no digits)."""
    digits = "".join(re.findall(r"\d", str(name)))
    return None if not digits else int(digits) - int(base_index)


def zscore(*groups: dict[int, np.ndarray]) -> list[dict[int, np.ndarray]]:
    """Each group's sequences ``[L, d]`` z-scored with the mean/std pooled over every frame of every group
    (std floored at 1e-8), so source and target share one scale."""
    allf = np.concatenate([s for g in groups for s in g.values()], axis=0).astype(np.float64)
    mean, std = allf.mean(0), np.maximum(allf.std(0), 1e-8)
    return [{k: (v - mean) / std for k, v in g.items()} for g in groups]


DTWFn = Callable[[np.ndarray, np.ndarray, int | None], tuple[float, np.ndarray]]


def dtw_function(name: str):
    """The DTW implementation ``(x, y, window) -> (cost, path)``: ``dpot`` (:func:`dpot.data.dtw.dtw_align`),
    ``dtaidistance`` (its C ``dtw_ndim.warping_paths`` + ``best_path``; same cost and path up to ties) or
    ``auto`` (dtaidistance when installed, else dpot's)."""
    from dpot.data.dtw import dtw_align

    if name == "dpot":
        return dtw_align
    try:
        from dtaidistance import dtw as dtai_dtw
        from dtaidistance import dtw_ndim
    except ImportError:
        if name == "dtaidistance":
            raise UserError("--dtw: dtaidistance is not installed (pip install dtaidistance), "
                            "or use --dtw=dpot") from None
        return dtw_align

    def dtai(x, y, window):
        # dtaidistance's band holds |shift| < window (dpot's: <= window); 0 = no band
        d, paths = dtw_ndim.warping_paths(np.ascontiguousarray(x), np.ascontiguousarray(y),
                                          window=None if window is None else int(window) + 1, use_c=True)
        path = np.asarray(dtai_dtw.best_path(paths), dtype=np.int64)
        return float(d) ** 2, path  # dtaidistance returns sqrt of the accumulated squared distance

    return dtai


def build_pair_info(tgt_seqs: dict[int, np.ndarray], src_seqs: dict[int, np.ndarray], *, top_k: int | None = None,
                    window: int | None = None, stride: int = 1, dtw: DTWFn | None = None) -> PairInfo:
    """DTW partners of every target episode (see the module docstring).

    Args:
        tgt_seqs, src_seqs: episode index -> sequence ``[L, d]`` (already z-scored: :func:`zscore`).
        top_k: partners kept per target episode (closest first; None = all source episodes).
        window: Sakoe-Chiba band in (strided) frames; None = no band.
        stride: align every ``stride``-th frame (frame indices in the result are the original ones).
        dtw: ``(x, y, window) -> (accumulated cost, path [K, 2])``; default ``dtw_function("auto")``.

    Returns:
        target episode -> partners sorted by ``dist`` (ties by source episode).
    """
    if dtw is None:
        dtw = dtw_function("auto")
    stride = max(int(stride), 1)
    info: PairInfo = {}
    for et in sorted(tgt_seqs):
        x = np.asarray(tgt_seqs[et], dtype=np.float64)[::stride]
        partners = []
        for es in sorted(src_seqs):
            y = np.asarray(src_seqs[es], dtype=np.float64)[::stride]
            cost, path = dtw(x, y, window)
            pairing: dict[int, list[int]] = {}
            for i, j in path.tolist():
                pairing.setdefault(int(i) * stride, []).append(int(j) * stride)
            partners.append(Partner(int(es), float(cost) / max(len(path), 1), pairing))
        partners.sort(key=lambda p: (p.dist, p.src_episode))
        info[int(et)] = partners if top_k is None else partners[:int(top_k)]
    return info


def pair_info_to_json(info: PairInfo) -> dict:
    """The file's JSON object (episode names by :func:`episode_name`)."""
    return {episode_name(et): [{"demo_name": episode_name(p.src_episode), "raw_dtw_dist": p.dist,
                                "pairing": {str(k): list(v) for k, v in sorted(p.pairing.items())}}
                               for p in partners]
            for et, partners in sorted(info.items())}


def write_pair_file(path: str | Path, info: PairInfo) -> Path:
    """Write ``info`` as a pair file, atomically."""
    from dpot.atomic import write_text

    return write_text(path, json.dumps(pair_info_to_json(info)) + "\n")


def read_pair_file(path: str | Path, *, src_lengths: dict[int, int], tgt_lengths: dict[int, int],
                   base_index_src: int = 0, base_index_tgt: int = 0, field: str = "ot.pair_info_path") -> PairInfo:
    """Read and validate a pair file (dpot's or the fork's) against the two datasets' episodes.

    Args:
        path: the JSON file.
        src_lengths, tgt_lengths: episode index -> length in frames, of the source / target dataset.
        base_index_src, base_index_tgt: subtracted from the digits of the names (:func:`episode_index`).
        field: the config field named in errors.

    Returns:
        target episode -> partners (file order).

    Raises:
        UserError: ``<field>: <path>: <entry>: <problem>`` for an unreadable file, a name without digits, an
            episode not in its dataset, an empty partner list or pairing, a frame out of its episode's range,
            a missing/non-finite distance.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{field}: {p} does not exist; give a pair file (dpot pairs build ... --out FILE)")
    try:
        raw = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{field}: {p} is not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{field}: {p} must hold a non-empty object {{target episode: [partners]}}")

    def where(*parts) -> str:
        return f"{field}: {p}: " + "".join(parts)

    def index(name, base, lengths, kind, at) -> int:
        idx = episode_index(name, base)
        if idx is None or idx not in lengths:
            known = f"{min(lengths)}..{max(lengths)}" if lengths else "none"
            raise UserError(where(at, f": unknown {kind} episode '{name}' (index {idx}; the {kind} dataset has "
                                      f"episodes {known}); check the file or ot.pair_base_index_"
                                      f"{'src' if kind == 'source' else 'tgt'}"))
        return idx

    info: PairInfo = {}
    for tname, partners in raw.items():
        et = index(tname, base_index_tgt, tgt_lengths, "target", f"'{tname}'")
        if not isinstance(partners, list) or not partners:
            raise UserError(where(f"'{tname}': empty partner list; give at least one source demo or remove it"))
        out = []
        for k, entry in enumerate(partners):
            at = f"'{tname}'[{k}]"
            if not isinstance(entry, dict) or "demo_name" not in entry or "pairing" not in entry:
                raise UserError(where(at, ": expected {\"demo_name\": ..., \"raw_dtw_dist\": ..., \"pairing\": ...}"))
            es = index(entry["demo_name"], base_index_src, src_lengths, "source", at)
            dist = entry.get("raw_dtw_dist", 0.0)
            if not isinstance(dist, (int, float)) or isinstance(dist, bool) or not math.isfinite(dist):
                raise UserError(where(at, f".raw_dtw_dist: expected a finite number, got {json.dumps(dist)}"))
            pairing_raw = entry["pairing"]
            if not isinstance(pairing_raw, dict) or not pairing_raw:
                raise UserError(where(at, ".pairing: empty; give target frame -> [source frames]"))
            pairing: dict[int, list[int]] = {}
            for fk, frames in pairing_raw.items():
                try:
                    ft = int(fk)
                except ValueError:
                    raise UserError(where(at, f".pairing: key '{fk}' is not a frame number")) from None
                if not 0 <= ft < tgt_lengths[et]:
                    raise UserError(where(at, f".pairing['{fk}']: target frame {ft} out of range (episode "
                                              f"'{tname}' has {tgt_lengths[et]} frames)"))
                frames = frames if isinstance(frames, list) else [frames]
                if not frames:
                    raise UserError(where(at, f".pairing['{fk}']: empty list of source frames"))
                for fs in frames:
                    fs = fs[0] if isinstance(fs, list) and fs else fs
                    if not isinstance(fs, int) or isinstance(fs, bool) or not 0 <= fs < src_lengths[es]:
                        raise UserError(where(at, f".pairing['{fk}']: source frame {json.dumps(fs)} out of range "
                                                  f"(demo '{entry['demo_name']}' has {src_lengths[es]} frames)"))
                pairing[ft] = [int(f[0] if isinstance(f, list) else f) for f in frames]
            out.append(Partner(es, float(dist), dict(sorted(pairing.items()))))
        info[et] = out
    return info


def partner_distribution(partners: list[Partner], *, sharpness: float = 0.0, topk: int | None = None,
                         cutoff: float = 0.0) -> tuple[list[Partner], np.ndarray]:
    """Sampling probabilities of a target episode's partner demos.

    ``topk`` closest (by ``dist``; None = all), ``w_d = exp(-sharpness * (dist_d - min dist))`` (= the fork's
    ``exp(-sharpness * dist)`` after normalization), ``p = w / sum(w)``; partners with ``p < cutoff`` dropped (the
    most likely one always stays) and ``p`` renormalized.

    Returns:
        ``(kept partners, probabilities)`` in the same order, probabilities summing to 1.
    """
    if not partners:
        return [], np.zeros(0)
    order = sorted(range(len(partners)), key=lambda i: (partners[i].dist, i))
    kept = [partners[i] for i in (order if topk is None else order[:int(topk)])]
    d = np.asarray([q.dist for q in kept], dtype=np.float64)
    w = np.exp(-float(sharpness) * (d - d.min()))
    prob = w / w.sum()
    keep = (prob >= cutoff) | (np.arange(len(prob)) == int(np.argmax(prob)))
    kept = [q for q, k in zip(kept, keep) if k]
    prob = prob[keep] / prob[keep].sum()
    return kept, prob


def weighted_pairing_requested(ot) -> bool:
    """True when the ``ot`` config asks for DTW-weighted pairing without a pair file (``sharpness``, ``cutoff``,
    ``topk_src_episodes`` or ``no_window`` set): dpot's own DTW then provides the pairs."""
    return ot.sharpness > 0 or ot.cutoff > 0 or ot.topk_src_episodes is not None or ot.no_window


def pair_info_for_run(ot, *, src_lengths: dict[int, int], tgt_lengths: dict[int, int],
                      trajectories: Callable[[], tuple[dict[int, np.ndarray], dict[int, np.ndarray]]],
                      cache_path: str | Path | None) -> PairInfo | None:
    """The pairs a run samples from (None = the sampler's usual pairing).

    ``ot.pair_info_path`` set: that file, validated (:func:`read_pair_file`, UserError before any training step).
    Else, with ``ot.heuristic`` and :func:`weighted_pairing_requested`: dpot's own DTW (:func:`build_pair_info`)
    over ``trajectories()`` = ``(target, source)`` action sequences (z-scored together), all source demos kept
    (``ot.topk_src_episodes`` acts in the sampler), read from / written to ``cache_path`` (a pair file).
    """
    if ot.pair_info_path is not None:
        return read_pair_file(ot.pair_info_path, src_lengths=src_lengths, tgt_lengths=tgt_lengths,
                              base_index_src=ot.pair_base_index_src, base_index_tgt=ot.pair_base_index_tgt)
    if not (ot.heuristic and weighted_pairing_requested(ot)):
        return None
    if cache_path is not None and Path(cache_path).is_file():
        return read_pair_file(cache_path, src_lengths=src_lengths, tgt_lengths=tgt_lengths, field="pair cache")
    tgt, src = trajectories()
    tgt_z, src_z = zscore(tgt, src)
    info = build_pair_info(tgt_z, src_z, window=None)
    if cache_path is not None:
        write_pair_file(cache_path, info)
    return info
