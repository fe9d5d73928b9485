"""Declarative settings of the sim->real co-training study (``dpot bench study``): presets and methods.

A :class:`Preset` fixes the scale of a study (task, dataset sizes, image size, cameras, policy size, training
budget, evaluation episodes); a :class:`Method` fixes what one run trains on and how (which dataset plays the
source and which the target role, and the OT settings). Every method of a study gets the same preset, the same
budget and the same seeds.

How the baselines are expressed with the co-training trainer (which always mixes a "source" and a "target"
dataset, ``n_src = round(batch_ratio * batch_size)`` items from the first):

* ``target-only``: both roles are the *target* dataset, ``lambda_ot=0``, ``heuristic=false`` (uniform sampling).
  Every item of every batch is then a uniformly drawn target frame: plain behaviour cloning on the target demos
  with the full batch size, normalization stats of the target data. ``source-only`` is the same with the
  source dataset (evaluated in both domains; its target-domain score measures the raw domain gap).
* ``naive-cotrain``: the seed's batches (``batch_ratio=0.5``, temporally paired sampling) with ``lambda_ot=0``:
  exactly DP+OT minus the OT loss.
* ``dp-ot``: the seed's OT settings (``lambda_ot=0.1, reg=0.02, tau=0.01, heuristic=true, batch_ratio=0.5,
  window_size=20``, features: learned embedding weight 1.0 + action label weight 0.05). The seed's label term
  used ``dim_slice=[0, 8]`` of its robot's action; the benchmark's action is 4-d, so the label term uses the
  whole action (``dim_slice=null``).
* ``dp-ot-noheur``: ``dp-ot`` with ``heuristic=false`` (random pairing, no temporal prior).
* sweeps: ``dp-ot-lam0.05`` / ``dp-ot-lam0.2`` (with ``naive-cotrain`` = 0 and ``dp-ot`` = 0.1 they make the
  lambda_ot sweep {0, 0.05, 0.1, 0.2}) and two further (reg, tau) settings.
* ``dp-ot-median``: ``dp-ot`` with ``cost_norm=median`` (each cost term divided by its batch median, so the
  encoder cannot lower the OT cost by shrinking its embeddings: the ``embed_collapse`` diagnosis).

The ID/OOD methods (preset field ``methods="idood"``, :data:`IDOOD_METHODS`; the paper's sim-to-sim protocol):
target data only in the ``id`` half of the layout range, source data over the whole range, evaluation in the
target domain in both halves (``target_id``, ``target_ood``) and in the source domain (``source``):

* ``target-only`` / ``source-only`` as above (their seed 0 runs first: the calibration runs);
* ``naive-cotrain``: ``dp-ot-paper``'s batches (same data mix: 16 source + 16 target items, temporally paired
  sampling) with ``lambda_ot=0``;
* ``dp-ot-paper``: the official code's settings (:data:`PAPER_OT`): UOT ``reg=0.1``, ``tau_src=tau_tgt=0.05``,
  OT weight ``lambda_ot=0.1``, embedding scale 0.01 and (label) cost scale 0.05 (mapping below);
* ``dp-ot-seed``: the seed's OT settings (:data:`SEED_OT`), as the v1 ``dp-ot`` method;
* ``mmd``: ``dp-ot-paper`` with ``ot.method=mmd`` and ``heuristic=false`` (the paper's MMD baseline is run with
  no temporal pairing);
* ``dp-ot-paired``: ``dp-ot-paper`` with ``ot.paired_region=true`` (OT partners of a target item only from
  source episodes of its region, the paper's paired subsets; BC sees all source items).

Mapping of the official scales to dpot's keys (:data:`PAPER_OT`): the official cost is
``M = s_emb * ||z_s - z_t||^2 + s_cost * ||y_s - y_t||^2`` over the encoder features ``z`` and the label ``y``
(the end-effector pose), with ``s_emb = 0.01`` and ``s_cost = 0.05``. dpot's cost is
``C = sum_k w_k C_k`` with ``C_k`` the squared distance *divided by the feature dimension* (``cost_norm=dim``):
so ``weight_embed = 0.01`` and ``weight_label = 0.05`` keep the official weights and their 1:5 ratio, while
``cost_norm=dim`` keeps each term O(weight) whatever the feature size (raw squared distances over dpot's
64-value action chunks and learned embeddings would be ~10-100x larger than the official per-step pose and
drive the plan's mass to zero at ``reg + tau_src + tau_tgt = 0.2``). The label is dpot's normalized action
chunk (the benchmark's state holds no end-effector orientation; the hand position is in the action's
integral). ``window_size`` stays the seed's 20 frames (the official window of 10 is counted in their
subsampled frames). These are the closest dpot expressions, not an exact copy.

``dp-ot-official`` (:data:`OFFICIAL_OT`, the powered design of issue 19) is the official cost as exactly as dpot's keys
express it: one embed term over the concatenation of every camera's features and the normalized state
(``concat``/``include_state``: the U-Net's whole conditioning, the official ``z``) at weight 0.01, the hand position
(``observation.state`` dims 0-2, current step, raw metres: ``normalized=false``) at 0.05, plain squared distances
(``cost_norm="none"``), reg 0.1, tau 0.05/0.05, lambda 0.1, window 10 frames, phase pairing. What still differs from
the official code is listed in docs/results.md ("Cost balance").

In all study runs ``eval.val_fraction=0`` and ``eval_freq=0``: every target demo is used for training (a held-out
episode would otherwise leak into ``target-only``'s "source" half) and closed-loop success is the measure.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from dpot.errors import UserError, did_you_mean

SEED_OT = {"lambda_ot": 0.1, "reg": 0.02, "tau_src": 0.01, "tau_tgt": 0.01, "heuristic": True,
           "batch_ratio": 0.5, "window_size": 20,
           "features": [{"type": "embed", "use_learned_embed": True, "weight_embed": 1.0},
                        {"type": "label", "key": "action", "dim_slice": None, "weight_label": 0.05}]}


# The official code's cost as exactly as dpot's keys express it (module docstring, "dp-ot-official"):
# M = 0.01 ||z_s - z_t||^2 + 0.05 ||p_s - p_t||^2, z = the encoder's whole output for an item (every camera's
# features and the state the U-Net is conditioned on), p = the hand position (observation.state dims 0-2) of the
# current step in metres; plain squared distances (cost_norm none); reg 0.1, tau 0.05/0.05, lambda 0.1, window 10.
OFFICIAL_OT = {**SEED_OT, "lambda_ot": 0.1, "reg": 0.1, "tau_src": 0.05, "tau_tgt": 0.05, "window_size": 10,
               "cost_norm": "none",
               "features": [{"type": "embed", "use_learned_embed": True, "weight_embed": 0.01, "concat": True,
                             "include_state": True},
                            {"type": "label", "key": "observation.state", "dim_slice": [0, 3], "time_index": -1,
                             "normalized": False, "weight_label": 0.05}]}

PAPER_OT = {**SEED_OT, "lambda_ot": 0.1, "reg": 0.1, "tau_src": 0.05, "tau_tgt": 0.05, "cost_norm": "dim",
            "features": [{"type": "embed", "use_learned_embed": True, "weight_embed": 0.01},
                         {"type": "label", "key": "action", "dim_slice": None, "weight_label": 0.05}]}

# The official mechanism as exactly as dpot's keys say it (issue 31, docs/results.md "Pre-registration (v4)"): the
# diagonal prior (the plan lives on the DTW partner pairs), a separate OT batch of 16 DTW partner pairs beside the
# BC batch (the fork's max(1, int(batch_size * batch_ratio))), partners from the study's pair file (PAIR_FILE_ARGS:
# DTW over the z-scored hand position) drawn with p ∝ exp(-10 dist), p < 0.01 dropped, the frame within 10 frames
# of the aligned one; cost M = 0.01 ||f_s - f_t||^2 per camera (the policy's own image features, no state) +
# 0.05 ||p_s - p_t||^2 (hand position, metres, current step), plain squared distances; reg 0.1, tau 0.05/0.05,
# lambda 0.1. pair_info_path is filled in per task by the study (Study.datasets).
FAITHFUL_OT = {**SEED_OT, "lambda_ot": 0.1, "reg": 0.1, "tau_src": 0.05, "tau_tgt": 0.05, "window_size": 10,
               "cost_norm": "none", "prior": "diagonal", "sharpness": 10.0, "cutoff": 0.01, "pair_batch_size": 16,
               "features": [{"type": "embed", "use_learned_embed": True, "weight_embed": 0.01, "time_index": -1},
                            {"type": "label", "key": "observation.state", "dim_slice": [0, 3], "time_index": -1,
                             "normalized": False, "weight_label": 0.05}]}
# ``dpot pairs build`` arguments of a study's pair file (the official pairing: DTW over z-scored state sequences,
# here the hand position; the 20 closest demos per target episode, every frame)
PAIR_FILE_ARGS = {"label": "state", "dims": (0, 3), "top_k": 20, "stride": 1, "window": None}
PAIR_FILE_PLACEHOLDER = "{study_pairs}"

# The fork's ACT iterations' OT block (issue 21; docs/coming-from-the-fork.md): weight_embed 0.3333 per camera
# (the fork's three cameras; two here), action-chunk label 0.02, reg 0.2, tau 1.0, lambda 0.12, window 8,
# DTW-weighted source partners (sharpness 0.5, top-20 demos; dpot's own DTW of the action trajectories)
ACT_FORK_OT = {**SEED_OT, "lambda_ot": 0.12, "reg": 0.2, "tau_src": 1.0, "tau_tgt": 1.0, "window_size": 8,
               "sharpness": 0.5, "topk_src_episodes": 20,
               "features": [{"type": "embed", "use_learned_embed": True, "weight_embed": 0.3333},
                            {"type": "label", "key": "action", "dim_slice": None, "weight_label": 0.02}]}

# Episode seeds (named ranges, the same for every method of a study): generation attempt i of a dataset uses
# seed DATA_SEEDS[role] + i (at most 2 * episodes + 10 attempts); evaluation episode k of every cell uses
# EVAL_SEED + k (dpot.bench.evaluate). Layouts of a region are drawn from these seeds (dpot.bench.env).
DATA_SEEDS = {"source": 0, "target": 50_000}
EVAL_SEED = 100_000

# Evaluation cells: name -> (dataset role whose domain is used, region of the layouts)
EVAL_CELLS = {"target": ("target", "all"), "source": ("source", "all"),
              "target_id": ("target", "id"), "target_ood": ("target", "ood")}


@dataclass(frozen=True)
class Method:
    """One arm of the study: ``source``/``target`` name the datasets ("source" or "target" data) that fill the
    trainer's two roles; ``ot`` overrides the ``base`` OT settings; ``group`` orders the plan (0 = core first);
    ``calibration``: its seed-0 run comes before every other job (the calibration measurements)."""

    name: str
    source: str
    target: str
    ot: dict
    group: int
    help: str
    base: dict = field(default_factory=lambda: SEED_OT)
    calibration: bool = False
    # seeds of this arm (None = the preset's / --seeds); batch_size: None = the preset's (target-only-16 sets 16 so
    # that it sees 16 target items per step, the co-training arms' target exposure)
    seeds: int | None = None
    batch_size: int | None = None
    # top-level train-config overrides of this arm (a dict value is merged into the job's section of that name:
    # {"policy": {"optimizer_lr": 1e-6}}); the objective study's LR / schedule / optimizer variants
    train: dict = field(default_factory=dict)

    def ot_config(self) -> dict:
        """The full ``ot`` section of the run's train config."""
        return {**json.loads(json.dumps(self.base)), **json.loads(json.dumps(self.ot))}


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("target-only", "target", "target", {"lambda_ot": 0.0, "heuristic": False}, 0,
           "BC on the target demos only"),
    Method("naive-cotrain", "source", "target", {"lambda_ot": 0.0}, 0, "co-training, lambda_ot=0"),
    Method("dp-ot", "source", "target", {}, 0, "DP+OT, the seed's OT settings"),
    Method("source-only", "source", "source", {"lambda_ot": 0.0, "heuristic": False}, 1,
           "BC on the source demos only"),
    Method("dp-ot-noheur", "source", "target", {"heuristic": False}, 1, "DP+OT with heuristic=false"),
    Method("dp-ot-lam0.05", "source", "target", {"lambda_ot": 0.05}, 2, "lambda_ot sweep"),
    Method("dp-ot-lam0.2", "source", "target", {"lambda_ot": 0.2}, 2, "lambda_ot sweep"),
    Method("dp-ot-reg0.05-tau0.05", "source", "target", {"reg": 0.05, "tau_src": 0.05, "tau_tgt": 0.05}, 2,
           "reg/tau sweep: looser plan"),
    Method("dp-ot-reg0.1-tau1", "source", "target", {"reg": 0.1, "tau_src": 1.0, "tau_tgt": 1.0}, 2,
           "reg/tau sweep: near-balanced plan"),
    Method("dp-ot-median", "source", "target", {"cost_norm": "median"}, 3,
           "scale-invariant cost: each term divided by its batch median (the embed_collapse rule's proposal)"),
]}

