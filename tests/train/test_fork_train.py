"""The fork's configs train unchanged on tiny generated data through path overrides (issue 20): heuristic true with
a pair file, heuristic false (tau 0.005, label weight 0.005), sharpness/topk/no_window on dpot's own DTW; the fork's
term names are the metric names; a bad pair file stops the run with one line before anything is written."""

from __future__ import annotations

import json

import pytest
from fork_helpers import fork_config, iter5b
from train_helpers import read_metrics, tiny_config

from dpot.cli import main as dpot_main

pytestmark = pytest.mark.slow


def _fork_file(toy_data, tmp_path, name, cfg) -> str:
    """The fork file with placeholder paths and a CPU-sized policy (LeRobot keys), written to ``name``."""
    cfg = json.loads(json.dumps(cfg))
    cfg["policy"] = tiny_config(toy_data)["policy"] | {"use_amp": False}
    for i, cam in enumerate(("top", "wrist")):
        cfg["ot"]["loss_config"]["features"][i]["term_name"] = f"view_{cam}"
    cfg["ot"]["loss_config"]["features"][-1]["term_name"] = "act_lbl"
    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    return str(path)


def _train(toy_data, tmp_path, path, out, *extra) -> int:
    return dpot_main(["train", f"--config_path={path}", f"--dataset.root={toy_data['tgt']}",
                      f"--ot.src_root={toy_data['src']}", f"--output_dir={out}", "--steps=3", "--batch_size=4",
                      "--log_freq=1", "--eval_freq=0", "--save_freq=1000", "--num_workers=0", *extra])


def _pair_file(toy_data, tmp_path) -> str:
    out = tmp_path / "pair_info.json"
    assert dpot_main(["pairs", "build", "--source", str(toy_data["src"]), "--target", str(toy_data["tgt"]),
                      "--label", "action", "--top-k", "3", "--out", str(out), "--dtw", "dpot"]) == 0
    return str(out)


@pytest.mark.parametrize("variant", ["heuristic_pairs", "iter5b", "sharpness_own_dtw"])
def test_fork_config_trains_and_logs_its_term_names(toy_data, tmp_path, variant):
    if variant == "heuristic_pairs":
        cfg = fork_config(label_slice=(0, 2), pair_info_path=_pair_file(toy_data, tmp_path), sharpness=10.0,
                          cutoff=0.01, window_size=10)
    elif variant == "iter5b":
        cfg = iter5b(fork_config(label_slice=(0, 2)))
        cfg["dataset"]["image_transforms"]["enable"] = True  # LeRobot's augmentation on the training items
    else:
        cfg = fork_config(label_slice=(0, 2), sharpness=0.5, topk_src_episodes=2, no_window=True)
    out = tmp_path / "run"
    assert _train(toy_data, tmp_path, _fork_file(toy_data, tmp_path, "fork.json", cfg), out) == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert {"train/ot_cost/view_top", "train/ot_cost/view_wrist", "train/ot_cost/act_lbl"} <= set(r)
        assert not any(k.startswith("train/ot_cost/img_") for k in r)
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["source_dataset"]["root"] == str(toy_data["src"]) and "loss_config" not in saved["ot"]
    if variant == "iter5b":
        assert (saved["ot"]["heuristic"], saved["ot"]["tau_src"], saved["ot"]["features"][-1]["weight_label"]) == (
            False, 0.005, 0.005)
        assert saved["dataset"]["image_transforms"]["enable"] is True
    if variant == "sharpness_own_dtw":
        assert (out / "dtw_pairs.json").is_file()  # dpot's own DTW pairs, cached for resume


def test_bad_pair_file_one_line_exit_2_nothing_written(toy_data, tmp_path, capsys):
    bad = tmp_path / "bad_pairs.json"
    bad.write_text(json.dumps({"episode_000000": [{"demo_name": "episode_000000", "raw_dtw_dist": 0.1,
                                                   "pairing": {"0": [0], "9999": [1]}}]}))
    cfg = fork_config(label_slice=(0, 2), pair_info_path=str(bad))
    out = tmp_path / "run"
    assert _train(toy_data, tmp_path, _fork_file(toy_data, tmp_path, "fork.json", cfg), out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: ot.pair_info_path: {bad}: 'episode_000000'[0].pairing['9999']: target frame")
    assert not any(line.startswith("Traceback") for line in err)
    assert not (out / "train_config.json").exists() and not (out / "metrics.jsonl").exists()


def test_fork_act_config_trains(toy_data, tmp_path):
    """The fork's ACT iteration configs (issue 21): ACT with LeRobot's preset (lr 1e-5, backbone 1e-5), a weight
    per camera, label 0.02, reg 0.2, tau 1.0, window 8, sharpness 0.5, top-k source episodes, lambda 0.12."""
    from train_helpers import TINY_ACT

    cfg = fork_config(label_slice=(0, 2), sharpness=0.5, topk_src_episodes=2, window_size=8, lambda_ot=0.12,
                      loss_config={"reg": 0.2, "tau_src": 1.0, "tau_tgt": 1.0})
    cfg["policy"] = {**TINY_ACT, "optimizer_lr": 1e-5, "optimizer_lr_backbone": 1e-5, "use_amp": False}
    cfg["use_policy_training_preset"] = True
    path = tmp_path / "fork_act.json"
    path.write_text(json.dumps(cfg))
    out = tmp_path / "run"
    assert _train(toy_data, tmp_path, str(path), out) == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["train/kld_loss"] > 0 and r["train/ot_cost/img_top"] > 0 for r in rows)
    assert all(r["train/lr"] == pytest.approx(1e-5) for r in rows)  # LeRobot's ACT preset: constant 1e-5
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["policy"]["type"] == "act" and saved["optimizer"]["type"] == "adamw"
