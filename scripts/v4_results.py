"""The v4 evidence (docs/results.md, "Pre-registration (v4)") recomputed from the committed raw files.

    .venv/bin/python scripts/v4_results.py [--out docs/results/v4]

Reads the evaluation JSONs (``episode_success`` strings) and ``metrics.jsonl`` files of three kinds of study
directories under ``docs/results``: ``cpu-idood-v4-<task>`` (``dp-ot-faithful``), ``cpu-idood-powered``
(button-press ``naive-cotrain``) and ``cpu-idood-task2`` (drawer-open ``naive-cotrain`` and ``dp-ot-official``).
Writes ``OUT/results.json`` and ``OUT/results.md``: the pre-registered contrasts (H1v4 task-averaged over the seed
pairs, per task, ID, the replication R), the diagonal-plan check of every faithful run, and the probe readings
(P1: faithful − naive accuracy at the last step per camera, seed-paired; P2: Spearman ρ of a run's mean probe
accuracy and its target-OOD success, with a bootstrap interval over runs). Only finished seeds enter (a seed
without its evaluation is left out and the seeds used are listed).
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict
from pathlib import Path

import numpy as np

from dpot.bench.study.contrasts import contrast, seed_rates, t_summary
from dpot.bench.study.layout import eval_file
from dpot.metrics_log import read_metrics

TASKS = {"button-press": "button-press-topdown-v3", "drawer-open": "drawer-open-v3"}
ROOT = Path("docs/results")
# (task, arm) -> the study directory holding that arm's runs
SOURCES = {("button-press", "dp-ot-faithful"): "cpu-idood-v4-button-press",
           ("drawer-open", "dp-ot-faithful"): "cpu-idood-v4-drawer-open",
           ("button-press", "naive-cotrain"): "cpu-idood-powered",
           ("drawer-open", "naive-cotrain"): "cpu-idood-task2",
           ("drawer-open", "dp-ot-official"): "cpu-idood-task2"}
RETRAIN = "v4-naive-retrain"     # v3's button-press naive runs retrained for their probe (scripts/v4_retrain_check.py)
SEEDS = range(5)
CELLS = ("target_ood", "target_id", "source")
PROBE_STEPS = (0, 500, 1000, 1500)


def evals(task: str, arm: str, cell: str) -> dict[int, str]:
    """Seed -> ``episode_success`` of the arm's final evaluations in ``cell`` (seeds 0-4 that exist)."""
    d = SOURCES.get((task, arm))
    out = {}
    for s in SEEDS:
        f = ROOT / d / "evals" / eval_file(f"{arm}-seed{s}", cell) if d else None
        if f is not None and f.is_file():
            out[s] = json.loads(f.read_text())["episode_success"]
    return out


def run_dir(task: str, arm: str, seed: int) -> Path | None:
    d = SOURCES.get((task, arm))
    p = ROOT / d / "runs" / f"{arm}-seed{seed}" if d else None
    return p if p is not None and (p / "metrics.jsonl").is_file() else None


def probe_run(task: str, arm: str, seed: int) -> tuple[Path | None, bool]:
    """The run whose log holds the arm's probe, and whether it is the evaluated run itself: the study's own run
    (True), or for v3's button-press naive runs (no checkpoints kept) their rerun from the saved config under
    ``RETRAIN`` (scripts/v4_retrain_check.py), which is the evaluated run only when its log equals v3's (``same``);
    otherwise it is a rerun of the same config and seed, used for P1 and never paired with v3's success (P2)."""
    if (task, arm) == ("button-press", "naive-cotrain"):
        check = ROOT / RETRAIN / "check.json"
        ok = json.loads(check.read_text()) if check.is_file() else {}
        run = ROOT / RETRAIN / "runs" / f"{arm}-seed{seed}"
        if f"{arm}-seed{seed}" not in ok or not (run / "metrics.jsonl").is_file():
            return None, False
        return run, bool(ok[f"{arm}-seed{seed}"].get("same"))
    return run_dir(task, arm, seed), True


