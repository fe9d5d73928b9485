"""The model-based search step: an Optuna sampler (TPE by default) proposes configs around a parent run.

Used when the diagnoses have nothing left (``--strategy both``), instead of them (``--strategy sampler``), or with
the diagnoses as its prior (``--strategy prior``: the LR range is where no LR rule fires, the other fixes are
applied to the config sampled around, :meth:`dpot.autopilot.candidates.Planner.fixes_of`). The
sampler is told about every finished run of the study, rule-proposed or sampled: every trial records its values
of the search space (:func:`~dpot.autopilot.space.config_params`) as Optuna params with the same distribution kind
and log flag (:mod:`.training` suggests them on the claimed trial, :func:`record_params`), and Optuna's samplers
read the params of every COMPLETE trial whatever the range it was recorded with.

What it samples is :mod:`dpot.autopilot.space`, the one search space that ``benchmarks/autopilot.py``'s TPE and
random search use too (:func:`sample_space` = :func:`dpot.autopilot.space.distributions`): the base LR within the
ranges the rules allow, whether it is constant, ``ot.lambda_ot`` and ``ot.reg`` (unless the parent's OT term is
negligible, :data:`~dpot.autopilot.decisions.OT_NEGLIGIBLE` of its loss), the optimizer (Adam or AdamW) and AdamW's
weight decay.

Values are drawn with ``study.ask()`` and :func:`dpot.autopilot.space.suggest` on a second handle of the same study
(``optuna.load_study`` with the chosen sampler, seeded from the search's ``--seed``: :func:`sampler_seed`; public
API); the drawn trial is closed at once as ``duplicate`` (FAIL: samplers ignore it) and the config is enqueued as a
normal candidate, so a kill between the two loses nothing but a draw.
"""

from __future__ import annotations

from dpot.autopilot import space
from dpot.autopilot.space import apply_params, params_text, record_params

__all__ = ["SAMPLERS", "STRATEGIES", "SAMPLED", "sample_space", "apply_params", "params_text", "record_params",
           "sampler_seed", "make_sampler", "draw"]

SAMPLERS = ("tpe", "gp")      # CMA-ES needs the cmaes package, which dpot does not depend on
STRATEGIES = ("rules", "sampler", "both", "prior")
SAMPLED = "sampler"            # the ``diagnoses`` entry of a sampled candidate (the lineage's "why")

#: ``{param name: optuna distribution}`` the sampler draws from around a parent config (the shared space)
sample_space = space.distributions


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


def draw(study, storage, kind: str, dists: dict, seed: int, mark) -> dict:
    """One draw of ``kind`` over ``dists`` (:func:`sample_space`) told about every trial of ``study``:
    ``{name: value}``.

    Args:
        study: the search's ``optuna.Study``; a second handle with the sampler is loaded on ``storage``.
        mark: closes the drawn trial as not part of the search (``TrialStore.mark_duplicate``).
    """
    import optuna

    handle = optuna.load_study(study_name=study.study_name, storage=storage, sampler=make_sampler(kind, seed))
    trial = handle.ask()
    params = space.suggest(trial, dists)
    mark(trial)
    return params
