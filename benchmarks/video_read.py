"""Video datasets: LeRobot's ``LeRobotDataset[i]`` vs dpot's frame-cache path, items/s and DataLoader data wait.

    .venv/bin/python benchmarks/video_read.py --size 480x640 --vcodec libsvtav1 [--cameras 3] [--episodes 2]
        [--frames 40] [--items 60] [--batch 16] [--step_s 0.107] [--batches 12] [--workers 0 1 2] [--resize 96x128]

Writes a small video dataset with LeRobot's own writer (``--vcodec`` libsvtav1 = AV1 or h264, LeRobot's
default GOP 2, crf 30) into a temp dir: smooth moving gradients with blobs and mild noise (camera-like
content, not white noise). Then, in this process, one thread:

1. cache build time (``FrameReader.prepare()``: every frame decoded once by LeRobot's decoder);
2. items/s of ``LeRobotDataset[i]`` and of ``FrameReader[i]`` on the same random indices, interleaved
   (A, B, A, B), n_obs_steps 2 (cameras + state), horizon 16 (action), ``return_uint8=True`` as training reads;
3. a DataLoader (batch ``--batch``, random indices, persistent workers, prefetch 2) for each worker count:
   sustained batches/s when the consumer only pulls, and the *data wait* when each step also takes
   ``--step_s`` (a sleep: the main process waits for the GPU): wait share = wait / (wait + step_s), both for
   LeRobot's dataset and dpot's reader, and a floor: a dataset returning a fixed item of dpot's keys and sizes
   (what moving the batch through the DataLoader costs by itself on this machine).

``--resize HxW``: dpot's reader delivers frames at that size (the policy's ``resize_shape``; cached resized,
``CoTrainDataset(image_size=...)``), LeRobot's stay native (the policy would resize them itself).
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_dataset(root: Path, *, size: tuple[int, int], cameras: int, episodes: int, frames: int, vcodec: str,
                 seed: int = 0):
    """A small video LeRobotDataset at ``root`` (LeRobot's writer and encoder)."""
    from lerobot.configs.video import RGBEncoderConfig
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    h, w = size
    cams = [f"observation.images.cam{i}" for i in range(cameras)]
    feats = {c: {"dtype": "video", "shape": (h, w, 3), "names": ["height", "width", "channels"]} for c in cams}
    feats["observation.state"] = {"dtype": "float32", "shape": (4,), "names": [f"s{i}" for i in range(4)]}
    feats["action"] = {"dtype": "float32", "shape": (4,), "names": [f"a{i}" for i in range(4)]}
    ds = LeRobotDataset.create(repo_id="local/video_bench", fps=10, features=feats, root=root, use_videos=True,
                               robot_type="bench", rgb_encoder=RGBEncoderConfig(vcodec=vcodec))
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(episodes):
        phase = rng.uniform(0, 6.28, cameras)
        for t in range(frames):
            frame = {}
            for i, c in enumerate(cams):
                base = 0.5 + 0.5 * np.sin(xx / (w / 6) + t * 0.2 + phase[i]) * np.cos(yy / (h / 4) - t * 0.1)
                img = np.stack([base, base[::-1], 1 - base], -1) * 200
                cx, cy = w * (0.3 + 0.4 * np.sin(t * 0.1 + i)), h * 0.5
                img[(xx - cx) ** 2 + (yy - cy) ** 2 < (min(h, w) * 0.1) ** 2] = (250, 40, 40)
                img += rng.normal(0, 4, img.shape)
                frame[c] = np.clip(img, 0, 255).astype(np.uint8)
            frame["observation.state"] = rng.normal(size=4).astype(np.float32)
            frame["action"] = rng.normal(size=4).astype(np.float32)
            frame["task"] = "bench"
            ds.add_frame(frame)
        ds.save_episode()
    ds.finalize()
    return cams


class _Fixed:
    """The DataLoader's own floor: one item of the same keys and sizes, copied per read (no decoding, no cache)."""

    def __init__(self, item: dict):
        self.item = item

    def __getitem__(self, idx):
        return {k: v.clone() for k, v in self.item.items()}


def _loader_stats(dataset, n_items: int, *, batch: int, workers: int, batches: int, step_s: float, seed: int):
    """(batches/s when only pulling, mean data wait per step when each step also sleeps ``step_s``)."""
    import torch
    from lerobot.datasets.video_utils import _default_decoder_cache

    _default_decoder_cache.clear()  # decoders opened in this process must not be inherited by forked workers
    rng = random.Random(seed)
    sampler = [[rng.randrange(n_items) for _ in range(batch)] for _ in range(3 * batches + 8)]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                         persistent_workers=workers > 0, prefetch_factor=2 if workers else None)
    it = iter(loader)
    for _ in range(4):  # start-up: workers spawn, first batches
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches / (time.perf_counter() - t0)
    waits = []
    for _ in range(batches):
        time.sleep(step_s)
        t1 = time.perf_counter()
        next(it)
        waits.append(time.perf_counter() - t1)
    del it, loader
    return rate, statistics.mean(waits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="96x96", help="HxW of every camera")
    ap.add_argument("--vcodec", default="libsvtav1", help="libsvtav1 (AV1) or h264")
    ap.add_argument("--cameras", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--frames", type=int, default=40, help="frames per episode")
    ap.add_argument("--items", type=int, default=60, help="items per timing round")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=12, help="batches per DataLoader measurement")
    ap.add_argument("--step_s", type=float, default=0.107, help="simulated update time per step")
    ap.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--resize", default=None, help="HxW: dpot's reader delivers (and caches) frames at this size")
    ap.add_argument("--keep", default=None, help="write the dataset here and keep it (default: temp dir)")
    args = ap.parse_args()

    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from dpot.data.frames import FrameReader

    torch.set_num_threads(1)
    h, w = (int(x) for x in args.size.lower().split("x"))
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp()) / "video"
    t0 = time.perf_counter()
    cams = make_dataset(tmp, size=(h, w), cameras=args.cameras, episodes=args.episodes, frames=args.frames,
                        vcodec=args.vcodec)
    gen_s = time.perf_counter() - t0
    obs = [-0.1, 0.0]
    delta = {"action": [(i - 1) / 10 for i in range(16)], "observation.state": obs, **{c: obs for c in cams}}
    ds = LeRobotDataset("local/video_bench", root=tmp, delta_timestamps=delta, return_uint8=True)
    keys = [*cams, "observation.state", "action"]
    size = tuple(int(x) for x in args.resize.lower().split("x")) if args.resize else None
    reader = FrameReader(ds, keys, image_size={c: size for c in cams} if size else None)
    t0 = time.perf_counter()
    reader.prepare()
    build_s = time.perf_counter() - t0
    assert reader.fast
    rng = random.Random(0)
    idx = [rng.randrange(len(ds)) for _ in range(args.items)]
    ds[idx[0]]
    times = {"lerobot": [], "dpot": []}
    for _ in range(3):
        for name, get in (("lerobot", ds.__getitem__), ("dpot", reader.__getitem__)):
            t0 = time.perf_counter()
            for i in idx:
                get(i)
            times[name].append((time.perf_counter() - t0) / len(idx))
    lr, dp = statistics.median(times["lerobot"]), statistics.median(times["dpot"])
    print(f"dataset: {args.vcodec} {h}x{w}, {args.cameras} cameras, {len(ds)} frames ({args.episodes} episodes), "
          f"n_obs 2, horizon 16, backend {ds._video_backend}; generated in {gen_s:.1f} s; dpot frames at "
          f"{args.resize or 'native size'}")
    print(f"cache build (decode every frame once): {build_s:.2f} s = {build_s / len(ds) * 1e3:.1f} ms/frame "
          f"({args.cameras} cameras)")
    print(f"items/s, 1 thread:  LeRobotDataset[i] {1 / lr:8.1f}   dpot FrameReader[i] {1 / dp:8.1f}   "
          f"({lr / dp:.1f}x)")
    for workers in args.workers:
        for name, dataset in (("lerobot", ds), ("dpot", reader), ("floor", _Fixed(reader[0]))):
            rate, wait = _loader_stats(dataset, len(ds), batch=args.batch, workers=workers, batches=args.batches,
                                       step_s=args.step_s, seed=workers)
            print(f"DataLoader {name:7s} workers={workers}: {rate:6.2f} batches/s (batch {args.batch}); "
                  f"with a {args.step_s:.3f} s step: wait {wait * 1e3:6.1f} ms/step = "
                  f"{wait / (wait + args.step_s) * 100:5.1f} % of the step")
    if not args.keep:
        shutil.rmtree(tmp.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
