"""The study's plan order, its train configs (valid for the trainer, honest baselines) and its pooled results."""

from __future__ import annotations

import json

import pytest

from dpot.bench.evaluate import newcombe_interval, wilson_interval
from dpot.bench.presets import IDOOD_METHODS, METHODS, PAPER_OT, PRESETS, SEED_OT, parse_methods
from dpot.bench.study import Job, Study, aggregate, plan_jobs, render_markdown
from dpot.bench.study.layout import eval_file, parse_eval_file
from dpot.config import load_train_config
from dpot.errors import UserError

DATA = {"source": {"repo_id": "local/s", "root": "/data/s"}, "target": {"repo_id": "local/t", "root": "/data/t"},
        "pairs": {"path": "/data/pairs.json"}}


def test_plan_runs_core_methods_for_all_seeds_first():
    ids = [j.id for j in plan_jobs(parse_methods(None), 3)]
    assert ids[:9] == [f"{m}-seed{s}" for s in range(3) for m in ("target-only", "naive-cotrain", "dp-ot")]
    assert ids[9:11] == ["source-only-seed0", "dp-ot-noheur-seed0"]
    assert len(ids) == 3 * len(METHODS) and len(set(ids)) == len(ids)
    only = [j.id for j in plan_jobs(parse_methods("dp-ot,target-only"), 2)]
    assert only == ["target-only-seed0", "dp-ot-seed0", "target-only-seed1", "dp-ot-seed1"]


def test_idood_plan_runs_calibration_then_core_then_the_rest():
    ids = [j.id for j in plan_jobs(parse_methods(None, IDOOD_METHODS), 3)]
    assert ids[:2] == ["target-only-seed0", "source-only-seed0"]                       # calibration
    core = ("target-only", "naive-cotrain", "dp-ot-paper")
    assert ids[2:10] == [f"{m}-seed{s}" for s in range(3) for m in core if (m, s) != ("target-only", 0)]
    assert ids[10:13] == [f"dp-ot-seed-seed{s}" for s in range(3)]
    assert ids[13:15] == ["mmd-seed0", "dp-ot-paired-seed0"]                            # one seed of each first
    assert len(ids) == 3 * len(IDOOD_METHODS) and len(set(ids)) == len(ids)
    only = [j.id for j in plan_jobs(parse_methods("mmd,target-only", IDOOD_METHODS), 1)]
    assert only == ["target-only-seed0", "mmd-seed0"]
    with pytest.raises(UserError, match="unknown method 'dp-ot'.*dp-ot-seed"):
        parse_methods("dp-ot", IDOOD_METHODS)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_method_gives_a_valid_train_config(preset, tmp_path):
    p = PRESETS[preset]
    study = Study(tmp_path, p, p.tasks[0])
    for method in p.method_table.values():
        cfg = study.job_config(Job(method, 1), DATA)
        path = tmp_path / f"{method.name}.json"
        path.write_text(json.dumps(cfg))
        loaded = load_train_config(path)           # the trainer's own validation
        assert loaded.steps == p.steps and loaded.batch_size == (method.batch_size or p.batch_size) and loaded.seed == 1
        assert loaded.eval.val_fraction == 0 and loaded.eval_freq == 0
        assert loaded.save_freq == p.save_every
        if p.policy.get("type", "diffusion") == "diffusion":
            assert list(loaded.policy.down_dims) == p.policy["down_dims"]
        else:  # another policy replaces the Diffusion section: only its own keys, nothing downloaded
            assert loaded.policy.type == p.policy["type"] and loaded.policy.pretrained_backbone_weights is None
            assert {k: getattr(loaded.policy, k) for k in p.policy if k != "type"} == \
                {k: v for k, v in p.policy.items() if k != "type"}
            assert not {"down_dims", "scheduler_warmup_steps"} & set(cfg["policy"])
        assert cfg["dataset"] == DATA[method.target] and cfg["source_dataset"] == DATA[method.source]
        if method.name == "dp-ot-faithful":     # the study's pair file, the diagonal prior on a pair batch
            assert study.needs_pairs()
            assert (loaded.ot.pair_info_path, loaded.ot.resolved_prior(), loaded.ot.pair_batch_size) == \
                (DATA["pairs"]["path"], "diagonal", 16)
        if p.methods == "objective":          # the arm's own train settings land in the config the trainer loads
            lr = loaded.optimizer.lr if loaded.optimizer is not None and not loaded.use_policy_training_preset \
                else loaded.policy.optimizer_lr
            assert lr == pytest.approx({"lr-1e-6": 1e-6, "lr-1e-5": 1e-5, "lr-1e-4": 1e-4, "lr-1e-3": 1e-3,
                                        "lr-3e-3": 3e-3, "lr-3e-2": 3e-2}.get(method.name, 3e-4))
            assert (loaded.policy.scheduler_name == "constant") == (method.name == "constant-3e-4")
            assert (loaded.policy.scheduler_warmup_steps == 2000) == (method.name == "warmup-2000")
            assert (loaded.optimizer is not None and loaded.optimizer.type == "adamw") == (method.name == "adamw-3e-4")
            assert loaded.ot.lambda_ot == {"faithful-0.1": 0.1, "faithful-1.0": 1.0}.get(method.name, 0.0)
    if p.methods != "v1":
        return
    to = study.job_config(Job(METHODS["target-only"], 0), DATA)
    assert to["dataset"] == to["source_dataset"] == DATA["target"]      # every batch item is a target frame
    assert to["ot"]["lambda_ot"] == 0 and to["ot"]["heuristic"] is False
    ot = study.job_config(Job(METHODS["dp-ot"], 0), DATA)["ot"]
    assert {k: ot[k] for k in SEED_OT} == SEED_OT
    got = (ot["lambda_ot"], ot["reg"], ot["tau_src"], ot["batch_ratio"], ot["window_size"])
    assert got == (0.1, 0.02, 0.01, 0.5, 20)
    naive = study.job_config(Job(METHODS["naive-cotrain"], 0), DATA)["ot"]
    assert naive == {**ot, "lambda_ot": 0.0}                             # DP+OT minus the OT loss
    sweep = {study.job_config(Job(m, 0), DATA)["ot"]["lambda_ot"] for m in METHODS.values()
             if m.source != m.target and m.ot.get("heuristic", True) and set(m.ot) <= {"lambda_ot"}}
    assert sweep == {0.0, 0.05, 0.1, 0.2}


