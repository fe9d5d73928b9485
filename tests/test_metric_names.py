"""dpot.metric_names: the OT term's metric keys are spelled in one module of src/ (readers and producers import the
names), and its term-name helpers say what the trainer's default names say."""

from __future__ import annotations

import ast
from pathlib import Path

from dpot import metric_names as mn
from source_scan import docstring_ids

SRC = Path(__file__).resolve().parents[1] / "src" / "dpot"
SPELLING = "train/ot_"
OWNER = "metric_names.py"
# every module takes the names from metric_names (nothing is left to migrate)
OWNED_ELSEWHERE: set[str] = set()


def spellings(path: Path) -> list[int]:
    """Lines of the string literals in ``path`` (docstrings aside; f-strings' literal parts included) that spell a
    ``train/ot_`` key."""
    tree = ast.parse(path.read_text())
    docs = docstring_ids(tree)
    return sorted({node.lineno for node in ast.walk(tree) if isinstance(node, ast.Constant)
                   and isinstance(node.value, str) and SPELLING in node.value and id(node) not in docs})


def test_the_scan_sees_literals_and_f_strings_but_not_docstrings_or_comments(tmp_path):
    mod = tmp_path / "m.py"
    mod.write_text('"""reads ``train/ot_pi_diag``"""\nx = "train/ot_loss"  # train/ot_skipped\n'
                   "y = f'train/ot_embed_spread/{cam}'\nz = r'^train/ot_cost/(.+)$'\n"
                   'def f():\n    """train/ot_pi_sum"""\n    return "train/loss"\n')
    assert spellings(mod) == [2, 3, 4]


def test_ot_metric_keys_are_spelled_in_metric_names_only():
    wrong, owned = [], set()
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        lines = spellings(path)
        if not lines or rel == OWNER:
            continue
        if rel in OWNED_ELSEWHERE:
            owned.add(rel)
            continue
        wrong += [f"{rel}:{line}" for line in lines]
    assert not wrong, (f"'{SPELLING}...' keys spelled outside dpot/{OWNER} (use its names: mn.train(mn.OT_PI_SUM), "
                       "mn.cost_key(term), ...):\n" + "\n".join(wrong))
    assert owned == OWNED_ELSEWHERE, f"spell no key any more, delete from OWNED_ELSEWHERE: {OWNED_ELSEWHERE - owned}"


def test_default_term_names_say_their_kind():
    assert mn.image_term("top") == "img_top" and mn.label_term("action") == "action_lbl"
    assert mn.term_camera(mn.image_term("wrist")) == "wrist" and mn.term_camera("obs_embed") == "obs_embed"
    assert [mn.kind_by_name(t) for t in ("img_top", "action_lbl", "obs_embed")] == ["embed", "label", None]
    assert mn.train(mn.embed_spread_key("top")) == "train/ot_embed_spread/top"
    names = [mn.OT_LOSS, mn.OT_LOSS_SCALED, mn.OT_PI_SUM, mn.OT_PI_DIAG, mn.OT_PI_DIAG_FRAC, mn.OT_SKIPPED,
             mn.OT_PI_PAIR_CV, mn.OT_SINKHORN_ITERS, mn.OT_SINKHORN_MAXED, mn.COST, mn.COST_PLAN, mn.EMBED_SPREAD]
    assert all(n.startswith(mn.OT_PREFIX) for n in names)
    assert all(n.startswith(mn.COST_STEM) for n in (mn.COST, mn.COST_PLAN, mn.LEGACY_COST_MEAN))
