"""Step time of ``dpot train`` with OT on vs OT off vs LeRobot's own ``lerobot-train`` (same target dataset,
same model size, same batch size, run back to back in this process's machine).

    .venv/bin/python benchmarks/train_step.py [--steps 30] [--warmup 5] [--batch_size 8] [--num_workers 2]
        [--source DIR --target DIR] [--image_size 64] [--device cpu|cuda] [--use_amp] [--model tiny|default]
        [--policy diffusion|act] [--json out.json] [--write docs/benchmarks.md]

Reports per run: median ``update_s``, median ``dataloading_s``, steps/s (1 / (update + data)), data wait share
(data / (update + data)); for dpot the extra cost of OT (OT on vs off) and the time of one offline eval
(``eval.n_batches=20``, full diffusion sampling) and its share of wall time at the default ``eval_freq=1000``.
Without ``--source/--target`` it writes 64 px toy datasets (20 source + 5 target episodes) to a temp dir.
``--device cuda`` runs all three on the GPU (``--use_amp``: bf16 autocast in both trainers); ``--model default``
uses LeRobot's default diffusion U-Net (down_dims 512/1024/2048) instead of the CPU-sized one. Besides the
trainers' own ``update_s``/``dataloading_s`` it records the **wall time per step** from the arrival times of the
per-step log lines (dpot: ``metrics.jsonl``; lerobot-train: its log), which counts queued GPU work whatever
point each trainer stops its clock at. ``--json`` writes the raw per-run summaries.
``--policy act`` runs the three trainers on LeRobot's ACT instead (:data:`ACT_POLICY`: LeRobot's default ACT sizes,
ResNet18 backbone without pretrained weights, a 16-step chunk; dpot's OT term on ACT's pooled per-camera features,
:mod:`dpot.policy.act`); the in-process A/B then runs ACT's own loss through dpot's ACT hook.
``--write`` replaces only that policy's section (``## Trainer (dpot train)``, ``## Trainer, ACT (dpot train)``) of
the given Markdown file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from dpot.metric_names import EVAL_S

if __package__:  # imported as benchmarks.train_step (the tests, python -m benchmarks.train_step)
    from .markdown_section import write_section
else:  # run as python benchmarks/train_step.py: benchmarks/ is sys.path[0]
    from markdown_section import write_section

PY = sys.executable
BIN = Path(sys.executable).parent
SECTIONS = {"diffusion": "## Trainer (dpot train)", "act": "## Trainer, ACT (dpot train)"}
POLICY = {"type": "diffusion", "device": "cpu", "push_to_hub": False, "pretrained_backbone_weights": None,
          "use_group_norm": True, "use_separate_rgb_encoder_per_camera": False, "down_dims": [32, 64, 128],
          "n_obs_steps": 2, "horizon": 16, "n_action_steps": 8, "diffusion_step_embed_dim": 64,
          "noise_scheduler_type": "DDIM", "num_inference_steps": 10}
# LeRobot 0.6.1's ACT at its default sizes (dim_model 512, 4 encoder / 1 decoder layers, VAE on, ResNet18 without
# pretrained weights), with a 16-step chunk (8 executed) in place of 100: the CPU-sized counterpart of the U-Net's
# horizon 16 above (the toy episodes are 20-40 frames long)
ACT_POLICY = {"type": "act", "device": "cpu", "push_to_hub": False, "pretrained_backbone_weights": None,
              "chunk_size": 16, "n_action_steps": 8}
# LeRobot 0.6.1's default diffusion U-Net and encoders (one ResNet18 per camera), still without pretrained weights
DEFAULT_MODEL = {"use_separate_rgb_encoder_per_camera": True, "down_dims": [512, 1024, 2048],
                 "diffusion_step_embed_dim": 128}


def policy_config(args) -> dict:
    """The policy keys both trainers get: the CPU-sized ``POLICY`` or LeRobot's default sizes (``--policy act``:
    :data:`ACT_POLICY` whatever ``--model``), on ``--device``."""
    if getattr(args, "policy", "diffusion") == "act":
        p = dict(ACT_POLICY)
    else:
        p = dict(POLICY)
    if p["type"] == "diffusion" and getattr(args, "model", "tiny") == "default":
        p.update(DEFAULT_MODEL)
    p["device"] = getattr(args, "device", "cpu")
    p["use_amp"] = bool(getattr(args, "use_amp", False))
    return p


def _flag(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def lerobot_train_cmd() -> list[str]:
    """``lerobot-train`` next to this interpreter, else ``python -m lerobot.scripts.lerobot_train`` (wheels
    installed with ``pip --target`` have no console scripts on PATH)."""
    exe = BIN / "lerobot-train"
    return [str(exe)] if exe.exists() else [PY, "-m", "lerobot.scripts.lerobot_train"]


def _line_times(proc: subprocess.Popen, log_path: Path | None, pattern: str) -> tuple[list[float], str]:
    """Run ``proc`` to completion; return the arrival time of each training step's log line, and its output.

    With ``log_path`` (dpot's ``metrics.jsonl``, flushed per line) the rows holding ``train/update_s``, polled every
    2 ms; otherwise the lines of the process's merged stdout/stderr matching ``pattern`` (lerobot-train's log).
    With ``log_freq=1``, consecutive differences are the wall time per step.
    """
    times: list[float] = []
    out_chunks: list[str] = []
    if log_path is None:
        for line in proc.stdout:
            out_chunks.append(line)
            if re.search(pattern, line):
                times.append(time.perf_counter())
        proc.wait()
        return times, "".join(out_chunks)
    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    done = 0  # bytes of complete lines already read
    while True:
        alive = proc.poll() is None
        if log_path.exists():
            with open(log_path, "rb") as fh:
                fh.seek(done)
                chunk = fh.read()
            now = time.perf_counter()
            complete = chunk[:chunk.rfind(b"\n") + 1]
            done += len(complete)
            times.extend(now for line in complete.splitlines() if b"train/update_s" in line)
        if not alive:
            break
        time.sleep(0.002)
    reader.join()
    return times, "".join(out_chunks)


def _dpot_run(tmp: Path, name: str, src: Path, tgt: Path, args, lambda_ot: float, eval_freq: int) -> dict:
    out = tmp / name
    cfg = {"dataset": {"repo_id": "local/target", "root": str(tgt)},
           "source_dataset": {"repo_id": "local/source", "root": str(src)},
           "policy": policy_config(args), "batch_size": args.batch_size, "steps": args.steps, "log_freq": 1,
           "save_checkpoint": False, "eval_freq": eval_freq, "num_workers": args.num_workers,
           "eval": {"n_batches": 20, "val_fraction": 0.2}, "ot": {"lambda_ot": lambda_ot},
           "wandb": {"enable": False}, "env_eval_freq": 0, "seed": 0}
    cfg_path = tmp / f"{name}.json"
    cfg_path.write_text(json.dumps(cfg))
    t0 = time.perf_counter()
    proc = subprocess.Popen([PY, "-m", "dpot.train", f"--config_path={cfg_path}", f"--output_dir={out}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    times, text = _line_times(proc, out / "metrics.jsonl", "")
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"dpot train failed:\n{text[-3000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "train/update_s" in r][args.warmup:]
    evals = [r[EVAL_S] for r in rows if EVAL_S in r]
    # log lines of steps warmup+1..steps, minus the eval steps' lines (their gap holds the eval)
    step_wall = _step_walls(times, args.warmup, {r["step"] for r in rows if EVAL_S in r})
    return {"update_s": [r["train/update_s"] for r in train], "data_s": [r["train/dataloading_s"] for r in train],
            "eval_s": evals, "wall_s": wall, "step_wall_s": step_wall}


def _step_walls(times: list[float], warmup: int, skip_after: set[int] | None = None) -> list[float]:
    """Wall seconds of steps ``warmup+1..`` from log-line arrival times (``times[i]`` = step i+1's line); the gap
    after a step in ``skip_after`` (an offline eval ran there) is dropped."""
    skip_after = skip_after or set()
    return [b - a for k, (a, b) in enumerate(zip(times, times[1:]), start=1)
            if k >= warmup and k not in skip_after]


def _lerobot_run(tmp: Path, tgt: Path, args) -> dict:
    out = tmp / "lerobot"
    # the same policy keys as dpot's runs (inference-only keys such as num_inference_steps change nothing here)
    cmd = [*lerobot_train_cmd(), "--dataset.repo_id=local/target", f"--dataset.root={tgt}"]
    cmd += [f"--policy.{k}={_flag(v)}" for k, v in policy_config(args).items()]
    cmd += [f"--batch_size={args.batch_size}", f"--steps={args.steps}", "--log_freq=1", "--save_checkpoint=false",
            f"--num_workers={args.num_workers}", "--wandb.enable=false", "--env_eval_freq=0",
            f"--output_dir={out}", "--seed=0"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    times, text = _line_times(proc, None, r"updt_s:")
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"lerobot-train failed:\n{text[-3000:]}")
    upd = [float(x) for x in re.findall(r"updt_s:([\d.]+)", text)][args.warmup:]
    dat = [float(x) for x in re.findall(r"data_s:([\d.]+)", text)][args.warmup:]
    return {"update_s": upd, "data_s": dat, "eval_s": [], "wall_s": wall,
            "step_wall_s": _step_walls(times, args.warmup)}


def interleaved_ot_cost(tgt: Path, args, reps: int) -> dict:
    """In-process A/B of one full training step (forward, [OT], backward, AdamW step) with OT off / on,
    alternated ``reps`` times on the same batch, so load from other jobs hits both arms alike. The forward is the
    policy's dpot hook (:func:`dpot.policy.hooks.get_hook`: Diffusion's or ACT's loss and per-camera features of
    the same pass), as ``dpot train`` runs it."""
    import torch
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.configs.types import FeatureType
    from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata
    from lerobot.policies.factory import make_policy

    from dpot.config import OTConfig
    from dpot.ot.alignment import DomainFeatures
    from dpot.ot.loss import OTAlignmentLoss
    from dpot.policy.hooks import get_hook

    meta = LeRobotDatasetMetadata("local/target", root=tgt)
    pkeys = policy_config(args)
    pcfg = PreTrainedConfig.get_choice_class(pkeys["type"])(**{k: v for k, v in pkeys.items() if k != "type"})
    policy = make_policy(pcfg, ds_meta=meta)
    hook = get_hook(pkeys["type"])
    dev = torch.device(pkeys["device"])
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    b, n = args.batch_size, args.batch_size // 2
    # observation time axis only where the policy stacks frames (Diffusion: n_obs_steps; ACT: none)
    obs = (2,) if pkeys["type"] == "diffusion" else ()
    horizon = int(getattr(policy.config, "horizon", None) or policy.config.chunk_size)
    batch = {k: torch.rand(b, *obs, *f.shape) for k, f in policy.config.input_features.items()
             if f.type is FeatureType.VISUAL}
    state_dim = policy.config.input_features["observation.state"].shape[0]
    batch["observation.state"] = torch.rand(b, *obs, state_dim)
    batch["action"] = torch.rand(b, horizon, policy.config.output_features["action"].shape[0]) * 2 - 1
    batch["action_is_pad"] = torch.zeros(b, horizon, dtype=torch.bool)
    batch = {k: v.to(dev) for k, v in batch.items()}
    ot = OTAlignmentLoss(OTConfig())
    phase = torch.linspace(0, 1, n, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    policy.train()

    def step(use_ot: bool, k: int) -> float:
        draws = {key: v.to(dev) if torch.is_tensor(v) and v.dim() else v
                 for key, v in hook.step_draws(policy.config, 0, k, (n, b - n, 1, 0)).items()}
        sync()
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=pkeys["use_amp"]):
            out = hook.forward(policy, batch, draws)
            loss = out.loss
            if use_ot:
                f = lambda sl: DomainFeatures(embeds={c: v[sl] for c, v in out.embeds.items()},  # noqa: E731
                                              labels={"action": out.action[sl]}, phase=phase)
                loss = loss + ot(f(slice(0, n)), f(slice(n, None))).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - t0

    step(False, 0), step(True, 1)  # warm-up
    off, on = [], []
    for k in range(reps):
        off.append(step(False, 2 + 2 * k))
        on.append(step(True, 3 + 2 * k))
    return {"off": statistics.median(off), "on": statistics.median(on), "reps": reps,
            "ratio_median": statistics.median([a / b for a, b in zip(on, off)])}


def _summary(r: dict) -> dict:
    """Medians of one run. ``step_wall_s``: wall time per step from log-line arrivals (None if too few steps);
    ``data_share_wall``: dataloading_s over that wall step (the share of the real step spent waiting for data)."""
    u, d = statistics.median(r["update_s"]), statistics.median(r["data_s"])
    w = statistics.median(r["step_wall_s"]) if r.get("step_wall_s") else None
    return {"update_s": u, "data_s": d, "steps_per_s": 1.0 / (u + d), "data_share": d / (u + d),
            "step_wall_s": w, "data_share_wall": (d / w) if w else None,
            "eval_s": statistics.median(r["eval_s"]) if r["eval_s"] else None, "wall_s": r["wall_s"],
            "n": len(r["update_s"])}


def _datasets(args, tmp: Path) -> tuple[Path, Path]:
    if args.source and args.target:
        return Path(args.source), Path(args.target)
    from dpot.data.toy import make_toy_dataset

    make_toy_dataset(tmp / "src", "source", episodes=20, image_size=args.image_size, seed=0)
    make_toy_dataset(tmp / "tgt", "target", episodes=5, image_size=args.image_size, seed=0)
    return tmp / "src", tmp / "tgt"


def render(res: dict, args, data_desc: str) -> str:
    on, off, lr = _summary(res["ot_on"]), _summary(res["ot_off"]), _summary(res["lerobot"])
    step_on = 1 / on["steps_per_s"]
    ot_extra = (on["update_s"] - off["update_s"]) / off["update_s"]
    eval_share = on["eval_s"] / (1000 * step_on + on["eval_s"]) if on["eval_s"] else float("nan")
    ab = res.get("ab")
    pkeys = policy_config(args)
    if pkeys["type"] == "act":
        model = ("LeRobot's ACT at its default sizes (dim_model 512, 4 encoder / 1 decoder layers, VAE), ResNet18 "
                 "backbone without pretrained weights, chunk 16 (8 executed), n_obs 1; dpot's OT on ACT's pooled "
                 "per-camera projected backbone features and the action chunk")
    else:
        enc = "one ResNet18 per camera" if pkeys["use_separate_rgb_encoder_per_camera"] else "one shared ResNet18"
        model = (f"diffusion, {enc} (no pretrained weights, GroupNorm), U-Net down_dims {pkeys['down_dims']}, "
                 "n_obs 2 / horizon 16")
    lines = [
        SECTIONS[pkeys["type"]], "",
        f"`benchmarks/train_step.py` ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"device {device_name(pkeys['device'])}{', bf16 autocast' if pkeys['use_amp'] else ''}). Data: {data_desc}. "
        f"Policy: {model}; 2 cameras at {args.image_size} px; batch "
        f"{args.batch_size} (dpot: half source, half target; lerobot-train: target only), num_workers "
        f"{args.num_workers}. Medians over steps {args.warmup + 1}..{args.steps} of each run; runs back to back. "
        "wall step = time between consecutive per-step log lines.", "",
        "| run | update_s | dataloading_s | steps/s | data wait share | wall step (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in (("dpot train, OT on (lambda_ot=0.1)", on), ("dpot train, OT off (lambda_ot=0)", off),
                    ("lerobot-train (target only)", lr)):
        wall = f"{s['step_wall_s']:.3f}" if s["step_wall_s"] else "n/a"
        lines.append(f"| {name} | {s['update_s']:.3f} | {s['data_s']:.4f} | {s['steps_per_s']:.2f} | "
                     f"{100 * s['data_share']:.1f} % | {wall} |")
    lines += [
        "",
        f"- OT extra step time (update_s on vs off): **{100 * ot_extra:+.1f} %** (target <= 5 %).",
        (f"- **Interleaved A/B in one process** (same batch, OT off/on alternated {ab['reps']}x, so other jobs' "
         f"load hits both alike): full step {ab['off']:.3f} s without OT vs {ab['on']:.3f} s with OT; median "
         f"per-pair ratio **{100 * (ab['ratio_median'] - 1):+.1f} %** (target <= 5 %). This is the reliable OT "
         "cost number; the end-to-end runs above ran at different times under changing load." if ab else ""),
        f"- Data wait share with OT on: **{100 * on['data_share']:.1f} %** of step time (target <= 5 %).",
        f"- dpot (OT on) vs lerobot-train step time: {step_on:.3f} s vs {1 / lr['steps_per_s']:.3f} s "
        f"(**{step_on * lr['steps_per_s']:.2f}x**, {100 * (step_on / (1 / lr['steps_per_s']) - 1):+.1f} %)"
        + (f"; wall step {on['step_wall_s']:.3f} s vs {lr['step_wall_s']:.3f} s "
           f"(**{on['step_wall_s'] / lr['step_wall_s']:.2f}x**)." if on["step_wall_s"] and lr["step_wall_s"] else "."),
        (f"- One offline eval (20 batches x {args.batch_size}, "
         f"{'DDIM 10 steps' if pkeys['type'] == 'diffusion' else 'one ACT forward each'}): {on['eval_s']:.1f} s, i.e. "
         f"**{100 * eval_share:.2f} %** of wall time at the default `eval_freq=1000` (target <= 5 %)."
         if on["eval_s"] else "- offline eval not measured"),
        f"- Wall time of each run incl. start-up: OT on {on['wall_s']:.0f} s, OT off {off['wall_s']:.0f} s, "
        f"lerobot-train {lr['wall_s']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def device_name(device: str) -> str:
    """``cpu`` or the CUDA card's name (e.g. ``cuda (NVIDIA H100 80GB HBM3)``)."""
    if device.startswith("cuda"):
        import torch

        return f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cuda (not available)"
    return "cpu (torch)"