def probes(run: Path) -> dict[int, dict[str, float]]:
    """Step -> camera -> held-out probe accuracy logged in the run (``eval/domain_probe/<camera>``)."""
    out: dict[int, dict[str, float]] = {}
    for r in read_metrics(run):
        for k, v in r.items():
            if k.startswith("eval/domain_probe/") and not k.endswith(("_lo", "_hi")):
                out.setdefault(int(r["step"]), {})[k.removeprefix("eval/domain_probe/")] = float(v)
    return out


def diagonal_check(run: Path) -> dict:
    """Largest |ot_pi_diag − ot_pi_sum| over the run's logged steps (0 under the diagonal prior) and the rows."""
    rows = [r for r in read_metrics(run) if "train/ot_pi_sum" in r]
    gap = max((abs(r["train/ot_pi_diag"] - r["train/ot_pi_sum"]) for r in rows), default=None)
    return {"rows": len(rows), "max_abs_diag_minus_sum": gap,
            "pi_sum_last": rows[-1]["train/ot_pi_sum"] if rows else None}


def spearman_with_ci(x: list[float], y: list[float], reps: int = 10_000, seed: int = 0) -> dict | None:
    """Spearman ρ of ``x`` and ``y`` with a percentile bootstrap 95 % interval over the pairs (None for n < 4)."""
    from scipy import stats

    n = len(x)
    if n < 4:
        return None
    rho = float(stats.spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    xa, ya = np.asarray(x), np.asarray(y)
    boot = []
    for _ in range(reps):
        i = rng.integers(n, size=n)
        if len(set(xa[i])) > 1 and len(set(ya[i])) > 1:
            boot.append(stats.spearmanr(xa[i], ya[i]).statistic)
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    return {"n": n, "rho": rho, "ci95": [float(lo), float(hi)]}


def compute() -> dict:
    out: dict = {"contrasts": [], "task_averaged": {}, "diagonal": {}, "probe": {}}
    for cell in ("target_ood", "target_id"):
        diffs, used = [], []
        for task in TASKS:
            a, b = evals(task, "dp-ot-faithful", cell), evals(task, "naive-cotrain", cell)
            rec = contrast("dp-ot-faithful", "naive-cotrain", cell, a, b)
            rec["task"] = task
            out["contrasts"].append(rec)
            diffs += list(rec["per_seed"].values())
            used += [f"{task}:{s}" for s in rec["seeds"]]
        out["task_averaged"][cell] = {"pairs": used, "summary": asdict(t_summary(diffs)) if diffs else None}
    for cell in ("target_ood", "target_id"):
        rec = contrast("dp-ot-official", "naive-cotrain", cell, evals("drawer-open", "dp-ot-official", cell),
                       evals("drawer-open", "naive-cotrain", cell))
        rec["task"] = "drawer-open"
        out["contrasts"].append(rec)
    for task in TASKS:
        for s in SEEDS:
            run = run_dir(task, "dp-ot-faithful", s)
            if run is not None:
                out["diagonal"][f"{task}:{s}"] = diagonal_check(run)
    # probes
    table, reruns = {}, []
    for task in TASKS:
        for arm in ("dp-ot-faithful", "naive-cotrain", "dp-ot-official"):
            for s in SEEDS:
                run, evaluated = probe_run(task, arm, s)
                p = probes(run) if run is not None else {}
                if p:
                    table[f"{task}:{arm}:{s}"] = {str(k): v for k, v in sorted(p.items())}
                    if not evaluated:
                        reruns.append(f"{task}:{arm}:{s}")
    out["probe"]["runs"] = table
    out["probe"]["reruns"] = reruns       # probed on a rerun of the config, not on the evaluated run: P1 only
    last = str(max(PROBE_STEPS))
    p1 = {}
    for task in TASKS:
        for s in SEEDS:
            f, n = table.get(f"{task}:dp-ot-faithful:{s}", {}), table.get(f"{task}:naive-cotrain:{s}", {})
            if last in f and last in n:
                for cam in f[last]:
                    p1.setdefault(cam, []).append(f[last][cam] - n[last][cam])
    out["probe"]["P1_faithful_minus_naive_at_last_step"] = {cam: asdict(t_summary(d)) for cam, d in p1.items()}
    p2 = {}
    for task in TASKS:
        xs, ys = [], []
        for key, per in table.items():
            t, arm, s = key.split(":")
            ood = evals(t, arm, "target_ood").get(int(s))
            if t == task and last in per and ood and key not in reruns:
                xs.append(statistics.fmean(per[last].values()))
                ys.append(seed_rates({0: ood})[0])
        p2[task] = spearman_with_ci(xs, ys)
    out["probe"]["P2_spearman_probe_vs_ood"] = p2
    return out


def render(res: dict) -> str:
    def pp(x):
        return "–" if x is None else f"{100 * x:+.1f}"

    def ci(c):
        return "–" if c is None else f"[{pp(c[0])}, {pp(c[1])}]"

    lines = ["# v4 results (recomputed from the raw files by scripts/v4_results.py)", "",
             "| contrast | task | cell | seeds | seed-paired mean | 95 % | p (A > B) | p (two-sided) | per seed | "
             "layout-paired [95 %] |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["contrasts"]:
        s, lay = r["seed_paired"], r["layout_paired"]
        if s is None:
            continue
        per = ", ".join(pp(v) for v in r["per_seed"].values())
        p_g = "–" if s["p_greater"] is None else f"{s['p_greater']:.3f}"
        p_2 = "–" if s["p_two_sided"] is None else f"{s['p_two_sided']:.3f}"
        lines.append(f"| {r['a']} − {r['b']} | {r['task']} | {r['cell']} | {len(r['seeds'])} | {pp(s['mean'])} | "
                     f"{ci(s['ci95'])} | {p_g} | {p_2} | {per} | {pp(lay['mean'])} {ci(lay['ci95'])} |")
    lines += ["", "Task-averaged (H1v4 on target_ood; H4v4 on target_id), one difference per seed pair:", ""]
    for cell, t in res["task_averaged"].items():
        s = t["summary"]
        if s:
            p_g = "–" if s["p_greater"] is None else f"{s['p_greater']:.3f}"
            p_2 = "–" if s["p_two_sided"] is None else f"{s['p_two_sided']:.3f}"
            lines.append(f"- {cell}: {len(t['pairs'])} pairs, mean {pp(s['mean'])}, 95 % {ci(s['ci95'])}, "
                         f"one-sided p {p_g}, two-sided p {p_2}")
    lines += ["", "Diagonal plan (max |ot_pi_diag − ot_pi_sum| over logged steps):", ""]
    for k, d in res["diagonal"].items():
        lines.append(f"- {k}: {d['max_abs_diag_minus_sum']} over {d['rows']} rows, last Σπ {d['pi_sum_last']:.3f}")
    lines += ["", "Probe (held-out sim-vs-real accuracy per camera; steps " +
              ", ".join(map(str, PROBE_STEPS)) + "):", ""]
    for k, per in res["probe"]["runs"].items():
        rerun = " (a rerun of the config: probed, not the evaluated run)" if k in res["probe"].get("reruns", []) else ""
        lines.append(f"- {k}{rerun}: " + "; ".join(f"{st}: " + ", ".join(f"{c} {v:.3f}" for c, v in cams.items())
                                           for st, cams in per.items()))
    for cam, s in res["probe"]["P1_faithful_minus_naive_at_last_step"].items():
        interval = "–" if s["ci95"] is None else f"[{s['ci95'][0]:+.3f}, {s['ci95'][1]:+.3f}]"
        lines.append(f"- P1 {cam}: faithful − naive {s['mean']:+.3f} (n {s['n']}), 95 % {interval}")
    for task, r in res["probe"]["P2_spearman_probe_vs_ood"].items():
        lines.append(f"- P2 {task}: " + ("fewer than 4 runs with a probe and an OOD result" if r is None else
                                         f"ρ {r['rho']:+.2f} over {r['n']} runs, 95 % bootstrap "
                                         f"[{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}]"))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/results/v4")
    args = ap.parse_args(argv)
    res = compute()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "results.md").write_text(render(res))
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
