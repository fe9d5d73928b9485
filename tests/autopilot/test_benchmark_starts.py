"""benchmarks/autopilot.py without training: the start conditions plant what they say (the diagnoses' own readers
see it), and the results JSON has the issue's schema with runs_to_tpe_best counted against TPE's final best."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import autopilot as bench
from dpot.analysis import cfgkeys


@pytest.fixture
def base(tmp_path):
    """The benchmark's base config on a dataset root that only has the ``meta/info.json`` it reads."""
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "info.json").write_text(json.dumps({"features": {
        "action": {"dtype": "float32", "shape": [8]}, "observation.images.top": {"dtype": "image",
                                                                                 "shape": [32, 32, 3]}}}))
    return bench.base_config(tmp_path, tmp_path, steps=300, seed=0)


def test_each_start_plants_its_condition(base):
    cfgs = {s: bench.start_config(s, base) for s in bench.STARTS}
    assert cfgs["seed"] == base and cfgkeys.base_lr(base) == 1e-5
    assert cfgkeys.base_lr(cfgs["healthy"]) == 1e-4 and cfgkeys.schedule(cfgs["healthy"])["warmup"] == 15
    assert cfgkeys.base_lr(cfgs["lr-100x-high"]) == pytest.approx(100 * 3e-4)
    low = cfgs["lr-100x-low-flat"]
    assert cfgkeys.base_lr(low) == pytest.approx(1e-4 / 100) and not cfgkeys.schedule(low)["varies"]
    assert cfgkeys.schedule(cfgs["warmup-longer-than-run"])["warmup"] == 600 > cfgs["warmup-longer-than-run"]["steps"]
    lbl = [f["weight_label"] for _, f in cfgkeys.label_features(cfgs["label-dominated"])]
    assert lbl and lbl == [1000 * f["weight_label"] for _, f in cfgkeys.label_features(base)]
    assert base["policy"]["optimizer_lr"] == 1e-5                      # the base is not changed in place
    with pytest.raises(ValueError, match="unknown start"):
        bench.start_config("nope", base)


def test_runs_to_match_counts_runs_until_the_running_best_reaches_the_target():
    nan = float("nan")
    assert bench.runs_to_match([1.0, nan, 0.8, 0.9, 0.7], 0.8) == 3
    assert bench.runs_to_match([1.0, 0.9], 0.8) is None
    assert bench.runs_to_match([0.5], 0.8) == 1
    # a success rate (max): the running best must reach at least the target
    assert bench.runs_to_match([0.1, nan, 0.3, 0.2, 0.6], 0.3, direction="max") == 3
    assert bench.runs_to_match([0.1, 0.2], 0.3, direction="max") is None
    assert bench.runs_to_match([0.0, 0.0], 0.0, direction="max") == 1


def _args(objective=bench.OBJ, **kw):
    """The parsed arguments table() and final_value() read."""
    return type("A", (), {"steps": 300, "iterations": 3, "candidates": 2, "repeats": 1, "policy": "cpu",
                          "objective": bench.parse_objective(objective), "bench_episodes": 20,
                          "bench_max_steps": 150, "first_repeat": 0, "section": None, **kw})()


def test_a_closed_loop_objective_is_maximised_and_counted_that_way():
    """``--objective bench:<task>``: the JSON says max, and runs_to_tpe_best counts runs until the success rate
    reaches TPE's best (a lower success never matches it)."""
    rep = lambda best, values: {"best": best, "steps": 600, "runs": len(values), "values": values, "seed": 0}  # noqa: E731
    obj = bench.parse_objective("bench:button-press-topdown-v3")
    results = {"seed": {"autopilot": [rep(0.4, [0.0, 0.4, 0.2])], "tpe": [rep(0.3, [0.1, 0.3, 0.0])],
                        "random": [rep(0.2, [0.2, 0.1])], "hand": [rep(0.3, [0.3])]}}
    doc = bench.results_doc(results, obj)
    assert doc["direction"] == "max" and doc["objective"] == "bench:button-press-topdown-v3"
    hits = {m: v["repeats"][0]["runs_to_tpe_best"] for m, v in doc["starts"]["seed"]["methods"].items()}
    assert hits == {"autopilot": 2, "tpe": 2, "random": None, "hand": 1}
    text = bench.table(doc, _args("bench:button-press-topdown-v3"))
    assert "(max, closed-loop success of the final checkpoint, 20 target-domain episodes" in text
    # its own docs subsection: writing the closed-loop grid never replaces the offline grid's table
    assert text.splitlines()[0] == bench.CLOSED_LOOP_SECTION != bench.SECTION
    assert bench.table(doc, _args(bench.OBJ)).splitlines()[0] == bench.SECTION


