"""Run readers: one interface (``open_run(spec) -> Run``) over four kinds of RUN, each a :class:`RunReader`.

* a dpot run directory (``metrics.jsonl`` + ``train_config.json``: :mod:`dpot.rundir`),
* a W&B offline run (``wandb/offline-run-*/run-*.wandb``, or an output dir holding ``wandb/``), read with
  wandb's own record reader (``wandb.sdk.internal.datastore``), no network,
* a W&B online run ``entity/project/run_id`` through ``wandb.Api()`` (paginated ``scan_history``),
* a TensorBoard log directory (tensorboard's ``EventAccumulator``).

Every reader answers ``config()`` (the resolved train config), ``lineage()`` (the parent run of a
proposal-made run), ``term_kinds()`` (the OT cost-term kinds the trainer recorded) and ``scan()`` (the
metric history); :meth:`RunReader.read` assembles them into a :class:`Run`. Every logged key is normalized
through :mod:`dpot.analysis.aliases`; ``Run.raw_keys`` keeps what was seen.
"""

from __future__ import annotations

import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import ClassVar

from dpot import metric_names, rundir
from dpot.analysis.aliases import canonical_key
from dpot.errors import UserError
from dpot.fork_config import is_fork_config, translate_fork_config

KINDS = ("dpot", "wandb-offline", "wandb-online", "tensorboard")
TERM_KINDS = ("embed", "label")
TERMS_CONFIG_KEY = "dpot_ot_terms"     # the trainer's ot_terms.json mapping, in the W&B config


@dataclass
class Run:
    """A run's history and config, whatever stored it.

    ``history[key]`` is a list of ``(step, value)`` sorted by step, keyed by canonical metric key;
    ``sources[key]`` is the raw key it came from; ``notes`` are reader remarks (partial file, ...);
    ``term_kinds`` maps each OT cost term to ``"embed"`` | ``"label"`` as recorded at logging time (None when
    the run did not record it: then rules classify terms by name).
    """

    run_id: str
    kind: str
    location: str
    config: dict = field(default_factory=dict)
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    raw_keys: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    local_dir: Path | None = None
    parent: str | None = None
    times: list[tuple[int, float]] = field(default_factory=list)   # (step, wall-clock seconds) when logged
    term_kinds: dict[str, str] | None = None

    @property
    def last_step(self) -> int:
        """Largest step seen in any metric (0 when none)."""
        return max((s[-1][0] for s in self.history.values() if s), default=0)


class _Collector:
    def __init__(self):
        self.series: dict[str, dict[int, float]] = {}
        self.sources: dict[str, str] = {}
        self.raw: set[str] = set()
        self.times: dict[int, float] = {}

    def add_time(self, step, ts) -> None:
        if isinstance(ts, (int, float)) and not isinstance(ts, bool):
            self.times.setdefault(int(step), float(ts))

    def add(self, step: int, raw_key: str, value) -> None:
        if raw_key.startswith("_") or raw_key in ("step", "global_step"):
            return
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, (int, float)):
            return  # strings, histograms, images: not scalar metrics
        self.raw.add(raw_key)
        key = canonical_key(raw_key)
        if key in self.sources and self.sources[key] != raw_key and raw_key != key:
            return  # the canonical (or first-seen) spelling wins
        if raw_key == key and key in self.sources and self.sources[key] != key:
            self.series[key] = {}
        self.sources[key] = raw_key
        self.series.setdefault(key, {})[int(step)] = float(value)

    def fill(self, run: Run) -> Run:
        run.history = {k: sorted(v.items()) for k, v in self.series.items() if v}
        run.sources = {k: self.sources[k] for k in run.history}
        run.raw_keys = sorted(self.raw)
        run.times = sorted(self.times.items())
        return run


# ---------------------------------------------------------------- kind detection

_WANDB_PATH = re.compile(r"^(?:wandb:)?([\w.-]+)/([\w.-]+)/(?:runs/)?([\w-]+)$")
_WANDB_URL = re.compile(r"^https?://(?:www\.)?wandb\.ai/([\w.-]+)/([\w.-]+)/runs/([\w-]+)")


