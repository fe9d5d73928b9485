"""``scripts/gpu_study.sh --dry-run``: the GPU study's one command at the ``micro-v4`` budget on the CPU (data
made there by ``dpot bench generate``, one ``dpot bench study --only`` sitting per method, results.json copied to
``--out``), and its one-line error for a bad option."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_study.sh"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHON": sys.executable,
       "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_dry_run_writes_results_with_the_idood_cells(tmp_path):
    """One method (the faithful arm: its pair file, pair batch and diagonal plan at micro size), ~1 min; the default
    two take twice as long."""
    r = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--methods", "dp-ot-faithful", "--out", str(tmp_path)],
                       env=ENV, capture_output=True, text=True, timeout=590, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["preset"] == "micro-v4" and res["jobs_done"] == ["dp-ot-faithful-seed0"]
    cells = res["methods"]["dp-ot-faithful"]["domains"]
    assert set(cells) == {"target_id", "target_ood", "source"}
    for name, cell in cells.items():   # micro-v4: 2 episodes per target cell, 1 in the source domain
        assert cell["episodes"] == (1 if name == "source" else 2) and [s["seed"] for s in cell["per_seed"]] == [0]
    # what the run tool brings back: at most 8 files, none deeper than 2 folders (the work dir, which a dry run
    # keeps under --out, stays behind on a GPU machine)
    returned = [f for f in tmp_path.rglob("*") if f.is_file() and "work" not in f.relative_to(tmp_path).parts]
    assert sorted(f.name for f in returned) == ["curves.png", "gpu_study.log", "results.json", "study.tar.gz"]
    with tarfile.open(tmp_path / "study.tar.gz") as tar:
        names = set(tar.getnames())
    for name in ("results.json", "done/dp-ot-faithful-seed0.json", "evals/dp-ot-faithful-seed0-target_ood.json",
                 "runs/dp-ot-faithful-seed0/metrics.jsonl", "script_logs/sitting_dp-ot-faithful.log",
                 "script_logs/generate_0.log", "configs/dp-ot-faithful-seed0.json"):
        assert name in names, sorted(names)
    # the study reused the datasets the script generated (same settings): its sitting wrote none
    assert "wrote" not in (tmp_path / "work" / "script_logs" / "sitting_dp-ot-faithful.log").read_text()
    for role in ("source", "target"):
        assert (tmp_path / "work" / "data" / f"button-press-topdown-v3_{role}" / "meta" / "dpot_bench.json").is_file()
    # the sitting wrote the study's pair file and trained on it with the diagonal plan
    cfg = json.loads((tmp_path / "work" / "configs" / "dp-ot-faithful-seed0.json").read_text())["ot"]
    assert cfg["pair_info_path"] == str(tmp_path / "work" / "data" / "button-press-topdown-v3_pairs.json")
    rows = [json.loads(line) for line in (tmp_path / "work" / "runs" / "dp-ot-faithful-seed0" / "metrics.jsonl")
            .read_text().splitlines()]
    assert all(r["train/ot_pi_diag"] == r["train/ot_pi_sum"] for r in rows if "train/ot_pi_sum" in r)
    log = (tmp_path / "gpu_study.log").read_text()
    assert "job dp-ot-faithful-seed0: last checkpoint step 4; logged to step 4, median update" in log, log
    assert "eval dp-ot-faithful-seed0 target_id step 4: " in log and "exit 0" in log


def test_bad_option_is_one_error_line(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), "--bogus", "--out", str(tmp_path)], env=ENV, capture_output=True,
                       text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: gpu_study.sh: unknown option '--bogus' (see --help)"]
