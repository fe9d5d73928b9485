"""Cost balance of the OT arms before any of their study runs: what sets the plan, images or labels?

    .venv/bin/python scripts/cost_balance.py [--preset cpu-idood-powered] [--steps 500] [--out DIR] [--arms a,b]
    .venv/bin/python scripts/cost_balance.py --from-run RUN [--points 10,100,500,1500] --out DIR

``--from-run``: read a study run's own ``metrics.jsonl`` (no training; its ``log_freq``, e.g. 10: the first point is
then the first logged window, steps 1-10) at ``--points``; the table then also gives the per-pair mass Σπ / n
(``n`` = the run's ``ot.pair_batch_size``, or its source items per step).

For each arm (default dp-ot-paper, dp-ot-seed, dp-ot-official) it trains the study's own job config (seed 0, the
preset's data, policy, batch and its full ``steps``, so the LR schedule is the study's) with ``log_freq=1``, stops
the trainer once step ``--steps`` is logged, and reads ``metrics.jsonl`` at steps 0, 100 and 500. The metrics
logged at step s+1 are those of the forward pass of the model after s updates (the plan is computed before the
update), so "step 0" is the initial model; steps 100 and 500 average the logged values of the 20 steps up to them
(one batch is noisy).

Written: ``DIR/balance.json`` (per arm and step: the mean weighted cost per term ``ot_cost_mean/<term>``, a
concatenated term also split into its cameras and the state; the images:label ratio, image costs only, a
concatenated term's state part left out; the embed:label ratio of whole terms; the plan mass ``ot_pi_sum``; the
diagonal share ``ot_pi_diag_frac``; the OT loss next to the BC loss), ``DIR/balance.md`` (the table docs/results.md
quotes), and each run's config, ``ot_terms.json`` and ``metrics.jsonl``. Resumable: an arm whose run reached
``--steps`` is only read.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from dpot import metric_names
from dpot.bench.study.layout import write_json
from dpot.bench.study.plan import Job
from dpot.bench.study.runner import make_study
from dpot.launch import child_env
from dpot.metrics_log import read_metrics
from dpot.rundir import metrics_path

ARMS = ("dp-ot-paper", "dp-ot-seed", "dp-ot-official")
POINTS = (0, 100, 500)
WINDOW = 20


def logged_to(run: Path) -> int:
    """The last step logged in ``run``'s metrics.jsonl (0 when none)."""
    rows = read_metrics(run) if metrics_path(run).is_file() else []
    return max((r["step"] for r in rows), default=0)


def train_arm(study, arm: str, stop: int, out: Path) -> Path:
    """Train ``arm`` (seed 0, the study's job config and schedule) into ``out/runs/<arm>`` until step ``stop`` is
    logged, then stop the trainer; returns the run."""
    run = out / "runs" / arm
    if logged_to(run) >= stop:
        return run
    if run.exists():
        shutil.rmtree(run)
    cfg = study.job_config(Job(study.preset.method_table[arm], 0), study.datasets())
    cfg.update({"log_freq": 1, "save_freq": cfg["steps"], "output_dir": str(run), "job_name": f"cost-balance-{arm}"})
    cfg["ot"]["plan_log_every"] = 0
    path = write_json(out / "configs" / f"{arm}.json", cfg)
    with (out / f"{arm}.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "dpot.train", f"--config_path={path}"], stdout=log,
                                stderr=subprocess.STDOUT, env=child_env(), start_new_session=True)
        try:
            while proc.poll() is None and logged_to(run) < stop:
                time.sleep(5)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
    if logged_to(run) < stop:
        raise SystemExit(f"{arm}: the trainer ended at step {logged_to(run)} before step {stop}; see {log.name}")
    return run