def _wandb_file_in(path: Path) -> Path | None:
    """The ``run-*.wandb`` file for a W&B offline run dir, an output dir holding ``wandb/``, or the file."""
    if path.is_file() and path.suffix == ".wandb":
        return path
    cands = sorted(path.glob("run-*.wandb"))
    if cands:
        return cands[-1]
    wdir = path / "wandb" if (path / "wandb").is_dir() else (path if path.name == "wandb" else None)
    if wdir is not None:
        latest = wdir / "latest-run"
        runs = ([latest] if latest.exists() else []) + sorted(wdir.glob("offline-run-*"), reverse=True)
        runs += sorted(wdir.glob("run-*"), reverse=True)
        for r in runs:
            if r.is_dir():
                found = sorted(r.glob("run-*.wandb"))
                if found:
                    return found[-1]
    return None


def _tb_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("events.out.tfevents.*") if p.is_file()) if path.is_dir() else []


def runs_in(folder: Path) -> list[tuple[str, Path]]:
    """``(kind, folder)`` of every run stored under ``folder``, sorted: dpot run dirs, W&B offline runs (one per
    run id: the folders of a resumed run count once) and TensorBoard runs (each folder holding event files, as
    TensorBoard itself counts runs). A W&B or TensorBoard log inside a dpot run dir is part of that run, and event
    files inside a ``wandb`` folder (synced TensorBoard) are part of the W&B run."""
    dpot = sorted({p.parent for p in folder.rglob(rundir.METRICS_FILE) if rundir.is_run_dir(p.parent)})

    def owned(p: Path) -> bool:
        return any(p == d or d in p.parents for d in dpot)

    wandb: dict[str, Path] = {}
    for f in sorted(folder.rglob("run-*.wandb")):
        if f.is_file() and not owned(f):
            wandb.setdefault(f.stem.removeprefix("run-"), f.parent)
    tb = {p.parent for p in _tb_files(folder)}
    tb = {d for d in tb if not owned(d) and "wandb" not in d.relative_to(folder).parts}
    found = [("dpot", d) for d in dpot] + [("wandb-offline", d) for d in wandb.values()]
    return sorted(found + [("tensorboard", d) for d in tb], key=lambda r: (str(r[1]), r[0]))


def _listing(folder: Path, runs: list[tuple[str, Path]], limit: int = 8) -> str:
    names = [f"{kind} {d.relative_to(folder) if d != folder else '.'}" for kind, d in runs[:limit]]
    more = f", and {len(runs) - limit} more" if len(runs) > limit else ""
    return ", ".join(names) + more


def detect_kind(spec: str) -> str:
    """Which of ``KINDS`` ``spec`` is; raises UserError when it is none of them, or when it is a folder holding
    several runs (of any kinds: :func:`runs_in`), which are never merged into one."""
    path = Path(spec).expanduser()
    if path.exists():
        if rundir.is_run_dir(path):
            return "dpot"
        if path.is_dir():
            runs = runs_in(path)
            if len(runs) > 1:
                raise UserError(f"{spec}: holds {len(runs)} runs ({_listing(path, runs)}); runs are never merged "
                                f"into one: pass one of them")
            if runs and runs[0][0] == "tensorboard":
                return "tensorboard"
            if runs and _wandb_file_in(path) is None:
                raise UserError(f"{spec}: not a run itself; it holds one run ({_listing(path, runs)}): pass that")
        if _wandb_file_in(path) is not None:
            return "wandb-offline"
        raise UserError(
            f"{spec}: not a run: expected a dpot run dir ({rundir.METRICS_FILE}), a W&B offline run "
            f"(wandb/offline-run-*/run-*.wandb), a TensorBoard log dir (events.out.tfevents.*) or a W&B path "
            f"entity/project/run_id")
    if _WANDB_URL.match(spec) or _WANDB_PATH.match(spec):
        return "wandb-online"
    raise UserError(f"{spec}: no such file or directory, and not a W&B run path (entity/project/run_id)")


