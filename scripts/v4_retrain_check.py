"""Issue 31, probe P1 on button-press: v3's `naive-cotrain` runs kept no checkpoints, so they are retrained from their
saved configs with the domain probe logged every 500 steps (training is deterministic on one CPU thread). This
checks each finished retrain against v3's own log and keeps the small raw files beside the other v4 results.

    .venv/bin/python scripts/v4_retrain_check.py [--retrain outputs/retrain] [--out docs/results/v4-naive-retrain]

For every ``<retrain>/naive-cotrain-seed<N>`` whose training finished (its metrics reach v3's last logged step),
every numeric key both logs share at every step both log is compared (the timing keys ``train/update_s`` and
``train/dataloading_s`` excepted: wall-clock): ``max_abs_diff`` and ``max_rel_diff`` per run, and ``same`` when
every relative difference is below 1e-6; ``first_loss_rel_diff``: the relative difference of ``train/loss`` at the
first logged step (how far apart the two runs start). ``<out>/runs/naive-cotrain-seed<N>/`` gets the retrain's
``metrics.jsonl`` and ``train_config.json``; ``<out>/check.json`` the comparison. scripts/v4_results.py reads the
button-press naive arm's probe from there: a retrain whose check says ``same`` is v3's evaluated run; any other is a
rerun of the same config and seed (its weights are not the evaluated ones), used for the probe contrast P1 only and
never paired with v3's success (P2).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

from dpot.metrics_log import read_metrics

V3 = Path("docs/results/cpu-idood-powered/runs")
TIMING = ("train/update_s", "train/dataloading_s")
REL_TOL = 1e-6


def by_step(rows: list[dict]) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for r in rows:
        out.setdefault(int(r["step"]), {}).update(r)
    return out


def compare(v3: list[dict], new: list[dict]) -> dict:
    """Largest absolute and relative difference over the steps and numeric keys both logs share."""
    a, b = by_step(v3), by_step(new)
    worst_abs = worst_rel = 0.0
    n = 0
    for step in sorted(set(a) & set(b)):
        for key in set(a[step]) & set(b[step]):
            x, y = a[step][key], b[step][key]
            if key == "step" or key in TIMING or not all(isinstance(v, (int, float)) for v in (x, y)):
                continue
            d = abs(float(x) - float(y))
            if math.isnan(d):
                d = 0.0 if (math.isnan(x) and math.isnan(y)) else math.inf
            worst_abs = max(worst_abs, d)
            worst_rel = max(worst_rel, d / max(abs(float(x)), 1e-12))
            n += 1
    shared = sorted(s for s in set(a) & set(b) if "train/loss" in a[s] and "train/loss" in b[s])
    first = (abs(a[shared[0]]["train/loss"] - b[shared[0]]["train/loss"]) / max(abs(a[shared[0]]["train/loss"]), 1e-12)
             if shared else None)
    return {"values_compared": n, "steps_compared": len(set(a) & set(b)), "max_abs_diff": worst_abs,
            "max_rel_diff": worst_rel, "first_loss_rel_diff": first, "same": n > 0 and worst_rel < REL_TOL}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--retrain", default="outputs/retrain")
    p.add_argument("--out", default="docs/results/v4-naive-retrain")
    a = p.parse_args(argv)
    out = Path(a.out)
    check = {}
    for seed in range(5):
        name = f"naive-cotrain-seed{seed}"
        run, ref = Path(a.retrain) / name, V3 / name / "metrics.jsonl"
        if not (run / "metrics.jsonl").is_file() or not ref.is_file():
            continue
        v3, new = read_metrics(ref), read_metrics(run)
        if max(r["step"] for r in new) < max(r["step"] for r in v3):
            continue                                    # still training
        check[name] = compare(v3, new)
        dst = out / "runs" / name
        dst.mkdir(parents=True, exist_ok=True)
        for f in ("metrics.jsonl", "train_config.json"):
            shutil.copy(run / f, dst / f)
        print(f"{name}: {check[name]}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "check.json").write_text(json.dumps(check, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