def summaries(res: dict) -> dict:
    """The JSON-able medians of every run (``--json``)."""
    out = {k: _summary(res[k]) for k in ("ot_on", "ot_off", "lerobot")}
    out["ab"] = res.get("ab")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--num_workers", type=int, default=2)
    ap.add_argument("--image_size", type=int, default=64)
    ap.add_argument("--source")
    ap.add_argument("--target")
    ap.add_argument("--write")
    ap.add_argument("--ab_reps", type=int, default=15, help="interleaved in-process OT on/off pairs (0 = skip)")
    ap.add_argument("--ab_only", action="store_true", help="only the interleaved A/B (no end-to-end runs)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda: the device of all runs (default cpu)")
    ap.add_argument("--use_amp", action="store_true", help="bf16 autocast (policy.use_amp=true) in all runs")
    ap.add_argument("--model", choices=("tiny", "default"), default="tiny",
                    help="tiny: CPU-sized U-Net [32, 64, 128]; default: LeRobot's [512, 1024, 2048], ResNet per camera")
    ap.add_argument("--policy", choices=("diffusion", "act"), default="diffusion",
                    help="the policy of all three runs (act: LeRobot's ACT at its default sizes, chunk 16)")
    ap.add_argument("--json", help="also write the per-run medians as JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dpot-bench-") as d:
        tmp = Path(d)
        src, tgt = _datasets(args, tmp)
        if args.ab_only:
            print(json.dumps(interleaved_ot_cost(tgt, args, args.ab_reps)))
            return
        data_desc = (f"`{src}` / `{tgt}`" if args.source else
                     f"toy datasets (20 source + 5 target episodes, {args.image_size} px)")
        res = {"ot_on": _dpot_run(tmp, "ot_on", src, tgt, args, 0.1, eval_freq=args.steps),
               "ot_off": _dpot_run(tmp, "ot_off", src, tgt, args, 0.0, eval_freq=0),
               "lerobot": _lerobot_run(tmp, tgt, args)}
        res["ab"] = interleaved_ot_cost(tgt, args, args.ab_reps) if args.ab_reps > 0 else None
    text = render(res, args, data_desc)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device_name(args.device), "args": vars(args),
                                               **summaries(res)}, indent=1))
    if args.write:
        write_section(Path(args.write), text)


if __name__ == "__main__":
    main()
