"""The OT rules: the coupling's strength (``ot_weak``, ``ot_strong``), the plan's mass (``ot_mass_destroyed``), the
balance and scale of the cost terms (``cost_dominance``, ``embed_collapse``) and the solver (``ot_skipped``,
``ot_not_converged``). Each is one table of ``rules.toml``; :mod:`dpot.analysis.diagnose` runs them
(:mod:`dpot.analysis.rule_base`: what a rule is). The series they read are named by :mod:`dpot.metric_names`.
"""

from __future__ import annotations

import math
from statistics import median

from dpot import metric_names as mn
from dpot.analysis import cfgkeys
from dpot.analysis.aliases import MEAN_COST_PREFIX, cost_prefix
from dpot.analysis.rule_base import Rule, rounded, term_kind
from dpot.metric_names import EVAL_LOSS, train

PI_SUM, PI_DIAG, PI_DIAG_FRAC = train(mn.OT_PI_SUM), train(mn.OT_PI_DIAG), train(mn.OT_PI_DIAG_FRAC)
OT_LOSS, SKIPPED = train(mn.OT_LOSS), train(mn.OT_SKIPPED)
SINKHORN_ITERS, SINKHORN_MAXED = train(mn.OT_SINKHORN_ITERS), train(mn.OT_SINKHORN_MAXED)


def coupling_band(rules: dict) -> tuple[float, float]:
    """The coupling's band, one source for the plots, the assessment and the rules: ``[ot_weak.min_pi_diag,
    ot_strong.max_pi_diag]`` of rules.toml (below it ``ot_weak`` fires, above it sustained ``ot_strong`` does)."""
    return (rules.get("ot_weak", {}).get("min_pi_diag", 0.1), rules.get("ot_strong", {}).get("max_pi_diag", 0.4))


def coupling_key(ot) -> tuple[str, str]:
    """``(series key, name)`` of the coupling's strength: ``train/ot_pi_diag`` (the mass on the partner pairs), or
    under ``ot.prior=diagonal``, where ``pi_diag == pi_sum`` by construction, the plan mass ``train/ot_pi_sum``."""
    if ot.diagonal:
        return PI_SUM, "plan mass pi_sum (diagonal prior: pi_diag = pi_sum by construction)"
    return PI_DIAG, "pi_diag"


class OtWeak(Rule):
    """Median coupling (:func:`coupling_key`: pi_diag, or the mass under the diagonal prior) of the late window
    (of the points past ``after_step`` when there are any) below the threshold; warn once past ``after_step``, info
    before."""

    id = "ot_weak"
    group = "ot"
    monitors = (PI_DIAG, PI_SUM, EVAL_LOSS)

    def check(self, ctx):
        ot = cfgkeys.ot_settings(ctx.run.config)
        key, name = coupling_key(ot)
        series = ctx.series(key)
        if not series:
            return None
        after = self.thr["after_step"]
        mature_points = [p for p in series if p[0] >= after]
        win = ctx.late(mature_points or series)
        med = median(v for _, v in win)
        if med >= self.thr["min_pi_diag"]:
            return None
        lam, reg = ot.lambda_ot, ot.reg
        pr = self.propose
        changes = {}
        if ot.active:
            changes[cfgkeys.OT_LAMBDA] = rounded(min(pr["lambda_ot_max_factor"] * lam,
                                                max(lam * pr["lambda_ot_min_factor"], pr["lambda_ot_target"])))
        if cfgkeys.is_number(reg):
            changes[cfgkeys.OT_REG] = rounded(reg * pr["reg_factor"])
        mature = bool(mature_points)
        ev = {"coupling": name, "pi_diag_median": rounded(med), "window_steps": f"{win[0][0]}-{win[-1][0]}",
              "threshold": self.thr["min_pi_diag"], "after_step": after, "reached_after_step": mature,
              "lambda_ot": lam, "reg": reg, "prior": ot.prior}
        frac = ctx.late_median_of(PI_DIAG_FRAC)
        if frac is not None and not ot.diagonal:
            ev["pi_diag_frac"] = rounded(frac)
        return self.finding("warn" if mature else "info", ev, changes)


