"""``dpot report`` reads the domain probe (``eval/domain_probe/<camera>``): a section per camera with the first and
last probed accuracy, their intervals and the reading against chance, and a plot."""

from __future__ import annotations

import json

import pytest

from dpot.analysis import analyze, load_rules
from dpot.analysis.figures import report_figures
from dpot.analysis.plots import make_plots
from dpot.analysis.render_md import render_markdown


def _run(path, probe_rows: list[dict]):
    path.mkdir()
    cfg = {"steps": 1500, "policy": {"type": "diffusion"}, "optimizer": {"lr": 1e-4},
           "ot": {"lambda_ot": 0.1, "prior": "diagonal", "cost_norm": "none"}}
    (path / "train_config.json").write_text(json.dumps(cfg))
    rows = [{"step": s, "train/loss": 1.0 / s, "train/ot_pi_sum": 0.9, "train/ot_pi_diag": 0.9}
            for s in range(10, 1510, 10)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + probe_rows))
    return path


def _probe(step, cam, acc, lo, hi):
    k = f"eval/domain_probe/{cam}"
    return {"step": step, k: acc, k + "_lo": lo, k + "_hi": hi}


def test_report_reads_the_probe_against_chance(tmp_path):
    rows = [_probe(0, "corner4", 0.99, 0.97, 1.0), _probe(1500, "corner4", 0.53, 0.47, 0.59),
            _probe(0, "wrist", 0.98, 0.96, 0.99), _probe(1500, "wrist", 0.81, 0.76, 0.85)]
    a = analyze(str(_run(tmp_path / "run", rows)), load_rules())
    md = render_markdown(a)
    assert "## Domain probe" in md
    assert "- corner4: step 0: 0.99 [0.97, 1.00] → step 1500: 0.53 [0.47, 0.59] — not apart" in md
    assert "- wrist: step 0: 0.98 [0.96, 0.99] → step 1500: 0.81 [0.76, 0.85] — apart" in md
    assert "probe.png" in make_plots(a.run, a.summaries, a.rules)
    fig = report_figures(a.run, a.summaries, a.rules, [])["probe"]      # the interactive page's figure
    assert [d["name"] for d in fig["data"]] == ["corner4", "wrist"]
    assert fig["data"][0]["error_y"]["arrayminus"][1] == pytest.approx(0.06)
    zh = render_markdown(a, lang="zh")
    assert "## 域探针" in zh and "不可区分" in zh


def test_no_probe_section_without_probe_metrics(tmp_path):
    a = analyze(str(_run(tmp_path / "run", [])), load_rules())
    assert "Domain probe" not in render_markdown(a)
    assert "probe.png" not in make_plots(a.run, a.summaries, a.rules)


def test_lr_high_with_too_few_loss_points_judges_nothing(tmp_path):
    """LR far above its range but only 4 finite loss points (fewer than 2 x min_points) and none non-finite: no stall
    can be judged, so lr_high stays silent (it raised UnboundLocalError before)."""
    path = tmp_path / "short"
    path.mkdir()
    (path / "train_config.json").write_text(json.dumps({"steps": 40, "policy": {"type": "diffusion",
                                                                                "optimizer_lr": 0.5}}))
    rows = [{"step": s, "train/loss": 1.0, "train/lr": 0.5} for s in (10, 20, 30, 40)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ids = [f.id for f in analyze(str(path), load_rules()).findings]
    assert "lr_high" not in ids
