"""benchmarks/objective_signals.py: a run's offline signals per checkpoint, and their rank correlation with success."""

from __future__ import annotations

import json
import math

import pytest
from train_helpers import tiny_config, write_config

from benchmarks.objective_signals import correlate, plain, rho_with_interval, run_signals, success_points
from dpot.cli import main as dpot_main


def _signal_file(path, name, seed, values):
    """A signals file as ``signals`` writes it: step -> {"id": {signal: value}}."""
    steps = {str(s): {"id": {"offline_l1": v, "offline_l1_fixed": v, "denoise_mse": v,
                             "improvement": values[0] - v}} for s, v in values.items()}
    path.write_text(json.dumps({"name": name, "seed": seed, "steps": steps}))
    return path


def _eval(study, job, cell, step, successes, episodes, final=False):
    (study / "evals").mkdir(parents=True, exist_ok=True)
    name = f"{job}-{cell}" + ("" if final else f"-step{step:06d}")
    (study / "evals" / f"{name}.json").write_text(json.dumps({"successes": successes, "episodes": episodes,
                                                              "step": step}))


def test_a_signal_that_orders_the_successes_has_rho_one_and_the_untrained_weights_rank_last(tmp_path):
    study = tmp_path / "study"
    files = []
    for seed in range(3):   # lower loss, more success, in every run; step 0 (untrained) is never evaluated
        job = f"m-seed{seed}"
        losses = {0: 1.0, 500: 0.5 - 0.05 * seed, 1000: 0.3 - 0.05 * seed}
        files.append(_signal_file(tmp_path / f"{job}.json", job, seed, losses))
        _eval(study, job, "target_id", 500, 2 + seed, 20)
        _eval(study, job, "target_id", 1000, 40 + 10 * seed, 100, final=True)
        _eval(study, job, "target_ood", 500, 1, 20)
        _eval(study, job, "target_ood", 1000, 1, 100, final=True)
    assert success_points(study)[("m-seed1", 1000, "target_id")] == (50, 100)
    res = correlate(files, [study], "id")
    l1 = res["signals"]["offline_l1"]["id"]
    assert l1["all_steps"]["rho"] == pytest.approx(1.0) and l1["all_steps"]["n_points"] == 6
    assert l1["final_only"]["rho"] == pytest.approx(1.0) and l1["final_only"]["n_runs"] == 3
    assert res["signals"]["improvement"]["id"]["all_steps"]["rho"] == pytest.approx(1.0)
    assert res["untrained_last"]["offline_l1"] == [True, True, True]
    early = l1["at_budget_vs_final"]["500"]          # the budget question: step 500's signal vs the final success
    assert early["rho"] == pytest.approx(1.0) and early["n_points"] == 3
    # OOD success differs in rate only through the episodes: 1/20 at step 500 > 1/100 at the end
    assert res["signals"]["offline_l1"]["ood"]["all_steps"]["rho"] < 0


def test_a_constant_success_gives_no_rho_and_the_file_stays_plain_json():
    res = rho_with_interval([("a", 1.0, 0.0), ("b", 2.0, 0.0)], boot=20)
    assert math.isnan(res["rho"]) and json.loads(json.dumps(plain(res), allow_nan=False))["rho"] is None


def test_the_interval_is_a_bootstrap_over_runs():
    pts = [(f"r{i}", float(i), float(i)) for i in range(8)]
    res = rho_with_interval(pts, boot=200)
    assert res["rho"] == pytest.approx(1.0) and res["ci95"] == [pytest.approx(1.0), pytest.approx(1.0)]
    noisy = [(f"r{i}", float(i), float((i * 5) % 8)) for i in range(8)]
    res = rho_with_interval(noisy, boot=200)
    assert res["ci95"][0] < res["rho"] < res["ci95"][1] and res["n_runs"] == 8


@pytest.mark.slow
def test_signals_of_a_tiny_run_at_step_0_and_its_checkpoints(toy_data, tmp_path, capsys):
    cfg = tiny_config(toy_data, steps=4, save_freq=2, eval={"n_batches": 1, "val_fraction": 0.25})
    run = tmp_path / "run"
    assert dpot_main(["train", f"--config_path={write_config(tmp_path / 'c.json', cfg)}",
                      f"--output_dir={run}"]) == 0, capsys.readouterr().err
    kw = dict(n_batches=2, draws=2, fractions=[0.1, 0.9])
    res = run_signals(run, {"id": toy_data["tgt"]}, **kw)
    assert sorted(res["steps"], key=int) == ["0", "2", "4"]
    for sets in res["steps"].values():
        assert set(sets["id"]) == {"offline_l1", "offline_l1_fixed", "denoise_mse", "improvement"}
        assert all(math.isfinite(v) and (k == "improvement" or v > 0) for k, v in sets["id"].items())
    assert res["steps"]["0"]["id"]["improvement"] == 0.0
    assert run_signals(run, {"id": toy_data["tgt"]}, steps=[4], **kw)["steps"]["4"]["id"] == {
        **res["steps"]["4"]["id"], "improvement": None}          # deterministic; no step 0, no improvement


def test_the_decision_picks_the_smallest_budget_that_clears_the_bar_and_checks_the_planted_run(tmp_path):
    """Synthetic objective study: 8 runs of 6 arms; 'denoise_mse' ranks the final success at step 250 already,
    the offline L1 only at 500 (its step-250 values are shuffled); the planted lr-1e-6 runs score worst."""
    from benchmarks.objective_signals import decide

    study, files = tmp_path / "study", []
    arms = [("lr-1e-6", 0), ("lr-1e-6", 1), ("lr-1e-5", 0), ("lr-1e-4", 0), ("lr-3e-4", 0), ("lr-3e-4", 1),
            ("lr-1e-3", 0), ("lr-3e-2", 0)]
    success = [0, 1, 10, 20, 30, 28, 25, 5]               # final successes of 50
    shuffled = [3, 7, 1, 6, 0, 5, 2, 4]
    for i, ((arm, seed), ok) in enumerate(zip(arms, success, strict=True)):
        job = f"{arm}-seed{seed}"
        quality = ok + 0.1 * i                            # breaks the ties
        steps = {}
        for s in (0, 250, 500):
            l1 = 1.0 if s == 0 else (1.0 - quality / 100 if s == 500 else 1.0 - shuffled[i] / 100)
            dm = 1.2 if s == 0 else 1.2 - quality / 50
            steps[str(s)] = {"id": {"offline_l1": l1, "offline_l1_fixed": l1, "denoise_mse": dm,
                                    "improvement": 1.0 - l1}}
        (tmp_path / f"{job}.json").write_text(json.dumps({"name": job, "seed": seed, "steps": steps}))
        files.append(tmp_path / f"{job}.json")
        for cell in ("target_id", "target_ood"):
            _eval(study, job, cell, 250, ok // 2, 50)
            _eval(study, job, cell, 500, ok, 50, final=True)
    corr = correlate(files, [study], "id")
    res = decide(corr, [json.loads(f.read_text()) for f in files], "id")
    assert (res["chosen"], res["budget_steps"], res["weak"]) == ("denoise_mse", 250, False)
    assert res["direction"] == "min" and res["points"] == 16
    assert res["planted_untrained_last"] == [True, True]
    assert res["ranks_at_budget"]["lr-3e-4-seed0"] == 1
    assert set(res["signals"]) == {"offline_l1", "offline_l1_fixed", "denoise_mse", "improvement"}
    assert res["signals"]["offline_l1"]["at_budget_vs_final"]["id"]["250"]["ci95"][0] < 0.3
