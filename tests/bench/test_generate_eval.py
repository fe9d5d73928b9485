"""Dataset generation round-trip, atomic writes, bad input, closed-loop eval of a trivial policy."""

from __future__ import annotations

import json

import numpy as np
import pytest

import dpot.bench.experts as experts
from dpot.bench.evaluate import evaluate_policy, wilson_interval
from dpot.bench.generate import generate_dataset
from dpot.cli import main as dpot_main
from dpot.errors import UserError

CAMS = ("observation.images.corner4", "observation.images.gripperPOV")


@pytest.mark.slow
def test_dataset_round_trips_with_delta_timestamps(push_dataset):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    path, summary = push_dataset
    assert summary["episodes"] == 2 and summary["expert_success_rate"] == 1.0
    dt = {k: [-0.1, 0.0] for k in (*CAMS, "observation.state")}
    dt["action"] = [i / 10 for i in range(-1, 15)]
    ds = LeRobotDataset("local/push-v3_source", root=path, delta_timestamps=dt)
    assert ds.num_episodes == 2 and ds.num_frames == summary["frames"] and ds.fps == 10
    item = ds[5]
    for cam in CAMS:
        assert tuple(item[cam].shape) == (2, 3, 64, 64)
    assert tuple(item["observation.state"].shape) == (2, 7)
    assert tuple(item["action"].shape) == (16, 4)
    assert float(item["action"].abs().max()) <= 1.0
    assert item["task"] == "Push the puck to a goal"
    meta = json.loads((path / "meta" / "dpot_bench.json").read_text())
    assert meta["settings"]["spec"]["name"] == "source" and meta["summary"]["frames"] == summary["frames"]
    # the goal (last 3 state dims) is constant within an episode, the hand moves
    states = np.stack([ds.hf_dataset[i]["observation.state"] for i in range(10)])
    assert np.allclose(states[:, 4:], states[0, 4:]) and not np.allclose(states[:, :3], states[0, :3])