def balance_at(rows: list[dict], kinds: dict[str, str], step: int) -> dict:
    """The balance at ``step``: the row logged at step 1 for step 0, else the mean of the rows in
    ``(step - WINDOW, step]``."""
    rows = [r for r in rows if "train/loss" in r]   # training rows (not the eval/probe rows)
    sel = [r for r in rows if r["step"] == 1] if step == 0 else [r for r in rows if step - WINDOW < r["step"] <= step]
    if not sel:
        raise SystemExit(f"no logged step near {step}")

    def mean(key: str) -> float:
        vals = [r[key] for r in sel if key in r]
        return sum(vals) / len(vals)

    legacy = metric_names.is_legacy(sel[0])    # a run from before the fork's metric meanings
    prefix = "train/" + (metric_names.LEGACY_COST_MEAN if legacy else metric_names.COST)
    terms = {t: mean(f"{prefix}{t}") for t in kinds}
    parts = {k.removeprefix(prefix): mean(k) for k in sel[0] if k.startswith(prefix) and "@" in k}
    embed = sum(v for t, v in terms.items() if kinds[t] == "embed")
    label = sum(v for t, v in terms.items() if kinds[t] == "label")
    # images alone: a concatenated term's image parts (its state part is not an image), every other embed term
    state = sum(v for k, v in parts.items() if k.endswith("@state"))
    images = embed - state
    return {"steps_averaged": [r["step"] for r in sel][:1] + [r["step"] for r in sel][-1:],
            "cost_mean": terms, "cost_parts": parts, "image_to_label": images / label if label > 0 else None,
            "embed_to_label": embed / label if label > 0 else None,
            "pi_sum": mean("train/ot_pi_sum"), "pi_diag_frac": mean("train/ot_pi_diag_frac"),
            "ot_loss": mean("train/ot_loss" if legacy else metric_names.train(metric_names.OT_LOSS_SCALED)),
            "bc_loss": mean("train/bc_loss")}


def render(result: dict) -> str:
    """The Markdown table of ``result`` (one row per arm and step)."""
    lines = ["| arm | step | mean cost per term (weighted) | images : label | embed term(s) : label | plan mass | "
             "diagonal share | OT loss / BC loss |", "|---|---|---|---|---|---|---|---|"]

    def ratio(x) -> str:
        return "n/a" if x is None else f"{x:.3g}"

    pairs = any("n_pairs" in per for per in result["arms"].values())
    if pairs:
        lines = [lines[0].replace("| plan mass |", "| plan mass | per-pair mass |"),
                 lines[1] + "---|"]
    for arm, per in result["arms"].items():
        for step, b in per["points"].items():
            costs = ", ".join(f"{t} {v:.3g}" for t, v in b["cost_mean"].items())
            if b.get("cost_parts"):
                costs += " (" + ", ".join(f"{k} {v:.3g}" for k, v in b["cost_parts"].items()) + ")"
            mass = f"{b['pi_sum']:.3f} |" + (f" {b['pi_sum'] / per['n_pairs']:.4f} |" if pairs else "")
            lines.append(f"| {arm} | {step} | {costs} | {ratio(b['image_to_label'])} | "
                         f"{ratio(b.get('embed_to_label'))} | {mass} {b['pi_diag_frac']:.3f} | "
                         f"{b['ot_loss'] / b['bc_loss']:.2e} |")
    return "\n".join(lines) + "\n"


def from_run(run: Path, points: list[int], out: Path) -> dict:
    """The balance table of an existing run (no training): its own log at ``points``."""
    cfg = json.loads((run / "train_config.json").read_text())
    kinds = json.loads((run / "ot_terms.json").read_text())["terms"]
    rows = read_metrics(run)
    n = cfg["ot"].get("pair_batch_size") or round(cfg["ot"]["batch_ratio"] * cfg["batch_size"])
    arm = cfg.get("job_name") or run.name
    result = {"run": str(run), "seed": cfg.get("seed"), "window": WINDOW, "log_freq": cfg.get("log_freq"),
              "arms": {arm: {"ot": cfg["ot"], "n_pairs": n,
                             "points": {str(s): balance_at(rows, kinds, s) for s in points}}}}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "balance.json", result)
    (out / "balance.md").write_text(render(result))
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu-idood-powered")
    ap.add_argument("--study-dir", default=None, help="the preset's study directory (its data is reused)")
    ap.add_argument("--steps", type=int, default=max(POINTS), help="stop once this step is logged")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--out", default="docs/results/cost-balance")
    ap.add_argument("--from-run", default=None, help="read this run's own log instead of training (no --preset)")
    ap.add_argument("--points", default="10,100,500,1500", help="steps read with --from-run")
    args = ap.parse_args(argv)
    if args.from_run:
        result = from_run(Path(args.from_run), [int(x) for x in args.points.split(",")], Path(args.out))
        print(render(result))
        return 0
    study = make_study(args.preset, root=args.study_dir, progress=False)
    study.open()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"preset": args.preset, "task": study.task, "seed": 0, "window": WINDOW, "arms": {}}
    for arm in args.arms.split(","):
        run = train_arm(study, arm, args.steps, out)
        kinds = json.loads((run / "ot_terms.json").read_text())["terms"]
        rows = read_metrics(run)
        result["arms"][arm] = {"ot": json.loads((run / "train_config.json").read_text())["ot"],
                               "points": {str(s): balance_at(rows, kinds, s) for s in POINTS if s <= args.steps}}
        write_json(out / "balance.json", result)
        (out / "balance.md").write_text(render(result))
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
