"""OT plan snapshots (``<run>/ot_plans/step_<step:06d>.npz``, the trainer's contract): read, picked, drawn."""

from __future__ import annotations

import json

import numpy as np

from dpot.analysis import analyze, load_rules
from dpot.analysis.figures import fig_plan, report_figures
from dpot.analysis.plans import pick_steps, plan_files, read_plans


def test_generated_run_snapshots_are_read_and_drawn(gen_runs):
    run = gen_runs["healthy"]
    files = plan_files(run)
    assert [s for s, _ in files] == list(range(2000, 12001, 2000))   # every plan_log_every=10 log points
    plans = read_plans(run, k=4)
    assert [p.step for p in plans] == [2000, 6000, 8000, 12000]        # the latest and evenly spaced ones
    p = plans[-1]
    assert p.plan.shape == (8, 8) and set(p.costs) == {"embed_state", "action_lbl"}
    assert p.src_episode.dtype.kind == "i" and p.tgt_phase.shape == (8,)
    fig = fig_plan(plans)
    heat, diag = fig["data"]
    assert heat["type"] == "heatmap" and np.allclose(heat["z"], p.plan, rtol=1e-5)
    assert diag["x"] == diag["y"] == list(range(8))
    assert "cost action_lbl" in heat["text"][0][0] and "ep " in heat["text"][0][0]
    assert [b["label"] for b in fig["layout"]["updatemenus"][0]["buttons"]] == [f"step {p.step}" for p in plans]
    a = analyze(str(run), load_rules())
    figs = report_figures(a.run, a.summaries, a.rules, plans)
    assert list(figs)[:2] == ["losses", "ot_plan"] and "spread" in figs and "cost_share" in figs
    json.dumps(figs, allow_nan=False)     # plain JSON for the page


def test_bad_snapshots_are_skipped(tmp_path):
    d = tmp_path / "ot_plans"
    d.mkdir()
    (d / "step_000010.npz").write_bytes(b"not a zip")
    np.savez(d / "step_000020.npz", plan=np.ones(3, np.float32))          # not 2-D
    np.savez(d / "step_000030.npz", plan=np.eye(2, dtype=np.float32), cost_img=np.ones((2, 2), np.float32),
             cost_bad=np.ones(3, np.float32))
    (d / "notes.txt").write_text("x")
    plans = read_plans(tmp_path)
    assert [p.step for p in plans] == [30] and set(plans[0].costs) == {"img"}
    assert read_plans(tmp_path / "missing") == [] and read_plans(None) == []
    assert [s for s, _ in pick_steps([(i, None) for i in range(10)], 3)] == [0, 4, 9]
