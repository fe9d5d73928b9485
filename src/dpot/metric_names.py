"""The OT term's metric names, spelled once (producers log them without the ``train/`` prefix, readers with it).

The names carry the LeRobot OT fork's meanings (``src/lerobot/policies/ot_train/ot_loss.py``), so a number read
under a fork name means the same in a fork run and in a dpot run (docs/coming-from-the-fork.md):

- ``ot_loss``           ``sum pi * C``, before ``lambda_ot`` (the fork's ``ot_loss``)
- ``ot_cost/<term>``    the batch mean of the term's weighted cost matrix ``mean(w_k C_k)`` (the fork's)
- ``ot_pi_sum``         ``sum pi`` (plan mass)
- ``ot_pi_diag``        the mass on the batch's partner pairs (source item i with target item i): ``trace pi``
  when every item has its partner; with ``ot.prior=diagonal`` it equals ``ot_pi_sum`` by construction

and dpot's extra quantities under names of their own:

- ``ot_loss_scaled``    ``lambda_ot * sum pi * C``: what the trainer adds to the BC loss
- ``ot_cost_plan/<term>`` the plan-weighted cost ``sum pi * w_k C_k`` (these sum to ``ot_loss``)
- ``ot_pi_diag_frac``   ``ot_pi_diag / ot_pi_sum``
- ``ot_pi_pair_cv``     under ``ot.prior=diagonal``: the spread of the per-pair masses (std / mean over the partner
  pairs): with the diagonal share 1 by construction, the mass and this spread carry the coupling's signal
- ``ot_embed_spread/<camera>`` the embeddings' own scale: mean off-diagonal ``||x_i - x_k||^2 / D`` within each
  domain, averaged over the two
- ``ot_skipped``        1 when the step skipped the OT term (a non-finite cost or plan, or a domain with no
  masked-in row); a count per log window
- ``ot_sinkhorn_iters`` the Sinkhorn solve's iterations; ``ot_sinkhorn_maxed`` 1 when it stopped at
  ``ot.max_iters`` before ``ot.tol`` (a count per log window); ``ot_sinkhorn_marginal_err`` the solved plan's
  relative violation of the unbalanced marginal condition (how far from the fixed point it stopped)

Every name above starts with ``ot_`` (:data:`OT_PREFIX`); the per-term cost families with ``ot_cost``
(:data:`COST_STEM`). A term's default name (:func:`image_term`, :func:`label_term`) says its kind
(:func:`kind_by_name`): ``img_<camera>`` an image-embedding term, ``<key>_lbl`` a label term.

Evaluation: ``eval/offline_eval/avg_loss`` (:data:`EVAL_LOSS`) is the held-out offline eval loss (dpot: the L1 of a
sampled action chunk, :mod:`dpot.train.offline_eval`; lerobot-train's held-out loss and the seed report's names are
read under it, :mod:`dpot.analysis.aliases`), and ``eval/offline_eval/eval_s`` (:data:`EVAL_S`) its seconds.
``eval/domain_probe/<camera>`` (:func:`probe`) is the held-out
accuracy of a linear sim-vs-real classifier on the camera's image features (:mod:`dpot.train.domain_probe`; 0.5 =
the domains cannot be told apart), with its 95 % interval's ends under ``<key>_lo`` / ``<key>_hi``.

Runs written by dpot before these names (they log ``ot_cost_mean/<term>``, or ``mmd/<term>`` without
``ot_loss_scaled``) logged ``ot_loss`` as the scaled loss, ``ot_cost/<term>`` plan-weighted and
``ot_cost_mean/<term>`` as the mean: :func:`upgrade_legacy` renames them on reading.
"""

from __future__ import annotations

__all__ = ["TRAIN", "OT_PREFIX", "OT_LOSS", "OT_LOSS_SCALED", "OT_PI_SUM", "OT_PI_DIAG", "OT_PI_DIAG_FRAC",
           "OT_SKIPPED", "OT_PI_PAIR_CV", "OT_SINKHORN_ITERS", "OT_SINKHORN_MAXED", "OT_SINKHORN_MARGINAL_ERR",
           "COST_STEM", "COST", "COST_PLAN",
           "LEGACY_COST_MEAN", "EMBED_SPREAD", "IMAGE_TERM", "LABEL_TERM", "cost_key", "cost_plan_key",
           "embed_spread_key", "image_term", "label_term", "term_camera", "kind_by_name", "train", "is_legacy",
           "upgrade_legacy", "PROBE", "probe", "EVAL_LOSS", "EVAL_S"]

