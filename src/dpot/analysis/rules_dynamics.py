"""The training-dynamics rules: the loss's course (``instability``, ``divergence``, ``overfitting``, ``plateau``),
an LR schedule the run cannot follow (``schedule_mismatch``) and the comparison with the parent run
(``rollback``). Each is one table of ``rules.toml``; :mod:`dpot.analysis.diagnose` runs them
(:mod:`dpot.analysis.rule_base`: what a rule is). Levels are compared against the series' own noise
(:mod:`dpot.analysis.noise`).
"""

from __future__ import annotations

import math
from statistics import median, pstdev

from dpot.analysis import cfgkeys, noise
from dpot.analysis.rule_base import Rule, rounded
from dpot.analysis.windows import window_size
from dpot.metric_names import EVAL_LOSS


class Instability(Rule):
    """grad_norm spikes, train/loss oscillation around its EMA (span = the late window) over the late
    window, or non-finite loss."""

    id = "instability"
    monitors = ("train/grad_norm", "train/loss")

    def check(self, ctx):
        run, thr = ctx.run, self.thr
        ev, sev = {}, None
        gn = ctx.summaries.get("train/grad_norm")
        if gn and len(gn.spikes) >= thr["min_spikes"]:
            ev["grad_norm_spikes"] = len(gn.spikes)
            ev["spike_examples"] = [[s, rounded(v), rounded(m)] for s, v, m in gn.spikes[:3]]
            sev = "warn"
        bad = sum(1 for _, v in run.history.get("train/loss", []) if not math.isfinite(v))
        if bad:
            ev["non_finite_loss"] = bad
            sev = "alarm"
        loss = ctx.series("train/loss")
        if len(loss) >= thr["min_points"]:
            vals = [v for _, v in loss]
            win = window_size(len(vals), ctx.frac, ctx.min_points)
            alpha, acc, resid = 2 / (win + 1), vals[0], []
            for v in vals:
                acc = alpha * v + (1 - alpha) * acc
                resid.append((v - acc, acc))
            tail = resid[-win:]
            level = median(abs(a) for _, a in tail)
            osc = pstdev([r for r, _ in tail]) / level if level > 0 else 0.0
            if osc > thr["max_loss_osc"]:
                ev["loss_oscillation"] = rounded(osc, 3)
                sev = sev or "warn"
        if sev is None:
            return None
        changes = {}
        lr = cfgkeys.base_lr(run.config)
        if lr:
            changes = cfgkeys.lr_changes(run.config, rounded(lr * self.propose["lr_factor"]))
        return self.finding(sev, ev, changes)


class Divergence(Rule):
    """The loss went down, then blew up: the late window's mean of train/loss is above ``max_rise`` × the lowest
    earlier window's mean and above it by more than the noise (:func:`dpot.analysis.noise.rise_since_best`), or
    the loss turned non-finite after finite values. Proposes the base LR × ``lr_factor`` (a bounded step);
    rolled back as any candidate (objective worse than the parent's by more than ``[rollback] max_regression``)."""

    id = "divergence"
    monitors = ("train/loss", "train/grad_norm")

    def check(self, ctx):
        raw = ctx.run.history.get("train/loss", [])
        loss = ctx.series("train/loss")
        if len(loss) < self.thr["min_points"]:
            return None
        cmp = noise.rise_since_best(loss, ctx.frac, ctx.min_points, self.thr["alpha"])
        first_finite = next((i for i, (_, v) in enumerate(raw) if math.isfinite(v)), None)
        blown = first_finite is not None and any(not math.isfinite(v) for _, v in raw[first_finite:])
        low = cmp.before.mean if cmp is not None else None
        rise = cmp.after.mean / low if cmp is not None and low > 0 else None
        risen = rise is not None and rise > self.thr["max_rise"] and cmp.rose
        if not blown and not risen:
            return None
        late = ctx.late(loss)
        ev = {"loss_low": rounded(low) if low is not None else None, "loss_late": rounded(cmp.after.mean if cmp else
                                                                             median(v for _, v in late)),
              "rise": rounded(rise, 3) if rise is not None else None, "max_rise": self.thr["max_rise"],
              "non_finite_after_finite": blown, "window_steps": f"{late[0][0]}-{late[-1][0]}",
              **(cmp.evidence("low", "late") if cmp is not None else {})}
        lr = cfgkeys.base_lr(ctx.run.config)
        changes = cfgkeys.lr_changes(ctx.run.config, rounded(lr * self.propose["lr_factor"])) if lr else {}
        return self.finding("alarm", ev, changes)


