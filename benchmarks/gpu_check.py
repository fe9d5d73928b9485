"""GPU readiness checks of dpot in one run (issue 12, item 3): what ``scripts/gpu_check.sh`` runs.

    python benchmarks/gpu_check.py [--out DIR] [--dry-run] [--checks a,b,...] [--budget-s 480] [--work DIR]

Checks, in order (each one's CUDA part is named in ``CHECKS``):

- ``env``: torch/CUDA/card, package versions, cores.
- ``ot_solver``: ``unbalanced_sinkhorn`` torch backend on CUDA vs the CPU (numpy) plan on the same costs,
  max |P_cuda - P_cpu| and time per solve, including the all-gathered sizes of 1..8 processes (32·N x 32·N).
- ``amp_bf16``: one training forward (diffusion loss + per-camera embeddings + OT loss) under bf16 autocast vs
  float32 on the same batch, noise and timesteps: relative loss difference, finite gradients, OT solved in fp32.
- ``resume``: ``dpot train`` 6 steps (checkpoints at 3 and 6) vs the same run resumed from step 3
  (``--resume=true``): max weight difference (exact on CPU; cuDNN may differ in the last bits on GPU).
- ``metaworld_data``: ``dpot bench generate`` source + target MetaWorld datasets (EGL rendering on this machine).
- ``render``: ms per rendered frame per camera and the OpenGL renderer string (NVIDIA EGL vs software).
- ``train_bf16``: a short ``dpot train`` run with ``policy.use_amp=true`` on the MetaWorld data (OT on),
  update/data/wall time per step, data wait share, loss first/last, checkpoint.
- ``eval_closed_loop``: ``dpot bench eval`` of that checkpoint in the target domain (policy on the device).
- ``step_time``: ``benchmarks/train_step.py`` on the device: dpot OT on / OT off vs ``lerobot-train`` (same
  data, policy, batch), plus the interleaved in-process OT on/off A/B; on the MetaWorld data when
  ``metaworld_data`` ran in the same invocation, else on toy datasets of the same image size.
- ``data_wait``: the data wait share at this device's step times, from ``train_bf16`` and ``step_time``.

Without CUDA (or with ``--dry-run``) every check runs what it can on the CPU at a tiny budget and each check
with a CUDA part prints ``NEEDS CUDA: <check>: <what>``; nothing is skipped silently (a check not selected or
cut by ``--budget-s`` prints ``SKIPPED: <check>: <why>``). Results: ``<out>/gpu_check.json`` (rewritten after
every check, so a run cut short still leaves its numbers) and ``<out>/gpu_check.md`` (a Markdown table).
Exit code 0 when no check failed, 1 otherwise, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dpot.launch import child_env
from dpot.metrics_log import read_metrics

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TASK = "button-press-topdown-v3"
CAMERAS = "corner4,gripperPOV"


@dataclass
class Sizes:
    """Every size knob of the checks: ``FULL`` on a GPU, ``TINY`` for the CPU dry run."""

    ot_n: tuple[int, ...]
    ot_repeats: int
    resume_steps: int
    mw_src_eps: int
    mw_tgt_eps: int
    mw_image: int
    mw_workers: int
    render_frames: int
    train_steps: int
    train_batch: int
    train_workers: int
    model: str
    eval_episodes: int
    eval_max_steps: int
    eval_workers: int
    st_steps: int
    st_warmup: int
    st_batch: int
    st_workers: int
    st_ab_reps: int


FULL = Sizes(ot_n=(32, 64, 128, 256), ot_repeats=5, resume_steps=6, mw_src_eps=16, mw_tgt_eps=8, mw_image=96,
             mw_workers=8, render_frames=60, train_steps=200, train_batch=64, train_workers=8, model="default",
             eval_episodes=8, eval_max_steps=150, eval_workers=8, st_steps=30, st_warmup=5, st_batch=64,
             st_workers=8, st_ab_reps=10)
TINY = Sizes(ot_n=(32, 64), ot_repeats=2, resume_steps=4, mw_src_eps=2, mw_tgt_eps=2, mw_image=32,
             mw_workers=1, render_frames=5, train_steps=3, train_batch=4, train_workers=0, model="tiny",
             eval_episodes=1, eval_max_steps=10, eval_workers=1, st_steps=3, st_warmup=1, st_batch=4,
             st_workers=0, st_ab_reps=1)


@dataclass
class Ctx:
    """What the checks share: device, sizes, folders, the deadline and the artifacts earlier checks made."""

    device: str
    dry: bool
    sizes: Sizes
    work: Path
    deadline: float
    artifacts: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)


@dataclass
class Check:
    name: str
    cuda_part: str | None  # what of this check needs CUDA (None: runs fully on CPU too)
    fn: Callable[[Ctx], dict]
    needs: tuple[str, ...] = ()  # checks whose artifacts it uses


class CheckFailed(Exception):
    """A check ran and its result is wrong (distinct from a crash)."""


# --------------------------------------------------------------------------------------------- helpers


def run_cmd(cmd: list[str], log: Path, timeout: float) -> str:
    """Run ``cmd`` (output to ``log``); raise CheckFailed with the log's tail when it fails or times out."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        try:
            r = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=child_env(), cwd=ROOT,
                               timeout=max(5.0, timeout))
            rc = r.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    text = log.read_text(errors="replace")
    if rc != 0:
        raise CheckFailed(f"`{' '.join(cmd[:6])} ...` exited {rc} after {time.perf_counter() - t0:.0f} s; "
                          f"log tail:\n{text[-2500:]}")
    return text


