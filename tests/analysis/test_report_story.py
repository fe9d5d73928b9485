"""The report tells one story (issue 34): one band for the OT coupling (plots, assessment, rules and the rollback
trigger read the same numbers), no proposal beyond the run's own length, a warmup longer than the run said as a
multiple, a torn last line warned on the console, compare refuses one run, and a report of a log folder inside a
dpot run is written next to that log, never over the dpot run's own report."""

from __future__ import annotations

import json

import pytest

from dpot.analysis import analyze, load_rules
from dpot.analysis.diagnose import coupling_band
from dpot.analysis.figures import fig_ot_mass
from dpot.analysis.i18n import finding_text
from dpot.analysis.render_md import render_markdown
from dpot.cli import main as dpot_main


def _run(path, rows, **cfg_over):
    path.mkdir(parents=True)
    cfg = {"steps": rows[-1]["step"], "policy": {"type": "diffusion"}, "optimizer": {"lr": 1e-4},
           "ot": {"lambda_ot": 0.1, "reg": 0.02, "tau_src": 0.01, "tau_tgt": 0.01, "heuristic": True}, **cfg_over}
    (path / "train_config.json").write_text(json.dumps(cfg))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_one_band_for_the_coupling(tmp_path):
    rules = load_rules()
    lo, hi = coupling_band(rules)
    assert (lo, hi) == (rules["ot_weak"]["min_pi_diag"], rules["ot_strong"]["max_pi_diag"])
    # pi_diag 0.53 in the late window, above the band in 60 % of it: not 'in range', and not ot_strong (80 %)
    vals = [0.2] * 40 + [0.53, 0.35, 0.53, 0.53, 0.3, 0.53, 0.53, 0.35, 0.53, 0.3]
    rows = [{"step": 10 * (i + 1), "train/loss": 1.0, "train/ot_pi_sum": 0.6, "train/ot_pi_diag": v}
            for i, v in enumerate(vals)]
    a = analyze(str(_run(tmp_path / "r", rows)), rules)
    md = render_markdown(a)
    line = next(x for x in md.splitlines() if x.startswith("- OT signal"))
    assert f"above the band [{lo:g}, {hi:g}]" in line and "60 % of the late window" not in line
    assert "above it in 60% of the late window; ot_strong fires from 80%" in line and "in range" not in line
    fig = fig_ot_mass(a.run, (lo, hi))
    shape = fig["layout"]["shapes"][0]
    assert (shape["y0"], shape["y1"]) == (lo, hi) and f"{lo}–{hi}" in fig["layout"]["annotations"][0]["text"]
    triggers = [t for p in a.proposals for t in p.rollback_triggers if "pi_diag" in t]
    assert all(f"> {hi}" in t for t in triggers)


def test_no_eval_proposal_beyond_the_run_and_warmup_as_a_multiple(tmp_path):
    rows = [{"step": s, "train/loss": 1.0 / s, "train/lr": 1e-4 * s / 500, "train/update_s": 0.1,
             **({"eval/offline_eval/avg_loss": 0.5, "eval/offline_eval/eval_s": 5.0} if s % 10 == 0 else {})}
            for s in range(1, 21)]
    run = _run(tmp_path / "short", rows, eval_freq=10, log_freq=1,
               scheduler={"type": "diffuser", "name": "cosine", "num_warmup_steps": 500},
               use_policy_training_preset=False)
    found = {f.id: f for f in analyze(str(run), load_rules()).findings}
    freq = found["eval_too_frequent"].changes["eval_freq"]
    assert freq == 20            # the eval share asks for more, but never beyond the run's 20 steps
    text = finding_text("en", found["schedule_mismatch"])
    assert "(25.0× the run's length)" in text


def test_report_warns_a_torn_line_and_writes_next_to_a_log_inside_a_dpot_run(tmp_path, capsys):
    rows = [{"step": s, "train/loss": 1.0 / s} for s in range(1, 11)]
    run = _run(tmp_path / "dpot_run", rows)
    (run / "report.md").write_text("the dpot run's own report\n")
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 11, "train/lo')
    assert dpot_main(["report", str(run)]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "last line is incomplete" in err
    # a TensorBoard log inside the dpot run: its report goes next to the log
    from torch.utils.tensorboard import SummaryWriter

    tb = run / "tensorboard"
    with SummaryWriter(str(tb)) as w:
        for s in range(1, 6):
            w.add_scalar("train/loss", 1.0 / s, s)
    (run / "report.md").write_text("the dpot run's own report\n")
    assert dpot_main(["report", str(tb)]) == 0
    assert (run / "report.md").read_text() == "the dpot run's own report\n"
    assert (tb / "report.md").is_file()


def test_compare_needs_two_runs(tmp_path, capsys):
    run = _run(tmp_path / "one", [{"step": 1, "train/loss": 1.0}])
    assert dpot_main(["compare", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: RUN: dpot compare needs two or more runs") and "dpot report" in err[-1]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_texts_render(tmp_path, lang):
    rows = [{"step": 10 * (i + 1), "train/loss": 1.0, "train/ot_pi_sum": 0.6, "train/ot_pi_diag": 0.05}
            for i in range(30)]
    a = analyze(str(_run(tmp_path / lang, rows)), load_rules())
    assert "n/a" not in finding_text(lang, {f.id: f for f in a.findings}["ot_weak"])
