"""What the search trains next, and how it is enqueued: the base run, an iteration's candidates, the successive-
halving promotions and the LR-halved retry.

Candidates (``--strategy``): ``rules`` and ``both`` first take the parent's ``dpot propose`` proposals; when those
are all tried, the next best kept run's (backtracking). When no kept run has an untried proposal, ``both`` asks the
model-based sampler (:mod:`.sampling`, TPE by default) for K configs around the parent, inside the ranges the rules
allow; ``rules`` instead tries one-step exploration moves (LR, ``ot.lambda_ot``, ``ot.reg`` x2 and /2) around the
parent, then around the other kept runs (``--no_explore`` turns this off). ``sampler`` skips the diagnoses: every
iteration is K sampled configs around the base config (plain model-based search). A
candidate whose config was tried before (same digest), equals its parent, or only repeats moves (key and
direction) which left the objective unchanged before (:func:`~dpot.autopilot.decisions.inert_moves`) is passed
over, with a line saying which run showed it.

Every run's config is written to ``DIR/configs/<name>.json`` before its trial is enqueued; several trials are
enqueued as a plan (:meth:`Planner.enqueue_planned`) so that a worker killed in between loses none.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from dpot.analysis import cfgkeys
from dpot.atomic import write_text
from dpot.autopilot import sampling, spec, tools
from dpot.autopilot.decisions import (
    OT_NEGLIGIBLE,
    explore_moves,
    inert_moves,
    kept_runs,
    only_ot_changes,
    ot_share,
    repeats_inert,
    scale_lr,
    sh_budgets,
)
from dpot.autopilot.record import BASE_RUN, Decision, Kind, TrialRecord
from dpot.autopilot.space import config_params
from dpot.autopilot.spec import Objective, SearchDir
from dpot.autopilot.store import Entry, TrialStore
from dpot.metrics_log import read_metrics


@dataclass(frozen=True)
class Candidate:
    """A config to try from a parent: ``name`` (the proposal's or move's), ``title``, ``diagnoses`` (rule ids, or
    ``explore``), ``config``, ``keys`` (the dotted keys it changes; None = compare the whole config)."""

    name: str | None
    title: str
    diagnoses: list[str]
    config: dict
    keys: list[str] | None


class Planner:
    """Generates and enqueues the search's trials.

    Args:
        store: the study.
        dirs: the search directory.
        steps: the full training budget of every run.
        objective: the search's objective.
        candidates: at most this many candidates per iteration (``--candidates``).
        rules: the ``--rules`` TOML passed to ``dpot propose``, or None.
        explore: try one-step exploration moves once the diagnoses are spent (``--no_explore`` turns it off;
            ``rules`` strategy only).
        say: prints a progress line.
        strategy: ``rules`` | ``sampler`` | ``both`` | ``prior`` (:data:`~dpot.autopilot.sampling.STRATEGIES`).
        sampler: the model-based sampler (one of :data:`dpot.autopilot.sampling.SAMPLERS`: ``tpe`` | ``gp``).
        seed: the search's ``--seed`` (:func:`dpot.autopilot.sampling.sampler_seed`; None = the old fixed draws).
    """

    def __init__(self, store: TrialStore, dirs: SearchDir, steps: int, objective: Objective, candidates: int,
                 rules: str | None, explore: bool, say: Callable[[str], None], strategy: str = "both",
                 sampler: str = "tpe", seed: int | None = None):
        self.store, self.dirs, self.steps, self.objective = store, dirs, steps, objective
        self.candidates, self.rules, self.explore, self.say = candidates, rules, explore, say
        self.strategy, self.sampler, self.seed = strategy, sampler, seed

    # -------------------------------------------------------------- configs and enqueueing

    def config_of(self, name: str) -> dict:
        """The written config of run ``name`` ({} when there is none)."""
        path = self.dirs.config_path(name)
        return json.loads(path.read_text()) if path.exists() else {}

    def write_config(self, name: str, cfg: dict, budget_min: int) -> dict:
        """The run's config (name, output dir, budget, a checkpoint at every rung budget: ``save_freq`` divides
        ``budget_min``), written once; returns what is on disk."""
        if self.dirs.config_path(name).exists():
            return self.config_of(name)
        cfg = dict(cfg)
        cfg["job_name"], cfg["output_dir"] = name, str(self.dirs.run_dir(name))
        cfg["steps"], cfg["resume"] = self.steps, False
        cfg.pop("checkpoint_path", None)
        save = int(cfg.get("save_freq") or self.steps)
        cfg["save_freq"] = math.gcd(save, budget_min) if budget_min < self.steps else save
        write_text(self.dirs.config_path(name), json.dumps(cfg, indent=2) + "\n")
        return cfg

    def _written(self, record: TrialRecord, cfg: dict) -> TrialRecord:
        """Write the run's config and stamp the record with its params and digest."""
        cfg = self.write_config(record.name, cfg, record.budget_min or self.steps)
        record.params = config_params(cfg)
        record.digest = spec.config_digest(cfg)
        return record

    def enqueue(self, record: TrialRecord, cfg: dict) -> None:
        """Write the run's config (unless written) and enqueue its trial."""
        self.store.enqueue(self._written(record, cfg))

    def enqueue_planned(self, key: str, items: list[tuple[TrialRecord, dict]]) -> None:
        """Enqueue several trials so that a kill in between loses none: configs first, then the plan (study
        attribute ``key``), then the trials; :meth:`complete_plans` enqueues what a killed worker did not."""
        records = [self._written(record, cfg) for record, cfg in items]
        self.store.write_plan(key, records)
        for record in records:
            self.store.enqueue(record)

    def complete_plans(self, records: list[TrialRecord]) -> bool:
        """Enqueue the planned trials a killed worker left out. Returns True when it enqueued."""
        have = {(r.name, r.rung) for r in records}
        added = False
        for items in self.store.plans().values():
            for name, record in items:
                if (name, record.rung) not in have:
                    self.enqueue(record, self.config_of(name))
                    added = True
        return added

    def enqueue_base(self, base_cfg: dict) -> None:
        """The base run: iteration 0, the full budget."""
        self.enqueue(TrialRecord(name=BASE_RUN, iteration=0, parent=None, kind=Kind.BASE, budget=self.steps,
                                 budget_min=self.steps, title="base config"), base_cfg)

    def enqueue_retry(self, record: TrialRecord) -> None:
        """The LR-halved retry ``<name>-r`` of an unstable candidate (once)."""
        name = f"{record.name}-r"
        if any(e.record.name == name for e in self.store.entries()):
            return
        cfg = json.loads(self.dirs.config_path(record.name).read_text())
        parent_cfg = self.config_of(record.parent)
        changes = dict(record.changes)
        cfg, halved = scale_lr(cfg, 0.5)
        for key, new in halved.items():
            changes[key] = [cfgkeys.get(parent_cfg, key), new]
        retry = TrialRecord(name=name, iteration=record.iteration, parent=record.parent, kind=Kind.RETRY,
                            rung=record.rung, budget=record.budget, prev_budget=0, budget_min=record.budget_min,
                            title=record.title, changes=changes, diagnoses=[*record.diagnoses, "instability"],
                            retry_of=record.name)
        self.enqueue(retry, cfg)

    # -------------------------------------------------------------- successive halving

    def promote(self, it: int, current: list[Entry]) -> bool:
        """Successive halving: when the highest rung of iteration ``it`` (``current``: its trials) is done below
        the full budget, enqueue its best half at the next rung. Returns True when it enqueued."""
        budgets = next((e.record.budgets for e in current if e.record.budgets), [self.steps])
        top = max(e.record.rung for e in current)
        if top >= len(budgets) - 1:
            return False
        at = [e for e in current if e.record.rung == top and e.record.kind == Kind.CANDIDATE]
        ok = [e for e in at if e.record.decision == Decision.HALVING and e.value is not None]
        ok.sort(key=lambda e: e.value, reverse=self.objective.direction == "max")
        keep = ok[:max(1, len(at) // 2)]
        if not keep:
            return False
        items = [(e.record.next_rung(budgets, top + 1), self.config_of(e.record.name)) for e in keep]
        self.enqueue_planned(f"plan:{it}:{top + 1}", items)
        self.say(f"autopilot: iteration {it}: successive halving keeps {', '.join(e.record.name for e in keep)}"
                 f" for {budgets[top + 1]} steps")
        return True

    # -------------------------------------------------------------- the next iteration

    def fallback_parents(self, parent: str, records: list[TrialRecord]) -> list[str]:
        """``parent``, then every other run that was kept at the full budget, best objective first: where the
        best run's diagnoses are used up (each proposal already tried), the search goes on from the next best
        run's rather than stopping."""
        others = {r.name for r in records} - {parent}
        return [parent, *(name for _, name in kept_runs(records, self.steps, self.objective, among=others))]

    def propose_next(self, it: int, parent: str, records: list[TrialRecord]) -> str | None:
        """Enqueue iteration ``it`` from ``parent`` or, when nothing untried is proposed there, from the first
        fallback run (:meth:`fallback_parents`) that has something; when no run's diagnoses are left, sampled
        configs around ``parent`` (strategy ``both``) or one-step exploration moves (:func:`explore_moves`) around
        the same runs in the same order (strategy ``rules``, unless ``explore`` is off). Strategy ``sampler``:
        sampled configs around the base run only. Strategy ``prior``: sampled configs around ``parent`` with its
        diagnoses' fixes outside the searched space applied (:meth:`fixes_of`), no rule-proposed run. Returns the
        run used, None when none."""
        if self.strategy == "sampler":
            return BASE_RUN if self.sample_around(it, BASE_RUN, records) else None
        if self.strategy == "prior":
            centre, fixes = self.fixes_of(parent)
            return parent if self.sample_around(it, parent, records, centre=centre, fixes=fixes) else None
        for run in self.fallback_parents(parent, records):
            if self.propose(it, run, records):
                if run != parent:
                    self.say(f"autopilot: nothing new proposed for {parent}; iteration {it} continues from "
                             f"{run}, the next best kept run")
                return run
        if self.strategy == "both":
            if self.sample_around(it, parent, records):
                self.say(f"autopilot: no diagnosis left to act on for {parent} or any other kept run; "
                         f"iteration {it} samples around {parent} ({self.sampler})")
                return parent
            return None
        if self.explore:
            for run in self.fallback_parents(parent, records):
                if self.explore_around(it, run, records):
                    self.say(f"autopilot: no diagnosis left to act on for {parent} or any other kept run; "
                             f"iteration {it} explores one step around {run}")
                    return run
        return None

    def propose(self, it: int, parent: str, records: list[TrialRecord]) -> bool:
        """Enqueue up to K untried candidates of ``dpot propose`` on ``parent`` for iteration ``it``."""
        try:
            props = tools.propose(self.dirs.run_dir(parent), self.dirs.proposals_dir(parent), self.rules)
        except (RuntimeError, ValueError) as err:
            self.say(f"autopilot: dpot propose {parent} failed: {err}")
            return False
        cands = [Candidate(p.get("name"), p.get("title", p["name"]), list(p.get("findings") or []), cfg,
                           list(p.get("changes") or {})) for p, cfg in props
                 if cfgkeys.STEPS not in p.get("changes", {})]   # 'longer training': the budget per run is fixed
        share = self.negligible_ot_share(parent)
        if share is not None:
            for cand in [c for c in cands if only_ot_changes(c.keys or [])]:
                self.say(f"autopilot: passing over '{cand.title}' on {parent}: it changes only OT settings and "
                         f"the OT term is {100 * share:.3g} % of {parent}'s training loss (< {100 * OT_NEGLIGIBLE:g} "
                         f"%), too small to move {self.objective.key}")
            cands = [c for c in cands if not only_ot_changes(c.keys or [])]
        return self.enqueue_candidates(it, parent, cands, records)

    def fixes_of(self, parent: str) -> tuple[dict, list[str]]:
        """Strategy ``prior``: ``parent``'s config with its diagnoses' fixes that lie outside the searched space,
        and the rule ids applied.

        A proposal of ``dpot propose`` on ``parent`` is applied when it leaves the space's values
        (:func:`~dpot.autopilot.space.config_params`) and the budget as they are: a warmup cut to fit the run
        (``schedule_mismatch``), cost weights (``cost_dominance``), the OT marginals, the workers. Proposals are
        applied in their order; a key an earlier one set is kept. A diagnosis about the space's own values
        (``lr_low``, ``lr_high``, ``ot_weak``, ...) is no run of its own: the LR is drawn only where neither LR rule
        fires (:func:`dpot.autopilot.space.distributions`) and the sampler draws ``ot.lambda_ot`` / ``ot.reg``.
        OT-only fixes are left out when the OT term is a negligible share of ``parent``'s loss."""
        cfg = self.config_of(parent)
        try:
            props = tools.propose(self.dirs.run_dir(parent), self.dirs.proposals_dir(parent), self.rules)
        except (RuntimeError, ValueError) as err:
            self.say(f"autopilot: dpot propose {parent} failed: {err}; sampling around it unchanged")
            return cfg, []
        own = config_params(cfg)
        negligible = self.negligible_ot_share(parent) is not None
        done: set[str] = set()
        applied: list[str] = []
        for prop, new_cfg in props:
            keys = [k for k in (prop.get("changes") or {}) if k not in done]
            if not keys or cfgkeys.STEPS in keys or config_params(new_cfg) != own or (
                    negligible and only_ot_changes(keys)):
                continue
            for key in keys:
                cfg = cfgkeys.set_(cfg, key, cfgkeys.get(new_cfg, key))
            done.update(keys)
            applied += [f for f in prop.get("findings") or [prop.get("name")] if f and f not in applied]
        if applied:
            self.say(f"autopilot: sampling around {parent} with its diagnoses' fixes ({', '.join(applied)}: "
                     f"{', '.join(sorted(done))})")
        return cfg, applied

    def negligible_ot_share(self, run: str) -> float | None:
        """The OT term's share of ``run``'s training loss (:func:`~dpot.autopilot.decisions.ot_share`) when it is
        below :data:`~dpot.autopilot.decisions.OT_NEGLIGIBLE`; None otherwise (or when the run logs no OT term)."""
        try:
            share = ot_share(read_metrics(self.dirs.run_dir(run)))
        except (OSError, ValueError):
            return None
        return share if share is not None and share < OT_NEGLIGIBLE else None

    def sample_around(self, it: int, parent: str, records: list[TrialRecord], tries: int = 20,
                      centre: dict | None = None, fixes: list[str] | tuple = ()) -> bool:
        """Enqueue up to K configs drawn by the model-based sampler around ``parent`` (:mod:`.sampling`), told
        about every finished trial; a draw equal to a tried config is drawn again (at most ``tries`` draws).
        ``centre``: the config drawn around instead of ``parent``'s (strategy ``prior``: :meth:`fixes_of`), whose
        ``fixes`` (rule ids) each candidate lists after :data:`~dpot.autopilot.sampling.SAMPLED`."""
        from dpot.analysis.rules import load_rules

        parent_cfg = self.config_of(parent) if centre is None else centre
        space = sampling.sample_space(parent_cfg, load_rules(self.rules),
                                      ot_negligible=self.negligible_ot_share(parent) is not None)
        if not space:
            return False
        tried = {r.digest for r in records} | {spec.config_digest(self.config_of(parent))}
        cands: list[Candidate] = []
        for i in range(tries):
            params = sampling.draw(self.store.study, self.store.storage, self.sampler, space,
                                   seed=sampling.sampler_seed(self.seed, len(records), i),
                                   mark=self.store.mark_duplicate)
            cfg = sampling.apply_params(parent_cfg, params)
            digest = spec.config_digest({**cfg, "steps": self.steps})
            if digest in tried:
                continue
            tried.add(digest)
            title = "sampler: " + sampling.params_text(params) + (f" + fixes: {', '.join(fixes)}" if fixes else "")
            cands.append(Candidate(f"sampled_{i}", title, [sampling.SAMPLED, *fixes], cfg, None))
            if len(cands) >= self.candidates:
                break
        return self.enqueue_candidates(it, parent, cands, records, check_inert=False)

    def explore_around(self, it: int, parent: str, records: list[TrialRecord]) -> bool:
        """Enqueue up to K untried one-step exploration moves around ``parent`` for iteration ``it``."""
        cands = [Candidate(name, title, ["explore"], cfg, None)
                 for name, title, cfg in explore_moves(self.config_of(parent))]
        return self.enqueue_candidates(it, parent, cands, records)

    def enqueue_candidates(self, it: int, parent: str, cands: list[Candidate], records: list[TrialRecord],
                           check_inert: bool = True) -> bool:
        """Enqueue the first K of ``cands`` that are neither tried (same config digest) nor equal to ``parent``,
        nor (``check_inert``) only repeat moves that left the objective unchanged before (:func:`inert_moves`);
        successive halving when more than 2. Returns True if any."""
        parent_cfg = self.config_of(parent)
        parent_digest = spec.config_digest(parent_cfg)
        tried = {r.digest for r in records}
        inert = inert_moves(records)
        chosen = []
        for cand in cands:
            cfg = {**cand.config, "steps": self.steps}
            digest = spec.config_digest(cfg)
            if digest in tried or digest == parent_digest:
                continue
            changes = spec.leaf_changes(parent_cfg, cfg, list(cfg) if cand.keys is None else cand.keys)
            proof = repeats_inert(changes, inert) if check_inert else None
            if proof is not None:
                self.say(f"autopilot: passing over '{cand.title}' on {parent}: the same move of "
                         f"{', '.join(changes)} left {self.objective.key} unchanged in {proof}")
                continue
            tried.add(digest)
            chosen.append((cand, cfg, changes))
            if len(chosen) >= self.candidates:
                break
        if not chosen:
            return False
        budgets = sh_budgets(len(chosen), self.steps)
        letters = "abcdefghijklmnopqrstuvwxyz"
        items = [(TrialRecord(name=f"it{it}{letters[i]}", iteration=it, parent=parent, kind=Kind.CANDIDATE,
                              budget=budgets[0], budget_min=budgets[0], budgets=budgets, changes=changes,
                              diagnoses=cand.diagnoses, title=cand.title, proposal=cand.name), cfg)
                 for i, (cand, cfg, changes) in enumerate(chosen)]
        self.enqueue_planned(f"plan:{it}:0", items)
        self.say(f"autopilot: iteration {it} from {parent}: {len(chosen)} candidate(s) "
                 f"({', '.join(c.title for c, _, _ in chosen)})"
                 + (f"; successive halving at {budgets} steps" if len(budgets) > 1 else ""))
        return True
