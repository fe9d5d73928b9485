"""LeRobot's MetaWorld layout: the env renders what LeRobot's env renders; `--layout lerobot` data trains in dpot,
the policy runs in `dpot bench eval --layout lerobot` and in LeRobot's own eval (lerobot-eval's eval_main,
`--env.type=metaworld`, on metaworld 3.1.1) unchanged."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from dpot.bench.env import LEROBOT_FPS, LEROBOT_IMAGE_KEY, DomainEnv
from dpot.bench.generate import generate_dataset
from dpot.cli import main as dpot_main

TASK = "button-press-topdown-v3"


@pytest.mark.slow
def test_lerobot_layout_renders_what_lerobot_env_renders():
    import lerobot.envs.metaworld as lm

    theirs = lm.MetaworldEnv(TASK, obs_type="pixels_agent_pos")
    with DomainEnv(TASK, "source", layout="lerobot", fast_render=False) as ours:
        for seed in (0, 3):
            o, _ = theirs.reset(seed=seed)
            d = ours.reset(seed)
            assert d["images"]["corner2"].shape == o["pixels"].shape == (480, 480, 3)
            np.testing.assert_array_equal(d["images"]["corner2"], o["pixels"])
            np.testing.assert_allclose(d["state"], o["agent_pos"].astype(np.float32))
    theirs.close()


def test_lerobot_layout_bad_input(tmp_path, capsys):
    base = ["bench", "generate", "--task", TASK, "--layout", "lerobot", "--out", str(tmp_path / "d")]
    assert dpot_main([*base, "--image-size", "96"]) == 2
    assert dpot_main([*base, "--cameras", "corner4"]) == 2
    assert dpot_main([*base, "--obs", "full"]) == 2
    assert dpot_main(["bench", "generate", "--task", TASK, "--layout", "lerobto", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(e.startswith("error: --") for e in err), err
    assert "480" in err[0] and "corner2" in err[1] and "proprio" in err[2] and "did you mean" in err[3]
    assert not (tmp_path / "d").exists()


@pytest.fixture(scope="module")
def lr_data(tmp_path_factory):
    """2 target-visual episodes (region id) in LeRobot's layout."""
    data = tmp_path_factory.mktemp("lerobot_layout") / "lr"
    generate_dataset(TASK, "target-visual", 2, data, seed=0, progress=False, obs="proprio", layout="lerobot",
                     region="id", image_size=480)
    return data


@pytest.mark.slow
def test_lerobot_layout_data_trains_and_runs_in_dpot_eval_and_lerobot_eval(lr_data, tmp_path, monkeypatch):
    from train_helpers import tiny_config, write_config

    data = lr_data
    info = json.loads((data / "meta" / "info.json").read_text())
    assert info["fps"] == LEROBOT_FPS == 80
    assert info["features"][LEROBOT_IMAGE_KEY]["shape"] == [480, 480, 3]
    assert info["features"]["observation.state"]["shape"] == [4]
    assert not [k for k in info["features"] if k.startswith("observation.images.")]
    bench = json.loads((data / "meta" / "dpot_bench.json").read_text())
    assert bench["settings"]["layout"] == "lerobot" and {e["region"] for e in bench["episodes"]} == {"id"}

    cfg = tiny_config({"src": data, "tgt": data}, steps=2, save_freq=2, eval_freq=0)
    cfg["policy"].update(resize_shape=[32, 32], n_obs_steps=1, spatial_softmax_num_keypoints=8)
    run = tmp_path / "run"
    assert dpot_main(["train", f"--config_path={write_config(tmp_path / 'c.json', cfg)}",
                      f"--output_dir={run}"]) == 0
    pm = run / "checkpoints" / "last" / "pretrained_model"

    out = tmp_path / "eval.json"
    assert dpot_main(["bench", "eval", "--policy", str(pm), "--task", TASK, "--episodes", "1", "--max-steps", "4",
                      "--workers", "1", "--layout", "lerobot", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["layout"] == "lerobot" and res["obs"] == "proprio" and res["episodes"] == 1

    # LeRobot's own evaluation (lerobot-eval's main on its MetaWorld env), episodes cut to 4 steps for the test
    import lerobot.envs.metaworld as lm
    from lerobot.scripts import lerobot_eval

    init = lm.MetaworldEnv.__init__

    def short(self, *a, **k):
        init(self, *a, **k)
        self._max_episode_steps = 4

    monkeypatch.setattr(lm.MetaworldEnv, "__init__", short)
    le_out = tmp_path / "lerobot_eval"
    monkeypatch.setattr(sys, "argv", ["lerobot-eval", f"--policy.path={pm}", "--env.type=metaworld",
                                      f"--env.task={TASK}", "--eval.n_episodes=1", "--eval.batch_size=1",
                                      "--eval.use_async_envs=false", "--policy.device=cpu",
                                      f"--output_dir={le_out}"])
    lerobot_eval.main()
    le = json.loads((le_out / "eval_info.json").read_text())
    assert le["overall"]["n_episodes"] == 1


@pytest.mark.slow
def test_dpot_bench_eval_runs_a_lerobot_train_act_policy_on_lerobot_layout_data(lr_data, tmp_path):
    from train_helpers import TINY_ACT

    import dpotproc  # tests/

    out = tmp_path / "lt"
    flags = [f"--policy.{k}={'null' if v is None else str(v).lower() if isinstance(v, bool) else v}"
             for k, v in TINY_ACT.items()]
    r = dpotproc.run([str(Path(sys.executable).with_name("lerobot-train")), "--dataset.repo_id=local/lr",
                      f"--dataset.root={lr_data}", *flags, "--batch_size=2", "--steps=1", "--save_freq=1",
                      "--num_workers=0", "--wandb.enable=false", "--env_eval_freq=0", f"--output_dir={out}"],
                     capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = tmp_path / "eval.json"
    assert dpot_main(["bench", "eval", "--policy", str(out / "checkpoints" / "last" / "pretrained_model"),
                      "--task", TASK, "--episodes", "1", "--max-steps", "2", "--workers", "1", "--out", str(res)]) == 0
    assert json.loads(res.read_text())["layout"] == "lerobot"  # read from the policy's observation.image input
