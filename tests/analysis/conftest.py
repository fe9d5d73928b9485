"""Session fixtures: toy datasets, real lerobot-train / dpot train runs (started once, in parallel), and
GENERATED dpot-format runs (see runmaker.py) for OT regimes that need >10k steps."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest
import runmaker  # tests/analysis (pyproject.toml's pytest pythonpath)

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("analysis")


@pytest.fixture(scope="session")
def toy(work):
    """Source and target toy datasets (one 32 px camera, 4 episodes each)."""
    from dpot.data.toy import make_toy_dataset

    roots = {}
    for dom in ("source", "target"):
        roots[dom] = work / f"ds_{dom}"
        make_toy_dataset(roots[dom], dom, episodes=4, image_size=32, cameras=("top",))
    return roots


@pytest.fixture(scope="session")
def real_runs(work, toy):
    """Three real runs, trained in parallel once per session:

    * ``healthy``: plain lerobot-train, diffusion presets (lr 1e-4, cosine) with a 1-step warmup (the preset's 500
      would be longer than the 8-step run: schedule_mismatch), eval every 4 steps;
    * ``planted``: plain lerobot-train with a constant schedule, lr 1e-5 and an eval at every step;
    * ``dpot_label``: ``dpot train`` with a huge ``weight_label`` (1000), which makes the label cost dominate;
    * ``lr_high``: plain lerobot-train with lr 0.3 (1000x the usual top), cosine without warmup.
    """
    runs = {"healthy": work / "lr_healthy", "planted": work / "lr_planted", "lr_high": work / "lr_high",
            "dpot_label": work / "dpot_label"}
    procs = [
        runmaker.lerobot_train(toy["target"], runs["healthy"], "--steps=8", "--eval_steps=4",
                               "--policy.scheduler_warmup_steps=1"),
        runmaker.lerobot_train(toy["target"], runs["planted"], "--steps=8", "--eval_steps=1",
                               "--policy.scheduler_name=constant", "--policy.optimizer_lr=1e-5"),
        runmaker.lerobot_train(toy["target"], runs["lr_high"], "--steps=8", "--eval_steps=4",
                               "--policy.optimizer_lr=0.3", "--policy.scheduler_warmup_steps=0"),
    ]
    cfg = runmaker.dpot_config(toy["source"], toy["target"], runs["dpot_label"], steps=6, eval_freq=3,
                               ot={"features": [{"type": "embed", "use_learned_embed": True, "weight_embed": 1.0},
                                                {"type": "label", "key": "action", "dim_slice": [0, 2],
                                                 "weight_label": 1000.0}]})
    procs.append(runmaker.dpot_train(cfg, work / "dpot_label.json"))
    for name, p in zip(runs, procs):
        rc = p.wait(timeout=600)
        log = Path(str(runs[name]) + ".log") if name != "dpot_label" else work / "dpot_label.json.log"
        assert rc == 0, f"{name} training failed (rc={rc}):\n{log.read_text()[-3000:]}"
    return runs


@pytest.fixture(scope="session")
def gen_base(work, toy):
    """A real resolved dpot config (``dpot.config``) for generated 12k-step runs."""
    cfg = runmaker.dpot_config(toy["source"], toy["target"], work / "unused", steps=12000, log_freq=200,
                               eval_freq=1000)
    return runmaker.resolved_config(cfg, work)


def _gen(work, toy, base, name, ot=None, lr=None, warmup=None, **kw) -> Path:
    from dpot.analysis import cfgkeys

    cfg = copy.deepcopy(base)
    cfg["ot"].update(ot or {})
    if warmup is not None:       # on the key the schedule is read from
        key = cfgkeys.SCHEDULER_WARMUP if isinstance(cfg.get(cfgkeys.SCHEDULER), dict) else cfgkeys.POLICY_WARMUP
        cfg = cfgkeys.set_(cfg, key, warmup)
    for key in ("optimizer.lr", "policy.optimizer_lr"):
        if lr is not None and cfgkeys.get(cfg, key) is not None:
            cfg = cfgkeys.set_(cfg, key, lr)
    cfg["output_dir"] = str(work / "gen" / name)
    return runmaker.generate_dpot_run(work / "gen" / name, toy["source"], toy["target"], cfg, **kw)


def _feats(w_label, w_embed=1.0):
    return [{"type": "embed", "use_learned_embed": True, "weight_embed": w_embed},
            {"type": "label", "key": "action", "dim_slice": [0, 2], "weight_label": w_label}]


@pytest.fixture(scope="session")
def gen_runs(work, toy, gen_base):
    """GENERATED dpot runs (12k steps; OT metrics from the real solver on real toy costs)."""
    g = lambda name, **kw: _gen(work, toy, gen_base, name, **kw)  # noqa: E731
    return {
        "healthy": g("healthy", ot={"features": _feats(0.1)}, align=(1.0, 0.1)),
        "weak": g("weak", ot={"heuristic": False, "features": _feats(0.1)}, align=(1.0, 1.0)),
        # lambda_ot 1: the coupling is strong AND the OT term a share of the loss that can mask BC (ot_strong's
        # min_ot_share; at the default 0.1 this run's term is 0.4 % of the loss)
        "strong": g("strong", ot={"tau_src": 0.1, "tau_tgt": 0.1, "lambda_ot": 1.0, "features": _feats(0.1)},
                    align=(0.05, 0.0)),
        "tiny_tau": g("tiny_tau", ot={"tau_src": 1e-4, "tau_tgt": 1e-4, "features": _feats(0.1)}),
        "huge_label": g("huge_label", ot={"features": _feats(500.0)}),
        "spiky": g("spiky", ot={"features": _feats(0.1)}, align=(1.0, 0.1), grad_spikes=(4000, 4200, 8000)),
        "still_writing": g("still_writing", ot={"features": _feats(0.1)}, align=(1.0, 0.1), partial_tail=True),
        # LR 0.5 (diffusion's usual range is 1e-4..3e-4): the loss stalls at ~0.8, or (lr_high_fine) falls anyway
        "lr_high": g("lr_high", ot={"features": _feats(0.1)}, align=(1.0, 0.1), lr=0.5, stall=True),
        "lr_high_fine": g("lr_high_fine", ot={"features": _feats(0.1)}, align=(1.0, 0.1), lr=0.5),
        # near-balanced tau (phi = 0.98) with a budget of 20 iterations: every solve stops at ot.max_iters;
        # converged: the same problem with the default budget
        "unconverged": g("unconverged", ot={"tau_src": 1.0, "tau_tgt": 1.0, "max_iters": 20, "features": _feats(0.1)},
                         align=(1.0, 0.1)),
        # issue 22's dynamics: a loss that blows up after 60 % of the run, an eval loss that rises while the train
        # loss falls, a warmup longer than the run
        "diverging": g("diverging", ot={"features": _feats(0.1)}, align=(1.0, 0.1), diverge_from=0.6),
        "overfitting": g("overfitting", ot={"features": _feats(0.1)}, align=(1.0, 0.1), overfit=True),
        "long_warmup": g("long_warmup", ot={"features": _feats(0.1)}, align=(1.0, 0.1), warmup=20000),
        "converged": g("converged", ot={"tau_src": 1.0, "tau_tgt": 1.0, "max_iters": 5000, "features": _feats(0.1)},
                       align=(1.0, 0.1)),
    }


@pytest.fixture(scope="session")
def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless Chromium is required for the HTML test: apt-get install -y chromium")

