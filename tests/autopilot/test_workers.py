"""Two workers sharing one SQLite study (same command, started together) train different candidates."""

from __future__ import annotations

import pytest
from aphelpers import base_config, launches, lineage, node, start_autopilot

pytestmark = pytest.mark.slow


def test_two_workers_share_one_sqlite_study(toy, tmp_path):
    cfg = base_config(toy, tmp_path / "base.json")
    out = tmp_path / "search"
    args = ["--config_path", str(cfg), "--out", str(out), "--iterations", "1", "--candidates", "2",
            "--patience", "0"]
    procs = [start_autopilot(*args, log=tmp_path / f"worker{i}.log") for i in range(2)]
    for i, p in enumerate(procs):
        assert p.wait(timeout=900) == 0, (tmp_path / f"worker{i}.log").read_text()[-3000:]
    doc = lineage(out)
    assert [n["name"] for n in doc["nodes"]] == ["base", "it1a", "it1b"]
    for name in ("base", "it1a", "it1b"):
        assert len(launches(out, name)) == 1, name        # each run trained once, by one worker
    workers = {node(doc, "it1a")["worker"], node(doc, "it1b")["worker"]}
    assert len(workers) == 2                               # ... and the two candidates by different workers
    pids = {str(p.pid) for p in procs}
    assert {w.rsplit(":", 1)[1] for w in workers} == pids
    assert all(node(doc, n)["decision"] in ("kept", "best", "rolled_back") for n in ("it1a", "it1b"))