class OtMassDestroyed(Rule):
    """Median pi_sum below the threshold: the unbalanced marginals destroy the mass."""

    id = "ot_mass_destroyed"
    group = "ot"
    monitors = (PI_SUM, OT_LOSS)

    def check(self, ctx):
        med = ctx.late_median_of(PI_SUM)
        if med is None:
            return None
        low = self.thr["min_pi_sum"]
        if med >= low:
            return None
        ot = cfgkeys.ot_settings(ctx.run.config)
        reg, ts, tt = ot.reg, ot.tau_src, ot.tau_tgt
        ev = {"pi_sum_median": rounded(med), "threshold": low, "reg": reg, "tau_src": ts, "tau_tgt": tt}
        if all(cfgkeys.is_number(x) for x in (reg, ts, tt)) and med > 0:
            # mass = exp(-c / (reg + tau_src + tau_tgt))
            ev["implied_cost"] = rounded(-math.log(med) * (reg + ts + tt))
        means = [ctx.late_median_of(k) for k in ctx.run.history if k.startswith(MEAN_COST_PREFIX)]
        if means:
            ev["mean_cost_total"] = rounded(sum(m for m in means if m is not None))
        changes = {key: rounded(self.propose["tau_factor"] * val)
                   for key, val in ((cfgkeys.OT_TAU_SRC, ts), (cfgkeys.OT_TAU_TGT, tt)) if cfgkeys.is_number(val)}
        return self.finding("alarm" if med < low * self.thr["alarm_frac"] else "warn", ev, changes)


def ot_loss_share(ctx) -> float | None:
    """Late median of the λ-scaled OT loss (``ot_loss_scaled``) over the late median of ``train/loss``. A run that
    does not log the scaled loss gives ``ot_loss`` instead, as the autopilot's OT-share gate reads it
    (:func:`dpot.autopilot.decisions.ot_share`): the scaled loss of a run written before the fork's metric meanings,
    an upper bound of it (λ ≤ 1) for the fork's own. None when neither is logged or the loss is not positive."""
    loss = ctx.late_median_of("train/loss")
    scaled = ctx.late_median_of(train(mn.OT_LOSS_SCALED))
    if scaled is None:
        scaled = ctx.late_median_of(train(mn.OT_LOSS))
    if scaled is None or loss is None or loss <= 0:
        return None
    return scaled / loss


class OtStrong(Rule):
    """Coupling (:func:`coupling_key`) above the threshold in most of the late window, or (priors without the
    diagonal) pi_diag ≈ pi_sum: all mass on the partner pairs. Under the diagonal prior that equality holds by
    construction and is not evidence. Only when the OT term can mask the BC signal at all: its λ-scaled loss (late
    median) is at least ``min_ot_share`` of the training loss (a run that does not log it is judged as before).
    A strong coupling in a term worth 0.3 % of the loss (the official weights on a CPU-sized encoder: v4's
    dp-ot-faithful) says the pairs' costs are small against reg + tau, not that alignment outweighs BC."""

    id = "ot_strong"
    group = "ot"
    monitors = (PI_DIAG, EVAL_LOSS, "train/l1_loss")

    def check(self, ctx):
        ot = cfgkeys.ot_settings(ctx.run.config)
        key, name = coupling_key(ot)
        diag = ctx.series(key)
        if not diag:
            return None
        win = ctx.late(diag)
        top = self.thr["max_pi_diag"]
        above = sum(v > top for _, v in win) / len(win)
        med_diag = median(v for _, v in win)
        pisum = ctx.late_median_of(PI_SUM)
        ratio = None
        if pisum is not None and not ot.diagonal:
            ratio = med_diag / pisum if pisum > 0 else None
        sustained = above >= self.thr["sustained_frac"]
        on_diag = ratio is not None and ratio > self.thr["diag_equals_sum"] and med_diag > top / 2
        if not (sustained or on_diag):
            return None
        share = ot_loss_share(ctx)
        if share is not None and share < self.thr["min_ot_share"]:
            return None
        changes = {key: rounded(w * self.propose["weight_label_factor"])
                   for key, w in cfgkeys.feature_weights(ctx.run.config, "label").items()}
        if cfgkeys.is_number(ot.reg):
            changes[cfgkeys.OT_REG] = rounded(ot.reg * self.propose["reg_factor"])
        ev = {"coupling": name, "pi_diag_median": rounded(med_diag), "frac_above": rounded(above, 3),
              "max_pi_diag": top,
              "pi_diag_over_pi_sum": "1 by construction" if ot.diagonal else (
                  rounded(ratio, 3) if ratio is not None else None),
              "heuristic": ot.heuristic, "prior": ot.prior}
        if share is not None:
            ev["ot_loss_share"] = rounded(share, 4)
        return self.finding("warn", ev, changes)


