"""The optimisation rules: the LR against its usual range and its schedule (``lr_flat``, ``lr_low``,
``lr_high``), and where the step time goes (``data_bound``, ``eval_too_frequent``). Each is one table of
``rules.toml``; :mod:`dpot.analysis.diagnose` runs them (:mod:`dpot.analysis.rule_base`: what a rule is).
"""

from __future__ import annotations

import copy
import math

from dpot.analysis import cfgkeys, noise
from dpot.analysis.rule_base import Rule, rounded


class LrFlat(Rule):
    """train/lr constant over the run: a warning with a proposal (an explicit warmup-cosine schedule) when a
    varying schedule is configured or none is; information only, with nothing to propose, when the configured
    schedule is constant (the run does what its config says: a choice, not a fault; the autopilot's sampler draws
    it, and a proposal here would undo that draw in the next iteration, as the issue-22 follow-up's first cells
    showed)."""

    id = "lr_flat"
    monitors = ("train/lr",)

    def check(self, ctx):
        lr = ctx.series("train/lr")
        if len(lr) < self.thr["min_points"]:
            return None
        vals = [v for _, v in lr]
        hi, lo = max(vals), min(vals)
        if hi <= 0 or (hi - lo) / hi >= self.thr["rel_tol"]:
            return None
        sch = cfgkeys.schedule(ctx.run.config)
        ev = {"lr_min": rounded(lo), "lr_max": rounded(hi), "points": len(vals), "steps": f"{lr[0][0]}-{lr[-1][0]}",
              "scheduler": (f"{sch['type']}/{sch['name']} warmup={sch['warmup']}" if sch else "none")}
        ptype, low, high = self.lr_range(ctx.run.config)
        if sch is None and ptype in self.thr.get("constant_ok", []):
            return None  # e.g. ACT: LeRobot's preset has no scheduler, a constant LR is the preset
        ev["configured_varies"] = bool(sch and sch["varies"])
        if sch is not None and not sch["varies"]:
            return self.finding("info", ev)
        changes = copy.deepcopy(self.propose)
        proposed_lr = cfgkeys.get(changes, cfgkeys.LR)
        if cfgkeys.is_number(proposed_lr):  # the policy's usual range (ACT: not Diffusion's 3e-4)
            changes = cfgkeys.set_(changes, cfgkeys.LR, min(high, max(low, proposed_lr)))
        steps = cfgkeys.get(ctx.run.config, cfgkeys.STEPS)
        warmup = cfgkeys.get(changes, cfgkeys.SCHEDULER_WARMUP)
        if isinstance(steps, int) and steps > 0 and isinstance(warmup, int):
            changes = cfgkeys.set_(changes, cfgkeys.SCHEDULER_WARMUP,
                                   min(warmup, max(1, round(self.thr["max_warmup_frac"] * steps))))
        return self.finding("warn", ev, changes)


class LrLow(Rule):
    """Configured base LR below the usual range for the policy type."""

    id = "lr_low"
    monitors = ("train/loss", "train/grad_norm", "train/lr")
    into_range = True

    def check(self, ctx):
        config = ctx.run.config
        lr = cfgkeys.base_lr(config)
        if lr is None:
            return None
        ptype, low, high = self.lr_range(config)
        if lr >= low * (1 - 1e-9):
            return None
        new = min(high, max(low, lr * self.propose["lr_factor"]))
        return self.finding("warn", {"lr": lr, "policy": ptype, "usual_range": [low, high]},
                            cfgkeys.lr_changes(config, new))


