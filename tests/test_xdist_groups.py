"""``make test``'s split holds: under ``-n 2 --dist loadgroup`` the groups that tests/conftest.py assigns (one per
test file, one per shared session fixture) each run on one worker, so an expensive session fixture is built once.

pytest 9.2 changed how node ids are stored and pytest-xdist 3.8's loadgroup silently stopped grouping (every
session fixture was then built on both workers: ~2 min more per ``make test``); pyproject pins pytest below 9.2.
This runs the real conftest hook on throwaway test files in a pytest subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

CONFTEST = Path(__file__).with_name("conftest.py")

SHARED = '''
import os, pytest

@pytest.fixture(scope="session")
def push_dataset():
    return os.environ["PYTEST_XDIST_WORKER"]
'''

TEST_FILE = '''
import os, time, pytest

@pytest.mark.parametrize("i", range(4))
def test_where({arg}i):
    time.sleep(0.05)
    with open({out!r}, "a") as f:
        f.write("{name} " + os.environ["PYTEST_XDIST_WORKER"] + "\\n")
'''


def test_each_conftest_group_runs_on_one_worker(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(CONFTEST, suite / "conftest.py")
    shutil.copy(CONFTEST.with_name("dpotproc.py"), suite / "dpotproc.py")     # the conftest imports it
    with open(suite / "conftest.py", "a") as f:
        f.write(SHARED)
    out = tmp_path / "where.txt"
    names = {"shared_a": "push_dataset, ", "shared_b": "push_dataset, ", "own_c": "", "own_d": ""}
    for name, arg in names.items():
        (suite / f"test_{name}.py").write_text(TEST_FILE.format(arg=arg, out=str(out), name=name))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist",
                        "loadgroup", str(suite)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    workers = defaultdict(set)
    for line in out.read_text().splitlines():
        name, worker = line.split()
        workers[name].add(worker)
    assert sorted(workers) == sorted(names)
    assert all(len(w) == 1 for w in workers.values()), dict(workers)            # one file: one worker
    assert workers["shared_a"] == workers["shared_b"], dict(workers)             # one shared fixture: one worker
