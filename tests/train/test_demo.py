"""``dpot demo`` end to end with toy data and a couple of steps: data, run dir, metrics, checkpoint, printout."""

from __future__ import annotations

import json

import pytest

from dpot.cli import main as dpot_main


@pytest.mark.slow
def test_demo_smoke(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = dpot_main(["demo", f"--output_dir={out}", "--data=toy", "--steps=2", "--batch_size=4", "--num_workers=0",
                   "--report=false"])
    assert rc == 0
    printed = capsys.readouterr().out
    (run,) = list((out / "runs").iterdir())
    assert f"demo: metrics    {run / 'metrics.jsonl'}" in printed
    assert f"demo: checkpoint {run / 'checkpoints' / 'last' / 'pretrained_model'}" in printed
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/offline_eval/avg_loss" in r for r in rows)
    train_rows = [r for r in rows if "train/loss" in r]
    iters = [r["train/ot_sinkhorn_iters"] for r in train_rows]   # the solver's iterations on every logged step
    assert iters and all(0 < it <= 200 for it in iters) and all(r["train/ot_sinkhorn_maxed"] >= 0 for r in train_rows)
    assert f"demo: OT solver  {sum(iters) / len(iters):.0f} iterations per solve (mean; ot.max_iters=200)" in printed
    assert (run / "checkpoints" / "last" / "pretrained_model" / "model.safetensors").is_file()
    assert (out / "data" / "toy_source" / "meta" / "info.json").is_file()


@pytest.mark.slow
def test_demo_runs_act(tmp_path, capsys):
    from lerobot.policies.act.modeling_act import ACTPolicy

    out = tmp_path / "demo"
    assert dpot_main(["demo", f"--output_dir={out}", "--data=toy", "--policy=act", "--steps=2", "--batch_size=4",
                      "--num_workers=0", "--report=false"]) == 0
    (run,) = list((out / "runs").iterdir())
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("train/kld_loss", 0) > 0 and r.get("train/ot_loss", 0) > 0 for r in rows)
    policy = ACTPolicy.from_pretrained(str(run / "checkpoints" / "last" / "pretrained_model"))
    assert policy.config.chunk_size == 16


def test_demo_bad_option(capsys):
    assert dpot_main(["demo", "--stpes=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --stpes")


def test_demo_data_follows_the_papers_protocol(tmp_path, monkeypatch):
    """MetaWorld demo data: 4-d proprio state (goal only in the images), in folders named for it, so that a 7-d
    dataset left by an older demo is never reused."""
    import dpot.bench.generate as generate
    from dpot.demo import make_demo_data

    calls = []

    def record(task, domain, *, episodes, out, obs, **kw):
        calls.append({"task": task, "domain": domain, "episodes": episodes, "out": out, "obs": obs})
        return {"episodes": episodes, "reused": True}

    monkeypatch.setattr(generate, "generate_dataset", record)
    src, tgt, kind = make_demo_data(tmp_path, "metaworld")
    assert kind == "metaworld"
    got = [(c["domain"], c["episodes"], c["obs"]) for c in calls]
    assert got == [("source", 20, "proprio"), ("target", 5, "proprio")]
    assert src["root"] == str(calls[0]["out"]) and tgt["root"] == str(calls[1]["out"])
    assert calls[0]["out"].name.endswith("_source_proprio") and src["repo_id"].endswith("_source")