class CostDominance(Rule):
    """Largest per-term cost more than max_ratio × the next one; the weights of the dominant term's kind
    (:func:`term_kind`) are divided down."""

    id = "cost_dominance"
    group = "ot"

    def check(self, ctx):
        run = ctx.run
        prefix = cost_prefix(run.history)
        terms = {k[len(prefix):]: ctx.series(k) for k in run.history if k.startswith(prefix)}
        levels = {t: median(abs(v) for _, v in ctx.late(s)) for t, s in terms.items() if s}
        if len(levels) < 2:
            return None
        ranked = sorted(levels.items(), key=lambda kv: -kv[1])
        (top, a), (second, b) = ranked[0], ranked[1]
        ratio = a / b if b > 0 else math.inf
        if ratio <= self.thr["max_ratio"]:
            return None
        # bring the dominant term to ~target_ratio x the next one (or, next one ~0, its mean cost to ~target_cost)
        pr = self.propose
        factor = ratio / pr["target_ratio"] if math.isfinite(ratio) else a / pr["target_cost"]
        factor = min(max(factor, pr["min_factor"]), pr["max_factor"])
        kind = term_kind(run, top)
        changes = {}
        if kind in cfgkeys.FEATURE_WEIGHT:
            changes = {key: float(f"{w / factor:.2g}") for key, w in cfgkeys.feature_weights(run.config, kind).items()}
        ev = {"dominant": top, "dominant_kind": kind, "dominant_cost": rounded(a), "next": second,
              "next_cost": rounded(b),
              "ratio": rounded(ratio, 3) if math.isfinite(ratio) else "inf", "metric": prefix.rstrip("/"),
              "levels": {t: rounded(v) for t, v in levels.items()}}
        return self.finding("warn", ev, changes, [prefix + top, prefix + second])


