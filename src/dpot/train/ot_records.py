"""What the trainer records about the OT term besides metrics: plan snapshots (paths: :mod:`dpot.rundir`, which
also writes ``ot_terms.json``, the alignment loss's ``term_kinds``, once at start, so readers classify
``train/ot_cost/<term>`` (``train/mmd/<term>``) by kind, not by name).

``<run>/ot_plans/step_<step:06d>.npz`` (every ``log_freq * ot.plan_log_every`` steps, OT on, main process):
``plan`` ``[n_src, n_tgt]`` float32 (pi* of that step's global batch), ``cost_<term>`` ``[n_src, n_tgt]`` float32
(the weighted cost ``w_k C_k``), ``src_phase`` / ``tgt_phase`` ``[n]`` float32, ``src_episode`` /
``tgt_episode`` ``[n]`` int64 (the rows' and columns' items) and ``paired`` ``[n_src, n_tgt]`` bool (the partner
pairs, the entries ``train/ot_pi_diag`` sums: with masked-out items they are not the matrix diagonal). The plan
covers the masked-in items (``ot_pair``: all of them without a pair file or ``ot.paired_region``), and so do the
item arrays; ``sum(plan * sum_k cost_<k>)`` is the step's ``train/ot_loss``.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from dpot import rundir
from dpot.atomic import write_bytes

log = logging.getLogger(__name__)


def plan_due(step: int, log_freq: int, plan_log_every: int, use_ot: bool) -> bool:
    """True when the step numbered ``step`` (1-based, as in ``metrics.jsonl``) saves a plan snapshot."""
    return use_ot and plan_log_every > 0 and step % (log_freq * plan_log_every) == 0


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu() if x.is_floating_point() else x.detach().cpu()
    return np.asarray(x)


def plan_snapshot(res, meta: dict, n_src: int) -> dict[str, np.ndarray] | None:
    """The arrays of one plan snapshot, or None when ``res`` has no plan (skipped step, MMD).

    ``res``: the loss's ``OTResult`` (``plan`` over the masked-in rows, ``costs``: term -> weighted cost on the
    same rows). ``meta``: ``phase``, ``episode_index`` and optionally ``ot_pair`` (the mask) over the global
    batch, source items first (``n_src`` of them), then target items; the item arrays keep the masked-in rows.
    """
    plan = getattr(res, "plan", None)
    if plan is None:
        return None
    plan = _numpy(plan).astype(np.float32)
    phase = _numpy(meta["phase"]).astype(np.float32)
    episode = _numpy(meta["episode_index"]).astype(np.int64)
    keep = np.ones(len(phase), bool) if meta.get("ot_pair") is None else _numpy(meta["ot_pair"]).astype(bool)
    out = {"plan": plan}
    for term, c in (getattr(res, "costs", None) or {}).items():
        c = _numpy(c).astype(np.float32)
        if c.shape != plan.shape:
            log.warning("plan snapshot: cost '%s' %s does not match the plan %s; left out", term, c.shape, plan.shape)
            continue
        out[f"cost_{term}"] = c
    paired = getattr(res, "paired", None)
    if paired is not None:
        out["paired"] = _numpy(paired).astype(bool)
    for axis, (dom, sl) in enumerate((("src", slice(0, n_src)), ("tgt", slice(n_src, None)))):
        rows = keep[sl]
        if int(rows.sum()) != plan.shape[axis]:
            log.warning("plan snapshot skipped: plan %s does not match %d masked-in %s items", plan.shape,
                        int(rows.sum()), dom)
            return None
        out[f"{dom}_phase"], out[f"{dom}_episode"] = phase[sl][rows], episode[sl][rows]
    return out


def save_plan_snapshot(run_dir: str | Path, step: int, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``<run>/ot_plans/step_<step:06d>.npz`` atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return write_bytes(rundir.plan_path(run_dir, step), buf.getvalue())

