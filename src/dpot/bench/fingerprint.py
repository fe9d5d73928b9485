"""A generated dataset's fingerprint: what tells two generations of "the same" dataset apart.

Two studies that generate their data from the same seeds can still train on different bytes (another machine's
floating point in the physics or the software renderer); v4's retrains of v3's runs found exactly that after the
fact. A study records, in its ``results.json``, the SHA-256 of each dataset's frame values apart from the images
(states, actions, indices: the physics) and of its images (the renderer's bytes, as stored), over the frame tables
(``data/**/*.parquet``) in sorted order, plus any image or video files, so a later comparison can say which of the
two differs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["dataset_fingerprint"]

IMAGE_PREFIX = "observation.images"


def _column_bytes(col) -> bytes:
    """A parquet column's values as bytes: numbers (also inside lists) exactly, anything else through its repr."""
    import pyarrow as pa
    import pyarrow.compute as pc

    while pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        col = pc.list_flatten(col)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type):
        return col.to_numpy(zero_copy_only=False).tobytes()
    return repr(col.to_pylist()).encode()


def dataset_fingerprint(root: str | Path) -> dict:
    """``{"frames": sha256 | None, "images": sha256 | None, "files": n}`` of a LeRobot dataset directory: ``frames``
    over every non-image column of the frame tables, ``images`` over the image columns' stored bytes and the files
    under ``images/`` and ``videos/`` (None: nothing of that part); ``meta/`` is left out (derived statistics and the
    generator's settings)."""
    import pyarrow.parquet as pq

    root = Path(root)
    frames, images, n = hashlib.sha256(), hashlib.sha256(), 0
    n_frames = n_images = 0
    for path in sorted((root / "data").rglob("*.parquet")) if (root / "data").is_dir() else []:
        table = pq.read_table(path)
        n += 1
        for name in sorted(table.column_names):
            col = table.column(name).combine_chunks()
            if name.startswith(IMAGE_PREFIX):
                images.update(name.encode() + b"\0")
                for item in col.to_pylist():
                    stored = item.get("bytes") if isinstance(item, dict) else None
                    images.update(stored if stored else repr(item).encode())
                n_images += 1
            else:
                frames.update(name.encode() + b"\0" + _column_bytes(col))
                n_frames += 1
    for d in ("images", "videos"):
        for path in sorted(p for p in (root / d).rglob("*") if p.is_file()) if (root / d).is_dir() else []:
            images.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
            n += 1
            n_images += 1
    return {"frames": frames.hexdigest() if n_frames else None, "images": images.hexdigest() if n_images else None,
            "files": n}
