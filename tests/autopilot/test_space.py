"""The one search space (dpot.autopilot.space) that the autopilot's sampler and the benchmark's TPE / random draw
from: its parameters and ranges around a config, the draws (the earlier parameters draw as before; the weight
decay only with AdamW; seeds reproduce), the start config as a study's first trial, and recorded params that
every sampler can read."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from dpot.analysis import cfgkeys
from dpot.analysis.rules import load_rules
from dpot.autopilot import space

NAMES = ["lr", "lr.constant", "ot.lambda_ot", "ot.reg", "optimizer.type", "optimizer.weight_decay"]


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> dict:
    """A Diffusion config with the policy preset (Adam, cosine warmup) as the trainer's loader resolves it."""
    from dpot.autopilot.spec import load_base_config

    path = tmp_path_factory.mktemp("space") / "base.json"
    path.write_text(json.dumps({
        "dataset": {"repo_id": "local/t", "root": "t"}, "source_dataset": {"repo_id": "local/s", "root": "s"},
        "policy": {"type": "diffusion", "pretrained_backbone_weights": None, "push_to_hub": False,
                   "optimizer_lr": 1e-5},
        "batch_size": 8, "steps": 100, "ot": {"lambda_ot": 0.1}}))
    return load_base_config(path)


def test_the_space_around_a_preset_config(preset):
    dists = space.distributions(preset, load_rules())
    assert list(dists) == NAMES
    assert (dists["lr"].low, dists["lr"].high, dists["lr"].log) == (1e-4, pytest.approx(3e-3), True)
    assert dists["lr.constant"] == CategoricalDistribution((False, True))
    assert dists["ot.lambda_ot"] == FloatDistribution(0.025, 0.4)
    assert dists["ot.reg"] == FloatDistribution(0.005, 0.08, log=True)
    assert dists["optimizer.type"] == CategoricalDistribution(("adam", "adamw"))
    assert dists["optimizer.weight_decay"] == FloatDistribution(1e-5, 0.1, log=True)
    assert list(space.distributions(preset, load_rules(), ot_negligible=True)) == [
        "lr", "lr.constant", "optimizer.type", "optimizer.weight_decay"]
    off = space.distributions(preset, {"sampler": {"optimizer": False}})
    assert "optimizer.type" not in off and "optimizer.weight_decay" not in off      # Adam: no weight decay searched
    adamw = space.apply_params(preset, {"optimizer.type": "adamw"})
    assert list(space.distributions(adamw, {"sampler": {"optimizer": False}}))[-1] == "optimizer.weight_decay"


def test_the_earlier_parameters_draw_as_before(preset):
    """The new parameters come last, so a seeded draw gives the LR, the schedule and the OT values it gave before
    the space had an optimizer (``study.ask(fixed_distributions)`` over the earlier four)."""
    dists = space.distributions(preset, load_rules())
    old = {k: dists[k] for k in NAMES[:4]}
    for seed in range(5):
        before = optuna.create_study(sampler=optuna.samplers.TPESampler(n_startup_trials=3, seed=seed)).ask(old)
        trial = optuna.create_study(sampler=optuna.samplers.TPESampler(n_startup_trials=3, seed=seed)).ask()
        now = space.suggest(trial, dists)
        assert {k: now[k] for k in old} == before.params


def test_weight_decay_is_drawn_with_adamw_only_and_seeds_reproduce_the_draws(preset):
    dists = space.distributions(preset, load_rules())

    def draws(seed: int) -> list[dict]:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(n_startup_trials=3, seed=seed))
        out = []
        for _ in range(12):
            trial = study.ask()
            params = space.suggest(trial, dists)
            study.tell(trial, abs(params["lr"] - 5e-4) + (0.01 if params["optimizer.type"] == "adam" else 0.0))
            out.append(params)
        return out

    first = draws(0)
    assert draws(0) == first and draws(1) != first
    assert {p["optimizer.type"] for p in first} == {"adam", "adamw"}
    assert all(("optimizer.weight_decay" in p) == (p["optimizer.type"] == "adamw") for p in first)


def test_the_start_config_is_the_first_trial_and_applying_it_changes_nothing(preset):
    dists = space.distributions(preset, load_rules())
    start = space.start_params(preset, dists)
    assert start == {"lr": 1e-5, "lr.constant": False, "ot.lambda_ot": 0.1, "ot.reg": 0.02, "optimizer.type": "adam"}
    assert space.apply_params(preset, start) == preset
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.enqueue_trial(start)
    with pytest.warns(UserWarning, match="out of range"):          # 1e-5 lies below the space's LR range
        assert space.suggest(study.ask(), dists) == start


def test_recorded_params_have_the_drawn_kinds(preset):
    """A run's recorded params (wide float ranges, the same categoricals) sit in one search space with the drawn
    ones: Optuna's intersection space keeps the categoricals, and a float keeps its log flag."""
    adamw = space.apply_params(preset, {"optimizer.type": "adamw", "optimizer.weight_decay": 2e-3})
    params = space.config_params(adamw)
    assert params["optimizer.type"] == "adamw" and params["optimizer.weight_decay"] == 2e-3
    assert "optimizer.weight_decay" not in space.config_params(preset)              # Adam's: not searched
    study = optuna.create_study()
    for cfg in (preset, adamw):
        study.enqueue_trial(space.config_params(cfg))
        trial = study.ask()
        space.record_params(trial, space.config_params(cfg))
        study.tell(trial, 1.0)
    dists = space.distributions(preset, load_rules())
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        for name, dist in t.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                assert dist == dists[name]
            else:
                assert dist.log == dists[name].log
    assert space.params_text({"lr": 2.0012e-3, "optimizer.type": "adamw"}) == "lr=0.002001, optimizer.type=adamw"
    assert cfgkeys.optimizer_type(adamw) == "adamw" and adamw["use_policy_training_preset"] is False
