"""dpot.data.frames.FrameReader returns exactly what LeRobotDataset.__getitem__ returns for the training keys."""

from __future__ import annotations

import pickle

import pytest
import torch

KEYS = ["observation.images.top", "observation.images.wrist", "observation.state", "action"]


def _open(root, delta, episodes=None):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset("local/toy", root=root, delta_timestamps=delta, episodes=episodes, return_uint8=True)


def _assert_same(reader, ds, indices):
    for i in indices:
        got, ref = reader[i], ds[i]
        expected = [k for k in [*KEYS, *(f"{k}_is_pad" for k in KEYS), "frame_index", "episode_index"] if k in ref]
        assert sorted(got) == sorted(expected), i
        for k in expected:
            assert got[k].dtype == ref[k].dtype and got[k].shape == ref[k].shape, (i, k)
            assert torch.equal(got[k], ref[k]), (i, k)


@pytest.mark.parametrize("n_obs", [1, 2])
def test_items_equal_lerobot_items_including_episode_edges(toy_data, n_obs):
    from dpot.data.frames import FrameReader

    obs = [(i - n_obs + 1) / 10 for i in range(n_obs)]
    delta = {"action": [(i - n_obs + 1) / 10 for i in range(16)], "observation.state": obs,
             "observation.images.top": obs, "observation.images.wrist": obs}
    ds = _open(toy_data["tgt"], delta)
    reader = FrameReader(ds, KEYS)
    assert reader.fast and len(reader) == len(ds)
    ends = [int(x) for x in ds.meta.episodes["dataset_to_index"]]
    edges = {0, 1, len(ds) - 1} | {e - 1 for e in ends[:-1]} | {e for e in ends[:-1]}   # padding on both sides
    _assert_same(reader, ds, sorted(edges | set(range(3, len(ds), 7))))
    assert any(reader[len(ds) - 1]["action_is_pad"]) and (n_obs == 1 or reader[0]["observation.state_is_pad"][0])
    clone = pickle.loads(pickle.dumps(reader))                          # what a DataLoader worker gets
    assert clone._cache is None
    _assert_same(clone, ds, [5])


def test_episode_subset_and_no_delta_timestamps(toy_data):
    from dpot.data.frames import FrameReader

    ds = _open(toy_data["src"], {"action": [i / 10 for i in range(8)]}, episodes=[1, 3])
    _assert_same(FrameReader(ds, KEYS), ds, range(0, len(ds), 3))
    plain = _open(toy_data["src"], None)
    _assert_same(FrameReader(plain, KEYS), plain, [0, 11, len(plain) - 1])
