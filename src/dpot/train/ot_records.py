"""What the trainer records about the OT term besides metrics: ``ot_terms.json`` and plan snapshots.

``<run>/ot_terms.json`` = ``{"terms": {"img_<camera>": "embed", "<key>_lbl": "label", ...}}``, written once at
start: the kind of every cost term, so readers classify ``train/ot_cost/<term>`` by kind, not by name.

``<run>/ot_plans/step_<step:06d>.npz`` (every ``log_freq * ot.plan_log_every`` steps, OT on, main process):
``plan`` ``[n_src, n_tgt]`` float32 (pi* of that step's global batch), ``cost_<term>`` ``[n_src, n_tgt]`` float32
(the weighted cost ``w_k C_k``), ``src_phase`` / ``tgt_phase`` ``[n]`` float32 and ``src_episode`` /
``tgt_episode`` ``[n]`` int64 (the rows' and columns' items). When the loss solved on masked-in rows only
(paired-region OT) and its plan has fewer rows/columns than the batch, the item arrays keep those rows only.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np

from dpot.atomic import write_bytes, write_text

log = logging.getLogger(__name__)

IMG_PREFIX = "observation.images."
TERMS_FILE = "ot_terms.json"
PLANS_DIR = "ot_plans"


def plan_due(step: int, log_freq: int, plan_log_every: int, use_ot: bool) -> bool:
    """True when the step numbered ``step`` (1-based, as in ``metrics.jsonl``) saves a plan snapshot."""
    return use_ot and plan_log_every > 0 and step % (log_freq * plan_log_every) == 0


def plan_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / PLANS_DIR / f"step_{step:06d}.npz"


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu() if x.is_floating_point() else x.detach().cpu()
    return np.asarray(x)


def plan_snapshot(res, meta: dict, n_src: int, costs: dict | None = None) -> dict[str, np.ndarray] | None:
    """The arrays of one plan snapshot, or None when ``res`` has no plan (skipped step, MMD, older loss).

    ``res``: the loss result (reads ``res.plan`` and ``res.costs``, both optional; ``costs`` overrides the
    latter). ``meta``: ``phase``, ``episode_index`` and optionally ``ot_pair`` over the global batch, source items
    first (``n_src`` of them), then target items.
    """
    plan = getattr(res, "plan", None)
    if plan is None:
        return None
    if costs is None:
        costs = getattr(res, "costs", None) or {}
    plan = _numpy(plan).astype(np.float32)
    phase = _numpy(meta["phase"]).astype(np.float32)
    episode = _numpy(meta["episode_index"]).astype(np.int64)
    rows = {"src": slice(0, n_src), "tgt": slice(n_src, None)}
    items: dict[str, np.ndarray] = {}
    for dom, sl in rows.items():
        ph, ep = phase[sl], episode[sl]
        size = plan.shape[0 if dom == "src" else 1]
        if len(ph) != size and meta.get("ot_pair") is not None:
            keep = _numpy(meta["ot_pair"]).astype(bool)[sl]
            ph, ep = ph[keep], ep[keep]
        if len(ph) != size:
            log.warning("plan snapshot skipped: plan %s does not match %d %s items", plan.shape, len(ph), dom)
            return None
        items[f"{dom}_phase"], items[f"{dom}_episode"] = ph, ep
    out = {"plan": plan}
    for term, c in costs.items():
        c = _numpy(c).astype(np.float32)
        if c.shape != plan.shape:
            log.warning("plan snapshot: cost '%s' %s does not match the plan %s; left out", term, c.shape, plan.shape)
            continue
        out[f"cost_{term}"] = c
    out.update(items)
    return out


def save_plan_snapshot(run_dir: str | Path, step: int, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``<run>/ot_plans/step_<step:06d>.npz`` atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return write_bytes(plan_path(run_dir, step), buf.getvalue())


def _feature_kind(feat) -> str:
    kind = getattr(feat, "type", None)
    if kind is None and hasattr(type(feat), "get_choice_name"):
        kind = type(feat).get_choice_name(type(feat))
    return str(kind)


def ot_term_kinds(ot_loss_fn, ot_cfg, image_keys: list[str]) -> dict[str, str]:
    """Cost term name -> kind (``"embed"`` | ``"label"``).

    From the loss's ``term_kinds`` when it has a non-empty one; otherwise from ``ot_cfg.features`` with the
    loss's naming: ``img_<camera short name>`` per camera of an embed feature (``cameras`` None = every policy
    camera), ``<key>_lbl`` for a label feature.
    """
    kinds = getattr(ot_loss_fn, "term_kinds", None)
    if callable(kinds):
        try:
            kinds = kinds()
        except TypeError:
            kinds = None
    if isinstance(kinds, dict) and kinds:
        return {str(k): str(v) for k, v in kinds.items()}
    cameras = sorted(k.removeprefix(IMG_PREFIX) for k in image_keys)
    out: dict[str, str] = {}
    for feat in ot_cfg.features:
        if _feature_kind(feat) == "embed":
            chosen = getattr(feat, "cameras", None)
            for cam in (chosen if chosen is not None else cameras):
                out[f"img_{cam}"] = "embed"
        else:
            out[f"{feat.key}_lbl"] = "label"
    return out


def write_ot_terms(run_dir: str | Path, terms: dict[str, str]) -> Path:
    """Write ``<run>/ot_terms.json`` = ``{"terms": terms}`` atomically."""
    return write_text(Path(run_dir) / TERMS_FILE, json.dumps({"terms": terms}, indent=1) + "\n")