IDOOD_METHODS: dict[str, Method] = {m.name: m for m in [
    Method("target-only", "target", "target", {"lambda_ot": 0.0, "heuristic": False}, 0,
           "BC on the target demos only (id half)", base=PAPER_OT, calibration=True),
    Method("naive-cotrain", "source", "target", {"lambda_ot": 0.0}, 0,
           "co-training, dp-ot-paper's data mix, lambda_ot=0", base=PAPER_OT),
    Method("dp-ot-paper", "source", "target", {}, 0, "DP+OT, the official code's settings", base=PAPER_OT),
    Method("dp-ot-seed", "source", "target", {}, 1, "DP+OT, the seed's OT settings"),
    Method("source-only", "source", "source", {"lambda_ot": 0.0, "heuristic": False}, 2,
           "BC on the source demos only (whole range)", base=PAPER_OT, calibration=True),
    Method("mmd", "source", "target", {"method": "mmd", "heuristic": False}, 2,
           "MMD alignment of the embeddings, no temporal pairing", base=PAPER_OT),
    Method("dp-ot-paired", "source", "target", {"paired_region": True}, 2,
           "dp-ot-paper with OT partners only from the target item's region", base=PAPER_OT),
]}
# The powered design (issue 19; docs/results.md, "Pre-registration"): the primary contrast dp-ot-official vs
# naive-cotrain, the secondary dp-ot-seed vs naive-cotrain, dp-ot-paper at 3 seeds, and the exposure control
# target-only-16 (16 target items per step, as the co-training arms see). Core arms first, seed by seed.
POWERED_METHODS: dict[str, Method] = {m.name: m for m in [
    Method("naive-cotrain", "source", "target", {"lambda_ot": 0.0}, 0,
           "co-training, the same data mix, lambda_ot=0", base=PAPER_OT, seeds=7),
    Method("dp-ot-official", "source", "target", {}, 0, "DP+OT, the official cost as exactly as dpot expresses it",
           base=OFFICIAL_OT, seeds=7),
    Method("dp-ot-seed", "source", "target", {}, 0, "DP+OT, the seed's OT settings", seeds=7),
    Method("target-only-16", "target", "target", {"lambda_ot": 0.0, "heuristic": False}, 1,
           "BC on the target demos only, 16 items per step (the co-training arms' target exposure)",
           base=PAPER_OT, seeds=3, batch_size=16),
    Method("dp-ot-paper", "source", "target", {}, 1, "DP+OT, the official numbers mapped onto cost_norm=dim",
           base=PAPER_OT, seeds=3),
]}

