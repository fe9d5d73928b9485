"""Diagnosis: every enabled rule of :data:`RULES` run on one :class:`RuleContext`, its changes cut to bounded steps.

A rule is one table of ``rules.toml`` (thresholds, and a ``propose`` sub-table with the values it proposes): built
from its table, it reads a :class:`RuleContext` (the run, its summaries, throughput, parent run, late window) and
returns one :class:`Finding` (the numbers that triggered it as ``evidence``, the dotted config ``changes`` a next
run should try) or None (:mod:`dpot.analysis.rule_base`). The rules live by family:
:mod:`dpot.analysis.rules_optim` (the LR and where the step time goes), :mod:`dpot.analysis.rules_ot` (the OT
term: coupling, mass, cost terms, solver) and :mod:`dpot.analysis.rules_dynamics` (the loss's course, the schedule,
the rollback against the parent). :func:`diagnose` runs every enabled one. Every "recent level" of a curve is read
over the one late window of :mod:`dpot.analysis.windows`.
"""

from __future__ import annotations

from dpot.analysis import cfgkeys, rules_dynamics, rules_optim, rules_ot
from dpot.analysis.rule_base import SEVERITIES, Finding, Rule, RuleContext, term_kind
from dpot.analysis.rules_ot import coupling_band, coupling_key
from dpot.analysis.steps import is_bounded, person_step

__all__ = ["RULES", "SEVERITIES", "Finding", "Rule", "RuleContext", "bound_steps", "build_rules",
           "coupling_band", "coupling_key", "diagnose", "term_kind"]

# every rule by its rules.toml table, in report order (within a severity): the families' orders, one after another
RULES: dict[str, type[Rule]] = {cls.id: cls for cls in (*rules_optim.FAMILY, *rules_ot.FAMILY, *rules_dynamics.FAMILY)}


def build_rules(rules: dict) -> list[Rule]:
    """The enabled rules of :data:`RULES`, each built with its table of ``rules`` (see :func:`load_rules`)."""
    return [cls(rules.get(rid, {}), rules) for rid, cls in RULES.items() if rules.get(rid, {}).get("enabled", True)]


def bound_steps(finding: Finding, config: dict, step: dict) -> Finding:
    """Cut each numeric change of a tuned key (``step.bounded`` globs) to one person's step towards it
    (:func:`dpot.analysis.steps.person_step`, at most ×``step.max_factor``); the full value goes to
    ``finding.targets``. Rollbacks (the parent's values) are left as they are."""
    if finding.group == "rollback":
        return finding
    for key, target in list(finding.changes.items()):
        old = cfgkeys.get(config, key)
        if not (cfgkeys.is_number(old) and cfgkeys.is_number(target) and old > 0 and target > 0
                and is_bounded(key, step["bounded"])):
            continue
        new = person_step(float(old), float(target), step["max_factor"])
        if new != target:
            finding.changes[key] = new
            finding.targets[key] = target
    return finding


def diagnose(ctx: RuleContext, rules: dict) -> list[Finding]:
    """Run every enabled rule on ``ctx``; findings sorted alarm → warn → info (registration order within).
    Changes are bounded steps (:func:`bound_steps`) except those of rules that move a value into its usual
    range (``into_range``: e.g. an LR far outside that range moves into it in one proposal)."""
    step = rules.get("step") or {"max_factor": 4.0, "bounded": []}
    out = []
    for rule in build_rules(rules):
        f = rule.check(ctx)
        if f is not None:
            out.append(f if rule.into_range else bound_steps(f, ctx.run.config, step))
    order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
    return sorted(out, key=lambda f: order[f.severity])