def test_final_value_of_a_closed_loop_objective_reads_the_autopilots_cache(tmp_path):
    """A run's closed-loop value is the success rate cached in the run (the name the autopilot itself uses), and
    NaN for a run without a final checkpoint: nothing is evaluated twice, a failed run is not a success of 0."""
    from dpot import rundir

    task = "button-press-topdown-v3"
    run = tmp_path / "t0"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 100, "train/loss": 1.0}\n')
    a = _args(f"bench:{task}")
    assert bench.final_value(run, a) != bench.final_value(run, a)      # NaN: no checkpoint, no cache
    rundir.bench_result_path(run, task, 100, 100).write_text(json.dumps({"success_rate": 0.35}))
    assert bench.final_value(run, a) == 0.35
    (run / "metrics.jsonl").write_text('{"step": 100, "eval/offline_eval/avg_loss": 0.8}\n')
    assert bench.final_value(run, _args()) == 0.8


class _Drawn(Exception):
    """Raised by a fake draw once the autopilot's sampler has been handed its space."""


def test_tpe_random_and_the_autopilots_sampler_search_one_space(base, tmp_path, monkeypatch):
    """One search space, declared once (dpot.autopilot.space): for every start, the distributions TPE and random
    search draw from are exactly those the autopilot's planner hands its sampler around the same config."""
    from dpot.autopilot import sampling
    from dpot.autopilot.candidates import Planner
    from dpot.autopilot.spec import SearchDir, parse_objective

    seen = {}

    def draw(study, storage, kind, dists, seed, mark):
        seen["dists"] = dists
        raise _Drawn

    monkeypatch.setattr(sampling, "draw", draw)
    store = type("Store", (), {"study": None, "storage": None, "mark_duplicate": None})()
    for start in bench.STARTS:
        cfg = bench.search_config(bench.start_config(start, base))
        dirs = SearchDir(tmp_path / start)
        dirs.config_path("base").parent.mkdir(parents=True)
        dirs.config_path("base").write_text(json.dumps(cfg))
        planner = Planner(store, dirs, 300, parse_objective(bench.OBJ), 2, None, False, print, seed=0)
        with pytest.raises(_Drawn):
            planner.sample_around(1, "base", [])
        ours = bench.search_space(cfg)
        assert seen.pop("dists") == ours
        assert list(ours) == ["lr", "lr.constant", "ot.lambda_ot", "ot.reg", "optimizer.type",
                              "optimizer.weight_decay"], start
        assert (ours["lr"].low, ours["lr"].high) == (1e-4, pytest.approx(3e-3))      # Diffusion's, to 10x its top
        assert ours["optimizer.type"].choices == ("adam", "adamw")


def _fake_train(trained: list):
    """bench.train without training: the run logs the objective (best at lr 5e-4) at its budget."""
    import math

    def train(cfg, run, a):
        value = abs(math.log(cfgkeys.base_lr(cfg) / 5e-4))
        run.mkdir(parents=True, exist_ok=True)
        (run / "metrics.jsonl").write_text(json.dumps({"step": a.steps, bench.OBJ: value}) + "\n")
        trained.append(cfg)
        return value
    return train


