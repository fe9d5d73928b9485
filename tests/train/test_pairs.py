"""DTW pair files (dpot's and the fork's), their validation, and the DTW-weighted pairing of the sampler (issue 20):
draw frequencies exp(-sharpness * dist) among the top-k with the cutoff (chi-squared over 10^4 draws), the partner
frame within the window, BC's natural source mix, determinism across steps and processes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from dpot.data.cotrain import SRC, TGT, CoTrainBatchSampler, EpisodeTable
from dpot.data.dtw import dtw_align
from dpot.data.pairs import (
    Partner,
    build_pair_info,
    episode_index,
    read_pair_file,
    write_pair_file,
    zscore,
)
from dpot.errors import UserError

SRC_LEN = [40, 42, 38, 41, 39, 44]
TGT_LEN = [50, 55, 47]


def tables():
    src = EpisodeTable(np.arange(6), np.cumsum([0] + SRC_LEN[:-1]), np.array(SRC_LEN))
    tgt = EpisodeTable(np.arange(3), np.cumsum([0] + TGT_LEN[:-1]), np.array(TGT_LEN))
    return src, tgt


def seqs(lengths, shift):
    return {e: np.stack([np.sin(np.linspace(0, np.pi * (1 + 0.1 * e + shift), L)),
                         np.linspace(0, 1, L) ** (1 + 0.2 * e)], 1) for e, L in enumerate(lengths)}


def lengths(table):
    return dict(zip(table.episode.tolist(), table.length.tolist()))


def frame_of(table, idx):
    """``(episode row, frame)`` of a global frame index."""
    e = int(np.searchsorted(table.start, idx, side="right") - 1)
    return e, idx - int(table.start[e])


def test_dtw_align_path_and_cost():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 2)), rng.normal(size=(15, 2))
    cost, path = dtw_align(x, y)
    assert tuple(path[0]) == (0, 0) and tuple(path[-1]) == (11, 14)
    assert np.all(np.diff(path, axis=0) >= 0) and np.all(np.diff(path, axis=0).sum(1) >= 1)
    assert cost == pytest.approx(((x[path[:, 0]] - y[path[:, 1]]) ** 2).sum())
    banded, bpath = dtw_align(x, y, window=3)
    shift = bpath[:, 1] - bpath[:, 0]                                       # band widened by Ly - Lx = 3 above
    assert banded >= cost and shift.min() >= -3 and shift.max() <= 6


def test_pair_file_round_trip(tmp_path):
    src, tgt = tables()
    t, s = zscore(seqs(TGT_LEN, 0.0), seqs(SRC_LEN, 0.05))
    info = build_pair_info(t, s, top_k=4, stride=2)
    assert all(len(v) == 4 for v in info.values())
    assert all([p.dist for p in v] == sorted(p.dist for p in v) for v in info.values())
    assert all(f % 2 == 0 for v in info.values() for p in v for f in p.pairing)  # strided frames, original indices
    path = write_pair_file(tmp_path / "pair_info.json", info)
    assert next(iter(json.loads(path.read_text()))) == "episode_000000"
    back = read_pair_file(path, src_lengths=lengths(src), tgt_lengths=lengths(tgt))
    assert back == info


def test_fork_named_pair_file_with_base_index(tmp_path):
    """The fork's names (`episode_0001`, 1-based, any order) map to LeRobot indices by their digits - base."""
    src, tgt = tables()
    raw = {"episode_0003": [{"demo_name": "episode_0006", "raw_dtw_dist": 0.5, "pairing": {"0": [0], "1": [1, 2]}}],
           "episode_0001": [{"demo_name": "episode_0002", "raw_dtw_dist": 0.1, "pairing": {"4": [[5]]}},
                            {"demo_name": "episode_0001", "raw_dtw_dist": 0.2, "pairing": {"0": [3]}}]}
    p = tmp_path / "fork.json"
    p.write_text(json.dumps(raw))
    info = read_pair_file(p, src_lengths=lengths(src), tgt_lengths=lengths(tgt), base_index_src=1, base_index_tgt=1)
    assert sorted(info) == [0, 2]
    assert info[2] == [Partner(5, 0.5, {0: [0], 1: [1, 2]})]
    assert [q.src_episode for q in info[0]] == [1, 0] and info[0][0].pairing == {4: [5]}
    assert episode_index("episode_0003") == 3 and episode_index("demo") is None


