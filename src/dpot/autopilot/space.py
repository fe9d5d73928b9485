"""The one search space: what the autopilot's model-based sampler draws around a parent config and what
``benchmarks/autopilot.py``'s TPE and random search draw around the start config, declared once here.

Parameters (:func:`distributions` of a config and the rules; ``f`` = ``[step] max_factor``, 4 by default), in this
order (a seeded sampler draws them in it, so the parameters of earlier versions come first and draw as before):

* ``lr``: the base LR, log-uniform from the bottom of the policy's usual range
  (:func:`dpot.analysis.cfgkeys.usual_lr_range`; ``lr_low`` fires below it) to ``[lr_high] far_factor`` x its top
  (``lr_high`` can fire only above that); set on every LR key (:func:`dpot.analysis.cfgkeys.lr_changes`);
* :data:`CONSTANT_LR` (``lr.constant``): whether the LR is constant or follows the config's schedule, when the config
  has one (``[sampler] schedule = false`` leaves it out);
* ``ot.lambda_ot`` in ``[v/f, v*f]`` when v > 0, and ``ot.reg`` in ``[v/f, v*f]`` (log) when the OT method has a
  plan, unless the caller says the OT term is negligible (the autopilot reads that from the parent's run);
* :data:`OPTIMIZER` (``optimizer.type``): ``adam`` or ``adamw`` (:data:`OPTIMIZER_CHOICES`) when the config trains
  with one of them (``[sampler] optimizer = false`` leaves it out); a switch away from the policy preset's own
  optimizer writes the preset out (:func:`dpot.analysis.cfgkeys.optimizer_changes`: same LR, betas, eps, schedule);
* :data:`WEIGHT_DECAY` (``optimizer.weight_decay``), where it matters: drawn only for AdamW (decoupled weight decay;
  Adam keeps the config's value), log-uniform in ``[sampler] adamw_weight_decay`` (1e-5 to 0.1).

:func:`suggest` draws a trial's values (define-by-run: the weight decay only when the optimizer is AdamW),
:func:`apply_params` sets them on a config, :func:`config_params` reads a config's values back (what every trial of
an autopilot study records, :func:`record_params`, and what the benchmark enqueues as TPE's first trial: the start).
Recorded params use the wide :data:`SPACE` ranges (a diagnosis may go outside any prior); Optuna's samplers read
the params of every COMPLETE trial whatever the range it was recorded with.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpot.analysis import cfgkeys


@dataclass(frozen=True)
class Param:
    """A config value recorded as a trial's Optuna param: its dotted key and a float distribution."""

    key: str
    low: float
    high: float
    log: bool


# The float values of a candidate config recorded as its trial's params (fixed params of an enqueued trial, so an
# Optuna sampler or a person reading the study sees them). Wide on purpose: a diagnosis may go outside any prior.
# ``lr`` and the weight decay are read and set through cfgkeys (several keys may hold them), the others at ``key``.
SPACE = {"lr": Param("lr", 1e-8, 10.0, True), "ot.lambda_ot": Param(cfgkeys.OT_LAMBDA, 0.0, 100.0, False),
         "ot.reg": Param(cfgkeys.OT_REG, 1e-5, 100.0, True),
         "optimizer.weight_decay": Param(cfgkeys.OPTIMIZER_WD, 1e-10, 10.0, True)}

# The schedule kind, a categorical param (False | True) of every trial whose config has an LR schedule: True when
# the LR is constant (:func:`dpot.analysis.cfgkeys.schedule`, ``varies`` False). The issue-22 grid
# (docs/benchmarks.md, "Reading the grids") found the sampler's best runs at TPE's LR but on the parent's cosine
# decay, 0.02-0.05 worse at 100 steps: the sampler draws it too.
CONSTANT_LR = "lr.constant"
CONSTANT_LR_CHOICES = (False, True)

