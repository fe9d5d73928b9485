"""The LeRobot OT fork's configs load as they are (issue 20): every fork key mapped or warned about, fork names as
overrides, `dpot config convert` resolving to the same config, term names, the ACT refusal."""

import json
import logging

import pytest
from fork_helpers import fork_config, iter5b

from dpot.config import EmbedFeatureConfig, LabelFeatureConfig, config_to_dict, load_train_config
from dpot.errors import UserError
from dpot.fork_config import FORK_FEATURE_KEYS, FORK_OT_KEYS, translate_fork_config
from dpot.ot.alignment import term_kinds


def _write(tmp_path, cfg, name="fork.json"):
    p = tmp_path / name
    p.write_text(json.dumps(cfg))
    return p


def test_fork_file_maps_onto_dpot_config(tmp_path):
    cfg = load_train_config(_write(tmp_path, fork_config(sharpness=0.5, topk_src_episodes=20, no_window=True,
                                                         cutoff=0.01, base_index_src=1)))
    ot = cfg.ot
    assert cfg.source_dataset.repo_id == "local/sim" and str(cfg.source_dataset.root) == "data/sim"
    assert (ot.lambda_ot, ot.reg, ot.tau_src, ot.tau_tgt, ot.heuristic, ot.batch_ratio, ot.window_size) == (
        0.1, 0.02, 0.01, 0.01, True, 0.5, 20)
    assert (ot.sharpness, ot.topk_src_episodes, ot.no_window, ot.cutoff, ot.pair_base_index_src) == (
        0.5, 20, True, 0.01, 1)
    e_top, e_wrist, lbl = ot.features
    assert isinstance(e_top, EmbedFeatureConfig) and e_top.cameras == ["top"] and e_top.term_name == "img_top"
    assert e_top.weight_embed == 0.5 and e_wrist.cameras == ["wrist"]
    assert isinstance(lbl, LabelFeatureConfig) and (lbl.key, lbl.dim_slice, lbl.weight_label, lbl.term_name) == (
        "action", [0, 8], 0.02, "action_lbl")
    assert cfg.optimizer.lr == 3e-4 and cfg.scheduler.num_warmup_steps == 1000 and not cfg.use_policy_training_preset
    # the fork's term names are the metric names
    assert set(term_kinds(ot.features, ["top", "wrist"])) == {"img_top", "img_wrist", "action_lbl"}


def _leaf_keys(block: dict, prefix="") -> set[str]:
    out = set()
    for k, v in block.items():
        if k == "features":
            out |= {f"{prefix}features[].{fk}" for f in v for fk in f}
        elif isinstance(v, dict):
            out |= _leaf_keys(v, f"{prefix}{k}.")
        out.add(f"{prefix}{k}")
    return out


def test_every_fork_key_is_mapped_or_warned(caplog):
    """A fork key must land in the dpot config or produce a warning naming it; adding a fork key to the
    translation without either makes this fail."""
    raw = fork_config(sharpness=0.5, no_window=True, topk_src_episodes=20, cutoff=0.01, enable=True,
                      pair_info_path="p.json")
    raw["ot"]["loss_config"]["features"][-1]["embed_name"] = "x"
    raw["ot"]["loss_config"]["features"][0]["weight_label"] = 0.3
    with caplog.at_level(logging.WARNING, logger="dpot.fork_config"):
        out, warnings = translate_fork_config(raw)
    assert warnings == [r.getMessage() for r in caplog.records]
    mapped = json.dumps(out)
    fork_ot = raw["ot"]
    for key in _leaf_keys(fork_ot):
        short = key.split(".")[-1]
        if key.startswith("loss_config.features[]."):
            assert short in FORK_FEATURE_KEYS
            continue
        assert key in FORK_OT_KEYS, f"ot.{key} has no row in FORK_OT_KEYS"
        dest = FORK_OT_KEYS[key]
        if dest.startswith(("ot.", "source_dataset.")):
            section, field = dest.split(".", 1)
            assert field in out[section], f"ot.{key} -> {dest} missing in the translation"
            assert out[section][field] == (fork_ot | fork_ot["loss_config"])[short]
        elif key == "batch_ratio":   # the OT pair count and the fork's half-and-half BC batch (fork_batches)
            assert (out["ot"]["pair_batch_size"], out["ot"]["batch_ratio"]) == (8, 8 / 16)
        elif key not in ("enable", "loss_config", "loss_config.features"):
            assert any(f"ot.{key}" in w for w in warnings), f"ot.{key} neither mapped nor warned about"
    assert any("embed_name" in w for w in warnings) and any("features[0].weight_label" in w for w in warnings)
    assert "loss_config" not in mapped and "src_root" not in mapped and "obs_keys" not in mapped
    # every row of the tables is exercised by the config above (a new row needs a test)
    assert {k for k in FORK_OT_KEYS} <= _leaf_keys(fork_ot)


