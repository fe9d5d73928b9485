"""Decode-once frame cache for video-stored LeRobotDatasets: uint8 frames in memory-mapped ``.npy`` files.

LeRobot 0.6.1 decodes the ``n_obs_steps`` frames of every camera of every item from the video (a seek to the
previous key frame and a decode up to the queried frame, per camera, per item; AV1 at 480x640 costs tens of
ms per item). The cache decodes every frame of the dataset once, with LeRobot's own decoder
(:func:`lerobot.datasets.video_utils.decode_video_frames`, ``return_uint8=True``, the backend and
``tolerance_s`` of the dataset, the same per-row timestamps LeRobot queries: ``from_timestamp`` of the
episode's video + the row's ``timestamp``), and stores them as ``<key>.npy`` ``uint8 [total_frames, C, H, W]``,
row = the dataset's absolute frame ``index``. Reading an item is then a memory-mapped slice; all DataLoader
workers and all processes share the page cache.

Values: row ``q`` holds exactly the frame LeRobot returns for a query of row ``q`` (``torch.equal``; tests in
tests/data/test_framecache.py). With a ``size`` for a key, the frame is stored resized by
:func:`resize_frames` (bilinear, antialiased, rounded to uint8), the same function the other read paths apply,
so cached and uncached reads stay equal.

Freshness: a cache directory is named by a fingerprint of the dataset (relative path, size and mtime of every
file under ``data/``, ``videos/`` and ``meta/``), the video keys, sizes, decoder backend, tolerance and
:data:`FORMAT_VERSION`. A changed dataset has another fingerprint, so it is rebuilt, never served stale;
caches of other fingerprints are removed after a build (when no process holds their lock).

Crash safety: a build writes into ``.tmp-<fp>-<pid>-<rand>/`` and renames it to ``frames-<fp>/`` only when
complete (``done.json`` written last); an exclusive ``flock`` on ``frames-<fp>.lock`` makes concurrent
processes wait for one build instead of building twice. Temp dirs left by a killed build are removed by the
next build of that fingerprint (under the lock, so never one still being written). Several nodes sharing
one dataset directory over a network file system rely on that file system's ``flock``; point
``$DPOT_FRAME_CACHE_DIR`` at node-local disk where it has none (each node then builds its own copy).

Location: ``<dataset root>/.dpot_cache/`` by default; ``$DPOT_FRAME_CACHE_DIR`` moves every cache under that
directory (one sub-directory per dataset root); if the default is not writable, ``~/.cache/dpot/frames``.
``DPOT_FRAME_CACHE=0`` turns the cache off (video is then read through ``ds[idx]``). Disk use is
``total_frames * H * W * 3`` bytes per camera (480x640: 0.92 MB per frame and camera; 10k frames x 3
cameras = 28 GB), the price of not decoding: size the dataset/disk accordingly, or resize (``size``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
ENV_DIR = "DPOT_FRAME_CACHE_DIR"
ENV_SWITCH = "DPOT_FRAME_CACHE"
DEFAULT_SUBDIR = ".dpot_cache"
BLOCK = 32  # frames decoded per call while building (bounds memory: 32 x 480x640x3 = 29 MB)


def enabled() -> bool:
    """False when ``$DPOT_FRAME_CACHE`` is ``0``/``false``/``off``."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in {"0", "false", "off", "no"}


