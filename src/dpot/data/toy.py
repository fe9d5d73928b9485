"""Tiny synthetic two-domain LeRobotDatasets for tests and smoke runs (seconds to make, no simulator).

Task: a point moves from a random start to a random goal on a plane; ``observation.state`` is
``[x, y, goal_x, goal_y]``, ``action`` is the next position ``[x', y', 0, 0]`` padded to ``action_dim``.
Each camera shows the point and the goal as coloured blobs. The *target* domain differs the way sim and
real do: other colours and background (visual gap), an actuator that reaches only 70% of each commanded step
(dynamics gap), and episodes of other lengths. Written with LeRobot's own writer
(``LeRobotDataset.create``/``add_frame``/``save_episode``/``finalize``), so it loads like any LeRobotDataset v3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dpot.data import seeds

DOMAINS = ("source", "target")
_STYLE = {
    "source": {"bg": (40, 40, 40), "point": (255, 60, 60), "goal": (60, 255, 60), "gain": 1.0, "len": (36, 44)},
    "target": {"bg": (200, 190, 150), "point": (40, 40, 255), "goal": (250, 160, 0), "gain": 0.7, "len": (44, 56)},
}


def _draw(xy: np.ndarray, goal: np.ndarray, size: int, style: dict, view: int) -> np.ndarray:
    img = np.empty((size, size, 3), dtype=np.uint8)
    img[:] = style["bg"]
    yy, xx = np.mgrid[0:size, 0:size]
    for (px, py), colour, radius in ((goal, style["goal"], 0.09), (xy, style["point"], 0.07)):
        if view == 1:  # a second camera: mirrored, zoomed view
            px, py = 1.0 - px, py
        cx, cy = (px * 0.8 + 0.1) * size, (py * 0.8 + 0.1) * size
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= (radius * size) ** 2] = colour
    return img


def make_toy_dataset(
    root: str | Path,
    domain: str = "source",
    *,
    episodes: int = 4,
    image_size: int = 32,
    cameras: tuple[str, ...] = ("top", "wrist"),
    action_dim: int = 4,
    state_dim: int = 4,
    fps: int = 10,
    seed: int = 0,
    use_videos: bool = False,
):
    """Write a toy dataset of ``episodes`` episodes to ``root`` (must not exist) and return the LeRobotDataset.

    Camera keys are ``observation.images.<camera>``; same ``seed`` gives the same data. ``state_dim`` > 4 pads
    the state with zeros (a robot with more joints).
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    if action_dim < 2:
        raise ValueError("action_dim must be >= 2")
    if state_dim < 4:
        raise ValueError("state_dim must be >= 4")
    style = _STYLE[domain]
    rng = np.random.default_rng(seed + (0 if domain == "source" else seeds.TOY_TARGET_OFFSET))
    img_dtype = "video" if use_videos else "image"
    features = {f"observation.images.{c}": {"dtype": img_dtype, "shape": (image_size, image_size, 3),
                                            "names": ["height", "width", "channels"]} for c in cameras}
    state_names = ["x", "y", "goal_x", "goal_y", *(f"pad{i}" for i in range(state_dim - 4))]
    features["observation.state"] = {"dtype": "float32", "shape": (state_dim,), "names": state_names}
    features["action"] = {"dtype": "float32", "shape": (action_dim,), "names": [f"a{i}" for i in range(action_dim)]}
    ds = LeRobotDataset.create(repo_id=f"local/toy_{domain}", fps=fps, features=features, root=Path(root),
                               use_videos=use_videos, robot_type="toy")
    for _ in range(episodes):
        xy, goal = rng.uniform(0.1, 0.9, 2), rng.uniform(0.1, 0.9, 2)
        length = int(rng.integers(*style["len"]))
        for _ in range(length):
            # Expert: head for the goal; the commanded next position is the action.
            target = xy + np.clip(goal - xy, -0.08, 0.08) + rng.normal(0, 0.005, 2)
            frame = {f"observation.images.{c}": _draw(xy, goal, image_size, style, i) for i, c in enumerate(cameras)}
            frame["observation.state"] = np.concatenate([xy, goal, np.zeros(state_dim - 4)]).astype(np.float32)
            action = np.zeros(action_dim, dtype=np.float32)
            action[:2] = target
            frame["action"] = action
            frame["task"] = "reach the goal"
            ds.add_frame(frame)
            xy = xy + style["gain"] * (target - xy)
        ds.save_episode()
    ds.finalize()
    return ds
