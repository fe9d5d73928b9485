"""Video datasets through dpot.data.frames.FrameReader + dpot.data.framecache: the decode-once frame cache gives
exactly LeRobot's decoded frames, is rebuilt when the dataset changes, and survives a killed or concurrent build."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

CAMS = ["observation.images.top", "observation.images.wrist"]
KEYS = [*CAMS, "observation.state", "action"]


@pytest.fixture(scope="module")
def video_root(tmp_path_factory) -> Path:
    from dpot.data.toy import make_toy_dataset

    root = tmp_path_factory.mktemp("video") / "ds"
    make_toy_dataset(root, "source", episodes=3, image_size=32, seed=0, use_videos=True)
    return root


@pytest.fixture
def fresh_copy(video_root, tmp_path) -> Path:
    """A private copy of the video dataset (without any cache) for tests that change it."""
    dst = tmp_path / "ds"
    shutil.copytree(video_root, dst, ignore=shutil.ignore_patterns(".dpot_cache"))
    return dst


def _open(root, n_obs=2, return_uint8=True):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    obs = [(i - n_obs + 1) / 10 for i in range(n_obs)]
    delta = {"action": [(i - n_obs + 1) / 10 for i in range(16)], "observation.state": obs, **{c: obs for c in CAMS}}
    return LeRobotDataset("local/toy", root=root, delta_timestamps=delta, return_uint8=return_uint8)


def _edges(ds) -> list[int]:
    ends = [int(x) for x in ds.meta.episodes["dataset_to_index"]]
    return sorted({0, 1, len(ds) - 1} | {e - 1 for e in ends[:-1]} | {e for e in ends[:-1]} | {17})


def _spy_fast(monkeypatch) -> dict:
    from dpot.data.frames import FrameReader

    counts = {"fast": 0}
    original = FrameReader._read_from_columns

    def spy(self, idx):
        counts["fast"] += 1
        return original(self, idx)

    monkeypatch.setattr(FrameReader, "_read_from_columns", spy)
    return counts


@pytest.mark.parametrize(("n_obs", "uint8"), [(2, True), (1, False)])
def test_video_items_equal_lerobot_at_episode_edges(video_root, n_obs, uint8, monkeypatch):
    from dpot.data.frames import FrameReader

    counts = _spy_fast(monkeypatch)
    ds = _open(video_root, n_obs, uint8)
    reader = FrameReader(ds, KEYS).prepare()
    assert reader.fast and list((video_root / ".dpot_cache").glob("frames-*/done.json"))
    idx = _edges(ds)
    for i in idx:
        got, ref = reader[i], ds[i]
        expected = [k for k in [*KEYS, *(f"{k}_is_pad" for k in KEYS), "frame_index", "episode_index"] if k in ref]
        assert sorted(got) == sorted(expected)
        for k in expected:
            assert got[k].dtype == ref[k].dtype and got[k].shape == ref[k].shape, (i, k)
            assert torch.equal(got[k], ref[k]), (i, k)
    assert counts["fast"] == len(idx)                      # every item came from the cache, none via ds[idx]
    assert reader[0]["observation.images.top"].dtype == (torch.uint8 if uint8 else torch.float32)
    clone = pickle.loads(pickle.dumps(reader))               # a DataLoader worker re-opens the memory maps
    assert clone._cache is None and torch.equal(clone[idx[3]]["observation.images.wrist"],
                                                ds[idx[3]]["observation.images.wrist"])


def test_resized_cache_equals_resized_lerobot_frames(video_root):
    from dpot.data.framecache import resize_frames
    from dpot.data.frames import FrameReader

    ds = _open(video_root)
    size = (24, 20)
    reader = FrameReader(ds, KEYS, image_size={c: size for c in CAMS})
    for i in _edges(ds)[:4]:
        got, ref = reader[i], ds[i]
        for c in CAMS:
            assert got[c].shape == (2, 3, *size)
            assert torch.equal(got[c], resize_frames(ref[c], size))
            # the documented resize: antialiased bilinear of the uint8 frame, within rounding of float math
            exact = torch.nn.functional.interpolate(ref[c].float(), size=size, mode="bilinear", antialias=True)
            assert (got[c].float() - exact).abs().max() <= 0.5 + 1e-4
    assert len(list((video_root / ".dpot_cache").glob("frames-*"))) >= 1


def test_changed_dataset_rebuilds_cache_never_serves_stale(fresh_copy, monkeypatch):
    from dpot.data import framecache
    from dpot.data.frames import FrameReader

    reader = FrameReader(_open(fresh_copy), KEYS).prepare()
    old_dirs = sorted((fresh_copy / ".dpot_cache").glob("frames-*/"))
    builds = []
    original = framecache._build
    monkeypatch.setattr(framecache, "_build", lambda *a: (builds.append(1), original(*a)))
    FrameReader(_open(fresh_copy), KEYS).prepare()             # unchanged dataset, reopened: the same cache
    assert not builds and sorted((fresh_copy / ".dpot_cache").glob("frames-*/")) == old_dirs
    before = {c: reader[5][c].clone() for c in CAMS}
    # the dataset changes: the top camera's video is replaced by the wrist camera's (same frames and timestamps)
    vids = fresh_copy / "videos"
    top = next((vids / "observation.images.top").rglob("*.mp4"))
    wrist = next((vids / "observation.images.wrist").rglob("*.mp4"))
    shutil.copyfile(wrist, top)
    from lerobot.datasets.video_utils import _default_decoder_cache

    _default_decoder_cache.clear()  # LeRobot's own decoders of this process still hold the old file open
    ds = _open(fresh_copy)
    after = FrameReader(ds, KEYS)[5]["observation.images.top"]
    assert torch.equal(after, ds[5]["observation.images.top"])
    assert torch.equal(after, before[CAMS[1]]) and not torch.equal(after, before[CAMS[0]])  # new frames, not stale
    new_dirs = sorted((fresh_copy / ".dpot_cache").glob("frames-*/"))
    assert len(new_dirs) == 1 and new_dirs != old_dirs       # rebuilt under a new fingerprint, old one removed
    assert len(builds) == 1


_SLOW_BUILD = """
import sys, time
import lerobot.datasets.video_utils as vu
def slowed(original):
    def slow(*a, **k):
        time.sleep(0.5)
        return original(*a, **k)
    return slow
