"""The domain probe: a linear sim-vs-real classifier on the policy's image features, held out by episode."""

from __future__ import annotations

import json

import numpy as np
import pytest
from train_helpers import read_metrics, tiny_config, write_config

from dpot.cli import main as dpot_main
from dpot.data.cotrain import SRC, TGT, EpisodeTable
from dpot.train.domain_probe import linear_probe, probe_items


def test_linear_probe_separates_shifted_features_and_not_identical_ones():
    rng = np.random.default_rng(0)
    n, d = 200, 16
    y = np.repeat([0, 1], n // 2)
    shift = np.zeros(d)
    shift[3] = 1.5
    x = lambda: rng.normal(size=(n, d)) + y[:, None] * shift  # noqa: E731
    far = linear_probe(x(), y, x(), y)
    assert far.accuracy > 0.7 and far.ci95[0] > 0.6 and far.n_test == n
    same = linear_probe(rng.normal(size=(n, d)), y, rng.normal(size=(n, d)), y)
    assert same.ci95[0] < 0.5 < same.ci95[1]


def test_probe_items_are_balanced_and_held_out_by_episode():
    src = EpisodeTable(np.arange(6), np.arange(6) * 40, np.full(6, 40))
    tgt = EpisodeTable(np.arange(4), np.arange(4) * 30, np.full(4, 30))
    fit, test = probe_items(src, tgt, 64, seed=3)
    for side in (fit, test):
        assert [it.domain for it in side] == [SRC] * 32 + [TGT] * 32
    for domain, table in ((SRC, src), (TGT, tgt)):
        eps = [{int(np.searchsorted(table.start, it.index, side="right") - 1) for it in side if it.domain == domain}
               for side in (fit, test)]
        assert eps[0] and eps[1] and not eps[0] & eps[1]
    assert probe_items(src, tgt, 64, seed=3) == (fit, test)


@pytest.mark.slow
def test_training_option_and_command_give_the_same_probe(toy_data, tmp_path, capsys):
    cfg = tiny_config(toy_data, steps=4, save_freq=4, eval={"domain_probe_freq": 2, "domain_probe_frames": 16,
                                                             "val_fraction": 0.0})
    run = tmp_path / "run"
    assert dpot_main(["train", f"--config_path={write_config(tmp_path / 'c.json', cfg)}",
                      f"--output_dir={run}"]) == 0, capsys.readouterr().err
    rows = read_metrics(run)
    probe = {r["step"]: r for r in rows if any(k.startswith("eval/domain_probe/") for k in r)}
    assert sorted(probe) == [0, 2, 4]
    cams = sorted(k.removeprefix("eval/domain_probe/") for k in probe[0]
                  if k.startswith("eval/domain_probe/") and not k.endswith(("_lo", "_hi")))
    assert cams == ["top", "wrist"]
    for r in probe.values():
        for cam in cams:
            k = f"eval/domain_probe/{cam}"
            assert 0 <= r[k + "_lo"] <= r[k] <= r[k + "_hi"] <= 1
    # the command on the saved checkpoint (step 4) and on the rebuilt initial weights (step 0): the logged values
    capsys.readouterr()
    assert dpot_main(["probe", str(run), "--steps", "0,4", "--frames", "16"]) == 0
    saved = json.loads((run / "domain_probe.json").read_text())["steps"]
    for step in (0, 4):
        for cam in cams:
            assert saved[str(step)][cam]["accuracy"] == pytest.approx(probe[step][f"eval/domain_probe/{cam}"])
    assert "step 4: top" in capsys.readouterr().out
    # the probe changes nothing in training: the same losses as a run without it
    plain = tmp_path / "plain"
    cfg["eval"]["domain_probe_freq"] = 0
    assert dpot_main(["train", f"--config_path={write_config(tmp_path / 'p.json', cfg)}",
                      f"--output_dir={plain}"]) == 0
    losses = lambda rows: [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]  # noqa: E731
    assert losses(read_metrics(plain)) == losses(rows)
    capsys.readouterr()
    assert dpot_main(["probe", str(run), "--steps", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --steps: no checkpoint of step 3") and "\n" not in err
