"""Readers: aliases, the four RUN kinds, partial files and bad input (exit 2, one line)."""

from __future__ import annotations

import glob
import json
import shutil
from pathlib import Path

import pytest
from runmaker import dpot_cli

from dpot.analysis import open_run
from dpot.analysis.aliases import canonical_key
from dpot.errors import UserError


@pytest.mark.parametrize("raw,canon", [
    ("ot_pi_diag", "train/ot_pi_diag"), ("train/ot_ot_pi_diag", "train/ot_pi_diag"),
    ("eval/avg_loss", "eval/offline_eval/avg_loss"), ("eval/offline_eval/avg_loss", "eval/offline_eval/avg_loss"),
    ("eval/eval_loss", "eval/offline_eval/avg_loss"), ("train/ot_ot_cost/img_top", "train/ot_cost/img_top"),
    ("ot_cost_mean/action_lbl", "train/ot_cost_mean/action_lbl"), ("grad_norm", "train/grad_norm"),
    ("train/samples", "train/samples")])
def test_aliases(raw, canon):
    assert canonical_key(raw) == canon


def test_still_writing_run_is_read_up_to_last_complete_record(gen_runs):
    run = open_run(str(gen_runs["still_writing"]))
    assert run.last_step == 12000
    assert any("incomplete" in n for n in run.notes)


def test_corrupt_middle_line_is_a_user_error(gen_runs, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(gen_runs["healthy"], d)
    lines = (d / "metrics.jsonl").read_text().splitlines()
    lines[3] = lines[3][:20]
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match="line 4"):
        open_run(str(d))


def test_wandb_offline_file_and_truncation(real_runs, tmp_path):
    wfile = Path(glob.glob(str(real_runs["healthy"] / "wandb" / "offline-run-*" / "run-*.wandb"))[0])
    full = open_run(str(wfile.parent))
    assert full.kind == "wandb-offline" and full.last_step == 8
    assert full.config["policy"]["type"] == "diffusion"
    data = wfile.read_bytes()
    # cut in the middle: the complete records before the cut are read, with a note
    cut = tmp_path / "cut" / wfile.name
    cut.parent.mkdir()
    cut.write_bytes(data[: int(len(data) * 0.8)])
    part = open_run(str(cut.parent))
    assert 0 < part.last_step <= 8 and any("mid-record" in n or "exit record" in n for n in part.notes)
    # cut inside the header / before any history: exit 2, one line
    tiny = tmp_path / "tiny" / wfile.name
    tiny.parent.mkdir()
    tiny.write_bytes(data[:5])
    r = dpot_cli("report", str(tiny.parent), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    assert not (tmp_path / "o" / "report.md").exists()


def test_tensorboard_dir_with_seed_key_variants(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path / "tb"))
    for step in range(1, 21):
        w.add_scalar("train/loss", 1.0 / step, step)
        w.add_scalar("train/ot_ot_pi_diag", 0.05, step)
        w.add_scalar("eval/avg_loss", 0.5 / step, step)
    w.close()
    run = open_run(str(tmp_path / "tb"))
    assert run.kind == "tensorboard"
    assert run.history["train/ot_pi_diag"][-1] == (20, pytest.approx(0.05))
    assert run.sources["eval/offline_eval/avg_loss"] == "eval/avg_loss"
    r = dpot_cli("report", str(tmp_path / "tb"), "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert "train/l1_loss: not logged (seen: eval/avg_loss, train/loss, train/ot_ot_pi_diag)" in r.stdout


@pytest.mark.parametrize("case", ["not_a_run", "no_metrics", "missing", "wandb_no_key"])
def test_bad_input_exit_2_one_line(case, tmp_path):
    env = {}
    if case == "not_a_run":
        (tmp_path / "x").mkdir()
        (tmp_path / "x" / "notes.txt").write_text("hi")
        spec = str(tmp_path / "x")
    elif case == "no_metrics":
        (tmp_path / "x").mkdir()
        (tmp_path / "x" / "metrics.jsonl").write_text("")
        (tmp_path / "x" / "train_config.json").write_text("{}")
        spec = str(tmp_path / "x")
    elif case == "missing":
        spec = str(tmp_path / "nope")
    else:
        spec = "someone/some-project/abc123"
        env = {"WANDB_API_KEY": "", "HOME": str(tmp_path), "NETRC": str(tmp_path / "netrc")}
    for cmd in (["report", spec], ["propose", spec, "--out", str(tmp_path / "p")], ["compare", spec]):
        r = dpot_cli(*cmd, cwd=tmp_path, env=env)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
        assert "Traceback" not in r.stderr


def test_wandb_online_reads_through_api(monkeypatch):
    """The online reader pages through ``scan_history`` and keeps every key (fake Api, no network)."""
    import wandb

    rows = [{"_step": s, "train/loss": 1.0 / s, "train/ot_ot_pi_diag": 0.2} for s in range(1, 2501)]

    class FakeRun:
        config = {"steps": {"value": 2500}, "policy": {"type": "diffusion"},
                  "dpot_ot_terms": {"value": {"img_top": "embed", "action_lbl": "label"}}}
        summary = {"train/loss": 0.0004, "_runtime": 3}

        def scan_history(self, page_size=1000):
            yield from rows

    class FakeApi:
        def __init__(self, timeout=None):
            pass

        def run(self, path):
            assert path == "ent/proj/abc"
            return FakeRun()

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setattr(wandb, "Api", FakeApi)
    run = open_run("ent/proj/abc")
    assert run.kind == "wandb-online" and run.config["steps"] == 2500
    # the recorded term kinds are read, and kept out of the train config (a proposal must stay loadable)
    assert run.term_kinds == {"img_top": "embed", "action_lbl": "label"} and "dpot_ot_terms" not in run.config
    assert len(run.history["train/loss"]) == 2500 and run.history["train/ot_pi_diag"][0] == (1, 0.2)
    assert json.dumps(run.summary)


def _tb_run(log_dir: Path, steps: int) -> None:
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(log_dir))
    for step in range(1, steps + 1):
        w.add_scalar("train/loss", 1.0 / step, step)
    w.close()


