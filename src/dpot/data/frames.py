"""Fast item reads from an image- or video-stored LeRobotDataset: what ``ds[idx]`` returns, for the keys training
needs.

LeRobot 0.6.1 reads an item of a dataset whose cameras are stored as images (PNG in the parquet files, what
``dpot bench generate`` writes) through Hugging Face ``datasets`` row access: every delta-timestamp query
builds a new ``Column`` (a deep copy of the features) and decodes every image of every queried row, so the 16
rows of an action chunk decode 32 PNGs that are thrown away. Measured on the study's 64 px data: ~29 ms per
item, two data workers using as much CPU as the training step itself (docs/benchmarks.md).

:class:`FrameReader` gives the same values (``torch.equal``, same dtypes; tests/train/test_frames.py checks
it against ``ds[idx]`` item by item, and that each item took the fast path) for a chosen set of keys: numeric
columns are read once into tensors, images are decoded only for the frames an item asks for, with LeRobot's own
conversion (:func:`lerobot.datasets.io_utils.pil_to_chw_tensor`) and LeRobot's own delta-index/padding rule
(``DatasetReader._get_query_indices``); the image columns stay chunked and memory-mapped. Video keys are read
from the decode-once frame cache (:mod:`dpot.data.framecache`: uint8 memory-mapped frames decoded once by
LeRobot's own decoder, built on first use or by :meth:`FrameReader.prepare`), again with LeRobot's query rule.
Datasets with image transforms or images stored as paths, and video when the cache is switched off
(``DPOT_FRAME_CACHE=0``), are read through ``ds[idx]`` unchanged.

``image_size``: ``{camera key: (h, w)}`` resizes those cameras with
:func:`dpot.data.framecache.resize_frames` on every path (the video cache stores them resized), so a source
dataset recorded at another size gives the target's size (what the policy was built for).
"""

from __future__ import annotations

import io

import numpy as np
import torch

from dpot.data.framecache import resize_frames


class FrameReader(torch.utils.data.Dataset):
    """``reader[idx]`` = ``{k: ds[idx][k] for k in keys + [k + "_is_pad"] + ["frame_index", "episode_index"]}``.

    Built lazily in each process that reads (DataLoader workers get a small pickle: the dataset, not the
    tensors)."""

    def __init__(self, ds, keys: list[str], image_size: dict[str, tuple[int, int]] | None = None):
        self.ds = ds
        self.keys = list(keys)
        self.image_size = {k: tuple(int(x) for x in v) for k, v in (image_size or {}).items()
                           if k in ds.meta.camera_keys}
        self._cache = None
        self._slow = False

    def prepare(self) -> FrameReader:
        """Build what the fast path needs now (the video frame cache: decoded once, then shared by every
        worker and process); call it in the main process before a DataLoader starts its workers."""
        self.fast  # noqa: B018 - builds the cache (workers get a pickle without it and re-open the memory maps)
        return self

    def __len__(self) -> int:
        return len(self.ds)

    def __getstate__(self):
        return {**self.__dict__, "_cache": None}

    @property
    def fast(self) -> bool:
        """True when items are read from the columns; False when they go through ``ds[idx]``."""
        from dpot.data import framecache

        meta = self.ds.meta
        if self.ds.image_transforms is not None:
            return False
        if set(meta.video_keys) & set(self.keys) and not framecache.enabled():
            return False
        if self._cache is None:
            self._build()
        return not self._slow

    def _build(self):
        reader = self.ds._ensure_reader()
        table = reader.hf_dataset.data  # pyarrow table of the selected episodes (memory-mapped)
        from dpot.data.framecache import ensure_frame_cache

        image_keys = set(self.ds.meta.image_keys)
        video_keys = [k for k in self.ds.meta.video_keys if k in self.keys]
        wanted = (set(self.keys) - set(video_keys)) | {"frame_index", "episode_index", "index"}
        numeric, images = {}, {}
        frames = None
        if video_keys:
            frames = ensure_frame_cache(self.ds, {k: self.image_size.get(k) for k in self.ds.meta.video_keys})
        for key in wanted:
            col = table.column(key)
            if key in image_keys:
                if any(chunk.field("bytes").null_count for chunk in col.chunks):
                    self._slow = True  # images stored as paths, not bytes: LeRobot's reader handles them
                images[key] = col  # chunked and memory-mapped: nothing is copied
            else:
                numeric[key] = _column_tensor(col)
        rel = reader._absolute_to_relative_idx
        self._cache = (reader, numeric, images, rel, frames)
        return self._cache

    def __getitem__(self, idx: int) -> dict:
        if not self.fast:
            return self._read_through_dataset(idx)
        return self._read_from_columns(idx)

    def _read_through_dataset(self, idx: int) -> dict:
        """The fallback: LeRobot's own ``ds[idx]``, restricted to the reader's keys."""
        raw = self.ds[int(idx)]
        names = [*self.keys, *(f"{k}_is_pad" for k in self.keys), "frame_index", "episode_index"]
        out = {k: raw[k] for k in names if k in raw}
        for key, size in self.image_size.items():
            if key in out:
                out[key] = resize_frames(out[key], size)
        return out

    def _read_from_columns(self, idx: int) -> dict:
        """The fast path: numeric columns from the cached tensors, only the queried images decoded."""
        reader, numeric, images, rel, frames = self._cache
        idx = int(idx)
        abs_idx = int(numeric["index"][idx])
        ep_idx = int(numeric["episode_index"][idx])
        out = {"frame_index": numeric["frame_index"][idx], "episode_index": numeric["episode_index"][idx]}
        query, padding = ({}, {}) if reader.delta_indices is None else reader._get_query_indices(abs_idx, ep_idx)
        for key in self.keys:
            if frames is not None and key in frames.keys:
                # LeRobot: frames of the queried rows' timestamps, ``.squeeze(0)`` (one frame -> [C, H, W])
                got = frames.frames(key, query.get(key, [abs_idx])).squeeze(0)
                out[key] = got if reader._return_uint8 else (got / 255.0).type(torch.float32)
                if key in query:
                    out[f"{key}_is_pad"] = padding[f"{key}_is_pad"]
                continue
            if key in query:
                rows = query[key] if rel is None else [rel[i] for i in query[key]]
                if key in images:
                    out[key] = torch.stack([_decode(images[key], r) for r in rows])
                else:
                    out[key] = numeric[key][rows]
                out[f"{key}_is_pad"] = padding[f"{key}_is_pad"]
            else:
                out[key] = _decode(images[key], idx) if key in images else numeric[key][idx]
            if key in self.image_size and key in images:
                out[key] = resize_frames(out[key], self.image_size[key])
        return out


def _column_tensor(col) -> torch.Tensor:
    """A numeric (scalar or fixed-length list) arrow column as one tensor with the dtype ``torch.tensor`` gives
    its Python/numpy values (what LeRobot's ``hf_transform_to_torch`` returns per row)."""
    import pyarrow as pa

    col = col.combine_chunks()
    if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        values = col.flatten().to_numpy(zero_copy_only=False)
        return torch.from_numpy(np.array(values.reshape(len(col), -1)))
    return torch.from_numpy(np.array(col.to_numpy(zero_copy_only=False)))


def _decode(column, row: int) -> torch.Tensor:
    """Decode one stored image (struct {bytes, path} column) with LeRobot's conversion (``pil_to_chw_tensor``:
    float32 CHW in [0, 1])."""
    from lerobot.datasets.io_utils import pil_to_chw_tensor
    from PIL import Image

    return pil_to_chw_tensor(Image.open(io.BytesIO(column[row]["bytes"].as_py())))


__all__ = ["FrameReader"]
