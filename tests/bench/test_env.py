"""Domains build and render; specs change what they say and nothing else; seeding; expert success."""

from __future__ import annotations

import numpy as np
import pytest

from dpot.bench.domains import TARGET, apply_model_spec, resolve_spec, spec_from_dict
from dpot.bench.env import DomainEnv
from dpot.bench.experts import rollout_expert
from dpot.errors import UserError


def _layout(env: DomainEnv) -> np.ndarray:
    return env.raw_obs[:18].copy()  # hand, gripper, object positions/orientations


@pytest.fixture(scope="module")
def envs():
    src = DomainEnv("push-v3", "source", image_size=48, cameras=("corner4", "gripperPOV", "topview"))
    tgt = DomainEnv("push-v3", "target", image_size=48, cameras=("corner4", "gripperPOV", "topview"))
    yield src, tgt
    src.close()
    tgt.close()


def test_both_domains_render_and_share_layouts(envs):
    src, tgt = envs
    a, b = src.reset(3), tgt.reset(3)
    assert np.allclose(_layout(src), _layout(tgt), atol=1e-3)
    assert np.allclose(a["state"], b["state"], atol=1e-3) and a["state"].shape == (7,)
    for cam in ("corner4", "gripperPOV", "topview"):
        assert a["images"][cam].shape == (48, 48, 3) and a["images"][cam].dtype == np.uint8
        assert a["images"][cam].std() > 5  # not a blank frame
        diff = np.abs(a["images"][cam].astype(int) - b["images"][cam].astype(int)).mean()
        assert diff > 10, f"{cam}: target pixels should differ from source (mean abs diff {diff:.1f})"


def test_same_seed_same_episode_other_seed_other_layout(envs):
    src, _ = envs
    first = src.reset(5)
    layout5 = _layout(src)
    src.step([0.5, 0.0, 0.0, 0.0])
    again = src.reset(5)
    assert np.array_equal(first["images"]["corner4"], again["images"]["corner4"])
    assert np.array_equal(layout5, _layout(src))
    src.reset(6)
    assert not np.allclose(layout5[4:7], _layout(src)[4:7])  # the puck moved


@pytest.mark.parametrize("task", ["drawer-open-v3", "push-v3"])
def test_an_episodes_first_frame_shows_its_own_layout_whatever_ran_before(task):
    """MetaWorld places drawer-open's drawer and the goal site through the model after its last simulation step;
    the reset's first frame and observation must show this episode's layout, not the previous episode's: equal
    after two different previous episodes, and the goal site drawn where the task's goal is."""
    with DomainEnv(task, "target", image_size=48, cameras=("corner4", "gripperPOV")) as env:
        firsts = []
        for before in (7, 8):
            env.reset(before)
            env.step([0.3, -0.2, 0.1, 0.0])
            first = env.reset(5)
            firsts.append((first["images"], env.raw_obs.copy(), env.layout()))
            goal_drawn = env.data.site("goal").xpos
            assert np.allclose(goal_drawn, env.env._target_pos), (goal_drawn, env.env._target_pos)
        (img_a, obs_a, lay_a), (img_b, obs_b, lay_b) = firsts
        for cam in img_a:
            assert np.array_equal(img_a[cam], img_b[cam]), cam
        assert np.array_equal(obs_a, obs_b) and lay_a == lay_b
        env.step([0.0, 0.0, 0.0, 0.0])
        assert np.allclose(env.raw_obs[4:7], lay_a["obj_pos"], atol=2e-3)   # the object did not jump after step 1


def test_syncing_the_reset_leaves_the_dynamics_bit_identical(monkeypatch):
    """The reset's ``mj_forward`` (:meth:`DomainEnv._sync_derived_state`) changes what the first frame shows, not
    the simulation: the same actions give bit-identical MetaWorld observations from step 2 on (step 1's frame
    stack repeats the reset's observation) with and without it."""
    actions = np.random.default_rng(0).uniform(-1, 1, (12, 4))

    def trajectory() -> list[np.ndarray]:
        with DomainEnv("drawer-open-v3", "target", image_size=32, cameras=("corner4",)) as env:
            out = []
            for seed in (3, 4):
                env.reset(seed, render=False)
                for a in actions:
                    env.step(a, render=False)
                    out.append(env.raw_obs.copy())
            return out

    synced = trajectory()
    monkeypatch.setattr(DomainEnv, "_sync_derived_state", lambda self: None)
    stale = trajectory()
    for t, (a, b) in enumerate(zip(synced, stale)):
        if t % len(actions):              # every step but an episode's first
            assert np.array_equal(a, b), t
    assert not np.array_equal(synced[len(actions)], stale[len(actions)])  # episode 2's step 1: the stale stack