def _wandb_offline_run(output_dir: Path, run_id: str) -> None:
    """The layout of a W&B offline run (the folder is what the refusal reads; the record file stays empty)."""
    d = output_dir / "wandb" / f"offline-run-20260101_000000-{run_id}"
    d.mkdir(parents=True)
    (d / f"run-{run_id}.wandb").write_bytes(b"")


@pytest.mark.parametrize("case", ["tensorboard_x2", "wandb_offline_x2", "mix"])
def test_a_folder_holding_several_runs_is_refused_with_the_runs_listed(case, tmp_path):
    """Never merged (two TensorBoard runs' curves mixed), never one picked silently (W&B): one ``error:`` line that
    lists what is there, exit 2, nothing written, for report, compare and propose alike."""
    folder = tmp_path / "runs"
    if case == "tensorboard_x2":
        _tb_run(folder / "a", 20)
        _tb_run(folder / "b", 8)
        listed = ["tensorboard a", "tensorboard b"]
    elif case == "wandb_offline_x2":
        _wandb_offline_run(folder, "aaa111")
        _wandb_offline_run(folder, "bbb222")
        listed = [f"wandb-offline wandb/offline-run-20260101_000000-{i}" for i in ("aaa111", "bbb222")]
    else:
        _tb_run(folder / "tb", 4)
        _wandb_offline_run(folder / "lerobot", "ccc333")
        (folder / "dpot").mkdir()
        (folder / "dpot" / "metrics.jsonl").write_text('{"step": 1, "train/loss": 1.0}\n')
        _tb_run(folder / "dpot" / "tensorboard", 1)              # part of the dpot run, not a run of its own
        listed = ["dpot dpot", "wandb-offline lerobot/wandb/offline-run-20260101_000000-ccc333", "tensorboard tb"]
    before = sorted(p for p in folder.rglob("*"))
    for cmd in (["report", str(folder), "--out", str(tmp_path / "o")], ["compare", str(folder), str(folder)],
                ["propose", str(folder), "--out", str(tmp_path / "p")]):
        r = dpot_cli(*cmd, cwd=tmp_path)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and not r.stdout, r.stderr
        assert f"holds {len(listed)} runs ({', '.join(listed)})" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "p").exists()
    assert sorted(p for p in folder.rglob("*")) == before


def test_a_folder_holding_one_nested_dpot_run_names_it(tmp_path):
    (tmp_path / "out" / "run1").mkdir(parents=True)
    (tmp_path / "out" / "run1" / "metrics.jsonl").write_text('{"step": 1, "train/loss": 1.0}\n')
    with pytest.raises(UserError, match=r"holds one run \(dpot run1\): pass that"):
        open_run(str(tmp_path / "out"))
    resumed = tmp_path / "resumed"                    # one W&B run in two folders (a resume): one run, read
    for stamp in ("20260101_000000", "20260102_000000"):
        d = resumed / "wandb" / f"offline-run-{stamp}-abc"
        d.mkdir(parents=True)
        (d / "run-abc.wandb").write_bytes(b"")
    from dpot.analysis.readers import detect_kind, runs_in

    assert [k for k, _ in runs_in(resumed)] == ["wandb-offline"] and detect_kind(str(resumed)) == "wandb-offline"
