"""ACT through dpot: the hook reproduces ACTPolicy.forward's loss, OT gradients reach ACT's backbone, dpot train
runs ACT + OT with per-camera cost terms and saves a plain ACTPolicy; unsupported policy types are refused."""

from __future__ import annotations

import pytest
import torch
from train_helpers import read_metrics, tiny_act_config, tiny_config, write_config

from dpot.cli import main as dpot_main
from dpot.config import load_train_config
from dpot.ot.alignment import DomainFeatures
from dpot.ot.loss import OTAlignmentLoss
from dpot.policy import get_hook
from dpot.policy.act import act_loss_with_features


def _act_and_batch(toy_data, tmp_path, b=6, **policy):
    from lerobot.policies.factory import make_policy

    from dpot.train.inputs import check_inputs

    cfg = load_train_config(write_config(tmp_path / "c.json", tiny_act_config(toy_data, policy=policy)))
    torch.manual_seed(0)
    pol = make_policy(cfg.policy, ds_meta=check_inputs(cfg).tgt_meta)
    g = torch.Generator().manual_seed(1)
    batch = {k: torch.rand(b, 3, 64, 64, generator=g) for k in pol.config.image_features}
    batch["observation.state"] = torch.rand(b, 4, generator=g)
    batch["action"] = torch.rand(b, 8, 4, generator=g) * 2 - 1
    pad = torch.zeros(b, 8, dtype=torch.bool)
    pad[0, 5:] = True  # one chunk runs past its episode's end
    batch["action_is_pad"] = pad
    return cfg, pol, batch


def test_act_hook_matches_lerobot_forward(toy_data, tmp_path, monkeypatch):
    _, policy, batch = _act_and_batch(toy_data, tmp_path, dropout=0.0)
    policy.train()
    eps = torch.randn(6, policy.config.latent_dim, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(torch, "randn_like", lambda x, **_: eps.to(x.dtype))  # LeRobot's latent noise := eps
    ref_loss, ref_dict = policy.forward(dict(batch))
    monkeypatch.undo()
    out = act_loss_with_features(policy, dict(batch), latent_eps=eps, dropout_seed=0)
    torch.testing.assert_close(out.loss, ref_loss)
    assert float(out.extras["l1_loss"]) == pytest.approx(ref_dict["l1_loss"], rel=1e-6)
    assert float(out.extras["kld_loss"]) == pytest.approx(ref_dict["kld_loss"], rel=1e-6)
    assert ref_dict["kld_loss"] > 0  # the VAE term is in the loss being compared
    assert set(out.embeds) == {"top", "wrist"} and out.embeds["top"].shape == (6, policy.config.dim_model)
    assert out.action is not None and out.per_item_loss.shape == (6,)
    # without the pad mask ACT's loss is undefined: refused like LeRobot (KeyError there)
    with pytest.raises(ValueError, match="action_is_pad"):
        act_loss_with_features(policy, {k: v for k, v in batch.items() if k != "action_is_pad"})


def test_act_step_is_a_function_of_seed_and_step(toy_data, tmp_path):
    """Same draws -> same loss (dropout seeded, latent noise given); draws differ from step to step."""
    _, policy, batch = _act_and_batch(toy_data, tmp_path)
    policy.train()
    hook = get_hook("act")
    d0 = hook.step_draws(policy.config, 0, 0, (3, 3, 1, 0))
    a = hook.forward(policy, dict(batch), d0).loss
    torch.manual_seed(99)  # the global RNG does not matter
    b = hook.forward(policy, dict(batch), d0).loss
    assert torch.equal(a, b)
    d1 = hook.step_draws(policy.config, 0, 1, (3, 3, 1, 0))
    assert not torch.equal(d0["latent_eps"], d1["latent_eps"])
    # two processes with half the batch each get the rows of the one-process draw
    r0 = hook.step_draws(policy.config, 0, 0, (2, 2, 2, 0))["latent_eps"]
    r1 = hook.step_draws(policy.config, 0, 0, (2, 2, 2, 1))["latent_eps"]
    full = hook.step_draws(policy.config, 0, 0, (4, 4, 1, 0))["latent_eps"]
    torch.testing.assert_close(torch.cat([r0[:2], r1[:2], r0[2:], r1[2:]]), full, rtol=0, atol=0)


def test_ot_gradient_reaches_act_backbone(toy_data, tmp_path):
    cfg, policy, batch = _act_and_batch(toy_data, tmp_path)
    policy.train()
    out = act_loss_with_features(policy, batch)
    feats = lambda sl: DomainFeatures(embeds={k: v[sl] for k, v in out.embeds.items()},  # noqa: E731
                                      labels={"action": out.action[sl]}, phase=torch.linspace(0, 1, 3))
    res = OTAlignmentLoss(cfg.ot)(feats(slice(0, 3)), feats(slice(3, None)))
    assert res.metrics["ot_skipped"] == 0.0 and res.loss.item() > 0
    res.loss.backward()
    bb = [p.grad for p in policy.model.backbone.parameters() if p.grad is not None]
    assert bb and sum(float(g.abs().sum()) for g in bb) > 0
    proj = policy.model.encoder_img_feat_input_proj.weight.grad
    assert proj is not None and float(proj.abs().sum()) > 0
    # the OT term touches only the image path: the transformer decoder gets no gradient from it
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in policy.model.decoder.parameters())


def test_unsupported_policy_type_is_one_error_line(toy_data, tmp_path, capsys):
    path = write_config(tmp_path / "c.json", tiny_config(toy_data))
    out = tmp_path / "run"
    assert dpot_main(["train", f"--config_path={path}", "--policy.type=vqbet", f"--output_dir={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: policy.type: 'vqbet' is not supported by dpot train; supported types: act, diffusion"]
    assert not out.exists()


@pytest.mark.slow
def test_act_ot_trains_and_saves_a_plain_act_policy(toy_data, tmp_path):
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors

    out = tmp_path / "run"
    cfg = tiny_act_config(toy_data, steps=3, save_freq=3, eval_freq=3)
    assert dpot_main(["train", f"--config_path={write_config(tmp_path / 'c.json', cfg)}",
                      f"--output_dir={out}"]) == 0
    rows = [r for r in read_metrics(out) if "train/loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        for k in ("train/ot_cost/img_top", "train/ot_cost/img_wrist", "train/ot_cost/action_lbl"):
            assert r[k] > 0, k
        assert r["train/ot_loss"] > 0 and r["train/kld_loss"] > 0
        # BC = ACT's loss: L1 + kl_weight * KL (10 by default), the OT term on top
        assert r["train/bc_loss"] == pytest.approx(r["train/l1_loss"] + 10.0 * r["train/kld_loss"], rel=1e-5)
        assert r["train/loss"] == pytest.approx(r["train/bc_loss"] + r["train/ot_loss_scaled"], rel=1e-5)
        assert r["train/ot_loss_scaled"] == pytest.approx(0.1 * r["train/ot_loss"], rel=1e-5)   # fork meaning: before λ
    evals = [r for r in read_metrics(out) if "eval/offline_eval/avg_loss" in r]
    assert len(evals) == 1 and evals[0]["eval/offline_eval/avg_loss"] > 0
    pm = out / "checkpoints" / "last" / "pretrained_model"
    policy = ACTPolicy.from_pretrained(str(pm))
    assert policy.config.pretrained_backbone_weights is None
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(pm))
    obs = {k: torch.rand(1, 3, 64, 64) for k in policy.config.image_features}
    obs["observation.state"] = torch.rand(1, 4)
    assert post(policy.select_action(pre(obs))).shape == (1, 4)
