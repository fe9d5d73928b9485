"""dpot.rundir: the run directory has one owner (each file name spelled in one module of src/), one launcher for
the autopilot and the study, one place for environment defaults."""

from __future__ import annotations

import ast
import json
import os
import re
import time
from pathlib import Path

from dpot import rundir

SRC = Path(__file__).resolve().parents[1] / "src" / "dpot"

# file name -> the one module allowed to spell it (metrics.jsonl: the metrics format's own module)
OWNER = {name: "rundir.py" for name in (
    "train_config.json", "ot_terms.json", "ot_plans", "checkpoints", "pretrained_model", "training_state",
    "training_step.json", "model.safetensors", "dpot_state.json", "dtw_cache.npz", "report.md", "report.html",
    "report.json", "dtw_pairs.json", "lineage.json")}
OWNER["metrics.jsonl"] = "metrics_log.py"
# an English word too: a name only as a whole literal or next to a "/" ("<run>/checkpoints/<step>")
WORDS = {"checkpoints"}
# generic words: a path component only where joined with `/` (``run / "last"``)
JOINED = {"last": "rundir.py", "logs": "rundir.py", "tensorboard": "rundir.py"}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def spellings(path: Path) -> list[tuple[str, int]]:
    """(run-directory name, line) of every string literal in ``path`` (docstrings aside) that spells one."""
    tree = ast.parse(path.read_text())
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            for name in OWNER:
                pattern = (rf"^{name}$|/{name}(?!\w)|(?<!\w){name}/" if name in WORDS
                           else rf"(?<![\w.]){re.escape(name)}(?!\w)")
                if re.search(pattern, node.value):
                    found.append((name, node.lineno))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            for side in (node.left, node.right):
                if isinstance(side, ast.Constant) and side.value in JOINED:
                    found.append((side.value, node.lineno))
    return found


def test_the_scan_sees_literals_and_joins_but_not_docstrings(tmp_path):
    mod = tmp_path / "m.py"
    mod.write_text('"""writes train_config.json"""\nx = run / "checkpoints" / "last"\ny = f"{run}/ot_terms.json"\n'
                   'z = "a metrics.jsonl line"\nw = {"last": 1}\nv = "keep the checkpoints"\nu = f"{r}/checkpoints"\n')
    assert sorted(spellings(mod)) == [("checkpoints", 2), ("checkpoints", 7), ("last", 2), ("metrics.jsonl", 4),
                                      ("ot_terms.json", 3)]


def test_each_run_directory_name_is_spelled_in_one_module():
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        rel = str(path.relative_to(SRC))
        for name, line in spellings(path):
            if rel != {**OWNER, **JOINED}[name]:
                wrong.append(f"{rel}:{line}: {name}")
    assert not wrong, "run-directory names spelled outside their owner (use dpot.rundir):\n" + "\n".join(wrong)


def test_rundir_is_a_leaf():
    """Every layer may use it: it imports nothing of dpot's but atomic, errors and metrics_log (anywhere in it)."""
    tree = ast.parse((SRC / "rundir.py").read_text())
    mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert {m for m in mods if m.startswith("dpot")} == {"dpot.atomic", "dpot.errors", "dpot.metrics_log"}


def _fake_checkpoint(run: Path, step: int, total: int) -> None:
    state = rundir.checkpoint_dir(run, step, total) / rundir.STATE_DIR
    state.mkdir(parents=True)
    (state / rundir.STEP_FILE).write_text(json.dumps({"step": step}))


def test_launch_train_resumes_from_a_checkpoint_and_starts_over_without_one(tmp_path):
    """The launcher template stands in for the trainer (``true {args}``): what matters here is the command, the
    log header, the resume decision and the clean start."""
    cfg, log = tmp_path / "c.json", tmp_path / "logs" / "r.log"
    run = tmp_path / "run"
    run.mkdir()
    (run / "stale.txt").write_text("a start that saved nothing")
    first = rundir.launch_train(cfg, run, log, launcher="true {args}", who="study")
    assert (first.returncode, first.reason, first.resumed) == (0, "", False) and not run.exists()
    _fake_checkpoint(run, 2, 8)
    second = rundir.launch_train(cfg, run, log, launcher="true {args}", who="study")
    assert second.resumed and second.command[-1].endswith(f"--config_path={cfg} --resume=true")
    headers = [x for x in log.read_text().splitlines() if x.startswith("# study ")]
    assert len(headers) == 2 and " fresh: " in headers[0] and " resumed: " in headers[1]
    assert not log.with_suffix(".pgid").exists()


def test_launch_train_stops_the_run_when_poll_says_so(tmp_path):
    t0 = time.monotonic()
    res = rundir.launch_train(tmp_path / "c.json", tmp_path / "run", tmp_path / "r.log", launcher="sleep 60 # {cmd}",
                              poll=lambda: "budget", interval=0.05)
    assert res.reason == "budget" and res.returncode != 0 and time.monotonic() - t0 < 30


def test_environment_defaults_in_one_place(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    env = rundir.child_env()
    assert env["MUJOCO_GL"] == "osmesa" and env["PYOPENGL_PLATFORM"] == "osmesa"   # a value the user set wins
    assert env["HF_HUB_OFFLINE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(SRC.parent)               # the child runs this dpot
    assert "HF_HUB_OFFLINE" not in os.environ                                      # child_env leaves ours alone
    assert rundir.set_env_defaults({}) == rundir.PROCESS_ENV
