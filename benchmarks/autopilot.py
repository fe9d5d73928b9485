"""Best objective at equal total training steps: ``dpot autopilot`` vs Optuna TPE alone vs random search vs the
seed's hand-written iterations (``configs/iter*.json``), ``--repeats`` seeds each.

    .venv/bin/python benchmarks/autopilot.py [--quick] [--steps S] [--iterations I] [--candidates K]
        [--repeats 5] [--first-repeat K] [--starts seed,healthy,lr-100x-high,...] [--source DIR --target DIR]
        [--out DIR]
        [--methods autopilot,tpe,random,hand] [--objective METRIC|bench:<task>] [--bench-episodes 20]
        [--policy cpu|study]
        [--results docs/results/autopilot/results.json] [--write docs/benchmarks.md] [--section '### ...']
        [--keep DIR]

Start conditions (``--starts``, :data:`STARTS`, applied to the base config by :func:`start_config`): ``seed`` (the
seed run's hyper-parameters, below), ``healthy`` (presets, lr 1e-4 in Diffusion's usual range, warmup 5 % of the
run), and planted pathologies: ``lr-100x-high`` (lr 100x the usual top: 3e-2), ``lr-100x-low-flat`` (lr 100x below
the usual bottom: 1e-6, constant schedule), ``warmup-longer-than-run`` (warmup 2x the steps), ``label-dominated``
(every label weight x1000).

Protocol (one repeat = one seed, the same for every method):
* base config = the seed run's hyper-parameters (``configs/seed_p80qgmx9.json``: presets, lr 1e-5, cosine warmup
  500 scaled to the run length, OT lambda 0.1, reg 0.02) on a CPU-sized policy, ``S`` steps per run, offline eval
  at the end (``eval/offline_eval/avg_loss``, lower is better);
* autopilot: ``dpot autopilot --iterations I --candidates K --steps S --seed <repeat>``; its total trained steps T
  (base included, read from the runs' metrics) is the budget of the others;
* TPE / random: Optuna's TPESampler / RandomSampler, seeded with the repeat's seed, over the same search space as
  the autopilot's own sampler, declared once in :mod:`dpot.autopilot.space` and taken around the start config
  (resolved by the trainer's loader, :func:`search_space`): lr log-uniform over the policy's usual range to
  ``[lr_high] far_factor`` x its top (Diffusion: [1e-4, 3e-3]), whether the LR is constant or follows the start's
  schedule, ot.lambda_ot and ot.reg within x4 either side of the start's, the optimizer (Adam, the Diffusion
  preset's, or AdamW) and AdamW's weight decay (log [1e-5, 0.1]); the start config is their first trial (enqueued
  with its params, so the sampler is told it); T // S runs;
* hand-written: the base, then iter1, iter4a, iter4b, iter5a, iter5b, iter5c (their optimiser, schedule and OT
  blocks on the same base; warmups scaled by S / their steps; their step counts are NOT copied: every run gets S),
  as many as the budget allows.
Objective (``--objective``): by default the offline eval loss above; ``bench:<task>`` scores every run of every
method by the closed-loop success of its final checkpoint in the target domain (``--bench-episodes`` episodes of
``--bench-max-steps`` steps, ``dpot bench eval``; max), which needs data from ``dpot bench generate`` and a policy
that can succeed at all: ``--policy study`` trains the ``cpu-idood-powered`` study's policy and batch instead of the
tiny CPU one (at 100 steps the tiny policy succeeds in 0 of 10 episodes).
Result per start and method (``results.json``, :func:`results_doc`): ``{"direction": "min"|"max", "objective": ...,
"optuna_version": ..., "starts": {start: {"methods": {method: {"space": [param names], "repeats": [{"seed", "best",
"steps", "runs", "runs_to_tpe_best", "compute_steps", "compute_to_tpe_best", "sampler_seed"}]}}}}}`` (``space`` and
``sampler_seed``: the searching methods, in results that recorded them; the autopilot's also records its
``strategy``, ``--strategy``: ``both`` by default, ``prior`` for the diagnoses as the sampler's prior; each method's
``<method>.result.json`` also keeps every run's drawn params and trained steps); ``runs_to_tpe_best``: the runs a
method needed to match TPE's final best in that repeat (None if never, :func:`runs_to_match`); ``compute_steps`` (=
``steps``): the steps its runs really trained (a run the autopilot stopped early counts what it trained);
``compute_to_tpe_best``: the steps trained until it matched TPE's final best (None if never, or for a result that
did not record its runs' steps); the table gives the mean ± std of ``best`` and the median of ``runs_to_tpe_best``.
Without ``--source/--target`` it writes toy datasets (``dpot.data.toy``, 8-dim actions: the seed's label cost
slices action dims 0-8) to the out dir.
Below the table, :func:`best_runs` lists where each repeat's best came from (the autopilot's best node and its
lineage title, TPE's best run, each with its optimiser block), read from the runs.
``--write`` replaces only the ``### The grid: best objective per start and method`` subsection of the given
Markdown file (with a ``bench:<task>`` objective: ``### The closed-loop grid: best target success per start and
method``, :func:`section_heading`), put at the end of its ``## Autopilot (dpot autopilot)`` section when absent; the
prose around it is kept (``markdown_section.write_section``).

Resumable over sittings (the grid takes hours on a CPU): each method's result of a (start, repeat) is kept in
``<out>/<start>/rep<k>/<method>.result.json`` and read back instead of rerun; inside an unfinished method, a run that
reached its budget is read back (``dpot.rundir.is_finished``) and an unfinished one is retrained from scratch; the
autopilot's own search resumes (``dpot autopilot`` retrains nothing finished). With ``--keep DIR`` each finished
(start, repeat)'s small raw files (results, the autopilot's lineage, every run's config) are copied to DIR and read
back into a fresh ``--out`` (a sitting on another machine resumes from the committed raw results: :func:`keep_raw`,
:func:`restore_raw`). TPE/random replay the same draws: their
samplers are seeded and told the same values in the same order. A distinct training runs once per ``--out``: a run
whose config trains what a finished run there trains (every method's first run is the start's base) is a symlink to
that run (:func:`train`, :func:`trained_twin`); each method is still charged the run's steps.

``--rank-stability N`` measures the budget question instead (issue 22: ">= 300 steps per run, or the budget at which
runs' ranks stop changing"): N configs drawn by the random sampler (seed 0) from the shared space around the
``seed`` start's base, each
trained ``--steps`` steps with an offline eval every ``--steps // 6`` steps; it prints and writes (``--results``) the
Spearman rank correlation between the objective at each eval step and at the last one.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

from dpot.atomic import write_text
from dpot.autopilot import tools
from dpot.autopilot.record import shown_state
from dpot.autopilot.sampling import STRATEGIES
from dpot.autopilot.spec import Objective, parse_objective
from dpot.errors import UserError
from dpot.launch import child_env
from dpot.metric_names import EVAL_LOSS
from dpot.metrics_log import read_metrics
from dpot.rundir import LINEAGE_FILE

if __package__:  # imported as benchmarks.autopilot (the tests, python -m benchmarks.autopilot)
    from .markdown_section import write_section
    from .objective_signals import spearman
else:  # run as python benchmarks/autopilot.py: benchmarks/ is sys.path[0]
    from markdown_section import write_section
    from objective_signals import spearman

REPO = Path(__file__).resolve().parents[1]
PARENT = "## Autopilot (dpot autopilot)"
SECTION = "### The grid: best objective per start and method"
CLOSED_LOOP_SECTION = "### The closed-loop grid: best target success per start and method"
STARTS = ("seed", "healthy", "lr-100x-high", "lr-100x-low-flat", "warmup-longer-than-run", "label-dominated")
METHODS = ("autopilot", "tpe", "random", "hand")
OBJ = EVAL_LOSS
DEFAULT_OBJECTIVE = parse_objective(OBJ)
ENV = child_env()                         # the environment dpot's own launcher gives its children
POLICY_SIZES = ("cpu", "study")
STUDY_PRESET = "cpu-idood-powered"        # --policy study: this preset's policy and batch
HAND = ["iter1", "iter4a", "iter4b", "iter5a", "iter5b", "iter5c"]
POLICY = {"type": "diffusion", "device": "cpu", "push_to_hub": False, "pretrained_backbone_weights": None,
          "use_group_norm": True, "use_separate_rgb_encoder_per_camera": False, "down_dims": [16, 32],
          "n_obs_steps": 2, "horizon": 8, "n_action_steps": 4, "diffusion_step_embed_dim": 32,
          "noise_scheduler_type": "DDIM", "num_inference_steps": 3}


def _dpot(*args: str, log: Path) -> int:
    with open(log, "a") as fh:
        return subprocess.run([sys.executable, "-m", "dpot", *args], env=ENV, stdout=fh,
                              stderr=subprocess.STDOUT).returncode


def final_value(run: Path, a) -> float:
    """A trained run's objective (``a.objective``): the last logged value of the metric, or for ``bench:<task>`` the
    closed-loop target-domain success rate of its final checkpoint over ``a.bench_episodes`` episodes (``dpot
    bench eval`` through the autopilot's own :func:`dpot.autopilot.tools.bench_eval`, cached in the run as the
    autopilot caches it); NaN when there is none (a failed run or evaluation)."""
    obj = a.objective
    task = obj.bench_task
    if task is None:
        vals = [float(r[obj.key]) for r in read_metrics(run) if obj.key in r]
        return vals[-1] if vals else float("nan")
    steps = _steps(run)
    try:
        rate = tools.bench_success(run, task, steps, steps, a.bench_episodes, a.bench_max_steps) if steps else None
    except RuntimeError:
        rate = None
    return float("nan") if rate is None else rate


def better(obj: Objective, v: float, best: float) -> bool:
    """``v`` is a value (not NaN) better than ``best`` in ``obj``'s direction."""
    return v == v and obj.better(v, best)


