"""dpot.data.frames.FrameReader returns exactly what LeRobotDataset.__getitem__ returns for the training keys."""

from __future__ import annotations

import pickle

import pytest
import torch

KEYS = ["observation.images.top", "observation.images.wrist", "observation.state", "action"]


def _open(root, delta, episodes=None):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset("local/toy", root=root, delta_timestamps=delta, episodes=episodes, return_uint8=True)


@pytest.fixture
def paths(monkeypatch):
    """Counts of reads through each path of every FrameReader (the fast column path and LeRobot's ds[idx])."""
    from dpot.data.frames import FrameReader

    counts = {"fast": 0, "fallback": 0}
    for name, attr in (("fast", "_read_from_columns"), ("fallback", "_read_through_dataset")):
        original = getattr(FrameReader, attr)

        def spy(self, idx, _original=original, _name=name):
            counts[_name] += 1
            return _original(self, idx)

        monkeypatch.setattr(FrameReader, attr, spy)
    return counts


def _assert_same(reader, ds, indices, paths, fast=True):
    """Every item equal to LeRobot's, each read through the expected path (a fallback would compare LeRobot
    with itself)."""
    before = dict(paths)
    indices = list(indices)
    for i in indices:
        got, ref = reader[i], ds[i]
        expected = [k for k in [*KEYS, *(f"{k}_is_pad" for k in KEYS), "frame_index", "episode_index"] if k in ref]
        assert sorted(got) == sorted(expected), i
        for k in expected:
            assert got[k].dtype == ref[k].dtype and got[k].shape == ref[k].shape, (i, k)
            assert torch.equal(got[k], ref[k]), (i, k)
    took = {k: paths[k] - before[k] for k in paths}
    assert took == ({"fast": len(indices), "fallback": 0} if fast else {"fast": 0, "fallback": len(indices)})


@pytest.mark.parametrize("n_obs", [1, 2])
def test_items_equal_lerobot_items_including_episode_edges(toy_data, n_obs, paths):
    from dpot.data.frames import FrameReader

    obs = [(i - n_obs + 1) / 10 for i in range(n_obs)]
    delta = {"action": [(i - n_obs + 1) / 10 for i in range(16)], "observation.state": obs,
             "observation.images.top": obs, "observation.images.wrist": obs}
    ds = _open(toy_data["tgt"], delta)
    reader = FrameReader(ds, KEYS)
    assert reader.fast and len(reader) == len(ds)
    ends = [int(x) for x in ds.meta.episodes["dataset_to_index"]]
    edges = {0, 1, len(ds) - 1} | {e - 1 for e in ends[:-1]} | {e for e in ends[:-1]}   # padding on both sides
    _assert_same(reader, ds, sorted(edges | set(range(3, len(ds), 7))), paths)
    assert any(reader[len(ds) - 1]["action_is_pad"]) and (n_obs == 1 or reader[0]["observation.state_is_pad"][0])
    clone = pickle.loads(pickle.dumps(reader))                          # what a DataLoader worker gets
    assert clone._cache is None
    _assert_same(clone, ds, [5], paths)


def test_episode_subset_and_no_delta_timestamps(toy_data, paths):
    from dpot.data.frames import FrameReader

    ds = _open(toy_data["src"], {"action": [i / 10 for i in range(8)]}, episodes=[1, 3])
    _assert_same(FrameReader(ds, KEYS), ds, range(0, len(ds), 3), paths)
    plain = _open(toy_data["src"], None)
    _assert_same(FrameReader(plain, KEYS), plain, [0, 11, len(plain) - 1], paths)


def test_image_transforms_fall_back_to_lerobot(toy_data, paths):
    """With image transforms the reader must go through ds[idx] (it cannot reproduce them); the spy sees it."""
    from dpot.data.frames import FrameReader

    ds = _open(toy_data["src"], {"action": [i / 10 for i in range(4)]})
    ds.image_transforms = lambda img: img  # any transform: identity keeps values comparable
    reader = FrameReader(ds, KEYS)
    assert not reader.fast
    _assert_same(reader, ds, [0, 7], paths, fast=False)


@pytest.mark.parametrize("transforms", [False, True])
def test_image_size_resizes_on_both_paths(toy_data, paths, transforms):
    """``image_size`` gives resize_frames(LeRobot's frame) on the fast column path and on the ds[idx] path."""
    from dpot.data.framecache import resize_frames
    from dpot.data.frames import FrameReader

    obs = [-0.1, 0.0]
    ds = _open(toy_data["src"], {"action": [0.0], "observation.state": obs, "observation.images.top": obs})
    if transforms:
        ds.image_transforms = lambda img: img
    reader = FrameReader(ds, KEYS, image_size={"observation.images.top": (40, 48)})
    assert reader.fast is not transforms
    for i in (0, 9):
        got, ref = reader[i], ds[i]
        assert got["observation.images.top"].shape == (2, 3, 40, 48)
        assert torch.equal(got["observation.images.top"], resize_frames(ref["observation.images.top"], (40, 48)))
        assert torch.equal(got["observation.images.wrist"], ref["observation.images.wrist"])  # not resized
    assert paths["fast" if not transforms else "fallback"] >= 2
