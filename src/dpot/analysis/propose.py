"""Next-run proposals: complete configs derived from the run's own resolved config by the triggered rules.

Each proposal is the parent's ``train_config.json`` with only the intended dotted keys changed (so
``dpot train --config_path`` accepts it), plus a one-line rationale, monitors and rollback triggers.
Lineage (which run a proposal came from) goes to ``lineage.json`` next to the configs, because the
config schema has no room for it; the report of a run at ``<DIR>/<name>`` reads it to check rollback.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dpot.analysis import cfgkeys
from dpot.analysis.diagnose import coupling_key
from dpot.analysis.steps import steps_to
from dpot.atomic import write_text
from dpot.metric_names import EVAL_LOSS
from dpot.rundir import LINEAGE_FILE

# The OT block a proposal adds to a parent without one (a plain LeRobot run): dpot's OTConfig defaults with the OT
# term off. Spelled out because dpot.analysis never imports dpot.config; tests/analysis/test_cfgkeys.py checks that
# it resolves to exactly OTConfig() with lambda_ot=0.
NEUTRAL_OT = {"lambda_ot": 0.0, "reg": 0.02, "tau_src": 0.01, "tau_tgt": 0.01, "heuristic": True,
              "batch_ratio": 0.5, "window_size": 20,
              "features": [{"type": "embed", "use_learned_embed": True, "weight_embed": 1.0},
                           {"type": "label", "key": "action", "dim_slice": None, "weight_label": 0.05}]}
_DROP = ("resume", "checkpoint_path")   # run-instance keys a new run must not inherit
_DESCRIBED = ("type", "name", "lr", "num_warmup_steps", "weight_decay")   # sub-keys a rationale names


@dataclass
class Proposal:
    """A next config: ``name`` (iter2a, ...), ``changes`` (dotted key -> value), rationale, watch list."""

    name: str
    title: str
    rationale: str
    changes: dict
    monitors: list[str]
    rollback_triggers: list[str]
    findings: list[str]
    config: dict = field(repr=False, default_factory=dict)
    notes: list[str] = field(default_factory=list)
    kind: str = "tuning"          # rollback | tuning | ot | longer
    targets: dict = field(default_factory=dict)   # dotted key -> where the rules would end up after more steps

    def as_dict(self, with_config: bool = False) -> dict:
        """JSON-ready dict (the config only when asked)."""
        d = asdict(self)
        if not with_config:
            d.pop("config")
        return d


def _apply(config: dict, changes: dict) -> dict:
    out = copy.deepcopy(config)
    for key, value in changes.items():
        out = cfgkeys.set_(out, key, copy.deepcopy(value))
    return out


def _iteration(run) -> int:
    m = re.match(r"^iter(\d+)[a-z]?$", run.run_id)
    return int(m.group(1)) + 1 if m else 2


def _base_config(run) -> tuple[dict, list[str]]:
    notes = []
    cfg = copy.deepcopy(run.config)
    if not cfg:
        raise ValueError("run has no resolved config")
    if not cfgkeys.ot_settings(cfg).present:
        cfg[cfgkeys.OT] = copy.deepcopy(NEUTRAL_OT)
        msg = "parent is not a dpot run: added a neutral OT block (ot.lambda_ot=0)"
        if not cfg.get("source_dataset") and isinstance(cfg.get("dataset"), dict):
            cfg["source_dataset"] = copy.deepcopy(cfg["dataset"])
            msg += " and source_dataset = the target dataset (a placeholder: point it at the sim data)"
        notes.append(msg + "; set ot.lambda_ot>0 to co-train")
    for k in _DROP:
        if k in cfg:
            cfg[k] = False if k == "resume" else None
    return cfg, notes


def _merge(findings, groups) -> tuple[dict, list[str], list[str], dict]:
    changes, monitors, ids, targets = {}, [], [], {}
    for f in findings:
        if f.group in groups and f.changes:
            for k, v in f.changes.items():
                if k not in changes:
                    changes[k] = v
                    if k in f.targets:
                        targets[k] = f.targets[k]
            ids.append(f.id)
        if f.group in groups:
            monitors += [m for m in f.monitors if m not in monitors]
    return changes, monitors, ids, targets


def _short(key: str, parent: dict) -> str:
    """A config key as a title names it: ``weight_label (action)`` for a feature field, else the key."""
    parts = key.split(".")
    if len(parts) == 4 and ".".join(parts[:2]) == cfgkeys.OT_FEATURES:
        f = cfgkeys.get(parent, ".".join(parts[:3])) or {}
        what = f.get("key") or ("images" if f.get(cfgkeys.FEATURE_TYPE) == "embed" else parts[2])
        return f"{parts[3]} ({what})"
    return key


_LR_SETTERS = (cfgkeys.POLICY_LR, cfgkeys.LR)                   # keys that hold the base LR
_LR_DECIDERS = (*_LR_SETTERS, cfgkeys.PRESET, cfgkeys.OPTIMIZER)  # ... or decide which of them the trainer reads


def _lr_item(changes: dict, parent: dict) -> str | None:
    """The base LR the config trains at after ``changes``, as a title item: ``raise optimizer.lr 1e-06 → 0.0003``
    (the key the trainer reads in the new config; the parent's trained LR); None when it does not change."""
    old, new = cfgkeys.base_lr(parent), cfgkeys.base_lr(_apply(parent, changes))
    if new is None or old == new:
        return None
    key = cfgkeys.lr_keys(_apply(parent, changes))[0]
    if old is None:
        return f"{key} = {new:g}"
    return f"{'lower' if new < old else 'raise'} {key} {old:g} → {new:g}"


def title_of(changes: dict, parent: dict, limit: int = 4) -> str:
    """What a proposal changes, in a few words: ``lower weight_label (action) 0.05 → 0.02; eval_freq 50 → 400``
    (numbers: lower/raise old → new; tables: the table and its type; at most ``limit`` items, then +N more).

    The LR is stated as the config trains at it (issue 32: a proposal titled ``1e-06 → 0.0001`` trained at 3e-4):
    the LR keys' changes become one item, the trained LR before → after (:func:`_lr_item`), at the first change
    that decides it (an LR key, ``use_policy_training_preset`` or the ``optimizer`` table, whose ``lr`` the trainer
    reads once the presets are off); an LR key whose change the trainer does not read says what it trains at."""
    items, seen = [], set()
    lr_item = _lr_item(changes, parent)

    def add(item: str) -> None:
        if item not in seen:
            seen.add(item)
            items.append(item)

    for k, v in changes.items():
        if k in _LR_DECIDERS and lr_item is not None:
            add(lr_item)
        if k in _LR_SETTERS and lr_item is not None:
            continue
        old = cfgkeys.get(parent, k)
        name = _short(k, parent)
        if isinstance(v, dict):
            desc = "/".join(str(v[a]) for a in ("type", "name") if v.get(a) is not None)
            item = f"set {name} ({desc})" if desc else f"set {name}"
        elif cfgkeys.is_number(v) and cfgkeys.is_number(old) and old != v:
            item = f"{'lower' if v < old else 'raise'} {name} {old:g} → {v:g}"
        else:
            item = f"{name} = {json.dumps(v)}"
        if k in _LR_SETTERS and cfgkeys.base_lr(parent) is not None:
            if k == cfgkeys.LR and cfgkeys.POLICY_LR in changes:
                continue      # the same LR set twice (preset key and resolved optimizer)
            item += f" (the run still trains at {cfgkeys.base_lr(parent):g})"
        add(item)
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


def _describe(changes: dict, parent: dict, targets: dict | None = None, max_factor: float = 4.0) -> str:
    """``key: old → new`` per change; a bounded step also says where it would go if the next run confirms."""
    parts = []
    for k, v in changes.items():
        old = cfgkeys.get(parent, k)
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items() if a in _DESCRIBED)
            parts.append(f"{k}: {{{v}}}")
        else:
            part = f"{k}: {old} → {v}"
            if targets and k in targets:
                n = steps_to(float(v), float(targets[k]), max_factor)
                part += (f" (one step of at most ×{max_factor:g}; the rule's target is {targets[k]:g}: "
                         f"{n} more step{'s' if n > 1 else ''} like this if the next run confirms)")
            parts.append(part)
    prior = prior_change(changes, parent)
    return "; ".join(parts + ([prior] if prior else []))


