"""Source and target datasets that don't match (issue 12 item 2): each case trains or fails before training with
one ``error:`` line (dpot.train.inputs documents the rule for each)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from train_helpers import read_metrics, tiny_config, write_config

from dpot.cli import main as dpot_main

CAMS = ["observation.images.top", "observation.images.wrist"]


@pytest.fixture(scope="module")
def odd_source(tmp_path_factory):
    """A source recorded differently from the toy target (64 px PNG, cameras top/wrist, 10 fps, stats present):
    video, cameras front/side, 48 px, 15 fps, no meta/stats.json."""
    from dpot.data.toy import make_toy_dataset

    root = tmp_path_factory.mktemp("odd") / "src"
    make_toy_dataset(root, "source", episodes=3, image_size=48, cameras=("front", "side"), fps=15, seed=1,
                     use_videos=True)
    (root / "meta" / "stats.json").rename(root / "stats.json.orig")
    return root


@pytest.fixture(scope="module")
def wide_state(tmp_path_factory):
    from dpot.data.toy import make_toy_dataset

    root = tmp_path_factory.mktemp("wide_state") / "src"
    make_toy_dataset(root, "source", episodes=1, image_size=64, state_dim=6)
    return root


def _cfg(toy_data, src, **over):
    return tiny_config(toy_data, source_dataset={"repo_id": "local/toy_source", "root": str(src)}, **over)


def _run(tmp_path, cfg):
    out = tmp_path / "out"
    rc = dpot_main(["train", f"--config_path={write_config(tmp_path / 'c.json', cfg)}", f"--output_dir={out}"])
    return rc, out


@pytest.mark.slow
def test_mismatched_source_trains(toy_data, odd_source, tmp_path):
    """Other camera names (camera_map), other size (resized), other fps, video vs PNG, no stats: trains."""
    cfg = _cfg(toy_data, odd_source, camera_map={"front": "top", "side": "wrist"}, steps=2)
    rc, out = _run(tmp_path, cfg)
    assert rc == 0
    rows = [r for r in read_metrics(out) if "train/loss" in r]
    assert len(rows) == 2 and all(np.isfinite(r["train/loss"]) for r in rows)


def test_mixed_batch_values(toy_data, odd_source):
    """A video source at 48 px and a PNG target at 64 px give one uint8 batch at the target's size: source frames
    are LeRobot's decoded frames resized by resize_frames, target frames are LeRobot's PNG floats * 255."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from dpot.data.cotrain import SRC, TGT, CoTrainDataset, SampledItem
    from dpot.data.framecache import resize_frames

    def open_ds(root, fps):
        obs = [-1 / fps, 0.0]
        delta = {"action": [i / fps for i in range(-1, 7)], "observation.state": obs}
        cams = ["observation.images.front", "observation.images.side"] if root == odd_source else CAMS
        return LeRobotDataset("local/x", root=root, delta_timestamps={**delta, **{c: obs for c in cams}},
                              return_uint8=True)

    src, tgt = open_ds(odd_source, 15), open_ds(toy_data["tgt"], 10)
    keys = [*CAMS, "observation.state", "action"]
    data = CoTrainDataset(src, tgt, camera_map={"observation.images.front": CAMS[0],
                                                "observation.images.side": CAMS[1]}, keys=keys)
    items = [SampledItem(SRC, 0, 0.0), SampledItem(SRC, len(src) - 1, 1.0), SampledItem(TGT, 3, 0.1)]
    batch = torch.utils.data.default_collate([data[it] for it in items])
    assert batch[CAMS[0]].dtype == torch.uint8 and batch[CAMS[0]].shape == (3, 2, 3, 64, 64)
    for b, (dom, idx, _, _) in enumerate(items):
        if dom == SRC:
            ref = src[idx]
            assert torch.equal(batch[CAMS[0]][b], resize_frames(ref["observation.images.front"], (64, 64)))
            assert torch.equal(batch[CAMS[1]][b], resize_frames(ref["observation.images.side"], (64, 64)))
        else:
            ref = tgt[idx]
            for c in CAMS:  # what the trainer feeds the policy: uint8 / 255 == LeRobot's float frames
                assert torch.equal(batch[c][b].float() / 255.0, ref[c])
        assert torch.equal(batch["action"][b], ref["action"])


