"""Markdown report (the seed's sections) and the machine-readable JSON of an analysis."""

from __future__ import annotations

import json
import math
from statistics import median

from dpot import metric_names as mn
from dpot.analysis import cfgkeys
from dpot.analysis.aliases import COST_PREFIXES
from dpot.analysis.diagnose import coupling_band, coupling_key
from dpot.analysis.i18n import finding_text, prose, t
from dpot.analysis.predictivity import predictivity_line
from dpot.analysis.probe_reading import probe_lines
from dpot.analysis.summary import span_text
from dpot.analysis.windows import LATE_FRAC, MIN_POINTS, late_window
from dpot.metric_names import EVAL_LOSS, train
from dpot.rundir import CONFIG_FILE

CORE = ["train/loss", "train/l1_loss", "train/grad_norm", EVAL_LOSS, "train/lr"]
PRIOR_TEXT = {"diagonal": "c = I/N on the partner pairs: the fork's heuristic, plan on the DTW partners",
              "temporal": "dpot's soft prior exp(-|t_i - t_j| / prior_sigma)", "none": "reference a b^T"}
COST_NORM_TEXT = {"none": "plain squared distances, as the fork", "dim": "squared distance / feature count",
                  "median": "squared distance / feature count / batch median"}
OT_KEYS = [train(n) for n in (mn.OT_LOSS, mn.OT_LOSS_SCALED, mn.OT_PI_SUM, mn.OT_PI_DIAG, mn.OT_PI_DIAG_FRAC,
                               mn.OT_PI_PAIR_CV, mn.OT_SKIPPED)]
# listed only when logged (dpot's own quantities: a fork run has no ot_loss_scaled, a run without the diagonal prior
# no ot_pi_pair_cv): "not logged" would be noise
OPTIONAL_OT_KEYS = {train(mn.OT_LOSS_SCALED), train(mn.OT_PI_PAIR_CV)}
# listed when logged (runs before them did not)
SOLVER_KEYS = [train(mn.OT_SINKHORN_ITERS), train(mn.OT_SINKHORN_MAXED), train(mn.OT_SINKHORN_MARGINAL_ERR)]
PI_SUM, PI_DIAG = train(mn.OT_PI_SUM), train(mn.OT_PI_DIAG)


def has_ot(run) -> bool:
    """Whether a report shows the OT rows: the run's config sets up OT or it logged a ``train/ot_*`` series."""
    return cfgkeys.ot_settings(run.config).present or any(k.startswith(train(mn.OT_PREFIX)) for k in run.history)


