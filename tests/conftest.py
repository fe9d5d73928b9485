"""Suite-wide marks: the end-to-end tests that read real training runs are ``slow``, and under pytest-xdist
(``make test``: ``-n 2 --dist loadgroup``) every test file is one unit of work, so a module-scoped fixture (a
trained run, a generated dataset) is built once. Files that share an expensive session fixture form one unit:
the analysis tests on the real and generated runs (trained / generated once per session), and the bench tests on
the generated MetaWorld dataset.

Units holding a slow test are handed out first (longest-first balancing: ``make test`` passes
``--no-loadscope-reorder``, so xdist keeps this order instead of putting the many-test files first); the fast
files come last and fill in whichever worker frees first.

The trainings and dpot commands that dpot itself launches in a test are forked from a process that has imported
dpot (``dpot.launch.SPAWN``, tests/dpotproc.py), as the tests' own dpot commands are."""

from __future__ import annotations

import pytest

import dpotproc  # tests/


def pytest_configure(config):
    dpotproc.use_for_launches()

# session fixture -> the xdist group of every test that uses it (directly or through another fixture)
SHARED_FIXTURES = {"real_runs": "analysis-runs", "gen_runs": "analysis-runs", "gen_base": "analysis-runs",
                   "push_dataset": "bench-data", "tiny_policy": "bench-data"}
# fixtures that train for real (lerobot-train / dpot train subprocesses): their tests are end-to-end
TRAINING_FIXTURES = {"real_runs"}


@pytest.hookimpl(tryfirst=True)   # before pytest-xdist's own hook, which reads xdist_group into the node id
def pytest_collection_modifyitems(config, items):
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & TRAINING_FIXTURES and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("xdist_group") is None:
            shared = sorted({SHARED_FIXTURES[n] for n in names if n in SHARED_FIXTURES})
            item.add_marker(pytest.mark.xdist_group(shared[0] if shared else item.nodeid.split("::")[0]))
    slow_units = {_unit(item) for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: _unit(item) not in slow_units)     # stable: collection order within each half


def _unit(item) -> str:
    """The xdist unit of work an item belongs to: its xdist_group's name."""
    mark = item.get_closest_marker("xdist_group")
    return mark.args[0] if mark.args else mark.kwargs["name"]