def open_run(spec: str) -> Run:
    """Read one run, whatever stored it, into a :class:`Run` (the analysis' only entry to run data).

    Args:
        spec: a dpot run directory (``metrics.jsonl``), a W&B offline run directory (``wandb/offline-run-*``,
            or an output directory holding ``wandb/``), a TensorBoard log directory (``events.out.tfevents.*``),
            or a W&B run path ``entity/project/run_id`` (read online).

    Returns:
        The run: ``history`` under canonical metric keys (:mod:`dpot.analysis.aliases`), its resolved config,
        parent run, recorded cost-term kinds and reader notes (e.g. a torn last line dropped).

    Raises:
        UserError: ``spec`` is none of these kinds, cannot be read, or holds no metric yet.
    """
    kind = detect_kind(spec)
    run = READERS[kind](spec).read()
    if not run.history:
        raise UserError(f"{spec}: the run has no metrics yet ({kind}); wait for the first log_freq step "
                        f"or check that logging is enabled")
    return run


# ---------------------------------------------------------------- the reader protocol

class RunReader(ABC):
    """One kind of RUN, opened from ``spec``: what every reader answers, and :meth:`read` that assembles it."""

    kind: ClassVar[str]

    def __init__(self, spec: str):
        self.spec = spec

    @abstractmethod
    def config(self) -> dict:
        """The run's resolved train config (``{}`` when none is found)."""

    @abstractmethod
    def lineage(self) -> str | None:
        """The parent run (a RUN spec) of a proposal-made run, None when not recorded."""

    @abstractmethod
    def term_kinds(self) -> dict[str, str] | None:
        """OT cost term -> ``"embed"`` | ``"label"`` as the trainer recorded it, None when it did not."""

    @abstractmethod
    def new_run(self) -> Run:
        """An empty :class:`Run` with this run's id, kind, location and local dir."""

    @abstractmethod
    def scan(self, run: Run, col: _Collector) -> None:
        """Add every logged scalar to ``col`` (and summary values / reader notes to ``run``)."""

    def read(self) -> Run:
        """The whole :class:`Run`: history, config, lineage and term kinds."""
        run = self.new_run()
        col = _Collector()
        self.scan(run, col)
        run.config = self.config()
        run.parent = self.lineage()
        run.term_kinds = self.term_kinds()
        col.fill(run)
        lam = (run.config.get("ot") or {}).get("lambda_ot") if isinstance(run.config.get("ot"), dict) else None
        if metric_names.upgrade_legacy(run.history, lam if isinstance(lam, (int, float)) else None):
            run.notes.append("written by a dpot before the fork's metric meanings: ot_loss read as ot_loss_scaled "
                             "(and divided by lambda_ot), ot_cost/<term> as ot_cost_plan/<term>, ot_cost_mean/<term> "
                             "as ot_cost/<term>")
            run.sources = {k: run.sources.get(k, k) for k in run.history}
        return run


def _lineage_in(directory: Path) -> str | None:
    """Parent run of a proposal-made run: ``<dir>/parent.json`` or ``<dir>/../lineage.json[<dir name>]``."""
    own = directory / "parent.json"
    if own.exists():
        return rundir.load_json_object(own).get("parent")
    shared = directory.parent / rundir.LINEAGE_FILE
    if shared.exists():
        entry = rundir.load_json_object(shared).get(directory.name)
        if isinstance(entry, dict) and entry.get("parent"):
            return entry["parent"]
    return None


def _first_config(candidates: Iterable[Path]) -> dict | None:
    """The first existing ``train_config.json`` of ``candidates``, read; None when none exists."""
    for cand in candidates:
        if cand.exists():
            return rundir.load_json_object(cand)
    return None


def _checked_term_kinds(value, where: str) -> dict[str, str]:
    """``value`` as a term -> kind mapping; UserError naming ``where`` when it is not one."""
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and v in TERM_KINDS for k, v in value.items()):
        raise UserError(f"{where}: expected a mapping of OT cost term name to one of {', '.join(TERM_KINDS)}; "
                        f"fix or remove it")
    return dict(value)