@pytest.mark.parametrize("kind", ["tpe", "random"])
def test_the_start_config_is_the_first_trial_and_the_seed_reproduces_the_draws(base, tmp_path, monkeypatch, kind):
    """TPE and random are told the start config: their first trial is the start (its params enqueued), trained as
    it is and charged like any run; the sampler is seeded with the repeat's seed (the same seed draws the same
    configs, another seed others); the result records the space, every run's params, the seed and Optuna's
    version."""
    import optuna

    from dpot.autopilot import space

    start = bench.start_config("lr-100x-high", base)
    a = _args(out=str(tmp_path))
    results = {}
    for seed, work in ((0, "a"), (0, "b"), (1, "c")):
        trained = []
        monkeypatch.setattr(bench, "train", _fake_train(trained))
        results[work] = bench.run_sampler(kind, start, tmp_path / work, 6 * a.steps, a, seed)
        assert trained[0] == start and len(trained) == 6
    r = results["a"]
    resolved = bench.search_config(start)
    dists = bench.search_space(resolved)
    assert r["params"][0] == space.start_params(resolved, dists) and r["params"][0]["lr"] == pytest.approx(3e-2)
    assert r["params"][0]["optimizer.type"] == "adam" and "optimizer.weight_decay" not in r["params"][0]
    assert r["values"][0] == pytest.approx(abs(__import__("math").log(3e-2 / 5e-4)))
    assert (r["runs"], r["steps"], r["space"], r["sampler_seed"]) == (6, 6 * a.steps, list(dists), 0)
    assert r["optuna_version"] == optuna.__version__
    assert results["b"]["params"] == r["params"] and results["b"]["values"] == r["values"]   # same seed
    assert results["c"]["params"][1:] != r["params"][1:] and results["c"]["params"][0] == r["params"][0]
    for drawn in r["params"][1:]:
        assert set(drawn) <= set(dists) and ("optimizer.weight_decay" in drawn) == (drawn["optimizer.type"] == "adamw")


def test_a_drawn_adamw_config_writes_the_preset_out():
    """A draw of AdamW on the Diffusion preset's Adam: the presets off, AdamW with the drawn LR and weight decay and
    the preset's betas; the drawn schedule; Adam keeps the preset (nothing but the LR set)."""
    from dpot.autopilot import space

    cfg = bench.search_config({"dataset": {"repo_id": "local/t", "root": "t"},
                               "source_dataset": {"repo_id": "local/s", "root": "s"},
                               "policy": {**bench.POLICY, "optimizer_lr": 1e-5}, "batch_size": 8, "steps": 300})
    drawn = {"lr": 2e-3, "lr.constant": False, "optimizer.type": "adamw", "optimizer.weight_decay": 3e-3}
    out = bench.sampled_config(cfg, drawn)
    assert out["use_policy_training_preset"] is False and cfgkeys.schedule(out)["name"] == "cosine"
    assert {k: out["optimizer"][k] for k in ("type", "lr", "weight_decay", "betas")} == {
        "type": "adamw", "lr": 2e-3, "weight_decay": 3e-3, "betas": [0.95, 0.999]}
    assert space.config_params(out) == {"lr": 2e-3, "ot.lambda_ot": 0.1, "ot.reg": 0.02, "lr.constant": False,
                                        "optimizer.type": "adamw", "optimizer.weight_decay": 3e-3}
    adam = bench.sampled_config(cfg, {**drawn, "optimizer.type": "adam"})   # its weight decay is not searched
    assert adam == cfgkeys.set_(cfg, "policy.optimizer_lr", 2e-3)