vu.decode_video_frames = slowed(vu.decode_video_frames)
vu.decode_video_frames_torchcodec = slowed(vu.decode_video_frames_torchcodec)
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from dpot.data.frames import FrameReader
ds = LeRobotDataset("local/toy", root=sys.argv[1], return_uint8=True)
FrameReader(ds, ["observation.images.top", "observation.images.wrist"]).prepare()
"""


def test_build_killed_midway_is_rebuilt_cleanly(fresh_copy):
    from dpot.data.frames import FrameReader

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_BUILD, str(fresh_copy)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = fresh_copy / ".dpot_cache"
    deadline = time.time() + 120
    while not list(cache.glob(".tmp-*/*.npy")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "the build finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(cache.glob(".tmp-*")) and not list(cache.glob("frames-*/"))  # half-built, never published
    ds = _open(fresh_copy)
    reader = FrameReader(ds, KEYS).prepare()
    assert not list(cache.glob(".tmp-*")) and len(list(cache.glob("frames-*/done.json"))) == 1
    for i in _edges(ds)[:3]:
        assert torch.equal(reader[i]["observation.images.wrist"], ds[i]["observation.images.wrist"])


def test_concurrent_builders_wait_for_one_build(fresh_copy, monkeypatch):
    """Two builders of the same cache: one decodes, the other waits on the lock and then reads its result; a
    builder never starts while another process holds the lock."""
    import fcntl

    from dpot.data import framecache

    calls = []
    original = framecache._build
    monkeypatch.setattr(framecache, "_build", lambda *a: (calls.append(1), original(*a)))
    ds = _open(fresh_copy)
    fp = framecache.fingerprint(ds.root, list(ds.meta.video_keys), {}, str(ds._video_backend), ds.tolerance_s)
    base = framecache.cache_base(ds.root)
    base.mkdir(parents=True)
    holder = open(base / f"frames-{fp}.lock", "a+")  # noqa: SIM115 - held across the threads below
    fcntl.flock(holder, fcntl.LOCK_EX)                # "another process" is building
    results = []
    threads = [threading.Thread(target=lambda: results.append(framecache.ensure_frame_cache(ds))) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    assert all(t.is_alive() for t in threads) and not calls   # both wait; neither builds under a held lock
    holder.close()                                            # the lock is released (as when a builder dies)
    for t in threads:
        t.join(60)
    assert len(calls) == 1 and len(results) == 2
    assert results[0].path == results[1].path == base / f"frames-{fp}"


def test_cache_switched_off_reads_through_lerobot(video_root, monkeypatch):
    from dpot.data.frames import FrameReader

    monkeypatch.setenv("DPOT_FRAME_CACHE", "0")
    ds = _open(video_root)
    reader = FrameReader(ds, KEYS)
    assert not reader.fast
    got, ref = reader[3], ds[3]
    assert all(torch.equal(got[k], ref[k]) for k in KEYS)


def test_episode_subset_reads_the_full_cache(video_root):
    """A dataset opened on some episodes only: the cache (rows = absolute indices of the whole dataset) gives the
    same items as LeRobot, including the first and last frames of the selected episodes."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from dpot.data.frames import FrameReader

    obs = [-0.1, 0.0]
    ds = LeRobotDataset("local/toy", root=video_root, episodes=[1, 2], return_uint8=True,
                        delta_timestamps={"action": [0.0, 0.1], "observation.state": obs, **{c: obs for c in CAMS}})
    reader = FrameReader(ds, KEYS)
    assert reader.fast
    n1 = int(ds.meta.episodes["length"][1])
    for i in (0, n1 - 1, n1, len(ds) - 1):
        got, ref = reader[i], ds[i]
        assert int(got["episode_index"]) == int(ref["episode_index"])
        assert all(torch.equal(got[k], ref[k]) for k in [*KEYS, *(f"{c}_is_pad" for c in CAMS)]), i
