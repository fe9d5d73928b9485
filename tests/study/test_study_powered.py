"""The powered design's arms at a micro budget (``micro-powered``): dp-ot-official trains and evaluates on the new
layouts (eval_seed 200000) with per-cell episode counts, and record every episode's layout in
its region; the new layouts are disjoint from every layout used before; ``--plan`` estimates the CPU time left."""

from __future__ import annotations

import json
import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from dpot.bench.env import REGION_SPLITS, region_seed
from dpot.bench.presets import DATA_SEEDS, EVAL_SEED, POWERED_METHODS, get_preset
from dpot.bench.study import run_study
from dpot.bench.study.plan import Job, plan_jobs
from dpot.bench.study.runner import make_study
from dpot.cli import main as dpot_main


@pytest.mark.slow
def test_micro_powered_arms_record_layouts_in_their_regions(tmp_path):
    root = tmp_path / "study"
    res = run_study("micro-powered", root=root, only="dp-ot-official", seeds=1, progress=False)  # 1 of its 7
    assert res["jobs_done"] == ["dp-ot-official-seed0"]
    assert res["eval_seed"] == 200_000 and res["source_eval_episodes"] == 1
    split = REGION_SPLITS["button-press-topdown-v3"]
    for job in res["jobs_done"]:
        for cell, region, n in (("target_id", "id", 2), ("target_ood", "ood", 2), ("source", "all", 1)):
            ev = json.loads((root / "evals" / f"{job}-{cell}.json").read_text())
            assert ev["seed"] == 200_000 and ev["episodes"] == n == len(ev["episode_layouts"])
            for lay in ev["episode_layouts"]:
                in_id = lay["rand_vec"][split.index] < split.threshold
                assert lay["region"] == ("id" if in_id else "ood")
                assert region == "all" or lay["region"] == region
    official = json.loads((root / "runs" / "dp-ot-official-seed0" / "ot_terms.json").read_text())["terms"]
    assert official == {"obs_embed": "embed", "state_lbl": "label"}
    rows = [json.loads(x) for x in (root / "runs" / "dp-ot-official-seed0" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "train/loss" in r]      # the training rows (the domain probe logs rows of its own)
    assert all(r["train/ot_pi_sum"] > 0 for r in rows) and "train/ot_cost/state_lbl" in rows[-1]


def test_exposure_arm_sees_16_target_items_per_step_at_the_powered_budget(tmp_path):
    study = make_study("cpu-idood-powered", root=tmp_path / "s", progress=False)
    data = {"source": {"repo_id": "local/s", "root": "S"}, "target": {"repo_id": "local/t", "root": "T"}}
    exposure = study.job_config(Job(POWERED_METHODS["target-only-16"], 0), data)
    naive = study.job_config(Job(POWERED_METHODS["naive-cotrain"], 0), data)
    assert exposure["batch_size"] == 16 and exposure["dataset"] == exposure["source_dataset"] == data["target"]
    n_tgt_naive = naive["batch_size"] - round(naive["ot"]["batch_ratio"] * naive["batch_size"])
    assert n_tgt_naive == 16 and naive["dataset"] == data["target"] and naive["source_dataset"] == data["source"]


def test_plan_orders_the_minimum_design_first_and_caps_seeds():
    jobs = [j.id for j in plan_jobs(list(POWERED_METHODS.values()), 7)]
    first_late = jobs.index("naive-cotrain-seed5")
    assert {"target-only-16-seed2", "dp-ot-paper-seed2", "dp-ot-official-seed4"} <= set(jobs[:first_late])
    assert len(jobs) == 3 * 7 + 2 * 3 and jobs[:3] == ["naive-cotrain-seed0", "dp-ot-official-seed0",
                                                       "dp-ot-seed-seed0"]
    assert len(plan_jobs(list(POWERED_METHODS.values()), 7, cap=2)) == 5 * 2


def _layout_seeds(first: int, n: int, region: str, task: str) -> set[int]:
    """The MetaWorld seeds behind ``n`` episodes from ``first`` in ``region`` (every redraw attempt counted)."""
    from dpot.bench.env import DomainEnv

    out = set()
    with DomainEnv(task, "source", image_size=16, cameras=("corner4",), obs="proprio") as env:
        for seed in range(first, first + n):
            env.reset(seed, render=False, region=region)
            attempt = 0
            while region_seed(seed, attempt) != env.last_seed:
                attempt += 1
            out |= {region_seed(seed, a) for a in range(attempt + 1)}
    return out


@pytest.mark.slow
def test_new_evaluation_layouts_are_disjoint_from_every_earlier_one():
    p = get_preset("cpu-idood-powered")
    task = p.tasks[0]
    new = set().union(*(_layout_seeds(p.eval_seed, p.eval_episodes, r, task) for r in ("id", "ood")))
    new |= _layout_seeds(p.eval_seed, p.cell_episodes("source"), "all", task)
    old = set().union(*(_layout_seeds(EVAL_SEED, 50, r, task) for r in ("id", "ood", "all")))
    data = set().union(*(_layout_seeds(DATA_SEEDS[role], 2 * n + 10, "all", task)
                         for role, n in (("source", 100), ("target", 10))))
    assert new and not new & old and not new & data


def test_plan_prints_a_cpu_time_estimate(tmp_path, capsys):
    assert dpot_main(["bench", "study", "--preset", "cpu-idood-powered", "--plan", "--dir", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("naive-cotrain-seed0") and "todo" in out[0] and "core-min left" in out[0]
    assert out[-1].startswith("27 of 27 jobs left") and "core-hours" in out[-1]
