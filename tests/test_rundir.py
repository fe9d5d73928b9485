"""dpot.rundir: the run directory has one owner (each file name spelled in one module of src/), and it launches
nothing (starting a run and the environment defaults: dpot.launch, tests/test_launch.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from source_scan import docstring_ids

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


def spellings(path: Path) -> list[tuple[str, int]]:
    """(run-directory name, line) of every string literal in ``path`` (docstrings aside) that spells one."""
    tree = ast.parse(path.read_text())
    docs = docstring_ids(tree)
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


def test_rundir_launches_nothing():
    """Names, paths and layout only: no process control (that is dpot.launch's), no file removal."""
    tree = ast.parse((SRC / "rundir.py").read_text())
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not mods & {"ctypes", "os", "shlex", "shutil", "signal", "subprocess", "sys", "time"}
