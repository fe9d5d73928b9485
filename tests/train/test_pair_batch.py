"""The separate OT pair batch (``ot.pair_batch_size``): BC over the BC rows only, the OT term over the pairs only.

The fork's and the paper's OT items come from their own dataloader of DTW partner pairs and reach the policy's image
encoder alone; dpot appends them to the batch (one forward pass, one DDP step) and splits the rows.
"""

from __future__ import annotations

import json

import pytest
import torch
from train_helpers import read_metrics, tiny_config, write_config

from dpot.cli import main as dpot_main
from dpot.ot.loss import OTAlignmentLoss

pytestmark = pytest.mark.slow


def _train(toy_data, tmp_path, name: str, ot: dict, capsys) -> list[dict]:
    cfg = tiny_config(toy_data, steps=3, batch_size=4, ot=ot)
    out = tmp_path / name
    assert dpot_main(["train", f"--config_path={write_config(tmp_path / f'{name}.json', cfg)}",
                      f"--output_dir={out}"]) == 0, capsys.readouterr().err
    return read_metrics(out)


def test_bc_rows_are_naive_cotraining_and_the_pairs_alone_make_a_diagonal_plan(toy_data, tmp_path, capsys,
                                                                              monkeypatch):
    pairs = tmp_path / "pairs.json"
    assert dpot_main(["pairs", "build", "--source", str(toy_data["src"]), "--target", str(toy_data["tgt"]),
                      "--label", "state", "--dims", "0:2", "--top-k", "3", "--dtw", "dpot", "--out", str(pairs)]) == 0
    calls = []
    forward = OTAlignmentLoss.forward

    def spy(self, src, tgt):
        calls.append((src, tgt))
        return forward(self, src, tgt)

    monkeypatch.setattr(OTAlignmentLoss, "forward", spy)
    features = [{"type": "embed", "cameras": None, "weight_embed": 0.01, "time_index": -1},
                {"type": "label", "key": "observation.state", "dim_slice": [0, 2], "weight_label": 0.05,
                 "normalized": False, "time_index": -1}]
    faithful = _train(toy_data, tmp_path, "faithful", {
        "lambda_ot": 0.1, "prior": "diagonal", "cost_norm": "none", "pair_info_path": str(pairs), "sharpness": 10.0,
        "cutoff": 0.01, "window_size": 2, "pair_batch_size": 3, "features": features}, capsys)
    assert len(calls) == 3
    for src, tgt in calls:       # 3 pairs per step, every one a partner pair, encoder features of 2 obs steps
        assert len(src) == len(tgt) == 3 and src.mask.all() and tgt.mask.all()
        assert {tuple(v.shape[:2]) for v in src.embeds.values()} == {(3, 2)}
        assert set(src.raw_labels) == {"observation.state"}
    for row in faithful:
        assert row["train/ot_pi_diag"] == row["train/ot_pi_sum"] > 0
        assert row["train/ot_loss"] > 0
    # the same seed, no OT: the BC batch is naive co-training's batch (the pair rows never reach the BC loss; a
    # vanishing lambda_ot keeps the weights on naive co-training's path)
    monkeypatch.setattr(OTAlignmentLoss, "forward", forward)
    tiny = _train(toy_data, tmp_path, "tiny_lambda", {"lambda_ot": 1e-30, "prior": "diagonal", "cost_norm": "none",
                                                      "pair_info_path": str(pairs), "pair_batch_size": 3,
                                                      "features": features}, capsys)
    naive = _train(toy_data, tmp_path, "naive", {"lambda_ot": 0.0, "heuristic": False}, capsys)
    for a, b in zip(tiny, naive, strict=True):
        for key in ("train/bc_loss", "train/bc_loss_src", "train/bc_loss_tgt"):
            assert a[key] == pytest.approx(b[key], rel=1e-6), key
    saved = json.loads((tmp_path / "faithful" / "train_config.json").read_text())["ot"]
    assert saved["pair_batch_size"] == 3
    assert torch.isfinite(torch.tensor([r["train/loss"] for r in faithful])).all()
