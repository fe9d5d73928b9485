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
from dpot.atomic import write_text

# A dpot OT block that changes nothing (lambda_ot=0): added when the parent is a plain lerobot-train run.
NEUTRAL_OT = {"lambda_ot": 0.0, "reg": 0.02, "tau_src": 0.01, "tau_tgt": 0.01, "heuristic": True,
              "batch_ratio": 0.5, "window_size": 20,
              "features": [{"type": "embed", "use_learned_embed": True, "weight_embed": 1.0},
                           {"type": "label", "key": "action", "dim_slice": [0, 8], "weight_label": 0.02}]}
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
    if not isinstance(cfg.get("ot"), dict):
        cfg["ot"] = copy.deepcopy(NEUTRAL_OT)
        msg = "parent is not a dpot run: added a neutral OT block (ot.lambda_ot=0)"
        if not cfg.get("source_dataset") and isinstance(cfg.get("dataset"), dict):
            cfg["source_dataset"] = copy.deepcopy(cfg["dataset"])
            msg += " and source_dataset = the target dataset (a placeholder: point it at the sim data)"
        notes.append(msg + "; set ot.lambda_ot>0 to co-train")
    for k in _DROP:
        if k in cfg:
            cfg[k] = False if k == "resume" else None
    return cfg, notes


def _merge(findings, groups) -> tuple[dict, list[str], list[str]]:
    changes, monitors, ids = {}, [], []
    for f in findings:
        if f.group in groups and f.changes:
            for k, v in f.changes.items():
                changes.setdefault(k, v)
            ids.append(f.id)
        if f.group in groups:
            monitors += [m for m in f.monitors if m not in monitors]
    return changes, monitors, ids


def _describe(changes: dict, parent: dict) -> str:
    parts = []
    for k, v in changes.items():
        old = cfgkeys.get(parent, k)
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items() if a in _DESCRIBED)
            parts.append(f"{k}: {{{v}}}")
        else:
            parts.append(f"{k}: {old} → {v}")
    return "; ".join(parts)


def build_proposals(run, findings, rules: dict, parent_spec: str) -> list[Proposal]:
    """The next configs for ``run``: (rollback,) a = optimisation/hygiene, b = a + OT changes, c = a longer."""
    base, notes = _base_config(run)
    it = _iteration(run)
    eval_key = "eval/offline_eval/avg_loss"
    reg = rules.get("rollback", {}).get("max_regression", 0.10)
    triggers = [f"{eval_key} > {1 + reg:.2f} × parent's best ({run.run_id}) → roll back to the parent config",
                "train/grad_norm spikes or train/loss oscillation → halve the LR and retry",
                f"train/ot_pi_diag > {rules.get('ot_strong', {}).get('max_pi_diag', 0.4)} sustained → "
                f"lower ot.lambda_ot or raise ot.reg"]
    core = ["train/loss", "train/l1_loss", eval_key]
    out: list[Proposal] = []
    letters = iter("abcdefgh")

    def add(title, rationale, changes, monitors, ids, extra_notes=()):
        name = f"iter{it}{next(letters)}"
        cfg = _apply(base, changes)
        cfg["job_name"] = name
        cfg["output_dir"] = None
        mons = core + [m for m in monitors if m not in core]
        out.append(Proposal(name, title, rationale, changes, mons, triggers, ids, cfg, notes + list(extra_notes)))

    rb = [f for f in findings if f.id == "rollback"]
    if rb:
        ev = rb[0].evidence
        add("rollback", f"eval loss {ev['child_eval']} is {ev['regression_pct']}% worse than parent "
                        f"{ev['parent']} ({ev['parent_eval']}): revert the changed keys",
            rb[0].changes, [eval_key], ["rollback"])
    optim, mon_a, ids_a = _merge(findings, {"optim"})
    dom = [f for f in findings if f.id == "cost_dominance"]
    for f in dom:           # balancing cost terms is low risk: part of a (the seed's Iter 1)
        for k, v in f.changes.items():
            optim.setdefault(k, v)
        ids_a.append(f.id)
        mon_a += f.monitors
    if optim:
        add("optimisation and logging hygiene (low risk)", _describe(optim, run.config), optim, mon_a, ids_a)
    ot_changes, mon_b, ids_b = _merge([f for f in findings if f.id != "cost_dominance"], {"ot"})
    has_ot = isinstance(run.config.get("ot"), dict) and (run.config["ot"].get("lambda_ot") or 0) > 0
    if ot_changes and has_ot:
        both = {**optim, **ot_changes}
        add("OT coupling adjustment", _describe(ot_changes, run.config) + (" (on top of a)" if optim else ""),
            both, mon_b, ids_a + ids_b)
    plateau = any(f.id == "plateau" for f in findings)
    steps = run.config.get("steps")
    primary = _primary_trend(run)
    improving = primary is not None and primary < -1.0
    if isinstance(steps, int) and steps > 0 and not plateau and not rb and (improving or not out):
        why = (f"still improving (trend {primary:+.1f}% over the last window)" if improving
               else "no rule triggered: same settings, longer")
        longer = {**optim, "steps": steps * 2}
        add("longer training", f"steps: {steps} → {steps * 2}: {why}" + (" (with a's changes)" if optim else ""),
            longer, [eval_key], ids_a)
    return out


def _primary_trend(run) -> float | None:
    from dpot.analysis.summary import summarize_metric

    for key in ("eval/offline_eval/avg_loss", "train/loss"):
        series = run.history.get(key, [])
        if len(series) >= 4:
            return summarize_metric(key, series).trend_pct
    return None


def write_proposals(props: list[Proposal], out_dir: Path, parent_spec: str) -> list[Path]:
    """Write ``<name>.json`` (complete config) per proposal, ``lineage.json`` and ``proposals.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    lineage_path = out_dir / "lineage.json"
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
