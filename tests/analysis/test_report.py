"""Report structure (golden section skeleton), Chinese prose, JSON, HTML in headless Chromium, proposals
that ``dpot.config`` loads, and the rollback check through recorded lineage."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess

import pytest
import runmaker
from runmaker import dpot_cli, read_json

from dpot.analysis import analyze, cfgkeys, load_rules
from dpot.analysis.propose import NEUTRAL_OT

GOLDEN_EN = ["# DP+OT Experiment Evaluation (run: {id})", "## Overview", "## Curves (summary)", "## Quick Assessment",
             "## Bottlenecks / Risks", "## Iteration Plan", "### iter2a — ", "## Verification & Monitors",
             "## Rollback Triggers", "## Appendix — Key Config (for traceability)"]
GOLDEN_ZH = ["# DP+OT 实验评估（run: {id}）", "## 概览", "## 曲线摘要", "## 快速评估", "## 瓶颈 / 风险", "## 迭代计划",
             "### iter2a — ", "## 验证与监控", "## 回滚条件", "## 附录 — 关键配置（便于追溯）"]


def _skeleton(md: str) -> list[str]:
    return [re.sub(r"(### iter\d+[a-z] — ).*", r"\1", line) for line in md.splitlines() if line.startswith("#")]


def test_markdown_golden_structure_en_and_zh(gen_runs, tmp_path):
    run = gen_runs["weak"]
    for lang, golden in (("en", GOLDEN_EN), ("zh", GOLDEN_ZH)):
        r = dpot_cli("report", str(run), "--out", str(tmp_path / lang), "--lang", lang)
        assert r.returncode == 0, r.stderr
        md = (tmp_path / lang / "report.md").read_text()
        assert md == r.stdout.rstrip("\n") + "\n" or md.strip() == r.stdout.strip()
        skel = _skeleton(md)
        want = [g.format(id="weak") for g in golden]
        assert [s for s in skel if not s.startswith("### iter2") or s == want[6]][:len(want)] == want, skel
    zh = (tmp_path / "zh" / "report.md").read_text()
    assert "OT 耦合偏弱：pi_diag 中位数" in zh and "质量被大量销毁" in zh
    en = (tmp_path / "en" / "report.md").read_text()
    assert re.search(r"- train/loss: [\d.]+ → [\d.]+ \([-+][\d.]+%\), best [\d.]+@\d+", en)
    assert "**[warn] ot_weak**" in en and "pi_diag_median=" in en
    # beside the eval loss: how well it predicted success on the benchmark (dpot/analysis/predictivity.json)
    assert "- Does the eval loss predict success? On dpot's MetaWorld benchmark" in en and "button-press: ID" in en
    assert "评估损失能否预测成功率" in zh


def test_report_json_and_default_out_dir(gen_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(gen_runs["tiny_tau"], run)
    r = dpot_cli("report", str(run), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert {"run", "summaries", "findings", "proposals", "throughput", "not_logged"} <= set(data)
    assert data["summaries"]["train/ot_pi_sum"]["last"] < 0.05
    assert (run / "report.md").exists() and (run / "report.html").exists() and (run / "curves.png").exists()
    assert '<p class="predictivity">Does the eval loss predict success?' in (run / "report.html").read_text()
    assert not list(run.glob(".*.tmp"))


CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                "--enable-logging=stderr", "--v=0", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                "--virtual-time-budget=15000"]


def _chromium(chromium, page, tmp_path, *action) -> subprocess.CompletedProcess:
    """Open ``page`` in headless Chromium with no network (every request goes to a closed proxy port)."""
    return subprocess.run([chromium, *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *action,
                           page.as_uri()], capture_output=True, text=True, timeout=180, check=False)


def _console(proc, page) -> list[str]:
    return [line for line in proc.stderr.splitlines() if "CONSOLE" in line and page.name in line]


def _no_external_urls(html: str) -> None:
    """No external resource outside plotly.js (inlined once; its own strings name plotly.com for the logo link,
    hidden here, and CDNs for map data, unused); the Chromium runs below are offline anyway."""
    from dpot.analysis.render_html import plotly_js

    assert html.count(plotly_js()) == 1
    html = html.replace(plotly_js(), "")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html), "external resource in the page"
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", html) and "@import" not in html


@pytest.mark.slow
def test_html_renders_with_plots_in_chromium(gen_runs, tmp_path, chromium):
    out = tmp_path / "rep"
    r = dpot_cli("report", str(gen_runs["huge_label"]), "--out", str(out))
    assert r.returncode == 0, r.stderr
    page = out / "report.html"
    html = page.read_text()
    plots = re.findall(r'<div class="plot" id="plot-([\w]+)"></div>', html)
    assert plots[:2] == ["losses", "ot_plan"] and {"costs", "cost_share", "spread", "ot_mass"} <= set(plots)
    assert html.count("Plotly.newPlot(") == len(plots) and html.count("<script>") == 2   # plotly.js once + calls
    _no_external_urls(html)
    # the verdict comes first, in plain text: every finding's badge and reason, before any plot
    verdict = html[html.index('<section class="verdict"'):html.index("</section>")]
    assert html.index('<section class="verdict"') < html.index('<div class="plot"')
    found = analyze(str(gen_runs["huge_label"]), load_rules()).findings
    for f in found:
        assert f'<span class="badge">{f.severity}</span><b>{f.id}</b> — ' in verdict
    assert "Cost term action_lbl dominates" in verdict and "title=" not in verdict
    # order of sections after the plots: summary table, proposals, rollback triggers, config
    order = [html.index(x) for x in ('<table id="summary">', "<h2>Iteration Plan", "<h2>Rollback Triggers",
                                     "<table id='config'>")]
    assert order == sorted(order)
    assert "<th>metric</th><th>first</th><th>last</th><th>Δ%</th><th>best@step</th><th>trend</th>" in html
    # in Chromium, offline: no console message at all, and every plot drew its SVG
    dom = _chromium(chromium, page, tmp_path, "--dump-dom")
    assert dom.returncode == 0 and _console(dom, page) == [], _console(dom, page)
    drawn = re.findall(r'<div class="plot[^"]*" id="plot-(\w+)"[^>]*>.*?class="main-svg"', dom.stdout, re.S)
    assert set(drawn) == set(plots), (plots, drawn)
    assert dom.stdout.count('class="hm"') + dom.stdout.count("heatmaplayer") >= 1   # the plan heatmap drew
    png = tmp_path / "shot.png"
    shot = _chromium(chromium, page, tmp_path, f"--screenshot={png}", "--window-size=1400,2600")
    assert png.exists(), f"chromium wrote no screenshot: {shot.stderr[-2000:]}"
    assert _console(shot, page) == []
    from PIL import Image

    img = Image.open(png).convert("RGB")
    assert img.size == (1400, 2600)
    px = img.getdata()
    blue = sum(1 for r_, g, b in px if abs(r_ - 31) < 25 and abs(g - 119) < 25 and abs(b - 180) < 25)
    green_band = sum(1 for r_, g, b in px if g > 200 and r_ < 230 and b < 230 and g - r_ > 15 and g - b > 15)
    assert blue > 2000, f"no plotted curves visible in the screenshot ({blue} plotly-blue pixels)"
    assert green_band > 2000, "the pi_diag target band is not visible"
    # the badges are visible in the first screenful (readable without scrolling or hovering)
    top = img.crop((0, 0, 1400, 300)).getdata()
    red = sum(1 for r_, g, b in top if abs(r_ - 198) < 20 and abs(g - 40) < 25 and abs(b - 40) < 25)
    orange = sum(1 for r_, g, b in top if abs(r_ - 239) < 20 and abs(g - 108) < 25 and b < 40)
    assert red > 300 and orange > 300, (red, orange)
    # the heatmap's viridis colours are on the page (the plan was drawn, not only its axes)
    viridis = sum(1 for r_, g, b in px if r_ < 80 and g < 40 and 60 < b < 110)
    assert viridis > 2000, viridis


def test_compare_html_overlays_runs_and_uses_the_last_common_step(gen_runs, real_runs, toy, gen_base, tmp_path,
                                                                   chromium):
    """A 6000-step copy of the healthy run against the 12000-step one: values at step 6000 side by side."""
    short = copy.deepcopy(gen_base)
    short["steps"] = 6000
    short["ot"]["features"] = read_json(gen_runs["healthy"] / "train_config.json")["ot"]["features"]
    runmaker.generate_dpot_run(tmp_path / "short", toy["source"], toy["target"], short, align=(1.0, 0.1))
    out = tmp_path / "cmp"
    r = dpot_cli("compare", str(gen_runs["healthy"]), str(tmp_path / "short"), str(real_runs["healthy"]),
                 "--out", str(out))
    assert r.returncode == 0, r.stderr
    data = read_json(out / "compare.json")
    loss = {row["metric"]: row for row in data["rows"]}["train/loss"]
    assert loss["lengths_differ"] and loss["common_step"] == 8      # the 8-step lerobot run is the shortest
    ot_row = {row["metric"]: row for row in data["rows"]}["train/ot_pi_diag"]
    assert ot_row["common_step"] == 6000 and ot_row["cells"][0]["at_common"] == dict(
        (s, v) for s, v in analyze(str(gen_runs["healthy"]), load_rules()).run.history["train/ot_pi_diag"])[6000]
    assert "## At the last common step" in r.stdout and "| train/ot_pi_diag | 6000 | " in r.stdout
    assert re.search(r"\| train/loss \|.*\| [ABC] \[[\w]+\]; at step 8: ", r.stdout)   # the fair winner too
    page = out / "compare.html"
    html = page.read_text()
    _no_external_urls(html)
    assert "not logged (seen: eval/eval_loss, train/dataloading_s" in html   # l1 of the lerobot run
    assert "@common step</th>" in html
    fig = re.search(r'Plotly.newPlot\("cmp-train_loss",(\[.*?\]),\{', html).group(1)
    assert fig.count('"name":') == 3          # the three runs overlaid on one axis
    dom = _chromium(chromium, page, tmp_path, "--dump-dom")
    assert _console(dom, page) == [] and dom.stdout.count('class="main-svg"') >= 2 * len(
        re.findall(r'<div class="plot"', html))


def test_propose_writes_loadable_complete_configs(gen_runs, tmp_path):
    from dpot.analysis import cfgkeys
    from dpot.config import load_train_config

    out = tmp_path / "next"
    r = dpot_cli("propose", str(gen_runs["huge_label"]), "--out", str(out))
    assert r.returncode == 0, r.stderr
    parent = read_json(gen_runs["huge_label"] / "train_config.json")
    names = sorted(p.stem for p in out.glob("iter2*.json"))
    assert names[:2] == ["iter2a", "iter2b"]
    for name in names:
        cfg = read_json(out / f"{name}.json")
        load_train_config(out / f"{name}.json")            # dpot train accepts it
        flat_p, flat_c = cfgkeys.flatten(parent), cfgkeys.flatten(cfg)
        changed = {k for k in set(flat_p) | set(flat_c) if flat_p.get(k) != flat_c.get(k)}
        intended = set(read_json(out / "lineage.json")[name]["changes"]) | {"output_dir", "job_name"}
        assert changed <= intended, changed - intended
    a = read_json(out / "iter2a.json")
    ratio = {f.id: f for f in analyze(str(gen_runs["huge_label"]), load_rules()).findings}["cost_dominance"]
    target = float(f"{500.0 * 10 / ratio.evidence['ratio']:.2g}")
    assert 5 < target < 20 and ratio.targets["ot.features.1.weight_label"] == target
    assert a["ot"]["features"][1]["weight_label"] == 200.0     # one person's step towards it: 500 / 4 -> 200
    assert "more steps like this if the next run confirms" in read_json(out / "lineage.json")["iter2a"]["rationale"]
    b = read_json(out / "iter2b.json")
    assert b["ot"]["tau_src"] == 0.02 and b["ot"]["lambda_ot"] == 0.2
    assert "monitors:" in r.stdout and "rollback:" in r.stdout


def test_propose_from_plain_lerobot_run_adds_neutral_ot(real_runs, tmp_path):
    from dpot.config import load_train_config

    out = tmp_path / "next"
    r = dpot_cli("propose", str(real_runs["planted"]), "--out", str(out))
    assert r.returncode == 0, r.stderr
    cfg = read_json(out / "iter2a.json")
    assert cfg["ot"] == NEUTRAL_OT and "neutral OT block" in r.stdout
    assert cfg["source_dataset"] == cfg["dataset"] and "placeholder" in r.stdout
    # its constant schedule is what its config says (lr_flat: information, nothing proposed: the schedule stays);
    # its LR of 1e-5 is below Diffusion's usual range (lr_low: x10)
    assert cfgkeys.schedule(cfg)["name"] == "constant"
    assert cfgkeys.base_lr(cfg) == pytest.approx(1e-4)
    load_train_config(out / "iter2a.json")


def test_rollback_through_recorded_lineage(gen_runs, gen_base, toy, tmp_path):
    out = tmp_path / "next"
    assert dpot_cli("propose", str(gen_runs["healthy"]), "--out", str(out)).returncode == 0
    child_cfg = read_json(out / "iter2a.json")
    # GENERATED child run at the proposal's output_dir, with an eval loss 25% worse than its parent's
    runmaker.generate_dpot_run(out / "iter2a", toy["source"], toy["target"], child_cfg, align=(1.0, 0.1),
                               eval_scale=1.25)
    a = analyze(str(out / "iter2a"), load_rules())
    rb = {f.id: f for f in a.findings}["rollback"]
    assert rb.severity == "alarm" and 20 < rb.evidence["regression_pct"] < 30
    assert a.proposals[0].kind == "rollback" and a.proposals[0].title.startswith("rollback: revert")
    assert "steps" in a.proposals[0].changes
    r = dpot_cli("compare", str(gen_runs["healthy"]), str(out / "iter2a"))
    assert "recorded parent" in r.stdout and "ROLLBACK" in r.stdout
    # a healthy child (same eval) passes the check
    ok = copy.deepcopy(child_cfg)
    runmaker.generate_dpot_run(out / "iter2b", toy["source"], toy["target"], ok, align=(1.0, 0.1))
    (out / "lineage.json").write_text(json.dumps({**read_json(out / "lineage.json"),
                                                  "iter2b": {"parent": str(gen_runs["healthy"])}}))
    assert not any(f.id == "rollback" for f in analyze(str(out / "iter2b"), load_rules()).findings)


def test_bad_lang_and_bad_rules(gen_runs, tmp_path):
    r = dpot_cli("report", str(gen_runs["healthy"]), "--lang", "fr", "--out", str(tmp_path))
    assert r.returncode == 2 and "--lang fr" in r.stderr
    (tmp_path / "r.toml").write_text("[ot_weak]\nmin_pi_diagg = 1\n")
    r = dpot_cli("report", str(gen_runs["healthy"]), "--rules", str(tmp_path / "r.toml"), "--out", str(tmp_path))
    assert r.returncode == 2 and "did you mean 'min_pi_diag'" in r.stderr
