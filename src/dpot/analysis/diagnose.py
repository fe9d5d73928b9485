"""Diagnosis rules. Each rule reads the run's summaries/config and the thresholds of ``rules.toml`` and
returns :class:`Finding` s with the numbers that triggered them (``evidence``) and the config changes
(dotted keys) a next run should try.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import median, pstdev

from dpot.analysis import cfgkeys
from dpot.analysis.summary import MetricSummary

SEVERITIES = ("info", "warn", "alarm")


@dataclass
class Finding:
    """One triggered rule: ``id`` (rule name), ``severity``, ``evidence`` (numbers), proposed ``changes``."""

    id: str
    severity: str
    evidence: dict
    changes: dict = field(default_factory=dict)     # dotted config key -> new value
    group: str = "optim"                            # which proposal it feeds: optim | ot | rollback
    monitors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def _vals(history, key):
    return [(s, v) for s, v in history.get(key, []) if math.isfinite(v)]


def _last_window(series, frac=0.2, min_n=3):
    n = max(min_n, int(round(len(series) * frac)))
    return series[-n:]


def _r(x, nd=4):
    return float(f"{x:.{nd}g}") if isinstance(x, float) and math.isfinite(x) else x


# ------------------------------------------------------------------ optimisation rules

def rule_lr_flat(run, sums, thr, ctx):
    """train/lr constant over the run (warn when a varying schedule is configured or none is)."""
    lr = _vals(run.history, "train/lr")
    if len(lr) < thr["min_points"]:
        return []
    vals = [v for _, v in lr]
    hi, lo = max(vals), min(vals)
    if hi <= 0 or (hi - lo) / hi >= thr["rel_tol"]:
        return []
    sch = cfgkeys.schedule(run.config)
    ev = {"lr_min": _r(lo), "lr_max": _r(hi), "points": len(vals), "steps": f"{lr[0][0]}-{lr[-1][0]}",
          "scheduler": (f"{sch['type']}/{sch['name']} warmup={sch['warmup']}" if sch else "none")}
    changes = {"use_policy_training_preset": False,
               "optimizer": {"type": "adamw", "lr": 3e-4, "weight_decay": 1e-4, "betas": [0.9, 0.999],
                             "eps": 1e-8, "grad_clip_norm": 10.0},
               "scheduler": {"type": "diffuser", "name": "cosine", "num_warmup_steps": 1000}}
    severity = "warn" if (sch is None or sch["varies"]) else "info"
    ev["configured_varies"] = bool(sch and sch["varies"])
    return [Finding("lr_flat", severity, ev, changes, "optim", ["train/lr"])]


def rule_lr_low(run, sums, thr, ctx):
    """Configured base LR below the usual range for the policy type."""
    lr = cfgkeys.base_lr(run.config)
    if lr is None:
        return []
    ptype = cfgkeys.policy_type(run.config) or "default"
    low, high = thr.get(ptype, thr["default"])
    if lr >= low * (1 - 1e-9):
        return []
    new = min(high, max(low, lr * 10))
    ev = {"lr": lr, "policy": ptype, "usual_range": [low, high]}
    key = "optimizer.lr" if run.config.get("use_policy_training_preset") is False else "policy.optimizer_lr"
    changes = {key: new}
    if key == "policy.optimizer_lr" and isinstance(run.config.get("optimizer"), dict):
        changes["optimizer.lr"] = new
    return [Finding("lr_low", "warn", ev, changes, "optim", ["train/loss", "train/grad_norm", "train/lr"])]


def rule_data_bound(run, sums, thr, ctx):
    """Dataloading share of the step time above the threshold."""
    tp = ctx["throughput"]
    share = tp.get("data_share")
    if share is None or share <= thr["max_data_share"]:
        return []
    nw = run.config.get("num_workers")
    ev = {"data_share": _r(share, 3), "dataloading_s": _r(tp["dataloading_s"]), "update_s": _r(tp["update_s"]),
          "num_workers": nw}
    changes = {"num_workers": max(4, 2 * int(nw or 0))} if isinstance(nw, int) or nw is None else {}
    return [Finding("data_bound", "warn", ev, changes, "optim", ["train/dataloading_s", "train/update_s"])]


def rule_eval_too_frequent(run, sums, thr, ctx):
    """Too many evals for the run length, or too much wall time in eval."""
    tp = ctx["throughput"]
    freq = tp.get("eval_freq")
    steps = run.config.get("steps") or run.last_step
    if not freq or not steps:
        return []
    n_evals = steps / freq
    share = tp.get("eval_share")
    if n_evals <= thr["max_evals"] and (share is None or share <= thr["max_eval_share"]):
        return []
    need = steps / thr["max_evals"]
    if share is not None and share > thr["max_eval_share"]:   # share ~ 1/eval_freq
        need = max(need, freq * share * (1 - thr["max_eval_share"]) / (thr["max_eval_share"] * (1 - share)))
    new = int(math.ceil(need / 100.0) * 100) if need >= 100 else int(math.ceil(need))
    new = max(new, freq + 1)
    key = "eval_freq" if "eval_freq" in run.config or "eval_steps" not in run.config else "eval_steps"
    ev = {key: freq, "steps": steps, "evals": int(n_evals), "eval_share": _r(share, 3) if share is not None else None}
    return [Finding("eval_too_frequent", "warn", ev, {key: new}, "optim", ["train/update_s"])]


# ------------------------------------------------------------------ OT rules

def _ot_window(run, key, thr_after):
    series = _vals(run.history, key)
    if not series:
        return None, None, False
    late = [p for p in series if p[0] >= thr_after]
    mature = bool(late)
    return _last_window(late if late else series), series, mature


def rule_ot_weak(run, sums, thr, ctx):
    """Median pi_diag of the last window below the threshold (warn once past after_step)."""
    win, _, mature = _ot_window(run, "train/ot_pi_diag", thr["after_step"])
    if win is None:
        return []
    med = median(v for _, v in win)
    if med >= thr["min_pi_diag"]:
        return []
    ot = run.config.get("ot") or {}
    lam, reg = ot.get("lambda_ot"), ot.get("reg")
    changes = {}
    if isinstance(lam, (int, float)) and lam > 0:
        changes["ot.lambda_ot"] = _r(min(2 * lam, max(lam * 1.5, 0.2)))
    if isinstance(reg, (int, float)):
        changes["ot.reg"] = _r(reg / 2)
    ev = {"pi_diag_median": _r(med), "window_steps": f"{win[0][0]}-{win[-1][0]}", "threshold": thr["min_pi_diag"],
          "after_step": thr["after_step"], "reached_after_step": mature, "lambda_ot": lam, "reg": reg}
    frac = _vals(run.history, "train/ot_pi_diag_frac")
    if frac:
        ev["pi_diag_frac"] = _r(median(v for _, v in _last_window(frac)))
    return [Finding("ot_weak", "warn" if mature else "info", ev, changes, "ot",
                    ["train/ot_pi_diag", "train/ot_pi_sum", "eval/offline_eval/avg_loss"])]


def rule_ot_mass_destroyed(run, sums, thr, ctx):
    """Median pi_sum below the threshold: the unbalanced marginals destroy the mass."""
    win, _, _ = _ot_window(run, "train/ot_pi_sum", 0)
    if win is None:
        return []
    med = median(v for _, v in win)
    if med >= thr["min_pi_sum"]:
        return []
    ot = run.config.get("ot") or {}
    reg, ts, tt = ot.get("reg"), ot.get("tau_src"), ot.get("tau_tgt")
    ev = {"pi_sum_median": _r(med), "threshold": thr["min_pi_sum"], "reg": reg, "tau_src": ts, "tau_tgt": tt}
    if all(isinstance(x, (int, float)) for x in (reg, ts, tt)) and med > 0:
        ev["implied_cost"] = _r(-math.log(med) * (reg + ts + tt))   # mass = exp(-c / (reg + tau_src + tau_tgt))
    means = {k.rsplit("/", 1)[1]: _vals(run.history, k) for k in run.history if k.startswith("train/ot_cost_mean/")}
    if means:
        ev["mean_cost_total"] = _r(sum(median(v for _, v in _last_window(s)) for s in means.values() if s))
    changes = {}
    for key, val in (("ot.tau_src", ts), ("ot.tau_tgt", tt)):
        if isinstance(val, (int, float)):
            changes[key] = _r(2 * val)
    return [Finding("ot_mass_destroyed", "alarm" if med < thr["min_pi_sum"] / 10 else "warn", ev, changes, "ot",
                    ["train/ot_pi_sum", "train/ot_loss"])]


def rule_ot_strong(run, sums, thr, ctx):
    """pi_diag above the threshold in most of the last window, or pi_diag ≈ pi_sum."""
    diag = _vals(run.history, "train/ot_pi_diag")
    if not diag:
        return []
    win = _last_window(diag)
    above = sum(v > thr["max_pi_diag"] for _, v in win) / len(win)
    pisum = _vals(run.history, "train/ot_pi_sum")
    med_diag = median(v for _, v in win)
    ratio = None
    if pisum:
        s = median(v for _, v in _last_window(pisum))
        ratio = med_diag / s if s > 0 else None
    sustained = above >= thr["sustained_frac"]
    on_diag = ratio is not None and ratio > thr["diag_equals_sum"] and med_diag > thr["max_pi_diag"] / 2
    if not (sustained or on_diag):
        return []
    changes = {}
    for i, f in cfgkeys.label_features(run.config):
        w = f.get("weight_label")
        if isinstance(w, (int, float)) and w > 0:
            changes[f"ot.features.{i}.weight_label"] = _r(w / 10)
    ot = run.config.get("ot") or {}
    if isinstance(ot.get("reg"), (int, float)):
        changes["ot.reg"] = _r(ot["reg"] * 2)
    ev = {"pi_diag_median": _r(med_diag), "frac_above": _r(above, 3), "max_pi_diag": thr["max_pi_diag"],
          "pi_diag_over_pi_sum": _r(ratio, 3) if ratio is not None else None, "heuristic": ot.get("heuristic")}
    return [Finding("ot_strong", "warn", ev, changes, "ot",
                    ["train/ot_pi_diag", "eval/offline_eval/avg_loss", "train/l1_loss"])]


def rule_cost_dominance(run, sums, thr, ctx):
    """Largest per-term cost more than max_ratio × the next one."""
    prefix = "train/ot_cost_mean/" if any(k.startswith("train/ot_cost_mean/") for k in run.history) else "train/ot_cost/"
    terms = {k[len(prefix):]: _vals(run.history, k) for k in run.history if k.startswith(prefix)}
    levels = {t: median(abs(v) for _, v in _last_window(s)) for t, s in terms.items() if s}
    if len(levels) < 2:
        return []
    ranked = sorted(levels.items(), key=lambda kv: -kv[1])
    (top, a), (second, b) = ranked[0], ranked[1]
    ratio = a / b if b > 0 else math.inf
    if ratio <= thr["max_ratio"]:
        return []
    # bring the dominant term to ~10x the next one (or, next one ~0, its mean cost to ~0.1); at most /1000
    factor = ratio / 10 if math.isfinite(ratio) else a / 0.1
    factor = min(max(factor, 10.0), 1000.0)
    changes = {}
    label_dominant = "lbl" in top or "label" in top or "action" in top
    feats = cfgkeys.label_features(run.config) if label_dominant else cfgkeys.embed_features(run.config)
    wkey = "weight_label" if label_dominant else "weight_embed"
    for i, f in feats:
        w = f.get(wkey)
        if isinstance(w, (int, float)) and w > 0:
            changes[f"ot.features.{i}.{wkey}"] = float(f"{w / factor:.2g}")
    ev = {"dominant": top, "dominant_cost": _r(a), "next": second, "next_cost": _r(b),
          "ratio": _r(ratio, 3) if math.isfinite(ratio) else "inf", "metric": prefix.rstrip("/"),
          "levels": {t: _r(v) for t, v in levels.items()}}
    return [Finding("cost_dominance", "warn", ev, changes, "ot", [prefix + top, prefix + second])]


def rule_embed_collapse(run, sums, thr, ctx):
    """Image-embedding cost and the embeddings' own spread both fall to a tiny fraction of their start.

    With a scale-dependent cost (``ot.cost_norm`` ``dim`` or ``none``) the OT loss on learned embeddings has a
    trivial minimizer: shrinking the embeddings (the next layers rescale them); BC alone can also make them
    near-constant (in the cpu-small study naive co-training, lambda_ot=0, shrank them as much, measured offline
    on its checkpoints). Either way the image terms fade and the labels alone decide the plan. Alignment lowers the cross-domain cost but not the within-domain spread
    (``train/ot_embed_spread/<camera>``), so both must collapse; runs without the spread metric are not judged.
    ``cost_norm=median`` divides each term by its batch median: scale-invariant.
    """
    norm = cfgkeys.get(run.config, "ot.cost_norm", "dim")
    if norm == "median":
        return []

    def drop(key):
        series = _vals(run.history, key)
        if len(series) < 2 * thr["min_points"]:
            return None
        # start: the first min_points points (the collapse can be over within a fifth of the run: in the
        # cpu-small study the image cost fell 40x in the first 60 of 600 steps); end: the last fifth
        first = median(v for _, v in series[:thr["min_points"]])
        last = median(v for _, v in series[-max(thr["min_points"], len(series) // 5):])
        return (_r(first), _r(last), _r(last / first, 3)) if first > 0 else None

    collapsed = {}
    for key in run.history:
        if not key.startswith("train/ot_cost_mean/img_"):
            continue
        cam = key[len("train/ot_cost_mean/img_"):]
        cost, spread = drop(key), drop(f"train/ot_embed_spread/{cam}")
        if cost and spread and cost[2] < thr["max_ratio"] and spread[2] < thr["max_ratio"]:
            collapsed[cam] = {"cost_first_last_ratio": cost, "spread_first_last_ratio": spread}
    if not collapsed:
        return []
    summary = ", ".join(f"{c}: cost x{v['cost_first_last_ratio'][2]}, spread x{v['spread_first_last_ratio'][2]}"
                        for c, v in collapsed.items())
    ev = {"cost_norm": norm, "max_ratio": thr["max_ratio"], "cameras": collapsed, "summary": summary}
    monitors = [f"train/ot_embed_spread/{c}" for c in collapsed] + [f"train/ot_cost_mean/img_{c}" for c in collapsed]
    return [Finding("embed_collapse", "warn", ev, {"ot.cost_norm": "median"}, "ot", monitors)]


def rule_ot_skipped(run, sums, thr, ctx):
    """OT term skipped (non-finite cost or plan) more often than allowed."""
    sk = _vals(run.history, "train/ot_skipped")
    if not sk:
        return []
    total = max(v for _, v in sk)
    if total <= thr["max_skipped"]:
        return []
    return [Finding("ot_skipped", "alarm", {"ot_skipped": total, "last_step": sk[-1][0]}, {}, "ot",
                    ["train/ot_skipped"])]


# ------------------------------------------------------------------ dynamics rules

def rule_instability(run, sums, thr, ctx):
    """grad_norm spikes, train/loss oscillation around its EMA, or non-finite loss."""
    ev, sev = {}, None
    gn = sums.get("train/grad_norm")
    if gn and len(gn.spikes) >= thr["min_spikes"]:
        ev["grad_norm_spikes"] = len(gn.spikes)
        ev["spike_examples"] = [[s, _r(v), _r(m)] for s, v, m in gn.spikes[:3]]
        sev = "warn"
    loss = _vals(run.history, "train/loss")
    bad = sum(1 for _, v in run.history.get("train/loss", []) if not math.isfinite(v))
    if bad:
        ev["non_finite_loss"] = bad
        sev = "alarm"
    if len(loss) >= thr["min_points"]:
        vals = [v for _, v in loss]
        win = max(3, len(vals) // 5)
        alpha, acc, resid = 2 / (win + 1), vals[0], []
        for v in vals:
            acc = alpha * v + (1 - alpha) * acc
            resid.append((v - acc, acc))
        tail = resid[-win:]
        level = median(abs(a) for _, a in tail)
        osc = pstdev([r for r, _ in tail]) / level if level > 0 else 0.0
        if osc > thr["max_loss_osc"]:
            ev["loss_oscillation"] = _r(osc, 3)
            sev = sev or "warn"
    if sev is None:
        return []
    changes = {}
    lr = cfgkeys.base_lr(run.config)
    if lr:
        key = "optimizer.lr" if run.config.get("use_policy_training_preset") is False else "policy.optimizer_lr"
        changes[key] = _r(lr / 2)
    return [Finding("instability", sev, ev, changes, "optim", ["train/grad_norm", "train/loss"])]


def rule_plateau(run, sums, thr, ctx):
    """Diminishing returns: the second half gains far less than the first half."""
    key = "eval/offline_eval/avg_loss" if len(run.history.get("eval/offline_eval/avg_loss", [])) >= thr["min_points"] \
        else "train/loss"
    series = _vals(run.history, key)
    if len(series) < thr["min_points"]:
        return []
    vals = [v for _, v in series]
    h = len(vals) // 2
    w = max(2, len(vals) // 10)
    start, mid, end = median(vals[:w]), median(vals[h - w // 2:h + w // 2 + 1]), median(vals[-w:])
    gain1, gain2 = start - mid, mid - end
    if gain1 <= 0 or gain2 >= thr["late_gain_frac"] * gain1:
        return []
    ev = {"metric": key, "first_half_gain": _r(gain1), "second_half_gain": _r(gain2),
          "steps": f"{series[0][0]}-{series[h][0]}-{series[-1][0]}"}
    return [Finding("plateau", "info", ev, {}, "optim", [key])]


def rule_rollback(run, sums, thr, ctx):
    """Eval loss worse than the parent run's by more than max_regression."""
    parent = ctx.get("parent_run")
    if parent is None:
        return []
    key = "eval/offline_eval/avg_loss"
    mine, theirs = _vals(run.history, key), _vals(parent.history, key)
    if not mine or not theirs:
        return [Finding("rollback_unchecked", "info", {"parent": parent.run_id, "metric": key,
                                                       "child_logged": bool(mine), "parent_logged": bool(theirs)},
                        {}, "rollback", [key])]
    a = min(v for _, v in _last_window(mine))
    b = min(v for _, v in _last_window(theirs))
    reg = (a - b) / abs(b) if b else 0.0
    if reg <= thr["max_regression"]:
        return []
    changes = {}
    flat_p, flat_c = cfgkeys.flatten(parent.config), cfgkeys.flatten(run.config)
    for k in sorted(set(flat_p) | set(flat_c)):
        if k.split(".")[0] in ("output_dir", "job_name", "wandb", "dpot_meta", "resume", "seed"):
            continue
        if flat_p.get(k) != flat_c.get(k) and k in flat_p:
            changes[k] = flat_p[k]
    ev = {"parent": parent.run_id, "child_eval": _r(a), "parent_eval": _r(b), "regression_pct": _r(100 * reg, 3),
          "threshold_pct": 100 * thr["max_regression"], "reverted_keys": sorted(changes)[:12]}
    return [Finding("rollback", "alarm", ev, changes, "rollback", [key])]


RULES = {
    "lr_flat": rule_lr_flat, "lr_low": rule_lr_low, "data_bound": rule_data_bound,
    "eval_too_frequent": rule_eval_too_frequent, "ot_weak": rule_ot_weak,
    "ot_mass_destroyed": rule_ot_mass_destroyed, "ot_strong": rule_ot_strong,
    "cost_dominance": rule_cost_dominance, "embed_collapse": rule_embed_collapse, "ot_skipped": rule_ot_skipped, "instability": rule_instability,
    "plateau": rule_plateau, "rollback": rule_rollback,
}


def diagnose(run, sums: dict[str, MetricSummary], rules: dict, ctx: dict) -> list[Finding]:
    """Run every enabled rule; ``ctx`` holds ``throughput`` and optionally ``parent_run``."""
    out: list[Finding] = []
    for name, fn in RULES.items():
        thr = rules.get(name, {})
        if not thr.get("enabled", True):
            continue
        out.extend(fn(run, sums, thr, ctx))
    order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
    return sorted(out, key=lambda f: order[f.severity])