def _left(ctx: Ctx) -> float:
    return ctx.deadline - time.perf_counter()


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _train_step():
    """benchmarks/train_step.py (the policy keys, the wall-time-per-step reader), imported the way this module was:
    from the package when it was (the tests, ``python -m benchmarks.gpu_check``), else as a top-level module (run as
    ``python benchmarks/gpu_check.py``, benchmarks/ is ``sys.path[0]``)."""
    if __package__:
        from . import train_step
    else:
        import train_step
    return train_step


def _policy_keys(ctx: Ctx, model: str, use_amp: bool) -> dict:
    return _train_step().policy_config(argparse.Namespace(model=model, device=ctx.device, use_amp=use_amp))


# --------------------------------------------------------------------------------------------- checks


def check_env(ctx: Ctx) -> dict:
    import importlib.metadata as md

    import torch

    vers = {}
    for p in ("torch", "torchvision", "lerobot", "accelerate", "diffusers", "numpy", "pandas", "pyarrow", "mujoco",
              "metaworld", "av", "datasets", "draccus"):
        try:
            vers[p] = md.version(p)
        except md.PackageNotFoundError:
            vers[p] = None
    out = {"python": platform.python_version(), "cpu_cores": os.cpu_count(),
           "cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
           "packages": vers, "device": ctx.device}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update({"card": p.name, "gpu_memory_gib": round(p.total_memory / 2**30, 1),
                    "multiprocessors": p.multi_processor_count, "bf16_supported": torch.cuda.is_bf16_supported()})
    out["summary"] = (f"{out.get('card', 'no CUDA device')}; torch {vers['torch']} (CUDA {torch.version.cuda}); "
                      f"lerobot {vers['lerobot']}; {os.cpu_count()} cores")
    return out


def check_ot_solver(ctx: Ctx) -> dict:
    """The torch backend (CUDA tensors) against the numpy backend (CPU tensors) on the same costs."""
    import torch

    from dpot.ot import unbalanced_sinkhorn

    kw = {"reg": 0.02, "tau_src": 0.01, "tau_tgt": 0.01, "max_iters": 200, "tol": 1e-5}
    rows = []
    g = torch.Generator().manual_seed(0)
    for n in ctx.sizes.ot_n:
        cost = torch.rand(n, n, generator=g) * 0.5
        t_cpu = []
        for _ in range(ctx.sizes.ot_repeats):
            t0 = time.perf_counter()
            p_cpu = unbalanced_sinkhorn(cost, **kw)
            t_cpu.append(time.perf_counter() - t0)
        row = {"n": n, "cpu_ms": 1e3 * statistics.median(t_cpu), "mass_cpu": float(p_cpu.sum())}
        if ctx.device == "cuda":
            cc = cost.cuda()
            unbalanced_sinkhorn(cc, **kw)  # warm-up (kernels, cuBLAS handle)
            t_gpu = []
            for _ in range(ctx.sizes.ot_repeats):
                _sync("cuda")
                t0 = time.perf_counter()
                p_gpu = unbalanced_sinkhorn(cc, **kw)
                _sync("cuda")
                t_gpu.append(time.perf_counter() - t0)
            err = float((p_gpu.cpu().double() - p_cpu.double()).abs().max())
            row.update({"cuda_ms": 1e3 * statistics.median(t_gpu), "max_abs_diff": err,
                        "rel_diff": err / float(p_cpu.abs().max()), "cuda_dtype": str(p_gpu.dtype)})
        rows.append(row)
    out = {"rows": rows, "settings": kw}
    if ctx.device == "cuda":
        worst = max(r["rel_diff"] for r in rows)
        out["max_rel_diff"] = worst
        if not worst < 1e-4:
            raise CheckFailed(f"CUDA plan differs from the CPU plan by {worst:.2e} (relative) > 1e-4: {rows}")
        out["summary"] = "; ".join(f"n={r['n']}: cpu {r['cpu_ms']:.1f} ms, cuda {r['cuda_ms']:.1f} ms, "
                                   f"rel.diff {r['rel_diff']:.1e}" for r in rows)
    else:
        out["summary"] = "CPU only: " + "; ".join(f"n={r['n']}: {r['cpu_ms']:.1f} ms" for r in rows)
    return out


