"""Fast item reads from an image-stored LeRobotDataset: what ``ds[idx]`` returns, for the keys training needs.

LeRobot 0.6.1 reads an item of a dataset whose cameras are stored as images (PNG in the parquet files, what
``dpot bench generate`` writes) through Hugging Face ``datasets`` row access: every delta-timestamp query
builds a new ``Column`` (a deep copy of the features) and decodes every image of every queried row, so the 16
rows of an action chunk decode 32 PNGs that are thrown away. Measured on the study's 64 px data: ~29 ms per
item, two data workers using as much CPU as the training step itself (docs/benchmarks.md).

:class:`FrameReader` gives the same values (``torch.equal``, same dtypes; tests/train/test_frames.py checks
it against ``ds[idx]`` item by item, and that each item took the fast path) for a chosen set of keys: numeric
columns are read once into tensors, images are decoded only for the frames an item asks for, with LeRobot's own
conversion (:func:`lerobot.datasets.io_utils.pil_to_chw_tensor`) and LeRobot's own delta-index/padding rule
(``DatasetReader._get_query_indices``); the image columns stay chunked and memory-mapped. Datasets with video
keys, image transforms or images stored as paths are read through ``ds[idx]`` unchanged (video decoding
already decodes only the queried frames).
"""

from __future__ import annotations

import io

import numpy as np
import torch


class FrameReader(torch.utils.data.Dataset):
    """``reader[idx]`` = ``{k: ds[idx][k] for k in keys + [k + "_is_pad"] + ["frame_index", "episode_index"]}``.

    Built lazily in each process that reads (DataLoader workers get a small pickle: the dataset, not the
    tensors)."""

    def __init__(self, ds, keys: list[str]):
        self.ds = ds
        self.keys = list(keys)
        self._cache = None
        self._slow = False

    def __len__(self) -> int:
        return len(self.ds)

    def __getstate__(self):
        return {**self.__dict__, "_cache": None}

    @property
    def fast(self) -> bool:
        """True when items are read from the columns; False when they go through ``ds[idx]``."""
        meta = self.ds.meta
        if meta.video_keys or self.ds.image_transforms is not None:
            return False
        if self._cache is None:
            self._build()
        return not self._slow

    def _build(self):
        reader = self.ds._ensure_reader()
        table = reader.hf_dataset.data  # pyarrow table of the selected episodes (memory-mapped)
        image_keys = set(self.ds.meta.image_keys)
        wanted = set(self.keys) | {"frame_index", "episode_index", "index"}
        numeric, images = {}, {}
        for key in wanted:
            col = table.column(key)
            if key in image_keys:
                if any(chunk.field("bytes").null_count for chunk in col.chunks):
                    self._slow = True  # images stored as paths, not bytes: LeRobot's reader handles them
                images[key] = col  # chunked and memory-mapped: nothing is copied
            else:
                numeric[key] = _column_tensor(col)
        rel = reader._absolute_to_relative_idx
        self._cache = (reader, numeric, images, rel)
        return self._cache

    def __getitem__(self, idx: int) -> dict:
        if not self.fast:
            return self._read_through_dataset(idx)
        return self._read_from_columns(idx)

    def _read_through_dataset(self, idx: int) -> dict:
        """The fallback: LeRobot's own ``ds[idx]``, restricted to the reader's keys."""
        raw = self.ds[int(idx)]
        names = [*self.keys, *(f"{k}_is_pad" for k in self.keys), "frame_index", "episode_index"]
        return {k: raw[k] for k in names if k in raw}

    def _read_from_columns(self, idx: int) -> dict:
        """The fast path: numeric columns from the cached tensors, only the queried images decoded."""
        reader, numeric, images, rel = self._cache
        idx = int(idx)
        abs_idx = int(numeric["index"][idx])
        ep_idx = int(numeric["episode_index"][idx])
        out = {"frame_index": numeric["frame_index"][idx], "episode_index": numeric["episode_index"][idx]}
        query, padding = ({}, {}) if reader.delta_indices is None else reader._get_query_indices(abs_idx, ep_idx)
        for key in self.keys:
            if key in query:
                rows = query[key] if rel is None else [rel[i] for i in query[key]]
                if key in images:
                    out[key] = torch.stack([_decode(images[key], r) for r in rows])
                else:
                    out[key] = numeric[key][rows]
                out[f"{key}_is_pad"] = padding[f"{key}_is_pad"]
            else:
                out[key] = _decode(images[key], idx) if key in images else numeric[key][idx]
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