def _terms_file_in(directories: Iterable[Path]) -> dict[str, str] | None:
    """The ``terms`` of the first ``ot_terms.json`` in ``directories`` (:func:`dpot.rundir.read_terms`); None when
    there is none."""
    for d in directories:
        if rundir.terms_path(d).exists():
            return _checked_term_kinds(rundir.read_terms(d), f"{rundir.terms_path(d)}: terms")
    return None


def _terms_from_config(wandb_config: dict, where: str) -> dict[str, str] | None:
    """The ``dpot_ot_terms`` entry of a W&B config, None when absent."""
    value = wandb_config.get(TERMS_CONFIG_KEY)
    return None if value is None else _checked_term_kinds(value, f"{where}: {TERMS_CONFIG_KEY}")


# ---------------------------------------------------------------- dpot run dir

class _LocalDirReader(RunReader):
    """A run in a local directory: ``train_config.json`` and ``ot_terms.json`` from the first of
    :meth:`search_dirs` holding them, lineage files beside the directory."""

    def __init__(self, spec: str):
        super().__init__(spec)
        self.dir = Path(spec).expanduser()

    def search_dirs(self) -> list[Path]:
        """Where config and term kinds are looked for, in order."""
        return [self.dir]

    def new_run(self) -> Run:
        return Run(run_id=self.dir.resolve().name, kind=self.kind, location=str(self.dir), local_dir=self.dir)

    def config(self) -> dict:
        return _first_config([rundir.config_path(d) for d in self.search_dirs()]) or {}

    def lineage(self) -> str | None:
        return _lineage_in(self.dir)

    def term_kinds(self) -> dict[str, str] | None:
        return _terms_file_in(self.search_dirs())


class DpotDirReader(_LocalDirReader):
    """A dpot run dir: ``metrics.jsonl``, ``train_config.json``, ``ot_terms.json``, lineage files."""

    kind = "dpot"

    def scan(self, run: Run, col: _Collector) -> None:
        """Read ``metrics.jsonl``; a partial last line (run still writing) is ignored, with a note."""
        d = self.dir
        if not rundir.config_path(d).exists():
            run.notes.append(f"{rundir.CONFIG_FILE} missing: config-based rules are skipped")
        log = rundir.load_metrics(d, strict=True)
        if log.torn_tail:
            run.notes.append(f"{rundir.METRICS_FILE}: last line is incomplete (run still writing?); "
                             "read up to the last complete record")
        for rec in log.rows:
            for k, v in rec.items():
                col.add(rec["step"], k, v)
            col.add_time(rec["step"], rec.get("_timestamp", rec.get("time")))


# ---------------------------------------------------------------- W&B offline

def _unflatten_wandb_config(cfg: dict) -> dict:
    out = {}
    for k, v in cfg.items():
        if k.startswith("_"):
            continue
        out[k] = v.get("value") if isinstance(v, dict) and set(v) <= {"value", "desc"} else v
    return out


def _train_config_of(wandb_config: dict) -> dict:
    """A W&B config without the entries dpot adds for the analysis (not train config keys); a LeRobot OT fork
    run's config (its ``ot.loss_config`` block) in dpot's keys (:func:`dpot.fork_config.translate_fork_config`),
    so the rules know its prior (``heuristic: true`` = the diagonal prior) and cost scale."""
    cfg = {k: v for k, v in wandb_config.items() if k != TERMS_CONFIG_KEY}
    if is_fork_config(cfg):
        try:
            cfg, _ = translate_fork_config(cfg)
        except UserError:   # a fork config dpot cannot express: read it as logged
            pass
    return cfg


def _json_items(items) -> Iterator[tuple[str, object]]:
    """``(key, value)`` of W&B record items (``key`` or ``nested_key`` joined by '/', ``value_json``
    parsed); items whose value is not JSON are skipped."""
    for item in items:
        key = item.key or "/".join(item.nested_key)
        try:
            yield key, json.loads(item.value_json)
        except json.JSONDecodeError:
            continue