def _tiny_policy_and_batch(ctx: Ctx, b: int):
    """A CPU-sized diffusion policy (2 cameras, 64 px) and a random normalized batch on ``ctx.device``."""
    import torch
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

    keys = _policy_keys(ctx, "tiny", use_amp=False)
    pcfg = DiffusionConfig(**{k: v for k, v in keys.items() if k != "type"})
    pcfg.input_features = {"observation.images.a": PolicyFeature(FeatureType.VISUAL, (3, 64, 64)),
                           "observation.images.b": PolicyFeature(FeatureType.VISUAL, (3, 64, 64)),
                           "observation.state": PolicyFeature(FeatureType.STATE, (4,))}
    pcfg.output_features = {"action": PolicyFeature(FeatureType.ACTION, (4,))}
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

    torch.manual_seed(0)
    policy = DiffusionPolicy(pcfg).to(ctx.device)
    g = torch.Generator().manual_seed(1)
    batch = {"observation.images.a": torch.randn(b, 2, 3, 64, 64, generator=g),
             "observation.images.b": torch.randn(b, 2, 3, 64, 64, generator=g),
             "observation.state": torch.randn(b, 2, 4, generator=g),
             "action": torch.rand(b, 16, 4, generator=g) * 2 - 1,
             "action_is_pad": torch.zeros(b, 16, dtype=torch.bool)}
    noise = torch.randn(b, 16, 4, generator=g)
    t = torch.randint(0, 100, (b,), generator=g)
    dev = ctx.device
    return policy, {k: v.to(dev) for k, v in batch.items()}, noise.to(dev), t.to(dev)


def check_amp_bf16(ctx: Ctx) -> dict:
    """One forward + OT + backward in float32 and under bf16 autocast, same weights/batch/noise/timesteps."""
    import torch

    from dpot.config import OTConfig
    from dpot.ot.alignment import DomainFeatures
    from dpot.ot.loss import OTAlignmentLoss
    from dpot.policy.diffusion import diffusion_loss_with_features

    b = 8
    policy, batch, noise, t = _tiny_policy_and_batch(ctx, b)
    policy.train()
    ot = OTAlignmentLoss(OTConfig(lambda_ot=0.1))
    n = b // 2
    phase = torch.linspace(0, 1, n, device=ctx.device)
    res = {}
    for name, amp in (("fp32", False), ("bf16", True)):
        policy.zero_grad(set_to_none=True)
        with torch.autocast(ctx.device, dtype=torch.bfloat16, enabled=amp):
            out = diffusion_loss_with_features(policy, batch, noise=noise, timesteps=t)

            def feats(sl, out=out):
                return DomainFeatures(embeds={k: v[sl] for k, v in out.embeds.items()},
                                      labels={"action": out.action[sl]}, phase=phase)

            r = ot(feats(slice(0, n)), feats(slice(n, None)))
        loss = out.loss + r.loss
        loss.backward()
        grads = [p.grad for p in policy.parameters() if p.grad is not None]
        res[name] = {"bc_loss": float(out.loss.detach()), "ot_loss": float(r.loss.detach()),
                     "ot_loss_dtype": str(r.loss.dtype),
                     "embed_dtype": str(next(iter(out.embeds.values())).dtype),
                     "grads_finite": bool(all(torch.isfinite(gr).all() for gr in grads)),
                     "grad_norm": float(torch.linalg.vector_norm(torch.stack([gr.float().norm() for gr in grads])))}
    rel_bc = abs(res["bf16"]["bc_loss"] - res["fp32"]["bc_loss"]) / abs(res["fp32"]["bc_loss"])
    rel_gn = abs(res["bf16"]["grad_norm"] - res["fp32"]["grad_norm"]) / res["fp32"]["grad_norm"]
    out = {**res, "rel_diff_bc_loss": rel_bc, "rel_diff_grad_norm": rel_gn, "ran_on": ctx.device}
    problems = [k for k in ("fp32", "bf16") if not res[k]["grads_finite"]]
    if problems or not rel_bc < 0.05 or res["bf16"]["ot_loss_dtype"] != "torch.float32":
        raise CheckFailed(f"bf16 vs fp32: {out}")
    out["summary"] = (f"{ctx.device}: bc loss fp32 {res['fp32']['bc_loss']:.4f} vs bf16 {res['bf16']['bc_loss']:.4f} "
                      f"(rel {rel_bc:.1e}); grad norm rel diff {rel_gn:.1e}; embeds {res['bf16']['embed_dtype']}, "
                      f"OT loss {res['bf16']['ot_loss_dtype']}")
    return out


