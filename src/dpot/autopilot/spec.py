"""The search's identity and inputs: objective parsing, base-config validation, ``DIR/autopilot.json``.

A search is identified by (base config content, objective, steps per candidate, candidates per iteration, storage):
rerunning ``dpot autopilot`` with the same values on the same ``--out`` continues it; other values on a directory
that holds a search are refused (``--iterations`` may grow: it only moves the stop).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from dpot import rundir
from dpot.analysis import cfgkeys
from dpot.errors import UserError
from dpot.metric_names import EVAL_LOSS

DEFAULT_OBJECTIVE = f"{EVAL_LOSS}:min"
SPEC_FILE = "autopilot.json"
SPEC_VERSION = 1


@dataclass
class Settings:
    """Everything ``dpot autopilot`` was asked for (see :mod:`dpot.autopilot.cli` for each option)."""

    config_path: str
    out: Path
    iterations: int = 3
    candidates: int = 3
    steps: int | None = None
    objective: str = DEFAULT_OBJECTIVE
    storage: str | None = None
    launcher: str | None = None
    rules: str | None = None
    max_regression: float = 0.10
    patience: int = 2
    min_delta: float = 0.01
    pruner: str = "median"
    prune_broken: bool = True
    bench_episodes: int = 10
    bench_max_steps: int = 150
    explore: bool = True
    strategy: str = "both"
    sampler: str = "tpe"
    seed: int | None = None
    poll_s: float = 0.5
    quiet: bool = False


@dataclass(frozen=True)
class Objective:
    """A logged metric and its direction (``min`` or ``max``)."""

    key: str
    direction: str

    @property
    def text(self) -> str:
        return f"{self.key}:{self.direction}"

    @property
    def bench_task(self) -> str | None:
        """The task of a closed-loop ``bench:<task>`` objective, else None."""
        return self.key.split(":", 1)[1] if self.key.startswith("bench:") else None

    def better(self, a: float, b: float) -> bool:
        """True when ``a`` is strictly better than ``b``."""
        return a < b if self.direction == "min" else a > b

    def regression(self, child: float, parent_best: float) -> float:
        """Relative worsening of ``child`` against ``parent_best`` (> 0 = worse): ``(child - best) / |best|`` for
        min, ``(best - child) / |best|`` for max."""
        scale = abs(parent_best) or 1e-12
        diff = child - parent_best if self.direction == "min" else parent_best - child
        return diff / scale


def parse_objective(text: str) -> Objective:
    """``METRIC[:min|max]`` -> Objective (default direction: min; ``.../success...`` max); ``bench:<task>`` -> the
    closed-loop target-domain success rate of ``dpot bench eval`` (max)."""
    text = (text or "").strip()
    if text.startswith("bench:"):
        task, _, direction = text[len("bench:"):].partition(":")
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", task) or direction not in ("", "max"):
            raise UserError(f"--objective: '{text}' is not bench:<task> (e.g. bench:push-v3; success rate, max)")
        return Objective(f"bench:{task}", "max")
    key, _, direction = text.rpartition(":") if text.endswith((":min", ":max")) else (text, "", "")
    if not direction:
        direction = "max" if re.search(r"success|accuracy|reward", key) else "min"
    if not key or not re.fullmatch(r"[A-Za-z0-9_./\-]+", key):
        raise UserError(f"--objective: '{text}' is not METRIC[:min|max] (e.g. {DEFAULT_OBJECTIVE})")
    return Objective(key, direction)


def leaf_changes(old_cfg: dict, new_cfg: dict, keys) -> dict:
    """``{dotted leaf key: [old, new]}`` for the leaves under ``keys`` whose values differ between the configs
    (a changed dict is split into its changed leaves; lists compare whole)."""
    out: dict = {}

    def walk(key, old, new):
        if isinstance(old, dict) and isinstance(new, dict):
            for k in list(old) + [k for k in new if k not in old]:
                walk(f"{key}.{k}", old.get(k), new.get(k))
        elif old != new:
            out[key] = [old, new]

    for key in keys:
        walk(key, cfgkeys.get(old_cfg, key), cfgkeys.get(new_cfg, key))
    return out


def load_base_config(path: str | Path) -> dict:
    """Validate ``path`` as a ``dpot train`` config (the trainer's own loader; UserError naming the field) and
    return the resolved config as JSON data."""
    from dpot.config import config_to_dict, load_train_config

    try:
        cfg = load_train_config(path)
    except UserError as err:
        msg = str(err).removeprefix("--config_path: ")      # the file's own fault is already about this flag
        raise UserError(f"--config_path: invalid base config: {msg}") from None
    data = config_to_dict(cfg)
    for k in ("resume", "checkpoint_path"):
        data.pop(k, None)
    return data


def config_digest(cfg: dict) -> str:
    """sha256 of a config's canonical JSON, without the run-instance keys (names, output dir, checkpointing)."""
    c = {k: v for k, v in cfg.items() if k not in ("output_dir", "job_name", "save_freq", "resume",
                                                   "checkpoint_path")}
    return hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()


def training_digest(cfg: dict) -> str:
    """:func:`config_digest` of what the trainer reads of ``cfg`` (a resolved config, :func:`load_base_config`): with
    LeRobot's policy presets on (``use_policy_training_preset``) the explicit ``optimizer``/``scheduler`` are
    dropped (the presets replace them, ``dpot.train.build.resolve_optim``); with them off, the policy's preset fields
    (``policy.optimizer_*``, ``policy.scheduler_*``, read only by the presets) are dropped. Two configs with the
    same training digest train the same run (same data, model, optimiser, schedule, OT and seed)."""
    c = json.loads(json.dumps(cfg, default=str))
    if c.get(cfgkeys.PRESET, True):
        c.pop("optimizer", None)
        c.pop("scheduler", None)
    else:
        pol = c.get("policy") or {}
        for k in [k for k in pol if k.startswith(("optimizer_", "scheduler_"))]:
            pol.pop(k)
    return config_digest(c)


def mask_url(url: str) -> str:
    """A storage URL without its password (what is written to disk and printed)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


@dataclass(frozen=True)
class SearchDir:
    """Where a search keeps its runs: ``runs/<name>`` (a dpot run directory), ``configs/<name>.json`` (its train
    config, written before it is enqueued), ``logs/<name>.log`` (its training output), ``proposals/<name>/`` (what
    ``dpot propose`` made on it)."""

    out: Path

    def run_dir(self, name: str) -> Path:
        return self.out / "runs" / name

    def config_path(self, name: str) -> Path:
        return self.out / "configs" / f"{name}.json"

    def log_path(self, name: str) -> Path:
        return rundir.log_path(self.out, name)

    def proposals_dir(self, name: str) -> Path:
        return self.out / "proposals" / name


@dataclass
class SearchSpec:
    """What identifies a search (written to ``DIR/autopilot.json``)."""

    base_config_sha256: str
    objective: str
    steps: int
    candidates: int
    storage: str                # masked URL
    study_name: str
    version: int = SPEC_VERSION
    # added with --strategy / --sampler (issue 22): how the search picks candidates; a file written before them
    # lacks these keys and is continued with the asked values (LATER_FIELDS)
    strategy: str = "both"
    sampler: str = "tpe"

    def as_dict(self) -> dict:
        return asdict(self)


#: SearchSpec fields an ``autopilot.json`` written by an earlier version may lack (not a difference when absent)
LATER_FIELDS = ("strategy", "sampler")


def check_out_dir(out: Path, spec: SearchSpec) -> bool:
    """Check that ``out`` is empty, absent, or holds this very search (the same identity, :class:`SearchSpec`:
    another ``--strategy`` or ``--sampler`` is another search). Returns True when it holds it (resume)."""
    path = out / SPEC_FILE
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            raise UserError(f"--out: {path} is unreadable; this directory does not hold a dpot autopilot search "
                            f"this version can continue; choose another --out") from None
        diff = [k for k, v in spec.as_dict().items() if old.get(k) != v
                and not (k in LATER_FIELDS and k not in old)]
        if diff:
            what = ", ".join(f"{k} {old.get(k)!r} (asked: {spec.as_dict()[k]!r})" for k in diff
                             if k != "base_config_sha256")
            if "base_config_sha256" in diff:
                what = "another base config" + (f", {what}" if what else "")
            raise UserError(f"--out: {out} holds another search ({what}); rerun with its arguments to continue it "
                            f"or choose another --out")
        return True
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out: {out} exists and does not hold a dpot autopilot search; choose an empty or new "
                        f"directory")
    return False