def fmt(x) -> str:
    """Compact number: 4 significant digits, 'n/a' for None/NaN."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def seen_keys(run, limit: int = 14) -> str:
    """The raw keys the run logged, for 'not logged (seen: ...)'."""
    keys = [k for k in run.raw_keys if not k.startswith("_")]
    more = f", … +{len(keys) - limit}" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more if keys else "no metric at all"


def metric_line(run, summaries, key: str, lang: str = "en") -> str:
    """``key: first → last (±x%), best v@step, smoothed, trend`` or ``not logged (seen: ...)``."""
    s = summaries.get(key)
    if s is None:
        return f"{key}: {t(lang, 'not_logged', seen=seen_keys(run))}"
    src = run.sources.get(key, key)
    alias = f" [logged as `{src}`]" if src != key else ""
    parts = [span_text(s, fmt)]
    if s.change_pct is not None:
        parts[0] += f" ({s.change_pct:+.1f}%)"
    if s.best is not None:
        parts.append(f"{t(lang, 'best')} {fmt(s.best)}@{s.best_step}")
    parts.append(f"smoothed {fmt(s.smoothed_last)}")
    if s.trend_pct is not None:
        parts.append(f"{t(lang, 'trend', w=s.window)} {s.trend_pct:+.1f}%")
    if s.spikes:
        parts.append(f"{len(s.spikes)} {t(lang, 'spikes')} (first @{s.spikes[0][0]})")
    if s.non_finite:
        parts.append(f"{s.non_finite} non-finite")
    return f"{key}{alias}: " + ", ".join(parts) + f" [steps {s.first_step}–{s.last_step}, n={s.n}]"


# the fields each OT feature type has; the resolved config carries every field on every feature
FEATURE_FIELDS = {"embed": ("type", "use_learned_embed", "weight_embed", "cameras", "concat", "include_state",
                            "cost_norm"),
                  "label": ("type", "key", "dim_slice", "time_index", "normalized", "weight_label", "cost_norm")}


def appendix_ot(config: dict) -> dict:
    """``{dotted key: value}`` of the ``ot.*`` settings, sorted; a feature shows only its type's fields
    (:data:`FEATURE_FIELDS`)."""
    flat = cfgkeys.flatten(config)
    out = {}
    for k in sorted(x for x in flat if x.startswith("ot.")):
        parts = k.split(".")
        if len(parts) == 4 and parts[1] == "features":
            ftype = cfgkeys.get(config, f"ot.features.{parts[2]}.type")
            if parts[3] not in FEATURE_FIELDS.get(ftype, (parts[3],)):
                continue
        out[k] = flat[k]
    return out


def _overview(run, summaries) -> list[str]:
    c = run.config
    g = lambda k: cfgkeys.get(c, k)  # noqa: E731
    lines = [f"- Source: {run.kind} — {run.location}", f"- Steps logged: {run.last_step}"
             + (f" of {c['steps']} planned" if c.get("steps") else "")]
    if not c:
        return lines + [f"- Config: not available (no {CONFIG_FILE} / W&B config)"]
    lines.append(f"- Policy: {g('policy.type')} (n_obs_steps={g('policy.n_obs_steps')}, "
                 f"n_action_steps={g('policy.n_action_steps')}, "
                 + (f"chunk_size={g('policy.chunk_size')})" if g("policy.chunk_size") is not None
                    else f"horizon={g('policy.horizon')})"))
    lines.append(f"- Dataset: {g('dataset.repo_id')} (bs={c.get('batch_size')}, steps={c.get('steps')})"
                 + (f"; source: {g('source_dataset.repo_id')}" if g("source_dataset.repo_id") else ""))
    sch = cfgkeys.schedule(c)
    preset = c.get(cfgkeys.PRESET)
    lr_obs = ""
    lr = summaries.get("train/lr")
    if lr:
        lr_obs = " [lr observed constant]" if lr.min == lr.max else f" [train/lr observed {span_text(lr, fmt)}]"
    lines.append(f"- Optim: {'policy presets' if preset else 'explicit'}, lr={fmt(cfgkeys.base_lr(c))} "
                 f"({g('optimizer.type')}), "
                 + (f"{sch['name'] or sch['type']} sched (warmup={sch['warmup']})" if sch else "no scheduler")
                 + lr_obs)
    ot = cfgkeys.ot_settings(c)
    if ot.present:
        feats = []
        for f in g(cfgkeys.OT_FEATURES) or []:
            extra = "".join(f", {k}={f[k]}" for k in ("concat", "include_state", "time_index", "cost_norm")
                            if f.get(k) not in (None, False))
            if f.get("normalized") is False:
                extra += ", raw units"
            if f.get("type") == "embed":
                feats.append(f"images embed: use_learned_embed={f.get('use_learned_embed')}, "
                             f"weight_embed={f.get('weight_embed')}{extra}")
            else:
                feats.append(f"{f.get('key', 'action')} label: dim_slice={f.get('dim_slice')}, "
                             f"weight_label={f.get('weight_label')}{extra}")
        lines.append("- OT setup:")
        lines += [f"  - {x}" for x in feats]
        lines.append(f"  - reg={ot.reg}, tau_src={ot.tau_src}, tau_tgt={ot.tau_tgt}, heuristic={ot.heuristic}")
        lines.append(f"  - prior={ot.prior} ({PRIOR_TEXT.get(ot.prior, '?')}), cost scale: cost_norm={ot.cost_norm} "
                     f"({COST_NORM_TEXT.get(ot.cost_norm, '?')})")
        lines.append(f"  - lambda_ot={ot.lambda_ot}, batch_ratio={g('ot.batch_ratio')}, "
                     f"window_size={g('ot.window_size')}")
    else:
        lines.append("- OT setup: none (not a dpot run: plain LeRobot training)")
    return lines


def _coupling_text(a, ids) -> str:
    """The OT signal in one story: the coupling's late-window median (pi_diag, or the mass under the diagonal prior)
    against the one band the plots shade and the rules use (:func:`dpot.analysis.diagnose.coupling_band`)."""
    ot = cfgkeys.ot_settings(a.run.config)
    key, name = coupling_key(ot)
    series = [(st, v) for st, v in a.run.history.get(key, []) if math.isfinite(v)]
    lo, hi = coupling_band(a.rules)
    other = "" if ot.diagonal or PI_SUM not in a.summaries else f"pi_sum {fmt(a.summaries[PI_SUM].smoothed_last)}, "
    if not series:
        return other + f"{name} not logged"
    window = a.rules.get("window", {})   # the late window the rules judge on (rules.toml [window])
    late = [v for _, v in late_window(series, window.get("frac", LATE_FRAC), window.get("min_points", MIN_POINTS))]
    med = median(late)
    where = "below" if med < lo else ("above" if med > hi else "within")
    txt = f"{other}{name} late-window median {fmt(med)}: {where} the band [{lo:g}, {hi:g}]"
    if where == "above":
        share = sum(v > hi for v in late) / len(late)
        need = a.rules.get("ot_strong", {}).get("sustained_frac", 0.8)
        txt += f" (above it in {share:.0%} of the late window; ot_strong fires from {need:.0%})"
    flags = [i for i in ("ot_weak", "ot_mass_destroyed", "ot_strong", "cost_dominance") if i in ids]
    return txt + (f" — {', '.join(flags)}" if flags else "")


def _assessment(a, lang) -> list[str]:
    ids = {f.id: f for f in a.findings}
    s = a.summaries
    out = []
    ev = s.get(EVAL_LOSS) or s.get("train/loss")
    if ev:
        conv = f"{ev.key} {fmt(ev.first)} → {fmt(ev.last)}"
        if ev.change_pct is not None:
            conv += f" ({ev.change_pct:+.1f}%)"
        conv += "; diminishing returns" if "plateau" in ids else (
            "; still improving" if (ev.trend_pct or 0) < -1 else "; flat over the last window")
        out.append(f"- {t(lang, 'convergence')}: {conv}")
        pred = predictivity_line(a.run.config, lang) if ev.key == EVAL_LOSS else None
        if pred:
            out.append(pred)
    if "instability" in ids:
        out.append(f"- {t(lang, 'stability')}: {finding_text(lang, ids['instability'])}")
    elif "train/grad_norm" in s:
        g = s["train/grad_norm"]
        out.append(f"- {t(lang, 'stability')}: grad_norm {fmt(g.first)} → {fmt(g.last)}, no spikes")
    if PI_SUM in s or PI_DIAG in s:
        out.append(f"- {t(lang, 'ot_signal')}: {_coupling_text(a, ids)}")
    if "lr_flat" in ids:
        out.append(f"- {t(lang, 'lr')}: {finding_text(lang, ids['lr_flat'])}")
    elif "train/lr" in s:
        lr = s["train/lr"]
        how = "constant" if lr.min == lr.max else "varies"
        out.append(f"- {t(lang, 'lr')}: train/lr {span_text(lr, fmt)} ({how})")
    if "lr_high" in ids:
        out.append(f"- {t(lang, 'lr')}: {finding_text(lang, ids['lr_high'])}")
    return out


def rollback_triggers(a) -> list[str]:
    """The run's rollback triggers: its first proposal's, else the eval loss against this run's best."""
    if a.proposals:
        return a.proposals[0].rollback_triggers
    return [f"{EVAL_LOSS} > {1 + a.rules['rollback']['max_regression']:.2f} × this run's best → roll back"]