def _toy_data(ctx: Ctx) -> dict:
    if "toy" not in ctx.artifacts:
        from dpot.data.toy import make_toy_dataset

        root = ctx.work / "toy"
        make_toy_dataset(root / "src", "source", episodes=4, image_size=64, seed=0)
        make_toy_dataset(root / "tgt", "target", episodes=4, image_size=64, seed=0)
        ctx.artifacts["toy"] = {"src": root / "src", "tgt": root / "tgt"}
    return ctx.artifacts["toy"]


def check_resume(ctx: Ctx) -> dict:
    """Uninterrupted run A (checkpoints at k and 2k) vs run B = A's files up to checkpoint k, resumed."""
    import torch
    from safetensors.torch import load_file

    toy = _toy_data(ctx)
    steps = ctx.sizes.resume_steps
    k = steps // 2
    cfg = {"dataset": {"repo_id": "local/toy_target", "root": str(toy["tgt"])},
           "source_dataset": {"repo_id": "local/toy_source", "root": str(toy["src"])},
           "policy": {**_policy_keys(ctx, "tiny", use_amp=False), "down_dims": [16, 32], "horizon": 8,
                      "n_action_steps": 4, "diffusion_step_embed_dim": 32, "num_inference_steps": 3},
           "batch_size": 4, "steps": steps, "log_freq": 1, "save_freq": k, "eval_freq": 0, "num_workers": 0,
           "wandb": {"enable": False}, "env_eval_freq": 0, "seed": 0, "ot": {"lambda_ot": 0.1},
           "use_policy_training_preset": False, "optimizer": {"type": "sgd", "lr": 0.05, "grad_clip_norm": 10.0},
           "scheduler": {"type": "diffuser", "name": "cosine", "num_warmup_steps": 1}}
    d = ctx.work / "resume"
    d.mkdir(parents=True, exist_ok=True)
    (d / "cfg.json").write_text(json.dumps(cfg))
    a, b = d / "a", d / "b"
    run_cmd([PY, "-m", "dpot", "train", f"--config_path={d / 'cfg.json'}", f"--output_dir={a}"], d / "a.log",
            _left(ctx))
    # B: A's run dir as it was right after checkpoint k (later checkpoints gone, `last` -> k), then resumed
    shutil.copytree(a, b, symlinks=True)
    ck = b / "checkpoints"
    for p in ck.iterdir():
        if p.name.isdigit() and int(p.name) > k:
            shutil.rmtree(p)
    (ck / "last").unlink()
    (ck / "last").symlink_to(f"{k:06d}")
    run_cmd([PY, "-m", "dpot", "train", f"--config_path={b / 'train_config.json'}", f"--output_dir={b}",
             "--resume=true"], d / "b.log", _left(ctx))
    wa = load_file(str(a / "checkpoints" / "last" / "pretrained_model" / "model.safetensors"))
    wb = load_file(str(b / "checkpoints" / "last" / "pretrained_model" / "model.safetensors"))
    diff = max(float((wa[n].double() - wb[n].double()).abs().max()) for n in wa)
    scale = max(float(w.double().abs().max()) for w in wa.values())
    ma, mb = read_metrics(a), read_metrics(b)
    loss_diff = max(abs(x["train/loss"] - y["train/loss"]) for x, y in zip(ma, mb))
    out = {"steps": steps, "resumed_at": k, "max_abs_weight_diff": diff, "max_abs_weight": scale,
           "max_abs_loss_diff": loss_diff, "steps_logged": [r["step"] for r in mb], "ran_on": ctx.device,
           "exact": diff == 0.0}
    tol = 0.0 if ctx.device == "cpu" else 1e-4 * scale
    if [r["step"] for r in mb] != list(range(1, steps + 1)) or diff > tol or not torch.isfinite(torch.tensor(diff)):
        raise CheckFailed(f"resume differs: {out}")
    out["summary"] = (f"{ctx.device}: resumed at step {k} of {steps}: max |w_resumed - w_straight| = {diff:.1e} "
                      f"(max |w| {scale:.2f}), max loss diff {loss_diff:.1e}")
    return out