# The optimizer type, a categorical param of every trial whose config trains with Adam or AdamW (issue 32: at equal
# integrated LR AdamW was 0.009 better than the preset's Adam; TPE searched AdamW only, the autopilot Adam only).
OPTIMIZER = "optimizer.type"
OPTIMIZER_CHOICES = ("adam", "adamw")
WEIGHT_DECAY = "optimizer.weight_decay"
DECOUPLED = "adamw"                          # the optimizer whose weight decay is searched
ADAMW_WEIGHT_DECAY = (1e-5, 0.1)             # [sampler] adamw_weight_decay's default


def distributions(cfg: dict, rules: dict, ot_negligible: bool = False) -> dict:
    """``{param name: optuna distribution}`` of the search around ``cfg`` (the module docstring).

    Args:
        cfg: the config searched around (the autopilot: the parent's train config; the benchmark: the start config,
            resolved by the trainer's loader).
        rules: the loaded rules (``dpot.analysis.rules.load_rules``; ``{}`` = the defaults in code): ``[lr_range]``,
            ``[lr_high] far_factor``, ``[step] max_factor`` and ``[sampler]``.
        ot_negligible: the config's OT term is too small a share of its loss for OT settings to matter: no OT
            params.
    Returns:
        The distributions in draw order; float log flags are those of :data:`SPACE`, so rule-proposed trials'
        params are compatible. :data:`WEIGHT_DECAY` is drawn only with AdamW (:func:`suggest`).
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    out: dict = {}
    sampler = rules.get("sampler") or {}
    low, high = cfgkeys.usual_lr_range(rules, cfgkeys.policy_type(cfg) or "default")
    far = float((rules.get("lr_high") or {}).get("far_factor", 1.0))
    if cfgkeys.base_lr(cfg) is not None:
        out["lr"] = FloatDistribution(float(low), float(high) * far, log=SPACE["lr"].log)
    if sampler.get("schedule", True) and cfgkeys.schedule(cfg) is not None:
        out[CONSTANT_LR] = CategoricalDistribution(CONSTANT_LR_CHOICES)
    if not ot_negligible:
        f = float((rules.get("step") or {}).get("max_factor", 4.0))
        ot = cfgkeys.ot_settings(cfg)
        for name in ("ot.lambda_ot", "ot.reg"):
            if name == "ot.reg" and not ot.has_plan:
                continue
            v = cfgkeys.get(cfg, SPACE[name].key)
            if cfgkeys.is_number(v) and v > 0:
                out[name] = FloatDistribution(float(v) / f, float(v) * f, log=SPACE[name].log)
    kind = cfgkeys.optimizer_type(cfg)
    if kind in OPTIMIZER_CHOICES:
        if sampler.get("optimizer", True):
            out[OPTIMIZER] = CategoricalDistribution(OPTIMIZER_CHOICES)
        if OPTIMIZER in out or kind == DECOUPLED:
            wd_low, wd_high = sampler.get("adamw_weight_decay", ADAMW_WEIGHT_DECAY)
            out[WEIGHT_DECAY] = FloatDistribution(float(wd_low), float(wd_high), log=SPACE[WEIGHT_DECAY].log)
    return out


def names(dists: dict) -> list[str]:
    """The parameter names of a space, in draw order (what the benchmark's results record as ``space``)."""
    return list(dists)


def suggest(trial, dists: dict) -> dict:
    """Draw ``dists`` on an Optuna ``trial`` in order (public ``suggest_*`` API, the same draws as
    ``study.ask(dists)``), :data:`WEIGHT_DECAY` only when the drawn optimizer is AdamW. A trial enqueued with fixed
    params (``study.enqueue_trial``) returns those. Returns ``{name: value}``."""
    from optuna.distributions import CategoricalDistribution

    out: dict = {}
    for name, dist in dists.items():
        if name == WEIGHT_DECAY and out.get(OPTIMIZER, DECOUPLED) != DECOUPLED:
            continue
        if isinstance(dist, CategoricalDistribution):
            out[name] = trial.suggest_categorical(name, dist.choices)
        else:
            out[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    return out


def apply_params(cfg: dict, params: dict) -> dict:
    """``cfg`` with the drawn ``params`` set (a new dict): a float rounded to 4 digits (the LR on every LR key, the
    weight decay on every weight-decay key), :data:`CONSTANT_LR` through :func:`dpot.analysis.cfgkeys.
    schedule_changes`, :data:`OPTIMIZER` through :func:`dpot.analysis.cfgkeys.optimizer_changes` (each a no-op when
    the config already is what was drawn). The optimizer is set after the LR and the schedule (a preset written out
    carries them) and before the weight decay (which then lands on the key the new optimizer reads; with Adam it is
    not searched and left as it is)."""
    order = [n for n in params if n not in (OPTIMIZER, WEIGHT_DECAY)]
    order += [n for n in (OPTIMIZER, WEIGHT_DECAY) if n in params]
    for name in order:
        value = params[name]
        if name == CONSTANT_LR:
            changes = cfgkeys.schedule_changes(cfg, bool(value))
        elif name == OPTIMIZER:
            changes = cfgkeys.optimizer_changes(cfg, str(value))
        else:
            value = float(f"{value:.4g}")
            if name == "lr":
                changes = cfgkeys.lr_changes(cfg, value)
            elif name == WEIGHT_DECAY:         # searched with AdamW only: Adam keeps its own
                ok = cfgkeys.optimizer_type(cfg) == DECOUPLED
                changes = cfgkeys.weight_decay_changes(cfg, value) if ok else {}
            else:
                changes = {SPACE[name].key: value}
        for key, new in changes.items():
            cfg = cfgkeys.set_(cfg, key, new)
    return cfg


def config_params(cfg: dict) -> dict:
    """A config's values of the space, recorded as its trial's params: those of :data:`SPACE` inside its wide ranges
    (the weight decay only with AdamW), :data:`CONSTANT_LR` when it has an LR schedule, :data:`OPTIMIZER` when it
    trains with Adam or AdamW."""
    out: dict = {}
    kind = cfgkeys.optimizer_type(cfg)
    for name, p in SPACE.items():
        if name == "lr":
            val = cfgkeys.base_lr(cfg)
        elif name == WEIGHT_DECAY:
            val = cfgkeys.weight_decay(cfg) if kind == DECOUPLED else None
        else:
            val = cfgkeys.get(cfg, p.key)
        if cfgkeys.is_number(val) and p.low <= float(val) <= p.high:
            out[name] = float(val)
    sch = cfgkeys.schedule(cfg)
    if sch is not None:
        out[CONSTANT_LR] = not sch["varies"]
    if kind in OPTIMIZER_CHOICES:
        out[OPTIMIZER] = kind
    return out


def start_params(cfg: dict, dists: dict) -> dict:
    """The values of ``cfg`` for the params of ``dists`` (:func:`config_params`): enqueued as a study's first trial
    (``study.enqueue_trial``), the sampler is told the start config and :func:`suggest` returns it."""
    own = config_params(cfg)
    return {name: own[name] for name in dists if name in own}


def record_params(trial, params: dict) -> None:
    """Record a claimed trial's enqueued (fixed) ``params`` as Optuna params with the :data:`SPACE` distributions
    (:data:`CONSTANT_LR`, :data:`OPTIMIZER`: categorical), so that every sampler of the study learns from it once
    it is COMPLETE."""
    for name in params:
        if name == CONSTANT_LR:
            trial.suggest_categorical(name, CONSTANT_LR_CHOICES)
        elif name == OPTIMIZER:
            trial.suggest_categorical(name, OPTIMIZER_CHOICES)
        else:
            p = SPACE[name]
            trial.suggest_float(name, p.low, p.high, log=p.log)


def params_text(params: dict) -> str:
    """A draw in a lineage title: ``lr=0.002291, lr.constant=True, optimizer.type=adamw`` (numbers to 4 significant
    digits)."""
    return ", ".join(f"{k}={v}" if isinstance(v, (bool, str)) else f"{k}={float(f'{v:.4g}'):g}"
                     for k, v in params.items())