@dataclass
class _OfflineScan:
    """What one pass over a ``.wandb`` file found."""

    config: dict = field(default_factory=dict)
    history_rows: int = 0
    exited: bool = False
    truncated: str | None = None


class WandbOfflineReader(RunReader):
    """A ``.wandb`` file read with wandb's datastore (stops at the last complete record if truncated); the
    resolved config, lineage and term kinds of a plain lerobot-train / dpot output dir holding ``wandb/`` win."""

    kind = "wandb-offline"

    def __init__(self, spec: str):
        super().__init__(spec)
        self.file = _wandb_file_in(Path(spec).expanduser())
        run_dir = self.file.parent
        self.out_dir = run_dir.parent.parent if run_dir.parent.name == "wandb" else None
        self.found = _OfflineScan()

    def new_run(self) -> Run:
        return Run(run_id=self.file.stem.removeprefix("run-"), kind=self.kind, location=str(self.file),
                   local_dir=self.out_dir if self.out_dir is not None else self.file.parent)

    def config(self) -> dict:
        """The newest resolved ``train_config.json`` of the output dir, else the W&B config."""
        if self.out_dir is not None:
            cfg = _first_config([rundir.config_path(self.out_dir), *sorted(rundir.checkpoints_root(
                self.out_dir).glob(f"*/{rundir.MODEL_DIR}/{rundir.CONFIG_FILE}"), reverse=True)])
            if cfg is not None:
                return cfg
        return _train_config_of(self.found.config)

    def lineage(self) -> str | None:
        return _lineage_in(self.out_dir) if self.out_dir is not None else None

    def term_kinds(self) -> dict[str, str] | None:
        recorded = _terms_file_in([self.out_dir]) if self.out_dir is not None else None
        return recorded if recorded is not None else _terms_from_config(self.found.config, str(self.file))

    def scan(self, run: Run, col: _Collector) -> None:
        from wandb.proto import wandb_internal_pb2 as pb
        from wandb.sdk.internal import datastore

        found, wfile = self.found, self.file
        raw_config = {}
        ds = datastore.DataStore()
        try:
            ds.open_for_scan(str(wfile))
        except Exception as err:  # bad magic / header: not a W&B file or cut before its header
            raise UserError(f"{wfile}: not a readable W&B run file ({type(err).__name__}: {err}); "
                            f"the file is truncated or corrupt") from None
        while True:
            try:
                data = ds.scan_data()
            except Exception as err:
                found.truncated = f"{type(err).__name__}"
                break
            if data is None:
                break
            rec = pb.Record()
            try:
                rec.ParseFromString(data)
            except Exception:
                found.truncated = "bad record"
                break
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                row = dict(_json_items(rec.history.item))
                step = row.get("_step", rec.history.step.num if rec.history.HasField("step") else found.history_rows)
                for k, v in row.items():
                    col.add(step, k, v)
                col.add_time(step, row.get("_timestamp"))
                found.history_rows += 1
            elif kind == "config":
                raw_config.update(_json_items(rec.config.update))
            elif kind == "run":
                if rec.run.run_id:
                    run.run_id = rec.run.run_id
                raw_config.update(_json_items(rec.run.config.update))
            elif kind == "summary":
                run.summary.update(_json_items(rec.summary.update))
            elif kind == "exit":
                found.exited = True
        found.config = _unflatten_wandb_config(raw_config)
        if found.truncated is not None:
            if found.history_rows == 0:
                raise UserError(f"{wfile}: truncated W&B file ({found.truncated}) with no complete history record; "
                                f"re-sync or re-copy the run")
            run.notes.append(f"{wfile.name} ends mid-record (truncated or still writing): "
                             f"read up to the last complete record ({found.history_rows} history rows)")
        elif not found.exited:
            run.notes.append("no exit record: the run is still running or was killed; read what exists")


