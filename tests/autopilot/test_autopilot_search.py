"""A search on generated data, killed with SIGKILL in the middle, then continued by two workers started with the
same command (they share the SQLite study under DIR).

One search serves several checks (each training costs seconds of CPU): base config with a flat, tiny LR (1e-6,
constant schedule), 8 steps, a checkpoint every 2 steps, 2 candidates (the ot_weak rule forced on, so that the
proposals are an optimisation one and an OT one), 1 iteration, every training through a --launcher template that
records each launch. (The two-iteration search is tests/autopilot/test_rollback.py.)
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import time

import pytest
from aphelpers import base_config, launches, lineage, node, start_autopilot

from dpot.autopilot import runs
from dpot.cli import main
from dpot.metrics_log import read_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def killed_search(toy, tmp_path_factory):
    work = tmp_path_factory.mktemp("search")
    cfg = base_config(toy, work / "base.json", steps=8, eval_freq=4, save_freq=2)
    out = work / "search"
    record = work / "launches.txt"
    launcher = f"echo {{name}} >> {shlex.quote(str(record))}; exec {{cmd}}"   # exec: dies with the autopilot
    rules = work / "rules.toml"           # the coupling always reads as weak: a second (OT) proposal every time
    rules.write_text("[ot_weak]\nmin_pi_diag = 2.0\nafter_step = 0\n")
    args = ["--config_path", str(cfg), "--out", str(out), "--iterations", "1", "--candidates", "2",
            "--patience", "0", "--launcher", launcher, "--rules", str(rules)]
    proc = start_autopilot(*args, log=work / "first.log")
    ck = out / "runs" / "it1a" / "checkpoints"
    deadline = time.time() + 900
    while not (ck / "000002").exists():
        assert proc.poll() is None, (work / "first.log").read_text()[-3000:]
        assert time.time() < deadline, "it1a never saved its first checkpoint"
        time.sleep(0.1)
    finished_at_kill = (ck / "000008").exists()
    os.kill(proc.pid, signal.SIGKILL)             # the autopilot only; its training dies with it (PDEATHSIG)
    proc.wait()
    launched_before = record.read_text().split()
    workers = [start_autopilot(*args, log=work / f"worker{i}.log") for i in range(2)]
    for i, w in enumerate(workers):
        assert w.wait(timeout=900) == 0, (work / f"worker{i}.log").read_text()[-3000:]
    return {"out": out, "args": args, "record": record, "finished_at_kill": finished_at_kill,
            "launched_before": launched_before, "pids": {str(w.pid) for w in workers},
            "logs": [(work / f"worker{i}.log").read_text() for i in range(2)]}


def test_search_writes_lineage_and_page(killed_search):
    out = killed_search["out"]
    doc = lineage(out)
    assert [r["iteration"] for r in doc["iterations"]] == [0, 1]
    assert doc["stop"].startswith("1 iteration(s) done")
    names = [n["name"] for n in doc["nodes"]]
    assert names == ["base", "it1a", "it1b"]
    for n in doc["nodes"]:
        assert {"name", "parent", "changes", "diagnoses", "objective", "decision", "shown"} <= set(n)
        assert n["decision"] in {"kept", "rolled_back"}              # the stored decision, never a display state
        assert n["shown"] in {"kept", "best", "rolled_back"}
        assert isinstance(n["objective"], float)
        assert (out / n["run"] / "train_config.json").exists() and (out / n["run"] / "metrics.jsonl").exists()
        assert n["report"] and (out / n["report"]).exists()      # each run's report, linked from the page
    assert node(doc, "base")["parent"] is None and node(doc, "it1b")["parent"] == "base"
    assert [n["name"] for n in doc["nodes"] if n["shown"] == "best"] == [
        min((n for n in doc["nodes"] if n["decision"] == "kept"), key=lambda n: n["objective"])["name"]]
    page = (out / "autopilot.html").read_text()
    for name in names:
        assert name in page
    assert "<svg" in page and "src=" not in page and "<script" not in page      # self-contained, offline
    assert 'href="runs/it1a/report.html"' in page
    progress = "".join(killed_search["logs"])
    assert "autopilot: iter 1 it1a" in progress and "autopilot: iter 1 it1b" in progress   # one line per run


def test_flat_tiny_lr_gets_a_candidate_that_raises_the_lr(killed_search):
    out = killed_search["out"]
    first = node(lineage(out), "it1a")
    assert {"lr_low", "lr_flat"} & set(first["diagnoses"])
    old, new = first["changes"]["optimizer.lr"]
    assert old == pytest.approx(1e-6) and new > 10 * old
    trained = json.loads((out / "runs" / "it1a" / "train_config.json").read_text())
    assert trained["optimizer"]["lr"] == pytest.approx(new)
    lrs = [v for _, v in runs.series(read_metrics(out / "runs" / "it1a"), "train/lr")]
    base_lrs = [v for _, v in runs.series(read_metrics(out / "runs" / "base"), "train/lr")]
    assert max(base_lrs) == pytest.approx(1e-6) and max(lrs) > 2 * max(base_lrs)   # it trained with a higher LR


def test_kill9_then_rerun_trains_no_finished_run_again(killed_search):
    out, record = killed_search["out"], killed_search["record"]
    assert killed_search["launched_before"] == ["base", "it1a"]
    launched = record.read_text().split()
    assert launched.count("base") == 1 and launched.count("it1b") == 1
    it1a = launches(out, "it1a")
    if killed_search["finished_at_kill"]:
        assert launched.count("it1a") == 1            # finished before the kill: only read afterwards
    else:
        assert launched.count("it1a") == 2 and "--resume=true" in it1a[1] and "--resume=true" not in it1a[0]
        assert "resuming at step" in (out / "logs" / "it1a.log").read_text()
    steps = [int(r["step"]) for r in read_metrics(out / "runs" / "it1a") if "train/loss" in r]
    assert steps == list(range(1, 9))                # resumed from its checkpoint: each step logged once


def test_two_workers_on_one_sqlite_study_train_different_candidates(killed_search):
    doc = lineage(killed_search["out"])
    workers = {node(doc, "it1a")["worker"], node(doc, "it1b")["worker"]}
    assert len(workers) == 2
    assert {w.rsplit(":", 1)[1] for w in workers} == killed_search["pids"]
    assert any("taking over it1a" in log for log in killed_search["logs"])


def test_rerunning_a_finished_search_trains_nothing(killed_search, capsys):
    out, record = killed_search["out"], killed_search["record"]
    before = record.read_text()
    assert main(["autopilot", *killed_search["args"]]) == 0
    assert "stopped (1 iteration(s) done)" in capsys.readouterr().out
    assert record.read_text() == before
    assert [n["name"] for n in lineage(out)["nodes"]] == ["base", "it1a", "it1b"]


def test_out_dir_holding_another_search_is_refused(killed_search, capsys):
    out = killed_search["out"]
    spec_before = (out / "autopilot.json").read_text()
    assert main(["autopilot", *killed_search["args"], "--objective", "train/loss"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --out:") and "another search" in err[0]
    assert (out / "autopilot.json").read_text() == spec_before
