"""Per-policy knowledge lives in dpot.policy: every registered hook has a traits row and every row a hook; the
config loader, the report's LR keys and the rules read the rows (nothing per policy type elsewhere)."""

from __future__ import annotations

import re
from pathlib import Path

from dpot.policy import supported_policy_types
from dpot.policy.traits import TRAITS, extra_lr_keys

SRC = Path(__file__).resolve().parents[1] / "src" / "dpot"


def test_every_hook_has_traits_and_every_traits_row_a_hook():
    assert supported_policy_types() == sorted(TRAITS)


def test_the_config_loader_fills_each_policys_defaults(tmp_path):
    from dpot.config.load import _apply_policy_defaults

    for ptype, traits in TRAITS.items():
        raw = {"policy": {"type": ptype}}
        _apply_policy_defaults(raw, [])
        assert {k: raw["policy"][k] for k in traits.config_defaults} == traits.config_defaults


def test_no_policy_type_is_spelled_as_a_table_key_outside_dpot_policy():
    """No ``{"diffusion": ..., "act": ...}`` tables of per-policy values outside src/dpot/policy (the study presets
    name a policy type as a value, which is not per-policy knowledge)."""
    pattern = re.compile(r'["\'](diffusion|act)["\']\s*:\s*[\[{(]')
    offenders = [f"{p.relative_to(SRC)}:{n}" for p in SRC.rglob("*.py") if "policy" not in p.parts
                 for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders
    rules = (SRC / "analysis" / "rules.toml").read_text()
    assert not re.search(r"^\s*(diffusion|act)\s*=", rules, re.M), "per-policy LR ranges belong in dpot.policy.traits"


def test_extra_lr_keys_are_the_reports():
    from dpot.analysis import cfgkeys

    assert cfgkeys.BACKBONE_LR == extra_lr_keys() == ("policy.optimizer_lr_backbone",)


def test_preset_optimizer_is_the_presets_own():
    """The optimizer type cfgkeys.optimizer_type reports under the preset is what LeRobot's preset builds."""
    from lerobot.configs.policies import PreTrainedConfig

    for ptype, traits in TRAITS.items():
        assert PreTrainedConfig.get_choice_class(ptype)().get_optimizer_preset().type == traits.preset_optimizer
