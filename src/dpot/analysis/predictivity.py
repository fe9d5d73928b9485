"""How well the offline eval loss predicts closed-loop success, as measured on dpot's MetaWorld benchmark: the line
``dpot report`` prints beside the eval curve.

Users know that a held-out loss often does not predict a policy's success; this says how much it did here.
``predictivity.json`` (beside this module) is written by ``python -m benchmarks.objective_signals predictivity``
from the committed raw files (``docs/results/autopilot/objective-signals/`` and the studies' closed-loop
evaluations; tests/analysis/test_predictivity.py recomputes it): per task, Spearman's rho of each reported signal
(read as "higher = better policy") with target-ID and target-OOD success over every evaluated checkpoint, its 95 %
bootstrap interval over runs, and which arms the runs come from. A dpot (or fork) run's eval key is dpot's offline
L1 of a sampled action chunk (``offline_l1``); a plain lerobot-train run's is its held-out diffusion loss, read
against the closest measured signal (``denoise_mse``: the diffusion loss of held-out frames at fixed timesteps).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

__all__ = ["PREDICTIVITY_FILE", "load_predictivity", "predictivity_line"]

PREDICTIVITY_FILE = Path(__file__).with_name("predictivity.json")
TASK_NAMES = {"button-press-topdown-v3": "button-press", "drawer-open-v3": "drawer-open"}
CONFIGS_FOR_RANKING = 3     # fewer arms than this: the file says nothing about ranking configs at one budget


@cache
def load_predictivity() -> dict | None:
    """The measured predictivity (``predictivity.json``), None when the package has none."""
    return json.loads(PREDICTIVITY_FILE.read_text()) if PREDICTIVITY_FILE.is_file() else None


def _rho(v: dict) -> str:
    lo, hi = v["ci95"]
    return f"{v['rho']:+.2f}" + ("" if lo is None or hi is None else f" [{lo:+.2f}, {hi:+.2f}]")


def predictivity_line(config: dict | None, lang: str = "en", data: dict | None = None) -> str | None:
    """One Markdown bullet on how well the run's offline eval loss predicted success on the benchmark (None without a
    measurement). ``config``: the run's config (a dpot or fork config has ``ot`` / ``source_dataset``; anything
    else is read as plain lerobot-train); ``data``: the measurement (default :func:`load_predictivity`)."""
    data = data if data is not None else load_predictivity()
    if not data or not data.get("tasks"):
        return None
    cfg = config or {}
    signal = "offline_l1" if ("ot" in cfg or "source_dataset" in cfg) else "denoise_mse"
    parts, ranked = [], False
    for task, v in data["tasks"].items():
        cells = v["signals"][signal]
        text = (f"{TASK_NAMES.get(task, task)}: ID {_rho(cells['id']['all_steps'])}, OOD "
                f"{_rho(cells['ood']['all_steps'])} ({v['runs']} runs, {cells['id']['all_steps']['n_points']} "
                "checkpoints")
        if len(v["arms"]) >= CONFIGS_FOR_RANKING:      # runs of several configs: their ranking at one budget
            ranked = True
            k = len(v["arms"])
            final = (f"{k} 个配置的运行在最终检查点" if lang == "zh"
                     else f"across its runs of {k} configs at the final checkpoint")
            text += f"; {final}: ID {_rho(cells['id']['final_only'])}, OOD {_rho(cells['ood']['final_only'])}"
        parts.append(text + ")")
    if lang == "zh":
        what = "离线评估损失" if signal == "offline_l1" else "留出集扩散损失（最接近的已测信号）"
        tail = ("。跨检查点的 rho 主要反映训练进度；给运行排序请看最终检查点的 rho" if ranked else
                "；这主要反映训练进度，它能否在同一步数下给不同配置排序尚未测量。请把更低的评估损失读作训练进展，而不是更高的成功率")
        return (f"- 评估损失能否预测成功率：在 dpot 的 MetaWorld 基准上，更低的{what}与更高闭环成功率的一致程度"
                f"（跨检查点的 Spearman rho，+1 = 顺序相同；95% 区间；docs/benchmarks.md）— " + "；".join(parts) + tail)
    what = ("offline eval loss" if signal == "offline_l1"
            else "held-out diffusion loss (the closest measured signal to this run's eval loss)")
    tail = ("; over checkpoints rho mostly tracks training progress: to rank runs, read the final-checkpoint rho"
            if ranked else "; over checkpoints this mostly tracks training progress, and how well it ranks "
            "different configs at one budget is not measured yet: read a lower eval loss as progress, not as more "
            "success")
    return (f"- Does the eval loss predict success? On dpot's MetaWorld benchmark, how well a lower {what} went with "
            "higher closed-loop success over checkpoints (Spearman rho, +1 = the same order; 95 % intervals; "
            "docs/benchmarks.md) — " + "; ".join(parts) + tail)
