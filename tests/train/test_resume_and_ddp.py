"""Exact resume after SIGKILL, and 2-process accelerate (gloo) == 1 process with the same global batch, for each
policy dpot trains (Diffusion; ACT marked slow: ACT's dropout masks are drawn per process, so its 2-process run
is compared at ``policy.dropout=0``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import read_metrics, tiny_act_config, tiny_config, write_config

import dpotproc  # tests/
from dpot.cli import main as dpot_main

pytestmark = pytest.mark.slow  # trains for real (make check leaves it to make test)

TIMING = {"train/update_s", "train/dataloading_s", "eval/offline_eval/eval_s"}
FAST_LR = {"use_policy_training_preset": False,
           "optimizer": {"type": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "grad_clip_norm": 10.0},
           "scheduler": {"type": "diffuser", "name": "cosine", "num_warmup_steps": 1}}
# Adam turns float-rounding noise in near-zero gradients into +-lr steps; SGD keeps the weight check meaningful.
SGD = {"use_policy_training_preset": False, "optimizer": {"type": "sgd", "lr": 0.05, "grad_clip_norm": 10.0},
       "scheduler": {"type": "diffuser", "name": "cosine", "num_warmup_steps": 1}}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _run_process_group(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a new session; past ``timeout`` the whole group is killed (the launcher *and* its
    ranks: killing the launcher alone leaves a hung rank behind) and the test fails saying so."""
    proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"`accelerate launch` did not exit within {timeout} s (a rank hung); stdout tail:\n{out[-2000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _free_port() -> int:
    """A TCP port free on loopback right now (so parallel CI jobs never collide on a fixed port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last" / "pretrained_model" / "model.safetensors"))


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _act_no_dropout(toy_data, **over):
    return tiny_act_config(toy_data, policy={"dropout": 0.0}, **over)


POLICIES = [pytest.param(tiny_config, id="diffusion"),
            pytest.param(tiny_act_config, id="act", marks=pytest.mark.slow)]
POLICIES_DDP = [pytest.param(tiny_config, id="diffusion"),
                pytest.param(_act_no_dropout, id="act", marks=pytest.mark.slow)]


@pytest.mark.parametrize("make_config", POLICIES)
def test_resume_after_sigkill_is_exact(toy_data, tmp_path, make_config):
    cfg = make_config(toy_data, steps=6, save_freq=2, log_freq=1, eval_freq=3, **FAST_LR)
    ref = tmp_path / "ref"
    torch.set_num_threads(1)
    try:
        assert dpot_main(["train", f"--config_path={write_config(tmp_path / 'a.json', cfg)}",
                          f"--output_dir={ref}"]) == 0
    finally:
        torch.set_num_threads(int(os.environ.get("DPOT_TEST_THREADS", os.cpu_count() or 1)))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "dpot.train", f"--config_path={write_config(tmp_path / 'b.json', cfg)}",
           f"--output_dir={out}"]
    proc = dpotproc.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "checkpoints" / "000002").is_dir():
        assert proc.poll() is None, "training exited before the first checkpoint"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "checkpoints" / "000006").exists(), "killed too late to test resume"
    resumed = dpotproc.run([sys.executable, "-m", "dpot.train", f"--config_path={out / 'train_config.json'}",
                            "--resume=true"], env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _weights(ref), _weights(out)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    ra, rb = _strip(read_metrics(ref)), _strip(read_metrics(out))
    assert [r["step"] for r in rb] == [r["step"] for r in ra]
    assert ra == rb


@pytest.mark.timeout(600)
@pytest.mark.parametrize("make_config", POLICIES_DDP)
def test_two_processes_match_one_with_the_same_global_batch(toy_data, tmp_path, make_config):
    one = tmp_path / "one"
    two = tmp_path / "two"
    cfg1 = write_config(tmp_path / "one.json", make_config(toy_data, batch_size=4, steps=3, **SGD))
    cfg2 = write_config(tmp_path / "two.json", make_config(toy_data, batch_size=2, steps=3, **SGD))
    assert dpot_main(["train", f"--config_path={cfg1}", f"--output_dir={one}"]) == 0
    accel = Path(sys.executable).with_name("accelerate")
    r2 = _run_process_group([str(accel), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                             str(_free_port()), "-m", "dpot.train", f"--config_path={cfg2}", f"--output_dir={two}"],
                            timeout=240)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "2 process(es)" in r2.stdout
    step_json = json.loads((two / "checkpoints" / "last" / "training_state" / "training_step.json").read_text())
    assert step_json["num_processes"] == 2
    a, b = _weights(one), _weights(two)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    m1, m2 = read_metrics(one), read_metrics(two)
    assert len(m1) == len(m2) == 3
    for x, y in zip(m1, m2):
        for k in ("train/loss", "train/l1_loss", "train/grad_norm", "train/lr", "train/ot_loss", "train/ot_pi_sum",
                  "train/ot_pi_diag", "train/ot_cost/img_top", "train/ot_cost/action_lbl", "train/ot_skipped",
                  "train/ot_sinkhorn_iters", "train/ot_sinkhorn_maxed"):
            assert x[k] == pytest.approx(y[k], rel=1e-4, abs=1e-6), k
