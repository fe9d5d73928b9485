"""Best objective at equal total training steps: ``dpot autopilot`` vs Optuna TPE alone vs random search vs the
seed's hand-written iterations (``configs/iter*.json``), ``--repeats`` seeds each.

    .venv/bin/python benchmarks/autopilot.py [--quick] [--steps S] [--iterations I] [--candidates K]
        [--repeats 3] [--source DIR --target DIR] [--out DIR] [--write docs/benchmarks.md]

Protocol (one repeat = one seed, the same for every method):
* base config = the seed run's hyper-parameters (``configs/seed_p80qgmx9.json``: presets, lr 1e-5, cosine warmup
  500 scaled to the run length, OT lambda 0.1, reg 0.02) on a CPU-sized policy, ``S`` steps per run, offline eval
  at the end (``eval/offline_eval/avg_loss``, lower is better);
* autopilot: ``dpot autopilot --iterations I --candidates K --steps S``; its total trained steps T (base included,
  read from the runs' metrics) is the budget of the others;
* TPE / random: Optuna's TPESampler / RandomSampler over the space the autopilot records
  (lr log-uniform [1e-5, 1e-3] with the presets off and a constant schedule, ot.lambda_ot [0, 0.5], ot.reg log
  [0.005, 0.1]); the base config is their first trial; T // S runs;
* hand-written: the base, then iter1, iter4a, iter4b, iter5a, iter5b, iter5c (their optimiser, schedule and OT
  blocks on the same base; warmups scaled by S / their steps; their step counts are NOT copied: every run gets S),
  as many as the budget allows.
Result per method: the best final objective over its runs (mean ± std over repeats) and the steps it used.
Without ``--source/--target`` it writes toy datasets (``dpot.data.toy``, 8-dim actions: the seed's label cost
slices action dims 0-8) to the out dir.
``--write`` replaces the ``## Autopilot (dpot autopilot)`` section of the given Markdown file (appended at the end
when absent).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from dpot.metrics_log import read_metrics

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Autopilot (dpot autopilot)"
OBJ = "eval/offline_eval/avg_loss"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
HAND = ["iter1", "iter4a", "iter4b", "iter5a", "iter5b", "iter5c"]
POLICY = {"type": "diffusion", "device": "cpu", "push_to_hub": False, "pretrained_backbone_weights": None,
          "use_group_norm": True, "use_separate_rgb_encoder_per_camera": False, "down_dims": [16, 32],
          "n_obs_steps": 2, "horizon": 8, "n_action_steps": 4, "diffusion_step_embed_dim": 32,
          "noise_scheduler_type": "DDIM", "num_inference_steps": 3}


def _dpot(*args: str, log: Path) -> int:
    with open(log, "a") as fh:
        return subprocess.run([sys.executable, "-m", "dpot", *args], env=ENV, stdout=fh,
                              stderr=subprocess.STDOUT).returncode


def _final(run: Path) -> float:
    vals = [float(r[OBJ]) for r in read_metrics(run) if OBJ in r]
    return vals[-1] if vals else float("nan")


def _steps(run: Path) -> int:
    return max((int(r["step"]) for r in read_metrics(run)), default=0)


def action_dim(root: Path) -> int:
    """The dataset's action size (``meta/info.json``)."""
    return int(json.loads((Path(root) / "meta" / "info.json").read_text())["features"]["action"]["shape"][0])


def image_size(root: Path) -> int:
    """The dataset's largest image side (``meta/info.json``; 0 without cameras)."""
    feats = json.loads((Path(root) / "meta" / "info.json").read_text())["features"]
    return max((max(f["shape"][:2]) for f in feats.values() if f.get("dtype") in ("image", "video")), default=0)


def fit_label_slices(ot: dict, dim: int) -> dict:
    """``ot`` with every label feature's ``dim_slice`` stop clipped to ``dim``: the seed's robot had 8 action
    dims and its configs slice ``[0, 8]``; on MetaWorld (4: dx, dy, dz, grip) the same intent is the whole action."""
    ot = copy.deepcopy(ot)
    for f in ot.get("features", []):
        sl = f.get("dim_slice")
        if f.get("type") == "label" and sl:
            f["dim_slice"] = [min(sl[0], dim - 1), min(sl[1], dim)]
    return ot