@pytest.mark.parametrize("mutate,expected", [
    (lambda c: c["ot"].update(sharpnes=1.0), "ot.sharpnes: unknown key (did you mean 'sharpness'?)"),
    (lambda c: c["ot"]["loss_config"].update(tau_scr=0.1), "ot.loss_config.tau_scr: unknown key (did you mean "
                                                           "'tau_src'?)"),
    (lambda c: c["ot"]["loss_config"]["features"][0].update(weigth_embed=1),
     "ot.loss_config.features[0].weigth_embed: unknown key (did you mean 'weight_embed'?)"),
    (lambda c: c["ot"]["loss_config"]["features"][-1].update(src_key="observation.state"),
     "ot.loss_config.features[2].src_key: 'observation.state' differs from tgt_key 'action'"),
    (lambda c: c["policy"].update(type="vqbet"), "policy.type: 'vqbet' is not supported by dpot train"),
    (lambda c: c["ot"].update(sharpness=-1), "ot.sharpness: must be >= 0"),
])
def test_bad_fork_config_one_line(tmp_path, mutate, expected):
    raw = fork_config()
    mutate(raw)
    with pytest.raises(UserError) as err:
        load_train_config(_write(tmp_path, raw))
    assert str(err.value).startswith(expected), str(err.value)


def test_fork_off_spellings(tmp_path):
    """The fork reads topk_src_episodes -1 as 'all' and a null sharpness/window as off."""
    cfg = load_train_config(_write(tmp_path, fork_config(topk_src_episodes=-1, sharpness=None, window_size=None)))
    assert (cfg.ot.topk_src_episodes, cfg.ot.sharpness, cfg.ot.window_size) == (None, 0.0, 0)


def test_fork_names_work_as_overrides(tmp_path):
    path = _write(tmp_path, fork_config())
    cfg = load_train_config(path, ["--ot.src_root=/new/sim", "--dataset.root=/new/real", "--ot.loss_config.reg=0.05",
                                   "--ot.base_index_tgt=1", "--ot.enable=true"])
    assert str(cfg.source_dataset.root) == "/new/sim" and str(cfg.dataset.root) == "/new/real"
    assert cfg.ot.reg == 0.05 and cfg.ot.pair_base_index_tgt == 1 and cfg.ot.lambda_ot == 0.1
    assert load_train_config(path, ["--ot.enable=false"]).ot.lambda_ot == 0


def test_camera_renamed_between_domains_becomes_camera_map(tmp_path):
    raw = fork_config()
    raw["ot"]["loss_config"]["features"][0]["src_key"] = "observation.images.sim_top"
    cfg = load_train_config(_write(tmp_path, raw))
    assert cfg.camera_map == {"sim_top": "top"} and cfg.ot.features[0].cameras == ["top"]


