"""Typed config: JSON + --a.b=c overrides, round trip, and one-line errors through the CLI (exit 2)."""

import json
import logging
import subprocess
import sys

import draccus
import pytest

from benchmarks.config_load import by_parse
from dpot.config import (
    EmbedFeatureConfig,
    LabelFeatureConfig,
    OTConfig,
    config_to_dict,
    load_train_config,
    save_train_config,
)
from dpot.errors import UserError

BASE = {
    "dataset": {"repo_id": "local/real", "root": "data/real"},
    "source_dataset": {"repo_id": "local/sim", "root": "data/sim"},
    "policy": {"type": "diffusion", "pretrained_backbone_weights": None, "down_dims": [64, 128],
               "push_to_hub": False},
    "ot": {"lambda_ot": 0.1, "reg": 0.02, "tau_src": 0.01, "tau_tgt": 0.01, "heuristic": True, "batch_ratio": 0.5,
           "window_size": 20,
           "features": [{"type": "embed", "use_learned_embed": True, "weight_embed": 1.0},
                        {"type": "label", "key": "action", "dim_slice": [0, 8], "weight_label": 0.05}]},
    "batch_size": 16, "steps": 100,
}


def _write(tmp_path, cfg):
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps(cfg))
    return p


def test_seed_keys_load_and_override(tmp_path):
    cfg = load_train_config(_write(tmp_path, BASE), ["--ot.reg=0.01", "--ot.lambda_ot=0.2", "--steps=7"])
    assert (cfg.ot.reg, cfg.ot.lambda_ot, cfg.steps) == (0.01, 0.2, 7)
    assert cfg.ot.features[1].dim_slice == [0, 8] and cfg.ot.features[1].weight_label == 0.05
    assert cfg.policy.type == "diffusion" and tuple(cfg.policy.down_dims) == (64, 128)
    assert cfg.policy.pretrained_backbone_weights is None
    assert cfg.source_dataset.repo_id == "local/sim"


def test_saved_config_loads_back_identically(tmp_path):
    cfg = load_train_config(_write(tmp_path, BASE), ["--ot.tau_tgt=0.02"])
    out = save_train_config(cfg, tmp_path / "run" / "train_config.json")
    again = load_train_config(out)
    assert again.ot == cfg.ot and again.steps == cfg.steps
    assert config_to_dict(again) == config_to_dict(cfg)  # every key survives the round trip
    assert json.loads(out.read_text())["ot"]["tau_tgt"] == 0.02


@pytest.mark.parametrize("policy", [BASE["policy"], {"type": "act", "chunk_size": 8, "n_action_steps": 8}])
@pytest.mark.parametrize("overrides", [
    [],
    ["--steps=7", "--ot.reg=1e-3", "--ot.lambda_ot=0.2", "--seed=3"],                  # scalars, YAML's 1e-3
    ["--eval.val_episodes=[0,1]", "--ot.features=[{\"type\": \"label\", \"key\": \"action\"}]"],  # lists
    ["--ot.heuristic=false", "--ot.prior=none", "--output_dir=out/x", "--dataset.repo_id=local/other"],
    ["--ot.reg=0.5", "--ot.reg=0.05", "--camera_map={\"a\": \"b\"}"],               # the last repeat wins, dicts
    ["--use_policy_training_preset=false", "--optimizer.type=adamw", "--optimizer.lr=3e-4",
     "--scheduler.type=cosine_decay_with_warmup", "--scheduler.num_warmup_steps=10",
     "--scheduler.num_decay_steps=100", "--scheduler.peak_lr=3e-4", "--scheduler.decay_lr=1e-5"],  # choice types
])
def test_overrides_merge_as_draccus_parse_merges_them(tmp_path, policy, overrides):
    """load_train_config merges --a.b=c into the file's JSON itself and decodes (no temp file, no argparse parser):
    the resolved config equals draccus.parse's on the same cleaned file and arguments, types included (the oracle,
    benchmarks/config_load.py's by_parse, is the load path before session 15)."""
    path = _write(tmp_path, {**BASE, "policy": policy})
    ours, oracle = load_train_config(path, overrides), by_parse(path, overrides)
    assert config_to_dict(ours) == config_to_dict(oracle)
    assert type(ours.policy) is type(oracle.policy) and type(ours.optimizer) is type(oracle.optimizer)
    assert [type(f) for f in ours.ot.features] == [type(f) for f in oracle.ot.features]
    assert json.loads(path.read_text())["batch_size"] == BASE["batch_size"]   # the file is not changed


def test_merge_overrides_leaves_the_raw_config_alone():
    from dpot.config import merge_overrides

    raw = {"ot": {"reg": 0.02, "features": [{"type": "embed"}]}, "steps": 5}
    merged = merge_overrides(raw, ["--ot.reg=1e-3", "--ot.lambda_ot=0.3", "--steps=9"])
    assert merged == {"ot": {"reg": "1e-3", "lambda_ot": 0.3, "features": [{"type": "embed"}]}, "steps": 9}
    assert raw == {"ot": {"reg": 0.02, "features": [{"type": "embed"}]}, "steps": 5}


