"""Item read time: LeRobot's ``LeRobotDataset.__getitem__`` vs ``dpot.data.frames.FrameReader`` (same items).

    .venv/bin/python benchmarks/data_read.py [--root DIR] [--items 200] [--n_obs 1] [--horizon 16]

Reads the same random indices with both, interleaved (A, B, A, B) in this process on one thread, and prints
ms per item and the ratio. Without ``--root`` it writes a 64 px toy dataset (20 episodes, 2 cameras) to a temp
dir. The values are equal (tests/train/test_frames.py); only the time differs. A video ``--root`` is read
from dpot's frame cache (built first, not timed); benchmarks/video_read.py adds the DataLoader data wait and
writes its own AV1/H.264 datasets.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--n_obs", type=int, default=1)
    ap.add_argument("--horizon", type=int, default=16)
    args = ap.parse_args()

    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    from dpot.data.frames import FrameReader

    torch.set_num_threads(1)
    root = Path(args.root) if args.root else None
    if root is None:
        from dpot.data.toy import make_toy_dataset

        root = Path(tempfile.mkdtemp()) / "toy"
        make_toy_dataset(root, "source", episodes=20, image_size=64, seed=0)
    meta = LeRobotDatasetMetadata("local/bench", root=root)
    obs = [(i - args.n_obs + 1) / meta.fps for i in range(args.n_obs)]
    delta = {"action": [(i - args.n_obs + 1) / meta.fps for i in range(args.horizon)], "observation.state": obs}
    delta.update({k: obs for k in meta.camera_keys})
    ds = LeRobotDataset("local/bench", root=root, delta_timestamps=delta, return_uint8=True)
    reader = FrameReader(ds, [*meta.camera_keys, "observation.state", "action"])
    if not reader.fast:  # it would time LeRobot against itself
        raise SystemExit(f"{root}: FrameReader reads this dataset through ds[idx] (image transforms, images "
                         "stored as paths, or video with DPOT_FRAME_CACHE=0); nothing to compare")
    reader.prepare()
    reader[0]
    rng = random.Random(0)
    idx = [rng.randrange(len(ds)) for _ in range(args.items)]
    times = {"lerobot": [], "frames": []}
    for _ in range(3):
        for name, get in (("lerobot", ds.__getitem__), ("frames", reader.__getitem__)):
            t0 = time.perf_counter()
            for i in idx:
                get(i)
            times[name].append((time.perf_counter() - t0) / len(idx) * 1e3)
    lr, fr = statistics.median(times["lerobot"]), statistics.median(times["frames"])
    print(f"dataset {root} ({len(ds)} frames, cameras {len(meta.camera_keys)}, n_obs {args.n_obs}, "
          f"horizon {args.horizon}), {args.items} items x 3 rounds, 1 thread")
    print(f"LeRobotDataset[i]  {lr:7.2f} ms/item")
    print(f"FrameReader[i]     {fr:7.2f} ms/item   ({lr / fr:.1f}x faster)")


if __name__ == "__main__":
    main()
