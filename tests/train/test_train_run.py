"""An end-to-end tiny run: metric keys, lr schedule, W&B offline + TensorBoard, checkpoint layout, OT records
(ot_terms.json, plan snapshots), lambda_ot=0, the closing line (names only what was written)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from train_helpers import read_metrics, tiny_config, write_config

from dpot.cli import main as dpot_main

pytestmark = pytest.mark.slow  # trains for real (make check leaves it to make test)

TRAIN_KEYS = ["train/loss", "train/l1_loss", "train/grad_norm", "train/lr", "train/update_s", "train/dataloading_s",
              "train/ot_loss", "train/ot_pi_sum", "train/ot_pi_diag", "train/ot_pi_diag_frac", "train/ot_skipped",
              "train/ot_sinkhorn_iters", "train/ot_sinkhorn_maxed",
              "train/ot_cost/img_top", "train/ot_cost/img_wrist", "train/ot_cost/action_lbl"]
EVAL_KEYS = ["eval/offline_eval/avg_loss", "eval/offline_eval/eval_s"]
TERMS = {"img_top": "embed", "img_wrist": "embed", "action_lbl": "label"}


def _read_wandb_offline(run_dir: Path, record_type: str = "history") -> list[dict]:
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.internal import datastore

    (wandb_file,) = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    ds = datastore.DataStore()
    ds.open_for_scan(str(wandb_file))
    rows = []
    while (d := ds.scan_data()) is not None:
        r = pb.Record()
        r.ParseFromString(d)
        if r.WhichOneof("record_type") == record_type == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif r.WhichOneof("record_type") == record_type == "config":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.config.update})
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
                      scheduler={"type": "diffuser", "name": "cosine", "num_warmup_steps": 3},
                      ot={"lambda_ot": 0.1, "plan_log_every": 3})
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


def test_lambda_zero_is_plain_cotraining_and_dtw_pairing_runs(toy_data, tmp_path, capsys):
    cfg = tiny_config(toy_data, steps=2, ot={"lambda_ot": 0.0, "alignment": "dtw", "plan_log_every": 1})
    out = tmp_path / "out"
    assert dpot_main(["train", f"--config_path={write_config(tmp_path / 'c.json', cfg)}",
                      f"--output_dir={out}"]) == 0
    model = out / "checkpoints" / "last" / "pretrained_model"
    assert f"checkpoint: {model}" in capsys.readouterr().out and (model / "model.safetensors").is_file()
    for r in read_metrics(out):
        assert r["train/loss"] == pytest.approx(r["train/bc_loss"])
        assert r["train/ot_loss"] == 0.0 and "train/ot_pi_sum" not in r
    assert (out / "dtw_cache.npz").is_file()  # DTW pairing (ot.alignment=dtw) cached next to the run
    assert not (out / "ot_plans").exists()  # OT off: no plan to save, even with plan_log_every=1


def test_ot_terms_recorded_in_the_run_and_the_wandb_config(run):
    assert json.loads((run / "ot_terms.json").read_text()) == {"terms": TERMS}
    config = {}
    for row in _read_wandb_offline(run, "config"):
        config.update(row)
    assert config["dpot_ot_terms"] == TERMS


def test_plan_snapshots_every_log_freq_times_plan_log_every_steps(run):
    # log_freq=1, plan_log_every=3, 8 steps: the plans of steps 3 and 6
    assert sorted(p.name for p in (run / "ot_plans").iterdir()) == ["step_000003.npz", "step_000006.npz"]
    rows = {r["step"]: r for r in read_metrics(run) if "train/loss" in r}
    saved = json.loads((run / "train_config.json").read_text())
    val_eps = set(saved["eval"]["val_episodes"])
    for step in (3, 6):
        with np.load(run / "ot_plans" / f"step_{step:06d}.npz") as d:
            snap = dict(d)
        assert set(snap) == {"plan", "src_phase", "tgt_phase", "src_episode", "tgt_episode", "paired",
                             *(f"cost_{t}" for t in TERMS)}
        assert snap["paired"].dtype == bool and snap["paired"].shape == (2, 2)   # no mask: the matrix diagonal
        assert float(snap["plan"][snap["paired"]].sum()) == pytest.approx(rows[step]["train/ot_pi_diag"], rel=1e-4)
        assert snap["plan"].shape == (2, 2) and snap["plan"].dtype == np.float32  # batch 4: 2 source + 2 target
        for t in TERMS:
            assert snap[f"cost_{t}"].shape == (2, 2) and snap[f"cost_{t}"].dtype == np.float32
            # the logged <pi*, w_k C_k> of that step (log_freq=1: the row is this step alone)
            assert float((snap["plan"] * snap[f"cost_{t}"]).sum()) == pytest.approx(
                rows[step][f"train/ot_cost_plan/{t}"], rel=1e-4, abs=1e-7)
        assert float(snap["plan"].sum()) == pytest.approx(rows[step]["train/ot_pi_sum"], rel=1e-4)
        for dom in ("src", "tgt"):
            assert snap[f"{dom}_phase"].shape == (2,) and snap[f"{dom}_phase"].dtype == np.float32
            assert ((snap[f"{dom}_phase"] >= 0) & (snap[f"{dom}_phase"] <= 1)).all()
            assert snap[f"{dom}_episode"].shape == (2,) and np.issubdtype(snap[f"{dom}_episode"].dtype, np.integer)
        assert not set(snap["tgt_episode"].tolist()) & val_eps  # target items come from training episodes


def test_no_plan_snapshots_when_plan_log_every_is_zero(toy_data, tmp_path, capsys):
    """Also ``save_checkpoint=false``: no checkpoint, and the closing line names none (only files that exist)."""
    cfg = tiny_config(toy_data, steps=2, save_checkpoint=False, ot={"lambda_ot": 0.1, "plan_log_every": 0})
    out = tmp_path / "out"
    assert dpot_main(["train", f"--config_path={write_config(tmp_path / 'c.json', cfg)}",
                      f"--output_dir={out}"]) == 0
    done = [x for x in capsys.readouterr().out.splitlines() if x.startswith("dpot train: done")]
    assert len(done) == 1 and "checkpoint:" not in done[0] and "no checkpoint saved" in done[0], done
    assert f"metrics: {out / 'metrics.jsonl'}" in done[0] and not (out / "checkpoints").exists()
    assert [r["step"] for r in read_metrics(out)] == [1, 2] and read_metrics(out)[-1]["train/ot_pi_sum"] > 0
    assert not (out / "ot_plans").exists()
    assert json.loads((out / "ot_terms.json").read_text()) == {"terms": TERMS}
