"""Which checkpoint resume picks, whatever moment a kill fell on (file layout only, no training)."""

import json
import os

import pytest

from dpot.errors import UserError
from dpot.train.checkpoint import CKPT_DIR, LAST, last_checkpoint


def _ckpt(root, name):
    d = root / name / "training_state"
    d.mkdir(parents=True)
    (d / "training_step.json").write_text(json.dumps({"step": int(name.split("-")[-1])}))
    return root / name


def test_newest_numbered_checkpoint_wins_when_last_lags_behind(tmp_path):
    root = tmp_path / CKPT_DIR
    _ckpt(root, "000002")
    (root / LAST).symlink_to("000002")
    newest = _ckpt(root, "000004")          # renamed into place, killed before `last` moved
    _ckpt(root, ".tmp-000006")               # half-written: never picked
    assert last_checkpoint(tmp_path) == newest.resolve()
    os.unlink(root / LAST)                   # killed before the first `last` existed
    assert last_checkpoint(tmp_path) == newest.resolve()


def test_no_complete_checkpoint_is_one_user_error(tmp_path):
    with pytest.raises(UserError, match="^resume: no checkpoint in"):
        last_checkpoint(tmp_path)
    (tmp_path / CKPT_DIR / "000002").mkdir(parents=True)   # a numbered dir without its training state
    with pytest.raises(UserError, match="^resume: no checkpoint in"):
        last_checkpoint(tmp_path)