def test_idood_methods_express_the_paper_protocol(tmp_path):
    p = PRESETS["cpu-idood"]
    assert (p.obs, p.shift, p.target_region, p.source_region) == ("proprio", "target", "id", "all")
    assert (p.steps, p.batch_size, p.image_size, p.cameras) == (1500, 32, 64, ("corner4", "gripperPOV"))
    assert (p.source_episodes, p.target_episodes, p.eval_episodes) == (100, 10, 50)
    assert p.eval_domains == ("target_id", "target_ood", "source") and p.policy["n_obs_steps"] == 1
    study = Study(tmp_path, p, p.tasks[0])
    ot = {name: study.job_config(Job(m, 0), DATA)["ot"] for name, m in IDOOD_METHODS.items()}
    paper = ot["dp-ot-paper"]
    assert paper == PAPER_OT
    assert (paper["reg"], paper["tau_src"], paper["tau_tgt"], paper["lambda_ot"]) == (0.1, 0.05, 0.05, 0.1)
    assert [f.get("weight_embed", f.get("weight_label")) for f in paper["features"]] == [0.01, 0.05]
    assert ot["naive-cotrain"] == {**paper, "lambda_ot": 0.0}                        # same mix, no OT term
    assert ot["dp-ot-seed"] == SEED_OT
    assert ot["mmd"] == {**paper, "method": "mmd", "heuristic": False}
    assert ot["dp-ot-paired"] == {**paper, "paired_region": True}
    assert ot["target-only"]["lambda_ot"] == ot["source-only"]["lambda_ot"] == 0.0
    cfg = study.job_config(Job(IDOOD_METHODS["target-only"], 0), DATA)
    assert cfg["dataset"] == cfg["source_dataset"] == DATA["target"] and cfg["batch_size"] == 32
    assert [study.cell(c) for c in p.eval_domains] == [("target", "id"), ("target", "ood"), ("source", "all")]


def test_a_study_recorded_before_the_idood_fields_still_opens(tmp_path):
    p = PRESETS["cpu-small"]
    record = p.to_dict()
    for key in ("obs", "shift", "source_region", "target_region", "curve_domains", "methods"):
        record.pop(key)
    (tmp_path / "study.json").write_text(json.dumps({"preset": record, "task": p.tasks[0]}))
    Study(tmp_path, p, p.tasks[0]).open()                                  # same settings: fine
    import dataclasses

    with pytest.raises(UserError, match="other settings"):
        Study(tmp_path, dataclasses.replace(p, obs="proprio"), p.tasks[0]).open()


