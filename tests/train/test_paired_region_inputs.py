"""Input checks of paired-region OT: both datasets must record a region per episode (meta/dpot_bench.json)."""

from __future__ import annotations

import json
import shutil

import pytest
from train_helpers import tiny_config, write_config

from dpot.cli import main as dpot_main
from dpot.config import load_train_config
from dpot.errors import UserError
from dpot.train.inputs import check_inputs


@pytest.fixture
def region_data(toy_data, tmp_path):
    """Copies of the toy datasets; ``write(name, regions)`` records per-episode regions in one of them."""
    roots = {name: tmp_path / name for name in ("src", "tgt")}
    for name, root in roots.items():
        shutil.copytree(toy_data[name], root)

    def write(name, regions):
        eps = [{"episode_index": e, "region": r} for e, r in regions.items()]
        (roots[name] / "meta" / "dpot_bench.json").write_text(json.dumps({"settings": {}, "episodes": eps}))

    return {**roots, "root": tmp_path, "write": write}


def _inputs(data, tmp_path, paired):
    cfg = load_train_config(write_config(tmp_path / "c.json", tiny_config(data, ot={"paired_region": paired})))
    return check_inputs(cfg)


def test_regions_loaded_for_paired_region(region_data, tmp_path):
    region_data["write"]("src", {0: "id", 1: "ood", 2: "id", 3: "ood"})
    region_data["write"]("tgt", {0: "id", 1: "id", 2: "id", 3: "id"})
    inputs = _inputs(region_data, tmp_path, True)
    assert inputs.src_regions == {0: "id", 1: "ood", 2: "id", 3: "ood"}
    assert inputs.tgt_regions == {0: "id", 1: "id", 2: "id", 3: "id"}
    off = _inputs(region_data, tmp_path, False)  # not asked for: not read
    assert off.src_regions is None and off.tgt_regions is None


@pytest.mark.parametrize("src,tgt,needle", [
    (None, {0: "id", 1: "id", 2: "id", 3: "id"}, "src records no per-episode regions"),
    ({0: "id", 1: "ood", 2: "id", 3: "ood"}, None, "tgt records no per-episode regions"),
    ({0: "id", 1: "id", 2: "id", 3: "id"}, {0: "id", 1: "ood", 2: "id", 3: "id"}, "region 'ood'"),
    ({0: "id", 1: "id"}, {0: "id", 1: "id", 2: "id", 3: "id"}, "no region for episodes [2, 3]"),
])
def test_missing_regions_one_line_error(region_data, tmp_path, src, tgt, needle):
    for name, regions in (("src", src), ("tgt", tgt)):
        if regions is not None:
            region_data["write"](name, regions)
    with pytest.raises(UserError) as err:
        _inputs(region_data, tmp_path, True)
    msg = str(err.value)
    assert msg.startswith("ot.paired_region: ") and needle in msg, msg


def test_cli_exits_2_and_writes_nothing(region_data, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.json", tiny_config(region_data, ot={"paired_region": True}))
    rc = dpot_main(["train", f"--config_path={cfg}", f"--output_dir={out}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ot.paired_region: "), err
    assert not out.exists()