# The second task (breadth): calibration (target-only, source-only seed 0) first, then the primary contrast (3 seeds
# in v3; seeds 3-4 added for v4, so v3's H1 is read at 5 seeds on this task too: a replication)
TASK2_METHODS: dict[str, Method] = {m.name: m for m in [
    Method("target-only", "target", "target", {"lambda_ot": 0.0, "heuristic": False}, 0,
           "BC on the target demos only (id half)", base=PAPER_OT, calibration=True, seeds=3),
    Method("source-only", "source", "source", {"lambda_ot": 0.0, "heuristic": False}, 2,
           "BC on the source demos only (whole range): calibration criterion (b)", base=PAPER_OT,
           calibration=True, seeds=1),
    Method("naive-cotrain", "source", "target", {"lambda_ot": 0.0}, 0,
           "co-training, the same data mix, lambda_ot=0", base=PAPER_OT, seeds=5),
    Method("dp-ot-official", "source", "target", {}, 0, "DP+OT, the official cost as exactly as dpot expresses it",
           base=OFFICIAL_OT, seeds=5),
]}
# The first ACT result (issue 21, item 4): ACT target-only vs ACT + OT (the fork's ACT OT block) on cpu-idood's data;
# it shows ACT trains and evaluates through dpot's study, it is not a claim about OT (one seed)
ACT_METHODS: dict[str, Method] = {m.name: m for m in [
    Method("target-only", "target", "target", {"lambda_ot": 0.0, "heuristic": False}, 0,
           "ACT on the target demos only (id half)", base=ACT_FORK_OT),
    Method("dp-ot-act", "source", "target", {}, 0, "ACT + OT, the fork's ACT OT settings", base=ACT_FORK_OT),
]}
# The evidence, take four (issue 31; docs/results.md "Pre-registration (v4)"): dp-ot-faithful at 5 seeds on each
# task. Its comparison arms are v3's own runs, with v3's settings: naive-cotrain seeds 0-4 of button-press in
# cpu-idood-powered, naive-cotrain and dp-ot-official seeds 0-4 of drawer-open in cpu-idood-task2 (seeds 3-4 added
# for v4); scripts/v4_results.py reads the three studies together
V4_METHODS: dict[str, Method] = {m.name: m for m in [
    Method("dp-ot-faithful", "source", "target", {"pair_info_path": PAIR_FILE_PLACEHOLDER}, 0,
           "DP+OT, the official mechanism: diagonal prior on a separate batch of DTW partner pairs", base=FAITHFUL_OT,
           seeds=5),
]}
# v4 on a lent GPU (scripts/gpu_study.sh's default): the comparison arm runs beside the faithful one at the GPU scale
V4_GPU_METHODS: dict[str, Method] = {m.name: m for m in [
    Method("naive-cotrain", "source", "target", {"lambda_ot": 0.0}, 0,
           "co-training, the same data mix, lambda_ot=0 (v3's arm)", base=PAPER_OT),
    V4_METHODS["dp-ot-faithful"],
]}


