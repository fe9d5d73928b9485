"""``dpot bench study``: the sim->real co-training study (target-only vs naive co-training vs DP+OT, ...).

``dpot bench study --preset cpu-idood|cpu-small|gpu-full|micro|micro-idood [--task T] [--shift S] [--dir D]
[--seeds N] [--only m1,m2] [--max-jobs K] [--plan]`` generates the source and target datasets, trains every
(method, seed) job of the plan with the same preset budget (:mod:`dpot.bench.presets`), evaluates each final
checkpoint closed-loop in every evaluation cell of the preset (v1 presets: ``target``, ``source``; ID/OOD
presets: ``target_id``, ``target_ood``, ``source``) and each intermediate checkpoint in the preset's curve
cells (the learning curve), and writes ``results.json`` / ``results.md`` / ``curves.png``.

Study directory::

    D/study.json                          preset + task (a study is never continued with other settings)
    D/data/<task>_{source,target}/        LeRobotDatasets (reused when identical)
    D/configs/<job>.json                  the train config a job started from
    D/runs/<job>/                         a normal dpot run dir (train_config.json, metrics.jsonl, checkpoints/)
    D/logs/<job>.log                      the trainer's output
    D/evals/<job>-<cell>.json             final-checkpoint evaluation; <job>-<cell>-step<NNNNNN>.json: curve
    D/done/<job>.json                     written last, atomically: the job is finished
    D/claims/<job>.lock                   flock-ed while a sitting works on the job
    D/results.json, results.md, curves.png

``<job>`` = ``<method>-seed<k>``. Resume: a job with a ``done/`` marker is skipped; otherwise each stage is
redone only if its output is missing: training resumes from ``checkpoints/last`` (``--resume=true``; a run dir
without any checkpoint holds nothing to keep and is started again), and every evaluation whose JSON exists is
kept. Jobs run in plan order: the calibration runs (seed 0 of the methods marked ``calibration``: target-only
and source-only in the ID/OOD study) first, then the core methods (group 0) for all seeds, seed by seed, then
the other groups. Training runs in a subprocess (``python -m dpot.train``).

Several sittings may share one directory at the same time (e.g. two processes with ``OMP_NUM_THREADS=1`` on a
2-core machine): a sitting works on a job only while it holds an exclusive ``flock`` on ``claims/<job>.lock``
(released by the kernel when the process ends, however it ends), skips jobs another sitting holds, and
generates the datasets under a lock of its own.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dpot.bench.presets import DATA_SEEDS, EVAL_CELLS, EVAL_SEED, Method, Preset, get_preset, parse_methods
from dpot.errors import UserError

CURVE_FILE = "{job}-{cell}-step{step:06d}.json"
# Preset fields added after the first studies were recorded: an older study.json had these values
_LATER_FIELDS = {"obs": "full", "shift": "target", "source_region": "all", "target_region": "all",
                 "curve_domains": ["target"], "methods": "v1"}
OT_PREFIXES = ("train/ot_cost/", "train/ot_cost_mean/", "train/ot_embed_spread/")
OT_KEYS = ("train/ot_pi_sum", "train/ot_pi_diag", "train/ot_pi_diag_frac", "train/ot_loss", "train/ot_skipped",
           "train/loss", "train/bc_loss_src", "train/bc_loss_tgt")


@dataclass(frozen=True)
class Job:
    """One (method, seed) run of the study."""

    method: Method
    seed: int

    @property
    def id(self) -> str:
        return f"{self.method.name}-seed{self.seed}"


def plan_jobs(methods: list[Method], seeds: int) -> list[Job]:
    """Jobs in execution order: the calibration runs (seed 0 of a ``calibration`` method), then by method group
    (core first), then seed, then the order of ``methods``."""
    order = [m.name for m in methods]
    jobs = [Job(m, s) for m in methods for s in range(seeds)]
    return sorted(jobs, key=lambda j: (-1 if j.method.calibration and j.seed == 0 else j.method.group, j.seed,
                                       order.index(j.method.name)))


@contextmanager
def file_lock(path: Path, *, blocking: bool) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` for the ``with`` block; yields False (and holds nothing) when
    ``blocking`` is False and another process holds it. The kernel drops the lock when the holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield True
    finally:
        os.close(fd)


def write_json(path: Path, obj) -> Path:
    """Write JSON atomically (temp file + rename): readers see the old file or the whole new one."""
    from dpot.atomic import write_text

    return write_text(path, json.dumps(obj, indent=1))


class Study:
    """A study directory for one preset and task; every method is idempotent (skips what is on disk)."""

    def __init__(self, root: str | Path, preset: Preset, task: str, *, device: str | None = None,
                 eval_workers: int | None = None, progress: bool = True):
        if task not in preset.tasks:
            raise UserError(f"--task: '{task}' is not a task of preset {preset.name}; one of {', '.join(preset.tasks)}")
        self.root, self.preset, self.task, self.progress = Path(root), preset, task, progress
        self.device = device or preset.device
        self.eval_workers = eval_workers or preset.eval_workers

    # -------------------------------------------------------------- layout
    def run_dir(self, job: Job) -> Path:
        return self.root / "runs" / job.id

    def eval_path(self, job: Job, domain: str) -> Path:
        return self.root / "evals" / f"{job.id}-{domain}.json"

    def done_path(self, job: Job) -> Path:
        return self.root / "done" / f"{job.id}.json"

    def final_checkpoint(self, job: Job) -> Path:
        from dpot.train.checkpoint import step_dir_name

        return self.run_dir(job) / "checkpoints" / step_dir_name(self.preset.steps, self.preset.steps)

    def cell(self, name: str) -> tuple[str, str]:
        """(domain spec name, region) of an evaluation cell (:data:`dpot.bench.presets.EVAL_CELLS`)."""
        role, region = EVAL_CELLS[name]
        return self.domain(role), region

    def domain(self, role: str) -> str:
        """The domain of a dataset role: ``source`` is the source domain, ``target`` the preset's shift."""
        return "source" if role == "source" else self.preset.shift

    def is_done(self, job: Job) -> bool:
        """Finished: the done marker, the final checkpoint and every final evaluation are on disk."""
        return (self.done_path(job).is_file()
                and (self.final_checkpoint(job) / "pretrained_model" / "model.safetensors").is_file()
                and all(self.eval_path(job, d).is_file() for d in self.preset.eval_domains))

    def open(self) -> None:
        """Create the directory or check that it holds a study with the same preset and task."""
        record = {"preset": self.preset.to_dict(), "task": self.task}
        path = self.root / "study.json"
        if path.is_file():
            old = json.loads(path.read_text())
            if old.get("task") != self.task or {**_LATER_FIELDS, **old.get("preset", {})} != record["preset"]:
                raise UserError(f"--dir {self.root}: holds a study of preset '{old.get('preset', {}).get('name')}' "
                                f"on task '{old.get('task')}' with other settings; choose another --dir")
            return
        write_json(path, {**record, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    # -------------------------------------------------------------- data
    def datasets(self) -> dict[str, dict]:
        """Generate (or reuse) the source and target datasets; returns DatasetConfig dicts by domain."""
        from dpot.bench.generate import generate_dataset

        p, out = self.preset, {}
        with file_lock(self.root / "claims" / "data.lock", blocking=True):
            for role, n, region in (("source", p.source_episodes, p.source_region),
                                    ("target", p.target_episodes, p.target_region)):
                root = self.root / "data" / f"{self.task}_{role}"
                generate_dataset(self.task, self.domain(role), n, root, image_size=p.image_size, cameras=p.cameras,
                                 seed=DATA_SEEDS[role], progress=self.progress, obs=p.obs, region=region)
                out[role] = {"repo_id": f"local/{self.task}_{role}", "root": str(root)}
        return out

    # -------------------------------------------------------------- training
    def job_config(self, job: Job, data: dict[str, dict]) -> dict:
        """The train config of a job: the demo's CPU config (:func:`dpot.demo.demo_config`) at the preset's scale."""
        from dpot.demo import demo_config

        p = self.preset
        cfg = demo_config(data[job.method.source], data[job.method.target], self.run_dir(job), steps=p.steps,
                          batch_size=p.batch_size, num_workers=p.num_workers, device=self.device or "cuda")
        cfg["policy"].update(p.policy)
        cfg["policy"]["scheduler_warmup_steps"] = p.warmup_steps
        if p.num_workers == 0:
            cfg.pop("dataloader_multiprocessing_context", None)
            cfg.pop("prefetch_factor", None)
        cfg.update({"job_name": f"study-{job.id}", "seed": job.seed, "save_freq": p.save_every, "eval_freq": 0,
                    "log_freq": p.log_freq, "ot": job.method.ot_config()})
        cfg["eval"] = {**cfg.get("eval", {}), "val_fraction": 0.0}
        return cfg

    def train(self, job: Job, data: dict[str, dict]) -> str:
        """Train the job (fresh, or resumed from its last checkpoint); returns "done", "resumed" or "fresh"."""
        run = self.run_dir(job)
        if (self.final_checkpoint(job) / "pretrained_model" / "model.safetensors").is_file():
            return "done"
        last = run / "checkpoints" / "last"
        if last.exists() and (last / "training_state" / "training_step.json").is_file():
            args, mode = [f"--config_path={run / 'train_config.json'}", "--resume=true"], "resumed"
        else:
            if run.exists():
                shutil.rmtree(run)  # no checkpoint yet: nothing to keep
            cfg_path = write_json(self.root / "configs" / f"{job.id}.json", self.job_config(job, data))
            args, mode = [f"--config_path={cfg_path}"], "fresh"
        log = self.root / "logs" / f"{job.id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "PYTHONUNBUFFERED": "1"}
        with log.open("a") as fh:
            fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {mode}: {' '.join(args)}\n")
            fh.flush()
            rc = subprocess.run([sys.executable, "-m", "dpot.train", *args], stdout=fh, stderr=subprocess.STDOUT,
                                env=env, check=False).returncode
        if rc != 0:
            tail = log.read_text().strip().splitlines()[-1:] or [""]
            raise UserError(f"study job {job.id}: training exited with code {rc} ({tail[0][:200]}); see {log}")
        return mode

    # -------------------------------------------------------------- evaluation
    def evaluate(self, job: Job, ckpt: Path, cell: str, episodes: int, path: Path) -> dict:
        """Closed-loop evaluation of one checkpoint in one cell (kept if its JSON exists); compact result dict.
        Every method and seed gets the same episode seeds ``EVAL_SEED, EVAL_SEED + 1, ...`` per cell."""
        if path.is_file():
            return json.loads(path.read_text())
        from dpot.bench.evaluate import evaluate_policy

        domain, region = self.cell(cell)
        r = evaluate_policy(ckpt / "pretrained_model", self.task, domain, episodes, EVAL_SEED,
                            max_steps=self.preset.eval_max_steps, workers=self.eval_workers, device=self.device,
                            progress=self.progress, obs=self.preset.obs, region=region)
        detail = r.pop("episodes_detail", [])
        r.update({"job": job.id, "method": job.method.name, "train_seed": job.seed, "step": _ckpt_step(ckpt),
                  "cell": cell,
                  "episode_success": "".join("1" if e["success"] else "0" for e in detail)})
        write_json(path, r)
        return r

    def curve(self, job: Job, cell: str) -> list[dict]:
        """Evaluate each intermediate checkpoint in ``cell`` (the learning curve)."""
        out = []
        ckpts = sorted(d for d in (self.run_dir(job) / "checkpoints").iterdir() if d.name.isdigit())
        for ckpt in ckpts:
            step = int(ckpt.name)
            if step >= self.preset.steps:
                continue
            path = self.root / "evals" / CURVE_FILE.format(job=job.id, cell=cell, step=step)
            r = self.evaluate(job, ckpt, cell, self.preset.curve_episodes, path)
            out.append({"step": step, "successes": r["successes"], "episodes": r["episodes"]})
        return out

    # -------------------------------------------------------------- one job
    def run_job(self, job: Job, data: dict[str, dict]) -> dict:
        """Train, evaluate (curve + final, both domains) and write the done marker; returns the marker."""
        mode = self.train(job, data)
        curves = {cell: self.curve(job, cell) for cell in self.preset.curve_domains}
        final = self.final_checkpoint(job)
        evals = {}
        for cell in self.preset.eval_domains:
            r = self.evaluate(job, final, cell, self.preset.eval_episodes, self.eval_path(job, cell))
            evals[cell] = {k: r[k] for k in ("successes", "episodes", "success_rate", "ci95", "mean_length")}
        for cell, curve in curves.items():
            curve.append({"step": self.preset.steps, **{k: evals[cell][k] for k in ("successes", "episodes")}}
                         if cell in evals else {"step": self.preset.steps})
        first = self.preset.curve_domains[0] if self.preset.curve_domains else None
        marker = {"job": job.id, "method": job.method.name, "seed": job.seed, "steps": self.preset.steps,
                  "train": mode, "evals": evals, "curve": curves.get(first, []), "curve_cell": first,
                  "curves": curves, "ot": ot_metrics(self.run_dir(job)),
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_json(self.done_path(job), marker)
        return marker

    def run(self, jobs: list[Job], max_jobs: int | None = None) -> dict:
        """Run the unfinished jobs of ``jobs`` in order (at most ``max_jobs``), then write the results."""
        from tqdm.auto import tqdm

        self.open()
        todo = [j for j in jobs if not self.is_done(j)]
        skipped = len(jobs) - len(todo)
        n_run = len(todo) if max_jobs is None else min(max_jobs, len(todo))
        print(f"dpot bench study: {self.preset.name} on {self.task} in {self.root}: {len(jobs)} jobs, "
              f"{skipped} already done, running up to {n_run}", flush=True)
        if n_run:
            data = self.datasets()
            bar = tqdm(total=n_run, desc="study", unit="job", disable=not self.progress, dynamic_ncols=True)
            ran = 0
            for job in todo:
                if ran >= n_run:
                    break
                with file_lock(self.root / "claims" / f"{job.id}.lock", blocking=False) as mine:
                    if not mine:
                        bar.write(f"study: {job.id} is being run by another sitting; skipped")
                        continue
                    if self.is_done(job):  # finished by another sitting since the list was made
                        continue
                    bar.set_postfix_str(job.id)
                    t0 = time.perf_counter()
                    m = self.run_job(job, data)
                ev = "  ".join(f"{d} {e['successes']}/{e['episodes']}" for d, e in m["evals"].items())
                bar.write(f"study: {job.id} done ({m['train']}, {time.perf_counter() - t0:.0f} s): {ev}")
                ran += 1
                bar.update(1)
            bar.close()
        return write_results(self)


def _ckpt_step(ckpt: Path) -> int | None:
    name = Path(ckpt).resolve().name
    return int(name) if name.isdigit() else None


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
            mean = sum(rates) / len(rates)
            d["seed_mean"] = mean
            d["seed_std"] = (sum((r - mean) ** 2 for r in rates) / (len(rates) - 1)) ** 0.5 if len(rates) > 1 else None
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


def write_results(study: Study) -> dict:
    """Collect every done marker of the study into ``results.json``, ``results.md`` and ``curves.png``."""
    markers = [json.loads(p.read_text()) for p in sorted((study.root / "done").glob("*.json"))]
    for m in markers:  # recomputed from the run's log when it is here (markers of older versions: last value)
        run = study.root / "runs" / m["job"]
        if (run / "metrics.jsonl").is_file():
            m["ot"] = ot_metrics(run)
    p = study.preset
    results = {"preset": p.name, "task": study.task, "steps": p.steps, "obs": p.obs, "shift": p.shift,
               "eval_episodes": p.eval_episodes, "curve_episodes": p.curve_episodes,
               "eval_cells": {c: dict(zip(("domain", "region"), study.cell(c), strict=True)) for c in p.eval_domains},
               "curve_cell": p.curve_domains[0] if p.curve_domains else None, "eval_seed": EVAL_SEED,
               "jobs_done": sorted(m["job"] for m in markers), "versions": _versions(),
               "methods": aggregate(markers, list(p.method_table))}
    write_json(study.root / "results.json", results)
    png = _plot_curves(results, study.root / "curves.png")
    from dpot.atomic import write_text

    write_text(study.root / "results.md", render_markdown(results, png.name if png else None))
    return results


def _pct(d: dict) -> str:
    lo, hi = d["ci95"]
    return f"{d['successes']}/{d['episodes']} = {100 * d['success_rate']:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"


def render_markdown(results: dict, curves_png: str | None = None) -> str:
    """The results page of a study: success table, learning curves, OT metrics per run."""
    curve_cell = results.get("curve_cell") or "target"
    intro = (f"{results['steps']} training steps per run; {results['eval_episodes']} closed-loop episodes per "
             f"cell per run (final checkpoint), {results['curve_episodes']} {curve_cell} episodes per "
             "intermediate checkpoint. Success: pooled over all episodes of all seeds, 95% Wilson interval in "
             "brackets (treats episodes of different seeds as independent; per-seed values beside it).")
    cells_info = results.get("eval_cells")
    if cells_info:
        intro += " Cells: " + "; ".join(f"{c} = {i['domain']} domain, region {i['region']}"
                                        for c, i in cells_info.items()) + "."
    names = list(cells_info) if cells_info else [
        d for d in ("target", "source") if any(d in m["domains"] for m in results["methods"].values())]
    for m in results["methods"].values():
        names += [d for d in m["domains"] if d not in names]
    lines = [f"# Study: {results['preset']} on {results['task']}", "", intro, "",
             "| method | seeds | " + " | ".join(f"{d} success | per seed" for d in names) + " |",
             "|---|---|" + "---|---|" * len(names)]
    for name, m in results["methods"].items():
        cells = []
        for domain in names:
            d = m["domains"].get(domain)
            per_seed = ", ".join(f"{s['successes']}/{s['episodes']}" for s in d["per_seed"]) if d else "–"
            cells += [_pct(d) if d else "–", per_seed]
        lines.append(f"| {name} | {len(m['seeds'])} | " + " | ".join(cells) + " |")
    lines += ["", f"## Learning curves ({curve_cell} success per checkpoint, pooled over seeds)", ""]
    if curves_png:
        lines += [f"![curves]({curves_png})", ""]
    for name, m in results["methods"].items():
        for cell, curve in (m.get("curves") or {curve_cell: m["curve"]}).items():
            pts = ", ".join(f"{s}: {100 * c['success_rate']:.0f}% ({c['successes']}/{c['episodes']})"
                            for s, c in sorted(curve.items(), key=lambda kv: int(kv[0])))
            lines.append(f"- {name} ({cell}): {pts}")
    lines += ["", "## OT metrics (mean over the last 10% of logged steps per run)", ""]
    keys = sorted({k for m in results["methods"].values() for r in m["runs"].values() for k in r
                   if k != "last_step" and not k.startswith("first/")})
    short = [k.replace("train/", "") for k in keys]
    lines += ["| run | " + " | ".join(short) + " |", "|---|" + "---|" * len(keys)]
    for m in results["methods"].values():
        for job, r in m["runs"].items():
            lines.append(f"| {job} | " + " | ".join(_fmt(r.get(k)) for k in keys) + " |")
    v = results["versions"]
    lines += ["", "Versions: " + ", ".join(f"{k} {x}" for k, x in v.items()), ""]
    return "\n".join(lines)


def _fmt(x) -> str:
    if x is None:
        return "–"
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _plot_curves(results: dict, path: Path) -> Path | None:
    """Target success vs training step per method (pooled over seeds, Wilson band); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, m in results["methods"].items():
        pts = sorted((int(s), c) for s, c in m["curve"].items())
        if not pts:
            continue
        xs = [s for s, _ in pts]
        ax.plot(xs, [c["success_rate"] for _, c in pts], marker="o", label=f"{name} ({len(m['seeds'])} seeds)")
        ax.fill_between(xs, [c["ci95"][0] for _, c in pts], [c["ci95"][1] for _, c in pts], alpha=0.15)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{results.get('curve_cell') or 'target'} success")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{results['task']} ({results['preset']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ CLI
SHIFTS = ("target", "target-visual")


def default_dir(preset: Preset, task: str, shift: str | None = None) -> Path:
    """``outputs/study/<preset>-<task>`` (plus ``-<shift>`` when ``--shift`` differs from the preset's)."""
    suffix = f"-{shift}" if shift and shift != preset.shift else ""
    return Path("outputs/study") / f"{preset.name}-{task}{suffix}"


def make_study(preset: str, *, task: str | None = None, root: str | Path | None = None, shift: str | None = None,
               device: str | None = None, eval_workers: int | None = None, progress: bool = True) -> Study:
    """The :class:`Study` of a preset (``shift`` overrides the preset's target domain: ``target`` = visual +
    dynamics shift, ``target-visual`` = camera pose + table texture)."""
    import dataclasses

    from dpot.errors import did_you_mean

    p = get_preset(preset)
    if shift is not None and shift not in SHIFTS:
        raise UserError(f"--shift: unknown shift '{shift}'{did_you_mean(shift, SHIFTS)}; one of {', '.join(SHIFTS)}")
    task = task or p.tasks[0]
    root = Path(root) if root else default_dir(p, task, shift)
    if shift is not None:
        p = dataclasses.replace(p, shift=shift)
    return Study(root, p, task, device=device, eval_workers=eval_workers, progress=progress)


def run_study(preset: str, *, task: str | None = None, root: str | Path | None = None, seeds: int | None = None,
              only: str | None = None, max_jobs: int | None = None, device: str | None = None,
              eval_workers: int | None = None, progress: bool = True, shift: str | None = None) -> dict:
    """Python entry point of ``dpot bench study``; returns the results dict (see :func:`aggregate`)."""
    if seeds is not None and seeds < 1:
        raise UserError(f"--seeds: must be >= 1, got {seeds}")
    if max_jobs is not None and max_jobs < 0:
        raise UserError(f"--max-jobs: must be >= 0, got {max_jobs}")
    study = make_study(preset, task=task, root=root, shift=shift, device=device, eval_workers=eval_workers,
                       progress=progress)
    jobs = plan_jobs(parse_methods(only, study.preset.method_table), seeds or study.preset.seeds)
    os.environ.setdefault("MUJOCO_GL", "egl")
    return study.run(jobs, max_jobs)


def add_arguments(p) -> None:
    """The options of ``dpot bench study`` (registered in :data:`dpot.bench.cli.SUBCOMMANDS`)."""
    from dpot.bench.presets import METHOD_TABLES, PRESETS

    p.add_argument("--preset", default="cpu-small", help=" | ".join(PRESETS) + " (default cpu-small; "
                   "cpu-idood: the paper's ID/OOD protocol)")
    p.add_argument("--task", default=None, help="default: the preset's first task")
    p.add_argument("--shift", default=None, help="target domain: target (visual + dynamics) | target-visual "
                   "(camera pose + table texture); default: the preset's")
    p.add_argument("--dir", default=None, help="study directory (default outputs/study/<preset>-<task>[-<shift>])")
    p.add_argument("--seeds", type=int, default=None, help="seeds per method (default: the preset's, 3)")
    p.add_argument("--only", default=None, help="comma-separated methods of the preset: " + "; ".join(
        f"{name} presets: {', '.join(t)}" for name, t in METHOD_TABLES.items()))
    p.add_argument("--max-jobs", type=int, default=None, help="run at most K unfinished jobs this sitting")
    p.add_argument("--device", default=None, help="training/eval device (default: the preset's)")
    p.add_argument("--eval-workers", type=int, default=None, help="evaluation processes")
    p.add_argument("--plan", action="store_true", help="print the jobs and their state; run nothing")


def run_cli(args) -> int:
    """``dpot bench study`` with parsed ``args``; returns the exit code."""
    if args.plan:
        study = make_study(args.preset, task=args.task, root=args.dir, shift=args.shift)
        for job in plan_jobs(parse_methods(args.only, study.preset.method_table), args.seeds or study.preset.seeds):
            state = "done" if study.is_done(job) else (
                "partial" if (study.run_dir(job) / "checkpoints" / "last").exists() else "todo")
            print(f"{job.id:32s} {state}")
        return 0
    res = run_study(args.preset, task=args.task, root=args.dir, seeds=args.seeds, only=args.only,
                    max_jobs=args.max_jobs, device=args.device, eval_workers=args.eval_workers, shift=args.shift)
    for name, m in res["methods"].items():
        cells = "  ".join(f"{d}: {_pct(e)}" for d, e in m["domains"].items())
        print(f"{name:24s} seeds={len(m['seeds'])}  {cells}")
    return 0


__all__ = ["Job", "Study", "aggregate", "default_dir", "make_study", "ot_metrics", "plan_jobs", "render_markdown",
           "run_study", "write_results"]