def check_metaworld_data(ctx: Ctx) -> dict:
    s = ctx.sizes
    out = {}
    roots = {}
    for domain, eps in (("source", s.mw_src_eps), ("target", s.mw_tgt_eps)):
        root = ctx.work / f"mw_{domain}"
        res_json = ctx.work / f"mw_{domain}.log"
        t0 = time.perf_counter()
        text = run_cmd([PY, "-m", "dpot", "bench", "generate", "--task", TASK, "--domain", domain, "--episodes",
                        str(eps), "--out", str(root), "--image-size", str(s.mw_image), "--cameras", CAMERAS,
                        "--workers", str(s.mw_workers), "--seed", "0"], res_json, _left(ctx))
        out[domain] = {"episodes": eps, "seconds": time.perf_counter() - t0,
                       "line": [x for x in text.splitlines() if x.startswith(("wrote", "reused"))][-1:]}
        roots[domain] = root
    ctx.artifacts["mw"] = roots
    out.update({"task": TASK, "image_size": s.mw_image, "cameras": CAMERAS, "workers": s.mw_workers})
    out["summary"] = (f"{TASK} {s.mw_image} px: source {s.mw_src_eps} eps in {out['source']['seconds']:.0f} s, "
                      f"target {s.mw_tgt_eps} eps in {out['target']['seconds']:.0f} s ({s.mw_workers} workers)")
    return out


def check_render(ctx: Ctx) -> dict:
    """Median ms per frame per camera at the dataset's size and at 224 px, and which OpenGL renders."""
    import numpy as np

    from dpot.bench.env import DomainEnv

    out = {"mujoco_gl": os.environ.get("MUJOCO_GL")}
    for size in (ctx.sizes.mw_image, 224):
        cams = tuple(CAMERAS.split(","))
        with DomainEnv(TASK, "target", image_size=size, cameras=cams) as env:
            env.reset(0)
            rng = np.random.default_rng(0)
            times = {c: [] for c in cams}
            for _ in range(ctx.sizes.render_frames):
                env.step(rng.uniform(-1, 1, 4), render=False)
                for c in cams:
                    t0 = time.perf_counter()
                    img = env.render((c,))
                    times[c].append(1e3 * (time.perf_counter() - t0))
            out[f"ms_per_frame_{size}px"] = {c: float(np.median(v)) for c, v in times.items()}
            if "renderer" not in out:
                out["renderer"] = _gl_renderer()
                first = next(iter(img.values())) if isinstance(img, dict) else img
                out["frame_std"] = float(np.asarray(first, dtype=np.float32).std())
    if not out.get("frame_std", 0) > 0:
        raise CheckFailed(f"rendered frames are blank: {out}")
    ms = out[f"ms_per_frame_{ctx.sizes.mw_image}px"]
    out["summary"] = (f"renderer {out['renderer']}; {ctx.sizes.mw_image} px: "
                      + ", ".join(f"{c} {v:.2f} ms" for c, v in ms.items())
                      + "; 224 px: " + ", ".join(f"{c} {v:.2f} ms" for c, v in out["ms_per_frame_224px"].items()))
    return out


def _gl_renderer() -> str:
    """GL_RENDERER of the context MuJoCo opened (e.g. 'NVIDIA H100 80GB HBM3/PCIe/SSE2' or 'llvmpipe')."""
    try:
        import mujoco
        from OpenGL import GL

        ctx = mujoco.GLContext(16, 16)
        ctx.make_current()
        try:
            return GL.glGetString(GL.GL_RENDERER).decode()
        finally:
            ctx.free()
    except Exception as e:  # noqa: BLE001  (a diagnostic string only; the timings above are the check)
        return f"unknown ({type(e).__name__}: {e})"