def _naive(name: str, help_: str, seeds: int | None = None, **train) -> Method:
    """An arm of the objective study: v3's naive co-training (PAPER_OT's batches, lambda_ot 0) with ``train``."""
    return Method(name, "source", "target", {"lambda_ot": 0.0}, 0, help_, base=PAPER_OT, seeds=seeds, train=train)


# The objective's predictivity study (issue 32; docs/benchmarks.md, "The objective study: pre-registration"): 12
# configs on cpu-objective (the cpu-idood data and policy, 1000 steps, a checkpoint every 250 evaluated closed-loop
# in both target cells): the LR from near-untrained (1e-6, planted) to far too high (3e-2, planted) around the
# study's 3e-4, a constant schedule, AdamW, a warmup longer than the run and the faithful OT term at two weights;
# the planted near-untrained arm and the reference arm with 3 seeds (the planted-last criterion is per seed)
ADAMW = {"type": "adamw", "lr": 3e-4, "betas": [0.95, 0.999], "eps": 1e-8, "weight_decay": 1e-2,
         "grad_clip_norm": 10.0}
OBJECTIVE_METHODS: dict[str, Method] = {m.name: m for m in [
    _naive("lr-3e-4", "the study's own settings (Adam preset, lr 3e-4, cosine, warmup 50): the reference", seeds=3),
    _naive("lr-1e-6", "planted: LR 300x below the reference, near-untrained at the budget", seeds=3,
           policy={"optimizer_lr": 1e-6}),
    _naive("lr-1e-5", "LR 30x below the reference", policy={"optimizer_lr": 1e-5}),
    _naive("lr-1e-4", "LeRobot's Diffusion preset LR", policy={"optimizer_lr": 1e-4}),
    _naive("lr-1e-3", "LR 3x above the reference", policy={"optimizer_lr": 1e-3}),
    _naive("lr-3e-3", "LR 10x above the reference (the top of the autopilot's LR range)",
           policy={"optimizer_lr": 3e-3}),
    _naive("lr-3e-2", "planted: LR 100x above the reference", policy={"optimizer_lr": 3e-2}),
    _naive("constant-3e-4", "the reference LR without warmup or decay", policy={"scheduler_name": "constant"}),
    _naive("adamw-3e-4", "AdamW (weight decay 1e-2) at the reference LR and schedule",
           use_policy_training_preset=False, optimizer=ADAMW,
           scheduler={"type": "diffuser", "name": "cosine", "num_warmup_steps": 50}),
    _naive("warmup-2000", "planted: a warmup twice the run (the LR never reaches 3e-4)",
           policy={"scheduler_warmup_steps": 2000}),
    Method("faithful-0.1", "source", "target", {"pair_info_path": PAIR_FILE_PLACEHOLDER}, 0,
           "v4's dp-ot-faithful (lambda_ot 0.1)", base=FAITHFUL_OT, seeds=1),
    Method("faithful-1.0", "source", "target", {"pair_info_path": PAIR_FILE_PLACEHOLDER, "lambda_ot": 1.0}, 0,
           "dp-ot-faithful with lambda_ot 1.0", base=FAITHFUL_OT, seeds=1),
]}
METHOD_TABLES = {"v1": METHODS, "idood": IDOOD_METHODS, "powered": POWERED_METHODS, "task2": TASK2_METHODS,
                 "act": ACT_METHODS, "v4": V4_METHODS, "v4-gpu": V4_GPU_METHODS, "objective": OBJECTIVE_METHODS}

