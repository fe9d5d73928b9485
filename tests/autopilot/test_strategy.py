"""``--strategy``: diagnoses first, then the model-based sampler, on a real Optuna study without training.

Trials are claimed as a worker claims them (:class:`~dpot.autopilot.claim.Claimer`), their params recorded as
training records them (:func:`~dpot.autopilot.sampling.record_params`) and told a made-up objective."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from dpot.autopilot import sampling, tools
from dpot.autopilot.engine import Search, Settings
from dpot.autopilot.record import TrialRecord
from dpot.cli import main

BASE = {"policy": {"type": "diffusion"}, "use_policy_training_preset": False, "optimizer": {"lr": 1e-5},
        "steps": 8, "ot": {"lambda_ot": 0.1, "reg": 0.02}}
RAISED = {**BASE, "optimizer": {"lr": 1e-4}}


def _search(tmp_path, **kw) -> Search:
    tmp_path.mkdir(parents=True, exist_ok=True)
    s = Search(Settings(config_path="unused.json", out=tmp_path, quiet=True, candidates=2, **kw))
    s.steps = 8
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    s.attach(optuna.create_study(storage=storage, direction="minimize"), storage)
    return s


def _train_all(s: Search, objective) -> list[TrialRecord]:
    """Claim every waiting trial, record its params and tell ``objective(config)`` (kept)."""
    done = []
    while (claimed := s.claimer.claim()) is not None:
        trial, rec = claimed
        sampling.record_params(trial, rec.params)
        trial.set_user_attr("decision", "kept")
        value = objective(s.planner.config_of(rec.name))
        trial.set_user_attr("objective", value)
        s.study.tell(trial, value)
        done.append(rec)
    return done


def _loss(cfg: dict) -> float:
    """A made-up objective, best at lr = 2e-4."""
    import math

    return abs(math.log(cfg["optimizer"]["lr"] / 2e-4)) + 0.1


def _rule_proposal(monkeypatch, spent: set):
    """``dpot propose`` made up: base gets an lr_low proposal (LR x10); every other run (or a spent one) none."""
    def propose(run_dir, out, rules):
        if run_dir.name == "base" and "base" not in spent:
            return [({"name": "lr_low", "title": "raise lr", "changes": {"optimizer.lr": 1e-4},
                      "findings": ["lr_low"]}, RAISED)]
        return []
    monkeypatch.setattr(tools, "propose", propose)


def _base(s: Search) -> None:
    s.planner.enqueue_base(BASE)
    _train_all(s, _loss)


def test_both_acts_on_the_diagnoses_before_sampling_and_the_sampler_is_told_of_every_run(tmp_path, monkeypatch):
    s = _search(tmp_path, strategy="both")
    _rule_proposal(monkeypatch, set())
    _base(s)
    assert s.planner.propose_next(1, "base", s.records()) == "base"
    first = _train_all(s, _loss)
    assert [r.diagnoses for r in first] == [["lr_low"]]              # the diagnosis first, nothing sampled
    rule_lr = first[0].params["lr"]
    assert rule_lr == pytest.approx(1e-4)

    seen = []                                                       # what the sampler is told when it samples

    class Spy(optuna.samplers.TPESampler):
        def sample_independent(self, study, trial, name, dist):
            if name == "lr":
                seen.append([t.params.get(name) for t in study.get_trials(states=(TrialState.COMPLETE,))])
            return super().sample_independent(study, trial, name, dist)

    monkeypatch.setattr(sampling, "make_sampler", lambda kind, seed: Spy(n_startup_trials=3, seed=seed))
    assert s.planner.propose_next(2, "it1a", s.records()) == "it1a"  # it1a's diagnoses are spent: sample
    sampled = sorted((r for r in s.records() if r.iteration == 2), key=lambda r: r.name)
    assert len(sampled) == 2 and all(r.diagnoses == [sampling.SAMPLED] for r in sampled)
    assert all(r.title.startswith("sampler: lr=") and r.parent == "it1a" and r.changes for r in sampled)
    assert seen == [[1e-5, rule_lr]] * 2                            # base and the rule's run, at each draw
    for r in sampled:                                               # inside the ranges the rules allow
        cfg = s.planner.config_of(r.name)
        assert 1e-4 <= cfg["optimizer"]["lr"] <= 3e-3                # usual bottom to 10x its top
        assert 0.1 / 4 <= cfg["ot"]["lambda_ot"] <= 0.1 * 4 and 0.02 / 4 <= cfg["ot"]["reg"] <= 0.02 * 4
    _train_all(s, _loss)
    lr_dists = {t.distributions["lr"] for t in s.study.get_trials(states=(TrialState.COMPLETE,))}
    assert {d.log for d in lr_dists} == {True}                      # one kind for every run: all usable
    assert {r.name for r in s.records()} == {"base", "it1a", "it2a", "it2b"}   # the draws are no runs


def test_sampler_strategy_never_diagnoses_and_samples_around_the_base(tmp_path, monkeypatch):
    s = _search(tmp_path, strategy="sampler")
    monkeypatch.setattr(tools, "propose", lambda *a: pytest.fail("sampler-only must not diagnose"))
    _base(s)
    assert s.planner.propose_next(1, "base", s.records()) == "base"
    _train_all(s, _loss)
    assert s.planner.propose_next(2, "it1a", s.records()) == "base"  # always the base config's neighbourhood
    recs = [r for r in s.records() if r.iteration > 0]
    assert len(recs) == 4 and all(r.parent == "base" and r.diagnoses == [sampling.SAMPLED] for r in recs)
    assert len({r.digest for r in recs}) == 4                       # no config drawn twice


def test_rules_strategy_explores_instead_of_sampling(tmp_path, monkeypatch):
    s = _search(tmp_path, strategy="rules")
    _rule_proposal(monkeypatch, {"base"})
    monkeypatch.setattr(sampling, "draw", lambda *a, **k: pytest.fail("rules-only must not sample"))
    _base(s)
    assert s.planner.propose_next(1, "base", s.records()) == "base"
    assert [r.diagnoses for r in s.records() if r.iteration == 1] == [["explore"], ["explore"]]


def _metrics(s: Search, run: str, ot_share: float) -> None:
    """A run directory whose log has the OT term at ``ot_share`` of the training loss."""
    d = s.planner.dirs.run_dir(run)
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps({"step": k, "train/loss": 1.0 / k,
                                                         "train/ot_loss": ot_share / k}) + "\n"
                                             for k in range(1, 11)))


@pytest.mark.parametrize("share", [1e-4, 0.05])
def test_ot_only_proposals_are_passed_over_when_the_ot_term_is_negligible(tmp_path, monkeypatch, share):
    """At 0.01 % of the loss the OT settings cannot move the objective: a proposal changing only ot.* keys is
    passed over (with a line saying why) and the sampler searches the LR alone; at 5 % both are kept."""
    s = _search(tmp_path, strategy="both")
    said = []
    s.planner.say = said.append
    ot_only = {**BASE, "ot": {"lambda_ot": 0.1, "reg": 0.04}}

    def propose(run_dir, out, rules):
        return [({"name": "ot_strong", "title": "loosen the plan", "changes": {"ot.reg": 0.04},
                  "findings": ["ot_strong"]}, ot_only),
                ({"name": "lr_low", "title": "raise lr", "changes": {"optimizer.lr": 1e-4},
                  "findings": ["lr_low"]}, RAISED)]
    monkeypatch.setattr(tools, "propose", propose)
    _base(s)
    _metrics(s, "base", share)
    assert s.planner.propose_next(1, "base", s.records()) == "base"
    titles = [r.title for r in s.records() if r.iteration == 1]
    if share < 1e-3:
        assert titles == ["raise lr"] and any("passing over 'loosen the plan'" in x and "0.01 %" in x for x in said)
        space = sampling.sample_space(BASE, {}, ot_negligible=s.planner.negligible_ot_share("base") is not None)
        assert list(space) == ["lr"]
    else:
        assert titles == ["loosen the plan", "raise lr"] and s.planner.negligible_ot_share("base") is None


def test_sample_space_follows_the_rules_ranges():
    space = sampling.sample_space(BASE, {"lr_range": {"diffusion": [1e-4, 3e-4], "default": [1e-5, 1e-3]},
                                         "step": {"max_factor": 2.0}})
    assert (space["lr"].low, space["lr"].high, space["lr"].log) == (1e-4, 3e-4, True)
    assert (space["ot.lambda_ot"].low, space["ot.lambda_ot"].high) == (0.05, 0.2)
    no_ot = sampling.sample_space({**BASE, "ot": {"lambda_ot": 0.0, "reg": 0.02, "method": "mmd"}}, {})
    assert list(no_ot) == ["lr"]
    rules = {"lr_range": {"diffusion": [1e-4, 3e-4], "default": [1e-5, 1e-3]}, "lr_high": {"far_factor": 10.0}}
    wide = sampling.sample_space(BASE, rules)        # up to where lr_high can fire: 10x the usual top
    assert (wide["lr"].low, wide["lr"].high) == (1e-4, pytest.approx(3e-3)) and "ot.reg" in wide
    assert list(sampling.sample_space(BASE, rules, ot_negligible=True)) == ["lr"]
    cfg = sampling.apply_params(BASE, {"lr": 1.234567e-4, "ot.reg": 0.03})
    assert cfg["optimizer"]["lr"] == 1.235e-4 and cfg["ot"]["reg"] == 0.03 and BASE["optimizer"]["lr"] == 1e-5


COSINE = {**BASE, "scheduler": {"type": "diffuser", "name": "cosine", "num_warmup_steps": 2}}


def test_the_sampler_draws_the_schedule_too_and_is_told_of_it(tmp_path, monkeypatch):
    """A parent with an LR schedule: the sampler also draws whether the LR is constant (the issue-22 grid's
    missing dimension); every run records it as the same categorical param, rule-proposed or sampled, and the
    sampled configs are what was drawn. ``[sampler] schedule = false`` leaves it out."""
    from optuna.distributions import CategoricalDistribution

    from dpot.analysis import cfgkeys
    from dpot.autopilot.space import CONSTANT_LR
    from dpot.autopilot.space import config_params as space_params

    space = sampling.sample_space(COSINE, {})
    assert space[CONSTANT_LR] == CategoricalDistribution((False, True)) and "lr" in space
    assert CONSTANT_LR not in sampling.sample_space(COSINE, {"sampler": {"schedule": False}})
    assert CONSTANT_LR not in sampling.sample_space(BASE, {})          # no schedule: nothing to draw
    flat = sampling.apply_params(COSINE, {"lr": 2e-3, CONSTANT_LR: True})
    assert flat["scheduler"] == {"type": "diffuser", "name": "constant", "num_warmup_steps": 0}
    assert space_params(flat)[CONSTANT_LR] is True and space_params(COSINE)[CONSTANT_LR] is False
    assert sampling.apply_params(COSINE, {CONSTANT_LR: False}) == COSINE
    assert sampling.params_text({"lr": 2.0012e-3, CONSTANT_LR: True}) == "lr=0.002001, lr.constant=True"

    seen = []

    class Spy(optuna.samplers.TPESampler):
        def sample_independent(self, study, trial, name, dist):
            if name == CONSTANT_LR:
                seen.append([t.params.get(name) for t in study.get_trials(states=(TrialState.COMPLETE,))])
            return super().sample_independent(study, trial, name, dist)

    monkeypatch.setattr(sampling, "make_sampler", lambda kind, seed: Spy(n_startup_trials=3, seed=seed))
    s = _search(tmp_path, strategy="sampler")
    s.planner.enqueue_base(COSINE)
    _train_all(s, _loss)
    assert s.planner.propose_next(1, "base", s.records()) == "base"
    assert seen and all(x == [False] for x in seen)                    # told of the base's cosine schedule
    sampled = [r for r in s.records() if r.iteration == 1]
    assert sampled and all(CONSTANT_LR in r.params and "lr.constant=" in r.title for r in sampled)
    for r in sampled:
        cfg = s.planner.config_of(r.name)
        assert (not cfgkeys.schedule(cfg)["varies"]) is r.params[CONSTANT_LR]
    _train_all(s, _loss)
    dists = {t.distributions[CONSTANT_LR] for t in s.study.get_trials(states=(TrialState.COMPLETE,))}
    assert dists == {CategoricalDistribution((False, True))}          # one kind for every run: all usable


@pytest.mark.parametrize("flag", ["--strategy=guess", "--sampler=cmaes"])
def test_bad_strategy_or_sampler_is_one_line_exit_2(tmp_path, capsys, flag):
    assert main(["autopilot", "--config_path", str(tmp_path / "x.json"), "--out", str(tmp_path / "o"), flag]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and flag.split("=")[0] in err and not (tmp_path / "o").exists()


LONG_WARMUP = {**BASE, "scheduler": {"type": "diffuser", "name": "cosine", "num_warmup_steps": 20}}


def test_prior_samples_around_the_parent_with_its_fixes_and_never_forces_a_rule_run(tmp_path, monkeypatch):
    """``--strategy prior``: the diagnoses are the sampler's prior. A fix outside the searched space (the warmup cut
    of ``schedule_mismatch``) is applied to every sampled config; a proposal about the space's own values (``lr_low``:
    the LR; ``ot_weak``: lambda) is no run of its own: the LR is drawn where no LR rule fires."""
    s = _search(tmp_path, strategy="prior")
    said = []
    s.planner.say = said.append
    cut = {**LONG_WARMUP, "scheduler": {**LONG_WARMUP["scheduler"], "num_warmup_steps": 1}}
    props = [({"name": "lr_low", "title": "raise lr", "changes": {"optimizer.lr": 1e-4}, "findings": ["lr_low"]},
              {**LONG_WARMUP, "optimizer": {"lr": 1e-4}}),
             ({"name": "schedule_mismatch", "title": "cut the warmup", "findings": ["schedule_mismatch"],
               "changes": {"scheduler.num_warmup_steps": 1}}, cut),
             ({"name": "ot_weak", "title": "raise lambda", "changes": {"ot.lambda_ot": 0.4}, "findings": ["ot_weak"]},
              {**LONG_WARMUP, "ot": {"lambda_ot": 0.4, "reg": 0.02}})]
    monkeypatch.setattr(tools, "propose", lambda run_dir, out, rules: props)
    s.planner.enqueue_base(LONG_WARMUP)
    _train_all(s, _loss)
    assert s.planner.propose_next(1, "base", s.records()) == "base"
    recs = sorted((r for r in s.records() if r.iteration == 1), key=lambda r: r.name)
    assert len(recs) == 2
    for r in recs:
        cfg = s.planner.config_of(r.name)
        assert r.diagnoses == [sampling.SAMPLED, "schedule_mismatch"] and r.title.endswith("+ fixes: schedule_mismatch")
        assert 1e-4 <= cfg["optimizer"]["lr"] <= 3e-3 and cfg["optimizer"]["lr"] != 1e-4   # drawn, not lr_low's
        if cfg["scheduler"]["name"] != "constant":                   # a drawn constant LR has no warmup at all
            assert cfg["scheduler"]["num_warmup_steps"] == 1
        assert 0.1 / 4 <= cfg["ot"]["lambda_ot"] <= 0.4              # drawn around the parent's 0.1
    assert any("with its diagnoses' fixes (schedule_mismatch: scheduler.num_warmup_steps)" in x for x in said)
    centre, fixes = s.planner.fixes_of("base")
    assert fixes == ["schedule_mismatch"]                           # only the fix outside the space
    assert centre == {**s.planner.config_of("base"), "scheduler": cut["scheduler"]}


@pytest.mark.slow
def test_a_sampled_iteration_end_to_end(toy, tmp_path):
    """Tiny trainings: the base run, then one sampled candidate (``--strategy both`` with every rule off, so
    nothing is diagnosed); the sampled run's params are in the study, inside the rules' LR range, and the lineage
    says 'sampler'. (``sampler`` differs only in never diagnosing: test_sampler_strategy_never_diagnoses...)"""
    from aphelpers import base_config, lineage, node, run_autopilot

    from dpot.analysis.diagnose import RULES

    cfg = base_config(toy, tmp_path / "base.json")
    rules = tmp_path / "rules.toml"
    rules.write_text("".join(f"[{rid}]\nenabled = false\n" for rid in RULES))
    out = tmp_path / "search"
    res = run_autopilot("--config_path", str(cfg), "--out", str(out), "--iterations", "1", "--candidates", "1",
                        "--patience", "0", "--rules", str(rules), "--strategy", "both")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    it1 = node(lineage(out), "it1a")
    assert it1["diagnoses"] == ["sampler"] and it1["parent"] == "base" and it1["decision"] in ("kept", "best",
                                                                                                "rolled_back")
    study = optuna.load_study(study_name="dpot-autopilot-search", storage=f"sqlite:///{out / 'study.db'}")
    done = {t.user_attrs["name"]: t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "name" in t.user_attrs}
    assert set(done) == {"base", "it1a"}
    assert done["base"].params["lr"] == pytest.approx(1e-6) and 1e-4 <= done["it1a"].params["lr"] <= 3e-3
    recorded = json.loads((out / "autopilot.json").read_text())         # the search's identity names how it searched
    assert (recorded["strategy"], recorded["sampler"]) == ("both", "tpe")
