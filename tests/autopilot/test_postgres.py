"""The search on a real PostgreSQL server (Debian's ``postgresql``, installed by scripts/setup.sh), started by the
test in a temporary directory on a unix socket only, and stopped at the end. Not skipped when missing: it fails."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from aphelpers import base_config, launches, lineage, run_autopilot

from dpot.cli import main

pytestmark = pytest.mark.slow


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or ([shutil.which(name)] if shutil.which(name)
                                                                        else [])
    if not found:
        pytest.fail(f"PostgreSQL's {name} not found: install Debian's postgresql (scripts/setup.sh does)")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg_url():
    """A throwaway PostgreSQL cluster; yields a SQLAlchemy URL on its unix socket."""
    root = Path(tempfile.mkdtemp(prefix="dpot-pg-"))
    data, sock, port = root / "data", root / "sock", _free_port()
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:                   # postgres refuses to run as root: use the postgres system user
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_user, _pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, _pg_bin("pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-o",
                    f"-k {sock} -c listen_addresses='' -p {port} -c fsync=off", "start"], check=True,
                   capture_output=True)
    try:
        yield f"postgresql+psycopg2://postgres@/postgres?host={sock}&port={port}"
    finally:
        subprocess.run([*as_user, _pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_search_on_a_postgresql_server(toy, tmp_path, pg_url):
    import optuna

    cfg = base_config(toy, tmp_path / "base.json")
    out = tmp_path / "search"
    args = ["--config_path", str(cfg), "--out", str(out), "--iterations", "0", "--storage", pg_url]
    res = run_autopilot(*args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert not (out / "study.db").exists()                    # the study lives on the server
    study = optuna.load_study(study_name="dpot-autopilot-search", storage=pg_url)
    trials = [t for t in study.trials if t.user_attrs.get("name") == "base"]
    assert len(trials) == 1 and trials[0].state == optuna.trial.TrialState.COMPLETE
    assert trials[0].value == pytest.approx(lineage(out)["nodes"][0]["objective"])
    assert study.user_attrs["stop"].startswith("0 iteration(s) done")
    assert trials[0].intermediate_values                      # reported from metrics.jsonl while training
    assert main(["autopilot", *args, "--quiet"]) == 0         # continues from the server's state: nothing to do
    assert len(launches(out, "base")) == 1