def test_the_study_policy_is_the_powered_studys_own(base, tmp_path):
    """``--policy study`` trains what the study trains (its U-Net, resolution and batch), with the start's LR."""
    from dpot.bench.presets import get_preset

    big = bench.base_config(tmp_path, tmp_path, steps=300, seed=0, policy="study")
    preset = get_preset(bench.STUDY_PRESET)
    assert big["batch_size"] == preset.batch_size == 32 and base["batch_size"] == 8
    assert big["policy"]["down_dims"] == preset.policy["down_dims"] != base["policy"]["down_dims"]
    assert big["policy"]["optimizer_lr"] == base["policy"]["optimizer_lr"] == 1e-5
    assert "resize_shape" not in base["policy"] and big["policy"]["resize_shape"] == preset.policy["resize_shape"]
    assert bench.start_config("lr-100x-high", big)["policy"]["optimizer_lr"] == pytest.approx(3e-2)
    with pytest.raises(ValueError, match="unknown policy size"):
        bench.base_config(tmp_path, tmp_path, steps=300, seed=0, policy="huge")


def test_results_doc_has_the_issue_schema():
    rep = lambda best, values, seed=0: {"best": best, "steps": 600, "runs": len(values), "values": values,  # noqa: E731
                                        "seed": seed, "run_steps": [200] * len(values)}
    results = {"lr-100x-high": {"autopilot": [rep(0.7, [2.0, 0.7, 0.9])], "tpe": [rep(0.8, [2.0, 1.0, 0.8])],
                                "random": [rep(float("nan"), [float("nan")])], "hand": [rep(0.9, [2.0, 0.9])]}}
    doc = json.loads(json.dumps(bench.results_doc(results)))            # plain JSON: no NaN
    assert doc["direction"] == "min" and doc["objective"] == bench.OBJ
    m = doc["starts"]["lr-100x-high"]["methods"]
    assert set(m) == set(bench.METHODS)
    assert m["autopilot"]["repeats"] == [{"seed": 0, "best": 0.7, "steps": 600, "runs": 3, "runs_to_tpe_best": 2,
                                          "compute_steps": 600, "compute_to_tpe_best": 400}]
    assert m["tpe"]["repeats"][0]["runs_to_tpe_best"] == 3 and m["tpe"]["repeats"][0]["compute_to_tpe_best"] == 600
    assert m["random"]["repeats"][0]["compute_to_tpe_best"] is None
    assert m["random"]["repeats"][0]["best"] is None and m["random"]["repeats"][0]["runs_to_tpe_best"] is None
    assert m["hand"]["repeats"][0]["runs_to_tpe_best"] is None
    text = bench.table(doc, _args())
    assert "| lr-100x-high | autopilot | 0.7000 ± 0.0000 | 0.7000 | 600 | 3.0 | 2 |" in text
    assert "| lr-100x-high | random | nan" in text and "| 1.0 | - |" in text


def test_results_doc_records_the_space_the_sampler_seeds_and_optunas_version():
    """Each searching method's space (its parameter names) and each repeat's sampler seed, as its result recorded
    them, and the Optuna version the results were computed with; results computed before they were recorded have
    none (null), rather than today's values."""
    rep = lambda seed, **kw: {"best": 0.8, "steps": 600, "runs": 2, "values": [0.9, 0.8], "seed": seed, **kw}  # noqa: E731
    names = ["lr", "lr.constant", "ot.lambda_ot", "ot.reg", "optimizer.type", "optimizer.weight_decay"]
    new = dict(space=names, sampler_seed=3, optuna_version="5.1.0")
    doc = bench.results_doc({"seed": {"autopilot": [rep(3, **new, strategy="prior")], "tpe": [rep(3, **new)],
                                      "hand": [rep(3)]}})
    assert doc["optuna_version"] == "5.1.0"
    m = doc["starts"]["seed"]["methods"]
    assert m["autopilot"]["strategy"] == "prior" and "strategy" not in m["tpe"]
    assert m["autopilot"]["space"] == m["tpe"]["space"] == names and "space" not in m["hand"]
    assert m["tpe"]["repeats"][0]["sampler_seed"] == 3 and "sampler_seed" not in m["hand"]["repeats"][0]
    assert bench.results_doc({"seed": {"tpe": [rep(0)]}})["optuna_version"] is None