def test_idood_results_have_the_issue_shape():
    cells = {"target_id": 30, "target_ood": 5, "source": 40}
    markers = []
    for seed in (0, 1):
        ev = {c: {"successes": n + seed, "episodes": 50, "success_rate": (n + seed) / 50} for c, n in cells.items()}
        curves = {"target_id": [{"step": 500, "successes": 3, "episodes": 20}],
                  "target_ood": [{"step": 500, "successes": 1, "episodes": 20}]}
        markers.append({"job": f"dp-ot-paper-seed{seed}", "method": "dp-ot-paper", "seed": seed, "evals": ev,
                        "curve": curves["target_id"], "curve_cell": "target_id", "curves": curves, "ot": {}})
    res = aggregate(markers, list(IDOOD_METHODS))
    d = res["dp-ot-paper"]["domains"]
    assert set(d) == set(cells)
    assert (d["target_ood"]["successes"], d["target_ood"]["episodes"]) == (11, 100)
    assert d["target_ood"]["per_seed"] == [{"seed": 0, "successes": 5, "episodes": 50, "success_rate": 0.1},
                                           {"seed": 1, "successes": 6, "episodes": 50, "success_rate": 0.12}]
    assert res["dp-ot-paper"]["curve"]["500"]["successes"] == 6
    assert res["dp-ot-paper"]["curves"]["target_ood"]["500"]["episodes"] == 40
    page = render_markdown({"preset": "cpu-idood", "task": "t", "steps": 1500, "eval_episodes": 50,
                            "curve_episodes": 20, "versions": {}, "methods": res, "curve_cell": "target_id",
                            "eval_cells": {c: {"domain": "x", "region": "y"} for c in cells}})
    assert "| method | seeds | target_id success | per seed | target_ood success |" in page
    assert "| dp-ot-paper | 2 | 61/100 = 61% [" in page and "- dp-ot-paper (target_ood): 500: 5% (2/40)" in page


def _marker(method, seed, tgt, src, curve):
    ev = {"target": {"successes": tgt, "episodes": 50, "success_rate": tgt / 50},
          "source": {"successes": src, "episodes": 50, "success_rate": src / 50}}
    return {"job": f"{method}-seed{seed}", "method": method, "seed": seed, "evals": ev,
            "curve": [{"step": 500, "successes": curve, "episodes": 20},
                      {"step": 1500, "successes": tgt, "episodes": 50}],
            "ot": {"train/ot_pi_sum": 0.5 + seed}}


def test_results_pool_episodes_over_seeds():
    markers = [_marker("dp-ot", 1, 20, 30, 3), _marker("target-only", 0, 10, 0, 1), _marker("dp-ot", 0, 5, 40, 2)]
    res = aggregate(markers)
    assert list(res) == ["target-only", "dp-ot"]                       # METHODS order, not file order
    d = res["dp-ot"]["domains"]["target"]
    assert (d["successes"], d["episodes"]) == (25, 100) and d["success_rate"] == 0.25
    assert d["ci95"] == list(wilson_interval(25, 100))
    assert [s["seed"] for s in d["per_seed"]] == [0, 1]
    assert d["seed_mean"] == pytest.approx(0.25) and d["seed_std"] == pytest.approx(0.2121320, rel=1e-5)
    assert res["dp-ot"]["curve"]["500"]["successes"] == 5 and res["dp-ot"]["curve"]["500"]["episodes"] == 40
    assert res["target-only"]["domains"]["target"]["seed_std"] is None
    assert res["dp-ot"]["runs"]["dp-ot-seed1"]["train/ot_pi_sum"] == 1.5
    page = render_markdown({"preset": "cpu-small", "task": "t", "steps": 1500, "eval_episodes": 50,
                            "curve_episodes": 20, "versions": {"torch": "x"}, "methods": res})
    assert "| dp-ot | 2 | 25/100 = 25% [" in page and "5/50, 20/50 (25 ± 21%)" in page
    # differences vs the reference: pooled 25/100 - 10/50 = +5 points; one common seed (0): 5/50 - 10/50 = -10
    lo, hi = newcombe_interval(25, 100, 10, 50)
    row = f"| dp-ot − target-only | {5:+d} [{100 * lo:+.0f}, {100 * hi:+.0f}] | -10 |"
    assert row in page, page


def test_newcombe_interval_matches_the_published_example():
    """Newcombe (1998), Stat. Med. 17:873, table II example (a): 56/70 - 48/80 = 0.2000, method 10 interval
    0.0524 to 0.3339."""
    lo, hi = newcombe_interval(56, 70, 48, 80)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)
    lo, hi = newcombe_interval(10, 50, 10, 50)                          # equal rates: symmetric around 0
    assert lo == pytest.approx(-hi) and lo < 0 < hi


def test_a_study_dir_is_not_continued_with_other_settings(tmp_path):
    p = PRESETS["micro"]
    Study(tmp_path, p, p.tasks[0]).open()
    Study(tmp_path, p, p.tasks[0]).open()                               # same settings: fine
    with pytest.raises(UserError, match="other settings"):
        Study(tmp_path, PRESETS["cpu-small"], p.tasks[0]).open()