def test_missing_stats_are_computed_from_the_data(toy_data, odd_source):
    """A dataset without meta/stats.json: state/action stats computed from the parquet equal the ones LeRobot's
    writer stored."""
    import json

    from dpot.train.inputs import _domain_stats, open_meta

    class DsCfg:
        repo_id, root = "local/x", odd_source

    meta, root = open_meta(DsCfg, "source_dataset")
    assert meta.stats is None
    got = _domain_stats(meta, root, ["observation.state", "action", "observation.images.front"])
    stored = json.loads((odd_source / "stats.json.orig").read_text())
    for key in ("observation.state", "action"):
        for s in ("mean", "std", "min", "max"):
            np.testing.assert_allclose(np.ravel(got[key][s]), np.ravel(stored[key][s]), rtol=1e-5, atol=1e-6)
        assert int(np.ravel(got[key]["count"])[0]) == meta.total_frames


def test_state_dims_differ_one_error_line(toy_data, wide_state, tmp_path, capsys):
    rc, out = _run(tmp_path, _cfg(toy_data, wide_state))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: source_dataset: 'observation.state'"), err
    assert "[6]" in err[0] and "[4]" in err[0] and not out.exists()


def test_missing_camera_stats_without_imagenet_stats_one_error_line(toy_data, odd_source, tmp_path, capsys):
    cfg = _cfg(toy_data, odd_source, camera_map={"front": "top", "side": "wrist"},
               dataset={"repo_id": "local/toy_target", "root": str(toy_data["tgt"]), "use_imagenet_stats": False})
    rc, out = _run(tmp_path, cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: dataset.use_imagenet_stats:"), err
    assert "observation.images.front" in err[0] and not out.exists()


def test_unmapped_camera_names_one_error_line(toy_data, odd_source, tmp_path, capsys):
    rc, out = _run(tmp_path, _cfg(toy_data, odd_source))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: camera_map:") and "front" in err[0], err
    assert not out.exists()



def test_policy_resize_shape_at_read_time_within_tolerance(toy_data, odd_source):
    """image_size (the policy's resize_shape) applied by the reader: what the policy's RGB encoder resize then
    sees is within 0.5/255 of resizing LeRobot's float frames inside the policy (torchvision Resize)."""
    import torchvision
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from dpot.data.cotrain import SRC, TGT, CoTrainDataset, SampledItem

    obs = [-0.1, 0.0]
    tgt = LeRobotDataset("local/x", root=toy_data["tgt"], return_uint8=True,
                         delta_timestamps={"action": [0.0], "observation.state": obs, **{c: obs for c in CAMS}})
    src_cams = ["observation.images.front", "observation.images.side"]
    o15 = [-1 / 15, 0.0]
    src = LeRobotDataset("local/x", root=odd_source, return_uint8=True,
                         delta_timestamps={"action": [0.0], "observation.state": o15, **{c: o15 for c in src_cams}})
    size = (40, 36)
    data = CoTrainDataset(src, tgt, camera_map=dict(zip(src_cams, CAMS, strict=True)), keys=[*CAMS, "action"],
                          image_size=size)
    policy_resize = torchvision.transforms.Resize(size)  # what DiffusionRgbEncoder applies for resize_shape
    for dom, ds, idx, cams in ((SRC, src, 7, src_cams), (TGT, tgt, 0, CAMS), (TGT, tgt, len(tgt) - 1, CAMS)):
        item, ref = data[SampledItem(dom, idx, 0.0)], ds[idx]
        for c_out, c_in in zip(CAMS, cams, strict=True):
            ours = item[c_out].float() / 255.0
            assert item[c_out].dtype == torch.uint8 and ours.shape == (2, 3, *size)
            frame = ref[c_in]  # video: uint8; PNG: LeRobot's float v / 255
            theirs = policy_resize(frame.float() / 255.0 if frame.dtype == torch.uint8 else frame)
            assert (policy_resize(ours) - theirs).abs().max() <= 0.5 / 255 + 1e-5
            assert torch.allclose(policy_resize(ours), ours, atol=1e-6)  # the policy's resize is then a no-op


def test_camera_channels_differ_one_error_line(toy_data, tmp_path, capsys):
    """A source camera with another channel count (e.g. grayscale) cannot be resized into the target's: an error
    before training (the check reads only meta/info.json)."""
    import json

    src = tmp_path / "gray"
    shutil.copytree(toy_data["src"], src, ignore=shutil.ignore_patterns(".dpot_cache"))
    info = json.loads((src / "meta" / "info.json").read_text())
    info["features"]["observation.images.top"]["shape"] = [64, 64, 1]
    (src / "meta" / "info.json").write_text(json.dumps(info))
    rc, out = _run(tmp_path, _cfg(toy_data, src))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: camera_map:") and "1 channels" in err[0], err
    assert "has 3" in err[0] and not out.exists()
