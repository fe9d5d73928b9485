"""The ID/OOD protocol's environment side: proprio observations hold no goal, region layouts fall in their halves
for every task, the expert succeeds in both regions and both shifts, datasets record per-episode regions, and a
policy is evaluated with the observations it was trained on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dpot.bench.domains import TARGET_VISUAL, apply_model_spec, resolve_spec
from dpot.bench.env import REGION_SPLITS, TASKS, DomainEnv, region_of
from dpot.bench.evaluate import evaluate_policy
from dpot.bench.experts import rollout_expert
from dpot.bench.generate import generate_dataset
from dpot.cli import main as dpot_main
from dpot.errors import UserError


def test_proprio_state_is_hand_and_gripper_only():
    with DomainEnv("button-press-topdown-v3", "source", image_size=16, cameras=("gripperPOV",), obs="proprio") as env:
        a = env.reset(1, render=False)
        goal_a = env.layout()["goal_pos"]
        b = env.reset(2, render=False)
        goal_b = env.layout()["goal_pos"]
        assert a["state"].shape == (4,) and a["state"].dtype == np.float32
        np.testing.assert_array_equal(b["state"], env.raw_obs[:4].astype(np.float32))
        # two layouts with different goals start from the same state: the goal is not in it
        assert abs(goal_a[0] - goal_b[0]) > 0.01
        np.testing.assert_allclose(a["state"], b["state"], atol=1e-6)
    with DomainEnv("button-press-topdown-v3", "source", image_size=16, cameras=("gripperPOV",), obs="full") as env:
        full = env.reset(2, render=False)["state"]
    assert full.shape == (7,)
    np.testing.assert_allclose(full[4:], goal_b, atol=1e-6)


@pytest.mark.parametrize("task", TASKS)
def test_region_layouts_fall_in_their_halves(task):
    split = REGION_SPLITS[task]
    with DomainEnv(task, "source", image_size=16, cameras=("gripperPOV",), obs="proprio") as env:
        seen = {}
        for region in ("id", "ood"):
            values = []
            for seed in range(100_000, 100_008):
                env.reset(seed, render=False, region=region)
                layout = env.layout()
                values.append(layout["rand_vec"][split.index])
                assert layout["region"] == region
            seen[region] = values
        env.reset(100_003, render=False, region="ood")
        again = env.layout()["rand_vec"]
        env.reset(100_003, render=False)                                   # "all" = the plain seeded reset
        plain = list(env.env._last_rand_vec)
        env.env.seed(100_003)
        env.env.reset()
        assert plain == list(env.env._last_rand_vec)
        env.reset(100_003, render=False, region="ood")
        assert env.layout()["rand_vec"] == again                           # deterministic per seed and region
    assert all(split.low <= v < split.threshold for v in seen["id"]), seen["id"]
    assert all(split.threshold <= v <= split.high for v in seen["ood"]), seen["ood"]
    assert len(set(seen["id"])) == len(seen["id"])                          # one layout per episode seed


def test_region_of_splits_at_the_threshold():
    split = REGION_SPLITS["button-press-topdown-v3"]
    assert (split.index, split.threshold) == (0, 0.0)
    assert region_of("button-press-topdown-v3", [-0.001, 0.85, 0.115]) == "id"
    assert region_of("button-press-topdown-v3", [0.0, 0.85, 0.115]) == "ood"


def test_target_visual_changes_only_camera_and_table():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE as ENVS

    model = ENVS["button-press-topdown-v3-goal-observable"]().model
    names = ("mat_rgba", "cam_pos", "cam_fovy", "body_mass", "geom_friction", "geom_rgba", "light_diffuse")
    before = {k: getattr(model, k).copy() for k in names}
    apply_model_spec(model, TARGET_VISUAL)
    changed = {k for k in names if not np.array_equal(before[k], getattr(model, k))}
    assert changed == {"mat_rgba", "cam_pos", "cam_fovy"}
    spec = resolve_spec("target-visual")
    assert spec is TARGET_VISUAL and spec.table_texture == "checker"
    assert (spec.action_gain, spec.action_latency, spec.object_mass_scale) == (1.0, 0, 1.0)
    with DomainEnv("button-press-topdown-v3", "source", image_size=32, cameras=("corner4",)) as src, \
            DomainEnv("button-press-topdown-v3", "target-visual", image_size=32, cameras=("corner4",)) as tgt:
        diff = np.abs(src.reset(4)["images"]["corner4"].astype(int) - tgt.reset(4)["images"]["corner4"]).mean()
    assert diff > 10


@pytest.mark.slow
@pytest.mark.parametrize("task, seeds", [("button-press-topdown-v3", 3), *[(t, 1) for t in TASKS
                                                                          if t != "button-press-topdown-v3"]])
def test_expert_succeeds_in_both_regions_and_both_shifts(task, seeds):
    for domain in ("target", "target-visual"):
        with DomainEnv(task, domain, image_size=16, cameras=("gripperPOV",), obs="proprio") as env:
            for region in ("id", "ood"):
                ok = [rollout_expert(env, s, record=False, region=region)["success"] for s in range(seeds)]
                assert all(ok), f"{task} [{domain}, {region}]: expert success {ok}"


@pytest.mark.slow
def test_generated_dataset_records_regions_and_a_4d_state(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    out = tmp_path / "ds"
    summary = generate_dataset("button-press-topdown-v3", "target-visual", 2, out, image_size=16,
                               cameras=("corner4",), seed=50_000, obs="proprio", region="id", progress=False)
    assert summary["regions"] == {"id": 2, "ood": 0}
    meta = json.loads((out / "meta" / "dpot_bench.json").read_text())
    assert meta["settings"]["obs"] == "proprio" and meta["settings"]["region"] == "id"
    eps = meta["episodes"]
    assert [e["episode_index"] for e in eps] == [0, 1] and all(e["region"] == "id" for e in eps)
    assert all(len(e["goal_pos"]) == 3 and len(e["obj_pos"]) == 3 and e["rand_vec"][0] < 0 for e in eps)
    ds = LeRobotDataset("local/x", root=out)
    assert tuple(ds[0]["observation.state"].shape) == (4,)
    assert ds.meta.features["observation.state"]["names"] == ["hand_x", "hand_y", "hand_z", "gripper"]
    # the default (full, all) keeps the settings of datasets made before --obs/--region existed
    old = generate_dataset("button-press-topdown-v3", "source", 1, tmp_path / "old", image_size=16,
                           cameras=("corner4",), progress=False)
    settings = json.loads((tmp_path / "old" / "meta" / "dpot_bench.json").read_text())["settings"]
    assert "obs" not in settings and "region" not in settings and old["regions"]["id"] + old["regions"]["ood"] == 1


@pytest.mark.parametrize("argv, needle", [
    (["generate", "--task", "push-v3", "--obs", "pixels", "--out", "X"], "error: --obs: unknown observation mode"),
    (["generate", "--task", "push-v3", "--region", "down", "--out", "X"], "error: --region: unknown region 'down'"),
    (["eval", "--policy", "X", "--task", "push-v3", "--region", "ood2"], "did you mean 'ood'"),
    (["generate", "--task", "push-v3", "--domain", "target-visul", "--out", "X"], "did you mean 'target-visual'"),
])
def test_bad_obs_region_domain_is_one_line_exit_2(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = dpot_main(["bench", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and "\n" not in err
    assert not (tmp_path / "X").exists()


@pytest.mark.slow
def test_eval_uses_the_policys_observation_mode(tiny_policy):
    """The tiny policy takes a 7-d state: evaluating it as proprio is refused; its own mode is found (a state size
    that is neither mode: test_generate_eval.py::test_eval_refuses_a_policy_with_other_inputs)."""
    with pytest.raises(UserError, match=r"^--obs: the policy was trained with observation.state of 7 dims"):
        evaluate_policy(tiny_policy, "push-v3", "target", episodes=1, obs="proprio")
    res = evaluate_policy(tiny_policy, "push-v3", "target-visual", episodes=1, max_steps=3, workers=1,
                          region="ood", progress=False)
    assert (res["obs"], res["region"], res["domain"]) == ("full", "ood", "target-visual")