def test_goal_lines_judge_the_fixed_goal_per_start():
    """Mean best <= TPE's in every start; from a pathological start also the median runs to TPE's best <= half of
    TPE's runs (never counts as infinity); the healthy starts are judged on the mean only."""
    rep = lambda best, values, seed=0: {"best": best, "steps": 600, "runs": len(values), "values": values,  # noqa: E731
                                        "seed": seed, "run_steps": [200] * len(values)}
    tpe = [rep(0.8, [2.0, 1.0, 0.9, 0.8]), rep(0.8, [2.0, 0.8, 0.9, 0.9], seed=1)]
    results = {"seed": {"autopilot": [rep(0.81, [0.9, 0.81]), rep(0.79, [0.9, 0.79], seed=1)], "tpe": tpe},
               "lr-100x-high": {"autopilot": [rep(0.7, [0.7, 0.9]), rep(0.75, [0.9, 0.75], seed=1)], "tpe": tpe},
               "lr-100x-low-flat": {"autopilot": [rep(0.7, [0.9, 0.9, 0.7]), rep(0.9, [0.9], seed=1)],
                                    "tpe": tpe}}
    text = bench.goal_lines(json.loads(json.dumps(bench.results_doc(results))))
    assert "- seed (2 repeats): mean best 0.8000 vs TPE 0.8000: met\n" in text              # a tie meets "<="
    assert "- lr-100x-high (2 repeats): mean best 0.7250 vs TPE 0.8000: met; runs to TPE's best (median) 1.5 " \
           "vs half TPE's runs 2: met" in text
    # repeat 0 matches at run 3, repeat 1 never: median inf
    assert "- lr-100x-low-flat (2 repeats): mean best 0.8000 vs TPE 0.8000: met; runs to TPE's best (median) " \
           "never vs half TPE's runs 2: not met" in text
    worse = {"seed": {"autopilot": [rep(0.81, [0.81])], "tpe": [rep(0.8, [0.8])]}}
    assert bench.goal_lines(bench.results_doc(worse)).endswith("mean best 0.8100 vs TPE 0.8000: not met\n")
    assert bench.goal_lines(bench.results_doc({"seed": {"autopilot": [rep(0.8, [0.8])]}})) == ""


def test_a_repeat_result_is_kept_and_read_back_not_recomputed(tmp_path):
    """The grid is resumable: a method's result is computed once, NaN survives the JSON round trip as NaN."""
    calls = []

    def compute():
        calls.append(1)
        return {"best": 0.5, "steps": 600, "runs": 2, "values": [float("nan"), 0.5], "wall_s": 1.0}

    path = tmp_path / "rep0" / "tpe.result.json"
    first = bench.cached(path, compute)
    again = bench.cached(path, compute)
    assert len(calls) == 1 and json.loads(path.read_text())["values"] == [None, 0.5]
    assert again["best"] == first["best"] == 0.5 and again["values"][1] == 0.5
    assert again["values"][0] != again["values"][0]                     # NaN read back as NaN
    failed = bench.cached(tmp_path / "f.result.json", lambda: {"best": float("inf"), "steps": 0, "runs": 1,
                                                                "values": [float("nan")], "wall_s": 0.0})
    assert failed["best"] == float("inf")                               # what this sitting computed
    assert json.loads((tmp_path / "f.result.json").read_text())["best"] is None
    back = bench.cached(tmp_path / "f.result.json", compute)["best"]     # a later sitting: no best (NaN)
    assert back != back and len(calls) == 1