class LrHigh(Rule):
    """Configured base LR far above the usual range for the policy type AND a stalled train/loss: the late
    window's mean is above ``max_late_over_early`` × the start level (the first window's mean, or the first point
    when lower: a blow-up right after the start is no progress) by more than the noise allows (windows of the late
    window's length, :func:`dpot.analysis.noise.fall_since_start`; one-sided at alpha 0.05: a loss that ends near
    half its start does not flip to "stalled" with one noisy window), or the loss went non-finite. The symmetric
    case of :class:`LrLow`; proposes the LR divided by ``lr_divisor``, clipped into the usual range (a known-good
    value, as a person would set it)."""

    id = "lr_high"
    monitors = ("train/loss", "train/grad_norm", "train/lr")
    into_range = True

    def check(self, ctx):
        config = ctx.run.config
        lr = cfgkeys.base_lr(config)
        logged = ctx.series("train/lr")
        if lr is None and logged:
            lr = max(v for _, v in logged)
        if lr is None:
            return None
        ptype, low, high = self.lr_range(config)
        if lr <= high * self.thr["far_factor"]:
            return None
        raw = ctx.run.history.get("train/loss", [])
        loss = ctx.series("train/loss")
        n0 = self.thr["min_points"]
        non_finite = len(raw) - len(loss)
        ev = {"lr": rounded(lr), "policy": ptype, "usual_range": [low, high], "far_factor": self.thr["far_factor"]}
        cmp = noise.fall_since_start(loss, ctx.frac, ctx.min_points) if len(loss) >= 2 * n0 else None
        stalled = False     # too few finite points to judge a stall: only a non-finite loss counts
        if cmp is not None:
            # the start level: the first window's mean, or the very first point when lower (a blow-up right after
            # the start is no progress; not the window's lowest point, which noise alone pulls down); the late
            # level: the late window's mean
            early, late = min(loss[0][1], cmp.before.mean), cmp.after.mean
            ratio = late / early if early > 0 else math.inf
            ev.update({"loss_start": rounded(early), "loss_late": rounded(late), "late_over_early": rounded(ratio, 3),
                       "max_late_over_early": self.thr["max_late_over_early"],
                       "window_steps": f"{cmp.after.start}-{cmp.after.end}",
                       **cmp.evidence("start", "late")})
            # not halved, beyond the noise: the late mean exceeds max_late_over_early x the start by more than
            # the sd of that difference allows (an edge case at ratio ~0.5 does not flip with one noisy window)
            margin = late - self.thr["max_late_over_early"] * early
            stalled = ratio >= self.thr["max_late_over_early"] and margin > noise.z_needed(1) * cmp.se
        if non_finite:
            ev["non_finite_loss"] = non_finite
            stalled = True
        if not stalled:
            return None
        parent = ctx.parent_run
        parent_late = ctx.late_median_of("train/loss", parent) if parent is not None else None
        if parent_late is not None:
            ev["parent_loss_late"] = rounded(parent_late)
            ev["parent_lr"] = cfgkeys.base_lr(parent.config)
        new = max(low, min(high, lr / self.propose["lr_divisor"]))
        return self.finding("alarm", ev, cfgkeys.lr_changes(config, rounded(new)))


class DataBound(Rule):
    """Dataloading share of the step time above the threshold."""

    id = "data_bound"
    monitors = ("train/dataloading_s", "train/update_s")

    def check(self, ctx):
        tp = ctx.throughput
        share = tp.get("data_share")
        if share is None or share <= self.thr["max_data_share"]:
            return None
        nw = cfgkeys.get(ctx.run.config, cfgkeys.NUM_WORKERS)
        ev = {"data_share": rounded(share, 3), "dataloading_s": rounded(tp["dataloading_s"]),
              "update_s": rounded(tp["update_s"]), "num_workers": nw}
        changes = {}
        if isinstance(nw, int) or nw is None:
            changes[cfgkeys.NUM_WORKERS] = max(self.propose["min_workers"],
                                               self.propose["workers_factor"] * int(nw or 0))
        return self.finding("warn", ev, changes)


class EvalTooFrequent(Rule):
    """Too many evals for the run length, or too much wall time in eval."""

    id = "eval_too_frequent"
    monitors = ("train/update_s",)

    def check(self, ctx):
        tp, config = ctx.throughput, ctx.run.config
        freq = tp.get("eval_freq")
        steps = cfgkeys.get(config, cfgkeys.STEPS) or ctx.run.last_step
        if not freq or not steps:
            return None
        max_evals, max_share = self.thr["max_evals"], self.thr["max_eval_share"]
        n_evals = steps / freq
        share = tp.get("eval_share")
        if n_evals <= max_evals and (share is None or share <= max_share):
            return None
        need = steps / max_evals
        if share is not None and share > max_share:   # share ~ 1/eval_freq
            need = max(need, freq * share * (1 - max_share) / (max_share * (1 - share)))
        unit = self.propose["round_to"]
        new = int(math.ceil(need / unit) * unit) if need >= unit else int(math.ceil(need))
        new = max(new, freq + 1)
        if new > steps:       # never beyond the run's own length: one eval, at the end
            new = int(steps)
        key = "eval_freq" if "eval_freq" in config or "eval_steps" not in config else "eval_steps"
        ev = {key: freq, "steps": steps, "evals": int(n_evals),
              "eval_share": rounded(share, 3) if share is not None else None}
        return self.finding("warn", ev, {key: new})


# report order within a severity
FAMILY: tuple[type[Rule], ...] = (LrFlat, LrLow, LrHigh, DataBound, EvalTooFrequent)
