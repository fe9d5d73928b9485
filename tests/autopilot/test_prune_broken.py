"""A candidate whose curve a diagnosis calls broken stops at an evaluation instead of training its budget.

The base run's warmup (100 steps) is longer than the run (60 steps): ``schedule_mismatch`` fires as an alarm, but
its proposal is emptied through ``--rules`` (``target_warmup_frac`` above 1), so the one candidate is ``lr_low``'s
LR move, which keeps the warmup. At the candidate's first evaluations (every 3 steps) ``dpot report`` on the run so
far finds the same alarm: the candidate is stopped there, long before its 60 steps (a report takes a few seconds,
the tiny policy's 60 steps several times that).
"""

from __future__ import annotations

import re

import pytest
from aphelpers import base_config, lineage, node, run_autopilot

pytestmark = pytest.mark.slow
RULES = """
[schedule_mismatch.propose]
target_warmup_frac = 10.0
"""
STEPS = 60
WARMUP_LONGER_THAN_RUN = {"type": "diffuser", "name": "cosine", "num_warmup_steps": 100}


def test_a_warmup_longer_than_the_run_stops_the_candidate_at_an_early_evaluation(toy, tmp_path):
    cfg = base_config(toy, tmp_path / "base.json", steps=STEPS, save_freq=STEPS,
                      scheduler=dict(WARMUP_LONGER_THAN_RUN))
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    out = tmp_path / "search"
    res = run_autopilot("--config_path", str(cfg), "--out", str(out), "--iterations", "1", "--candidates", "1",
                        "--patience", "0", "--strategy", "rules", "--rules", str(rules))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    doc = lineage(out)
    base, cand = node(doc, "base"), node(doc, "it1a")
    assert "schedule_mismatch" in base["findings"] and base["trained_steps"] == STEPS   # the base is never stopped
    assert "lr_low" in cand["diagnoses"] and "optimizer.lr" in cand["changes"]
    assert cand["decision"] == "pruned" and cand["findings"] == ["schedule_mismatch"]
    m = re.match(r"stopped at step (\d+): schedule_mismatch \(the warmup never finishes", cand["note"])
    assert m is not None, cand["note"]
    assert int(m.group(1)) % 3 == 0 and int(m.group(1)) <= cand["trained_steps"] < STEPS
    assert cand["shown"] == "pruned" and "pruned" in (out / "autopilot.html").read_text()