# The contrasts each method table pre-registers (docs/results.md, "Pre-registration"), arm A − arm B, read in the
# target cells by dpot.bench.study.contrasts (seed-paired t as the main test, layout-paired as the secondary)
CONTRASTS: dict[str, tuple[tuple[str, str], ...]] = {
    "powered": (("dp-ot-official", "naive-cotrain"), ("dp-ot-seed", "naive-cotrain"),
                ("target-only-16", "naive-cotrain"), ("dp-ot-paper", "naive-cotrain")),
    "task2": (("dp-ot-official", "naive-cotrain"), ("naive-cotrain", "target-only")),
}


@dataclass(frozen=True)
class Preset:
    """The scale of a study. ``policy`` is merged into the policy section of the demo's CPU config
    (:func:`train_config`), or replaces it when it names another ``type`` (:func:`policy_section`);
    ``save_every`` = checkpoint interval (each intermediate checkpoint gets a target-domain evaluation of
    ``curve_episodes`` episodes: the learning curve); ``eval_episodes`` per domain for the final checkpoint;
    ``tasks``: the first is the default, the others are allowed."""

    name: str
    tasks: tuple[str, ...]
    source_episodes: int
    target_episodes: int
    image_size: int
    cameras: tuple[str, ...]
    steps: int
    batch_size: int
    save_every: int
    policy: dict
    eval_episodes: int
    curve_episodes: int
    eval_max_steps: int = 150
    num_workers: int = 2
    eval_workers: int | None = None
    device: str | None = None
    seeds: int = 3
    warmup_steps: int = 50
    log_freq: int = 10
    note: str = ""
    eval_domains: tuple[str, ...] = ("target", "source")
    extra: dict = field(default_factory=dict)
    # added with the ID/OOD protocol; a study.json written before lacks them and had these defaults
    obs: str = "full"
    shift: str = "target"
    source_region: str = "all"
    target_region: str = "all"
    curve_domains: tuple[str, ...] = ("target",)
    methods: str = "v1"
    # added with the powered design (issue 19): the first evaluation episode seed of every cell (layouts are drawn
    # from it: a new eval_seed gives layouts never used before) and the episodes of the source cell (None = the
    # same as the target cells' eval_episodes)
    eval_seed: int = EVAL_SEED
    source_eval_episodes: int | None = None
    # rough one-core costs for ``--plan``'s estimate (measured on the cpu-idood policy: docs/results.md)
    cpu_s_per_step: float = 0.75
    cpu_s_per_episode: float = 1.2

    def cell_episodes(self, cell: str) -> int:
        """Final-checkpoint evaluation episodes of ``cell`` (``source`` may have fewer than the target cells)."""
        if cell == "source" and self.source_eval_episodes is not None:
            return self.source_eval_episodes
        return self.eval_episodes

    @property
    def method_table(self) -> dict[str, Method]:
        """The methods this preset's study runs (:data:`METHOD_TABLES`)."""
        return METHOD_TABLES[self.methods]

    def to_dict(self) -> dict:
        """JSON-ready copy (recorded in ``study.json`` so a study is never continued with other settings)."""
        return json.loads(json.dumps(asdict(self)))


# The pilot's settings (docs/results.md, "Calibration"): 4-d state, goal only in the images, 10 target demos
# in the id half, 100 source demos over the whole range; target-only 86 % ID / 8 % OOD, source-only 14 %
# target vs 50 % source at 1500 steps (~12 min per run on one core, two runs side by side)
CPU_IDOOD = Preset(
    "cpu-idood", ("button-press-topdown-v3",), source_episodes=100, target_episodes=10, image_size=64,
    cameras=("corner4", "gripperPOV"), steps=1500, batch_size=32, save_every=500,
    policy={"n_obs_steps": 1, "down_dims": [64, 128, 256], "resize_shape": [64, 64], "crop_ratio": 0.875,
            "use_separate_rgb_encoder_per_camera": False, "num_inference_steps": 10},
    eval_episodes=50, curve_episodes=20, num_workers=2, eval_workers=2, device="cpu", seeds=3,
    note="2 CPU cores, two sittings: ~12 min training + ~8 min evaluation per run",
    eval_domains=("target_id", "target_ood", "source"), obs="proprio", shift="target",
    target_region="id", curve_domains=("target_id", "target_ood"), methods="idood")

PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("micro", ("button-press-topdown-v3",), source_episodes=2, target_episodes=2, image_size=32,
           cameras=("corner4", "gripperPOV"), steps=4, batch_size=4, save_every=2,
           policy={"down_dims": [16, 32], "horizon": 8, "n_action_steps": 4, "diffusion_step_embed_dim": 32,
                   "num_inference_steps": 2, "spatial_softmax_num_keypoints": 8},
           eval_episodes=1, curve_episodes=1, eval_max_steps=12, num_workers=0, eval_workers=1, device="cpu",
           seeds=1, warmup_steps=1, log_freq=1, note="for tests: seconds per job, no learning"),
    # target_episodes=10: the pilot with 20 demos saturated (target-only 20/20 at step 1000 of 1500).
    # n_obs_steps=1 halves the image encoder's work (measured 2.06 -> 1.08 s/step on one thread) and 600 steps
    # fit the 13 core + sweep runs into one 2-core sitting (docs/results.md: how the budget was chosen)
    Preset("cpu-small", ("button-press-topdown-v3",), source_episodes=100, target_episodes=10, image_size=64,
           cameras=("corner4", "gripperPOV"), steps=600, batch_size=32, save_every=300,
           policy={"n_obs_steps": 1, "down_dims": [64, 128, 256], "resize_shape": [64, 64], "crop_ratio": 0.875,
                   "use_separate_rgb_encoder_per_camera": False, "num_inference_steps": 10},
           eval_episodes=50, curve_episodes=20, num_workers=2, eval_workers=2, device="cpu", seeds=3,
           note="2 CPU cores: ~0.9 s/step at 64 px (docs/results.md), ~1.1 s/step on one thread, "
                "~12-15 min training + ~5 min evaluation per run"),
    Preset("micro-idood", ("button-press-topdown-v3",), source_episodes=2, target_episodes=2, image_size=32,
           cameras=("corner4", "gripperPOV"), steps=4, batch_size=4, save_every=2,
           policy={"down_dims": [16, 32], "horizon": 8, "n_action_steps": 4, "diffusion_step_embed_dim": 32,
                   "num_inference_steps": 2, "spatial_softmax_num_keypoints": 8, "n_obs_steps": 1},
           eval_episodes=1, curve_episodes=1, eval_max_steps=12, num_workers=0, eval_workers=1, device="cpu",
           seeds=1, warmup_steps=1, log_freq=1, note="for tests: cpu-idood's protocol at seconds per job",
           eval_domains=("target_id", "target_ood", "source"), obs="proprio", shift="target-visual",
           target_region="id", curve_domains=("target_id", "target_ood"), methods="idood"),
    Preset("micro-powered", ("button-press-topdown-v3", "drawer-open-v3"), source_episodes=2, target_episodes=2,
           image_size=32, cameras=("corner4", "gripperPOV"), steps=4, batch_size=4, save_every=4,
           policy={"down_dims": [16, 32], "horizon": 8, "n_action_steps": 4, "diffusion_step_embed_dim": 32,
                   "num_inference_steps": 2, "spatial_softmax_num_keypoints": 8, "n_obs_steps": 1},
           eval_episodes=2, curve_episodes=1, eval_max_steps=12, num_workers=0, eval_workers=1, device="cpu",
           seeds=1, warmup_steps=1, log_freq=1, note="for tests: cpu-idood-powered's arms at seconds per job",
           eval_domains=("target_id", "target_ood", "source"), obs="proprio", shift="target-visual",
           target_region="id", curve_domains=("target_id", "target_ood"), methods="powered",
           eval_seed=200_000, source_eval_episodes=1),
    Preset("micro-v4", ("button-press-topdown-v3", "drawer-open-v3"), source_episodes=2, target_episodes=2,
           image_size=32, cameras=("corner4", "gripperPOV"), steps=4, batch_size=4, save_every=4,
           policy={"down_dims": [16, 32], "horizon": 8, "n_action_steps": 4, "diffusion_step_embed_dim": 32,
                   "num_inference_steps": 2, "spatial_softmax_num_keypoints": 8, "n_obs_steps": 1},
           eval_episodes=2, curve_episodes=1, eval_max_steps=12, num_workers=0, eval_workers=1, device="cpu",
           seeds=1, warmup_steps=1, log_freq=1, note="for tests: gpu-idood-v4's arms at seconds per job",
           eval_domains=("target_id", "target_ood", "source"), obs="proprio", shift="target-visual",
           target_region="id", curve_domains=("target_id", "target_ood"), methods="v4-gpu",
           eval_seed=200_000, source_eval_episodes=1),
    CPU_IDOOD,
    # The objective's predictivity study (issue 32, OBJECTIVE_METHODS): cpu-idood's data and policy on button-press,
    # 1000 steps with a checkpoint every 250, each checkpoint evaluated in both target cells with 50 episodes on new
    # layouts (eval_seed 300000), no source cell
    replace(CPU_IDOOD, name="cpu-objective", steps=1000, save_every=250, eval_episodes=50, curve_episodes=50, seeds=1,
            methods="objective", eval_seed=300_000, eval_domains=("target_id", "target_ood"),
            policy=dict(CPU_IDOOD.policy),
            note="2 CPU cores: 16 jobs, ~13 min training (faithful ~21) + ~9 min evaluation each on one core"),
    Preset("micro-objective", ("button-press-topdown-v3",), source_episodes=2, target_episodes=2, image_size=32,
           cameras=("corner4", "gripperPOV"), steps=4, batch_size=4, save_every=2,
           policy={"down_dims": [16, 32], "horizon": 8, "n_action_steps": 4, "diffusion_step_embed_dim": 32,
                   "num_inference_steps": 2, "spatial_softmax_num_keypoints": 8, "n_obs_steps": 1},
           eval_episodes=1, curve_episodes=1, eval_max_steps=12, num_workers=0, eval_workers=1, device="cpu",
           seeds=1, warmup_steps=1, log_freq=1, note="for tests: cpu-objective's arms at seconds per job",
           eval_domains=("target_id", "target_ood"), obs="proprio", shift="target-visual", target_region="id",
           curve_domains=("target_id", "target_ood"), methods="objective", eval_seed=300_000),
    # The powered design (issue 19, docs/results.md "Pre-registration"): cpu-idood's data, policy and budget, new
    # evaluation layouts (eval_seed 200000: seeds never used by a study before), 200 episodes per target cell and
    # 50 for the source cell; per-arm seeds in POWERED_METHODS (7 for the core arms, 3 for the others)
    replace(CPU_IDOOD, name="cpu-idood-powered", eval_episodes=200, seeds=7, methods="powered", eval_seed=200_000,
            source_eval_episodes=50, policy=dict(CPU_IDOOD.policy),
            note="2 CPU cores, several sittings: ~19 min training + ~10 min evaluation per run on one core"),
    # The second task (breadth): drawer-open-v3, the drawer's position only in the images (4-d state), the same
    # protocol, budget and criteria as cpu-idood, evaluated like cpu-idood-powered
    # The first ACT result (issue 21): cpu-idood's data, budget (1500 steps, batch 32) and protocol, the powered
    # design's evaluation (new layouts, 200 / 200 / 50 episodes), one seed. ACT CPU-sized as the U-Net is:
    # dim_model 256 / feed-forward 1024 (LeRobot's 512 / 3200: 52 M parameters, 2x the step time on one core),
    # chunk 16 (8 executed, the U-Net's horizon), ResNet18 without pretrained weights, so lr 1e-4 for the whole
    # model (LeRobot's ACT preset, 1e-5 with a 1e-5 backbone, assumes ImageNet weights), constant schedule.
    replace(CPU_IDOOD, name="cpu-idood-act", eval_episodes=200, seeds=1, methods="act", eval_seed=200_000,
            source_eval_episodes=50, cpu_s_per_step=1.2,
            policy={"type": "act", "n_obs_steps": 1, "chunk_size": 16, "n_action_steps": 8, "dim_model": 256,
                    "dim_feedforward": 1024, "optimizer_lr": 1e-4, "optimizer_lr_backbone": 1e-4},
            note="2 CPU cores: ~30 min training + ~10 min evaluation per run on one core"),
    replace(CPU_IDOOD, name="cpu-idood-task2", tasks=("drawer-open-v3",), eval_episodes=200, methods="task2",
            eval_seed=200_000, source_eval_episodes=50, policy=dict(CPU_IDOOD.policy),
            note="2 CPU cores, several sittings: calibration (target-only, source-only seed 0) first"),
    # The evidence, take four (issue 31): cpu-idood's data, policy and budget on both tasks, the powered design's
    # evaluation (eval_seed 200000, 200 / 200 / 50 episodes), V4_METHODS
    replace(CPU_IDOOD, name="cpu-idood-v4", tasks=("button-press-topdown-v3", "drawer-open-v3"), eval_episodes=200,
            seeds=5, methods="v4", eval_seed=200_000, source_eval_episodes=50, policy=dict(CPU_IDOOD.policy),
            note="2 CPU cores, several sittings: dp-ot-faithful ~1.6x a co-training run's step (its pair batch)"),
    # The cpu-idood protocol at a GPU budget (scripts/gpu_study.sh: the core methods side by side on one lent GPU,
    # one seed per call, <= 9 min per command with data generation and evaluation): 96 px images, a twice wider
    # U-Net, batch 64 and 3000 steps (2x cpu-idood's samples per step, 2x its steps). The GPU step time was not
    # measured when this was chosen: at <= ~80 ms/step with three trainers sharing the GPU the training takes
    # <= 4 min; the script's time guard stops a slower sitting (resumable: the next call continues it).
    Preset("gpu-idood", ("button-press-topdown-v3",), source_episodes=100, target_episodes=10, image_size=96,
           cameras=("corner4", "gripperPOV"), steps=3000, batch_size=64, save_every=1000,
           policy={"n_obs_steps": 1, "down_dims": [128, 256, 512], "resize_shape": [96, 96], "crop_ratio": 0.875,
                   "use_separate_rgb_encoder_per_camera": False, "num_inference_steps": 10},
           eval_episodes=50, curve_episodes=10, num_workers=3, eval_workers=4, device="cuda", seeds=1,
           warmup_steps=100, log_freq=50,
           note="one lent GPU, 16 cores: the core methods side by side (scripts/gpu_study.sh), one seed per call",
           eval_domains=("target_id", "target_ood", "source"), obs="proprio", shift="target",
           target_region="id", curve_domains=("target_id", "target_ood"), methods="idood"),
    # The powered design's primary contrast at the GPU budget (scripts/gpu_study.sh's default since issue 19):
    # gpu-idood's scale, POWERED_METHODS, the new layouts (eval_seed 200000) at 200 / 200 / 50 episodes
    Preset("gpu-idood-powered", ("button-press-topdown-v3",), source_episodes=100, target_episodes=10, image_size=96,
           cameras=("corner4", "gripperPOV"), steps=3000, batch_size=64, save_every=1000,
           policy={"n_obs_steps": 1, "down_dims": [128, 256, 512], "resize_shape": [96, 96], "crop_ratio": 0.875,
                   "use_separate_rgb_encoder_per_camera": False, "num_inference_steps": 10},
           eval_episodes=200, curve_episodes=10, num_workers=3, eval_workers=6, device="cuda", seeds=1,
           warmup_steps=100, log_freq=50,
           note="one lent GPU, 16 cores: naive-cotrain vs dp-ot-official side by side (scripts/gpu_study.sh)",
           eval_domains=("target_id", "target_ood", "source"), obs="proprio", shift="target",
           target_region="id", curve_domains=("target_id", "target_ood"), methods="powered",
           eval_seed=200_000, source_eval_episodes=50),
    # v4 at the GPU budget (scripts/gpu_study.sh's default since issue 31): gpu-idood-powered's scale and evaluation,
    # naive-cotrain beside dp-ot-faithful
    Preset("gpu-idood-v4", ("button-press-topdown-v3", "drawer-open-v3"), source_episodes=100, target_episodes=10,
           image_size=96, cameras=("corner4", "gripperPOV"), steps=3000, batch_size=64, save_every=1000,
           policy={"n_obs_steps": 1, "down_dims": [128, 256, 512], "resize_shape": [96, 96], "crop_ratio": 0.875,
                   "use_separate_rgb_encoder_per_camera": False, "num_inference_steps": 10},
           eval_episodes=200, curve_episodes=10, num_workers=3, eval_workers=6, device="cuda", seeds=1,
           warmup_steps=100, log_freq=50,
           note="one lent GPU, 16 cores: naive-cotrain vs dp-ot-faithful side by side (scripts/gpu_study.sh)",
           eval_domains=("target_id", "target_ood", "source"), obs="proprio", shift="target",
           target_region="id", curve_domains=("target_id", "target_ood"), methods="v4-gpu",
           eval_seed=200_000, source_eval_episodes=50),
    Preset("gpu-full", ("push-v3", "pick-place-v3", "button-press-topdown-v3"), source_episodes=200,
           target_episodes=20, image_size=96, cameras=("corner4", "gripperPOV", "topview"), steps=30000,
           batch_size=64, save_every=5000,
           policy={"down_dims": [512, 1024, 2048], "resize_shape": [96, 96], "crop_ratio": 0.875,
                   "use_separate_rgb_encoder_per_camera": True, "diffusion_step_embed_dim": 128,
                   "noise_scheduler_type": "DDIM", "num_inference_steps": 10},
           eval_episodes=100, curve_episodes=50, num_workers=8, eval_workers=8, device=None, seeds=3,
           warmup_steps=500, log_freq=50, note="one GPU; seed scale"),
]}