@pytest.mark.slow
def test_same_settings_reuse_and_different_dataset_is_refused(push_dataset, capsys):
    path, summary = push_dataset
    again = generate_dataset("push-v3", "source", 2, path, image_size=64, seed=0, progress=False)
    assert again["reused"] and again["frames"] == summary["frames"]
    with pytest.raises(UserError, match="already holds a different dataset"):
        generate_dataset("push-v3", "target", 2, path, image_size=64, seed=0, progress=False)
    rc = dpot_main(["bench", "generate", "--task", "push-v3", "--episodes", "3", "--out", str(path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: --out") and "\n" not in err


@pytest.mark.slow
def test_interrupted_generation_leaves_no_dataset(tmp_path, monkeypatch):
    real = experts.rollout_expert
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(experts, "rollout_expert", flaky)
    out = tmp_path / "ds"
    with pytest.raises(KeyboardInterrupt):
        generate_dataset("push-v3", "source", 3, out, image_size=32, progress=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the temp folder is gone too


@pytest.mark.parametrize("argv, needle", [
    (["generate", "--task", "psh-v3", "--out", "X"], "unknown task 'psh-v3' (did you mean 'push-v3'?)"),
    (["generate", "--task", "push-v3", "--cameras", "corner4,wrist", "--out", "X"], "unknown camera 'wrist'"),
    (["generate", "--task", "push-v3", "--domain", "real", "--out", "X"], "unknown domain 'real'"),
    (["eval", "--policy", "nowhere", "--task", "push-v3"], "not a LeRobot pretrained_model folder"),
    (["frobnicate"], "unknown subcommand 'frobnicate'"),
    (["generate", "--task", "push-v3"], "required: --out"),
])
def test_bad_input_exits_2_with_one_line(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = dpot_main(["bench", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and needle in err and "\n" not in err
    assert not (tmp_path / "X").exists()


def test_bad_domain_spec_file_key(tmp_path, capsys):
    spec = tmp_path / "real.json"
    spec.write_text(json.dumps({"table_rgba": [1, 0, 0, 1], "action_gian": 0.8}))
    rc = dpot_main(["bench", "generate", "--task", "push-v3", "--domain-spec", str(spec), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "unknown key 'action_gian'" in err and "did you mean 'action_gain'" in err


def test_wilson_interval():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)


@pytest.mark.slow
def test_eval_of_trivial_policy_in_two_processes(tiny_policy, tmp_path, capsys):
    res = evaluate_policy(tiny_policy, "push-v3", "target", episodes=2, max_steps=12, workers=2,
                          gif_dir=tmp_path / "gifs", gifs=1, out=tmp_path / "eval.json")
    assert "2/2" in capsys.readouterr().err                              # the progress bar saw both episodes
    assert 0.0 <= res["success_rate"] <= 1.0 and res["episodes"] == 2
    lo, hi = res["ci95"]
    assert 0.0 <= lo <= res["success_rate"] <= hi <= 1.0 and hi - lo > 0.3
    assert 1 <= res["mean_length"] <= 12
    assert len(list((tmp_path / "gifs").glob("*.gif"))) == 1
    assert res["workers"] == 2 and [r["seed"] for r in res["episodes_detail"]] == [100000, 100001]
    assert json.loads((tmp_path / "eval.json").read_text())["successes"] == res["successes"]


@pytest.mark.slow
def test_eval_cli(tiny_policy, tmp_path, capsys):
    rc = dpot_main(["bench", "eval", "--policy", str(tiny_policy.parent), "--task", "push-v3", "--episodes", "1",
                    "--max-steps", "4", "--workers", "1", "--seed", "7", "--out", str(tmp_path / "r.json")])
    assert rc == 0
    res = json.loads((tmp_path / "r.json").read_text())
    first = res["episodes_detail"][0]
    assert res["domain"] == "target" and {k: first[k] for k in ("seed", "success", "length")} == {
        "seed": 7, "success": False, "length": 4}
    assert first["layout"]["region"] in ("id", "ood") and len(first["layout"]["goal_pos"]) == 3  # recorded layout
    assert "success 0/1" in capsys.readouterr().out


@pytest.mark.slow
def test_eval_refuses_a_policy_with_other_inputs(tiny_policy, tmp_path):
    import shutil

    bad = tmp_path / "pretrained_model"
    shutil.copytree(tiny_policy, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["input_features"]["observation.state"]["shape"] = [5]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="observation.state of shape"):
        evaluate_policy(bad, "push-v3", "target", episodes=1)


def _rollouts_counting_renders(policy, pre, post, monkeypatch) -> dict[bool, tuple]:
    """One 20-step push-v3 episode (seed 100003) with ``render_all`` True and False: ``{render_all: (actions,
    number of renders)}``, the global RNG reseeded before each."""
    import torch

    from dpot.bench.env import DomainEnv
    from dpot.bench.evaluate import policy_cameras, rollout

    cameras, size = policy_cameras(policy.config)
    renders = []
    with DomainEnv("push-v3", "target", image_size=size, cameras=cameras) as env:
        real_render = env.render
        monkeypatch.setattr(env, "render", lambda *a, **k: renders.append(1) or real_render(*a, **k))
        runs = {}
        for render_all in (True, False):
            renders.clear()
            torch.manual_seed(0)
            r = rollout(policy, pre, post, env, 100003, task="push-v3", cameras=cameras, max_steps=20,
                        render_all=render_all)
            runs[render_all] = (r["actions"], len(renders))
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("n_obs", [1, 2])
def test_rendering_only_observations_that_reach_an_inference_gives_the_same_actions(tiny_policy, n_obs, monkeypatch):
    """Skipping the renders the policy never looks at (dpot.bench.evaluate.needs_images) changes nothing:
    same actions, step for step, as rendering every observation; and it does skip most renders."""
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

    from dpot.bench.evaluate import _load

    policy, pre, post = _load(tiny_policy, "cpu")
    if n_obs != policy.config.n_obs_steps:
        policy.config.n_obs_steps = n_obs
        policy = DiffusionPolicy(policy.config).eval()
    runs = _rollouts_counting_renders(policy, pre, post, monkeypatch)
    assert runs[True][0].shape == (20, 4)
    np.testing.assert_array_equal(runs[True][0], runs[False][0])
    assert runs[True][1] == 21                                           # reset + every step
    # chunks of 8 actions: inferences at steps 0, 8, 16 need the n_obs observations before them
    assert runs[False][1] == 1 + 2 * n_obs


@pytest.mark.slow
def test_an_act_policy_is_rendered_only_when_its_action_queue_is_empty(tiny_policy, monkeypatch):
    """ACT (no temporal ensembling) infers a chunk only when its action queue is empty: rendering only those
    observations gives the same actions as rendering every one, with one render per chunk."""
    import torch
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy

    from dpot.bench.evaluate import _load, needs_images

    diffusion, pre, post = _load(tiny_policy, "cpu")        # its processors normalize the same features
    torch.manual_seed(0)
    cfg = ACTConfig(input_features=diffusion.config.input_features, output_features=diffusion.config.output_features,
                    chunk_size=8, n_action_steps=8, dim_model=32, dim_feedforward=64, n_heads=2, n_encoder_layers=1,
                    n_decoder_layers=1, n_vae_encoder_layers=1, latent_dim=8, pretrained_backbone_weights=None,
                    device="cpu")
    policy = ACTPolicy(cfg).eval()
    runs = _rollouts_counting_renders(policy, pre, post, monkeypatch)
    np.testing.assert_array_equal(runs[True][0], runs[False][0])
    assert runs[True][1] == 21 and runs[False][1] == 1 + 2           # reset + the inferences at steps 8, 16
    policy.config.temporal_ensemble_coeff = 0.01                        # ensembling infers at every step
    assert needs_images(policy)