TRAIN = "train/"
EVAL_LOSS = "eval/offline_eval/avg_loss"
EVAL_S = "eval/offline_eval/eval_s"
OT_PREFIX = "ot_"              # what every OT-term name starts with
OT_LOSS = "ot_loss"
OT_LOSS_SCALED = "ot_loss_scaled"
OT_PI_SUM = "ot_pi_sum"
OT_PI_DIAG = "ot_pi_diag"
OT_PI_DIAG_FRAC = "ot_pi_diag_frac"
OT_SKIPPED = "ot_skipped"
OT_PI_PAIR_CV = "ot_pi_pair_cv"
OT_SINKHORN_ITERS = "ot_sinkhorn_iters"
OT_SINKHORN_MAXED = "ot_sinkhorn_maxed"
OT_SINKHORN_MARGINAL_ERR = "ot_sinkhorn_marginal_err"
COST_STEM = "ot_cost"          # what every per-term cost family starts with (ot_cost/, ot_cost_plan/, ot_cost_mean/)
COST = "ot_cost/"              # + term: mean(w_k C_k)
COST_PLAN = "ot_cost_plan/"    # + term: sum pi * w_k C_k
LEGACY_COST_MEAN = "ot_cost_mean/"
MMD = "mmd/"
EMBED_SPREAD = "ot_embed_spread/"   # + camera: the embeddings' within-domain spread
IMAGE_TERM = "img_"            # + camera: an image-embedding term's default name
LABEL_TERM = "_lbl"            # <key> + it: a label term's default name
PROBE = "eval/domain_probe/"   # + camera: the domain probe's held-out accuracy


def train(name: str) -> str:
    """``train/<name>``: the key a reader sees."""
    return TRAIN + name


def probe(camera: str) -> str:
    """``eval/domain_probe/<camera>``: the domain probe's held-out accuracy on the camera's features."""
    return PROBE + camera


def cost_key(term: str) -> str:
    """``ot_cost/<term>``: the batch mean of the term's weighted cost (the fork's meaning)."""
    return COST + term


def cost_plan_key(term: str) -> str:
    """``ot_cost_plan/<term>``: the plan-weighted cost of the term."""
    return COST_PLAN + term


def embed_spread_key(camera: str) -> str:
    """``ot_embed_spread/<camera>``: the embeddings' within-domain spread on the camera."""
    return EMBED_SPREAD + camera


def image_term(camera: str) -> str:
    """``img_<camera>``: the default name of the camera's image-embedding term."""
    return IMAGE_TERM + camera


def label_term(name: str) -> str:
    """``<name>_lbl``: the default name of a label term (``name``: the last part of its key, e.g. ``action``)."""
    return name + LABEL_TERM


def term_camera(term: str) -> str:
    """The camera of an image term ``img_<camera>`` (any other name comes back unchanged)."""
    return term.removeprefix(IMAGE_TERM)


def kind_by_name(term: str) -> str | None:
    """The kind a term's default name says: ``"embed"`` (``img_<camera>``), ``"label"`` (``<key>_lbl``) or None."""
    if term.startswith(IMAGE_TERM):
        return "embed"
    if term.endswith(LABEL_TERM):
        return "label"
    return None


def is_legacy(keys) -> bool:
    """Whether a run's ``train/*`` keys were written by dpot before the fork's meanings (module docstring)."""
    keys = set(keys)
    if train(OT_LOSS_SCALED) in keys:
        return False
    return any(k.startswith((train(LEGACY_COST_MEAN), train(MMD))) for k in keys)


def upgrade_legacy(history: dict, lambda_ot: float | None) -> bool:
    """Rename a legacy dpot run's series in place to today's names (``history``: key -> ``[(step, value)]``).

    ``ot_loss`` (then the scaled loss) -> ``ot_loss_scaled``, and ``ot_loss`` = scaled / ``lambda_ot`` when
    ``lambda_ot`` > 0 is known (left out otherwise, except an all-zero series); ``ot_cost/<t>`` (then
    plan-weighted) -> ``ot_cost_plan/<t>``; ``ot_cost_mean/<t>`` -> ``ot_cost/<t>``. Returns whether anything
    was renamed (False for a run that is not legacy)."""
    if not is_legacy(history):
        return False
    old = dict(history)
    history.clear()
    for key, series in old.items():
        if key == train(OT_LOSS):
            history[train(OT_LOSS_SCALED)] = series
            if lambda_ot:
                history[key] = [(s, v / lambda_ot) for s, v in series]
            elif all(v == 0 for _, v in series):
                history[key] = series
        elif key.startswith(train(COST)):
            history[train(COST_PLAN) + key[len(train(COST)):]] = series
        elif key.startswith(train(LEGACY_COST_MEAN)):
            history[train(COST) + key[len(train(LEGACY_COST_MEAN)):]] = series
        else:
            history[key] = series
    return True
