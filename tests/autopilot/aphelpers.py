"""Helpers for the autopilot tests: a CPU-sized base config and `dpot autopilot` runners."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dpotproc  # tests/
from dpot.rundir import LINEAGE_FILE

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": os.pathsep.join([str(REPO / "src"), *[p for p in os.environ.get("PYTHONPATH", "").split(
           os.pathsep) if p]])}
FLAT_OPT = {"type": "adamw", "lr": 1e-6, "weight_decay": 1e-4, "betas": [0.9, 0.999], "eps": 1e-8,
            "grad_clip_norm": 10.0}
CONSTANT = {"type": "diffuser", "name": "constant", "num_warmup_steps": 0}


def base_config(toy: dict, path: Path, **over) -> Path:
    """A CPU-sized dpot train config with a flat, tiny LR (1e-6, constant schedule), 6 steps, eval every 3."""
    from train_helpers import tiny_config  # tests/train (pyproject.toml's pytest pythonpath)

    cfg = tiny_config(toy, steps=6, eval_freq=3, use_policy_training_preset=False, optimizer=dict(FLAT_OPT),
                      scheduler=dict(CONSTANT))
    cfg.pop("output_dir", None)
    cfg.update(over)
    path.write_text(json.dumps(cfg, indent=1))
    return path


def autopilot_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "dpot", "autopilot", *args]


def run_autopilot(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``dpot autopilot ARGS`` to its end."""
    return dpotproc.run(autopilot_cmd(*args), capture_output=True, text=True, env=ENV, timeout=timeout)


def start_autopilot(*args: str, log: Path) -> subprocess.Popen:
    """Start ``dpot autopilot ARGS`` in the background (own session; output to ``log``)."""
    fh = open(log, "w")  # noqa: SIM115 - closed with the process by the caller's wait
    return dpotproc.Popen(autopilot_cmd(*args), stdout=fh, stderr=subprocess.STDOUT, env=ENV,
                          start_new_session=True)


def lineage(out: Path) -> dict:
    return json.loads((out / LINEAGE_FILE).read_text())


def node(doc: dict, name: str) -> dict:
    return next(n for n in doc["nodes"] if n["name"] == name)


def launches(out: Path, name: str) -> list[str]:
    """The train commands the autopilot started for run ``name`` (one '# autopilot' header per launch)."""
    path = out / "logs" / f"{name}.log"
    if not path.exists():
        return []
    return [x for x in path.read_text().splitlines() if x.startswith("# autopilot ")]