PRIOR_MEANING = {
    "diagonal": "the plan lives on the partner pairs (c = I/N, the fork's heuristic): pi_diag = pi_sum by "
                "construction, the mass pi_sum carries the coupling",
    "temporal": "the plan spreads over the batch near equal phase (dpot's soft prior): pi_diag / pi_sum measures "
                "how much stays on the partner pairs",
    "none": "the plan is a matching over the whole batch (reference a b^T): pi_diag / pi_sum is about 1/n unless "
            "the costs favour the partners",
}


def prior_change(changes: dict, parent: dict) -> str | None:
    """What a change of ``ot.prior`` (or of ``ot.heuristic`` while the prior follows it) does, in a sentence;
    None when the prior in force stays the same."""
    if not any(k in changes for k in (cfgkeys.OT_PRIOR, cfgkeys.OT_HEURISTIC)):
        return None
    child = copy.deepcopy(parent)
    for k in (cfgkeys.OT_PRIOR, cfgkeys.OT_HEURISTIC):
        if k in changes:
            child.setdefault(cfgkeys.OT, {})[k.split(".", 1)[1]] = changes[k]
    old, new = cfgkeys.ot_settings(parent).prior, cfgkeys.ot_settings(child).prior
    if old == new:
        return None
    return f"prior {old} → {new}: {PRIOR_MEANING.get(new, new)}"