def resize_frames(frames: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """``frames`` ``[..., C, H, W]`` resized to ``size = (h, w)`` (no-op when None or already that size).

    uint8 in -> uint8 out: ``round(clamp(interpolate(x, bilinear, antialias=True, align_corners=False)))``.
    float in (LeRobot's ``v / 255``) -> the same uint8 result ``/ 255`` as float32, so every read path (PNG
    columns, video cache, ``ds[idx]``) gives the same numbers for the same stored frame.
    """
    if size is None or tuple(frames.shape[-2:]) == tuple(size):
        return frames
    as_float = frames.dtype != torch.uint8
    u8 = (frames * 255).round().to(torch.uint8) if as_float else frames
    lead = u8.shape[:-3]
    x = u8.reshape(-1, *u8.shape[-3:]).float()
    y = torch.nn.functional.interpolate(x, size=tuple(int(s) for s in size), mode="bilinear",
                                        align_corners=False, antialias=True)
    out = y.round().clamp(0, 255).to(torch.uint8).reshape(*lead, u8.shape[-3], *size)
    return out.float() / 255.0 if as_float else out


def fingerprint(root: str | Path, keys: list[str], sizes: dict[str, tuple[int, int] | None], backend: str,
                tolerance_s: float) -> str:
    """Hex digest of what the cached frames depend on: every file under ``data/``, ``videos/`` and ``meta/``
    (relative path, size, mtime_ns), the keys and their sizes, the decoder backend and tolerance."""
    root = Path(root)
    files = []
    for sub in ("data", "videos", "meta"):
        base = root / sub
        if base.is_dir():
            for p in sorted(base.rglob("*")):
                if p.is_file():
                    st = p.stat()
                    files.append([str(p.relative_to(root)), st.st_size, st.st_mtime_ns])
    payload = {"v": FORMAT_VERSION, "files": files, "keys": sorted(keys), "backend": backend,
               "tolerance_s": float(tolerance_s),
               "sizes": {k: (list(sizes[k]) if sizes.get(k) else None) for k in sorted(keys)}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def cache_base(root: str | Path) -> Path:
    """Directory holding the caches of the dataset at ``root`` (see the module doc for the rule)."""
    root = Path(root).resolve()
    env = os.environ.get(ENV_DIR)
    if env:
        tag = hashlib.sha256(str(root).encode()).hexdigest()[:12]
        return Path(env) / f"{root.name}-{tag}"
    default = root / DEFAULT_SUBDIR
    if os.access(root, os.W_OK) or os.access(default, os.W_OK):
        return default
    tag = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "dpot" / "frames" / f"{root.name}-{tag}"


class FrameCache:
    """A built cache: ``frames(key, rows)`` -> uint8 ``[len(rows), C, H, W]`` (memory-mapped reads)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        done = json.loads((self.path / "done.json").read_text())
        self.keys = list(done["keys"])
        self._arrays = {k: np.load(self.path / f"{_fname(k)}.npy", mmap_mode="r") for k in self.keys}

    def frames(self, key: str, rows) -> torch.Tensor:
        """Stored frames of ``rows`` (absolute dataset indices)."""
        return torch.from_numpy(np.ascontiguousarray(self._arrays[key][np.asarray(rows, dtype=np.int64)]))

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._arrays[key].shape)


def _fname(key: str) -> str:
    return key.replace("/", "_")


def ensure_frame_cache(ds, sizes: dict[str, tuple[int, int] | None] | None = None) -> FrameCache:
    """The cache of ``ds``'s video keys (built now if missing or stale; waits if another process builds it).

    ``ds``: a LeRobotDataset (its ``root``, ``meta``, ``tolerance_s`` and video backend are used; its episode
    selection and delta timestamps are not: the cache holds every frame of the dataset).
    """
    meta = ds.meta
    keys = list(meta.video_keys)
    sizes = {k: (tuple(int(s) for s in sizes[k]) if sizes and sizes.get(k) else None) for k in keys}
    backend = str(ds._video_backend)
    fp = fingerprint(ds.root, keys, sizes, backend, ds.tolerance_s)
    base = cache_base(ds.root)
    final = base / f"frames-{fp}"
    if (final / "done.json").is_file():
        return FrameCache(final)
    base.mkdir(parents=True, exist_ok=True)
    with open(base / f"frames-{fp}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
        if not (final / "done.json").is_file():
            for old in base.glob(f".tmp-{fp}-*"):  # left by a killed build of this fingerprint
                shutil.rmtree(old, ignore_errors=True)
            if final.exists():
                shutil.rmtree(final)  # incomplete (no done.json): cannot be trusted
            tmp = base / f".tmp-{fp}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                _build(ds, keys, sizes, backend, tmp)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)  # (a kill leaves it: the next build removes it)
                raise
            (tmp / "done.json").write_text(json.dumps({"keys": keys, "fingerprint": fp,
                                                        "sizes": {k: sizes[k] for k in keys}}))
            os.rename(tmp, final)
            _remove_stale(base, keep=fp)
    return FrameCache(final)


def _remove_stale(base: Path, keep: str) -> None:
    """Remove caches (and their temp dirs) of other fingerprints whose lock nobody holds."""
    for lockfile in base.glob("frames-*.lock"):
        fp = lockfile.name[len("frames-"):-len(".lock")]
        if fp == keep:
            continue
        with open(lockfile, "a+") as lk:
            try:
                fcntl.flock(lk, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being built right now
            shutil.rmtree(base / f"frames-{fp}", ignore_errors=True)
            for tmp in base.glob(f".tmp-{fp}-*"):
                shutil.rmtree(tmp, ignore_errors=True)
            lockfile.unlink(missing_ok=True)


def _row_table(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(index, episode_index, timestamp)`` of every row of the dataset's parquet files."""
    import pyarrow.parquet as pq

    idx, ep, ts = [], [], []
    for f in sorted((root / "data").rglob("*.parquet")):
        t = pq.read_table(f, columns=["index", "episode_index", "timestamp"])
        idx.append(t.column("index").to_numpy())
        ep.append(t.column("episode_index").to_numpy())
        ts.append(t.column("timestamp").to_numpy())
    return np.concatenate(idx), np.concatenate(ep), np.concatenate(ts)


def _build(ds, keys, sizes, backend: str, out: Path) -> None:
    """Decode every row's frame of every key into ``out/<key>.npy`` (one thread per camera)."""
    from lerobot.datasets.video_utils import VideoDecoderCache, decode_video_frames, decode_video_frames_torchcodec

    meta, root = ds.meta, Path(ds.root)

    def decode(path, query, decoders):
        if backend == "torchcodec":
            return decode_video_frames_torchcodec(path, query, ds.tolerance_s, decoder_cache=decoders,
                                                  return_uint8=True)
        return decode_video_frames(path, query, ds.tolerance_s, backend, return_uint8=True)

    index, episode, timestamp = _row_table(root)
    n_rows = int(index.max()) + 1 if len(index) else 0
    episodes = meta.episodes

    def build_key(key: str) -> None:
        # private to this camera's thread: LeRobot's process-wide cache may hold a decoder of a replaced file,
        # and clearing a shared one would close another thread's decoder
        decoders = VideoDecoderCache()
        arr = None
        for ep_idx in np.unique(episode):
            rows = np.nonzero(episode == ep_idx)[0]
            path = root / meta.get_video_file_path(int(ep_idx), key)
            from_ts = episodes[int(ep_idx)][f"videos/{key}/from_timestamp"]
            for s in range(0, len(rows), BLOCK):
                r = rows[s:s + BLOCK]
                query = [from_ts + t for t in timestamp[r].tolist()]
                frames = resize_frames(decode(path, query, decoders), sizes[key])
                if arr is None:
                    arr = np.lib.format.open_memmap(out / f"{_fname(key)}.npy", mode="w+", dtype=np.uint8,
                                                    shape=(n_rows, *frames.shape[1:]))
                arr[index[r]] = frames.numpy()
        if arr is not None:
            arr.flush()
        decoders.clear()

    logger.info("frame cache: decoding %d frames x %d camera(s) of %s into %s", n_rows, len(keys), root, out)
    with ThreadPoolExecutor(max_workers=max(1, min(len(keys), os.cpu_count() or 1))) as pool:
        list(pool.map(build_key, keys))


__all__ = ["FrameCache", "cache_base", "enabled", "ensure_frame_cache", "fingerprint", "resize_frames"]