class EmbedCollapse(Rule):
    """Image-embedding cost and the embeddings' own spread both fall to a tiny fraction of their start.

    With a scale-dependent cost (``ot.cost_norm`` ``dim`` or ``none``) the OT loss on learned embeddings has a
    trivial minimizer: shrinking the embeddings (the next layers rescale them); BC alone can also make them
    near-constant (in the cpu-small study naive co-training, lambda_ot=0, shrank them as much, measured offline
    on its checkpoints). Either way the image terms fade and the labels alone decide the plan. Alignment lowers
    the cross-domain cost but not the within-domain spread (``train/ot_embed_spread/<camera>``), so both must
    collapse; runs without the spread metric are not judged. ``cost_norm=median`` divides each term by its
    batch median: scale-invariant. The embedding terms are those of kind ``embed`` (:func:`term_kind`).
    """

    id = "embed_collapse"
    group = "ot"

    def _drop(self, ctx, key):
        """(first, last, last/first): start = the first min_points points (the collapse can be over within a
        fifth of the run: in the cpu-small study the image cost fell 40x in the first 60 of 600 steps);
        end = the late window."""
        series = ctx.series(key)
        n0 = self.thr["min_points"]
        if len(series) < 2 * n0:
            return None
        first = median(v for _, v in series[:n0])
        last = ctx.late_median(series)
        return (rounded(first), rounded(last), rounded(last / first, 3)) if first > 0 else None

    def check(self, ctx):
        norm = cfgkeys.ot_settings(ctx.run.config).cost_norm
        if norm in self.thr["skip_cost_norms"]:
            return None
        prefix, limit = MEAN_COST_PREFIX, self.thr["max_ratio"]
        collapsed, monitors = {}, []
        for key in ctx.run.history:
            term = key[len(prefix):]
            if not key.startswith(prefix) or term_kind(ctx.run, term) != "embed":
                continue
            cam = mn.term_camera(term)
            spread_key = train(mn.embed_spread_key(cam))
            cost, spread = self._drop(ctx, key), self._drop(ctx, spread_key)
            if cost and spread and cost[2] < limit and spread[2] < limit:
                collapsed[cam] = {"cost_first_last_ratio": cost, "spread_first_last_ratio": spread}
                monitors.append((spread_key, key))
        if not collapsed:
            return None
        summary = ", ".join(f"{c}: cost x{v['cost_first_last_ratio'][2]}, spread x{v['spread_first_last_ratio'][2]}"
                            for c, v in collapsed.items())
        ev = {"cost_norm": norm, "max_ratio": limit, "cameras": collapsed, "summary": summary}
        mons = [s for s, _ in monitors] + [c for _, c in monitors]
        return self.finding("warn", ev, {cfgkeys.OT_COST_NORM: self.propose["cost_norm"]}, mons)


class OtSkipped(Rule):
    """OT term skipped (non-finite cost or plan) more often than allowed."""

    id = "ot_skipped"
    group = "ot"
    monitors = (SKIPPED,)

    def check(self, ctx):
        sk = ctx.series(SKIPPED)
        if not sk:
            return None
        total = max(v for _, v in sk)
        if total <= self.thr["max_skipped"]:
            return None
        return self.finding("alarm", {"ot_skipped": total, "last_step": sk[-1][0]})


class OtNotConverged(Rule):
    """The Sinkhorn solve stopped at ``ot.max_iters`` before meeting ``ot.tol`` on more than ``max_share`` of the
    late window's steps (``train/ot_sinkhorn_maxed``: capped solves per log window, summed)."""

    id = "ot_not_converged"
    group = "ot"
    monitors = (SINKHORN_MAXED, SINKHORN_ITERS)

    def check(self, ctx):
        maxed = ctx.series(SINKHORN_MAXED)
        if not maxed:
            return None
        late = ctx.late(maxed)
        before = len(maxed) - len(late)
        start = maxed[before - 1][0] if before > 0 else 0   # the late window's records cover steps (start, last]
        n_steps = late[-1][0] - start
        share = sum(v for _, v in late) / n_steps if n_steps > 0 else 0.0
        if share <= self.thr["max_share"]:
            return None
        iters = ctx.late(ctx.series(SINKHORN_ITERS))
        max_iters = cfgkeys.get(ctx.run.config, cfgkeys.OT_MAX_ITERS)
        ev = {"maxed_pct": rounded(100 * min(share, 1.0), 3), "steps": f"{late[0][0]}-{late[-1][0]}",
              "median_iters": rounded(median(v for _, v in iters)) if iters else None, "max_iters": max_iters}
        changes = {}
        if cfgkeys.is_number(max_iters) and max_iters > 0:
            changes[cfgkeys.OT_MAX_ITERS] = int(max_iters * self.propose["max_iters_factor"])
        return self.finding("warn", ev, changes)


# report order within a severity
FAMILY: tuple[type[Rule], ...] = (OtWeak, OtMassDestroyed, OtStrong, CostDominance, EmbedCollapse, OtSkipped,
                                  OtNotConverged)
