"""The trainer with paired-region OT (the ot_pair mask reaches the loss and the plan snapshots) and with the MMD
baseline (ot.method=mmd: its metrics, its term kinds, no plan)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from train_helpers import read_metrics, tiny_config, write_config

from dpot.cli import main as dpot_main

pytestmark = pytest.mark.slow  # trains for real (make check leaves it to make test)

REGIONS = {0: "id", 1: "ood", 2: "id", 3: "ood"}


def _with_regions(toy_data, tmp_path) -> dict:
    """Copies of the toy datasets recording a region per episode (meta/dpot_bench.json), as bench generate does."""
    data = {}
    for name in ("src", "tgt"):
        root = tmp_path / name
        shutil.copytree(toy_data[name], root)
        eps = [{"episode_index": e, "region": r} for e, r in REGIONS.items()]
        (root / "meta" / "dpot_bench.json").write_text(json.dumps({"settings": {}, "episodes": eps}))
        data[name] = root
    return data


def test_paired_region_plan_couples_partners_of_the_same_region(toy_data, tmp_path):
    # batch 5 at ratio 0.6: 3 source slots drawn over all episodes; a target item's partner takes a slot of its
    # region; slots left over stay out of the OT term (ot_skipped = 1 on a step where no slot matched)
    cfg = tiny_config(_with_regions(toy_data, tmp_path), steps=4, batch_size=5,
                      ot={"lambda_ot": 0.1, "batch_ratio": 0.6, "paired_region": True, "plan_log_every": 1})
    out = tmp_path / "out"
    assert dpot_main(["train", f"--config_path={write_config(tmp_path / 'c.json', cfg)}",
                      f"--output_dir={out}"]) == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    planned = 0
    for r in rows:
        path = out / "ot_plans" / f"step_{r['step']:06d}.npz"
        assert path.exists() == (r["train/ot_skipped"] == 0.0)
        if not path.exists():
            continue
        with np.load(path) as d:
            snap = dict(d)
        planned += 1
        assert snap["tgt_episode"].shape == (2,) and snap["plan"].shape == (len(snap["src_episode"]), 2)
        assert 1 <= len(snap["src_episode"]) <= 2                  # at most one partner per target item
        assert {REGIONS[int(e)] for e in snap["src_episode"]} <= {REGIONS[int(e)] for e in snap["tgt_episode"]}
        assert float(snap["plan"].sum()) > 0
    assert planned >= 2


def test_mmd_baseline_logs_its_terms_and_saves_no_plan(toy_data, tmp_path):
    cfg = tiny_config(toy_data, steps=2, ot={"lambda_ot": 0.1, "method": "mmd", "plan_log_every": 1})
    out = tmp_path / "out"
    assert dpot_main(["train", f"--config_path={write_config(tmp_path / 'c.json', cfg)}",
                      f"--output_dir={out}"]) == 0
    assert json.loads((out / "ot_terms.json").read_text()) == {"terms": {"img_top": "embed", "img_wrist": "embed"}}
    for r in read_metrics(out):
        assert r["train/ot_loss"] > 0 and r["train/mmd/img_top"] > 0 and "train/mmd/img_wrist" in r
        assert r["train/loss"] > r["train/bc_loss"] and "train/ot_pi_sum" not in r
    assert not (out / "ot_plans").exists()  # MMD has no plan
