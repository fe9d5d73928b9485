"""``--objective bench:<task>``: each run's checkpoint is evaluated closed-loop in the target domain of the
dpot bench simulator (``dpot bench eval``); the success rate is the objective (max), kept in the run directory."""

from __future__ import annotations

import json
import os

import pytest
from aphelpers import base_config, lineage, run_autopilot

pytestmark = pytest.mark.slow
TASK = "button-press-topdown-v3"


def test_bench_objective_is_the_closed_loop_success_rate(tmp_path):
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dpot.bench.generate import generate_dataset

    data = tmp_path / "data"
    generate_dataset(TASK, "target", 2, data, image_size=32, seed=0, progress=False)
    cfg = base_config({"src": data, "tgt": data}, tmp_path / "base.json", steps=2, eval_freq=0)
    out = tmp_path / "search"
    args = ["--config_path", str(cfg), "--out", str(out), "--iterations", "0", "--objective", f"bench:{TASK}",
            "--bench_episodes", "1", "--bench_max_steps", "10"]
    res = run_autopilot(*args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    cache = out / "runs" / "base" / f"bench_{TASK}_000002.json"
    result = json.loads(cache.read_text())
    assert result["episodes"] == 1 and result["task"] == TASK and result["domain"] == "target"
    doc = lineage(out)
    assert doc["objective"] == f"bench:{TASK}:max"
    assert doc["nodes"][0]["objective"] == pytest.approx(result["success_rate"])