def test_kept_raw_files_let_a_fresh_out_resume_without_retraining(tmp_path):
    """--keep: a finished method's result, lineage and run configs survive a lost --out; an unfinished method's
    files are not put back (it runs again), and a method already in the work dir is not overwritten."""
    work, keep, fresh = tmp_path / "out" / "seed" / "rep0", tmp_path / "keep" / "seed" / "rep0", tmp_path / "new"
    (work / "autopilot" / "search" / "configs").mkdir(parents=True)
    (work / "autopilot" / "search" / "lineage.json").write_text('{"nodes": []}')
    (work / "autopilot" / "search" / "configs" / "it1a.json").write_text('{"steps": 100}')
    (work / "autopilot" / "search" / "configs" / "it1a").mkdir()          # a run dir: not copied
    (work / "tpe").mkdir()
    (work / "tpe" / "t0.json").write_text('{"steps": 100}')
    (work / "tpe" / "t0.log").write_text("training log")
    (work / "random").mkdir()
    (work / "random" / "t0.json").write_text('{"steps": 100}')            # random unfinished: no result
    for m in ("autopilot", "tpe"):
        bench.cached(work / f"{m}.result.json", lambda: {"best": 0.8, "steps": 300, "runs": 3,
                                                         "values": [0.9, float("nan"), 0.8], "wall_s": 1.0})
    assert bench.keep_raw(work, keep) == 5
    assert sorted(str(p.relative_to(keep)) for p in keep.rglob("*") if p.is_file()) == [
        "autopilot.result.json", "autopilot/search/configs/it1a.json", "autopilot/search/lineage.json",
        "tpe.result.json", "tpe/t0.json"]
    fresh_work = fresh / "seed" / "rep0"
    (fresh_work).mkdir(parents=True)
    (fresh_work / "tpe.result.json").write_text('{"best": 0.7, "steps": 300, "runs": 3, "values": [0.7]}')
    assert bench.restore_raw(keep, fresh_work) == ["autopilot"]
    assert json.loads((fresh_work / "tpe.result.json").read_text())["best"] == 0.7   # not overwritten
    assert not (fresh_work / "random").exists() and not (fresh_work / "tpe" / "t0.json").exists()
    r = bench.cached(fresh_work / "autopilot.result.json", lambda: pytest.fail("a kept result was recomputed"))
    assert r["best"] == 0.8 and r["values"][1] != r["values"][1]
    assert (fresh_work / "autopilot" / "search" / "lineage.json").read_text() == '{"nodes": []}'


def test_fresh_repeats_run_from_first_repeat_and_write_their_own_section(tmp_path, monkeypatch):
    """--first-repeat K: repeats K.. (each its seed) for a follow-up on seeds an earlier grid never used, read
    back from --keep without training; --section names the docs subsection, so the first grid's table stays."""
    keep, md = tmp_path / "keep", tmp_path / "bench.md"
    md.write_text(f"{bench.PARENT}\n\n{bench.SECTION}\n\nthe first grid's table\n")
    for rep in (5, 6):
        for m, best in (("autopilot", 0.80 + rep / 100), ("tpe", 0.85)):
            (keep / "seed" / f"rep{rep}").mkdir(parents=True, exist_ok=True)
            (keep / "seed" / f"rep{rep}" / f"{m}.result.json").write_text(json.dumps(
                {"best": best, "steps": 200, "runs": 2, "values": [0.9, best], "wall_s": 1.0}))
    monkeypatch.setattr(bench, "run_autopilot", lambda *a: pytest.fail("a kept repeat was retrained"))
    monkeypatch.setattr(bench, "run_sampler", lambda *a: pytest.fail("a kept repeat was retrained"))
    section = "### The grid, follow-up on fresh seeds"
    monkeypatch.setattr(sys, "argv", ["autopilot.py", "--steps", "100", "--repeats", "2", "--first-repeat", "5",
                                      "--starts", "seed", "--methods", "tpe", "--out", str(tmp_path / "out"),
                                      "--keep", str(keep), "--results", str(tmp_path / "r.json"),
                                      "--write", str(md), "--section", section])
    assert bench.main() == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    reps = doc["starts"]["seed"]["methods"]["autopilot"]["repeats"]
    assert [r["seed"] for r in reps] == [5, 6] and [r["best"] for r in reps] == pytest.approx([0.85, 0.86])
    text = md.read_text()
    assert "the first grid's table" in text and section in text and "2 repeat(s) (seeds 5..6)" in text