@pytest.mark.parametrize("mutate,expected", [
    (lambda r: r.update({"episode_000009": r["episode_000000"]}), "'episode_000009': unknown target episode"),
    (lambda r: r["episode_000000"][0].update(demo_name="episode_000077"), "'episode_000000'[0]: unknown source"),
    (lambda r: r["episode_000000"][0]["pairing"].update({"50": [0]}), "target frame 50 out of range"),
    (lambda r: r["episode_000000"][0]["pairing"].update({"0": [40]}), "source frame 40 out of range"),
    (lambda r: r.update(episode_000000=[]), "'episode_000000': empty partner list"),
    (lambda r: r["episode_000000"][0].update(pairing={}), "'episode_000000'[0].pairing: empty"),
    (lambda r: r["episode_000000"][0].update(raw_dtw_dist="x"), "raw_dtw_dist: expected a finite number"),
])
def test_bad_pair_file_names_the_entry(tmp_path, mutate, expected):
    src, tgt = tables()
    raw = {"episode_000000": [{"demo_name": "episode_000000", "raw_dtw_dist": 0.1, "pairing": {"0": [0]}}]}
    mutate(raw)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(raw))
    with pytest.raises(UserError) as err:
        read_pair_file(p, src_lengths=lengths(src), tgt_lengths=lengths(tgt))
    msg = str(err.value)
    assert msg.startswith(f"ot.pair_info_path: {p}: ") and expected in msg and "\n" not in msg, msg


