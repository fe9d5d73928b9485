"""``dpot demo [--output_dir=DIR] [--steps=N] [--data=metaworld|toy] [--policy=diffusion|act] [--batch_size=8]
[--num_workers=2] [--device=cpu] [--report=true|false]`` — the README's main job.

1. Generates (or reuses) a small source and target dataset under ``DIR/data``: MetaWorld
   ``button-press-topdown-v3`` at 64 px, 20 source + 5 target episodes (``dpot.bench.generate``) with the paper's
   observation protocol, ``obs=proprio`` (4-d state: hand xyz + gripper; the goal only in the images), as the
   README's tour and the study use; or the synthetic toy datasets (``--data=toy``, seconds; also the fallback
   when MetaWorld cannot run).
2. Trains DP+OT (CPU-sized diffusion policy: 64 px, one shared ResNet18 without pretrained weights, U-Net
   ``down_dims=[32, 64, 128]``, DDIM 10 steps) for ``--steps`` (default 300) steps in ``DIR/runs/<time>``,
   with offline evaluation on a held-out target episode. ``--policy=act``: ACT + OT instead (:data:`ACT_POLICY`:
   LeRobot's ACT at CPU size, the same OT settings).
3. Writes a report for the run (``dpot report``) when the analysis package is available.
4. Prints where things are, the offline eval loss and the OT solver's iterations per solve
   (``train/ot_sinkhorn_iters``; how many solves stopped at ``ot.max_iters``: ``train/ot_sinkhorn_maxed``).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import warnings
from pathlib import Path

from dpot import launch, rundir
from dpot import metric_names as mn
from dpot.errors import UserError
from dpot.metric_names import EVAL_LOSS
from dpot.metrics_log import read_metrics

TASK = "button-press-topdown-v3"
OBS = "proprio"  # the paper's protocol (docs/results.md): the state holds no goal, the images show it
POLICIES = ("diffusion", "act")
#: ``--policy=act``: LeRobot's ACT at CPU size (ResNet18 without pretrained weights, a 2+1-layer transformer of
#: width 256, chunks of 16 of which 8 are executed); LeRobot's ACT preset (AdamW, a backbone param group) at
#: 1e-4, the top of ACT's usual range (dpot.analysis rules.toml [lr_range]), as the demo runs only 300 steps
ACT_POLICY = {"type": "act", "pretrained_backbone_weights": None, "dim_model": 256, "n_heads": 8,
              "dim_feedforward": 1024, "n_encoder_layers": 2, "n_decoder_layers": 1, "n_vae_encoder_layers": 2,
              "chunk_size": 16, "n_action_steps": 8, "optimizer_lr": 1e-4, "optimizer_lr_backbone": 1e-4}


def _parse(argv: list[str]) -> dict:
    opts = {"output_dir": "outputs/demo", "steps": "300", "data": "metaworld", "device": "cpu",
            "batch_size": "8", "num_workers": "2", "policy": "diffusion",
            "report": "true"}
    for arg in argv:
        if arg in ("-h", "--help"):
            opts["help"] = True
            continue
        if not arg.startswith("--") or "=" not in arg:
            raise UserError(f"{arg}: demo options look like --output_dir=DIR, --steps=N, --data=metaworld|toy")
        key, value = arg[2:].split("=", 1)
        if key not in opts:
            raise UserError(f"--{key}: unknown demo option; use --output_dir, --steps, --data, --policy, "
                            "--device, --batch_size, --num_workers or --report")
        opts[key] = value
    if opts["report"] not in ("true", "false"):
        raise UserError(f"--report: must be true or false, got {opts['report']!r}")
    if opts["data"] not in ("metaworld", "toy"):
        raise UserError(f"--data: must be metaworld or toy, got {opts['data']!r}")
    if opts["policy"] not in POLICIES:
        raise UserError(f"--policy: must be one of {', '.join(POLICIES)}, got {opts['policy']!r}")
    for k in ("steps", "batch_size", "num_workers"):
        if not opts[k].isdigit() or (k != "num_workers" and int(opts[k]) < 1):
            raise UserError(f"--{k}: must be a positive integer, got {opts[k]!r}")
    return opts


def make_demo_data(data_dir: Path, kind: str) -> tuple[dict, dict, str]:
    """Create or reuse the demo datasets. Returns (source DatasetConfig dict, target dict, kind actually used)."""
    if kind == "metaworld":
        try:
            from dpot.bench.generate import generate_dataset

            for domain, n in (("source", 20), ("target", 5)):
                out = data_dir / f"{TASK}_{domain}_{OBS}"
                summary = generate_dataset(TASK, domain, episodes=n, out=out, image_size=64, seed=0, progress=True,
                                           obs=OBS)
                print(f"demo: {domain} data {out} ({summary.get('episodes')} episodes, "
                      f"{'reused' if summary.get('reused') else str(summary.get('seconds')) + ' s'})", flush=True)
            return tuple({"repo_id": f"local/{TASK}_{domain}", "root": str(data_dir / f"{TASK}_{domain}_{OBS}")}
                         for domain in ("source", "target")) + ("metaworld",)
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - no simulator here: keep the demo useful with toy data
            warnings.warn(f"MetaWorld data generation failed ({type(err).__name__}: {err}); using toy data",
                          stacklevel=2)
    from dpot.data.toy import make_toy_dataset

    roots = {}
    for domain, n in (("source", 20), ("target", 5)):
        root = data_dir / f"toy_{domain}"
        if not (root / "meta" / "info.json").is_file():
            make_toy_dataset(root, domain, episodes=n, image_size=64, seed=0)
        roots[domain] = {"repo_id": f"local/toy_{domain}", "root": str(root)}
    return roots["source"], roots["target"], "toy"


def demo_config(source: dict, target: dict, run_dir: Path, *, steps: int, batch_size: int, num_workers: int,
                device: str, policy: str = "diffusion") -> dict:
    """The demo's train config: :func:`dpot.bench.presets.train_config`; ``policy="act"`` swaps in
    :data:`ACT_POLICY` (same data, OT, steps and evaluation)."""
    from dpot.bench.presets import train_config

    cfg = train_config(source, target, run_dir, steps=steps, batch_size=batch_size, num_workers=num_workers,
                       device=device)
    if policy == "act":
        cfg["policy"] = {**ACT_POLICY, "device": device, "push_to_hub": False}
        cfg["job_name"] = "dpot_demo_act"
    return cfg


def solver_line(rows: list[dict], max_iters: int) -> str:
    """One line on the OT solver from the run's metrics: mean iterations per solve over the logged windows and
    the solves that stopped at ``max_iters`` (summed over the windows)."""
    iters_key, maxed_key = mn.train(mn.OT_SINKHORN_ITERS), mn.train(mn.OT_SINKHORN_MAXED)
    iters = [r[iters_key] for r in rows if iters_key in r]
    if not iters:
        return "demo: OT solver  not run (no OT solve logged)"
    capped = sum(r.get(maxed_key, 0.0) for r in rows)
    return (f"demo: OT solver  {sum(iters) / len(iters):.0f} iterations per solve (mean; ot.max_iters={max_iters}), "
            f"{capped:.0f} solve(s) stopped at the cap")


def main(argv: list[str] | None = None, command: str = "demo") -> int:
    """Run the demo; returns 0. Bad options raise UserError (exit 2)."""
    from dpot.config import load_train_config
    from dpot.train.cli import configure_logging
    from dpot.train.loop import train

    launch.set_env_defaults()  # headless rendering; must be set before mujoco is first imported
    opts = _parse(list(sys.argv[1:] if argv is None else argv))
    if opts.get("help"):
        print(__doc__)
        return 0
    configure_logging()  # warnings to stderr, the trainer's progress lines to stdout (as `dpot train`)
    t0 = time.perf_counter()
    out = Path(opts["output_dir"])
    source, target, kind = make_demo_data(out / "data", opts["data"])
    t_data = time.perf_counter() - t0
    run_dir = out / "runs" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    cfg_dict = demo_config(source, target, run_dir, steps=int(opts["steps"]), batch_size=int(opts["batch_size"]),
                           num_workers=int(opts["num_workers"]), device=opts["device"], policy=opts["policy"])
    cfg_path = out / "demo_config.json"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(json.dumps(cfg_dict, indent=2))
    cfg = load_train_config(cfg_path)
    t1 = time.perf_counter()
    train(cfg)
    t_train = time.perf_counter() - t1
    report = None
    try:
        if opts["report"] == "false":
            raise ImportError
        from dpot.analysis.cli import main as report_main

        if report_main([str(run_dir)], command="report") == 0:
            report = run_dir / rundir.REPORT_MD
    except ImportError:
        pass
    except Exception as err:  # noqa: BLE001 - the report is a bonus; the run is done
        warnings.warn(f"report failed: {type(err).__name__}: {err}", stacklevel=2)
    rows = read_metrics(run_dir)
    evals = [r[EVAL_LOSS] for r in rows if EVAL_LOSS in r]
    print(f"demo: data={kind} ({t_data:.0f} s), training {cfg.steps} steps in {t_train:.0f} s, "
          f"total {time.perf_counter() - t0:.0f} s")
    if evals:
        print(f"demo: {EVAL_LOSS} {evals[0]:.4f} -> {evals[-1]:.4f}")
    print(solver_line(rows, cfg.ot.max_iters))
    print(f"demo: metrics    {rundir.metrics_path(run_dir)}")
    model = rundir.last_link(run_dir) / rundir.MODEL_DIR
    if model.is_dir():
        print(f"demo: checkpoint {model}")
    if report is not None and report.exists():
        print(f"demo: report     {report}")
    return 0