def test_the_ot_section_imports_neither_lerobot_nor_torch():
    """dpot.config.ot is what the pre-check reads before LeRobot's ~6 s of imports; the package's names load lazily."""
    import subprocess
    import sys

    code = ("import sys, dpot.config.ot, dpot.config; from dpot.config import OTConfig; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'lerobot', 'torch'}))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "[]", res.stderr[-500:]


def test_every_cost_term_kind_computes_its_costs():
    """A kind registered in dpot.config.ot has its cost_terms in dpot.ot.feature_costs (else a run fails at step 1)."""
    from dpot.config import OTFeatureConfig
    from dpot.ot.feature_costs import has_cost_terms

    kinds = OTFeatureConfig.get_known_choices()
    assert set(kinds) >= {"embed", "label"}
    assert all(has_cost_terms(cls) for cls in kinds.values()), kinds
    assert not has_cost_terms(OTFeatureConfig)


@pytest.mark.parametrize("mutate,override,expected", [
    (lambda c: c["ot"].update(lamda_ot=1), None, "ot.lamda_ot: unknown key (did you mean 'lambda_ot'?)"),
    (lambda c: c["ot"].update(reg="abc"), None, "ot.reg: expected float"),
    (lambda c: c["ot"].update(reg=0), None, "ot.reg: must be > 0"),
    (lambda c: c["ot"].update(tau_src=-0.1), None, "ot.tau_src: must be >= 0"),
    (lambda c: c["ot"].update(batch_ratio=1.0), None, "ot.batch_ratio: must be in (0, 1)"),
    (lambda c: c["ot"].update(batch_ratio=0.0), None, "ot.batch_ratio: must be in (0, 1)"),
    (lambda c: c["ot"]["features"][1].update(dim_slice=[8, 0]), None, "ot.features[1].dim_slice"),
    (lambda c: c["ot"]["features"][1].update(dim_slice=[-1, 3]), None, "ot.features[1].dim_slice"),
    (lambda c: c["ot"]["features"][0].update(weight_embed=-1), None, "ot.features[0].weight_embed: must be >= 0"),
    (lambda c: c["ot"]["features"][1].update(weight_label=-1), None, "ot.features[1].weight_label: must be >= 0"),
    (lambda c: c["ot"]["features"][0].update(type="embedding"), None, "ot.features[0].type: unknown 'embedding'"),
    (lambda c: c["ot"].update(features=[]), None, "ot.features: is empty while ot.lambda_ot > 0"),
    (lambda c: c["ot"].update(method="mdm"), None, "ot.method: unknown 'mdm' (did you mean 'mmd'?)"),
    (lambda c: c["ot"].update(method="mmd", features=[{"type": "label"}]), None,
     "ot.features: has no embed term while ot.method=\"mmd\""),
    (lambda c: c["policy"].update(type="difusion"), None,
     "policy.type: unknown 'difusion' (did you mean 'diffusion'?)"),
    (lambda c: c.update(batch_size=1), None, "batch_size: must be >= 2"),
    (lambda c: c.update(steps="ten"), None, "steps: expected int"),
    (lambda c: c.pop("source_dataset"), None, "source_dataset: missing"),
    (None, "--ot.lamda=3", "--ot.lamda: unknown key (did you mean 'lambda_ot'?)"),
    (None, "--ot.reg=abc", "ot.reg:"),
])
def test_bad_config_one_line_error(tmp_path, mutate, override, expected):
    cfg = json.loads(json.dumps(BASE))
    if mutate:
        mutate(cfg)
    with pytest.raises(UserError) as err:
        load_train_config(_write(tmp_path, cfg), [override] if override else [])
    assert str(err.value).startswith(expected), str(err.value)
    assert "\n" not in str(err.value)


def test_empty_features_allowed_without_ot(tmp_path):
    cfg = json.loads(json.dumps(BASE))
    cfg["ot"].update(lambda_ot=0.0, features=[])
    assert load_train_config(_write(tmp_path, cfg)).ot.features == []


def test_cli_bad_config_exit_2_one_line_no_traceback(tmp_path):
    cfg = json.loads(json.dumps(BASE))
    cfg["ot"]["tau_tgt"] = -1
    for field in ("dataset", "source_dataset"):   # roots that pass dpot train's path pre-check: the value is the error
        root = tmp_path / field
        (root / "meta").mkdir(parents=True)
        (root / "meta" / "info.json").write_text("{}")
        cfg[field]["root"] = str(root)
    path = _write(tmp_path, cfg)
    proc = subprocess.run([sys.executable, "-m", "dpot", "train", f"--config_path={path}",
                           f"--output_dir={tmp_path / 'out'}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: ot.tau_tgt: must be >= 0"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_cli_missing_config_file_and_unknown_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dpot", "train", f"--config_path={tmp_path / 'nope.json'}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "error: --config_path:" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "dpot", "trian"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "did you mean 'train'" in proc.stderr


def test_policy_defaults_fetch_nothing_and_use_group_norm_unless_given(tmp_path):
    bare = {**BASE, "policy": {"type": "diffusion", "push_to_hub": False}}
    cfg = load_train_config(_write(tmp_path, bare))
    assert cfg.policy.pretrained_backbone_weights is None and cfg.policy.use_group_norm is True
    cfg = load_train_config(_write(tmp_path, bare), ["--policy.use_group_norm=false"])
    assert cfg.policy.use_group_norm is False
    weights = {**bare, "policy": {**bare["policy"], "pretrained_backbone_weights": "ResNet18_Weights.IMAGENET1K_V1"}}
    cfg = load_train_config(_write(tmp_path, weights))      # explicit weights: LeRobot's BatchNorm stays
    assert cfg.policy.pretrained_backbone_weights == "ResNet18_Weights.IMAGENET1K_V1"
    assert cfg.policy.use_group_norm is False


def test_feature_kinds_are_registered_types_with_their_own_fields(tmp_path):
    cfg = load_train_config(_write(tmp_path, BASE))
    embed, label = cfg.ot.features
    assert isinstance(embed, EmbedFeatureConfig) and isinstance(label, LabelFeatureConfig)
    assert (embed.type, label.type) == ("embed", "label")
    assert not hasattr(embed, "dim_slice") and not hasattr(label, "weight_embed")
    saved = config_to_dict(cfg)["ot"]["features"]
    assert saved == [{"type": "embed", "cost_norm": None, "term_name": None, "use_learned_embed": True,
                      "weight_embed": 1.0, "cameras": None, "concat": False, "include_state": False,
                      "time_index": None},
                     {"type": "label", "cost_norm": None, "term_name": None, "key": "action", "dim_slice": [0, 8],
                      "weight_label": 0.05, "time_index": None, "normalized": True}]
    assert draccus.decode(OTConfig, draccus.encode(cfg.ot)) == cfg.ot  # encode/decode round trip
    a_feature_without_type = json.loads(json.dumps(BASE))
    a_feature_without_type["ot"]["features"][0].pop("type")  # "type" defaulted to "embed" before the split
    assert isinstance(load_train_config(_write(tmp_path, a_feature_without_type)).ot.features[0], EmbedFeatureConfig)


def test_config_saved_before_the_feature_split_still_loads(tmp_path, caplog):
    """Saved train_config.json files held every key on every feature; the other kind's keys are dropped."""
    old = json.loads(json.dumps(BASE))
    flat = {"use_learned_embed": True, "weight_embed": 1.0, "cameras": None, "key": "action", "dim_slice": None,
            "weight_label": 0.05}
    old["ot"]["features"] = [{"type": "embed", **flat}, {"type": "label", **flat, "dim_slice": [0, 8]}]
    with caplog.at_level(logging.WARNING, logger="dpot.config"):
        cfg = load_train_config(_write(tmp_path, old))
    assert "ignored" not in caplog.text  # defaults of the other kind: dropped silently
    assert cfg.ot == load_train_config(_write(tmp_path, BASE)).ot
    old["ot"]["features"][0]["weight_label"] = 3.0  # never had an effect on an embed term: said so
    with caplog.at_level(logging.WARNING, logger="dpot.config"):
        cfg = load_train_config(_write(tmp_path, old))
    assert "ot.features[0].weight_label=3.0 ignored" in caplog.text
    assert cfg.ot.features[1].weight_label == 0.05
    old["ot"]["features"][0]["weight_lable"] = 1.0  # a real typo still fails
    with pytest.raises(UserError, match=r"ot.features\[0\].weight_lable: unknown key"):
        load_train_config(_write(tmp_path, old))


def test_train_help_lists_every_dpot_key_with_its_default():
    """`dpot train --help` is generated from the dataclasses: every OT/eval key and feature type is listed."""
    import dataclasses

    from dpot.config import OTConfig, dpot_keys_help

    text = dpot_keys_help()
    for f in dataclasses.fields(OTConfig):
        assert f"--ot.{f.name}=" in text
    for name in ("n_batches", "val_episodes", "val_fraction"):
        assert f"--eval.{name}=" in text
    assert "--ot.reg=0.02" in text and '--ot.method="uot"' in text and "--eval_freq=1000" in text
    lines = {line.split("}: ")[0].split("{")[-1]: line for line in text.splitlines() if "ot.features[]" in line}
    assert "use_learned_embed=true" in lines['"type": "embed"'] and 'key="action"' in lines['"type": "label"']
    assert "term_name=null" in lines['"type": "embed"'] and "term_name=null" in lines['"type": "label"']
    assert "--steps=" not in text  # LeRobot's own keys are referred to, not repeated


def test_the_package_exports_each_module_s_public_names():
    """dpot.config's lazy table names exactly what each of its modules declares public."""
    import importlib

    import dpot.config as package

    for module, names in package._HOME.items():
        assert set(names) == set(importlib.import_module(module).__all__), module
        assert all(getattr(package, n) is getattr(importlib.import_module(module), n) for n in names)