class Overfitting(Rule):
    """The offline eval loss rose beyond its own noise while train/loss kept falling: the late window's mean of
    ``eval/offline_eval/avg_loss`` is above the best earlier window's mean by more than the noise allows
    (:func:`dpot.analysis.noise.rise_since_best`: false alarms <= ``alpha`` on a flat, noisy curve) and by at least
    ``min_rise`` of it, while train/loss's late-window mean is below its mean over the best window's steps.
    Proposes the weight decay (``optimizer.weight_decay``, or ``policy.optimizer_weight_decay`` under the policy
    preset) × ``weight_decay_factor`` (at most ``max_weight_decay``; from ``min_weight_decay`` when it is 0);
    evidence names the windows, the noise and the rise in noise units, and the best window's centre step (its
    checkpoint is the one to keep). Rolled back as any candidate (``[rollback] max_regression``)."""

    id = "overfitting"
    monitors = (EVAL_LOSS, "train/loss")

    def check(self, ctx):
        ev_s, loss = ctx.series(EVAL_LOSS), ctx.series("train/loss")
        if len(ev_s) < self.thr["min_points"] or len(loss) < self.thr["min_points"]:
            return None
        cmp = noise.rise_since_best(ev_s, ctx.frac, ctx.min_points, self.thr["alpha"])
        if cmp is None or cmp.before.mean <= 0 or not cmp.rose or cmp.rel < self.thr["min_rise"]:
            return None
        near = [v for s, v in loss if cmp.before.start <= s <= cmp.before.end]
        if not near:   # train/loss logged more sparsely than the eval: its points up to the window's end
            near = [v for s, v in loss if s <= cmp.before.end][-window_size(len(loss), ctx.frac, ctx.min_points):]
        late_train = sum(v for _, v in ctx.late(loss)) / len(ctx.late(loss))
        if not near or late_train >= sum(near) / len(near):
            return None
        ev = {**cmp.evidence(), "rise_pct": rounded(100 * cmp.rel, 3), "best_step": cmp.before.centre,
              "train_at_best": rounded(sum(near) / len(near)), "late_train": rounded(late_train)}
        changes = {}
        for key in cfgkeys.weight_decay_keys(ctx.run.config):
            wd = cfgkeys.get(ctx.run.config, key)
            new = max(self.propose["min_weight_decay"], wd * self.propose["weight_decay_factor"])
            new = min(self.propose["max_weight_decay"], new)
            if new > wd:
                changes[key] = rounded(new)
        return self.finding("warn", ev, changes)


class ScheduleMismatch(Rule):
    """A varying LR schedule that cannot do within the run what its config says: its warmup is at least
    ``max_warmup_frac`` of the run's steps (a warmup as long as the run never reaches the base LR, and leaves no
    decay), or the logged train/lr never reaches ``min_reached`` × the base LR. Proposes the warmup cut to
    ``target_warmup_frac`` of the steps (at least 1), on the key that holds it; rolled back as any candidate."""

    id = "schedule_mismatch"
    monitors = ("train/lr",)

    def check(self, ctx):
        config = ctx.run.config
        sch = cfgkeys.schedule(config)
        steps = cfgkeys.get(config, cfgkeys.STEPS)
        if sch is None or not sch["varies"] or not isinstance(steps, int) or steps <= 0:
            return None          # a constant schedule ignores its warmup
        warmup = sch["warmup"] if isinstance(sch["warmup"], int) else 0
        lr = ctx.series("train/lr")
        base = cfgkeys.base_lr(config)
        reached = max(v for _, v in lr) / base if lr and base else None
        long_warmup = warmup >= self.thr["max_warmup_frac"] * steps
        never = reached is not None and len(lr) >= self.thr["min_points"] and reached < self.thr["min_reached"]
        if not (long_warmup or never):
            return None
        ev = {"warmup": warmup, "steps": steps, "warmup_frac": rounded(warmup / steps, 3),
              "lr_reached_frac": rounded(reached, 3) if reached is not None else None,
              "scheduler": f"{sch['type']}/{sch['name']}"}
        key = cfgkeys.SCHEDULER_WARMUP if isinstance(config.get(cfgkeys.SCHEDULER), dict) else cfgkeys.POLICY_WARMUP
        new = max(1, round(self.propose["target_warmup_frac"] * steps))
        changes = {key: new} if warmup > new else {}
        return self.finding("alarm" if warmup >= steps else "warn", ev, changes)


