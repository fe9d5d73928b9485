"""Bad input: exit code 2, one ``error:`` line naming the field, nothing written to output_dir."""

from __future__ import annotations

import pytest
from train_helpers import read_metrics, tiny_config, write_config

from dpot.cli import main as dpot_main


@pytest.fixture(scope="module")
def wide_action_data(tmp_path_factory):
    from dpot.data.toy import make_toy_dataset

    root = tmp_path_factory.mktemp("wide")
    make_toy_dataset(root / "src6", "source", episodes=1, image_size=64, action_dim=6)
    return root / "src6"


def _run(tmp_path, cfg, *extra):
    out = tmp_path / "out"
    rc = dpot_main(["train", f"--config_path={write_config(tmp_path / 'c.json', cfg)}", f"--output_dir={out}",
                    *extra])
    return rc, out


def _cases(toy, wide):
    missing = {"repo_id": "local/x", "root": str(toy["root"] / "nope")}
    return {
        "missing_path": (dict(dataset=missing), "dataset.root"),
        "not_lerobot": (dict(source_dataset={"repo_id": "local/x", "root": str(toy["root"])}), "not a LeRobot"),
        "action_dims": (dict(source_dataset={"repo_id": "local/toy_source", "root": str(wide)}), "'action' has shape"),
        "camera_map": (dict(camera_map={"front": "top"}), "camera_map"),
        "ot_camera": (dict(ot={"features": [{"type": "embed", "cameras": ["side"]}]}), "cameras"),
        "dim_slice": (dict(ot={"features": [{"type": "label", "dim_slice": [0, 8]}]}), "dim_slice"),
        "batch_one": (dict(batch_size=1), "batch_size"),
        "batch_ratio": (dict(batch_size=2, ot={"batch_ratio": 0.9}), "batch_size"),
    }


CASES = ["missing_path", "not_lerobot", "action_dims", "camera_map", "ot_camera", "dim_slice", "batch_one",
         "batch_ratio"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line(case, toy_data, wide_action_data, tmp_path, capsys):
    over, needle = _cases(toy_data, wide_action_data)[case]
    rc, out = _run(tmp_path, tiny_config(toy_data, **over))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not out.exists()


def test_resume_without_checkpoint(toy_data, tmp_path, capsys):
    rc, out = _run(tmp_path, tiny_config(toy_data), "--resume=true")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "resume" in err[0] and "no checkpoint" in err[0]
    assert not out.exists()


@pytest.mark.slow  # trains one step
def test_wandb_unreachable_warns_and_continues(toy_data, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc credentials
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandbcfg"))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    cfg = tiny_config(toy_data, steps=1, wandb={"enable": True, "mode": "online", "project": "p"})
    with pytest.warns(UserWarning, match="W&B logging disabled"):
        rc, out = _run(tmp_path, cfg)
    assert rc == 0
    assert [r["step"] for r in read_metrics(out)] == [1]