def test_file_lock_is_exclusive_and_released_when_its_holder_dies(tmp_path):
    import subprocess
    import sys

    from dpot.bench.study import file_lock

    path = tmp_path / "claims" / "job.lock"
    with file_lock(path, blocking=False) as outer:
        assert outer
        with file_lock(path, blocking=False) as inner:                  # a second open file: refused
            assert not inner
    with file_lock(path, blocking=False) as again:                      # released at the end of the block
        assert again
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(path)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with file_lock(path, blocking=False) as mine:
        assert not mine
    holder.kill()
    holder.wait()
    with file_lock(path, blocking=False) as mine:                      # the kernel dropped the dead holder's lock
        assert mine


def test_two_sittings_share_a_study_dir_without_running_a_job_twice(tmp_path, monkeypatch):
    """A sitting skips the jobs another sitting holds a claim on and runs the next free ones (max_jobs counts
    the jobs it ran); results are collected from every finished job."""
    from dpot.bench.study import file_lock

    p = PRESETS["micro"]
    study = Study(tmp_path, p, p.tasks[0], progress=False)
    jobs = plan_jobs(parse_methods("target-only,dp-ot"), 2)
    ran = []

    def fake_run_job(job, data):
        ran.append(job.id)
        marker = {**_marker(job.method.name, job.seed, 1, 2, 1), "train": "fresh"}
        study.done_path(job).parent.mkdir(parents=True, exist_ok=True)
        study.done_path(job).write_text(json.dumps(marker))
        return marker

    monkeypatch.setattr(study, "datasets", lambda: DATA)
    monkeypatch.setattr(study, "run_job", fake_run_job)
    monkeypatch.setattr(study, "is_done", lambda job: study.done_path(job).is_file())
    with file_lock(tmp_path / "claims" / f"{jobs[0].id}.lock", blocking=False) as held:
        assert held
        res = study.run(jobs, max_jobs=2)                               # jobs[0] belongs to the other sitting
    assert ran == [jobs[1].id, jobs[2].id]
    assert res["jobs_done"] == sorted(ran)
    study.run(jobs)                                                      # later: only what is left
    assert ran == [jobs[1].id, jobs[2].id, jobs[0].id, jobs[3].id]


def test_ot_metrics_average_the_late_part_of_the_run(tmp_path):
    from dpot.bench.study import ot_metrics

    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": 10 * (i + 1), "train/ot_pi_sum": float(i), "train/ot_cost/embed_corner4": 2.0 * i,
             "train/ot_cost_mean/img_top": 1.0, "train/ot_embed_spread/top": 3.0, "train/lr": 1e-4} for i in range(40)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = ot_metrics(run)
    assert m["train/ot_pi_sum"] == pytest.approx((36 + 37 + 38 + 39) / 4)      # last 10 % of 40 points
    # a run from before the fork's metric meanings (ot_cost_mean/ logged) is read under today's names
    assert m["train/ot_cost_plan/embed_corner4"] == pytest.approx(2 * 37.5)
    assert m["first/train/ot_pi_sum"] == 0.0 and m["last_step"] == 400
    assert m["train/ot_cost/img_top"] == 1.0 and m["train/ot_embed_spread/top"] == 3.0
    assert "train/lr" not in m
    assert "error" in ot_metrics(tmp_path / "missing")


def test_a_cpu_study_without_omp_num_threads_on_a_small_machine_is_warned():
    from dpot.bench.study.cli import thread_advice

    assert "OMP_NUM_THREADS=1" in thread_advice({}, 2, "cpu")
    assert thread_advice({"OMP_NUM_THREADS": "1"}, 2, "cpu") is None
    assert thread_advice({}, 16, "cpu") is None and thread_advice({}, 2, "cuda") is None


@pytest.mark.parametrize("job,cell,step", [("target-only-seed0", "target", None),
                                           ("target-only-seed0", "target_id", 500),
                                           ("naive-cotrain-seed3", "target_ood", None),
                                           ("dp-ot-seed1", "source", 1500)])
def test_eval_file_names_parse_back(job, cell, step):
    """The evaluation file names the runner writes (StudyDir.eval_path, the curve points) and the name the readers
    parse (objective_signals, scripts/v4_results.py) are one pair; a cell's prefix never swallows a longer cell."""
    name = eval_file(job, cell, step)
    assert parse_eval_file(name) == (job, cell, step)
    assert parse_eval_file("study.json") is None and parse_eval_file(f"{job}-target_idx.json") is None
