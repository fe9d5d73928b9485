"""False-alarm and miss rates of the level-comparing diagnoses on synthetic series (docs/benchmarks.md, "Noise-aware
diagnoses"): each rule runs as ``dpot report`` runs it (``dpot.analysis.diagnose``, rules.toml's thresholds) on a
dpot run built in memory, over many seeds, per noise level and logging rate.

    .venv/bin/python benchmarks/noise_rules.py [--seeds 400] [--out results.json]

Scenarios (noise = per-point sd relative to the level; ``n`` logged points):
- overfitting: held-out loss 0.083 after an early drop, flat (null) or rising smoothly from 60 % to 80 % of the run
  to +10 % / +20 % and held there, while train/loss keeps falling; the old rule (late median vs the single best
  earlier point, +10 %) beside it;
- divergence: train/loss decays to a floor, then flat (null) or rising 4x from 60 % to 80 % of the run and held;
- plateau: train/loss flat from the start (null: nothing fell, no "diminishing returns") or decaying then flat;
- rollback: a child whose held-out loss is the parent's (null) or 15 % / 25 % worse;
- lr_high (stall): LR 3e-2 with train/loss falling to a quarter (null: it more than halved) or flat.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from dpot.analysis.diagnose import RULES, RuleContext
from dpot.analysis.readers import Run
from dpot.analysis.rules import default_rules
from dpot.metric_names import EVAL_LOSS as EVAL

CONFIG = {"steps": 5000, "policy": {"type": "diffusion"}, "optimizer": {"type": "adamw", "lr": 1e-4,
                                                                        "weight_decay": 1e-4}}


def run_of(history: dict[str, np.ndarray], config: dict | None = None, name: str = "run") -> Run:
    steps = {k: np.arange(1, len(v) + 1) * (5000 // len(v)) for k, v in history.items()}
    return Run(name, "dpot", name, config=config or CONFIG,
               history={k: [(int(s), float(x)) for s, x in zip(steps[k], v)] for k, v in history.items()})


def fires(rule: str, run: Run, parent: Run | None = None) -> bool:
    rules = default_rules()
    return RULES[rule](rules.get(rule, {}), rules).check(RuleContext(run, parent_run=parent)) is not None


def _drop(n: int) -> np.ndarray:
    d = np.zeros(n)
    d[:3] = [2.4, 1.0, 0.4]
    return d


def overfitting(rng, n: int, noise: float, rise: float) -> tuple[Run, None]:
    t = np.arange(n) / (n - 1)
    level = 0.083 * (1 + rise * np.clip((t - 0.6) / 0.2, 0, 1))
    ev = level * (1 + _drop(n)) + rng.normal(0, noise * 0.083, n)
    train = 0.05 + 0.5 * np.exp(-5 * t) + rng.normal(0, 0.002, n)
    return run_of({EVAL: ev, "train/loss": train}), None


def old_overfitting(run: Run) -> bool:
    """The rule before this change: late median above 1.1 x the single best earlier point."""
    ev = [v for _, v in run.history[EVAL]]
    w = max(3, round(0.2 * len(ev)))
    return float(np.median(ev[-w:])) > 1.1 * min(ev[:-w])


def divergence(rng, n: int, noise: float, rise: float) -> tuple[Run, None]:
    t = np.arange(n) / (n - 1)
    level = 0.1 + np.exp(-8 * t)
    level = level * (1 + (rise - 1) * np.clip((t - 0.6) / 0.2, 0, 1)) if rise else level
    return run_of({"train/loss": level * (1 + rng.normal(0, noise, n))}), None


def plateau(rng, n: int, noise: float, fall: float) -> tuple[Run, None]:
    t = np.arange(n) / (n - 1)
    level = 0.1 * (1 + fall * np.exp(-12 * t))
    return run_of({"train/loss": level * (1 + rng.normal(0, noise, n))}), None


def rollback(rng, n: int, noise: float, worse: float) -> tuple[Run, Run]:
    def curve(scale):
        return run_of({EVAL: 0.083 * scale * (1 + _drop(n)) * (1 + rng.normal(0, noise, n))})
    return curve(1 + worse), curve(1.0)


def lr_high(rng, n: int, noise: float, stall: float) -> tuple[Run, None]:
    t = np.arange(n) / (n - 1)
    level = 1.0 - (0.0 if stall else 0.75) * t
    cfg = {**CONFIG, "optimizer": {"type": "adamw", "lr": 3e-2}}
    return run_of({"train/loss": level * (1 + rng.normal(0, noise, n))}, cfg), None


# rule -> (scenario, null effect, effects that should be found, what the effect is)
SCENARIOS = {
    "overfitting": (overfitting, 0.0, (0.10, 0.20), "rise"),
    "divergence": (divergence, 0.0, (4.0,), "x rise"),
    "plateau": (plateau, 0.0, (3.0,), "early fall (x level)"),
    "rollback": (rollback, 0.0, (0.15, 0.25), "worse"),
    "lr_high": (lr_high, 0.0, (1.0,), "stalled"),
}
NOISES = (0.05, 0.13, 0.25)
POINTS = (20, 50, 100)


def rates(rule: str, n: int, noise: float, effect: float, seeds: int) -> tuple[float, float | None]:
    """(fraction of seeds the rule fired on, the old overfitting rule's fraction or None)."""
    fn = SCENARIOS[rule][0]
    hits, old = 0, 0
    for s in range(seeds):
        run, parent = fn(np.random.default_rng([n, int(noise * 1000), int(effect * 1000), s]), n, noise, effect)
        hits += fires(rule, run, parent)
        if rule == "overfitting":
            old += old_overfitting(run)
    return hits / seeds, (old / seeds if rule == "overfitting" else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=400)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for rule, (_, null, effects, what) in SCENARIOS.items():
        for n in POINTS:
            for noise in NOISES:
                fa, old_fa = rates(rule, n, noise, null, args.seeds)
                found = {e: rates(rule, n, noise, e, args.seeds) for e in effects}
                rows.append({"rule": rule, "points": n, "noise": noise, "false_alarm": fa, "old_false_alarm": old_fa,
                             "found": {str(e): f for e, (f, _) in found.items()},
                             "old_found": {str(e): o for e, (_, o) in found.items()}, "effect": what})
    print(f"| rule | points | noise sd / level | false alarms | found ({', '.join('effect' for _ in range(1))}) |")
    print("|---|---|---|---|---|")
    for r in rows:
        found = ", ".join(f"{e} {r['effect']}: {f:.0%}" for e, f in r["found"].items())
        fa = f"{r['false_alarm']:.1%}"
        if r["old_false_alarm"] is not None:
            fa += f" (old rule {r['old_false_alarm']:.0%})"
            found += " (old: " + ", ".join(f"{o:.0%}" for o in r["old_found"].values()) + ")"
        print(f"| {r['rule']} | {r['points']} | {r['noise']:.0%} | {fa} | {found} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