def train_config(source: dict, target: dict, run_dir: Path, *, steps: int, batch_size: int, num_workers: int,
                device: str) -> dict:
    """The CPU-sized DP+OT train config shared by ``dpot demo`` and the study (which overrides its scale and OT
    section per preset and method): 64 px policy with one shared ResNet18 without pretrained weights, U-Net
    ``[32, 64, 128]``, DDIM 10 steps, the seed's OT settings, offline evaluation on 20 % of the target episodes."""
    return {
        "dataset": target,
        "source_dataset": source,
        "output_dir": str(run_dir),
        "job_name": "dpot_demo",
        "policy": {"type": "diffusion", "device": device, "push_to_hub": False,
                   "pretrained_backbone_weights": None, "use_group_norm": True,
                   "use_separate_rgb_encoder_per_camera": False, "down_dims": [32, 64, 128],
                   "n_obs_steps": 2, "horizon": 16, "n_action_steps": 8, "diffusion_step_embed_dim": 64,
                   "noise_scheduler_type": "DDIM", "num_inference_steps": 10,
                   "optimizer_lr": 3e-4, "scheduler_warmup_steps": max(1, steps // 10)},
        "use_policy_training_preset": True,
        "steps": steps, "batch_size": batch_size, "num_workers": num_workers,
        "dataloader_multiprocessing_context": "fork", "prefetch_factor": 2,
        "log_freq": 10, "save_freq": max(1, steps // 2), "eval_freq": max(1, steps // 2),
        "eval": {"n_batches": 5, "val_fraction": 0.2},
        "ot": {"lambda_ot": 0.1, "reg": 0.02, "tau_src": 0.01, "tau_tgt": 0.01, "heuristic": True,
               "batch_ratio": 0.5, "window_size": 20,
               "features": [{"type": "embed", "use_learned_embed": True, "weight_embed": 1.0},
                            {"type": "label", "key": "action", "dim_slice": None, "weight_label": 0.05}]},
        "wandb": {"enable": False}, "env_eval_freq": 0, "seed": 1000,
    }


def policy_section(preset: Preset, base: dict, warmup_steps: int) -> dict:
    """The policy section of a study job: ``base`` (:func:`train_config`'s Diffusion policy) updated with the
    preset's ``policy`` and its warmup, or, when the preset names another ``type`` (``act``), that policy alone on
    ``base``'s device, without pretrained weights (none are downloaded) and not pushed."""
    if preset.policy.get("type", base["type"]) != base["type"]:
        return {"device": base["device"], "push_to_hub": False, "pretrained_backbone_weights": None, **preset.policy}
    return {**base, **preset.policy, "scheduler_warmup_steps": warmup_steps}


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (UserError with a suggestion otherwise)."""
    if name not in PRESETS:
        raise UserError(f"--preset: unknown '{name}'{did_you_mean(name, PRESETS)}; one of {', '.join(PRESETS)}")
    return PRESETS[name]


def parse_methods(text: str | None, table: dict[str, Method] | None = None) -> list[Method]:
    """Methods of ``table`` (default: the v1 :data:`METHODS`) named in a comma-separated ``--only`` list (all
    methods when empty), in plan order (group, then table order)."""
    table = METHODS if table is None else table
    order = list(table)
    if not text:
        return sorted(table.values(), key=lambda m: (m.group, order.index(m.name)))
    out = []
    for name in (x.strip() for x in text.split(",")):
        if not name:
            continue
        if name not in table:
            raise UserError(f"--only: unknown method '{name}'{did_you_mean(name, table)}; "
                            f"one of {', '.join(table)}")
        if table[name] not in out:
            out.append(table[name])
    if not out:
        raise UserError(f"--only: no method given; e.g. --only {order[0]},{order[-1]}")
    return sorted(out, key=lambda m: (m.group, order.index(m.name)))


__all__ = ["ACT_FORK_OT", "ACT_METHODS", "CONTRASTS", "DATA_SEEDS", "EVAL_CELLS", "EVAL_SEED", "IDOOD_METHODS",
           "METHODS", "METHOD_TABLES", "OBJECTIVE_METHODS", "OFFICIAL_OT", "PAPER_OT", "POWERED_METHODS", "PRESETS",
           "SEED_OT", "TASK2_METHODS", "Method", "Preset", "get_preset", "parse_methods", "policy_section",
           "train_config"]
