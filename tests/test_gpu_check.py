"""The GPU check's CPU dry run (benchmarks/gpu_check.py, scripts/gpu_check.sh): every check with a CUDA part says
so with a ``NEEDS CUDA`` line, nothing is skipped silently, and the JSON/Markdown results have their keys."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu_check import CHECKS

ROOT = Path(__file__).resolve().parents[1]

CUDA_CHECKS = [c.name for c in CHECKS if c.cuda_part]
ALL = [c.name for c in CHECKS]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


def _needs_cuda_lines(text: str) -> dict[str, str]:
    return dict(re.findall(r"^NEEDS CUDA: (\w+): (.+)$", text, flags=re.M))


def test_every_gpu_requirement_is_named():
    """The checks the issue asks for exist, and each one that needs CUDA says what (the NEEDS CUDA line's text)."""
    for name in ("ot_solver", "amp_bf16", "resume", "train_bf16", "step_time", "data_wait", "render",
                 "eval_closed_loop"):
        assert name in CUDA_CHECKS, name
    assert {"env", "metaworld_data"} <= set(ALL) - set(CUDA_CHECKS)
    assert all(len(c.cuda_part) > 10 for c in CHECKS if c.cuda_part)


def test_dry_run_subset_names_what_needs_cuda_and_what_was_not_run(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--checks",
                        "env,ot_solver", "--out", str(tmp_path)], env=ENV, capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    needs = _needs_cuda_lines(out)
    assert sorted(needs) == sorted(CUDA_CHECKS)  # selected or not: every CUDA part is named
    skipped = dict(re.findall(r"^SKIPPED: (\w+): (.+)$", out, flags=re.M))
    assert sorted(skipped) == sorted(set(ALL) - {"env", "ot_solver"})
    assert all("not selected" in v for v in skipped.values())
    assert re.search(r"^CHECK env: OK ", out, flags=re.M)
    assert re.search(r"^CHECK ot_solver: NEEDS_CUDA ", out, flags=re.M)

    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["meta"]["dry_run"] is True and report["meta"]["device"] == "cpu"
    assert {"date", "card", "cpu_cores", "torch", "sizes", "seconds"} <= set(report["meta"])
    assert list(report["checks"]) == ALL
    assert report["needs_cuda"] == CUDA_CHECKS
    assert report["checks"]["env"]["status"] == "ok"
    assert report["checks"]["env"]["result"]["cuda_available"] in (True, False)
    ot = report["checks"]["ot_solver"]
    assert ot["status"] == "needs_cuda" and ot["ran_on"] == "cpu"
    rows = ot["result"]["rows"]
    assert [row["n"] for row in rows] == report["meta"]["sizes"]["ot_n"]
    assert all(row["cpu_ms"] > 0 and 0 < row["mass_cpu"] <= 1.0 + 1e-6 and "cuda_ms" not in row for row in rows)
    for name in set(ALL) - {"env", "ot_solver"}:
        assert report["checks"][name]["status"] == "skipped"

    md = (tmp_path / "gpu_check.md").read_text()
    assert "| check | status | ran on | result | s |" in md
    for name in ALL:
        assert f"| {name} |" in md
    assert "DRY RUN" in md


def test_unknown_check_is_one_error_line(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--checks", "env,cuda_magic",
                        "--out", str(tmp_path)], env=ENV, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: --checks: unknown ['cuda_magic']")
    assert not (tmp_path / "gpu_check.json").exists()


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_full_dry_run_of_the_shell_script(tmp_path):
    """The whole script on the CPU at tiny sizes (MetaWorld data, 3 training runs, lerobot-train, eval): ~4 min
    on a free 2-core machine, ~10 min on a loaded one."""
    env = {**ENV, "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=2300, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert sorted(_needs_cuda_lines(r.stdout)) == sorted(CUDA_CHECKS)
    assert "SKIPPED" not in r.stdout
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    status = {k: v["status"] for k, v in report["checks"].items()}
    assert status == {n: ("needs_cuda" if n in CUDA_CHECKS else "ok") for n in ALL}
    res = {k: v["result"] for k, v in report["checks"].items()}
    assert res["resume"]["exact"] is True and res["resume"]["steps_logged"] == [1, 2, 3, 4]
    assert res["amp_bf16"]["bf16"]["embed_dtype"] == "torch.bfloat16"
    assert res["amp_bf16"]["bf16"]["ot_loss_dtype"] == "torch.float32"
    assert res["train_bf16"]["use_amp"] is True and res["train_bf16"]["finite"]
    assert res["render"]["frame_std"] > 0 and res["render"]["renderer"]
    assert res["eval_closed_loop"]["episodes"] == 1
    for run in ("ot_on", "ot_off", "lerobot"):
        assert res["step_time"][run]["update_s"] > 0 and res["step_time"][run]["step_wall_s"] > 0
    assert 0 <= res["data_wait"]["train_bf16"]["share"] < 1
    assert (tmp_path / "gpu_check.md").is_file() and (tmp_path / "gpu_check.log").is_file()
