"""``dpot demo`` end to end with toy data and a couple of steps: data, run dir, metrics, checkpoint, printout."""

from __future__ import annotations

import json

import pytest

from dpot.cli import main as dpot_main


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
