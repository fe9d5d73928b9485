"""OT plan snapshots a run saved (``<run>/ot_plans/step_<step:06d>.npz``: :func:`dpot.rundir.plan_files`;
docs/architecture.md, "Contracts", run directory).

Each file holds ``plan`` [n_src, n_tgt] float32 (the transport plan of one logged step), ``cost_<term>``
[n_src, n_tgt] (the weighted cost of each term), ``src_phase`` / ``tgt_phase`` [n] float32, ``src_episode`` /
``tgt_episode`` [n] int and ``paired`` [n_src, n_tgt] bool (the partner pairs: the entries ``train/ot_pi_diag``
sums; snapshots written before it existed read as the matrix diagonal). The report draws a few of them (the latest
and some evenly spaced earlier ones).
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dpot.rundir import plan_files

log = logging.getLogger(__name__)


@dataclass
class PlanSnapshot:
    """One saved plan: ``plan`` [n_src, n_tgt], ``costs`` (term -> [n_src, n_tgt]), per-item phase/episode,
    ``paired`` [n_src, n_tgt] bool (the partner pairs; None in an old snapshot: :attr:`partners` is then the
    matrix diagonal)."""

    step: int
    plan: np.ndarray
    costs: dict[str, np.ndarray] = field(default_factory=dict)
    src_phase: np.ndarray | None = None
    tgt_phase: np.ndarray | None = None
    src_episode: np.ndarray | None = None
    tgt_episode: np.ndarray | None = None
    paired: np.ndarray | None = None

    @property
    def partners(self) -> np.ndarray:
        """``[n_src, n_tgt]`` bool: the partner pairs (``paired``, or the matrix diagonal when not recorded)."""
        if self.paired is not None and self.paired.shape == self.plan.shape:
            return self.paired.astype(bool)
        return np.eye(*self.plan.shape, dtype=bool)

    @property
    def pi_diag(self) -> float:
        """The plan's mass on the partner pairs (what ``train/ot_pi_diag`` logged for this step)."""
        return float(self.plan[self.partners].sum())

    @property
    def cost(self) -> float:
        """``sum pi * sum_k w_k C_k``: the solver's cost of this step (``train/ot_loss``)."""
        return float(sum((self.plan * c).sum() for c in self.costs.values()))


def pick_steps(files: list[tuple[int, Path]], k: int = 4) -> list[tuple[int, Path]]:
    """At most ``k`` snapshots: the latest and ``k - 1`` others evenly spaced before it, by step."""
    if len(files) <= k:
        return files
    idx = sorted({round(i * (len(files) - 1) / (k - 1)) for i in range(k)})
    return [files[i] for i in idx]


def load_plan(step: int, path: Path) -> PlanSnapshot | None:
    """The snapshot in ``path``; None (logged) when the file is unreadable or has no 2-D ``plan``."""
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        log.warning("%s: unreadable plan snapshot (%s); skipped", path, err)
        return None
    plan = arrays.get("plan")
    if plan is None or plan.ndim != 2:
        log.warning("%s: no 2-D 'plan' array; skipped", path)
        return None
    costs = {k[len("cost_"):]: v for k, v in arrays.items() if k.startswith("cost_") and v.shape == plan.shape}
    return PlanSnapshot(step, plan.astype(np.float64), {k: v.astype(np.float64) for k, v in costs.items()},
                        *(arrays.get(k) for k in ("src_phase", "tgt_phase", "src_episode", "tgt_episode", "paired")))


def read_plans(run_dir: Path | None, k: int = 4) -> list[PlanSnapshot]:
    """Up to ``k`` readable snapshots of a run (:func:`pick_steps`), by step."""
    return [s for step, p in pick_steps(plan_files(run_dir), k) if (s := load_plan(step, p)) is not None]
