"""Test runs for dpot.analysis.

* ``lerobot_train``: real plain ``lerobot-train`` runs (W&B offline) on a toy dataset.
* ``dpot_train``: a real ``dpot train`` run from a JSON config.
* ``generate_dpot_run``: a GENERATED dpot-format run dir for OT regimes that need >10k steps. Its OT metrics
  are computed by the real solver (``dpot.ot.unbalanced_sinkhorn``) on real costs: squared distances between
  temporally paired source/target items of the toy datasets (``observation.state`` as the embedding, the
  action as the label, docs/architecture.md costs, weights, temporal prior; the config's ``ot.max_iters`` and
  ``ot.tol``, whose iterations and cap are logged). What is synthetic: the embedding's
  drift towards alignment over "training" (``align``), and the loss / grad-norm / eval curves (smooth
  decays + noise). Its ``train_config.json`` is a real resolved config from ``dpot.config``.
"""

from __future__ import annotations

import glob
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import dpotproc  # tests/

VENV_BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "WANDB_MODE": "offline",
       "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}

POLICY = {"type": "diffusion", "pretrained_backbone_weights": None, "use_group_norm": True, "down_dims": [32, 64],
          "n_obs_steps": 2, "horizon": 16, "n_action_steps": 8, "push_to_hub": False, "device": "cpu"}


def lerobot_train(ds_root: Path, out: Path, *extra: str) -> subprocess.Popen:
    """Start a small real ``lerobot-train`` run (W&B offline); returns the process (caller waits)."""
    cmd = [str(VENV_BIN / "lerobot-train"), "--dataset.repo_id=local/toy_target", f"--dataset.root={ds_root}",
           "--policy.type=diffusion", "--policy.pretrained_backbone_weights=null", "--policy.use_group_norm=true",
           "--policy.down_dims=[32,64]", "--policy.n_obs_steps=2", "--policy.horizon=16",
           "--policy.n_action_steps=8", "--policy.push_to_hub=false", "--policy.device=cpu", "--batch_size=4",
           "--log_freq=1", "--save_freq=1000", "--num_workers=0", "--wandb.enable=true", "--wandb.mode=offline",
           "--wandb.disable_artifact=true", f"--output_dir={out}", "--dataset.eval_split=0.25",
           "--max_eval_samples=8", *extra]
    log = open(str(out) + ".log", "w")
    return dpotproc.Popen(cmd, env=ENV, stdout=log, stderr=subprocess.STDOUT)


def dpot_config(src_root: Path, tgt_root: Path, out: Path, **top) -> dict:
    """A dpot train config dict for the toy datasets (top-level keys and ``ot`` overrides in ``top``)."""
    cfg = {"dataset": {"repo_id": "local/toy_target", "root": str(tgt_root)},
           "source_dataset": {"repo_id": "local/toy_source", "root": str(src_root)},
           "policy": dict(POLICY), "batch_size": 4, "steps": 6, "log_freq": 1, "save_freq": 1000,
           "num_workers": 0, "eval_freq": 3, "eval": {"n_batches": 1}, "output_dir": str(out)}
    ot = top.pop("ot", None)
    cfg.update(top)
    if ot:
        cfg["ot"] = ot
    return cfg


def dpot_train(cfg: dict, cfg_path: Path) -> subprocess.Popen:
    """Start a real ``dpot train --config_path`` run."""
    cfg_path.write_text(json.dumps(cfg))
    log = open(str(cfg_path) + ".log", "w")
    return dpotproc.Popen([str(VENV_BIN / "dpot"), "train", f"--config_path={cfg_path}"], env=ENV, stdout=log,
                          stderr=subprocess.STDOUT)


def resolved_config(cfg: dict, tmp: Path) -> dict:
    """The fully resolved config ``dpot.config`` makes of ``cfg`` (as ``train_config.json`` holds it)."""
    from dpot.config import config_to_dict, load_train_config

    p = tmp / "cfg_in.json"
    p.write_text(json.dumps(cfg))
    return config_to_dict(load_train_config(p))


