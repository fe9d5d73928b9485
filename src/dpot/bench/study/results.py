"""The study's results: OT metrics per run (from its log), pooled success per method and cell, results.json."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from dpot import metric_names as mn
from dpot.atomic import write_text
from dpot.bench.study.layout import StudyDir, write_json
from dpot.bench.study.rendering import plot_curves, render_markdown
from dpot.errors import UserError
from dpot.rundir import metrics_path

OT_PREFIXES = tuple(mn.train(k) for k in (mn.COST, mn.COST_PLAN, mn.EMBED_SPREAD))
OT_KEYS = (*(mn.train(k) for k in (mn.OT_PI_SUM, mn.OT_PI_DIAG, mn.OT_PI_DIAG_FRAC, mn.OT_LOSS, mn.OT_LOSS_SCALED,
                                    mn.OT_SKIPPED, mn.OT_PI_PAIR_CV)),
           "train/loss", "train/bc_loss_src", "train/bc_loss_tgt")


def ot_metrics(run_dir: Path, tail: float = 0.1) -> dict:
    """OT and loss metrics of a run (``dpot.analysis`` reader): pi_sum, pi_diag, per-term costs, BC losses.

    Each value is the mean over the last ``tail`` fraction of the logged points (at least one): single OT
    batches are noisy (a 16x16 plan), the late-training level is what a reader compares across runs.
    ``first/<key>`` holds the first logged value (where the run started)."""
    from dpot.analysis.readers import open_run

    try:
        run = open_run(str(run_dir))
    except UserError as err:
        return {"error": str(err)}
    out = {}
    for key, series in run.history.items():
        if series and (key in OT_KEYS or key.startswith(OT_PREFIXES)):
            last = [v for _, v in series[-max(1, int(len(series) * tail)):]]
            out[key] = sum(last) / len(last)
            out[f"first/{key}"] = series[0][1]
    out["last_step"] = run.last_step
    return out


# ------------------------------------------------------------------ results
def aggregate(markers: list[dict], order: list[str] | None = None) -> dict:
    """Per method (in ``order``, default the v1 methods'; unknown names last): pooled success per evaluation
    cell over all episodes of all seeds (Wilson 95%), per-seed values, the learning curve (pooled success per
    step in the first curve cell; ``curves``: every curve cell) and the OT metrics of each run."""
    from dpot.bench.evaluate import wilson_interval
    from dpot.bench.presets import METHODS

    methods: dict[str, dict] = {}
    order = list(METHODS) if order is None else list(order)
    for m in sorted(markers, key=lambda m: (order.index(m["method"]) if m["method"] in order else 99, m["seed"])):
        entry = methods.setdefault(m["method"], {"seeds": [], "domains": {}, "curve": {}, "runs": {}})
        entry["seeds"].append(m["seed"])
        for domain, e in m["evals"].items():
            d = entry["domains"].setdefault(domain, {"successes": 0, "episodes": 0, "per_seed": []})
            d["successes"] += e["successes"]
            d["episodes"] += e["episodes"]
            d["per_seed"].append({"seed": m["seed"], "successes": e["successes"], "episodes": e["episodes"],
                                  "success_rate": e["success_rate"]})
        for cell, points in (m.get("curves") or {"target": m["curve"]}).items():
            for point in points:
                if "successes" in point:
                    pooled = entry.setdefault("curves", {}).setdefault(cell, {})
                    c = pooled.setdefault(str(point["step"]), {"successes": 0, "episodes": 0, "seeds": 0})
                    c["successes"] += point["successes"]
                    c["episodes"] += point["episodes"]
                    c["seeds"] += 1
        entry["runs"][m["job"]] = m["ot"]
    for m in markers:  # "curve": the first curve cell's (the target-domain curve of v1 studies)
        entry = methods[m["method"]]
        entry["curve"] = entry.get("curves", {}).get(m.get("curve_cell") or "target", {})
    for entry in methods.values():
        curve_points = [c for cells in entry.get("curves", {}).values() for c in cells.values()]
        for d in list(entry["domains"].values()) + curve_points:
            d["success_rate"] = d["successes"] / max(d["episodes"], 1)
            d["ci95"] = list(wilson_interval(d["successes"], d["episodes"]))
        for d in entry["domains"].values():
            rates = [s["success_rate"] for s in d["per_seed"]]
            d["seed_mean"] = statistics.mean(rates)
            d["seed_std"] = statistics.stdev(rates) if len(rates) > 1 else None   # sample sd over seeds
    return methods


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("dpot", "lerobot", "metaworld", "mujoco", "torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _data_fingerprints(study: StudyDir) -> dict:
    """The study's generated datasets' fingerprints by role (:func:`dpot.bench.fingerprint.dataset_fingerprint`);
    a dataset not on disk (a kept study without its data) is left out."""
    from dpot.bench.fingerprint import dataset_fingerprint

    out = {}
    for role in ("source", "target"):
        root = study.root / "data" / f"{study.task}_{role}"
        if root.is_dir():
            out[role] = dataset_fingerprint(root)
    return out


def registered_contrasts(study: StudyDir, markers: list[dict]) -> list[dict]:
    """The preset's pre-registered contrasts (:data:`dpot.bench.presets.CONTRASTS`) in its target cells, from the
    evaluation JSONs' per-episode outcomes: first at the first ``FIRST_SEEDS`` seeds (the primary analysis), then,
    when later seeds exist, at all common seeds (``"analysis": "primary" | "all seeds"``)."""
    from dpot.bench.presets import CONTRASTS
    from dpot.bench.study.contrasts import contrast
    from dpot.bench.study.plan import FIRST_SEEDS, Job

    p = study.preset
    by_arm: dict[str, dict[str, dict[int, str]]] = {}
    for m in markers:
        job = Job(p.method_table[m["method"]], m["seed"]) if m["method"] in p.method_table else None
        for cell in p.eval_domains:
            path = study.eval_path(job, cell) if job else None
            if path is not None and path.is_file():
                ev = json.loads(path.read_text())
                if ev.get("episode_success"):
                    by_arm.setdefault(m["method"], {}).setdefault(cell, {})[m["seed"]] = ev["episode_success"]
    out = []
    for a, b in CONTRASTS.get(p.methods, ()):
        for cell in (c for c in p.eval_domains if c.startswith("target")):
            ea, eb = by_arm.get(a, {}).get(cell, {}), by_arm.get(b, {}).get(cell, {})
            common = sorted(set(ea) & set(eb))
            if not common:
                continue
            first = [s for s in common if s < FIRST_SEEDS]
            if first:
                out.append({**contrast(a, b, cell, ea, eb, first), "analysis": "primary"})
            if len(common) > len(first):
                out.append({**contrast(a, b, cell, ea, eb, common), "analysis": "all seeds"})
    return out


def write_results(study: StudyDir) -> dict:
    """Collect every done marker of the study into ``results.json``, ``results.md`` and ``curves.png``."""
    markers = [json.loads(p.read_text()) for p in sorted((study.root / "done").glob("*.json"))]
    for m in markers:  # recomputed from the run's log when it is here (markers of older versions: last value)
        run = study.root / "runs" / m["job"]
        if metrics_path(run).is_file():
            m["ot"] = ot_metrics(run)
    p = study.preset
    results = {"preset": p.name, "task": study.task, "steps": p.steps, "obs": p.obs, "shift": p.shift,
               "eval_episodes": p.eval_episodes, "curve_episodes": p.curve_episodes,
               "eval_cells": {c: dict(zip(("domain", "region"), study.cell(c), strict=True)) for c in p.eval_domains},
               "curve_cell": p.curve_domains[0] if p.curve_domains else None, "eval_seed": p.eval_seed,
               "source_eval_episodes": p.cell_episodes("source"),
               "jobs_done": sorted(m["job"] for m in markers), "versions": _versions(),
               "data_sha256": _data_fingerprints(study),
               "methods": aggregate(markers, list(p.method_table))}
    results["contrasts"] = registered_contrasts(study, markers)
    write_json(study.root / "results.json", results)
    png = plot_curves(results, study.root / "curves.png")
    write_text(study.root / "results.md", render_markdown(results, png.name if png else None))
    return results


__all__ = ["OT_KEYS", "OT_PREFIXES", "aggregate", "ot_metrics", "write_results"]
