"""An end-to-end tiny run: metric keys, lr schedule, W&B offline + TensorBoard, checkpoint layout, lambda_ot=0."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from train_helpers import read_metrics, tiny_config, write_config

from dpot.cli import main as dpot_main

TRAIN_KEYS = ["train/loss", "train/l1_loss", "train/grad_norm", "train/lr", "train/update_s", "train/dataloading_s",
              "train/ot_loss", "train/ot_pi_sum", "train/ot_pi_diag", "train/ot_pi_diag_frac", "train/ot_skipped",
              "train/ot_cost/img_top", "train/ot_cost/img_wrist", "train/ot_cost/action_lbl"]
EVAL_KEYS = ["eval/offline_eval/avg_loss", "eval/offline_eval/eval_s"]


def _read_wandb_offline(run_dir: Path) -> list[dict]:
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.internal import datastore

    (wandb_file,) = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    ds = datastore.DataStore()
    ds.open_for_scan(str(wandb_file))
    rows = []
    while (d := ds.scan_data()) is not None:
        r = pb.Record()
        r.ParseFromString(d)
        if r.WhichOneof("record_type") == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
    return rows


@pytest.fixture(scope="module")
def run(toy_data, tmp_path_factory, request):
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")  # with wandb.mode unset: LeRobot would force "online" (the trap)
    mp.setenv("WANDB_API_KEY", "")
    tmp = tmp_path_factory.mktemp("run")
    cfg = tiny_config(toy_data, steps=8, save_freq=4, eval_freq=4, tensorboard=True,
                      wandb={"enable": True, "project": "dpot-test", "disable_artifact": True},
                      use_policy_training_preset=False,
                      optimizer={"type": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "grad_clip_norm": 10.0},
                      scheduler={"type": "diffuser", "name": "cosine", "num_warmup_steps": 3})
    out = tmp / "out"
    rc = dpot_main(["train", f"--config_path={write_config(tmp / 'cfg.json', cfg)}", f"--output_dir={out}"])
    mp.undo()
    assert rc == 0
    return out


def test_every_metric_key_present_and_finite(run):
    rows = read_metrics(run)
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 9))
    for r in train_rows:
        for k in TRAIN_KEYS:
            assert k in r, k
            assert isinstance(r[k], float) and math.isfinite(r[k]), (k, r[k])
    evals = [r for r in rows if "eval/offline_eval/avg_loss" in r]
    assert [r["step"] for r in evals] == [4, 8]
    for r in evals:
        for k in EVAL_KEYS:
            assert math.isfinite(r[k]) and r[k] >= 0
    assert train_rows[-1]["train/ot_pi_sum"] > 0


def test_lr_warms_up_then_decays(run):
    lr = [r["train/lr"] for r in read_metrics(run) if "train/lr" in r]
    assert lr[0] == pytest.approx(1e-3 / 3) and lr[2] == pytest.approx(1e-3)
    assert lr[0] < lr[1] < lr[2]
    assert all(a > b for a, b in zip(lr[2:], lr[3:]))
    assert lr[-1] == pytest.approx(0.0, abs=1e-12)


def test_wandb_offline_and_tensorboard_have_the_same_keys(run):
    rows = _read_wandb_offline(run)
    by_step = {r["_step"]: r for r in rows}
    local = {r["step"]: r for r in read_metrics(run) if "train/loss" in r}
    assert set(local) <= set(by_step)
    for step, r in local.items():
        for k in TRAIN_KEYS:
            assert by_step[step][k] == pytest.approx(r[k])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert set(TRAIN_KEYS + EVAL_KEYS) <= tags
    assert [e.step for e in acc.Scalars("train/lr")] == list(range(1, 9))


def test_checkpoint_is_a_plain_lerobot_policy(run):
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.factory import make_pre_post_processors

    ck = run / "checkpoints"
    assert sorted(p.name for p in ck.iterdir() if not p.name.startswith(".")) == ["000004", "000008", "last"]
    assert (ck / "last").resolve().name == "000008"
    pm = ck / "last" / "pretrained_model"
    for f in ("config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json",
              "train_config.json"):
        assert (pm / f).is_file(), f
    for f in ("optimizer_state.safetensors", "scheduler_state.json", "rng_state.safetensors",
              "training_step.json", "dpot_state.json"):
        assert (ck / "last" / "training_state" / f).is_file(), f
    policy = DiffusionPolicy.from_pretrained(pm)
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(pm))
    assert policy.config.down_dims == (16, 32) or list(policy.config.down_dims) == [16, 32]
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["eval"]["val_episodes"] and saved["optimizer"]["type"] == "adamw"
    assert "api_key" not in (run / "train_config.json").read_text().lower()


def test_lambda_zero_is_plain_cotraining_and_dtw_pairing_runs(toy_data, tmp_path):
    cfg = tiny_config(toy_data, steps=2, ot={"lambda_ot": 0.0, "alignment": "dtw"})
    out = tmp_path / "out"
    assert dpot_main(["train", f"--config_path={write_config(tmp_path / 'c.json', cfg)}",
                      f"--output_dir={out}"]) == 0
    for r in read_metrics(out):
        assert r["train/loss"] == pytest.approx(r["train/bc_loss"])
        assert r["train/ot_loss"] == 0.0 and "train/ot_pi_sum" not in r
    assert (out / "dtw_cache.npz").is_file()  # DTW pairing (ot.alignment=dtw) cached next to the run
