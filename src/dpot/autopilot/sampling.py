"""The model-based search step: an Optuna sampler (TPE by default) proposes configs around a parent run.

Used when the diagnoses have nothing left (``--strategy both``) or instead of them (``--strategy sampler``). The
sampler is told about every finished run of the study, rule-proposed or sampled: every trial records its values
of :data:`~dpot.autopilot.decisions.SPACE` as Optuna params with the same distribution kind and log flag
(:mod:`.training` suggests them on the claimed trial), and Optuna's samplers read the params of every COMPLETE
trial whatever the range it was recorded with.

The ranges it samples in are the ones the rules allow (:func:`sample_space`): the base LR from the bottom of the
policy's usual range (:func:`dpot.analysis.cfgkeys.usual_lr_range`; ``lr_low`` fires below it) to
``[lr_high] far_factor`` x its top
(``lr_high`` can fire only above that); whether the LR is constant or follows the parent's schedule
(:data:`~dpot.autopilot.decisions.CONSTANT_LR`, when the parent has one; ``[sampler] schedule = false`` in the rules
leaves the schedule to the diagnoses, as before the issue-22 grid); ``ot.lambda_ot`` (when > 0) and ``ot.reg``
(when the OT method has a plan) within ``[step] max_factor`` (x4) either side of the parent's value, unless the
parent's OT term is negligible (:data:`~dpot.autopilot.decisions.OT_NEGLIGIBLE` of its loss): then the LR (and the
schedule) alone.

Values are drawn with ``study.ask(fixed_distributions)`` on a second handle of the same study (``optuna.load_study``
with the chosen sampler, public API); the drawn trial is closed at once as ``duplicate`` (FAIL: samplers ignore
it) and the config is enqueued as a normal candidate, so a kill between the two loses nothing but a draw.
"""

from __future__ import annotations

from dpot.analysis import cfgkeys
from dpot.autopilot.decisions import CONSTANT_LR, CONSTANT_LR_CHOICES, SPACE

SAMPLERS = ("tpe", "gp")      # CMA-ES needs the cmaes package, which dpot does not depend on
STRATEGIES = ("rules", "sampler", "both")
SAMPLED = "sampler"            # the ``diagnoses`` entry of a sampled candidate (the lineage's "why")