def _one_target_info(dists):
    """Target episode 0 paired with source demo e at distance dists[e], aligned frame = target frame // 2."""
    return {0: [Partner(e, d, {f: [f * 40 // 50] for f in range(50)}) for e, d in enumerate(dists)]}


def test_partner_frequencies_match_exp_weights_with_topk_and_cutoff():
    """Chi-squared over >= 10^4 partner draws: p_d ∝ exp(-sharpness * dist_d) among the top-k closest, p < cutoff
    dropped and the rest renormalized (expected values computed here from the definition)."""
    src, tgt = tables()
    tgt1 = tgt.subset([0])
    dists = [0.30, 0.05, 0.50, 0.12, 0.90, 0.20]
    sharpness, topk, cutoff = 10.0, 4, 0.05
    top = sorted(range(6), key=lambda e: dists[e])[:topk]                  # demos 1, 3, 5, 0
    w = {e: np.exp(-sharpness * dists[e]) for e in top}
    p = {e: w[e] / sum(w.values()) for e in top}
    kept = {e: v for e, v in p.items() if v >= cutoff}                      # demo 0 (p ~ 0.04) falls below
    assert 0 < len(kept) < topk
    expected = {e: v / sum(kept.values()) for e, v in kept.items()}
    s = CoTrainBatchSampler(src, tgt1, batch_size=64, batch_ratio=0.5, seed=0, heuristic=True, window_size=2,
                            pair_info=_one_target_info(dists), sharpness=sharpness, topk_src_episodes=topk,
                            cutoff=cutoff)
    counts = dict.fromkeys(range(6), 0)
    step = 0
    while sum(counts.values()) < 10_000:
        src_items, _ = s.global_batch(step)
        for it in src_items:
            if it.ot_pair:
                counts[int(np.searchsorted(src.start, it.index, side="right") - 1)] += 1
        step += 1
    assert all(counts[e] == 0 for e in range(6) if e not in expected)     # outside top-k or under the cutoff
    obs = np.array([counts[e] for e in expected])
    exp = np.array([expected[e] for e in expected]) * obs.sum()
    chi2, pval = stats.chisquare(obs, exp)
    assert pval > 1e-3, (counts, expected, chi2)


@pytest.mark.parametrize("no_window", [False, True])
def test_partner_frame_within_window_of_the_aligned_frame(no_window):
    src, tgt = tables()
    w = 3
    s = CoTrainBatchSampler(src, tgt.subset([0]), batch_size=32, batch_ratio=0.5, seed=1, heuristic=True,
                            window_size=w, pair_info=_one_target_info([0.1] * 6), no_window=no_window)
    offsets = []
    for step in range(30):
        src_items, tgt_items = s.global_batch(step)
        for si, ti in zip(src_items, tgt_items):
            if not si.ot_pair:
                continue
            es = int(np.searchsorted(src.start, si.index, side="right") - 1)
            fs, ft = si.index - int(src.start[es]), ti.index
            offsets.append(fs - ft * 40 // 50)
            assert si.phase == pytest.approx(ft / 50)                      # the target frame's phase
    offsets = np.asarray(offsets)
    if no_window:
        assert np.abs(offsets).max() > 3 * w                               # anywhere in the demo
    else:
        assert np.abs(offsets).max() <= w and len(np.unique(offsets)) == 2 * w + 1


def test_bc_keeps_the_natural_source_mix_and_sampling_is_deterministic():
    """The candidate demos' share of the source items equals their share of the frames (slot claiming, as
    paired-region OT), the batch is a pure function of (seed, step), and 2 processes slice the 1-process batch."""
    src, tgt = tables()
    info = {e: [Partner(d, 0.1 * d, {0: [0], 30: [20]}) for d in (0, 2)] for e in range(3)}
    kw = {"batch_size": 16, "batch_ratio": 0.5, "seed": 0, "heuristic": True, "window_size": 2, "pair_info": info}
    s = CoTrainBatchSampler(src, tgt, **kw)
    eps = [int(np.searchsorted(src.start, it.index, side="right") - 1) for k in range(400)
           for it in s.global_batch(k)[0]]
    natural = (SRC_LEN[0] + SRC_LEN[2]) / sum(SRC_LEN)
    assert abs(np.isin(eps, [0, 2]).mean() - natural) < 0.03
    assert s.batch_for_step(7) == CoTrainBatchSampler(src, tgt, **kw).batch_for_step(7)
    ranks = [CoTrainBatchSampler(src, tgt, **{**kw, "batch_size": 8}, num_processes=2, rank=r) for r in range(2)]
    for step in (0, 3, 11):
        g, r0, r1 = s.batch_for_step(step), ranks[0].batch_for_step(step), ranks[1].batch_for_step(step)
        assert r0[:4] + r1[:4] == g[:8] and r0[4:] + r1[4:] == g[8:]


def test_pairs_build_cli_writes_a_readable_file_and_refuses_bad_input(toy_data, tmp_path):
    out = tmp_path / "pairs.json"
    cmd = [sys.executable, "-m", "dpot", "pairs", "build", "--source", str(toy_data["src"]), "--target",
           str(toy_data["tgt"]), "--label", "state", "--dims", "0:2", "--top-k", "2", "--window", "20", "--stride", "2",
           "--dtw", "dpot"]
    from dpot.cli import main as dpot_main

    assert dpot_main(cmd[3:] + ["--out", str(out)]) == 0
    raw = json.loads(out.read_text())
    assert len(raw) == 4 and all(len(v) == 2 for v in raw.values())
    import pyarrow.parquet as pq

    def lens(root):
        t = pq.read_table(sorted(root.glob("data/**/*.parquet"))[0], columns=["episode_index"]).column(0).to_numpy()
        return {int(e): int((t == e).sum()) for e in np.unique(t)}

    info = read_pair_file(out, src_lengths=lens(toy_data["src"]), tgt_lengths=lens(toy_data["tgt"]))
    assert sorted(info) == [0, 1, 2, 3]
    bad = subprocess.run(cmd[:-2] + ["--dims", "0:99", "--out", str(tmp_path / "never.json")], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --dims: 0:99 is beyond")
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "never.json").exists()


def test_pair_batch_holds_only_partner_pairs_beside_an_unpaired_bc_batch():
    """``pair_batch_size`` P: the BC half is naive co-training's batch (same items as an unpaired sampler of the
    same seed, all out of the OT term) and P pairs follow, each source a partner demo of its target's episode
    (cutoff applied), within the window of the aligned frame; 2 processes slice the 1-process pairs."""
    src, tgt = tables()
    info = {e: [Partner(d, 0.1 * d, {f: [f * 40 // 55] for f in range(47)}) for d in (0, 2, 4)] for e in range(3)}
    info[1][2].dist = 5.0                                                   # p ~ e^-46: below the cutoff
    kw = {"batch_size": 8, "batch_ratio": 0.5, "seed": 0, "heuristic": True, "window_size": 2}
    s = CoTrainBatchSampler(src, tgt, **kw, pair_info=info, sharpness=10.0, cutoff=0.01, pair_batch_size=6)
    naive = CoTrainBatchSampler(src, tgt, **{**kw, "heuristic": False})
    n_pairs = 0
    for step in range(40):
        batch = s.batch_for_step(step)
        assert len(batch) == 8 + 2 * 6
        bc, ps, pt = batch[:8], batch[8:14], batch[14:]
        assert [(it.domain, it.index) for it in bc] == [(it.domain, it.index) for it in naive.batch_for_step(step)]
        assert not any(it.ot_pair for it in bc)
        assert all(it.ot_pair and it.domain == SRC for it in ps) and all(it.ot_pair and it.domain == TGT for it in pt)
        for si, ti in zip(ps, pt):
            es, fs = frame_of(src, si.index)
            et, ft = frame_of(tgt, ti.index)
            assert es in ({0, 2} if et == 1 else {0, 2, 4})
            assert abs(fs - min(ft, 46) * 40 // 55) <= 2
            n_pairs += 1
    assert n_pairs == 40 * 6
    ranks = [CoTrainBatchSampler(src, tgt, **{**kw, "batch_size": 4}, pair_info=info, sharpness=10.0, cutoff=0.01,
                                 pair_batch_size=3, num_processes=2, rank=r) for r in range(2)]
    for step in (0, 9):
        g, r0, r1 = s.batch_for_step(step), ranks[0].batch_for_step(step), ranks[1].batch_for_step(step)
        assert r0[4:7] + r1[4:7] == g[8:14] and r0[7:] + r1[7:] == g[14:]