def build_proposals(run, findings, rules: dict, parent_spec: str) -> list[Proposal]:
    """The next configs for ``run``: (rollback,) a = optimisation/hygiene, b = a + OT changes, c = a longer."""
    base, notes = _base_config(run)
    it = _iteration(run)
    reg = rules.get("rollback", {}).get("max_regression", 0.10)
    triggers = [f"{EVAL_LOSS}: late-window mean > {1 + reg:.2f} × the parent's ({run.run_id}) and beyond the two runs' "
                "noise → roll back to the parent config",
                "train/grad_norm spikes or train/loss oscillation → halve the LR and retry",
                f"{coupling_key(cfgkeys.ot_settings(run.config))[0]} > "
                f"{rules.get('ot_strong', {}).get('max_pi_diag', 0.4)} sustained → lower ot.lambda_ot or raise ot.reg"]
    core = ["train/loss", "train/l1_loss", EVAL_LOSS]
    out: list[Proposal] = []
    letters = iter("abcdefgh")

    def add(kind, title, rationale, changes, monitors, ids, targets=None):
        name = f"iter{it}{next(letters)}"
        cfg = _apply(base, changes)
        cfg["job_name"] = name
        cfg["output_dir"] = None
        mons = core + [m for m in monitors if m not in core]
        out.append(Proposal(name, title, rationale, changes, mons, triggers, ids, cfg, list(notes), kind,
                            dict(targets or {})))

    mf = rules.get("step", {}).get("max_factor", 4.0)
    rb = [f for f in findings if f.id == "rollback"]
    if rb:
        ev = rb[0].evidence
        add("rollback", f"rollback: revert {len(rb[0].changes)} changed keys to parent {ev['parent']}'s values",
            f"eval loss {ev['child_eval']} is {ev['regression_pct']}% worse than parent "
            f"{ev['parent']} ({ev['parent_eval']}): revert the changed keys", rb[0].changes, [EVAL_LOSS], ["rollback"])
    optim, mon_a, ids_a, tg_a = _merge(findings, {"optim"})
    dom = [f for f in findings if f.id == "cost_dominance"]
    for f in dom:           # balancing cost terms is low risk: part of proposal a
        for k, v in f.changes.items():
            if k not in optim:
                optim[k] = v
                if k in f.targets:
                    tg_a[k] = f.targets[k]
        ids_a.append(f.id)
        mon_a += f.monitors
    if optim:
        add("tuning", title_of(optim, run.config), _describe(optim, run.config, tg_a, mf), optim, mon_a, ids_a, tg_a)
    ot_changes, mon_b, ids_b, tg_b = _merge([f for f in findings if f.id != "cost_dominance"], {"ot"})
    has_ot = cfgkeys.ot_settings(run.config).active
    if ot_changes and has_ot:
        both = {**optim, **ot_changes}
        add("ot", title_of(ot_changes, run.config) + (" (on top of a)" if optim else ""),
            _describe(ot_changes, run.config, tg_b, mf)
            + (f" (on top of a: {_describe(optim, run.config, tg_a, mf)})" if optim else ""),
            both, mon_b, ids_a + ids_b, {**tg_a, **tg_b})
    plateau = any(f.id == "plateau" for f in findings)
    steps = cfgkeys.get(run.config, cfgkeys.STEPS)
    primary = _primary_trend(run)
    improving = primary is not None and primary < -1.0
    if isinstance(steps, int) and steps > 0 and not plateau and not rb and (improving or not out):
        why = (f"still improving (trend {primary:+.1f}% over the last window)" if improving
               else "no rule triggered: same settings, longer")
        longer = {**optim, cfgkeys.STEPS: steps * 2}
        add("longer", f"longer training: steps {steps} → {steps * 2}" + (" (on top of a)" if optim else ""),
            f"steps: {steps} → {steps * 2}: {why}"
            + (f" (on top of a: {_describe(optim, run.config, tg_a, mf)})" if optim else ""),
            longer, [EVAL_LOSS], ids_a, tg_a)
    return out


def _primary_trend(run) -> float | None:
    from dpot.analysis.summary import summarize_metric

    for key in (EVAL_LOSS, "train/loss"):
        series = run.history.get(key, [])
        if len(series) >= 4:
            return summarize_metric(key, series).trend_pct
    return None


def write_proposals(props: list[Proposal], out_dir: Path, parent_spec: str) -> list[Path]:
    """Write ``<name>.json`` (complete config) per proposal, ``lineage.json`` and ``proposals.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    lineage_path = out_dir / LINEAGE_FILE
    lineage = json.loads(lineage_path.read_text()) if lineage_path.exists() else {}
    for p in props:
        cfg = dict(p.config)
        cfg["output_dir"] = str((out_dir / p.name).resolve())
        p.config = cfg
        path = out_dir / f"{p.name}.json"
        write_text(path, json.dumps(cfg, indent=2) + "\n")
        paths.append(path)
        lineage[p.name] = {"parent": parent_spec, "config": str(path.resolve()), "output_dir": cfg["output_dir"],
                           "rationale": p.rationale, "changes": p.changes}
    write_text(lineage_path, json.dumps(lineage, indent=2) + "\n")
    write_text(out_dir / "proposals.json", json.dumps([p.as_dict() for p in props], indent=2) + "\n")
    return paths
