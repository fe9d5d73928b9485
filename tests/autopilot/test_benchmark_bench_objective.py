"""``--objective bench:<task>``: each run's checkpoint is evaluated closed-loop in the target domain of the dpot
bench simulator (``dpot bench eval``); the success rate is the objective (max), kept in the run directory. Checked
through benchmarks/autopilot.py, whose grid runs the autopilot itself: every method's runs are scored from that
cache in each run, and the results JSON maximises it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aphelpers import lineage

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TASK = "button-press-topdown-v3"


def test_the_grid_with_a_closed_loop_objective(tmp_path):
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dpot.bench.generate import generate_dataset

    data = {d: tmp_path / d for d in ("source", "target")}
    for i, (domain, root) in enumerate(data.items()):
        generate_dataset(TASK, domain, 2, root, image_size=32, seed=i, progress=False)
    out = tmp_path / "grid"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "autopilot.py"), "--steps", "6", "--iterations", "0",
           "--candidates", "1", "--repeats", "1",
           "--starts", "seed", "--methods", "tpe",
           "--objective", f"bench:{TASK}", "--bench-episodes", "1", "--bench-max-steps", "10",
           "--source", str(data["source"]), "--target", str(data["target"]), "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert doc["direction"] == "max" and doc["objective"] == f"bench:{TASK}"
    methods = doc["starts"]["seed"]["methods"]
    assert set(methods) == {"autopilot", "tpe"}                      # --methods: the autopilot always runs
    for m in methods.values():
        (r,) = m["repeats"]
        assert 0.0 <= r["best"] <= 1.0 and r["runs"] >= 1 and r["steps"] == methods["autopilot"]["repeats"][0]["steps"]
    caches = sorted(p.relative_to(out).as_posix() for p in out.rglob(f"bench_{TASK}_*.json"))
    assert not (out / "seed" / "rep0" / "random").exists() and not (out / "seed" / "rep0" / "hand").exists()
    tpe = out / "seed" / "rep0" / "tpe"
    for i in range(methods["tpe"]["repeats"][0]["runs"]):                # every run scored from its own cache
        assert len(list(tpe.joinpath(f"t{i}").glob(f"bench_{TASK}_*.json"))) == 1, caches
    base = out / "seed" / "rep0" / "autopilot" / "search" / "runs" / "base"
    assert tpe.joinpath("t0").is_symlink() and tpe.joinpath("t0").resolve() == base.resolve()   # trained once
    assert any(p.startswith("seed/rep0/autopilot/") for p in caches)
    assert "closed-loop success of the final checkpoint, 1 target-domain episodes" in res.stdout
    # the autopilot's own objective: the cached closed-loop result of its run's final checkpoint, maximised
    result = json.loads((base / f"bench_{TASK}_000006.json").read_text())
    assert result["episodes"] == 1 and result["task"] == TASK and result["domain"] == "target"
    search = lineage(base.parents[1])
    assert search["objective"] == f"bench:{TASK}:max"
    assert search["nodes"][0]["objective"] == pytest.approx(result["success_rate"])
