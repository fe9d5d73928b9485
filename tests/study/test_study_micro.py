"""``dpot bench study --preset micro|micro-idood`` end to end: datasets, two methods, evaluations, results; and (on
micro-idood, the protocol the studies use now) resume after an interruption (a finished job is never redone, a job
killed mid-training continues from its checkpoint).
``micro-idood`` is the ``cpu-idood`` protocol (4-d state, target data in the id half, target_id / target_ood /
source cells) at a tiny budget."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

import dpotproc  # tests/
from dpot.bench.study import run_study
from dpot.cli import main as dpot_main

# preset -> (the methods run, evaluation cells, curve cells)
CASES = {"micro": ("dp-ot", ("target", "source"), ("target",)),
         "micro-idood": ("target-only,dp-ot-paper", ("target_id", "target_ood", "source"), ("target_id", "target_ood"))}


def _mtimes(root: Path, job: str) -> dict[str, float]:
    """mtime of every file a finished job wrote (run dir, evals, done marker)."""
    files = [p for p in (root / "runs" / job).rglob("*") if p.is_file()]
    files += list((root / "evals").glob(f"{job}-*.json")) + [root / "done" / f"{job}.json"]
    return {str(p): p.stat().st_mtime_ns for p in files}


def _study_cmd(root: Path, preset: str, methods: str) -> list[str]:
    return [sys.executable, "-m", "dpot", "bench", "study", "--preset", preset, "--only", methods,
            "--dir", str(root)]


def _check_cells(root: Path, preset: str, job: str) -> None:
    """The job's final evaluations (one per cell, each in its domain and region) and its curve evaluations."""
    _, cells, curve_cells = CASES[preset]
    done = json.loads((root / "done" / f"{job}.json").read_text())
    assert [p["step"] for p in done["curve"]] == [2, 4]                # intermediate checkpoint + final
    assert set(done["evals"]) == set(cells)
    for cell in curve_cells:
        curve_eval = json.loads((root / "evals" / f"{job}-{cell}-step000002.json").read_text())
        assert (curve_eval["step"], curve_eval["train_seed"], curve_eval["seed"]) == (2, 0, 100_000)
        assert len(curve_eval["episode_success"]) == curve_eval["episodes"] == 1
        assert curve_eval["cell"] == cell
    for cell in cells:
        ev = json.loads((root / "evals" / f"{job}-{cell}.json").read_text())
        assert ev["region"] == {"target_id": "id", "target_ood": "ood"}.get(cell, "all")
        assert ev["obs"] == ("proprio" if preset == "micro-idood" else "full")
        assert (ev["domain"] == "source") == (cell == "source")


def _check_results(root: Path, methods: str) -> None:
    """results.json pools each method's episodes, records OT metrics per run; the page and curves are written."""
    results = json.loads((root / "results.json").read_text())
    assert list(results["methods"]) == methods.split(",")
    for m in results["methods"].values():
        for d in m["domains"].values():
            assert d["episodes"] == 1 and 0 <= d["ci95"][0] <= d["success_rate"] <= d["ci95"][1] <= 1
    for name, m in results["methods"].items():                     # the OT metrics of each run, 0 without OT
        (run,) = m["runs"].values()
        assert (run["train/ot_loss"] == 0.0) == (name == "target-only")
    from dpot.bench.fingerprint import dataset_fingerprint
    fps = results["data_sha256"]                                   # what the runs trained on, byte for byte
    assert fps == {role: dataset_fingerprint(root / "data" / f"{results['task']}_{role}") for role in fps}
    assert set(fps) == {"source", "target"} and all(f["frames"] and f["images"] for f in fps.values())
    page = (root / "results.md").read_text()
    assert f"| {methods.split(',')[0]} | 1 |" in page and "ot_pi_sum" in page
    assert (root / "curves.png").stat().st_size > 1000


@pytest.mark.slow
def test_micro_study_in_one_sitting(tmp_path):
    """The cpu-small protocol (full observation, target / source cells) end to end on its OT arm, in one sitting;
    two arms and resuming are the next test's."""
    methods = CASES["micro"][0]
    job = f"{methods}-seed0"
    root = tmp_path / "study"
    res = run_study("micro", root=root, only=methods, progress=False)
    assert res["jobs_done"] == [job]
    _check_cells(root, "micro", job)
    done = json.loads((root / "done" / f"{job}.json").read_text())
    assert done["train"] == "fresh" and done["ot"]["train/ot_pi_sum"] > 0
    _check_results(root, methods)


