"""dp-ot-official inside the trainer: the loader's raw hand positions (not the normalized ones) and the encoder's
whole output (every camera's features + the normalized state the U-Net is conditioned on) reach the cost, which
equals ``0.01 ||z_s - z_t||^2 + 0.05 ||p_s - p_t||^2`` computed by hand on the same batch."""

import copy

import pytest
import torch
from train_helpers import tiny_config, write_config

from dpot.bench.presets import OFFICIAL_OT
from dpot.config import load_train_config
from dpot.policy.diffusion import diffusion_loss_with_features
from dpot.train.batches import prepare_batch
from dpot.train.build import build_run
from dpot.train.loop import domain_features

pytestmark = pytest.mark.slow


def test_official_cost_on_a_real_batch_uses_raw_hand_positions(toy_data, tmp_path):
    ot = copy.deepcopy(OFFICIAL_OT)
    cfg = load_train_config(write_config(tmp_path / "cfg.json", tiny_config(
        toy_data, output_dir=str(tmp_path / "run"), ot=ot, policy={"n_obs_steps": 1})))
    run = build_run(cfg)
    assert run.raw_label_keys == ("observation.state",)
    raw = next(iter(run.loader))
    raw_state = raw["observation.state"].clone()
    batch, meta = prepare_batch(raw, run.preprocessor, run.image_keys, run.raw_label_keys)
    assert torch.equal(meta["raw/observation.state"], raw_state)
    assert not torch.allclose(batch["observation.state"], raw_state)   # the policy sees normalized values
    with torch.no_grad():
        out = diffusion_loss_with_features(run.policy, batch)
    step_out = {"embeds": out.embeds, "action": out.action}
    n = run.n_src
    src = domain_features(run, step_out, meta, slice(0, n), batch)
    tgt = domain_features(run, step_out, meta, slice(n, None), batch)
    terms = run.ot_loss_fn.cost_terms(src, tgt)
    assert set(terms) == {"obs_embed", "state_lbl"}

    def z(rows):
        return torch.cat([*(out.embeds[c][rows].flatten(1) for c in sorted(out.embeds)),
                          batch["observation.state"][rows].flatten(1)], dim=1)

    zs, zt = z(slice(0, n)), z(slice(n, None))
    ps, pt = raw_state[:n, -1, :3], raw_state[n:, -1, :3]
    torch.testing.assert_close(terms["obs_embed"], 0.01 * ((zs[:, None] - zt[None]) ** 2).sum(-1),
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(terms["state_lbl"], 0.05 * ((ps[:, None] - pt[None]) ** 2).sum(-1),
                               rtol=1e-5, atol=1e-8)
