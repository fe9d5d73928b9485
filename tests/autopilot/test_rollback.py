"""A two-iteration search where a candidate made to diverge is rolled back and the next iteration starts from its
parent.

Divergence is provoked through the diagnosis thresholds (``--rules``, passed to ``dpot report/propose``): the
usual LR range (``[lr_range]``, judged by the ``lr_low`` rule) is set to [5, 5], so the proposal raises the flat
1e-6 LR to 5.0, which blows the tiny policy up within a few Adam steps.
"""

from __future__ import annotations

import json
import math

import pytest
from aphelpers import base_config, lineage, node, run_autopilot

pytestmark = pytest.mark.slow
RULES = """
[lr_flat]
enabled = false
[lr_range]
diffusion = [5.0, 5.0]
[ot_weak]
min_pi_diag = 2.0
after_step = 0
"""


def test_diverging_candidate_is_rolled_back_and_next_iteration_starts_from_its_parent(toy, tmp_path):
    cfg = base_config(toy, tmp_path / "base.json")
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    out = tmp_path / "search"
    res = run_autopilot("--config_path", str(cfg), "--out", str(out), "--iterations", "2", "--candidates", "1",
                        "--patience", "0", "--rules", str(rules))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    doc = lineage(out)
    base, first = node(doc, "base"), node(doc, "it1a")
    assert first["changes"]["optimizer.lr"][1] == pytest.approx(5.0)
    assert "lr_low" in first["diagnoses"]
    if first["decision"] == "retried":            # non-finite objective: retried once with the LR halved
        retry = node(doc, "it1a-r")
        assert retry["parent"] == "base" and retry["changes"]["optimizer.lr"][1] == pytest.approx(2.5)
        assert retry["decision"] == "rolled_back"
    else:
        assert first["decision"] == "rolled_back"
        assert first["objective"] > 1.1 * first["parent_best"]
    rec = doc["iterations"][1]
    assert rec["parent"] == "base" and rec["next_parent"] == "base" and rec["best"] is None
    second = node(doc, "it2a")
    assert second["parent"] == "base" and second["iteration"] == 2
    cfg2 = json.loads((out / "configs" / "it2a.json").read_text())
    assert cfg2 != json.loads((out / "configs" / "it1a.json").read_text())      # an untried proposal
    rolled = {n["name"] for n in doc["nodes"] if n["decision"] in ("rolled_back", "retried")}
    assert not any(n["parent"] in rolled for n in doc["nodes"])                 # nothing grows from a rollback
    assert isinstance(base["objective"], float) and math.isfinite(base["objective"])
    assert (base["decision"], base["shown"]) == ("kept", "best") and doc["stop"].startswith("2 iteration(s) done")
    assert [r["iteration"] for r in doc["iterations"]] == [0, 1, 2]
    page = (out / "autopilot.html").read_text()
    assert all(n["name"] in page for n in doc["nodes"]) and "rolled_back" in page
