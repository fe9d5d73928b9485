"""Domain-gap picture: source and target views of the same seeded scene, side by side for each camera."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dpot.bench.domains import check_camera, resolve_spec
from dpot.bench.env import DEFAULT_CAMERAS, DomainEnv, check_task


def gap_image(task: str, source="source", target="target", cameras: tuple[str, ...] = (*DEFAULT_CAMERAS, "topview"),
              image_size: int = 192, seed: int = 0) -> np.ndarray:
    """One uint8 image: a row per camera, source on the left and target on the right (same seed, same layout)."""
    check_task(task)
    cameras = tuple(check_camera(c) for c in cameras)
    specs = (resolve_spec(source), resolve_spec(target))
    columns = []
    for spec in specs:
        with DomainEnv(task, spec, image_size=image_size, cameras=cameras) as env:
            images = env.reset(seed)["images"]
        columns.append([images[c] for c in cameras])
    gap = np.full((image_size, 6, 3), 255, np.uint8)
    rows = [np.concatenate([src, gap, tgt], axis=1) for src, tgt in zip(*columns)]
    sep = np.full((6, rows[0].shape[1], 3), 255, np.uint8)
    body = np.concatenate([x for r in rows for x in (r, sep)][:-1], axis=0)
    return _label(body, image_size, cameras, tuple(s.name for s in specs))


def _label(body: np.ndarray, size: int, cameras, names) -> np.ndarray:
    """Add a header (domain names) and a left column (camera names)."""
    from PIL import Image, ImageDraw

    head, left = 18, 90
    canvas = Image.new("RGB", (body.shape[1] + left, body.shape[0] + head), "white")
    canvas.paste(Image.fromarray(body), (left, head))
    draw = ImageDraw.Draw(canvas)
    for i, name in enumerate(names):
        draw.text((left + i * (size + 6) + 4, 3), name, fill="black")
    for j, cam in enumerate(cameras):
        draw.text((4, head + j * (size + 6) + size // 2 - 5), cam, fill="black")
    return np.asarray(canvas)


def write_gap_png(task: str, out: str | Path, **kwargs) -> Path:
    """Write ``gap_image(task, **kwargs)`` as a PNG to ``out`` and return the path."""
    import imageio.v2 as imageio

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    imageio.imwrite(out, gap_image(task, **kwargs))
    return out