def _model_arrays(model) -> dict[str, np.ndarray]:
    out = {}
    for name in dir(model):
        if name.startswith("_"):
            continue
        value = getattr(model, name, None)
        if isinstance(value, np.ndarray):
            out[name] = value.copy()
    for name in ("ambient", "diffuse", "specular"):
        out[f"headlight.{name}"] = np.array(getattr(model.vis.headlight, name))
    return out


@pytest.mark.parametrize("spec, changed", [
    ({"table_rgba": [0.1, 0.9, 0.1, 1]}, {"mat_rgba"}),
    ({"object_mass_scale": 2.0}, {"body_mass", "body_inertia"}),
    ({"object_friction_scale": 0.5}, {"geom_friction"}),
    ({"camera_pos_offset": {"corner4": [0.05, 0, 0]}}, {"cam_pos"}),
    ({"camera_fovy_scale": {"corner4": 0.9}}, {"cam_fovy"}),
    ({"object_rgba": [0, 0, 1, 1]}, {"geom_rgba", "geom_matid"}),
    ({"light_pos_offset": [0.1, 0, 0]}, {"light_pos"}),
    ({"headlight_ambient": [0.3, 0.3, 0.3]}, {"headlight.ambient"}),
    ({"action_gain": 0.5, "action_latency": 2}, set()),
])
def test_spec_changes_only_what_it_says(spec, changed):
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE as ENVS

    model = ENVS["push-v3-goal-observable"]().model
    before = _model_arrays(model)
    apply_model_spec(model, spec_from_dict(spec))
    after = _model_arrays(model)
    differ = {k for k in before if not np.array_equal(before[k], after[k])}
    assert differ == changed


def test_cam_offset_moves_only_that_camera():
    import mujoco
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE as ENVS

    model = ENVS["push-v3-goal-observable"]().model
    before = model.cam_pos.copy()
    apply_model_spec(model, spec_from_dict({"camera_pos_offset": {"corner4": [0.05, 0, 0]}}))
    cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "corner4")
    assert np.allclose(model.cam_pos[cid] - before[cid], [0.05, 0, 0])
    assert np.array_equal(np.delete(model.cam_pos, cid, 0), np.delete(before, cid, 0))


@pytest.mark.slow
def test_action_gain_and_latency_act_on_dynamics():
    moves = {}
    for name, spec in (("stock", {}), ("slow", {"action_gain": 0.5}), ("late", {"action_latency": 3})):
        with DomainEnv("push-v3", spec_from_dict(spec), image_size=16, cameras=("corner4",)) as env:
            env.reset(0)
            start = env.state()[:3].copy()
            env.step([1, 0, 0, 0])
            moves[name] = abs(env.state()[0] - start[0])
    assert moves["slow"] < 0.8 * moves["stock"]
    assert moves["late"] < 0.2 * moves["stock"]


def test_bad_spec_key_names_it():
    with pytest.raises(UserError, match="unknown key 'tabel_rgba'.*did you mean 'table_rgba'"):
        spec_from_dict({"tabel_rgba": [1, 0, 0, 1]})
    with pytest.raises(UserError, match="camera_pos_offset.*unknown camera 'corner9'"):
        spec_from_dict({"camera_pos_offset": {"corner9": [0, 0, 0]}})
    with pytest.raises(UserError, match="table_rgba"):
        spec_from_dict({"table_rgba": [1, 0]})
    assert resolve_spec("target") is TARGET
    assert spec_from_dict(TARGET.to_dict()) == TARGET


@pytest.mark.slow
@pytest.mark.parametrize("task", ["push-v3", "pick-place-v3", "door-open-v3", "button-press-topdown-v3"])
def test_expert_succeeds_in_both_domains(task):
    for domain in ("source", "target"):
        with DomainEnv(task, domain, image_size=16, cameras=("gripperPOV",)) as env:
            results = [rollout_expert(env, seed, record=False)["success"] for seed in range(5)]
        assert sum(results) / len(results) >= 0.9, f"{task} [{domain}]: expert success {results}"


@pytest.mark.slow
def test_gap_png_shows_both_domains(tmp_path):
    import imageio.v2 as imageio

    from dpot.cli import main as dpot_main

    out = tmp_path / "gap.png"
    assert dpot_main(["bench", "gap", "--task", "push-v3", "--cameras", "corner4,gripperPOV",
                      "--image-size", "32", "--out", str(out)]) == 0
    img = imageio.imread(out)
    assert img.shape[:2] == (18 + 32 + 6 + 32, 90 + 32 + 6 + 32)
    left, right = img[18:50, 90:122].astype(int), img[18:50, 128:160].astype(int)
    assert np.abs(left - right).mean() > 10
