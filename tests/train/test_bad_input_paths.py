"""Bad input gets one line, exit 2, nothing written (issue 34): learning rates <= 0 wherever an LR is set, output
locations checked before any work (a file where a directory goes, a path under a file, an unwritable parent), and
overrides that compose (a choice type and its fields in one command; one list element by index)."""

from __future__ import annotations

import json
import os

import pytest

from dpot.atomic import check_output_location
from dpot.cli import main as dpot_main
from dpot.config import load_train_config
from dpot.errors import UserError

BASE = {"dataset": {"repo_id": "local/real", "root": "data/real"},
        "source_dataset": {"repo_id": "local/sim", "root": "data/sim"},
        "policy": {"type": "diffusion", "device": "cpu", "push_to_hub": False}, "steps": 10}


def _write(tmp_path, cfg: dict) -> str:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return str(path)


@pytest.mark.parametrize("override, field", [
    ("--policy.optimizer_lr=-0.001", "policy.optimizer_lr"),
    ("--policy.optimizer_lr=0", "policy.optimizer_lr"),
    ("--optimizer.lr=-1", "optimizer.lr"),
])
def test_a_learning_rate_at_or_below_zero_is_one_error(tmp_path, override, field):
    cfg = dict(BASE)
    if override.startswith("--optimizer."):
        cfg = {**cfg, "use_policy_training_preset": False, "optimizer": {"type": "adamw", "lr": 1e-4},
               "scheduler": {"type": "diffuser", "name": "cosine", "num_warmup_steps": 10}}
    with pytest.raises(UserError) as err:
        load_train_config(_write(tmp_path, cfg), [override])
    assert str(err.value).startswith(f"{field}: must be > 0") and "\n" not in str(err.value)


def test_act_backbone_lr_is_checked_too(tmp_path):
    cfg = {**BASE, "policy": {"type": "act", "device": "cpu", "push_to_hub": False}}
    with pytest.raises(UserError, match=r"^policy.optimizer_lr_backbone: must be > 0"):
        load_train_config(_write(tmp_path, cfg), ["--policy.optimizer_lr_backbone=-1e-5"])


def test_output_locations(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(UserError, match="is a file; give a directory path"):
        check_output_location(a_file, "output_dir", directory=True)
    with pytest.raises(UserError, match="lies under .*a_file, which is a file"):
        check_output_location(a_file / "sub" / "out.json", "--out", directory=False)
    with pytest.raises(UserError, match="is a directory; give a file path"):
        check_output_location(tmp_path, "OUT", directory=False)
    assert check_output_location(tmp_path / "new" / "deeper", "output_dir", directory=True) == tmp_path / "new" / \
        "deeper"
    assert not (tmp_path / "new").exists()                  # checks create nothing
    if os.geteuid() != 0:                                   # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(UserError, match="permission denied"):
            check_output_location(locked / "x.json", "--out", directory=False)


@pytest.mark.parametrize("argv, prefix", [
    (["pairs", "build", "--source", "S", "--target", "T", "--top-k", "3", "--out", "{f}/pairs.json"], "error: --out:"),
    (["config", "convert", "{cfg}", "{f}/out.json"], "error: OUT:"),
    (["train", "--config_path={cfg}", "--output_dir={f}"], "error: output_dir:"),
])
def test_commands_check_their_output_first(tmp_path, capsys, argv, prefix):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cfg = _write(tmp_path, BASE)
    argv = [a.format(f=a_file, cfg=cfg) for a in argv]
    assert dpot_main(argv) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error")]
    assert len(err) == 1 and err[0].startswith(prefix), err
    assert a_file.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "cfg.json"]


def test_a_choice_type_and_its_fields_compose_in_one_command(tmp_path):
    cfg = load_train_config(_write(tmp_path, BASE), ["--use_policy_training_preset=false", "--optimizer.type=adamw",
                                                      "--optimizer.lr=1e-4", "--scheduler.type=diffuser",
                                                      "--scheduler.num_warmup_steps=0"])
    assert type(cfg.scheduler).__name__ == "DiffuserSchedulerConfig" and cfg.scheduler.num_warmup_steps == 0


