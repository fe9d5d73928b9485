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
redone only if its output is missing: training resumes from its newest complete checkpoint (``--resume=true``
with the run's own ``train_config.json``; a run dir without any checkpoint holds nothing to keep and is started
again), a job counts as trained once it holds a complete checkpoint at the preset's steps
(:func:`dpot.rundir.is_finished`), and every evaluation whose JSON exists is kept. Jobs run in plan order: the
calibration runs (seed 0 of the methods marked ``calibration``: target-only and source-only in the ID/OOD study)
first, then the core methods (group 0) for all seeds, seed by seed, then
the other groups. Training runs in a subprocess (``dpot train``, started by :func:`dpot.launch.launch_train`
as the autopilot's are).

Several sittings may share one directory at the same time (e.g. two processes with ``OMP_NUM_THREADS=1`` on a
2-core machine): a sitting works on a job only while it holds an exclusive ``flock`` on ``claims/<job>.lock``
(released by the kernel when the process ends, however it ends), skips jobs another sitting holds, and
generates the datasets under a lock of its own.

Modules: :mod:`~dpot.bench.study.plan` (jobs and their order), :mod:`~dpot.bench.study.layout` (where a job's
files are, the evaluation cells; what the runner and the results share), :mod:`~dpot.bench.study.runner` (the
study directory's work: claims, training, evaluation), :mod:`~dpot.bench.study.results` (OT metrics, pooled success,
``results.json``), :mod:`~dpot.bench.study.rendering` (``results.md``, ``curves.png``),
:mod:`~dpot.bench.study.cli` (``dpot bench study``); presets, methods, the shared train config and the episode
seed ranges live in :mod:`dpot.bench.presets`.
"""

from dpot.bench.study.plan import Job, plan_jobs
from dpot.bench.study.rendering import render_markdown
from dpot.bench.study.results import aggregate, ot_metrics, write_results
from dpot.bench.study.runner import Study, default_dir, file_lock, make_study, run_study

__all__ = ["Job", "Study", "aggregate", "default_dir", "file_lock", "make_study", "ot_metrics", "plan_jobs",
           "render_markdown", "run_study", "write_results"]