def test_kept_raw_files_hold_paths_relative_to_where_the_benchmark_ran(tmp_path, monkeypatch):
    """The run configs hold absolute paths (output_dir, dataset roots); the kept copies hold them as given on the
    command line, a symlinked data dir included (its resolved form too), and an absolute path given stays."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere" / "src").mkdir(parents=True)
    (tmp_path / "data").symlink_to(tmp_path / "elsewhere")
    work = tmp_path / "out" / "seed" / "rep0"
    (work / "tpe").mkdir(parents=True)
    cfg = {"output_dir": str(work / "tpe" / "t0"), "dataset": {"root": str(tmp_path / "elsewhere" / "src")},
           "source_dataset": {"root": str(tmp_path / "data" / "src")}, "other": "/opt/models/x",
           "similar": str(tmp_path / "out2")}
    (work / "tpe" / "t0.json").write_text(json.dumps(cfg))
    (work / "tpe.result.json").write_text('{"best": 0.8, "steps": 100, "runs": 1, "values": [0.8]}')
    paths = bench.repo_paths("out", "data/src", None, "/abs/given")
    assert all(Path(k).is_absolute() for k in paths) and "/abs/given" not in paths
    assert bench.keep_raw(work, tmp_path / "keep", paths) == 2
    kept = json.loads((tmp_path / "keep" / "tpe" / "t0.json").read_text())
    assert kept["output_dir"] == "out/seed/rep0/tpe/t0"
    assert kept["dataset"]["root"] == kept["source_dataset"]["root"] == "data/src"
    assert kept["other"] == "/opt/models/x" and kept["similar"] == str(tmp_path / "out2")   # only whole prefixes


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    x = [0.9, 0.8, 0.8, 1.2, 0.5, 0.7]
    y = [1.0, 0.7, 0.9, 1.1, 0.6, 0.7]
    assert bench.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert bench.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    rng = np.random.default_rng(0)
    for _ in range(50):                                   # many ties (integers) and none (floats)
        x, y = rng.integers(0, 5, 12).tolist(), rng.normal(size=12).tolist()
        assert bench.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
        assert bench.spearman(y, x) == pytest.approx(spearmanr(y, x).statistic, abs=1e-12)


def _finished(run: Path, cfg: dict, value: float, steps: int = 300) -> None:
    """A run the trainer would have left: its launch config beside it, a complete checkpoint at ``steps``, the
    objective logged."""
    from dpot import rundir

    ckpt = rundir.checkpoint_dir(run, steps, steps) / "training_state"
    ckpt.mkdir(parents=True)
    (ckpt / "training_step.json").write_text(json.dumps({"step": steps}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": steps, bench.OBJ: value}) + "\n")


def test_a_run_that_trains_an_already_trained_config_is_linked_not_retrained(base, tmp_path, monkeypatch):
    """The grid trains each distinct training once: every method's first run is the start's base, and a draw may
    train what a draw from another start trained (a written-out AdamW preset with a constant LR reads neither
    start's policy LR nor its warmup); a run whose resolved config trains what a finished run under --out trains
    (the autopilot's own runs included) is a symlink to it, and the method is charged its steps as before."""
    out = tmp_path / "grid"
    launches = []
    monkeypatch.setattr(bench, "_dpot", lambda *args, log: launches.append(args) or 1)   # a launch fails: NaN
    a = _args(out=str(out))

    seed = bench.start_config("seed", base)
    auto = out / "seed" / "rep0" / "autopilot" / "search"                 # the autopilot's layout
    (auto / "configs").mkdir(parents=True)
    (auto / "configs" / "base.json").write_text(json.dumps({**seed, "output_dir": str(auto / "runs" / "base")}))
    _finished(auto / "runs" / "base", seed, 0.9)
    t0 = out / "seed" / "rep0" / "tpe" / "t0"
    for s in ("seed", "healthy"):                                        # the method dirs the runners make
        for m in ("tpe", "random", "hand"):
            (out / s / "rep0" / m).mkdir(parents=True, exist_ok=True)
    assert bench.train(seed, t0, a) == 0.9 and t0.is_symlink() and not launches
    assert t0.resolve() == (auto / "runs" / "base").resolve() and bench._steps(t0) == 300
    assert bench.train(seed, t0, a) == 0.9                               # a later sitting reads it back

    # the same draw from two starts whose differences it overrides (the LR; a constant schedule on AdamW)
    params = {"lr": 3e-4, "lr.constant": True, "optimizer.type": "adamw", "optimizer.weight_decay": 1e-4,
              "ot.lambda_ot": 0.2, "ot.reg": 0.02}
    starts = {s: bench.start_config(s, base) for s in ("seed", "healthy")}
    assert starts["seed"]["policy"]["optimizer_lr"] != starts["healthy"]["policy"]["optimizer_lr"]
    drawn = {s: bench.sampled_config(bench.search_config(cfg), params) for s, cfg in starts.items()}
    first = out / "seed" / "rep0" / "random" / "t1"
    first.with_suffix(".json").write_text(json.dumps({**drawn["seed"], "output_dir": str(first)}))
    _finished(first, drawn["seed"], 0.7)
    run = out / "healthy" / "rep0" / "random" / "t1"
    assert bench.train(drawn["healthy"], run, a) == 0.7 and run.is_symlink()
    assert not launches and "not retrained" in (out / "healthy" / "rep0" / "random" / "t1.log").read_text()

    other = bench.sampled_config(bench.search_config(seed), {**params, "lr": 1e-3})
    run = out / "seed" / "rep0" / "random" / "t2"
    val = bench.train(other, run, a)                                     # a new training: launched
    assert val != val and len(launches) == 1 and not run.is_symlink()
    presets_on = {**seed, "optimizer": {"type": "adamw", "lr": 0.5}}    # read by nobody while the presets are on
    run = out / "seed" / "rep0" / "hand" / "x"
    assert bench.train(presets_on, run, a) == 0.9 and run.is_symlink() and len(launches) == 1


def test_best_runs_names_where_each_repeats_best_came_from(base, tmp_path):
    """The reading's lineage lines: the autopilot's best node (its title, its config's optimiser block) and TPE's
    best run with its config, per start and repeat, in the objective's direction."""
    work = tmp_path / "seed" / "rep0"
    search = work / "autopilot" / "search"
    (search / "configs").mkdir(parents=True)
    nodes = [{"name": "base", "title": "base config", "objective": 0.91, "decision": "kept"},
             {"name": "it1a", "title": "sampler: lr=0.0029", "objective": 0.81, "decision": "best"}]
    (search / "lineage.json").write_text(json.dumps({"nodes": nodes}))
    (search / "configs" / "it1a.json").write_text(json.dumps({**base, "policy": {**base["policy"],
                                                                                  "optimizer_lr": 0.0029}}))
    (work / "tpe").mkdir()
    (work / "tpe.result.json").write_text(json.dumps({"values": [0.91, None, 0.79, 0.8]}))
    drawn = bench.sampled_config(bench.search_config(base), {
        "lr": 2.3e-3, "lr.constant": True, "optimizer.type": "adamw", "optimizer.weight_decay": 1e-4,
        "ot.lambda_ot": 0.05, "ot.reg": 0.02})
    (work / "tpe" / "t2.json").write_text(json.dumps(drawn))
    doc = {"direction": "min", "starts": {"seed": {"methods": {"autopilot": {"repeats": [{"seed": 0}]}}}}}
    text = bench.best_runs(tmp_path, doc)
    line = next(x for x in text.splitlines() if x.startswith("- seed, repeat 0"))
    assert ("autopilot 0.8100 from it1a (sampler: lr=0.0029; lr 0.0029, the preset's schedule, the preset's optimiser"
            in line)
    assert "TPE 0.7900 from t2 (lr 0.0023, constant schedule, adamw optimiser, lambda_ot 0.05, reg 0.02)" in line
    doc["direction"] = "max"
    assert "TPE 0.9100 from t0" in bench.best_runs(tmp_path, doc)
    assert bench.best_runs(tmp_path / "none", doc) == ""