def worst(obj: Objective) -> float:
    """The start of a running best: +inf for min, -inf for max."""
    return float("inf") if obj.direction == "min" else float("-inf")


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


def study_policy(steps: int) -> tuple[dict, int]:
    """``--policy study``: the policy section and batch size of :data:`STUDY_PRESET`'s jobs (``dpot bench study``'s
    own :func:`~dpot.bench.presets.policy_section` on the demo config's Diffusion policy)."""
    from dpot.bench.presets import get_preset, policy_section, train_config

    preset = get_preset(STUDY_PRESET)
    demo = train_config({}, {}, Path("."), steps=steps, batch_size=preset.batch_size, num_workers=0, device="cpu")
    return policy_section(preset, demo["policy"], preset.warmup_steps), preset.batch_size


def base_config(src: Path, tgt: Path, steps: int, seed: int, policy: str = "cpu") -> dict:
    """The seed run's hyper-parameters on a CPU-sized policy (``policy`` cpu) or on the study's policy and batch
    (``study``, :func:`study_policy`); see the module docstring."""
    seed_cfg = json.loads((REPO / "configs" / "seed_p80qgmx9.json").read_text())
    if policy not in POLICY_SIZES:
        raise ValueError(f"unknown policy size {policy!r}; choose from {', '.join(POLICY_SIZES)}")
    if policy == "study":
        pol, batch = study_policy(steps)
    else:
        size = image_size(tgt)
        pol, batch = {**POLICY, **({"resize_shape": [32, 32], "crop_ratio": 0.875} if size > 32 else {})}, 8
    policy = {**pol, "optimizer_lr": seed_cfg["policy"].get("optimizer_lr", 1e-5),
              "scheduler_warmup_steps": max(1, int(500 * steps / seed_cfg["steps"]))}
    return {"dataset": {"repo_id": "local/toy_target", "root": str(tgt)},
            "source_dataset": {"repo_id": "local/toy_source", "root": str(src)},
            "policy": policy, "batch_size": batch, "steps": steps, "log_freq": max(1, steps // 20),
            "eval_freq": steps, "save_freq": steps, "num_workers": 0, "eval": {"n_batches": 4, "val_fraction": 0.25},
            "wandb": {"enable": False}, "seed": seed, "ot": fit_label_slices(seed_cfg["ot"], action_dim(tgt))}


def start_config(start: str, base: dict) -> dict:
    """The base config of start condition ``start`` (:data:`STARTS`; see the module docstring)."""
    cfg = copy.deepcopy(base)
    pol, steps = cfg["policy"], int(cfg["steps"])
    if start == "seed":
        return cfg
    if start in ("healthy", "lr-100x-high", "warmup-longer-than-run"):
        pol["scheduler_name"] = "cosine"          # the Diffusion preset's, made explicit
    if start == "healthy":
        pol["optimizer_lr"], pol["scheduler_warmup_steps"] = 1e-4, max(1, steps // 20)
    elif start == "lr-100x-high":
        pol["optimizer_lr"], pol["scheduler_warmup_steps"] = 3e-2, max(1, steps // 20)
    elif start == "lr-100x-low-flat":
        pol["optimizer_lr"], pol["scheduler_name"], pol["scheduler_warmup_steps"] = 1e-6, "constant", 0
    elif start == "warmup-longer-than-run":
        pol["optimizer_lr"], pol["scheduler_warmup_steps"] = 1e-4, 2 * steps
    elif start == "label-dominated":
        for f in cfg["ot"].get("features", []):
            if f.get("type") == "label":
                f["weight_label"] = float(f.get("weight_label", 1.0)) * 1000
    else:
        raise ValueError(f"unknown start {start!r}; choose from {', '.join(STARTS)}")
    return cfg


def runs_to_match(values: list[float], target: float, rel_tol: float = 1e-6, direction: str = "min") -> int | None:
    """The number of runs (in the order trained) after which the running best of ``values`` (NaN = a failed run)
    reaches ``target``: at most it for ``direction`` min, at least it for max (up to ``rel_tol`` relative); None
    when it never does."""
    sign = 1.0 if direction == "min" else -1.0
    best = float("inf")
    for i, v in enumerate(values, start=1):
        if v == v:
            best = min(best, sign * v)
        if best <= sign * target + rel_tol * abs(target):
            return i
    return None


def finite_or_none(x: float) -> float | None:
    """``x`` when it is a finite number, else None (a method that never produced a value: NaN or inf)."""
    return x if x == x and abs(x) != float("inf") else None


def results_doc(results: dict, objective: Objective = DEFAULT_OBJECTIVE) -> dict:
    """The results JSON (module docstring) from ``{start: {method: [per-repeat dict with 'values']}}``: each
    repeat's ``runs_to_tpe_best`` is counted against TPE's final best of the same start and repeat, in the
    ``objective``'s direction; a method's ``space`` and a repeat's ``sampler_seed`` where its result recorded them,
    and the Optuna version the results were computed with (``optuna_version``: the versions the results recorded,
    comma-separated when several; null when none did, as in results computed before it was recorded)."""
    starts, versions = {}, set()
    for start, methods in results.items():
        tpe = methods.get("tpe") or []
        out = {}
        for method, reps in methods.items():
            rows = []
            for i, r in enumerate(reps):
                target = tpe[i]["best"] if i < len(tpe) else None
                ok = target is not None and finite_or_none(target) is not None
                hit = runs_to_match(r["values"], target, direction=objective.direction) if ok else None
                best = finite_or_none(r["best"])
                run_steps = r.get("run_steps")
                rows.append({"seed": r["seed"], "best": best, "steps": r["steps"], "runs": r["runs"],
                             "runs_to_tpe_best": hit, "compute_steps": r["steps"],
                             "compute_to_tpe_best": sum(run_steps[:hit]) if hit and run_steps else None,
                             **({"sampler_seed": r["sampler_seed"]} if "sampler_seed" in r else {})})
                if r.get("optuna_version"):
                    versions.add(r["optuna_version"])
            space = next((r["space"] for r in reps if r.get("space")), None)
            strategy = next((r["strategy"] for r in reps if r.get("strategy")), None)
            out[method] = {**({"space": space} if space is not None else {}),
                           **({"strategy": strategy} if strategy is not None else {}), "repeats": rows}
        starts[start] = {"methods": out}
    return {"direction": objective.direction, "objective": objective.key,
            "optuna_version": ", ".join(sorted(versions)) or None, "starts": starts}


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


def search_config(base: dict) -> dict:
    """``base`` as the trainer resolves it (:func:`dpot.autopilot.spec.load_base_config`, as ``dpot autopilot`` reads
    its base config): the policy preset's optimizer and schedule fields spelled out, which the search space reads
    and an optimizer switch writes out (:func:`dpot.analysis.cfgkeys.optimizer_changes`)."""
    import tempfile

    from dpot.autopilot.spec import load_base_config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "base.json"
        path.write_text(json.dumps(base))
        return load_base_config(path)


def search_space(start: dict) -> dict:
    """The distributions TPE and random search draw around the start config ``start`` (resolved,
    :func:`search_config`): the autopilot's own space (:func:`dpot.autopilot.space.distributions`) with the rules the
    benchmark runs the autopilot with (the defaults). The OT settings are always in it: the autopilot leaves them
    out only around a parent whose run shows a negligible OT term, which a blind sampler cannot read."""
    from dpot.analysis.rules import load_rules
    from dpot.autopilot import space

    return space.distributions(start, load_rules())


def sampled_config(start: dict, params: dict) -> dict:
    """A drawn trial's config: ``params`` (:func:`dpot.autopilot.space.suggest`) set on the resolved start config
    (:func:`dpot.autopilot.space.apply_params`, as the autopilot sets its own draws)."""
    from dpot.autopilot import space

    return space.apply_params(start, params)


def optuna_version() -> str:
    """The installed Optuna's version (5.x changed TPE's defaults: multivariate for one objective)."""
    import optuna

    return optuna.__version__


def launched_runs(out: Path):
    """``(launch config, run dir)`` of every run trained under ``out`` (symlinked runs and folders set aside as
    ``_<name>`` left out): the benchmark's ``<name>.json`` beside ``<name>/`` (:func:`train`) and the autopilot's
    ``search/configs/<name>.json`` beside ``search/runs/<name>/``."""
    for dirpath, subdirs, files in os.walk(out):           # symlinked directories are not followed
        subdirs[:] = [s for s in subdirs if not s.startswith("_")]
        d = Path(dirpath)
        runs = d.parent / "runs" if d.name == "configs" else d
        for f in sorted(files):
            run = runs / f.removesuffix(".json")
            if f.endswith(".json") and run.is_dir() and not run.is_symlink():
                yield d / f, run


def _digest_cache(out: Path) -> tuple[Path, dict]:
    path = out / "_training_digests.json"
    return path, (json.loads(path.read_text()) if path.is_file() else {})


def trained_twin(config: Path, out: Path, steps: int) -> Path | None:
    """A finished run under ``out`` (:func:`launched_runs`, :func:`dpot.rundir.is_finished` at ``steps``) whose
    launch config trains what ``config`` does (:func:`dpot.autopilot.spec.training_digest` of both, resolved by
    the trainer's loader); None when there is none. The digests are cached in ``out/_training_digests.json``,
    keyed by the sha256 of each file's JSON without ``output_dir`` (a resolve costs about a second)."""
    import hashlib

    from dpot.autopilot.spec import load_base_config, training_digest
    from dpot.rundir import is_finished

    cache_path, cache = _digest_cache(out)
    n = len(cache)

    def digest(path: Path) -> str:
        data = {k: v for k, v in json.loads(path.read_text()).items() if k != "output_dir"}
        key = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        if key not in cache:
            cache[key] = training_digest(load_base_config(path))
        return cache[key]

    try:
        want = digest(config)
        for launch, run in launched_runs(out):
            if launch != config and is_finished(run, steps) and digest(launch) == want:
                return run
        return None
    finally:
        if len(cache) > n:
            write_text(cache_path, json.dumps(cache, indent=0, sort_keys=True))


def train(cfg: dict, run: Path, a) -> float:
    """Train ``cfg`` into ``run`` (read back when it already reached its budget; an unfinished run is retrained
    from scratch); the run's final objective (NaN when it failed). When a finished run under ``a.out`` (any method,
    start or repeat, the autopilot's included) trains the same config (:func:`trained_twin`), ``run`` becomes a
    symlink to it instead of a second, identical training (CPU training here is deterministic: the grid's first
    identical runs gave bit-identical objectives); the method is still charged the run's steps."""
    import shutil

    from dpot.rundir import is_finished

    if run.exists() and is_finished(run, int(cfg["steps"])):
        return final_value(run, a)
    if run.is_symlink():
        run.unlink()
    shutil.rmtree(run, ignore_errors=True)
    run.with_suffix(".log").unlink(missing_ok=True)
    cfg = {**cfg, "output_dir": str(run)}
    path = run.with_suffix(".json")
    path.write_text(json.dumps(cfg, indent=1))
    twin = trained_twin(path, Path(a.out), int(cfg["steps"]))
    if twin is not None:
        os.symlink(os.path.relpath(twin, run.parent), run, target_is_directory=True)
        write_text(run.with_suffix(".log"), f"not retrained: {twin} trains the same config (training digest)\n")
        return final_value(run, a)
    if _dpot("train", f"--config_path={path}", log=run.with_suffix(".log")) != 0:
        return float("nan")
    return final_value(run, a)


def run_autopilot(base: dict, work: Path, a, seed: int) -> dict:
    """``dpot autopilot`` from ``base`` with ``--seed seed`` (its sampler's draws; the repeat's seed, as TPE's);
    its best kept objective, trained steps and runs, and the space its sampler searches around the start."""
    from dpot.autopilot import space

    work.mkdir(parents=True, exist_ok=True)
    path = work / "base.json"
    path.write_text(json.dumps(base, indent=1))
    out = work / "search"
    t0 = time.time()
    rc = _dpot("autopilot", "--config_path", str(path), "--out", str(out), "--iterations", str(a.iterations),
               "--candidates", str(a.candidates), "--steps", str(a.steps), "--patience", "0", "--quiet",
               "--objective", a.objective.key, "--bench_episodes", str(a.bench_episodes),
               "--bench_max_steps", str(a.bench_max_steps), "--seed", str(seed), "--strategy", a.strategy,
               log=work / "autopilot.log")
    if rc != 0:
        raise SystemExit(f"autopilot failed (exit {rc}): see {work / 'autopilot.log'}")
    lin = json.loads((out / LINEAGE_FILE).read_text())
    vals = [n["objective"] for n in lin["nodes"] if isinstance(n["objective"], float)
            and shown_state(n) in ("kept", "best")]
    order = [n["objective"] if isinstance(n["objective"], float) and shown_state(n) in ("kept", "best")
             else float("nan") for n in lin["nodes"]]
    run_steps = [_steps(out / n["run"]) for n in lin["nodes"]]
    best = (min(vals) if a.objective.direction == "min" else max(vals)) if vals else float("nan")
    return {"best": best, "steps": sum(run_steps), "runs": len(lin["nodes"]), "values": order,
            "run_steps": run_steps, "wall_s": time.time() - t0,
            "space": space.names(search_space(search_config(base))), "sampler_seed": seed, "strategy": a.strategy,
            "optuna_version": optuna_version()}


def run_sampler(kind: str, base: dict, work: Path, budget: int, a, seed: int) -> dict:
    """TPE (``kind`` tpe) or random search from the start config ``base``, the sampler seeded with ``seed`` (the
    repeat's), over the shared space around the start (:func:`search_space`). Its first trial is the start config
    itself, enqueued with the start's params (``study.enqueue_trial``), so the sampler is told it, and charged like
    any run; then drawn configs (:func:`sampled_config`) while the next run fits in ``budget`` steps. The result
    records the space's parameter names, every run's params, the seed and Optuna's version."""
    import optuna

    from dpot.autopilot import space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(4, max(1, budget // a.steps // 2)))
               if kind == "tpe" else optuna.samplers.RandomSampler(seed=seed))
    direction = "minimize" if a.objective.direction == "min" else "maximize"
    study = optuna.create_study(direction=direction, sampler=sampler)
    work.mkdir(parents=True, exist_ok=True)
    t0, best, steps, n, values, params, run_steps = time.time(), worst(a.objective), 0, 0, [], [], []
    start = search_config(base)
    dists = search_space(start)
    study.enqueue_trial(space.start_params(start, dists))
    while steps + a.steps <= budget:
        run = work / f"t{n}"
        trial = study.ask()
        with warnings.catch_warnings():             # the first: the start's own values (enqueued), which a planted
            warnings.filterwarnings("ignore", "Fixed parameter .* is out of range")   # pathology puts outside
            drawn = space.suggest(trial, dists)
        cfg = base if n == 0 else sampled_config(start, drawn)
        val = train(cfg, run, a)
        run_steps.append(_steps(run))
        steps += run_steps[-1]
        study.tell(trial, val if val == val else None, state=None if val == val else optuna.trial.TrialState.FAIL)
        if better(a.objective, val, best):
            best = val
        values.append(val)
        params.append(drawn)
        n += 1
    return {"best": best, "steps": steps, "runs": n, "values": values, "run_steps": run_steps,
            "wall_s": time.time() - t0, "space": space.names(dists), "params": params, "sampler_seed": seed,
            "optuna_version": optuna_version()}


def run_hand(base: dict, work: Path, budget: int, a) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    t0, best, steps, n, values, run_steps = time.time(), worst(a.objective), 0, 0, [], []
    for name in ["base", *HAND]:
        if steps + a.steps > budget:
            break
        cfg = base if name == "base" else hand_config(base, name)
        run = work / name
        val = train(cfg, run, a)
        run_steps.append(_steps(run))
        steps += run_steps[-1]
        if better(a.objective, val, best):
            best = val
        values.append(val)
        n += 1
    return {"best": best, "steps": steps, "runs": n, "values": values, "run_steps": run_steps,
            "wall_s": time.time() - t0}


def cached(path: Path, compute) -> dict:
    """``compute()``'s result dict, kept as JSON at ``path`` and read back on a later sitting (NaN kept as null)."""
    if path.is_file():
        r = json.loads(path.read_text())
        r["values"] = [float("nan") if v is None else v for v in r["values"]]
        r["best"] = float("nan") if r["best"] is None else r["best"]
        return r
    r = compute()
    clean = {**r, "values": [v if v == v else None for v in r["values"]], "best": finite_or_none(r["best"])}
    write_text(path, json.dumps(clean, indent=1))          # atomic, parents made
    return r


# a (start, repeat)'s raw files worth keeping (--keep): each method's result and the configs/lineage that say what
# each run trained; the runs themselves (checkpoints) stay in --out
RAW_FILES = {"autopilot": (f"autopilot/search/{LINEAGE_FILE}", "autopilot/search/configs/*.json"),
             "tpe": ("tpe/t*.json",), "random": ("random/t*.json",), "hand": ("hand/*.json",)}


def repo_paths(*given: str | Path) -> dict[str, str]:
    """``{absolute form: as given}`` for each relative path on the command line (``--out``, ``--source``,
    ``--target``): both its absolute and its symlink-resolved form, longest first, so :func:`keep_raw` can write
    the kept files with the paths relative to where the benchmark ran (the run configs hold absolute paths). An
    absolute path given is left out: there is nothing relative to write for it."""
    out = {}
    for g in given:
        if g is None or Path(g).is_absolute():
            continue
        for form in (Path(g).absolute(), Path(g).resolve()):
            out[str(form)] = str(g).rstrip("/")
    return dict(sorted(out.items(), key=lambda kv: -len(kv[0])))


def keep_raw(work: Path, keep: Path, paths: dict[str, str] | None = None) -> int:
    """Copy the raw files of one (start, repeat) work dir to ``keep`` (same relative paths): every finished method's
    ``<method>.result.json`` and its :data:`RAW_FILES` (the autopilot's lineage and run configs, the samplers' and
    the hand iterations' run configs), each absolute prefix of ``paths`` (:func:`repo_paths`) replaced by its
    relative form. Returns the number of files copied. With ``--keep`` under ``docs/results/`` these are the grid's
    committed raw results, and a sitting on a machine without the old ``--out`` resumes from them
    (:func:`restore_raw`)."""
    n = 0
    for result in sorted(work.glob("*.result.json")):
        method = result.name[: -len(".result.json")]
        for path in [result, *(f for pattern in RAW_FILES.get(method, ()) for f in sorted(work.glob(pattern)))]:
            text = path.read_text()
            for absolute, relative in (paths or {}).items():
                text = text.replace(f'"{absolute}/', f'"{relative}/').replace(f'"{absolute}"', f'"{relative}"')
            dest = keep / path.relative_to(work)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
            n += 1
    return n


def restore_raw(keep: Path, work: Path) -> list[str]:
    """The inverse of :func:`keep_raw` for a fresh ``--out``: for each method whose result was kept and is not in
    ``work``, put its result and raw files back, so :func:`cached` reads the result instead of retraining and
    :func:`best_runs` still reads the lineage. A method without a kept result is left to run. Returns the methods
    restored."""
    import shutil

    restored = []
    for result in sorted(keep.glob("*.result.json")):
        method = result.name[: -len(".result.json")]
        if (work / result.name).exists():
            continue
        for pattern in RAW_FILES.get(method, ()):
            for path in sorted(keep.glob(pattern)):
                dest = work / path.relative_to(keep)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
        work.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result, work / result.name)   # last: the result marks the method finished
        restored.append(method)
    return restored


def run_repeat(start: str, rep: int, src: Path, tgt: Path, work: Path, a) -> dict[str, dict]:
    """One repeat of one start: the autopilot first (its total trained steps = everyone's budget), then those of
    TPE, random and the hand iterations that ``a.methods`` names, at that budget; each method's result kept
    (:func:`cached`)."""
    base = start_config(start, base_config(src, tgt, a.steps, seed=rep, policy=a.policy))
    out = {"autopilot": cached(work / "autopilot.result.json",
                               lambda: run_autopilot(base, work / "autopilot", a, rep))}
    budget = out["autopilot"]["steps"]
    runners = {"tpe": lambda: run_sampler("tpe", base, work / "tpe", budget, a, rep),
               "random": lambda: run_sampler("random", base, work / "random", budget, a, rep),
               "hand": lambda: run_hand(base, work / "hand", budget, a)}
    for method, fn in runners.items():
        if method in a.methods:
            out[method] = cached(work / f"{method}.result.json", fn)
    return out


def rank_stability(src: Path, tgt: Path, a, n: int, out: Path) -> dict:
    """Train ``n`` random-sampled configs (the shared space around the ``seed`` start's base, :func:`search_space`,
    :func:`sampled_config`) for ``a.steps`` steps with an offline eval every ``a.steps // 6``; Spearman rank
    correlation of the objective at each eval step with the last one (the budget at which runs' ranks stop
    changing)."""
    import optuna

    from dpot.autopilot import space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = base_config(src, tgt, a.steps, seed=0, policy=a.policy)
    every = max(1, a.steps // 6)
    start = search_config({**base, "eval_freq": every})
    dists = search_space(start)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.RandomSampler(seed=0))
    curves = {}
    for i in range(n):
        trial = study.ask()
        cfg = sampled_config(start, space.suggest(trial, dists))
        run = out / "rank_stability" / f"c{i}"
        run.parent.mkdir(parents=True, exist_ok=True)
        train(cfg, run, a)
        curve = {int(r["step"]): float(r[OBJ]) for r in read_metrics(run) if OBJ in r}
        study.tell(trial, curve.get(a.steps, float("nan")))
        curves[i] = {"params": trial.params, "curve": curve}
    steps = sorted({s for c in curves.values() for s in c["curve"]})
    full = [c["curve"].get(a.steps, float("nan")) for c in curves.values()]
    rho = {s: spearman([c["curve"].get(s, float("nan")) for c in curves.values()], full) for s in steps}
    return {"steps": a.steps, "configs": n, "eval_every": every, "spearman_vs_last": rho,
            "runs": {str(i): {"params": c["params"], "curve": {str(k): v for k, v in c["curve"].items()}}
                     for i, c in curves.items()}}


def objective_words(a) -> str:
    """How a run's value is read, for the table's header line."""
    if a.objective.bench_task:
        return (f"closed-loop success of the final checkpoint, {a.bench_episodes} target-domain episodes of "
                f"{a.bench_max_steps} steps")
    return "final value of a run"


def section_heading(objective) -> str:
    """The docs/benchmarks.md subsection a grid writes (``--write``): the closed-loop grid (a ``bench:<task>``
    objective) has its own, so writing one grid never replaces the other's table."""
    return CLOSED_LOOP_SECTION if objective.bench_task else SECTION


def repeats_words(a) -> str:
    """``5 repeat(s)``, or with ``--first-repeat K``: ``5 repeat(s) (seeds K..K+4)``."""
    first = a.first_repeat
    return f"{a.repeats} repeat(s)" + (f" (seeds {first}..{first + a.repeats - 1})" if first else "")


def table(doc: dict, a) -> str:
    """The Markdown section: one row per start and method (best: mean ± sd over repeats; runs to TPE's best:
    median over repeats, '-' when never in most)."""
    lines = [a.section or section_heading(a.objective), "",
             f"`benchmarks/autopilot.py {shlex.join(sys.argv[1:])}` on {platform.node() or 'this machine'} "
             f"({os.cpu_count()} CPUs, shared): {a.steps} steps per run, autopilot {a.iterations} iteration(s) x "
             f"<= {a.candidates} candidate(s), {repeats_words(a)}, {a.policy} policy, objective "
             f"`{a.objective.key}` ({a.objective.direction}, {objective_words(a)}); each method's budget = the "
             "autopilot's total trained steps.", "",
             "| start | method | best objective (mean ± sd) | per repeat | steps (mean) | runs (mean) | "
             "runs to TPE's best (median) |", "|---|---|---|---|---|---|---|"]
    for start, entry in doc["starts"].items():
        for method, m in entry["methods"].items():
            rs = m["repeats"]
            bests = [r["best"] if r["best"] is not None else float("nan") for r in rs]
            sd = statistics.pstdev(bests) if len(bests) > 1 else 0.0
            hits = [r["runs_to_tpe_best"] for r in rs]
            med = (statistics.median([h if h is not None else float("inf") for h in hits]) if hits else None)
            lines.append(f"| {start} | {method} | {statistics.mean(bests):.4f} ± {sd:.4f} | "
                         f"{', '.join(f'{b:.4f}' for b in bests)} | {statistics.mean(r['steps'] for r in rs):.0f} | "
                         f"{statistics.mean(r['runs'] for r in rs):.1f} | "
                         f"{'-' if med is None or med == float('inf') else f'{med:g}'} |")
    return "\n".join(lines) + "\n"


HEALTHY_STARTS = ("seed", "healthy")   # every other start is a planted pathology


def goal_lines(doc: dict) -> str:
    """Issue 22's goal, fixed before measuring, checked mechanically per start: (1) the autopilot's mean best is
    no worse than TPE's (``<=`` for a min objective, ``>=`` for max); (2) from a pathological start, the median
    over repeats of the autopilot's ``runs_to_tpe_best`` (never = infinity) is at most half the median of TPE's
    runs. A Markdown list ('' without both methods)."""
    lines = []
    for start, entry in doc["starts"].items():
        ms = entry["methods"]
        if "autopilot" not in ms or "tpe" not in ms:
            continue
        mean = {m: statistics.mean(r["best"] if r["best"] is not None else float("nan") for r in ms[m]["repeats"])
                for m in ("autopilot", "tpe")}
        ok = mean["autopilot"] <= mean["tpe"] if doc["direction"] == "min" else mean["autopilot"] >= mean["tpe"]
        words = [f"mean best {mean['autopilot']:.4f} vs TPE {mean['tpe']:.4f}: {'met' if ok else 'not met'}"]
        if start not in HEALTHY_STARTS:
            hits = [r["runs_to_tpe_best"] if r["runs_to_tpe_best"] is not None else float("inf")
                    for r in ms["autopilot"]["repeats"]]
            med, half = statistics.median(hits), statistics.median(r["runs"] for r in ms["tpe"]["repeats"]) / 2
            words.append(f"runs to TPE's best (median) {'never' if med == float('inf') else f'{med:g}'} vs half "
                         f"TPE's runs {half:g}: {'met' if med <= half else 'not met'}")
        n = len(ms["autopilot"]["repeats"])
        lines.append(f"- {start} ({n} repeat{'s' if n != 1 else ''}): " + "; ".join(words))
    if not lines:
        return ""
    return "\n".join(["", "The goal, fixed before measuring, per start (`goal_lines`):", "", *lines]) + "\n"


def _run_words(cfg: dict) -> str:
    """A trained config's optimiser block in a few words: lr, schedule, optimiser type, OT lambda and reg."""
    from dpot.analysis import cfgkeys

    sched = cfgkeys.schedule(cfg) or {}
    opt = (cfg.get("optimizer") or {}).get("type") if not cfg.get(cfgkeys.PRESET, True) else "the preset's"
    ot, lr = cfg.get("ot") or {}, cfgkeys.base_lr(cfg)
    name = sched.get("name") or ("the preset's" if cfg.get(cfgkeys.PRESET, True) else "no")
    return (f"lr {'?' if lr is None else f'{lr:.3g}'}, {name} schedule, {opt} optimiser, "
            f"lambda_ot {float(ot.get('lambda_ot', 0)):.3g}, reg {float(ot.get('reg', 0)):.3g}")


def best_runs(out: Path, doc: dict) -> str:
    """Where each repeat's best came from, read from the runs themselves: the autopilot's best node (its lineage
    title: which diagnosis or the sampler, and what it changed) and TPE's best run (its config), per start and
    repeat; a Markdown list ('' when there is nothing to read)."""
    lines = []
    for start, entry in doc["starts"].items():
        reps = entry["methods"].get("autopilot", {}).get("repeats", [])
        for r in reps:
            work = out / start / f"rep{r['seed']}"
            parts = []
            lin = work / "autopilot" / "search" / LINEAGE_FILE
            if lin.is_file():
                nodes = [n for n in json.loads(lin.read_text())["nodes"] if shown_state(n) == "best"]
                if nodes:
                    n = nodes[-1]
                    cfg_path = work / "autopilot" / "search" / "configs" / f"{n['name']}.json"
                    words = f"; {_run_words(json.loads(cfg_path.read_text()))}" if cfg_path.is_file() else ""
                    parts.append(f"autopilot {n['objective']:.4f} from {n['name']} ({n['title']}{words})")
            tpe = work / "tpe.result.json"
            if tpe.is_file():
                vals = json.loads(tpe.read_text())["values"]
                ok = [(v, i) for i, v in enumerate(vals) if v is not None]
                if ok:
                    v, i = (min if doc["direction"] == "min" else max)(ok)
                    cfg_path = work / "tpe" / f"t{i}.json"
                    words = f" ({_run_words(json.loads(cfg_path.read_text()))})" if cfg_path.is_file() else ""
                    parts.append(f"TPE {v:.4f} from t{i}{words}")
            if parts:
                lines.append(f"- {start}, repeat {r['seed']}: " + "; ".join(parts))
    if not lines:
        return ""
    head = f"Where each repeat's best came from (`<out>/<start>/rep<k>/autopilot/search/{LINEAGE_FILE}`, "
    return "\n".join(["", head + "`tpe/t<n>.json`; `best_runs`):", "", *lines]) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny budget: 6 steps, 1 iteration x 1 candidate, 1 repeat, starts seed and lr-100x-high")
    p.add_argument("--steps", type=int, default=300, help="training steps per run")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--strategy", choices=STRATEGIES, default="both",
                   help="the autopilot's --strategy (default both; prior: the diagnoses as the sampler's prior)")
    p.add_argument("--candidates", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--first-repeat", type=int, default=0, metavar="K",
                   help="run repeats K .. K+repeats-1 (each repeat's index is its seed): fresh repeats for a "
                        "follow-up, never used by an earlier grid; two sittings can split the repeats")
    p.add_argument("--section", default=None,
                   help="the docs subsection heading --write replaces (default: the grid's, or the closed-loop "
                        "grid's for a bench:<task> objective)")
    p.add_argument("--starts", default=",".join(STARTS), help=f"comma-separated start conditions ({', '.join(STARTS)})")
    p.add_argument("--source", help="source dataset root (default: toy data)")
    p.add_argument("--target", help="target dataset root (default: toy data)")
    p.add_argument("--out", default="outputs/bench_autopilot", help="work directory")
    p.add_argument("--results", default=None, help="also write the results JSON here (e.g. "
                                                    "docs/results/autopilot/results.json)")
    p.add_argument("--write", help="Markdown file whose autopilot grid subsection is replaced")
    p.add_argument("--keep", default=None, help="also keep each finished (start, repeat)'s results, lineage and run "
                                                 "configs here (e.g. docs/results/autopilot/grid) and resume from "
                                                 "them when --out lacks them")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma-separated methods (default all: autopilot,tpe,random,hand); the autopilot always "
                        "runs (its steps are everyone's budget)")
    p.add_argument("--objective", default=OBJ,
                   help=f"what every method optimises: a logged metric METRIC[:min|max] (default {OBJ}) or "
                        "bench:<task> (closed-loop target success of each run's final checkpoint, max; the data "
                        "must come from dpot bench generate for that task)")
    p.add_argument("--bench-episodes", type=int, default=20, help="episodes per closed-loop evaluation (20)")
    p.add_argument("--bench-max-steps", type=int, default=150, help="episode length of a closed-loop evaluation")
    p.add_argument("--policy", choices=POLICY_SIZES, default="cpu",
                   help="cpu: the tiny CPU-sized Diffusion policy (32 px, batch 8); study: the cpu-idood-powered "
                        "study's policy and batch (64 px, U-Net 64-128-256, batch 32), which a closed-loop "
                        "objective needs to succeed at all")
    p.add_argument("--rank-stability", type=int, default=0, metavar="N",
                   help="instead of the grid: N random configs to --steps, Spearman of each eval step vs the last")
    a = p.parse_args()
    try:
        a.objective = parse_objective(a.objective)
    except UserError as err:
        p.error(str(err))
    if a.first_repeat < 0 or a.repeats < 1:
        p.error("--first-repeat must be >= 0 and --repeats >= 1")
    if a.section is not None and not a.section.startswith("### "):
        p.error(f"--section: {a.section!r} is not a '### ' heading; give e.g. '### The grid, follow-up'")
    if a.rank_stability and a.objective.bench_task:
        p.error("--rank-stability reads the logged objective at every eval step; a bench:<task> objective has one "
                "value per run")
    starts = [x.strip() for x in a.starts.split(",") if x.strip()]
    if a.quick:
        a.steps, a.iterations, a.candidates, a.repeats = 6, 1, 1, 1
        starts = ["seed", "lr-100x-high"] if a.starts == ",".join(STARTS) else starts
    bad = [x for x in starts if x not in STARTS]
    if bad:
        p.error(f"--starts: unknown {', '.join(bad)}; choose from {', '.join(STARTS)}")
    a.methods = ["autopilot", *[m.strip() for m in a.methods.split(",") if m.strip() and m.strip() != "autopilot"]]
    bad = [m for m in a.methods if m not in METHODS]
    if bad:
        p.error(f"--methods: unknown {', '.join(bad)}; choose from {', '.join(METHODS)}")
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
    if a.rank_stability:
        doc = rank_stability(src, tgt, a, a.rank_stability, out)
        text = json.dumps(doc, indent=2) + "\n"
        (out / "rank_stability.json").write_text(text)
        if a.results:
            Path(a.results).parent.mkdir(parents=True, exist_ok=True)
            Path(a.results).write_text(text)
        print(json.dumps(doc["spearman_vs_last"], indent=1))
        return 0
    results: dict[str, dict[str, list[dict]]] = {}
    kept_paths = repo_paths(a.out, a.source, a.target)
    # repeat by repeat over the starts, so that a sitting that stops early leaves every start with as many repeats
    # as the others; <out>/results.json is rewritten after each (start, repeat)
    for rep in range(a.first_repeat, a.first_repeat + a.repeats):
        for start in starts:
            res = results.setdefault(start, {m: [] for m in METHODS if m in a.methods})
            work = out / start / f"rep{rep}"
            if a.keep:
                restore_raw(Path(a.keep) / start / f"rep{rep}", work)
            for method, r in run_repeat(start, rep, src, tgt, work, a).items():
                res[method].append({**r, "seed": rep})
            if a.keep:
                keep_raw(work, Path(a.keep) / start / f"rep{rep}", kept_paths)
            print(json.dumps({start: {m: v[-1]["best"] for m, v in res.items()}}), flush=True)
            (out / "results.json").write_text(json.dumps(results_doc(results, a.objective), indent=2) + "\n")
    doc = results_doc(results, a.objective)
    text = json.dumps(doc, indent=2) + "\n"
    (out / "results.json").write_text(text)
    if a.results:
        Path(a.results).parent.mkdir(parents=True, exist_ok=True)
        Path(a.results).write_text(text)
    md = table(doc, a) + goal_lines(doc) + best_runs(out, doc)
    print(md)
    if a.write:
        write_section(Path(a.write), md, parent=PARENT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
