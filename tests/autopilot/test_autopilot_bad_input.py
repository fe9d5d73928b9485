"""Bad input: one ``error:`` line, exit 2, nothing written (the ``dpot`` entry point, in-process)."""

from __future__ import annotations

import socket

import pytest
from aphelpers import base_config

from dpot.cli import main


def _run(capsys, *args: str) -> tuple[int, str]:
    rc = main(["autopilot", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return rc, err[0]


def test_invalid_base_config(toy, tmp_path, capsys):
    cfg = base_config(toy, tmp_path / "base.json", ot={"lamda_ot": 0.1})
    rc, err = _run(capsys, "--config_path", str(cfg), "--out", str(tmp_path / "s"))
    assert rc == 2 and err.startswith("error: --config_path: invalid base config: ot.lamda_ot")
    assert not (tmp_path / "s").exists()
    rc, err = _run(capsys, "--config_path", str(tmp_path / "none.json"), "--out", str(tmp_path / "s"))
    assert rc == 2 and err == (f"error: --config_path: invalid base config: {tmp_path / 'none.json'} does not exist; "
                               "give the path of a JSON config file")      # the flag named once
    assert not (tmp_path / "s").exists()


def test_eval_objective_without_eval(toy, tmp_path, capsys):
    cfg = base_config(toy, tmp_path / "base.json", eval_freq=0)
    rc, err = _run(capsys, "--config_path", str(cfg), "--out", str(tmp_path / "s"))
    assert rc == 2 and err.startswith("error: --objective: eval/offline_eval/avg_loss") and "eval_freq" in err
    assert not (tmp_path / "s").exists()


def test_bench_objective_needs_bench_data(toy, tmp_path, capsys):
    cfg = base_config(toy, tmp_path / "base.json")
    rc, err = _run(capsys, "--config_path", str(cfg), "--out", str(tmp_path / "s"), "--objective", "bench:push-v3")
    assert rc == 2 and err.startswith("error: --objective: bench:push-v3") and "dpot bench generate" in err
    assert not (tmp_path / "s").exists()


def test_unreachable_storage(toy, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                     # closed again: nothing listens there
    cfg = base_config(toy, tmp_path / "base.json")
    rc, err = _run(capsys, "--config_path", str(cfg), "--out", str(tmp_path / "s"), "--storage",
                   f"postgresql+psycopg2://nobody:secret@127.0.0.1:{port}/nodb")
    assert rc == 2 and err.startswith("error: --storage: cannot open postgresql+psycopg2://nobody:***@")
    assert "secret" not in err
    assert not (tmp_path / "s").exists()


def test_out_dir_with_other_files(toy, tmp_path, capsys):
    cfg = base_config(toy, tmp_path / "base.json")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "notes.txt").write_text("mine")
    rc, err = _run(capsys, "--config_path", str(cfg), "--out", str(tmp_path / "s"))
    assert rc == 2 and err.startswith("error: --out:") and "does not hold" in err
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("args, field", [
    (["--launcher", "srun"], "--launcher"),
    (["--launcher", "srun {command}"], "--launcher"),
    (["--objective", "bench:re ach"], "--objective"),
    (["--objective", "bench:reach:min"], "--objective"),
    (["--candidates", "0"], "--candidates"),
    (["--iterations", "x"], "dpot autopilot"),
])
def test_bad_arguments(tmp_path, capsys, args, field):
    rc, err = _run(capsys, "--config_path", str(tmp_path / "none.json"), "--out", str(tmp_path / "s"), *args)
    assert rc == 2 and err.startswith(f"error: {field}")
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_objective_not_logged_lists_the_logged_metrics(toy, tmp_path, capsys):
    cfg = base_config(toy, tmp_path / "base.json", steps=2, eval_freq=2)
    out = tmp_path / "s"
    rc, err = _run(capsys, "--config_path", str(cfg), "--out", str(out), "--objective", "train/not_a_metric",
                   "--quiet")
    assert rc == 2 and err.startswith("error: --objective: train/not_a_metric is not logged by the runs")
    assert "train/loss" in err and "eval/offline_eval/avg_loss" in err
    assert not out.exists()                           # the search it started is removed


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["autopilot", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--config_path", "--out", "--iterations", "--candidates", "--steps", "--objective", "--storage",
                "--launcher", "--rules", "--no_explore"):
        assert opt in text