def check_train_bf16(ctx: Ctx) -> dict:
    """A short ``dpot train`` run with bf16 autocast on the MetaWorld data, OT on, checkpoint at the end."""
    s = ctx.sizes
    mw = ctx.artifacts["mw"]
    keys = _policy_keys(ctx, s.model, use_amp=True)  # on CPU: CPU bf16 autocast (a stand-in for the plumbing)
    keys.update({"num_inference_steps": 10})
    run = ctx.work / "train_bf16"
    cfg = {"dataset": {"repo_id": "local/target", "root": str(mw["target"])},
           "source_dataset": {"repo_id": "local/source", "root": str(mw["source"])},
           "policy": keys, "batch_size": s.train_batch, "steps": s.train_steps, "log_freq": 1,
           "save_freq": s.train_steps, "eval_freq": 0, "num_workers": s.train_workers,
           "wandb": {"enable": False}, "env_eval_freq": 0, "seed": 0, "ot": {"lambda_ot": 0.1}}
    (ctx.work / "train_bf16.json").write_text(json.dumps(cfg))
    train_step = _train_step()

    t0 = time.perf_counter()
    proc = subprocess.Popen([PY, "-m", "dpot", "train", f"--config_path={ctx.work / 'train_bf16.json'}",
                             f"--output_dir={run}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=child_env(), cwd=ROOT)
    times, text = train_step._line_times(proc, run / "metrics.jsonl", "")
    (ctx.work / "train_bf16.log").write_text(text)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise CheckFailed(f"dpot train exited {proc.returncode}; log tail:\n{text[-2500:]}")
    rows = [r for r in read_metrics(run) if "train/update_s" in r]
    skip = min(5, len(rows) - 1)
    warm = rows[skip:]
    upd = statistics.median(r["train/update_s"] for r in warm)
    dat = statistics.median(r["train/dataloading_s"] for r in warm)
    walls = train_step._step_walls(times, skip)
    step_wall = statistics.median(walls) if walls else None
    ckpt = run / "checkpoints" / "last" / "pretrained_model"
    if not (ckpt / "model.safetensors").is_file():
        raise CheckFailed(f"no checkpoint at {ckpt}; log tail:\n{text[-2000:]}")
    saved = json.loads((ckpt / "config.json").read_text())
    ctx.artifacts["policy"] = ckpt
    # data_share: dataloading_s over the wall time per step (log-line arrivals; dpot's update_s is read before
    # the GPU finishes the step's backward/optimizer kernels); data_share_reported: over update_s + dataloading_s
    out = {"steps": s.train_steps, "batch_size": s.train_batch, "model": s.model, "num_workers": s.train_workers,
           "use_amp": bool(saved.get("use_amp")), "policy_device": saved.get("device"), "wall_s": wall,
           "update_s_median": upd, "dataloading_s_median": dat, "step_wall_s_median": step_wall,
           "data_share": dat / step_wall if step_wall else dat / (upd + dat),
           "data_share_reported": dat / (upd + dat),
           "loss_first": rows[0]["train/loss"], "loss_last": rows[-1]["train/loss"],
           "ot_loss_last": rows[-1].get("train/ot_loss"),
           "finite": all(isinstance(r["train/loss"], float) for r in rows)}
    if not out["finite"]:
        raise CheckFailed(f"non-finite loss in the bf16 run: {rows[-3:]}")
    out["summary"] = (f"{ctx.device}, use_amp={out['use_amp']}, {s.model} model, batch {s.train_batch}: "
                      f"update {upd:.3f} s, data {dat:.4f} s, wall step "
                      f"{step_wall if step_wall else float('nan'):.3f} s (data {100 * out['data_share']:.1f} %), loss "
                      f"{out['loss_first']:.3f} -> {out['loss_last']:.3f}, {s.train_steps} steps in {wall:.0f} s")
    return out


def check_eval_closed_loop(ctx: Ctx) -> dict:
    s = ctx.sizes
    res = ctx.work / "eval.json"
    t0 = time.perf_counter()
    run_cmd([PY, "-m", "dpot", "bench", "eval", "--policy", str(ctx.artifacts["policy"]), "--task", TASK,
             "--domain", "target", "--episodes", str(s.eval_episodes), "--max-steps", str(s.eval_max_steps),
             "--workers", str(s.eval_workers), "--device", ctx.device, "--out", str(res)], ctx.work / "eval.log",
            _left(ctx))
    r = json.loads(res.read_text())
    out = {k: r.get(k) for k in ("success_rate", "successes", "episodes", "mean_length", "seconds", "ci95")}
    out.update({"device": ctx.device, "workers": s.eval_workers, "max_steps": s.eval_max_steps,
                "wall_s": time.perf_counter() - t0,
                "env_steps_per_s": s.eval_episodes * (r.get("mean_length") or 0) / max(r.get("seconds") or 1, 1e-9)})
    out["summary"] = (f"policy on {ctx.device}, {s.eval_episodes} episodes x <= {s.eval_max_steps} steps, "
                      f"{s.eval_workers} workers: success {r['successes']}/{r['episodes']}, {r['seconds']:.0f} s "
                      f"(policy trained {ctx.sizes.train_steps} steps only: plumbing and speed, not skill)")
    return out


def _step_time_data(ctx: Ctx) -> tuple[dict, str]:
    """The MetaWorld datasets when ``metaworld_data`` ran in this invocation, else toy datasets of the same size
    (so the step-time check needs no MetaWorld/MuJoCo: it can run in the first of the two GPU calls)."""
    if "mw" in ctx.artifacts:
        return ctx.artifacts["mw"], f"MetaWorld {TASK}"
    from dpot.data.toy import make_toy_dataset

    root = ctx.work / "toy_step"
    if not root.exists():
        for domain, eps in (("source", ctx.sizes.mw_src_eps + 4), ("target", ctx.sizes.mw_tgt_eps + 2)):
            make_toy_dataset(root / domain, domain, episodes=eps, image_size=ctx.sizes.mw_image, seed=0)
    return {"source": root / "source", "target": root / "target"}, "toy (dpot.data.toy)"


def check_step_time(ctx: Ctx) -> dict:
    s = ctx.sizes
    mw, data_name = _step_time_data(ctx)
    js = ctx.work / "step_time.json"
    run_cmd([PY, str(ROOT / "benchmarks" / "train_step.py"), "--device", ctx.device, "--model", s.model,
             "--steps", str(s.st_steps), "--warmup", str(s.st_warmup), "--batch_size", str(s.st_batch),
             "--num_workers", str(s.st_workers), "--ab_reps", str(s.st_ab_reps), "--source", str(mw["source"]),
             "--target", str(mw["target"]), "--image_size", str(s.mw_image), "--json", str(js)],
            ctx.work / "step_time.log", _left(ctx))
    r = json.loads(js.read_text())

    def wall(k):
        return r[k]["step_wall_s"] or (r[k]["update_s"] + r[k]["data_s"])

    out = {**r, "data": data_name, "dpot_ot_on_vs_lerobot": wall("ot_on") / wall("lerobot") - 1,
           "dpot_ot_off_vs_lerobot": wall("ot_off") / wall("lerobot") - 1}
    ab = r.get("ab") or {}
    out["summary"] = (f"{r['device']}, {data_name} data, {s.model} model, batch {s.st_batch}, fp32: wall step "
                      f"dpot OT on "
                      f"{wall('ot_on'):.3f} s, OT off {wall('ot_off'):.3f} s, lerobot-train {wall('lerobot'):.3f} s "
                      f"(OT on {100 * out['dpot_ot_on_vs_lerobot']:+.0f} %, OT off "
                      f"{100 * out['dpot_ot_off_vs_lerobot']:+.0f} % vs lerobot); in-process OT A/B "
                      + (f"{100 * (ab['ratio_median'] - 1):+.1f} %" if ab else "not run"))
    return out


def check_data_wait(ctx: Ctx) -> dict:
    """Data wait share = dataloading_s / wall step, at this device's step times (no new run).

    The wall step comes from log-line arrivals: dpot reads ``train/update_s`` before anything waits for the GPU,
    so on CUDA ``update_s + dataloading_s`` undercounts the step (``update_plus_data_s`` shows by how much)."""
    out = {}
    st = ctx.results.get("step_time", {}).get("result")
    if st:
        for k in ("ot_on", "ot_off", "lerobot"):
            w = st[k]["step_wall_s"] or (st[k]["update_s"] + st[k]["data_s"])
            out[f"step_time.{k}"] = {"data_s": st[k]["data_s"], "wall_step_s": w, "share": st[k]["data_s"] / w,
                                     "update_plus_data_s": st[k]["update_s"] + st[k]["data_s"]}
    tb = ctx.results.get("train_bf16", {}).get("result")
    if tb:
        out["train_bf16"] = {"data_s": tb["dataloading_s_median"], "update_s": tb["update_s_median"],
                             "wall_step_s": tb["step_wall_s_median"], "share": tb["data_share"],
                             "share_of_update_plus_data": tb["data_share_reported"]}
    if not out:
        raise CheckFailed("no step-time result to read (step_time and train_bf16 did not run)")
    out["summary"] = "; ".join(f"{k}: {100 * v['share']:.1f} %" for k, v in out.items())
    return out


CHECKS: list[Check] = [
    Check("env", None, check_env),
    Check("ot_solver", "unbalanced_sinkhorn's torch backend on CUDA tensors vs the CPU plan", check_ot_solver),
    Check("amp_bf16", "bf16 autocast on CUDA (the CPU stand-in runs CPU autocast)", check_amp_bf16),
    Check("resume", "checkpoint/resume of a run on CUDA (the CPU stand-in is exact)", check_resume),
    Check("metaworld_data", None, check_metaworld_data),
    Check("render", "MuJoCo EGL rendering on the NVIDIA driver (here: whatever EGL this machine has)", check_render),
    Check("train_bf16", "short bf16 dpot train run on CUDA (the CPU stand-in is tiny)", check_train_bf16,
          ("metaworld_data",)),
    Check("eval_closed_loop", "closed-loop eval with the policy on CUDA", check_eval_closed_loop, ("train_bf16",)),
    Check("step_time", "dpot vs lerobot-train step time on the same GPU", check_step_time),
    Check("data_wait", "data wait share at GPU step times", check_data_wait),
]


# --------------------------------------------------------------------------------------------- driver


def render_md(report: dict) -> str:
    meta = report["meta"]
    lines = [f"## GPU check ({meta['date']}, {meta['card'] or 'no CUDA device'}"
             f"{', DRY RUN (tiny sizes)' if meta['dry_run'] else ''})", "",
             f"`scripts/gpu_check.sh`, device `{meta['device']}`, {meta['cpu_cores']} CPU cores, torch "
             f"{meta['torch']}; total {meta['seconds']:.0f} s.", "",
             "| check | status | ran on | result | s |", "|---|---|---|---|---|"]
    for name, r in report["checks"].items():
        res = r.get("result") or {}
        text = (res.get("summary") or r.get("reason") or r.get("error", "").splitlines()[0:1] or [""])
        text = text if isinstance(text, str) else (text[0] if text else "")
        text = text.replace("|", "/").replace("\n", " ")
        lines.append(f"| {name} | {r['status']} | {r.get('ran_on', '-')} | {text} | {r.get('seconds', 0):.0f} |")
    if report["needs_cuda"]:
        lines += ["", "Needs CUDA (not run here): " + "; ".join(f"`{n}`" for n in report["needs_cuda"]) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "outputs/gpu_check",
                    help="folder for gpu_check.json and gpu_check.md (default $OUT, else outputs/gpu_check)")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU even if CUDA is there")
    ap.add_argument("--checks", default=None, help=f"comma-separated subset of {','.join(c.name for c in CHECKS)}")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="stop starting checks after this many seconds (the rest print SKIPPED); default 480 with "
                         "CUDA (the GPU machine's 9-minute command), 1800 for the CPU dry run")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp dir, removed at the end)")
    args = ap.parse_args(argv)
    names = [c.name for c in CHECKS]
    selected = names if not args.checks else [c.strip() for c in args.checks.split(",") if c.strip()]
    unknown = [c for c in selected if c not in names]
    if unknown:
        print(f"error: --checks: unknown {unknown}; choose from {','.join(names)}", file=sys.stderr)
        return 2

    t_start = time.perf_counter()
    import torch

    cuda = torch.cuda.is_available() and not args.dry_run
    device = "cuda" if cuda else "cpu"
    if args.budget_s is None:
        args.budget_s = 480.0 if cuda else 1800.0
    if not cuda:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or torch.get_num_threads())
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="dpot-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(device=device, dry=not cuda, sizes=FULL if cuda else TINY, work=work,
              deadline=t_start + args.budget_s)
    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    report = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "dry_run": not cuda,
                       "device": device, "card": card, "cpu_cores": os.cpu_count(), "torch": torch.__version__,
                       "python": platform.python_version(), "sizes": vars(ctx.sizes), "seconds": 0.0},
              "checks": ctx.results, "needs_cuda": []}
    print(f"gpu_check: device {device}{' (' + card + ')' if cuda else ''}, "
          f"{'full' if cuda else 'DRY RUN: tiny sizes on CPU'}, budget {args.budget_s:.0f} s, work {work}",
          flush=True)

    def save():
        report["meta"]["seconds"] = time.perf_counter() - t_start
        (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
        (out_dir / "gpu_check.md").write_text(render_md(report))

    failed = False
    for chk in CHECKS:
        entry: dict = {"cuda_part": chk.cuda_part}
        ctx.results[chk.name] = entry
        if chk.name not in selected:
            entry.update(status="skipped", reason="not selected (--checks)")
        elif time.perf_counter() > ctx.deadline:
            entry.update(status="skipped", reason=f"time budget ({args.budget_s:.0f} s) spent")
        elif any(ctx.results.get(n, {}).get("status") not in ("ok", "needs_cuda") for n in chk.needs):
            entry.update(status="skipped", reason=f"needs {', '.join(chk.needs)}, which did not run or failed")
        else:
            t0 = time.perf_counter()
            print(f"--- {chk.name} ...", flush=True)
            try:
                entry["result"] = chk.fn(ctx)
                entry["status"] = "needs_cuda" if (chk.cuda_part and not cuda) else "ok"
            except CheckFailed as e:
                entry.update(status="fail", error=str(e))
            except Exception as e:  # noqa: BLE001  (one broken check must not hide the others' numbers)
                entry.update(status="error", error=f"{type(e).__name__}: {e}\n{traceback.format_exc()[-2500:]}")
            entry["seconds"] = time.perf_counter() - t0
            entry["ran_on"] = device
        if chk.cuda_part and not cuda:
            report["needs_cuda"].append(chk.name)
        status = entry["status"]
        failed |= status in ("fail", "error")
        res = entry.get("result") or {}
        if status != "skipped":
            print(f"CHECK {chk.name}: {status.upper()} ({entry.get('seconds', 0):.1f} s) {res.get('summary', '')}",
                  flush=True)
        if status in ("fail", "error"):
            print(entry["error"], flush=True)
        if status == "skipped":
            print(f"SKIPPED: {chk.name}: {entry['reason']}", flush=True)
        if chk.cuda_part and not cuda:
            print(f"NEEDS CUDA: {chk.name}: {chk.cuda_part}", flush=True)
        save()
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    save()
    print(f"gpu_check: {'FAILED' if failed else 'passed'} in {time.perf_counter() - t_start:.0f} s; "
          f"results in {out_dir / 'gpu_check.json'} and {out_dir / 'gpu_check.md'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