class Plateau(Rule):
    """Diminishing returns: the first half fell beyond the noise and the second half gains less than
    ``late_gain_frac`` of it (levels = window means at the start, the middle and the end, windows of the late
    window's length; the first half's fall judged by :func:`dpot.analysis.noise.compare`, so a flat, noisy curve
    is no plateau of a fall that never happened)."""

    id = "plateau"

    def check(self, ctx):
        min_points = self.thr["min_points"]
        key = EVAL_LOSS if len(ctx.run.history.get(EVAL_LOSS, [])) >= min_points else "train/loss"
        series = ctx.series(key)
        if len(series) < min_points:
            return None
        h = len(series) // 2
        w = window_size(len(series), ctx.frac, ctx.min_points)
        start = noise.Window.of(series[:w])
        mid = noise.Window.of(series[max(0, h - w // 2):h - w // 2 + w])
        end = noise.Window.of(series[len(series) - w:])
        sd = noise.noise_sd([v for _, v in series])
        first = noise.compare(start, mid, sd, alpha=self.thr["alpha"], n_noise=len(series))
        gain1, gain2 = start.mean - mid.mean, mid.mean - end.mean
        if not first.fell or gain2 >= self.thr["late_gain_frac"] * gain1:
            return None
        se2 = noise.compare(mid, end, sd).se
        ev = {"metric": key, "first_half_gain": rounded(gain1), "second_half_gain": rounded(gain2),
              "steps": f"{series[0][0]}-{series[h][0]}-{series[-1][0]}", "noise_sd": rounded(sd),
              "first_half_gain_noise_units": rounded(-first.z, 3),
              "second_half_gain_noise_units": rounded(gain2 / se2, 3) if se2 > 0 else None}
        return self.finding("info", ev, monitors=[key])


class Rollback(Rule):
    """The late window's mean eval loss worse than the parent run's late-window mean by more than
    ``max_regression`` AND by more than the two runs' noise (:func:`dpot.analysis.noise.compare`, one-sided at
    ``alpha``)."""

    id = "rollback"
    group = "rollback"
    monitors = (EVAL_LOSS,)

    def check(self, ctx):
        parent = ctx.parent_run
        if parent is None:
            return None
        mine, theirs = ctx.series(EVAL_LOSS), ctx.series(EVAL_LOSS, parent)
        if not mine or not theirs:
            return self.finding("info", {"parent": parent.run_id, "metric": EVAL_LOSS, "child_logged": bool(mine),
                                         "parent_logged": bool(theirs)}, id="rollback_unchecked")
        child, par = noise.Window.of(ctx.late(mine)), noise.Window.of(ctx.late(theirs))
        cmp = noise.compare(par, child, noise.noise_sd([v for _, v in theirs]), alpha=self.thr["alpha"],
                            noise_after=noise.noise_sd([v for _, v in mine]), n_noise=min(len(mine), len(theirs)))
        reg = cmp.change / abs(par.mean) if par.mean else 0.0
        if reg <= self.thr["max_regression"] or not cmp.rose:
            return None
        changes = {}
        flat_p, flat_c = cfgkeys.flatten(parent.config), cfgkeys.flatten(ctx.run.config)
        for k in sorted(set(flat_p) | set(flat_c)):
            if k.split(".")[0] in self.thr["ignore_keys"]:
                continue
            if flat_p.get(k) != flat_c.get(k) and k in flat_p:
                changes[k] = flat_p[k]
        ev = {"parent": parent.run_id, "child_eval": rounded(child.mean), "parent_eval": rounded(par.mean),
              **cmp.evidence("parent", "child"),
              "regression_pct": rounded(100 * reg, 3), "threshold_pct": 100 * self.thr["max_regression"],
              "reverted_keys": sorted(changes)[:12]}
        return self.finding("alarm", ev, changes)


# report order within a severity
FAMILY: tuple[type[Rule], ...] = (Instability, Divergence, Overfitting, ScheduleMismatch, Plateau, Rollback)
