"""Dynamic time warping of two trajectories (squared Euclidean frame cost), dpot's own implementation.

A leaf of ``dpot.data``: the temporal pairing (:mod:`dpot.data.cotrain`) and the pair files (:mod:`dpot.data.pairs`)
both use it; ``dpot pairs build`` uses dtaidistance instead when it is installed (same costs and paths).
"""

from __future__ import annotations

import numpy as np


def dtw_align(x: np.ndarray, y: np.ndarray, window: int | None = None) -> tuple[float, np.ndarray]:
    """Dynamic time warping of ``x`` ``[Lx, d]`` onto ``y`` ``[Ly, d]`` with the squared Euclidean frame cost.

    ``acc[i, j] = c(i, j) + min(acc[i-1, j-1], acc[i-1, j], acc[i, j-1])``; ``window`` (Sakoe-Chiba band, frames):
    only cells with ``-window - max(0, Lx - Ly) <= j - i <= window + max(0, Ly - Lx)`` (the band widened on the
    longer side so the end cell is reachable: dtaidistance's band with its ``window = window + 1``; None = no band).

    Returns:
        ``(cost, path)``: the accumulated cost of the optimal path and the path ``[K, 2]`` of ``(i, j)`` pairs
        from ``(0, 0)`` to ``(Lx-1, Ly-1)`` (ties broken diagonal, then up, then left).
    """
    lx, ly = len(x), len(y)
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    below = None if window is None else int(window) + max(0, lx - ly)  # j >= i - below
    above = None if window is None else int(window) + max(0, ly - lx)  # j <= i + above
    acc = np.full((lx + 1, ly + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, lx + 1):
        row = cost[i - 1]
        prev = acc[i - 1]
        cur = acc[i]
        diag_up = np.minimum(prev[:-1], prev[1:])  # (i-1, j-1), (i-1, j)
        lo, hi = (1, ly) if window is None else (max(1, i - below), min(ly, i + above))
        for j in range(lo, hi + 1):
            cur[j] = row[j - 1] + min(diag_up[j - 1], cur[j - 1])
    i, j = lx, ly
    pairs = []
    while i > 0 and j > 0:
        pairs.append((i - 1, j - 1))
        k = np.argmin([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]])
        if k == 0:
            i, j = i - 1, j - 1
        elif k == 1:
            i -= 1
        else:
            j -= 1
    return float(acc[lx, ly]), np.asarray(pairs[::-1], dtype=np.int64).reshape(-1, 2)


def dtw_path(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Dynamic time warping of ``x`` ``[Lx, d]`` onto ``y`` ``[Ly, d]`` (squared Euclidean cost, :func:`dtw_align`).

    Returns ``map_xy`` ``[Lx]``: for each frame of x, the mean index of the y frames on the optimal path.
    """
    _, path = dtw_align(x, y)
    out = np.zeros(len(x))
    cnt = np.zeros(len(x))
    np.add.at(out, path[:, 0], path[:, 1])
    np.add.at(cnt, path[:, 0], 1)
    return out / np.maximum(cnt, 1)


__all__ = ["dtw_align", "dtw_path"]