def test_one_list_element_is_overridden_by_index(tmp_path):
    cfg = {**BASE, "ot": {"features": [{"type": "embed"}, {"type": "label", "key": "action", "dim_slice": [0, 8]}]}}
    path = _write(tmp_path, cfg)
    loaded = load_train_config(path, ["--ot.features[1].dim_slice=[0,4]", "--ot.features[0].weight_embed=0.5"])
    assert loaded.ot.features[1].dim_slice == [0, 4] and loaded.ot.features[0].weight_embed == 0.5
    with pytest.raises(UserError, match=r"^--ot.features\[5\]: ot.features has 2 element\(s\)"):
        load_train_config(path, ["--ot.features[5].dim_slice=[0,4]"])
    with pytest.raises(UserError, match=r"^ot.features\[1\].dim_slise: unknown key \(did you mean 'dim_slice'\?\)"):
        load_train_config(path, ["--ot.features[1].dim_slise=[0,4]"])
    with pytest.raises(UserError, match=r"^--ot.features\[0\]: ot.features is not a list in the config file; give "):
        load_train_config(_write(tmp_path, BASE), ["--ot.features[0].weight_embed=0.5"])


def test_light_mistakes_are_caught_before_lerobot_is_imported(tmp_path):
    """dpot train's pre-check (dpot.train.precheck) answers these without LeRobot's ~5 s of imports: the same error
    lines the full load gives (benchmarks/config_errors.py times them), dpot's own ot section included."""
    import subprocess
    import sys

    (tmp_path / "a_file").write_text("x")
    cfg = _write(tmp_path, BASE)
    probe = ("import sys\nfrom dpot.cli import main\nrc = main(sys.argv[1:])\n"
             "print('LEROBOT' if any(m.startswith('lerobot') for m in sys.modules) else 'LIGHT', rc)")
    for extra, line in ((["--policy.optimizer_lr=-1"], "error: policy.optimizer_lr: must be > 0"),
                        (["--output_dir=a_file"], "error: output_dir: a_file is a file"),
                        (["--dataset.root=data/none"], "error: dataset.root: data/none does not exist"),
                        (["--ot.loss_config.reg=0.1", "--optimizer.lr=0"], "error: optimizer.lr: must be > 0"),
                        (["--ot.regg=0.1"], "error: --ot.regg: unknown key (did you mean 'reg'?)"),
                        (["--ot.reg=0"], "error: ot.reg: must be > 0 (entropic regularization)"),
                        (["--ot.prior=diagonal", "--ot.heuristic=false"], "error: ot.prior: diagonal puts the plan")):
        res = subprocess.run([sys.executable, "-c", probe, "train", f"--config_path={cfg}", *extra], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
        assert res.stdout.split() == ["LIGHT", "2"], (extra, res.stdout, res.stderr[-500:])
        assert res.stderr.strip().splitlines()[-1].startswith(line), res.stderr


def test_an_unknown_policy_type_names_the_near_one(tmp_path):
    with pytest.raises(UserError, match=r"^policy.type: unknown 'vqbett' \(did you mean 'vqbet'\?\); dpot train "
                                        r"supports act, diffusion"):
        load_train_config(_write(tmp_path, BASE), ["--policy.type=vqbett"])


def test_an_ot_key_in_the_file_gets_the_full_loads_message(tmp_path):
    from dpot.train.precheck import precheck

    cfg = {**BASE, "ot": {"lambda_ot": 0.1, "regg": 0.1}}
    path = _write(tmp_path, cfg)
    with pytest.raises(UserError) as light:
        precheck([f"--config_path={path}"])
    with pytest.raises(UserError) as full:
        load_train_config(path)
    want = "ot.regg: unknown key (did you mean 'reg'?); remove it or fix its name"
    assert str(light.value) == str(full.value) == want
