"""The report's line on how well the eval loss predicts success: the packaged measurement is what the committed raw
files give, and the line reads the signal that matches the run's eval loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.objective_signals import plain, predictivity
from dpot.analysis.predictivity import PREDICTIVITY_FILE, load_predictivity, predictivity_line

REPO = Path(__file__).resolve().parents[2]
STUDIES = ["cpu-idood-v4-button-press", "cpu-idood-v4-drawer-open", "cpu-idood-task2"]


@pytest.mark.slow          # the bootstraps of every signal: ~7 s
def test_the_packaged_measurement_is_recomputed_from_the_committed_raw_files():
    """src/dpot/analysis/predictivity.json == benchmarks.objective_signals.predictivity over
    docs/results/autopilot/objective-signals and the studies' evaluation files (success from the per-episode
    counts, signals from the per-checkpoint files)."""
    fresh = predictivity(REPO / "docs" / "results" / "autopilot" / "objective-signals",
                         [REPO / "docs" / "results" / s for s in STUDIES])
    assert json.loads(json.dumps(plain(fresh))) == json.loads(PREDICTIVITY_FILE.read_text())
    assert set(fresh["tasks"]) == {"button-press-topdown-v3", "drawer-open-v3"}
    for task in fresh["tasks"].values():                    # every run counted, each with 3 evaluated checkpoints
        assert task["signals"]["offline_l1"]["id"]["all_steps"]["n_points"] == 3 * task["runs"]


def test_the_line_reads_the_signal_of_the_runs_eval_loss():
    data = load_predictivity()
    bp = data["tasks"]["button-press-topdown-v3"]
    dpot_line = predictivity_line({"ot": {}, "source_dataset": {}}, data=data)
    lerobot_line = predictivity_line({"policy": {"type": "diffusion"}}, data=data)
    assert "a lower offline eval loss" in dpot_line and "a lower held-out diffusion loss" in lerobot_line
    rho = bp["signals"]["offline_l1"]["ood"]["all_steps"]
    assert f"OOD {rho['rho']:+.2f} [{rho['ci95'][0]:+.2f}, {rho['ci95'][1]:+.2f}]" in dpot_line
    rho = bp["signals"]["denoise_mse"]["id"]["all_steps"]
    assert f"ID {rho['rho']:+.2f} [{rho['ci95'][0]:+.2f}, {rho['ci95'][1]:+.2f}]" in lerobot_line
    assert f"({bp['runs']} runs, {3 * bp['runs']} checkpoints)" in dpot_line
    # a task with fewer than 3 configs measured says nothing about ranking them; with 3 the line gives the
    # final-checkpoint rho across them (the ranking at one budget), and no task measured so: "not measured yet"
    few = {"tasks": {k: {**v, "arms": ["a"]} for k, v in data["tasks"].items()}}
    line = predictivity_line({"ot": {}}, data=few)
    assert "not measured yet" in line and "final checkpoint" not in line
    many = {"tasks": {k: {**v, "arms": ["a", "b", "c"]} for k, v in data["tasks"].items()}}
    line = predictivity_line({"ot": {}}, data=many)
    assert "not measured yet" not in line and line.count("across its runs of 3 configs at the final checkpoint: ") == 2
    fin = bp["signals"]["offline_l1"]["ood"]["final_only"]
    assert f"OOD {fin['rho']:+.2f} [{fin['ci95'][0]:+.2f}, {fin['ci95'][1]:+.2f}]" in line
    assert "评估损失能否预测成功率" in predictivity_line({"ot": {}}, "zh", data=data)
    assert predictivity_line({"ot": {}}, data={"tasks": {}}) is None
