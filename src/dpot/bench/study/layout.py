"""A study directory's layout: where a job's run, evaluations and done marker are, and what an evaluation cell is.

What both the runner (:mod:`.runner`, which fills the directory) and the results (:mod:`.results`, which read it)
need, so that neither imports the other: :class:`StudyDir` (the paths; :class:`~.runner.Study` adds the work) and
:func:`write_json`. The directory itself: see :mod:`dpot.bench.study`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from dpot import rundir
from dpot.atomic import write_text
from dpot.bench.presets import EVAL_CELLS, Preset
from dpot.bench.study.plan import Job
from dpot.errors import UserError

CURVE_FILE = "{job}-{cell}-step{step:06d}.json"
EVAL_FILE = "{job}-{cell}.json"
_EVAL_NAME = re.compile(r"^(?P<job>.+)-(?P<cell>" + "|".join(sorted(EVAL_CELLS, key=len, reverse=True))
                        + r")(?:-step(?P<step>\d+))?\.json$")


def eval_file(job_id: str, cell: str, step: int | None = None) -> str:
    """The name of a job's evaluation in ``cell``: :data:`EVAL_FILE` (the final checkpoint's) or, with ``step``,
    :data:`CURVE_FILE` (a curve point's)."""
    return (EVAL_FILE if step is None else CURVE_FILE).format(job=job_id, cell=cell, step=step)


def parse_eval_file(name: str) -> tuple[str, str, int | None] | None:
    """``(job id, cell, step or None)`` of an evaluation file's name (the inverse of :func:`eval_file`); None for
    a name that is not one."""
    m = _EVAL_NAME.match(name)
    return (m["job"], m["cell"], int(m["step"]) if m["step"] else None) if m else None


def write_json(path: Path, obj) -> Path:
    """Write JSON atomically (temp file + rename): readers see the old file or the whole new one."""
    return write_text(path, json.dumps(obj, indent=1))


class StudyDir:
    """The study directory of one preset and task: where each job's files are; nothing here runs anything."""

    def __init__(self, root: str | Path, preset: Preset, task: str):
        if task not in preset.tasks:
            raise UserError(f"--task: '{task}' is not a task of preset {preset.name}; one of {', '.join(preset.tasks)}")
        self.root, self.preset, self.task = Path(root), preset, task

    def run_dir(self, job: Job) -> Path:
        return self.root / "runs" / job.id

    def eval_path(self, job: Job, domain: str) -> Path:
        return self.root / "evals" / eval_file(job.id, domain)

    def done_path(self, job: Job) -> Path:
        return self.root / "done" / f"{job.id}.json"

    def final_checkpoint(self, job: Job) -> Path:
        """The checkpoint of the last training step (:func:`dpot.rundir.checkpoint_dir`)."""
        return rundir.checkpoint_dir(self.run_dir(job), self.preset.steps, self.preset.steps)

    def trained(self, job: Job) -> bool:
        """The job's training is finished (:func:`dpot.rundir.is_finished` at the preset's steps)."""
        return rundir.is_finished(self.run_dir(job), self.preset.steps)

    def cell(self, name: str) -> tuple[str, str]:
        """(domain spec name, region) of an evaluation cell (:data:`dpot.bench.presets.EVAL_CELLS`)."""
        role, region = EVAL_CELLS[name]
        return self.domain(role), region

    def domain(self, role: str) -> str:
        """The domain of a dataset role: ``source`` is the source domain, ``target`` the preset's shift."""
        return "source" if role == "source" else self.preset.shift


__all__ = ["CURVE_FILE", "EVAL_FILE", "StudyDir", "eval_file", "parse_eval_file", "write_json"]
