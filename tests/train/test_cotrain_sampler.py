"""Batch composition, temporal pairing, paired-region OT and determinism of the co-training sampler (no model)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from dpot.data.cotrain import (
    SRC,
    TGT,
    CoTrainBatchSampler,
    CoTrainDataset,
    DTWAlignment,
    EpisodeTable,
    split_batch,
    split_episodes,
    val_batches,
)
from dpot.data.dtw import dtw_path
from dpot.data.regions import episode_regions, region_partners
from dpot.errors import UserError


def tables():
    src = EpisodeTable(np.arange(5), np.cumsum([0, 40, 42, 38, 41]), np.array([40, 42, 38, 41, 39]))
    tgt = EpisodeTable(np.arange(3), np.cumsum([0, 50, 55]), np.array([50, 55, 47]))
    return src, tgt


def trajectories(table):
    """Smooth 2-d trajectories that differ per episode (so DTW maps are not the identity)."""
    return {int(e): np.stack([np.sin(np.linspace(0, np.pi * (1 + 0.2 * int(e)), int(L))),
                              np.linspace(0, 1, int(L)) ** (1 + 0.3 * int(e))], 1)
            for e, L in zip(table.episode, table.length)}


def frame_of(table, idx):
    e = int(np.searchsorted(table.start, idx, side="right") - 1)
    return e, idx - int(table.start[e])


@pytest.mark.parametrize("bs,ratio,expect", [(8, 0.5, (4, 4)), (10, 0.3, (3, 7)), (5, 0.75, (4, 1))])
def test_batch_composition(bs, ratio, expect):
    src, tgt = tables()
    s = CoTrainBatchSampler(src, tgt, batch_size=bs, batch_ratio=ratio, seed=1, heuristic=True, window_size=3)
    batch = s.batch_for_step(0)
    assert split_batch(bs, ratio) == expect
    assert [d for d, _, _, _ in batch] == [SRC] * expect[0] + [TGT] * expect[1]
    for d, idx, ph, _ in batch:
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
            _, si, _, _ = batch[i]
            _, ti, tph, _ = batch[8 + i]
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
    for _, idx, _, _ in s.batch_for_step(0)[:4]:
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
    assert all(d == TGT and 50 <= i < 105 for b in vb for d, i, _, _ in b)


# Batches of the sampler as committed before the pairing strategies (d8a6939), computed with that code:
# (domain, index, phase) per item. Exact resume of existing runs depends on these staying bit-identical.
PINNED = {
    "phase": [
        [
            (0, 146, 0.6341463414634146),
            (0, 146, 0.6341463414634146),
            (0, 72, 0.7619047619047619),
            (0, 137, 0.4146341463414634),
            (1, 34, 0.68),
            (1, 81, 0.5636363636363636),
        ],
        [
            (0, 138, 0.43902439024390244),
            (0, 78, 0.9047619047619048),
            (0, 87, 0.13157894736842105),
            (0, 171, 0.2564102564102564),
            (1, 22, 0.44),
            (1, 146, 0.8723404255319149),
        ],
        [
            (0, 164, 0.07692307692307693),
            (0, 50, 0.23809523809523808),
            (0, 100, 0.47368421052631576),
            (0, 114, 0.8421052631578947),
            (1, 54, 0.07272727272727272),
            (1, 9, 0.18),
        ],
    ],
    "random": [
        [
            (0, 115, 0.868421052631579),
            (0, 48, 0.19047619047619047),
            (1, 52, 0.03636363636363636),
            (1, 89, 0.7090909090909091),
        ],
        [
            (0, 99, 0.4473684210526316),
            (0, 88, 0.15789473684210525),
            (1, 116, 0.23404255319148937),
            (1, 104, 0.9818181818181818),
        ],
    ],
    "partners": {0: [1, 3], 1: [1, 2], 2: [0, 1]},
    "dtw": [
        [
            (0, 124, 0.15),
            (0, 54, 0.3617021276595745),
            (0, 79, 0.9363636363636364),
            (1, 3, 0.06),
            (1, 122, 0.3617021276595745),
            (1, 102, 0.9454545454545454),
        ],
        [
            (0, 51, 0.23404255319148937),
            (0, 46, 0.16),
            (0, 55, 0.36),
            (1, 114, 0.19148936170212766),
            (1, 8, 0.16),
            (1, 17, 0.34),
        ],
        [
            (0, 84, 0.06363636363636363),
            (0, 43, 0.08),
            (0, 100, 0.5272727272727272),
            (1, 57, 0.12727272727272726),
            (1, 3, 0.06),
            (1, 74, 0.43636363636363634),
        ],
    ],
    "rank1": [
        [
            (0, 140, 0.4878048780487805),
            (0, 108, 0.6842105263157895),
            (1, 67, 0.3090909090909091),
        ],
        [
            (0, 99, 0.4473684210526316),
            (0, 57, 0.40476190476190477),
            (1, 77, 0.4909090909090909),
        ],
    ],
}


def test_batches_bit_identical_to_the_pinned_implementation():
    src, tgt = tables()
    triples = lambda s, n: [[tuple(it)[:3] for it in s.batch_for_step(k)] for k in range(n)]  # noqa: E731
    s = CoTrainBatchSampler(src, tgt, batch_size=6, batch_ratio=0.67, seed=11, heuristic=True, window_size=3,
                            drop_n_last_frames=1)
    assert triples(s, 3) == PINNED["phase"]
    s = CoTrainBatchSampler(src, tgt, batch_size=4, batch_ratio=0.5, seed=5, heuristic=False, window_size=3)
    assert triples(s, 2) == PINNED["random"]
    dtw = DTWAlignment(trajectories(tgt), trajectories(src), seed=2, max_partners=2)
    assert dtw.partners == PINNED["partners"]
    s = CoTrainBatchSampler(src, tgt, batch_size=6, batch_ratio=0.5, seed=2, heuristic=True, window_size=2,
                            alignment="dtw", dtw=dtw)
    assert triples(s, 3) == PINNED["dtw"]
    s = CoTrainBatchSampler(src, tgt, batch_size=3, batch_ratio=0.5, seed=4, heuristic=True, window_size=1,
                            num_processes=2, rank=1)
    assert triples(s, 2) == PINNED["rank1"]

    for s in (CoTrainBatchSampler(src, tgt, batch_size=6, batch_ratio=0.67, seed=11, heuristic=True, window_size=3),
              CoTrainBatchSampler(src, tgt, batch_size=4, batch_ratio=0.5, seed=5, heuristic=False, window_size=3)):
        assert all(it.ot_pair is True for k in range(3) for it in s.batch_for_step(k))  # no paired_region: all in


# ------------------------------------------------------------------ paired-region OT
SRC_REGIONS = {0: "id", 1: "ood", 2: "id", 3: "ood", 4: "ood"}
TGT_REGIONS = {0: "id", 1: "ood", 2: "id"}


def _region_of(table, regions, idx):
    e, _ = frame_of(table, idx)
    return regions[int(table.episode[e])]


def _check_paired(sampler, src, tgt, n_src, steps=150):
    """Every OT-paired source item i partners target item i from the target's region; the unpaired ones (out of
    the OT term) come from every region; returns the mean number of partners per batch."""
    extra_regions, n_pairs = set(), []
    for step in range(steps):
        src_items, tgt_items = sampler.global_batch(step)
        assert len(src_items) == n_src
        assert all(it.ot_pair for it in tgt_items)
        paired = [i for i, it in enumerate(src_items) if it.ot_pair]
        assert all(i < len(tgt_items) for i in paired)
        for i in paired:
            assert _region_of(src, SRC_REGIONS, src_items[i].index) == _region_of(tgt, TGT_REGIONS, tgt_items[i].index)
        extra_regions |= {_region_of(src, SRC_REGIONS, it.index) for it in src_items if not it.ot_pair}
        n_pairs.append(len(paired))
    assert extra_regions == {"id", "ood"}  # unpaired source items come from every source episode
    return float(np.mean(n_pairs))


def test_paired_region_keeps_the_bc_source_mix_of_unpaired_sampling():
    """BC sees all source data: the share of each region among the source items is the same with and without
    paired_region (the uniform-frame share), also when every target demo lies in one region, as in the study."""
    src, tgt = tables()
    one_region = {0: "id", 1: "id", 2: "id"}
    kw = {"batch_size": 16, "batch_ratio": 0.5, "seed": 0, "heuristic": True, "window_size": 2}
    paired = CoTrainBatchSampler(src, tgt, paired_region=True, src_regions=SRC_REGIONS, tgt_regions=one_region,
                                 **kw)
    plain = CoTrainBatchSampler(src, tgt, **kw)
    usable = src.usable(0).astype(float)
    expected_id = usable[[0, 2]].sum() / usable.sum()                  # 78 of 200 frames
    share = {}
    for name, s in (("paired", paired), ("plain", plain)):
        regions = [_region_of(src, SRC_REGIONS, it.index) for k in range(400) for it in s.global_batch(k)[0]]
        share[name] = regions.count("id") / len(regions)
    assert abs(share["paired"] - expected_id) < 0.03 and abs(share["plain"] - expected_id) < 0.03
    for k in range(50):                                                 # partners: ID episodes only, the rest off
        src_items, tgt_items = paired.global_batch(k)
        assert all(_region_of(src, SRC_REGIONS, it.index) == "id" for it in src_items if it.ot_pair)
        assert sum(it.ot_pair for it in src_items) == sum(
            _region_of(src, SRC_REGIONS, it.index) == "id" for it in src_items)


@pytest.mark.parametrize("heuristic", [True, False])
def test_paired_region_partners_only_from_the_target_region(heuristic):
    src, tgt = tables()
    kw = {"batch_ratio": 0.6, "seed": 0, "heuristic": heuristic, "window_size": 2, "paired_region": True,
          "src_regions": SRC_REGIONS, "tgt_regions": TGT_REGIONS}
    s = CoTrainBatchSampler(src, tgt, batch_size=10, **kw)  # 6 source slots, 4 target items
    assert 0 < _check_paired(s, src, tgt, n_src=6) < 4
    if heuristic:  # still temporal partners: same phase within the window
        for step in range(20):
            src_items, tgt_items = s.global_batch(step)
            for a, b in zip(src_items[:4], tgt_items):
                if not a.ot_pair:
                    continue
                es, fs = frame_of(src, a.index)
                assert abs(fs - round(b.phase * src.length[es])) <= 2 or fs == src.length[es] - 1
    # both regions get partners from their own episodes, several of them (not one fixed episode)
    seen = {}
    for step in range(100):
        src_items, tgt_items = s.global_batch(step)
        for a, b in zip(src_items[:4], tgt_items):
            if a.ot_pair:
                seen.setdefault(_region_of(tgt, TGT_REGIONS, b.index), set()).add(frame_of(src, a.index)[0])
    assert seen == {"id": {0, 2}, "ood": {1, 3, 4}}
    # ranks slice the same global batch; flags travel with the items
    ranks = [CoTrainBatchSampler(src, tgt, batch_size=5, num_processes=2, rank=r, **kw) for r in range(2)]
    g_src, g_tgt = s.global_batch(7)
    r0, r1 = (r.batch_for_step(7) for r in ranks)
    assert r0[:3] + r1[:3] == g_src and r0[3:] + r1[3:] == g_tgt


def test_paired_region_with_fewer_source_than_target_items():
    src, tgt = tables()
    s = CoTrainBatchSampler(src, tgt, batch_size=10, batch_ratio=0.3, seed=1, heuristic=True, window_size=2,
                            paired_region=True, src_regions=SRC_REGIONS, tgt_regions=TGT_REGIONS)
    assert 0 < _check_paired(s, src, tgt, n_src=3, steps=50) <= 3


def test_paired_region_with_dtw_partners_from_the_region(tmp_path):
    src, tgt = tables()
    cands = region_partners(tgt.episode.tolist(), src.episode.tolist(), TGT_REGIONS, SRC_REGIONS)
    assert cands == {0: [0, 2], 1: [1, 3, 4], 2: [0, 2]}
    dtw = DTWAlignment(trajectories(tgt), trajectories(src), seed=0, max_partners=2, candidates=cands)
    assert all(set(p) <= set(cands[e]) and len(p) == 2 for e, p in dtw.partners.items())
    kw = {"batch_size": 10, "batch_ratio": 0.6, "seed": 3, "heuristic": True, "window_size": 1,
          "alignment": "dtw", "paired_region": True, "src_regions": SRC_REGIONS, "tgt_regions": TGT_REGIONS}
    _check_paired(CoTrainBatchSampler(src, tgt, dtw=dtw, **kw), src, tgt, n_src=6, steps=100)
    unrestricted = DTWAlignment(trajectories(tgt), trajectories(src), seed=0, max_partners=5)
    with pytest.raises(ValueError, match="outside its region"):
        CoTrainBatchSampler(src, tgt, dtw=unrestricted, **kw)


@pytest.mark.parametrize("src_regions,tgt_regions,match", [
    (None, TGT_REGIONS, "source_dataset records no per-episode regions"),
    (SRC_REGIONS, None, "target dataset records no per-episode regions"),
    ({**SRC_REGIONS, 1: "id", 3: "id", 4: "id"}, TGT_REGIONS, "region 'ood' but no source episode"),
    (SRC_REGIONS, {0: "id", 1: "ood"}, "target dataset has no region for episodes \\[2\\]"),
])
def test_paired_region_errors_name_the_option(src_regions, tgt_regions, match):
    src, tgt = tables()
    with pytest.raises(UserError, match=match) as err:
        CoTrainBatchSampler(src, tgt, batch_size=8, batch_ratio=0.5, seed=0, heuristic=True, window_size=2,
                            paired_region=True, src_regions=src_regions, tgt_regions=tgt_regions)
    assert str(err.value).startswith("ot.paired_region: ") and "\n" not in str(err.value)


def test_episode_regions_reads_dpot_bench_json(tmp_path):
    assert episode_regions(tmp_path) is None  # no meta/dpot_bench.json
    meta = tmp_path / "meta" / "dpot_bench.json"
    meta.parent.mkdir()
    meta.write_text(json.dumps({"settings": {}, "summary": {}}))
    assert episode_regions(tmp_path) is None  # made before regions were recorded
    eps = [{"episode_index": 0, "region": "id", "goal_pos": [0, 0, 0]}, {"episode_index": 1, "region": "ood"}]
    meta.write_text(json.dumps({"settings": {}, "episodes": eps}))
    assert episode_regions(tmp_path) == {0: "id", 1: "ood"}
    meta.write_text(json.dumps({"episodes": [{"episode_index": "0", "region": "id"}]}))
    with pytest.raises(ValueError, match=r"episodes\[0\]"):
        episode_regions(tmp_path)
    meta.write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        episode_regions(tmp_path)


def test_dtw_cache_is_reused_and_written_whole(tmp_path, caplog):
    src, tgt = tables()
    cache = tmp_path / "run" / "dtw_cache.npz"
    first = DTWAlignment(trajectories(tgt), trajectories(src), seed=1, max_partners=2, cache_path=cache)
    assert sorted(p.name for p in cache.parent.iterdir()) == ["dtw_cache.npz"]  # no temp file left
    with caplog.at_level(logging.INFO, logger="dpot.data.cotrain"):
        again = DTWAlignment(trajectories(tgt), trajectories(src), seed=1, max_partners=2, cache_path=cache)
    assert "0 episode pairs computed" in caplog.text
    assert first.partners == again.partners
    assert all(np.array_equal(first.t2s[k], again.t2s[k]) and np.array_equal(first.s2t[k], again.s2t[k])
               for k in first.t2s)


def test_dataset_items_carry_the_ot_pair_flag_as_bool(toy_data):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    open_ds = lambda root: LeRobotDataset("local/toy", root=root, return_uint8=True)  # noqa: E731
    src_ds, tgt_ds = open_ds(toy_data["src"]), open_ds(toy_data["tgt"])
    keys = ["observation.images.top", "observation.state", "action"]
    dataset = CoTrainDataset(src_ds, tgt_ds, camera_map={}, keys=keys)
    src, tgt = EpisodeTable.from_meta(src_ds.meta), EpisodeTable.from_meta(tgt_ds.meta)
    regions = {0: "id", 1: "ood", 2: "id", 3: "ood"}
    sampler = CoTrainBatchSampler(src, tgt, batch_size=6, batch_ratio=0.67, seed=0, heuristic=True, window_size=2,
                                  paired_region=True, src_regions=regions, tgt_regions=regions)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=0)
    batch = next(iter(loader))
    assert batch["ot_pair"].dtype == torch.bool and batch["ot_pair"].tolist() == [True, True, False, False, True, True]
    assert batch["domain"].tolist() == [SRC] * 4 + [TGT] * 2
    assert batch["ot_pair"].tolist() == [it.ot_pair for it in sampler.batch_for_step(0)]