def base_config(src: Path, tgt: Path, steps: int, seed: int) -> dict:
    """The seed run's hyper-parameters on a CPU-sized policy (see the module docstring)."""
    seed_cfg = json.loads((REPO / "configs" / "seed_p80qgmx9.json").read_text())
    size = image_size(tgt)
    policy = {**POLICY, "optimizer_lr": seed_cfg["policy"].get("optimizer_lr", 1e-5),
              **({"resize_shape": [32, 32], "crop_ratio": 0.875} if size > 32 else {}),
              "scheduler_warmup_steps": max(1, int(500 * steps / seed_cfg["steps"]))}
    return {"dataset": {"repo_id": "local/toy_target", "root": str(tgt)},
            "source_dataset": {"repo_id": "local/toy_source", "root": str(src)},
            "policy": policy, "batch_size": 8, "steps": steps, "log_freq": max(1, steps // 20),
            "eval_freq": steps, "save_freq": steps, "num_workers": 0, "eval": {"n_batches": 4, "val_fraction": 0.25},
            "wandb": {"enable": False}, "seed": seed, "ot": fit_label_slices(seed_cfg["ot"], action_dim(tgt))}


def hand_config(base: dict, name: str) -> dict:
    """``configs/<name>.json``'s optimiser, schedule and OT on ``base`` (warmups scaled to the run length)."""
    hand = json.loads((REPO / "configs" / f"{name}.json").read_text())
    cfg = copy.deepcopy(base)
    scale = base["steps"] / hand["steps"]
    cfg["ot"] = fit_label_slices(hand["ot"], action_dim(base["dataset"]["root"]))
    cfg["use_policy_training_preset"] = hand.get("use_policy_training_preset", True)
    if cfg["use_policy_training_preset"] is False:
        cfg["optimizer"] = copy.deepcopy(hand["optimizer"])
        cfg["scheduler"] = copy.deepcopy(hand["scheduler"])
        if cfg["scheduler"].get("num_warmup_steps"):
            cfg["scheduler"]["num_warmup_steps"] = max(1, int(cfg["scheduler"]["num_warmup_steps"] * scale))
    else:
        cfg["policy"]["optimizer_lr"] = hand["policy"].get("optimizer_lr", cfg["policy"]["optimizer_lr"])
        warm = hand["policy"].get("scheduler_warmup_steps")
        if warm:
            cfg["policy"]["scheduler_warmup_steps"] = max(1, int(warm * scale))
    return cfg


def sampled_config(base: dict, trial) -> dict:
    """A TPE/random trial's config: lr (presets off, constant schedule), ot.lambda_ot, ot.reg on ``base``."""
    cfg = copy.deepcopy(base)
    lr = trial.suggest_float("lr", 1e-5, 1e-3, log=True)
    cfg["use_policy_training_preset"] = False
    cfg["optimizer"] = {"type": "adamw", "lr": lr, "weight_decay": 1e-4, "betas": [0.9, 0.999], "eps": 1e-8,
                        "grad_clip_norm": 10.0}
    cfg["scheduler"] = {"type": "diffuser", "name": "constant", "num_warmup_steps": 0}
    cfg["ot"]["lambda_ot"] = trial.suggest_float("ot.lambda_ot", 0.0, 0.5)
    cfg["ot"]["reg"] = trial.suggest_float("ot.reg", 0.005, 0.1, log=True)
    return cfg


def train(cfg: dict, run: Path) -> float:
    cfg = {**cfg, "output_dir": str(run)}
    path = run.with_suffix(".json")
    path.write_text(json.dumps(cfg, indent=1))
    if _dpot("train", f"--config_path={path}", log=run.with_suffix(".log")) != 0:
        return float("nan")
    return _final(run)


def run_autopilot(base: dict, work: Path, a) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    path = work / "base.json"
    path.write_text(json.dumps(base, indent=1))
    out = work / "search"
    t0 = time.time()
    rc = _dpot("autopilot", "--config_path", str(path), "--out", str(out), "--iterations", str(a.iterations),
               "--candidates", str(a.candidates), "--steps", str(a.steps), "--patience", "0", "--quiet",
               log=work / "autopilot.log")
    if rc != 0:
        raise SystemExit(f"autopilot failed (exit {rc}): see {work / 'autopilot.log'}")
    lin = json.loads((out / "lineage.json").read_text())
    vals = [n["objective"] for n in lin["nodes"] if isinstance(n["objective"], float)
            and n["decision"] in ("kept", "best")]
    steps = sum(_steps(out / n["run"]) for n in lin["nodes"])
    return {"best": min(vals), "steps": steps, "runs": len(lin["nodes"]), "wall_s": time.time() - t0}


def run_sampler(kind: str, base: dict, work: Path, budget: int, a, seed: int) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(4, max(1, budget // a.steps // 2)))
               if kind == "tpe" else optuna.samplers.RandomSampler(seed=seed))
    study = optuna.create_study(direction="minimize", sampler=sampler)
    work.mkdir(parents=True, exist_ok=True)
    t0, best, steps, n = time.time(), float("inf"), 0, 0
    while steps + a.steps <= budget:
        run = work / f"t{n}"
        if n == 0:
            cfg = base
            trial = None
        else:
            trial = study.ask()
            cfg = sampled_config(base, trial)
        val = train(cfg, run)
        steps += _steps(run)
        if trial is not None:
            study.tell(trial, val if val == val else None,
                       state=None if val == val else optuna.trial.TrialState.FAIL)
        if val == val:
            best = min(best, val)
        n += 1
    return {"best": best, "steps": steps, "runs": n, "wall_s": time.time() - t0}


def run_hand(base: dict, work: Path, budget: int, a) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    t0, best, steps, n = time.time(), float("inf"), 0, 0
    for name in ["base", *HAND]:
        if steps + a.steps > budget:
            break
        cfg = base if name == "base" else hand_config(base, name)
        run = work / name
        val = train(cfg, run)
        steps += _steps(run)
        if val == val:
            best = min(best, val)
        n += 1
    return {"best": best, "steps": steps, "runs": n, "wall_s": time.time() - t0}


def table(results: dict, a) -> str:
    lines = [SECTION, "",
             f"`benchmarks/autopilot.py {' '.join(sys.argv[1:])}` on {platform.node() or 'this machine'} "
             f"({os.cpu_count()} CPUs, shared): {a.steps} steps per run, autopilot {a.iterations} iteration(s) x "
             f"<= {a.candidates} candidate(s), {a.repeats} repeat(s), objective `{OBJ}` (min, final value of a "
             f"run); each method's budget = the autopilot's total trained steps.", "",
             "| method | best objective (mean ± std) | per repeat | steps used (mean) | runs (mean) |",
             "|---|---|---|---|---|"]
    for method, rs in results.items():
        bests = [r["best"] for r in rs]
        sd = statistics.pstdev(bests) if len(bests) > 1 else 0.0
        lines.append(f"| {method} | {statistics.mean(bests):.4f} ± {sd:.4f} | "
                     f"{', '.join(f'{b:.4f}' for b in bests)} | {statistics.mean(r['steps'] for r in rs):.0f} | "
                     f"{statistics.mean(r['runs'] for r in rs):.1f} |")
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    doc = path.read_text() if path.exists() else ""
    pat = re.compile(re.escape(SECTION) + r".*?(?=\n## |\Z)", re.S)
    doc = pat.sub(text.rstrip() + "\n", doc) if pat.search(doc) else doc.rstrip() + "\n\n" + text
    path.write_text(doc)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny budget: 6 steps, 1 iteration x 1 candidate, 1 repeat")
    p.add_argument("--steps", type=int, default=200, help="training steps per run")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--candidates", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--source", help="source dataset root (default: toy data)")
    p.add_argument("--target", help="target dataset root (default: toy data)")
    p.add_argument("--out", default="outputs/bench_autopilot", help="work directory")
    p.add_argument("--write", help="Markdown file whose autopilot section is replaced")
    a = p.parse_args()
    if a.quick:
        a.steps, a.iterations, a.candidates, a.repeats = 6, 1, 1, 1
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.source and a.target:
        src, tgt = Path(a.source), Path(a.target)
    else:
        from dpot.data.toy import make_toy_dataset

        src, tgt = out / "data" / "src", out / "data" / "tgt"
        if not tgt.exists():
            make_toy_dataset(src, "source", episodes=8, image_size=32, cameras=("top",), action_dim=8)
            make_toy_dataset(tgt, "target", episodes=6, image_size=32, cameras=("top",), action_dim=8)
    results: dict[str, list[dict]] = {"autopilot": [], "Optuna TPE": [], "random": [], "hand-written iter*": []}
    for rep in range(a.repeats):
        work = out / f"rep{rep}"
        base = base_config(src, tgt, a.steps, seed=rep)
        ap = run_autopilot(base, work / "autopilot", a)
        results["autopilot"].append(ap)
        budget = ap["steps"]
        results["Optuna TPE"].append(run_sampler("tpe", base, work / "tpe", budget, a, rep))
        results["random"].append(run_sampler("random", base, work / "random", budget, a, rep))
        results["hand-written iter*"].append(run_hand(base, work / "hand", budget, a))
        print(json.dumps({k: v[-1] for k, v in results.items()}, default=str), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    text = table(results, a)
    print(text)
    if a.write:
        write_section(Path(a.write), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