@pytest.mark.slow
def test_micro_idood_study_end_to_end_and_resume(tmp_path):
    preset = "micro-idood"
    methods = CASES[preset][0]
    A, B = (f"{m}-seed0" for m in methods.split(","))
    root = tmp_path / "study"
    # sitting 1: one job only
    res = run_study(preset, root=root, only=methods, max_jobs=1, progress=False)
    assert res["jobs_done"] == [A]
    assert not (root / "runs" / B).exists()
    a_before = _mtimes(root, A)
    _check_cells(root, preset, A)
    meta = json.loads((root / "data" / "button-press-topdown-v3_target" / "meta" / "dpot_bench.json").read_text())
    assert {e["region"] for e in meta["episodes"]} == {"id"} and meta["settings"]["spec"]["name"] == "target-visual"

    # sitting 2: killed while job B trains (after its first checkpoint, before its last)
    proc = dpotproc.Popen(_study_cmd(root, preset, methods), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True,     # its training a real child: killed with the sitting
                          env={**os.environ, "DPOT_TEST_FORKED_LAUNCHES": "0"})
    first = root / "runs" / B / "checkpoints" / "000002"
    deadline = time.time() + 300
    try:
        while not (first / "training_state").is_dir():
            assert proc.poll() is None, "the study exited before job B's first checkpoint"
            assert time.time() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (root / "runs" / B / "checkpoints" / "000004").exists(), "killed too late to test resume"
    assert not (root / "done" / f"{B}.json").exists()
    first_mtime = first.stat().st_mtime_ns

    # sitting 3: job A untouched, job B resumes from step 2
    res = run_study(preset, root=root, only=methods, progress=False)
    assert res["jobs_done"] == sorted([A, B])
    assert _mtimes(root, A) == a_before, "a finished job was redone"
    assert first.stat().st_mtime_ns == first_mtime, "job B's first checkpoint was rewritten"
    log = (root / "logs" / f"{B}.log").read_text()
    assert "resumed: " in log and "resuming at step 2" in log
    rows = [json.loads(x) for x in (root / "runs" / B / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4]
    # the domain probe at step 0 and every checkpoint, once each across the resume
    assert [r["step"] for r in rows if any(k.startswith("eval/domain_probe/") for k in r)] == [0, 2, 4]
    done_b = json.loads((root / "done" / f"{B}.json").read_text())
    assert done_b["train"] == "resumed"
    assert done_b["ot"]["train/ot_pi_sum"] > 0 and "train/ot_pi_diag" in done_b["ot"]
    _check_cells(root, preset, B)
    _check_results(root, methods)

    # sitting 4: nothing left to do, nothing rewritten
    b_before = _mtimes(root, B)
    run_study(preset, root=root, only=methods, progress=False)
    assert _mtimes(root, A) == a_before and _mtimes(root, B) == b_before


def test_bad_input_is_one_line_exit_2(capsys, tmp_path):
    assert dpot_main(["bench", "study", "--preset", "cpu-smal", "--dir", str(tmp_path)]) == 2
    assert "did you mean 'cpu-small'" in capsys.readouterr().err
    assert dpot_main(["bench", "study", "--preset", "micro", "--only", "dp-ot,naive", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --only: unknown method 'naive'") and "\n" not in err
    assert dpot_main(["bench", "study", "--preset", "micro", "--task", "push-v3", "--dir", str(tmp_path)]) == 2
    assert "not a task of preset micro" in capsys.readouterr().err
    assert dpot_main(["bench", "study", "--preset", "cpu-idood", "--only", "dp-ot", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --only: unknown method 'dp-ot'") and "dp-ot-paper" in err and "\n" not in err
    assert dpot_main(["bench", "study", "--preset", "cpu-idood", "--shift", "visual", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --shift: unknown shift 'visual'") and "\n" not in err
    assert not any(tmp_path.iterdir()), "bad input wrote something"
