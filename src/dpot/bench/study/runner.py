"""The study's runner: a study directory, flock claims, training subprocesses, evaluations, done markers.

Layout and resume rules: see :mod:`dpot.bench.study`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dpot import rundir
from dpot.bench.presets import (
    DATA_SEEDS,
    EVAL_SEED,
    PAIR_FILE_ARGS,
    PAIR_FILE_PLACEHOLDER,
    Preset,
    get_preset,
    parse_methods,
    policy_section,
    train_config,
)
from dpot.bench.study.layout import StudyDir, eval_file, write_json
from dpot.bench.study.plan import Job, plan_jobs
from dpot.bench.study.results import ot_metrics, write_results
from dpot.errors import UserError
from dpot.launch import launch_train, set_env_defaults

logger = logging.getLogger(__name__)
# Preset fields added after the first studies were recorded: an older study.json had these values
_LATER_FIELDS = {"obs": "full", "shift": "target", "source_region": "all", "target_region": "all",
                 "curve_domains": ["target"], "methods": "v1", "eval_seed": EVAL_SEED, "source_eval_episodes": None,
                 "cpu_s_per_step": 0.75, "cpu_s_per_episode": 1.2}


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


class Study(StudyDir):
    """A study directory for one preset and task (its layout: :class:`~.layout.StudyDir`) and the work that fills
    it; every method is idempotent (skips what is on disk)."""

    def __init__(self, root: str | Path, preset: Preset, task: str, *, device: str | None = None,
                 eval_workers: int | None = None, progress: bool = True):
        super().__init__(root, preset, task)
        self.progress = progress
        self.device = device or preset.device
        self.eval_workers = eval_workers or preset.eval_workers

    # -------------------------------------------------------------- progress
    def cpu_seconds_left(self, job: Job) -> float:
        """Rough one-core seconds still needed by ``job`` (``--plan``): the training steps after its last
        checkpoint times ``cpu_s_per_step``, plus its evaluation episodes not on disk times ``cpu_s_per_episode``."""
        if self.is_done(job):
            return 0.0
        p = self.preset
        done_steps = (rundir.checkpoint_steps(self.run_dir(job)) or [0])[-1]
        episodes = sum(p.cell_episodes(c) for c in p.eval_domains if not self.eval_path(job, c).is_file())
        episodes += len(p.curve_domains) * p.curve_episodes * max(0, p.steps // p.save_every - 1)
        return (p.steps - done_steps) * p.cpu_s_per_step + episodes * p.cpu_s_per_episode

    def is_done(self, job: Job) -> bool:
        """Finished: the done marker and every final evaluation are on disk (the marker is written after the
        training and the learning curves; a kept study's checkpoints may be gone)."""
        return (self.done_path(job).is_file()
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
    def pairs_path(self) -> Path:
        """The study's DTW pair file (``data/<task>_pairs.json``, :data:`dpot.bench.presets.PAIR_FILE_ARGS`)."""
        return self.root / "data" / f"{self.task}_pairs.json"

    def needs_pairs(self) -> bool:
        """Whether a method of the preset's table samples from the study's pair file."""
        return any(m.ot.get("pair_info_path") == PAIR_FILE_PLACEHOLDER for m in self.preset.method_table.values())

    def datasets(self) -> dict[str, dict]:
        """Generate (or reuse) the source and target datasets, and the pair file when a method needs one; returns
        DatasetConfig dicts by domain (and ``"pairs": {"path": ...}``)."""
        from dpot.bench.generate import generate_dataset

        p, out = self.preset, {}
        with file_lock(self.root / "claims" / "data.lock", blocking=True):
            for role, n, region in (("source", p.source_episodes, p.source_region),
                                    ("target", p.target_episodes, p.target_region)):
                root = self.root / "data" / f"{self.task}_{role}"
                generate_dataset(self.task, self.domain(role), n, root, image_size=p.image_size, cameras=p.cameras,
                                 seed=DATA_SEEDS[role], progress=self.progress, obs=p.obs, region=region)
                out[role] = {"repo_id": f"local/{self.task}_{role}", "root": str(root)}
            if self.needs_pairs():
                if not self.pairs_path().is_file():
                    build_study_pairs(Path(out["source"]["root"]), Path(out["target"]["root"]), self.pairs_path())
                out["pairs"] = {"path": str(self.pairs_path())}
        return out

    # -------------------------------------------------------------- training
    def job_config(self, job: Job, data: dict[str, dict]) -> dict:
        """The train config of a job: the CPU train config (:func:`dpot.bench.presets.train_config`) at the
        preset's scale."""
        p = self.preset
        cfg = train_config(data[job.method.source], data[job.method.target], self.run_dir(job), steps=p.steps,
                          batch_size=p.batch_size, num_workers=p.num_workers, device=self.device or "cuda")
        cfg["policy"] = policy_section(p, cfg["policy"], p.warmup_steps)
        if p.num_workers == 0:
            cfg.pop("dataloader_multiprocessing_context", None)
            cfg.pop("prefetch_factor", None)
        ot = job.method.ot_config()
        if ot.get("pair_info_path") == PAIR_FILE_PLACEHOLDER:
            ot["pair_info_path"] = data["pairs"]["path"]
        cfg.update({"job_name": f"study-{job.id}", "seed": job.seed, "save_freq": p.save_every, "eval_freq": 0,
                    "log_freq": p.log_freq, "ot": ot})
        if job.method.batch_size is not None:
            cfg["batch_size"] = job.method.batch_size
        for key, value in job.method.train.items():   # the arm's own settings (the objective study's variants)
            cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
        # the domain probe at step 0 and every checkpoint (eval/domain_probe/<camera>; no effect on training)
        cfg["eval"] = {**cfg.get("eval", {}), "val_fraction": 0.0, "domain_probe_freq": p.save_every}
        return cfg

    def train(self, job: Job, data: dict[str, dict]) -> str:
        """Train the job (fresh, or resumed from its last checkpoint with the run's own resolved config:
        :func:`dpot.launch.launch_train`); returns "done", "resumed" or "fresh"."""
        run = self.run_dir(job)
        if self.trained(job):
            return "done"
        if rundir.last_checkpoint(run) is not None:
            cfg_path = rundir.config_path(run)
        else:
            cfg_path = write_json(self.root / "configs" / f"{job.id}.json", self.job_config(job, data))
        log = rundir.log_path(self.root, job.id)
        launch = launch_train(cfg_path, run, log, name=job.id, who="study")
        if launch.returncode != 0:
            tail = log.read_text().strip().splitlines()[-1:] or [""]
            raise UserError(f"study job {job.id}: training exited with code {launch.returncode} ({tail[0][:200]}); "
                            f"see {log}")
        return "resumed" if launch.resumed else "fresh"

    # -------------------------------------------------------------- evaluation
    def evaluate(self, job: Job, ckpt: Path, cell: str, episodes: int, path: Path) -> dict:
        """Closed-loop evaluation of one checkpoint in one cell (kept if its JSON exists); compact result dict.
        Every method and seed gets the same episode seeds ``eval_seed, eval_seed + 1, ...`` per cell (the preset's);
        every episode's layout (seed, region, reset vector, goal and object position) is kept in the JSON."""
        if path.is_file():
            return json.loads(path.read_text())
        from dpot.bench.evaluate import evaluate_policy

        domain, region = self.cell(cell)
        r = evaluate_policy(ckpt / rundir.MODEL_DIR, self.task, domain, episodes, self.preset.eval_seed,
                            max_steps=self.preset.eval_max_steps, workers=self.eval_workers, device=self.device,
                            progress=self.progress, obs=self.preset.obs, region=region)
        detail = r.pop("episodes_detail", [])
        r.update({"job": job.id, "method": job.method.name, "train_seed": job.seed, "step": _ckpt_step(ckpt),
                  "cell": cell,
                  "episode_success": "".join("1" if e["success"] else "0" for e in detail),
                  "episode_layouts": [{"seed": e["seed"], **e["layout"]} for e in detail if "layout" in e]})
        write_json(path, r)
        return r

    def curve(self, job: Job, cell: str) -> list[dict]:
        """Evaluate each intermediate checkpoint in ``cell`` (the learning curve)."""
        out = []
        for step in rundir.checkpoint_steps(self.run_dir(job)):
            if step >= self.preset.steps:
                continue
            ckpt = rundir.checkpoint_dir(self.run_dir(job), step, self.preset.steps)
            path = self.root / "evals" / eval_file(job.id, cell, step)
            r = self.evaluate(job, ckpt, cell, self.preset.curve_episodes, path)
            out.append({"step": step, "successes": r["successes"], "episodes": r["episodes"]})
        return out

    # -------------------------------------------------------------- one job
    def run_job(self, job: Job, data: dict[str, dict]) -> dict:
        """Train, evaluate (final checkpoint in every cell, then the learning curves: a sitting cut by a time
        guard keeps the numbers that matter most) and write the done marker; returns the marker."""
        mode = self.train(job, data)
        final = self.final_checkpoint(job)
        evals = {}
        for cell in self.preset.eval_domains:
            r = self.evaluate(job, final, cell, self.preset.cell_episodes(cell), self.eval_path(job, cell))
            evals[cell] = {k: r[k] for k in ("successes", "episodes", "success_rate", "ci95", "mean_length")}
        curves = {cell: self.curve(job, cell) for cell in self.preset.curve_domains}
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
        logger.info("dpot bench study: %s on %s in %s: %d jobs, %d already done, running up to %d",
                    self.preset.name, self.task, self.root, len(jobs), skipped, n_run)
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


def build_study_pairs(source_root: Path, target_root: Path, path: Path) -> Path:
    """Write a study's pair file: ``dpot pairs build`` with :data:`dpot.bench.presets.PAIR_FILE_ARGS` (DTW over the
    z-scored sequences of both datasets)."""
    from dpot.data.pairs import build_pair_info, dtw_function, write_pair_file, zscore
    from dpot.data.pairs_cli import LABEL_KEYS, read_sequences

    a = PAIR_FILE_ARGS
    key = LABEL_KEYS[a["label"]]
    tgt_z, src_z = zscore(read_sequences(target_root, key, a["dims"], "target"),
                          read_sequences(source_root, key, a["dims"], "source"))
    info = build_pair_info(tgt_z, src_z, top_k=a["top_k"], window=a["window"], stride=a["stride"],
                           dtw=dtw_function("auto"))
    return write_pair_file(path, info)


def _ckpt_step(ckpt: Path) -> int | None:
    name = Path(ckpt).resolve().name
    return int(name) if name.isdigit() else None


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
    jobs = plan_jobs(parse_methods(only, study.preset.method_table), seeds or study.preset.seeds, cap=seeds)
    set_env_defaults()
    return study.run(jobs, max_jobs)


__all__ = ["SHIFTS", "Study", "default_dir", "file_lock", "make_study", "run_study"]