def _episodes(root: Path) -> list[dict]:
    import pandas as pd

    df = pd.concat(pd.read_parquet(f) for f in sorted(glob.glob(str(root / "data" / "*" / "*.parquet"))))
    eps = []
    for _, g in df.groupby("episode_index"):
        g = g.sort_values("frame_index")
        eps.append({"state": np.stack(g["observation.state"].to_numpy()).astype(np.float64),
                    "action": np.stack(g["action"].to_numpy()).astype(np.float64)})
    return eps


def _cosine_lr(step, base, warmup, total):
    if step < warmup:
        return base * step / max(1, warmup)
    p = (step - warmup) / max(1, total - warmup)
    return base * max(0.0, 0.5 * (1 + math.cos(math.pi * p)))


def generate_dpot_run(out: Path, src_root: Path, tgt_root: Path, config: dict, *, log_every: int = 200,
                      align=(1.0, 0.2), n: int = 8, seed: int = 0, eval_scale: float = 1.0,
                      grad_spikes: tuple[int, ...] = (), partial_tail: bool = False, decay: float = 0.5,
                      stall: bool = False, diverge_from: float | None = None, overfit: bool = False) -> Path:
    """Write ``metrics.jsonl`` + ``train_config.json`` for a GENERATED run (see the module docstring).

    ``stall``: the loss barely falls (0.9 → 0.8, as with an LR far too high). ``diverge_from``: after this fraction
    of the run the loss grows (x1 + 30 per unit of progress). ``overfit``: the offline eval loss rises again after
    40 % of the run (+0.8 per unit of progress) while the train loss keeps falling. Every ``ot.plan_log_every`` log
    points it writes a plan snapshot ``ot_plans/step_<step:06d>.npz`` as ``dpot train`` does (docs/architecture.md):
    the solver's plan, the weighted cost per term, the items' phases and episodes.
    """
    import torch

    from dpot.ot import unbalanced_sinkhorn

    rng = np.random.default_rng(seed)
    src, tgt = _episodes(src_root), _episodes(tgt_root)
    ot, steps = config["ot"], int(config["steps"])
    feats = ot["features"]
    w_e = sum(f["weight_embed"] for f in feats if f["type"] == "embed")
    lab = [f for f in feats if f["type"] == "label"]
    w_l = lab[0]["weight_label"] if lab else 0.0
    sl = slice(*(lab[0].get("dim_slice") or [0, None])) if lab else slice(0, 0)
    from dpot.analysis import cfgkeys

    lr_base = cfgkeys.base_lr(config)
    warm = (cfgkeys.schedule(config) or {}).get("warmup") or 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(config, indent=2))
    # the cost-term kinds, as dpot train records them (the name "embed_state" says nothing by the name rule)
    (out / "ot_terms.json").write_text(json.dumps({"terms": {"embed_state": "embed", "action_lbl": "label"}}))
    lines, t_wall = [], 1_700_000_000.0
    plan_every = int(ot.get("plan_log_every") or 0)
    for i_log, step in enumerate(range(log_every, steps + 1, log_every), start=1):
        prog = step / steps
        misalign = align[0] + (align[1] - align[0]) * prog   # 1: target embedding far from its partner, 0: on it
        phase = rng.uniform(0, 1, n)
        e_t, e_s = rng.integers(len(tgt), size=n), rng.integers(len(src), size=n)
        if not ot["heuristic"]:
            rng.shuffle(phase_s := phase.copy())
        else:
            phase_s = np.clip(phase + rng.normal(0, 0.02, n), 0, 1)
        def item(eps, e, ph):
            ep = eps[e]
            i = min(len(ep["state"]) - 1, int(ph * (len(ep["state"]) - 1)))
            return ep["state"][i], ep["action"][i]
        s_state, s_act = zip(*(item(src, e, p) for e, p in zip(e_s, phase_s)))
        t_state, t_act = zip(*(item(tgt, e, p) for e, p in zip(e_t, phase)))
        s_state, t_state = np.array(s_state), np.array(t_state)
        emb_t = s_state + misalign * (t_state - s_state) + misalign * 0.5   # drifts onto its source partner
        c_e = ((s_state[:, None] - emb_t[None]) ** 2).mean(-1)
        s_act, t_act = np.array(s_act)[:, sl], np.array(t_act)[:, sl]
        c_l = ((s_act[:, None] - t_act[None]) ** 2).mean(-1) if w_l else np.zeros((n, n))
        cost = w_e * c_e + w_l * c_l
        solve = cost.copy()
        if ot["heuristic"]:
            solve = solve + ot["reg"] * np.abs(phase_s[:, None] - phase[None]) / ot.get("prior_sigma", 0.05)
        pi, info = unbalanced_sinkhorn(torch.tensor(solve), reg=ot["reg"], tau_src=ot["tau_src"],
                                       tau_tgt=ot["tau_tgt"], max_iters=int(ot["max_iters"]), tol=float(ot["tol"]),
                                       return_info=True)
        pi = pi.numpy()
        pi_sum, pi_diag = float(pi.sum()), float(np.trace(pi))
        if plan_every and i_log % plan_every == 0:
            (out / "ot_plans").mkdir(exist_ok=True)
            np.savez(out / "ot_plans" / f"step_{step:06d}.npz", plan=pi.astype(np.float32),
                     cost_embed_state=(w_e * c_e).astype(np.float32), cost_action_lbl=(w_l * c_l).astype(np.float32),
                     src_phase=phase_s.astype(np.float32), tgt_phase=phase.astype(np.float32),
                     src_episode=e_s.astype(np.int64), tgt_episode=e_t.astype(np.int64))
        bc = 0.05 + 0.9 * math.exp(-step / (decay * steps)) + 0.01 * rng.normal()
        if stall:
            bc = 0.8 + 0.1 * math.exp(-step / (0.05 * steps)) + 0.01 * rng.normal()
        if diverge_from is not None and prog > diverge_from:
            bc *= 1 + 30 * (prog - diverge_from)
        spread = float(((emb_t[:, None] - emb_t[None]) ** 2).mean(-1).sum() / (n * (n - 1)))
        gn = 2.0 + 20 * math.exp(-step / (0.1 * steps)) + 0.2 * rng.normal()
        if step in grad_spikes:
            gn *= 12
        ut, dt_ = 0.11 + 0.005 * rng.normal(), 0.04 + 0.003 * rng.normal()
        t_wall += log_every * (ut + dt_)
        rec = {"step": step, "train/loss": bc + ot["lambda_ot"] * float((pi * cost).sum()), "train/l1_loss": bc / 3,
               "train/grad_norm": gn, "train/lr": _cosine_lr(step, lr_base, warm, steps), "train/update_s": ut,
               "train/dataloading_s": dt_, "train/ot_loss": ot["lambda_ot"] * float((pi * cost).sum()),
               "train/ot_pi_sum": pi_sum, "train/ot_pi_diag": pi_diag, "train/ot_pi_diag_frac": pi_diag / pi_sum,
               "train/ot_cost/embed_state": float((pi * w_e * c_e).sum()),
               "train/ot_cost/action_lbl": float((pi * w_l * c_l).sum()),
               "train/ot_cost_mean/embed_state": float((w_e * c_e).mean()),
               "train/ot_cost_mean/action_lbl": float((w_l * c_l).mean()), "train/ot_skipped": 0.0,
               # this log point's one solve stands for the window's log_every solves (a count, as dpot train sums)
               "train/ot_sinkhorn_iters": float(info.iters),
               "train/ot_sinkhorn_maxed": 0.0 if info.converged else float(log_every),
               "train/ot_embed_spread/embed_state": spread,
               "_timestamp": t_wall}
        if step % config["eval_freq"] < log_every:
            ev_s = 2.0
            t_wall += ev_s
            rec["eval/offline_eval/avg_loss"] = eval_scale * (0.12 + 0.5 * math.exp(-step / (decay * steps))
                                                              + (0.8 * max(0.0, prog - 0.4) if overfit else 0.0))
            rec["eval/offline_eval/eval_s"] = ev_s
        lines.append(json.dumps(rec))
    text = "\n".join(lines) + "\n"
    if partial_tail:
        text += lines[-1][: len(lines[-1]) // 2]   # a run still writing: torn last line
    (out / "metrics.jsonl").write_text(text)
    return out


def dpot_cli(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    """Run the ``dpot`` console script; returns the completed process (text)."""
    return dpotproc.run([str(VENV_BIN / "dpot"), *args], capture_output=True, text=True, cwd=cwd,
                        env={**ENV, **(env or {})}, timeout=300)


def read_json(p: Path):
    """Parse a JSON file."""
    return json.loads(Path(p).read_text())