def render_markdown(a, lang: str = "en", proposal_paths: dict | None = None, plots: list[str] | None = None) -> str:
    """The report of one analysis, in the seed's sections (``plots``: PNG file names next to it, linked at the
    end)."""
    run = a.run
    L = [f"# {t(lang, 'title', run_id=run.run_id)}", "", f"## {t(lang, 'overview')}", *_overview(run, a.summaries), ""]
    L += [f"## {t(lang, 'curves')}"]
    keys = list(CORE)
    if has_ot(run):
        keys += [k for k in OT_KEYS if k in run.history or k not in OPTIONAL_OT_KEYS]
        keys += [k for k in SOLVER_KEYS if k in run.history]
        keys += sorted(k for k in run.history if k.startswith(COST_PREFIXES))
    L += [f"- {metric_line(run, a.summaries, k, lang)}" for k in keys]
    tp = a.throughput
    if tp.get("update_s") is not None:
        line = (f"- {t(lang, 'throughput')}: update_s {fmt(tp['first_update_s'])} → median {fmt(tp['update_s'])} s; "
                f"dataloading_s {fmt(tp['first_dataloading_s'])} → median {fmt(tp['dataloading_s'])} s; "
                f"data-wait share {tp['data_share']:.0%}")
        if tp.get("eval_share") is not None:
            line += f"; eval time share {tp['eval_share']:.0%} ({tp['eval_share_source']})"
        L.append(line)
    else:
        L.append(f"- {t(lang, 'throughput')}: train/update_s {t(lang, 'not_logged', seen=seen_keys(run))}")
    probe = probe_lines(run.history, lang)
    if probe:
        L += ["", f"## {t(lang, 'probe')}", *probe]
    L += ["", f"## {t(lang, 'assessment')}", *_assessment(a, lang), "", f"## {t(lang, 'risks')}"]
    if a.findings:
        for f in a.findings:
            ev = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in f.evidence.items())
            L.append(f"- **[{f.severity}] {f.id}** — {finding_text(lang, f)}")
            L.append(f"  - {t(lang, 'evidence')}: {ev}")
    else:
        L.append(f"- {t(lang, 'no_findings')}")
    L += ["", f"## {t(lang, 'plan')}"]
    if not a.proposals:
        L.append(f"- {t(lang, 'no_proposals')}")
    for p in a.proposals:
        L += ["", f"### {p.name} — {prose(lang, p.title)}", f"- {prose(lang, p.rationale)}"]
        if proposal_paths and p.name in proposal_paths:
            L.append(f"- config: `{proposal_paths[p.name]}` (`dpot train --config_path={proposal_paths[p.name]}`)")
        L.append(f"- {t(lang, 'changes')}:")
        for k, v in p.changes.items():
            L.append(f"  - `{k}`: {json.dumps(cfgkeys.get(run.config, k))} → {json.dumps(v)}")
        L += [prose(lang, f"- triggered by: {', '.join(p.findings) or '—'}")]
        L += [prose(lang, "- note: ") + n for n in p.notes]
    monitors = []
    for p in a.proposals:
        monitors += [m for m in p.monitors if m not in monitors]
    for f in a.findings:
        monitors += [m for m in f.monitors if m not in monitors]
    monitors = monitors or ["train/loss", EVAL_LOSS]
    L += ["", f"## {t(lang, 'monitors')}"] + [f"- {m}" + ("" if m in run.history else
                                                      f" — {t(lang, 'not_logged', seen='…')}") for m in monitors]
    L += ["", f"## {t(lang, 'rollback')}"]
    L += [f"- {prose(lang, x)}" for x in rollback_triggers(a)]
    if a.parent is not None:
        rb = [f for f in a.findings if f.id in ("rollback", "rollback_unchecked")]
        L.append(f"- {t(lang, 'rollback_check')} vs parent {a.parent.run_id}: "
                 + (finding_text(lang, rb[0]) if rb else "OK (within threshold)"))
    L += ["", f"## {t(lang, 'appendix')}"]
    flat = cfgkeys.flatten(run.config)
    for k in ("batch_size", "steps", "seed", "use_policy_training_preset", "policy.optimizer_lr", "optimizer.type",
              "optimizer.lr", "scheduler.type", "scheduler.name", "scheduler.num_warmup_steps", "eval_freq",
              "eval_steps", "log_freq", "save_freq", "num_workers"):
        if k in flat:
            L.append(f"- {k}={json.dumps(flat[k])}")
    L += [f"- {k}={json.dumps(v)}" for k, v in appendix_ot(run.config).items()]
    if a.notes:
        L += ["", f"## {t(lang, 'notes')}"] + [f"- {n}" for n in a.notes]
    if plots:
        L += ["", f"## {t(lang, 'plots')}", ""] + [f"![{p.removesuffix('.png')}]({p})" for p in plots]
    return "\n".join(L) + "\n"


def to_json(a) -> dict:
    """Machine-readable analysis (``--json``)."""
    return {
        "run": {"id": a.run.run_id, "kind": a.run.kind, "location": a.run.location, "last_step": a.run.last_step,
                "parent": a.run.parent, "raw_keys": a.run.raw_keys, "sources": a.run.sources,
                "term_kinds": a.run.term_kinds},
        "summaries": {k: v.as_dict() for k, v in a.summaries.items()},
        "not_logged": [k for k in CORE if k not in a.summaries],
        "throughput": a.throughput,
        "findings": [f.as_dict() for f in a.findings],
        "proposals": [p.as_dict() for p in a.proposals],
        "notes": a.notes,
    }
