"""embed_collapse: fires when image cost AND embedding spread shrink together, not when domains merely align."""

from __future__ import annotations

import json

from dpot.analysis import analyze, load_rules


def _run(path, spread_end, cost_end, cost_norm="dim", speed=1.0):
    path.mkdir()
    cfg = {"steps": 400, "batch_size": 8, "log_freq": 10, "eval_freq": 1000, "policy": {"type": "diffusion"},
           "ot": {"lambda_ot": 0.1, "reg": 0.02, "tau_src": 0.01, "tau_tgt": 0.01, "cost_norm": cost_norm,
                  "heuristic": True, "features": [{"type": "embed", "weight_embed": 1.0},
                                                  {"type": "label", "key": "action", "weight_label": 0.05}]}}
    (path / "train_config.json").write_text(json.dumps(cfg))
    with open(path / "metrics.jsonl", "w") as fh:
        for i, step in enumerate(range(10, 410, 10)):
            f = min(1.0, speed * i / 39)  # 0 -> 1 over the run (or its first 1/speed), geometric interpolation
            fh.write(json.dumps({"step": step, "train/loss": 1.0 - 0.5 * f, "train/lr": 1e-4,
                                 "train/ot_cost_mean/img_top": 5e-3 * cost_end ** f,
                                 "train/ot_embed_spread/top": 6e-3 * spread_end ** f,
                                 "train/ot_cost_mean/action_lbl": 2.5e-3,
                                 "train/ot_pi_sum": 0.5, "train/ot_pi_diag": 0.15}) + "\n")
    return path


def _ids(path):
    return {f.id: f for f in analyze(str(path), load_rules()).findings}


def test_collapse_found_with_evidence_and_fix(tmp_path):
    found = _ids(_run(tmp_path / "collapse", spread_end=0.003, cost_end=0.004))
    f = found["embed_collapse"]
    assert f.changes == {"ot.cost_norm": "median"}
    assert f.evidence["cameras"]["top"]["spread_first_last_ratio"][2] < 0.05
    assert "train/ot_embed_spread/top" in f.monitors


def test_alignment_without_shrinking_is_not_collapse(tmp_path):
    assert "embed_collapse" not in _ids(_run(tmp_path / "aligned", spread_end=0.9, cost_end=0.004))


def test_scale_invariant_cost_norm_is_not_judged(tmp_path):
    assert "embed_collapse" not in _ids(_run(tmp_path / "median", spread_end=0.003, cost_end=0.004,
                                             cost_norm="median"))


def test_collapse_within_the_first_tenth_of_the_run_is_found(tmp_path):
    """As in the cpu-small study: the image cost fell 40x within the first 60 of 600 steps, then stayed low."""
    found = _ids(_run(tmp_path / "fast", spread_end=0.01, cost_end=0.01, speed=10.0))
    assert found["embed_collapse"].evidence["cameras"]["top"]["cost_first_last_ratio"][2] < 0.05
