"""Does an offline signal of a checkpoint predict its closed-loop success? The autopilot objective's predictivity
(issue 32, item 1), measured on runs whose checkpoints were evaluated closed-loop (the study's).

    .venv/bin/python -m benchmarks.objective_signals signals RUN [RUN ...] --heldout NAME=DATASET [...] --out F
    .venv/bin/python -m benchmarks.objective_signals correlate F [F ...] --study DIR [...] --out objective.json
    .venv/bin/python -m benchmarks.objective_signals all --study DIR --heldout NAME=DATASET [...] --out DIR2

``all`` is the objective study's last step (docs/benchmarks.md, "The objective study: pre-registration"): the
signals of every finished job of the study ``DIR`` (its done markers) not yet in ``DIR2/signals/``, then
``DIR2/objective-table.json`` (``correlate``) and ``DIR2/objective.json`` (``--decide``).

``signals``: for each run, the policy at step 0 (its initial weights, rebuilt from its config and seed as ``dpot
train`` built them) and at every checkpoint is scored on each held-out dataset (target episodes generated apart
from the run's data, with their own seed: a split fixed independently of the training seed). Signals (lower is
better for all; the action space is the policy's normalized one):

- ``offline_l1``: what the trainer logs as ``eval/offline_eval/avg_loss`` (today's autopilot objective): mean
  ``|a_hat - a|`` of the predicted chunk (the policy's full reverse diffusion, ``num_inference_steps``) over
  ``--batches`` held-out batches of the run's batch size, batches and noise seeded by the run's seed;
- ``offline_l1_fixed``: the same on batches drawn with seed 0, averaged over ``--draws`` noise seeds (the
  selection's noise and the run's seed taken out);
- ``denoise_mse``: the diffusion training loss on those batches at fixed timesteps (``--timesteps``, fractions of
  ``num_train_timesteps``), the same noise for every checkpoint (no sampling at all);
- ``improvement``: ``offline_l1_fixed`` at step 0 minus at the step (a policy that learnt nothing scores 0).

``correlate``: each run's closed-loop success at each evaluated step (the study's ``evals/<job>-<cell>[-stepN]
.json``: ``target_id`` and ``target_ood``) beside its signals; Spearman's rho of ``-signal`` (``improvement``
as it is) with the success rate, over all (run, step) points, over the final checkpoints only, and (the budget
question) of each checkpoint's signal with the run's final success, with 95 % intervals from a bootstrap over runs
(a run's points resampled together); and per training seed whether the untrained weights (step 0) score worst of
that seed's points. Written as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import re
import time
from pathlib import Path

from dpot.metric_names import EVAL_LOSS

REPO = Path(__file__).resolve().parents[1]
SIGNALS = ("offline_l1", "offline_l1_fixed", "denoise_mse", "improvement")
CELLS = ("target_id", "target_ood")


# ----------------------------------------------------------------------------------------------------- signals


def _heldout_batches(cfg, parts, root: Path, name: str, n_batches: int, seeds: tuple[int, ...]) -> dict[int, list]:
    """Seed -> ``n_batches`` raw (uint8) batches of every episode of the held-out dataset at ``root``, drawn as the
    trainer draws its validation batches (:func:`dpot.data.cotrain.val_batches`) with that seed; the dataset is
    opened once."""
    import torch

    from dpot.data.cotrain import EpisodeTable, val_batches
    from dpot.train.build import open_cotrain_dataset
    from dpot.train.inputs import check_inputs

    held = copy.deepcopy(cfg)
    held.dataset.root, held.dataset.repo_id = str(root), f"local/heldout_{name}"
    inputs = check_inputs(held)
    dataset, _, _ = open_cotrain_dataset(held, inputs, parts)
    table = EpisodeTable.from_meta(inputs.tgt_meta)
    out = {}
    with dataset.without_transforms():
        for seed in seeds:
            sampler = val_batches(table, n_batches=n_batches, batch_size=cfg.batch_size, seed=seed)
            out[seed] = list(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=0))
    return out


def _denoise_mse(policy, batches: list[dict], prepare, fractions: list[float]) -> float:
    """Mean diffusion loss over the batches at each fixed timestep, with noise from a fixed generator."""
    import torch

    from dpot.policy.diffusion import diffusion_loss_with_features

    cfg = policy.config
    total, count = 0.0, 0
    with torch.no_grad():
        for b, raw in enumerate(batches):
            batch = prepare(raw)
            n = batch["action"].shape[0]
            g = torch.Generator().manual_seed(1_000_003 * (b + 1))
            noise = torch.randn(n, cfg.horizon, batch["action"].shape[-1], generator=g)
            for frac in fractions:
                t = torch.full((n,), min(int(frac * cfg.num_train_timesteps), cfg.num_train_timesteps - 1))
                out = diffusion_loss_with_features(policy, batch, noise=noise, timesteps=t)
                total += float(out.loss) * n
                count += n
    return total / max(count, 1)


def run_signals(run: Path, heldout: dict[str, Path], *, n_batches: int, draws: int, fractions: list[float],
                steps: list[int] | None = None) -> dict:
    """``{"run", "seed", "steps": {step: {heldout name: {signal: value}}}}`` for a run's step 0 and checkpoints."""
    from lerobot.policies.factory import get_policy_class

    from dpot import rundir
    from dpot.config import load_train_config
    from dpot.policy import get_hook
    from dpot.train.batches import prepare_eval_batch
    from dpot.train.build import build_policy
    from dpot.train.inputs import check_inputs
    from dpot.train.offline_eval import OfflineEvaluator

    cfg = load_train_config(rundir.config_path(run))
    cfg.policy.device = "cpu"
    seed = int(cfg.seed or 0)
    parts = build_policy(cfg, check_inputs(cfg))     # step 0: the run's initial weights, its preprocessor
    prepare = functools.partial(prepare_eval_batch, preprocessor=parts.preprocessor, image_keys=parts.image_keys)
    hook = get_hook(cfg.policy.type)
    sets = {}
    for name, root in heldout.items():
        by_seed = _heldout_batches(cfg, parts, root, name, n_batches, (seed, 0))
        sets[name] = {"run": by_seed[seed], "fixed": by_seed[0]}
    steps = steps if steps is not None else [0] + [s for s in rundir.checkpoint_steps(run) if s > 0]
    out: dict = {}
    for step in steps:
        t0 = time.perf_counter()
        if step == 0:
            policy = parts.policy
        else:
            model = rundir.checkpoint_dir(run, step, cfg.steps) / rundir.MODEL_DIR
            policy = get_policy_class(cfg.policy.type).from_pretrained(str(model))
        policy.eval()
        out[step] = {}
        for name, b in sets.items():
            l1 = OfflineEvaluator(b["run"], prepare, seed=seed, predict=hook.predict_chunk)(policy)
            fixed = [OfflineEvaluator(b["fixed"], prepare, seed=1000 + k, predict=hook.predict_chunk)(policy)
                     for k in range(draws)]
            out[step][name] = {"offline_l1": l1[EVAL_LOSS],
                               "offline_l1_fixed": sum(f[EVAL_LOSS] for f in fixed) / draws,
                               "denoise_mse": _denoise_mse(policy, b["fixed"], prepare, fractions)}
        print(f"{run.name} step {step}: " + "  ".join(
            f"{n} " + " ".join(f"{k}={v:.4f}" for k, v in s.items()) for n, s in out[step].items())
            + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    for name in heldout:
        base = out[steps[0]][name]["offline_l1_fixed"] if steps[0] == 0 else None
        for step in steps:
            out[step][name]["improvement"] = (None if base is None else
                                              base - out[step][name]["offline_l1_fixed"])
    return {"run": str(run), "name": run.name, "seed": seed, "steps": {str(s): v for s, v in out.items()},
            "batches": n_batches, "draws": draws, "timesteps": fractions}


# ------------------------------------------------------------------------------------------------- correlation


def success_points(study: Path) -> dict[tuple[str, int, str], tuple[int, int]]:
    """``(job, step, cell) -> (successes, episodes)`` from a study's ``evals/``; the final evaluation (no step in
    its name) at the job's ``step`` field."""
    from dpot.bench.study.layout import parse_eval_file

    out = {}
    for f in sorted((study / "evals").glob("*.json")):
        parsed = parse_eval_file(f.name)
        if parsed is None or parsed[1] not in CELLS:
            continue
        job, cell, step = parsed
        e = json.loads(f.read_text())
        out[(job, int(e.get("step") or 0) if step is None else step, cell)] = (int(e["successes"]), int(e["episodes"]))
    return out


def average_ranks(values):
    """Ranks 1..n of ``values``, ties sharing their mean rank (``scipy.stats.rankdata``'s "average" method, in
    plain numpy: the bootstrap below calls it ~10^5 times and scipy's checks cost most of its time)."""
    import numpy as np

    a = np.asarray(values, dtype=float)
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    new_group = np.r_[True, s[1:] != s[:-1]]
    group = new_group.cumsum()                            # 1..k: the tie group of each sorted value
    bounds = np.r_[np.nonzero(new_group)[0], len(a)]      # group g holds sorted positions bounds[g-1] .. bounds[g]-1
    ranks = np.empty(len(a))
    ranks[order] = 0.5 * (bounds[group - 1] + 1 + bounds[group])
    return ranks


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho: the Pearson correlation of the :func:`average_ranks`, the statistic
    ``scipy.stats.spearmanr`` returns (tests/autopilot/test_benchmark_starts.py holds it to scipy); nan when either
    side is constant."""
    import numpy as np

    if len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float(np.dot(rx, ry) / math.sqrt(np.dot(rx, rx) * np.dot(ry, ry)))


def rho_with_interval(points: list[tuple[str, float, float]], boot: int = 2000, seed: int = 0) -> dict:
    """rho of (signal, success) over ``(run, signal, success)`` points, with a 95 % percentile interval from a
    bootstrap over runs (each resample draws runs with replacement and keeps all their points)."""
    import numpy as np

    runs = sorted({r for r, _, _ in points})
    by_run = {r: [(s, y) for rr, s, y in points if rr == r] for r in runs}
    rho = spearman([s for _, s, _ in points], [y for _, _, y in points])
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(boot):
        pick = [runs[i] for i in rng.integers(0, len(runs), len(runs))]
        pts = [p for r in pick for p in by_run[r]]
        v = spearman([s for s, _ in pts], [y for _, y in pts])
        if math.isfinite(v):
            draws.append(v)
    lo, hi = (float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))) if draws else (math.nan, math.nan)
    return {"rho": rho, "ci95": [lo, hi], "n_points": len(points), "n_runs": len(runs)}


def correlate(signal_files: list[Path], studies: list[Path], heldout: str, signals=SIGNALS) -> dict:
    """The predictivity table (the module docstring) of ``signals`` (default every signal) on held-out set
    ``heldout``."""
    runs = [json.loads(f.read_text()) for f in signal_files]
    evals: dict = {}
    for study in studies:
        evals.update(success_points(study))
    table: dict = {}
    planted: dict = {}
    for sig in signals:
        sign = 1.0 if sig == "improvement" else -1.0     # every signal read as "higher = better policy"
        entry = {}
        for cell in CELLS:
            pts, final = [], []
            for r in runs:
                steps = sorted(int(s) for s in r["steps"])
                for s in steps:
                    v = r["steps"][str(s)][heldout].get(sig)
                    got = evals.get((r["name"], s, cell))
                    if v is None or got is None or not math.isfinite(v):
                        continue
                    pts.append((r["name"], sign * v, got[0] / got[1]))
                    if s == steps[-1]:
                        final.append((r["name"], sign * v, got[0] / got[1]))
            # the budget question: the signal at an early checkpoint against the run's final success
            final_success = {name: y for name, _, y in final}
            budgets = sorted({int(st) for r in runs for st in r["steps"]} - {0})
            by_budget = {}
            for bud in budgets:
                early = [(r["name"], sign * r["steps"][str(bud)][heldout][sig], final_success[r["name"]])
                         for r in runs if str(bud) in r["steps"] and r["name"] in final_success
                         and r["steps"][str(bud)][heldout].get(sig) is not None]
                by_budget[str(bud)] = rho_with_interval(early)
            entry[cell.removeprefix("target_")] = {"all_steps": rho_with_interval(pts),
                                                   "final_only": rho_with_interval(final),
                                                   "at_budget_vs_final": by_budget}
        table[sig] = entry
        if sig != "improvement":
            last = []
            for r in runs:
                vals = {int(s): v[heldout][sig] for s, v in r["steps"].items()}
                if 0 in vals and len(vals) > 1:
                    last.append(vals[0] >= max(v for s, v in vals.items() if s != 0))
            planted[sig] = last
    return {"heldout": heldout, "signals": table, "untrained_last": planted,
            "runs": [r["name"] for r in runs]}


MIN_SCORE = 0.3            # the pre-registered bar (docs/benchmarks.md, "The objective study: pre-registration")
PLANTED_LOW = "lr-1e-6"    # the planted near-untrained arm of OBJECTIVE_METHODS


def _arm_seed(name: str) -> tuple[str, int]:
    m = re.match(r"^(?P<arm>.+)-seed(?P<seed>\d+)$", name)
    return (m.group("arm"), int(m.group("seed"))) if m else (name, 0)


def decide(corr: dict, runs: list[dict], heldout: str) -> dict:
    """The pre-registered decision (docs/benchmarks.md, "The objective study: pre-registration") on a
    :func:`correlate` result: ``{"points", "direction", "signals": {name: {"spearman_id", "spearman_ood", ...}},
    "chosen", "budget_steps", "planted_untrained_last": [one bool per seed], ...}`` (issue 32's schema).

    A (signal, budget) pair scores the smaller of the lower interval ends of its budget-view rho on ID and OOD; the
    chosen budget is the smallest whose best signal scores >= :data:`MIN_SCORE` (ties: the larger mean rho), else
    the best-scoring pair (``weak``: true). ``planted_untrained_last[s]``: the :data:`PLANTED_LOW` run of seed s
    scores worse at that budget than every run of every other arm."""
    table = corr["signals"]
    cand = []
    for sig, cells in table.items():
        for bud in cells["id"]["at_budget_vs_final"]:
            rid, rood = cells["id"]["at_budget_vs_final"][bud], cells["ood"]["at_budget_vs_final"][bud]
            lows = [rid["ci95"][0], rood["ci95"][0]]
            if not all(math.isfinite(x) for x in lows):
                continue
            cand.append((int(bud), sig, min(lows), (rid["rho"] + rood["rho"]) / 2))
    good = [c for c in cand if c[2] >= MIN_SCORE]
    if good:
        first = min(c[0] for c in good)
        bud, sig, score, _ = max((c for c in good if c[0] == first), key=lambda c: (c[2], c[3]))
    elif cand:
        bud, sig, score, _ = max(cand, key=lambda c: (c[2], c[3], -c[0]))
    else:
        bud, sig, score = None, None, None
    planted, ranks = [], {}
    if sig is not None:
        sign = 1.0 if sig == "improvement" else -1.0
        at = {r["name"]: sign * r["steps"][str(bud)][heldout][sig] for r in runs
              if str(bud) in r["steps"] and r["steps"][str(bud)][heldout].get(sig) is not None}
        order = sorted(at, key=lambda n: at[n], reverse=True)            # best first
        ranks = {n: order.index(n) + 1 for n in order}
        for name in sorted(n for n in at if _arm_seed(n)[0] == PLANTED_LOW):
            others = [v for n, v in at.items() if _arm_seed(n)[0] != PLANTED_LOW]
            planted.append(bool(others) and at[name] < min(others))
    points = table[SIGNALS[0]]["id"]["all_steps"]["n_points"]
    return {"points": points, "direction": "max" if sig == "improvement" else "min", "heldout": heldout,
            "signals": {name: {"spearman_id": c["id"]["all_steps"]["rho"],
                               "spearman_id_ci95": c["id"]["all_steps"]["ci95"],
                               "spearman_ood": c["ood"]["all_steps"]["rho"],
                               "spearman_ood_ci95": c["ood"]["all_steps"]["ci95"],
                               "final_only": {"id": c["id"]["final_only"], "ood": c["ood"]["final_only"]},
                               "at_budget_vs_final": {"id": c["id"]["at_budget_vs_final"],
                                                      "ood": c["ood"]["at_budget_vs_final"]}}
                        for name, c in table.items()},
            "chosen": sig, "budget_steps": bud, "score": score, "weak": score is None or score < MIN_SCORE,
            "planted_untrained_last": planted, "ranks_at_budget": ranks,
            "untrained_weights_last": corr["untrained_last"], "runs": corr["runs"]}


def run_all(study: Path, heldout: dict[str, Path], out: Path, *, n_batches: int, draws: int,
            fractions: tuple[float, ...] = (0.1, 0.5, 0.9)) -> dict:
    """Signals of every finished job of ``study`` (kept: a job's file is computed once), then the table and the
    pre-registered decision on the ``id`` held-out set (the first given) written under ``out``; returns the
    decision."""
    sig_dir = out / "signals"
    sig_dir.mkdir(parents=True, exist_ok=True)
    for marker in sorted((study / "done").glob("*.json")):
        dst = sig_dir / f"{marker.stem}.json"
        if not dst.exists():
            res = run_signals(study / "runs" / marker.stem, heldout, n_batches=n_batches, draws=draws,
                              fractions=list(fractions))
            dst.write_text(json.dumps(plain(res), indent=1) + "\n")
    files = sorted(sig_dir.glob("*.json"))
    name = next(iter(heldout))
    table = correlate(files, [study], name)
    (out / "objective-table.json").write_text(json.dumps(plain(table), indent=1, allow_nan=False) + "\n")
    res = decide(table, [json.loads(f.read_text()) for f in files], name)
    (out / "objective.json").write_text(json.dumps(plain(res), indent=1, allow_nan=False) + "\n")
    return res


# the signals `dpot report` speaks of: dpot's own offline eval (eval/offline_eval/avg_loss) and the closest measured
# signal to lerobot-train's held-out loss (the diffusion loss on held-out frames)
REPORTED = {"offline_l1": EVAL_LOSS, "denoise_mse": "held-out diffusion loss"}


def predictivity(signals_root: Path, studies: list[Path], heldout: str = "id") -> dict:
    """What ``dpot report`` prints beside the offline eval curve (``src/dpot/analysis/predictivity.json``): for each
    task (``<signals_root>/<task>/*.json``, success from the studies whose study.json names that task), the
    all-checkpoints and final-checkpoint rho (:func:`correlate`) of the :data:`REPORTED` signals with target-ID and
    target-OOD success, the runs and the arms they come from. Deterministic (the bootstrap is seeded)."""
    by_task: dict[str, list[Path]] = {}
    for st in studies:
        by_task.setdefault(json.loads((st / "study.json").read_text())["task"], []).append(st)
    tasks = {}
    for task, sts in sorted(by_task.items()):
        files = sorted((signals_root / task).glob("*.json"))
        if not files:
            continue
        corr = correlate(files, sts, heldout, signals=tuple(REPORTED))
        tasks[task] = {"runs": len(corr["runs"]), "arms": sorted({_arm_seed(n)[0] for n in corr["runs"]}),
                       "signals": {sig: {cell: {view: corr["signals"][sig][cell][view]
                                                for view in ("all_steps", "final_only")}
                                         for cell in ("id", "ood")} for sig in REPORTED}}
    return {"heldout": heldout, "signals": REPORTED, "tasks": tasks}


def plain(x):
    """``x`` with every non-finite float replaced by None (the JSON standard has no NaN)."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [plain(v) for v in x]
    return None if isinstance(x, float) and not math.isfinite(x) else x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("signals")
    s.add_argument("runs", nargs="+")
    s.add_argument("--heldout", nargs="+", required=True, help="NAME=DATASET_ROOT (a dpot bench target dataset)")
    s.add_argument("--out", required=True)
    s.add_argument("--batches", type=int, default=4)
    s.add_argument("--draws", type=int, default=2)
    s.add_argument("--timesteps", default="0.1,0.5,0.9")
    s.add_argument("--steps", default=None, help="comma-separated (default 0 and every checkpoint)")
    c = sub.add_parser("correlate")
    c.add_argument("signal_files", nargs="+")
    c.add_argument("--study", nargs="+", required=True)
    c.add_argument("--heldout", default="id")
    c.add_argument("--out", required=True)
    c.add_argument("--decide", action="store_true",
                   help="write the pre-registered decision in issue 32's schema (objective.json) instead of the table")
    pr = sub.add_parser("predictivity", help="the file dpot report reads (src/dpot/analysis/predictivity.json)")
    pr.add_argument("--signals-root", required=True, help="folder of <task>/<run>.json signal files")
    pr.add_argument("--study", nargs="+", required=True)
    pr.add_argument("--out", required=True)
    al = sub.add_parser("all")
    al.add_argument("--study", required=True)
    al.add_argument("--heldout", nargs="+", required=True)
    al.add_argument("--out", required=True)
    al.add_argument("--batches", type=int, default=4)
    al.add_argument("--draws", type=int, default=2)
    a = ap.parse_args()
    if a.cmd == "predictivity":
        res = predictivity(Path(a.signals_root), [Path(d) for d in a.study])
        Path(a.out).write_text(json.dumps(plain(res), indent=1, allow_nan=False) + "\n")
        print(f"wrote {a.out}: " + ", ".join(f"{t} ({v['runs']} runs)" for t, v in res["tasks"].items()))
        return
    if a.cmd == "all":
        run_all(Path(a.study), {k: Path(v) for k, v in (h.split("=", 1) for h in a.heldout)}, Path(a.out),
                n_batches=a.batches, draws=a.draws)
        return
    if a.cmd == "signals":
        heldout = {k: Path(v) for k, v in (h.split("=", 1) for h in a.heldout)}
        fractions = [float(x) for x in a.timesteps.split(",")]
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        for run in map(Path, a.runs):
            dst = out / f"{run.name}.json"
            if dst.exists():
                print(f"{dst} exists: kept")
                continue
            res = run_signals(run, heldout, n_batches=a.batches, draws=a.draws, fractions=fractions,
                              steps=[int(x) for x in a.steps.split(",")] if a.steps else None)
            dst.write_text(json.dumps(res, indent=1) + "\n")
    else:
        files = [Path(f) for f in a.signal_files]
        res = correlate(files, [Path(d) for d in a.study], a.heldout)
        if a.decide:
            res = decide(res, [json.loads(f.read_text()) for f in files], a.heldout)
            Path(a.out).write_text(json.dumps(plain(res), indent=1, allow_nan=False) + "\n")
            print(f"chosen {res['chosen']} at {res['budget_steps']} steps (score {res['score']}, weak "
                  f"{res['weak']}); planted near-untrained last per seed: {res['planted_untrained_last']}")
            return
        Path(a.out).write_text(json.dumps(plain(res), indent=1, allow_nan=False) + "\n")
        for sig, cells in res["signals"].items():
            print(sig + ": " + "  ".join(f"{cell} rho {v['all_steps']['rho']:+.2f} "
                                         f"[{v['all_steps']['ci95'][0]:+.2f}, {v['all_steps']['ci95'][1]:+.2f}] "
                                         f"(final {v['final_only']['rho']:+.2f})" for cell, v in cells.items()))


if __name__ == "__main__":
    main()