def test_config_convert_resolves_to_the_same_config(tmp_path, caplog, capsys):
    from dpot.cli import main as dpot_main

    src = _write(tmp_path, iter5b(fork_config(sharpness=0.5, topk_src_episodes=3)))
    out = tmp_path / "dpot.json"
    with caplog.at_level(logging.WARNING, logger="dpot.fork_config"):
        assert dpot_main(["config", "convert", str(src), str(out)]) == 0
    assert [r.getMessage()[:12] for r in caplog.records] == ["ot.obs_keys="]  # its one warning, once
    converted = json.loads(out.read_text())
    assert "loss_config" not in converted["ot"] and converted["source_dataset"]["root"] == "data/sim"
    assert config_to_dict(load_train_config(out)) == config_to_dict(load_train_config(src))
    cfg = load_train_config(out)
    assert (cfg.ot.heuristic, cfg.ot.tau_src, cfg.ot.features[-1].weight_label) == (False, 0.005, 0.005)
    # a bad input: one line, exit 2, nothing written
    bad = fork_config()
    bad["ot"]["loss_config"]["reg"] = 0
    capsys.readouterr()
    assert dpot_main(["config", "convert", str(_write(tmp_path, bad, "b.json")), str(tmp_path / "never.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ot.reg: must be > 0")
    assert not (tmp_path / "never.json").exists()


def test_lerobot_keys_dpot_does_not_act_on_are_warned(tmp_path, caplog):
    raw = fork_config()
    raw["dataset"]["image_transforms"]["enable"] = True
    raw["wandb"] = {"enable": True, "disable_artifact": False, "project": "p"}
    with caplog.at_level(logging.WARNING, logger="dpot.fork_config"):
        cfg = load_train_config(_write(tmp_path, raw))
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["ot.obs_keys=[\"observation.images.top\", "
                                                                      "\"observation.images.wrist\"] not used",
                                                                      "wandb.disable_artifact=false"]
    assert cfg.dataset.image_transforms.enable and cfg.policy.use_amp is False  # honoured by the trainer


def test_image_transforms_apply_to_training_items_not_to_held_out_ones(toy_data):
    """dataset.image_transforms.enable: LeRobot's ImageTransforms on each camera of the co-training items (as
    LeRobotDataset applies them), off inside without_transforms() (the held-out batches)."""
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.transforms import ImageTransformConfig, ImageTransforms, ImageTransformsConfig

    from dpot.data.cotrain import SRC, TGT, CoTrainDataset, SampledItem

    tf = ImageTransforms(ImageTransformsConfig(enable=True, max_num_transforms=1, tfs={
        "brightness": ImageTransformConfig(type="ColorJitter", kwargs={"brightness": (0.5, 0.5)})}))
    open_ds = lambda root: LeRobotDataset("local/toy", root=root, return_uint8=True)  # noqa: E731
    src_ds, tgt_ds = open_ds(toy_data["src"]), open_ds(toy_data["tgt"])
    keys = ["observation.images.top", "observation.state", "action"]
    plain = CoTrainDataset(src_ds, tgt_ds, camera_map={}, keys=keys)
    aug = CoTrainDataset(src_ds, tgt_ds, camera_map={}, keys=keys, image_transforms=tf)
    for item in (SampledItem(SRC, 3, 0.0), SampledItem(TGT, 5, 0.0)):
        a, b = plain[item]["observation.images.top"], aug[item]["observation.images.top"]
        assert b.dtype == torch.uint8
        expected = (a.float() * 0.5).round()                               # brightness x0.5, exactly
        assert torch.allclose(b.float(), expected, atol=1.0) and not torch.equal(a, b)
        with aug.without_transforms():
            assert torch.equal(aug[item]["observation.images.top"], a)
        assert torch.equal(aug[item]["action"], plain[item]["action"])


def test_autopilot_takes_a_fork_file_as_its_base(tmp_path):
    """The autopilot's base config is the trainer's resolved config, so a fork file works there too."""
    from dpot.autopilot.spec import load_base_config

    base = load_base_config(_write(tmp_path, fork_config(sharpness=2.0)))
    assert base["source_dataset"]["root"] == "data/sim" and base["ot"]["sharpness"] == 2.0
    assert base["ot"]["features"][0]["term_name"] == "img_top" and "loss_config" not in base["ot"]


def test_term_name_renames_every_kind_of_term():
    one = EmbedFeatureConfig(cameras=["top"], term_name="front")
    both = EmbedFeatureConfig(term_name="view")
    concat = EmbedFeatureConfig(concat=True, term_name="z")
    label = LabelFeatureConfig(key="observation.state", term_name="pose")
    assert term_kinds([one, label], ["top", "wrist"]) == {"front": "embed", "pose": "label"}
    assert term_kinds([both], ["top", "wrist"]) == {"view_top": "embed", "view_wrist": "embed"}
    assert term_kinds([concat], ["top", "wrist"]) == {"z": "embed"}
    assert term_kinds([EmbedFeatureConfig(), LabelFeatureConfig()], ["top"]) == {"img_top": "embed",
                                                                                  "action_lbl": "label"}


def test_image_transforms_see_the_stored_frames_before_the_policys_resize():
    """As lerobot-train: the transforms run on the stored frames and the policy resizes after, so the data pipeline
    does not pre-resize to ``resize_shape`` when transforms are on (it does otherwise, to move smaller batches)."""
    from types import SimpleNamespace

    from dpot.train.build import delivery_size

    policy = SimpleNamespace(resize_shape=[96, 96])
    assert delivery_size(policy, None) == (96, 96)
    assert delivery_size(policy, image_transforms=lambda img: img) is None
    assert delivery_size(SimpleNamespace(), None) is None
    assert delivery_size(SimpleNamespace(resize_shape=None), None) is None


@pytest.mark.parametrize("ratio", [0.25, 0.3, 0.5, 0.75])
def test_fork_batches_are_the_fork_loaders_sizes(ratio):
    """The fork's lerobot_train.py: bc_tgt_bs = (B + 1) // 2, bc_src_bs = max(1, B - bc_tgt_bs), OT batch
    max(1, int(B * batch_ratio)); dpot's sampler then draws exactly those counts."""
    from dpot.data.cotrain import split_batch
    from dpot.fork_config import fork_batches

    for b in range(2, 41):
        got = fork_batches(b, ratio)
        bc_tgt = (b + 1) // 2
        bc_src = max(1, b - bc_tgt)
        assert split_batch(b, got["batch_ratio"]) == (bc_src, bc_tgt)
        assert got["pair_batch_size"] == max(1, int(b * ratio))