def sample_space(cfg: dict, rules: dict, ot_negligible: bool = False) -> dict:
    """``{param name: optuna distribution}`` the sampler draws from around ``cfg``.

    Args:
        cfg: the parent's train config.
        rules: the loaded rules (``dpot.analysis.rules.load_rules``): ``[lr_range]``, ``[lr_high] far_factor`` and
            ``[step] max_factor``.
        ot_negligible: the parent's OT term is too small a share of its loss for OT settings to matter.
    Returns:
        lr in ``[low, high * far_factor]`` (log; ``low``, ``high``: the policy's usual range, where neither
        ``lr_low`` nor ``lr_high`` fires); :data:`CONSTANT_LR` in (False, True) when ``cfg`` has an LR schedule
        and ``[sampler] schedule`` is not false; unless ``ot_negligible``: ``ot.lambda_ot`` in ``[v/f, v*f]`` when v > 0
        and ``ot.reg`` in ``[v/f, v*f]`` (log) when the OT method has a plan, f = ``[step] max_factor``. Log flags
        are those of :data:`SPACE`, so rule-proposed trials' params are compatible.
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    out: dict = {}
    low, high = cfgkeys.usual_lr_range(rules, cfgkeys.policy_type(cfg) or "default")
    far = float((rules.get("lr_high") or {}).get("far_factor", 1.0))
    if cfgkeys.base_lr(cfg) is not None:
        out["lr"] = FloatDistribution(float(low), float(high) * far, log=SPACE["lr"].log)
    if (rules.get("sampler") or {}).get("schedule", True) and cfgkeys.schedule(cfg) is not None:
        out[CONSTANT_LR] = CategoricalDistribution(CONSTANT_LR_CHOICES)
    if ot_negligible:
        return out
    f = float((rules.get("step") or {}).get("max_factor", 4.0))
    ot = cfgkeys.ot_settings(cfg)
    for name in ("ot.lambda_ot", "ot.reg"):
        if name == "ot.reg" and not ot.has_plan:
            continue
        v = cfgkeys.get(cfg, SPACE[name].key)
        if cfgkeys.is_number(v) and v > 0:
            out[name] = FloatDistribution(float(v) / f, float(v) * f, log=SPACE[name].log)
    return out


def apply_params(cfg: dict, params: dict) -> dict:
    """``cfg`` with the sampled ``params`` set: a :data:`SPACE` value rounded to 4 digits (the LR on every LR key),
    :data:`CONSTANT_LR` through :func:`dpot.analysis.cfgkeys.schedule_changes` (a no-op when the schedule already
    is what was drawn)."""
    for name, value in params.items():
        if name == CONSTANT_LR:
            for key, new in cfgkeys.schedule_changes(cfg, bool(value)).items():
                cfg = cfgkeys.set_(cfg, key, new)
            continue
        value = float(f"{value:.4g}")
        if name == "lr":
            for key, new in cfgkeys.lr_changes(cfg, value).items():
                cfg = cfgkeys.set_(cfg, key, new)
        else:
            cfg = cfgkeys.set_(cfg, SPACE[name].key, value)
    return cfg


def params_text(params: dict) -> str:
    """A draw in a lineage title: ``lr=0.002291, lr.constant=True`` (numbers to 4 significant digits)."""
    return ", ".join(f"{k}={v}" if isinstance(v, bool) else f"{k}={float(f'{v:.4g}'):g}" for k, v in params.items())


def sampler_seed(search_seed: int | None, n_records: int, i: int) -> int:
    """The seed of the ``i``-th draw when the search holds ``n_records`` trials: ``n_records * 1000 + i`` without a
    search seed (the draws before ``--seed`` existed: every search drew the same values), else a value mixed from
    ``(search_seed, n_records, i)`` so that searches with different ``--seed`` draw differently and a rerun of the
    same command draws the same."""
    if search_seed is None:
        return n_records * 1000 + i
    import numpy as np

    return int(np.random.SeedSequence([int(search_seed), int(n_records), int(i)]).generate_state(1)[0])


def make_sampler(kind: str, seed: int):
    """The Optuna sampler ``kind`` (``tpe`` | ``gp``), seeded; each models the objective after 3 trials."""
    import optuna

    if kind == "tpe":
        return optuna.samplers.TPESampler(n_startup_trials=3, seed=seed)
    if kind == "gp":
        return optuna.samplers.GPSampler(n_startup_trials=3, seed=seed)
    raise ValueError(f"unknown sampler {kind!r}")


def record_params(trial, params: dict) -> None:
    """Record a claimed trial's enqueued (fixed) ``params`` as Optuna params with the :data:`SPACE`
    distributions (:data:`CONSTANT_LR`: categorical), so that every sampler of the study learns from it once it
    is COMPLETE."""
    for name in params:
        if name == CONSTANT_LR:
            trial.suggest_categorical(name, CONSTANT_LR_CHOICES)
            continue
        p = SPACE[name]
        trial.suggest_float(name, p.low, p.high, log=p.log)


def draw(study, storage, kind: str, space: dict, seed: int, mark) -> dict:
    """One draw of ``kind`` over ``space`` told about every trial of ``study``: ``{name: value}``.

    Args:
        study: the search's ``optuna.Study``; a second handle with the sampler is loaded on ``storage``.
        mark: closes the drawn trial as not part of the search (``TrialStore.mark_duplicate``).
    """
    import optuna

    handle = optuna.load_study(study_name=study.study_name, storage=storage, sampler=make_sampler(kind, seed))
    trial = handle.ask(fixed_distributions=space)
    params = dict(trial.params)
    mark(trial)
    return params
