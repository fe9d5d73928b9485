"""Batch composition, temporal pairing and determinism of the co-training sampler (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from dpot.data.cotrain import (
    SRC,
    TGT,
    CoTrainBatchSampler,
    DTWAlignment,
    EpisodeTable,
    dtw_path,
    split_batch,
    split_episodes,
    val_batches,
)


def tables():
    src = EpisodeTable(np.arange(5), np.cumsum([0, 40, 42, 38, 41]), np.array([40, 42, 38, 41, 39]))
    tgt = EpisodeTable(np.arange(3), np.cumsum([0, 50, 55]), np.array([50, 55, 47]))
    return src, tgt


def frame_of(table, idx):
    e = int(np.searchsorted(table.start, idx, side="right") - 1)
    return e, idx - int(table.start[e])


@pytest.mark.parametrize("bs,ratio,expect", [(8, 0.5, (4, 4)), (10, 0.3, (3, 7)), (5, 0.75, (4, 1))])
def test_batch_composition(bs, ratio, expect):
    src, tgt = tables()
    s = CoTrainBatchSampler(src, tgt, batch_size=bs, batch_ratio=ratio, seed=1, heuristic=True, window_size=3)
    batch = s.batch_for_step(0)
    assert split_batch(bs, ratio) == expect
    assert [d for d, _, _ in batch] == [SRC] * expect[0] + [TGT] * expect[1]
    for d, idx, ph in batch:
        table = src if d == SRC else tgt
        e, f = frame_of(table, idx)
        assert 0 <= f < table.length[e]
        assert ph == pytest.approx(f / table.length[e])


def test_temporal_pairing_within_window():
    src, tgt = tables()
    w = 3
    s = CoTrainBatchSampler(src, tgt, batch_size=16, batch_ratio=0.5, seed=0, heuristic=True, window_size=w)
    for step in range(20):
        batch = s.batch_for_step(step)
        for i in range(8):
            _, si, _ = batch[i]
            _, ti, tph = batch[8 + i]
            es, fs = frame_of(src, si)
            centre = round(tph * src.length[es])
            assert abs(fs - centre) <= w or fs == src.length[es] - 1
    # random pairing: phases of pairs are not tied
    r = CoTrainBatchSampler(src, tgt, batch_size=16, batch_ratio=0.5, seed=0, heuristic=False, window_size=w)
    gaps_p = [abs(b[i][2] - b[8 + i][2]) for b in map(s.batch_for_step, range(20)) for i in range(8)]
    gaps_r = [abs(b[i][2] - b[8 + i][2]) for b in map(r.batch_for_step, range(20)) for i in range(8)]
    assert np.mean(gaps_p) < 0.1 < np.mean(gaps_r)


def test_deterministic_and_rank_slices():
    src, tgt = tables()
    one = CoTrainBatchSampler(src, tgt, batch_size=8, batch_ratio=0.5, seed=3, heuristic=True, window_size=2)
    ranks = [CoTrainBatchSampler(src, tgt, batch_size=4, batch_ratio=0.5, seed=3, heuristic=True, window_size=2,
                                 num_processes=2, rank=r) for r in range(2)]
    for step in (0, 5, 17):
        g = one.batch_for_step(step)
        r0, r1 = ranks[0].batch_for_step(step), ranks[1].batch_for_step(step)
        assert r0[:2] + r1[:2] == g[:4] and r0[2:] + r1[2:] == g[4:]
        assert one.batch_for_step(step) == g
    assert one.batch_for_step(1) != one.batch_for_step(2)
    it = iter(one)
    first = [next(it) for _ in range(3)]
    one2 = CoTrainBatchSampler(src, tgt, batch_size=8, batch_ratio=0.5, seed=3, heuristic=True, window_size=2)
    one2.load_state_dict({"step": 2})
    assert next(iter(one2)) == first[2]


def test_dtw_alignment_pairs(tmp_path):
    x = np.linspace(0, 1, 20)[:, None]
    y = np.linspace(0, 1, 40)[:, None]
    m = dtw_path(x, y)
    assert m[0] <= 1 and m[-1] >= 38 and np.all(np.diff(m) >= 0)
    src, tgt = tables()
    traj = lambda t: {int(e): np.linspace(0, 1, int(L))[:, None] for e, L in zip(t.episode, t.length)}  # noqa: E731
    cache = tmp_path / "dtw.npz"
    dtw = DTWAlignment(traj(tgt), traj(src), seed=0, max_partners=2, cache_path=cache)
    assert cache.exists() and all(len(v) == 2 for v in dtw.partners.values())
    s = CoTrainBatchSampler(src, tgt, batch_size=8, batch_ratio=0.5, seed=0, heuristic=True, window_size=0,
                            alignment="dtw", dtw=dtw)
    for _, idx, _ in s.batch_for_step(0)[:4]:
        e, _ = frame_of(src, idx)
        assert int(src.episode[e]) in {p for v in dtw.partners.values() for p in v}
    b = s.batch_for_step(0)
    assert max(abs(b[i][2] - b[4 + i][2]) for i in range(4)) < 0.1


def test_split_and_val_batches():
    assert split_episodes([0, 1, 2, 3], 0.25, 0) == split_episodes([0, 1, 2, 3], 0.25, 0)
    assert len(split_episodes([0, 1, 2, 3], 0.25, 0)) == 1
    assert split_episodes([0, 1], 0.9, 0) != [0, 1]
    assert split_episodes([0, 1, 2], 0.0, 0) == []
    _, tgt = tables()
    vb = val_batches(tgt.subset([1]), n_batches=3, batch_size=4, seed=0)
    assert len(vb) == 3 and all(len(b) == 4 for b in vb)
    assert all(d == TGT and 50 <= i < 105 for b in vb for d, i, _ in b)
