"""Which checkpoint resume picks, whatever moment a kill fell on; when a run counts as finished (file layout
only, no training)."""

import json
import os

import pytest

from dpot import rundir
from dpot.errors import UserError
from dpot.train.checkpoint import resume_checkpoint


def _ckpt(root, name):
    d = root / name / rundir.STATE_DIR
    d.mkdir(parents=True)
    (d / rundir.STEP_FILE).write_text(json.dumps({"step": int(name.split("-")[-1])}))
    return root / name


def test_newest_numbered_checkpoint_wins_when_last_lags_behind(tmp_path):
    root = rundir.checkpoints_root(tmp_path)
    _ckpt(root, "000002")
    (root / rundir.LAST_LINK).symlink_to("000002")
    newest = _ckpt(root, "000004")          # renamed into place, killed before `last` moved
    _ckpt(root, ".tmp-000006")               # half-written: never picked
    assert rundir.last_checkpoint(tmp_path) == resume_checkpoint(tmp_path) == newest.resolve()
    assert rundir.checkpoint_steps(tmp_path) == [2, 4]
    os.unlink(root / rundir.LAST_LINK)       # killed before the first `last` existed
    assert rundir.last_checkpoint(tmp_path) == resume_checkpoint(tmp_path) == newest.resolve()


def test_no_complete_checkpoint_is_one_user_error(tmp_path):
    assert rundir.last_checkpoint(tmp_path) is None and rundir.checkpoint_steps(tmp_path) == []
    with pytest.raises(UserError, match="^resume: no checkpoint in"):
        resume_checkpoint(tmp_path)
    (rundir.checkpoints_root(tmp_path) / "000002").mkdir(parents=True)   # a numbered dir without its training state
    assert rundir.last_checkpoint(tmp_path) is None and not rundir.is_finished(tmp_path, 2)
    with pytest.raises(UserError, match="^resume: no checkpoint in"):
        resume_checkpoint(tmp_path)


def test_finished_means_a_complete_checkpoint_at_the_budget_or_later(tmp_path):
    root = rundir.checkpoints_root(tmp_path)
    _ckpt(root, rundir.checkpoint_name(2, 8))
    assert not rundir.is_finished(tmp_path, 8) and rundir.is_finished(tmp_path, 2)
    _ckpt(root, rundir.checkpoint_name(8, 8))
    assert rundir.is_finished(tmp_path, 8) and rundir.is_finished(tmp_path, 4)


def test_one_width_rule_for_checkpoint_folders(tmp_path):
    assert rundir.checkpoint_name(2, 8) == "000002"
    assert rundir.checkpoint_name(2, 1_000_000) == "0000002"      # wider than 6 digits: the run's step count
    assert rundir.checkpoint_dir(tmp_path, 12, 100) == tmp_path / rundir.CHECKPOINTS_DIR / "000012"
    assert rundir.bench_result_path(tmp_path, "push-v3", 4, 8).name == "bench_push-v3_000004.json"
