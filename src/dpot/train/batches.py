"""The trainer's batches: a collated loader batch -> the normalized policy batch and its per-item meta, and the
split of a batch's rows (BC rows, then the OT pair rows: :mod:`dpot.data.cotrain`)."""

from __future__ import annotations

import torch

__all__ = ["META_KEYS", "RAW_PREFIX", "prepare_batch", "prepare_eval_batch", "split_rows"]

META_KEYS = ("domain", "phase", "frame_index", "episode_index", "ot_pair")
RAW_PREFIX = "raw/"  # meta key prefix of the unnormalized copies of OT labels (prepare_batch)


def prepare_batch(raw: dict, preprocessor, image_keys: list[str],
                  raw_keys: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """Split a collated loader batch into the normalized policy batch and its per-item meta (``META_KEYS``, plus
    ``raw/<key>``: an unnormalized copy of each of ``raw_keys``, for OT label terms in raw units).

    Mutates ``raw`` (pass a copy to keep it): uint8 images become float in [0, 1] before the preprocessor.
    """
    meta = {k: raw.pop(k) for k in META_KEYS if k in raw}
    meta.update({f"{RAW_PREFIX}{k}": raw[k].clone() for k in raw_keys})
    for k in image_keys:
        if raw[k].dtype == torch.uint8:
            raw[k] = raw[k].float() / 255.0
    return preprocessor(raw), meta


def prepare_eval_batch(raw: dict, preprocessor, image_keys: list[str]) -> dict:
    """The normalized policy batch of a collated loader batch (its meta dropped; ``raw`` is not modified)."""
    return prepare_batch(dict(raw), preprocessor, image_keys)[0]


def split_rows(batch: dict, n: int) -> tuple[dict, dict]:
    """``(first n rows, the rest)`` of every tensor of a batch dict (other values go to both)."""
    head, tail = {}, {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor) and v.ndim > 0:
            head[k], tail[k] = v[:n], v[n:]
        else:
            head[k] = tail[k] = v
    return head, tail