# ---------------------------------------------------------------- W&B online

def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1].split("/")[0]
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class WandbOnlineReader(RunReader):
    """``entity/project/run_id`` (or its URL) through ``wandb.Api()``: full history (all keys, paginated
    ``scan_history``), config, summary; the parent run is ``dpot_meta.parent`` of the config."""

    kind = "wandb-online"

    def __init__(self, spec: str):
        super().__init__(spec)
        m = _WANDB_URL.match(spec) or _WANDB_PATH.match(spec)
        self.entity, self.project, self.run_id = m.groups()
        self.path = f"{self.entity}/{self.project}/{self.run_id}"

    @cached_property
    def _wrun(self):
        if not _has_wandb_key():
            raise UserError(f"{self.spec}: no W&B API key (set WANDB_API_KEY or run 'wandb login'), or pass a "
                            f"local run dir / W&B offline run instead")
        import wandb

        api = wandb.Api(timeout=int(os.environ.get("DPOT_WANDB_TIMEOUT", "20")))
        return api.run(self.path)

    @cached_property
    def _wandb_config(self) -> dict:
        return _unflatten_wandb_config(dict(self._wrun.config))

    def new_run(self) -> Run:
        return Run(run_id=self.run_id, kind=self.kind,
                   location=f"https://wandb.ai/{self.entity}/{self.project}/runs/{self.run_id}")

    def config(self) -> dict:
        return _train_config_of(self._wandb_config)

    def lineage(self) -> str | None:
        meta = self._wandb_config.get("dpot_meta")
        return meta.get("parent") if isinstance(meta, dict) else None

    def term_kinds(self) -> dict[str, str] | None:
        return _terms_from_config(self._wandb_config, self.path)

    def scan(self, run: Run, col: _Collector) -> None:
        wrun = self._wrun
        run.summary = {k: v for k, v in dict(wrun.summary).items() if not k.startswith("_")}
        for i, row in enumerate(wrun.scan_history(page_size=1000)):
            step = row.get("_step", i)
            for k, v in row.items():
                col.add(step, k, v)
            col.add_time(step, row.get("_timestamp"))

    def read(self) -> Run:
        """As :meth:`RunReader.read`; any API or network failure is one UserError line."""
        try:
            return super().read()
        except UserError:
            raise
        except Exception as err:
            msg = " ".join(str(err).split())[:200]
            raise UserError(f"{self.path}: cannot read the W&B run ({type(err).__name__}: {msg}); check the path, "
                            f"your access to the project and the network") from None


# ---------------------------------------------------------------- TensorBoard

class TensorBoardReader(_LocalDirReader):
    """Scalars from every event file under a TensorBoard log dir (tensorboard's own reader); config and term
    kinds from the dir or its parent (a dpot run dir holding the log dir)."""

    kind = "tensorboard"

    def search_dirs(self) -> list[Path]:
        return [self.dir, self.dir.parent]

    def scan(self, run: Run, col: _Collector) -> None:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        from tensorboard.util import tensor_util

        for ev_file in _tb_files(self.dir):
            try:
                acc = EventAccumulator(str(ev_file), size_guidance={"scalars": 0, "tensors": 0})
                acc.Reload()
            except Exception as err:
                run.notes.append(f"{ev_file.name}: unreadable ({type(err).__name__}); skipped")
                continue
            tags = acc.Tags()
            for tag in tags.get("scalars", []):
                for ev in acc.Scalars(tag):
                    col.add(ev.step, tag, ev.value)
                    col.add_time(ev.step, ev.wall_time)
            for tag in tags.get("tensors", []):
                for ev in acc.Tensors(tag):
                    try:
                        val = tensor_util.make_ndarray(ev.tensor_proto)
                    except Exception:
                        continue
                    if val.size == 1:
                        col.add(ev.step, tag, float(val.reshape(())))


READERS: dict[str, type[RunReader]] = {r.kind: r for r in
                                       (DpotDirReader, WandbOfflineReader, WandbOnlineReader, TensorBoardReader)}
