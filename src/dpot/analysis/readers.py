"""Run readers: one interface (``open_run(spec) -> Run``) over four kinds of RUN.

* a dpot run directory (``metrics.jsonl`` + ``train_config.json``),
* a W&B offline run (``wandb/offline-run-*/run-*.wandb``, or an output dir holding ``wandb/``), read with
  wandb's own record reader (``wandb.sdk.internal.datastore``), no network,
* a W&B online run ``entity/project/run_id`` through ``wandb.Api()`` (paginated ``scan_history``),
* a TensorBoard log directory (tensorboard's ``EventAccumulator``).

Every logged key is normalized through :mod:`dpot.analysis.aliases`; ``Run.raw_keys`` keeps what was seen.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from dpot.analysis.aliases import canonical_key
from dpot.errors import UserError

KINDS = ("dpot", "wandb-offline", "wandb-online", "tensorboard")


@dataclass
class Run:
    """A run's history and config, whatever stored it.

    ``history[key]`` is a list of ``(step, value)`` sorted by step, keyed by canonical metric key;
    ``sources[key]`` is the raw key it came from; ``notes`` are reader remarks (partial file, ...).
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


def detect_kind(spec: str) -> str:
    """Which of ``KINDS`` ``spec`` is; raises UserError when it is none of them."""
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_dir() and (path / "metrics.jsonl").exists():
            return "dpot"
        if _wandb_file_in(path) is not None:
            return "wandb-offline"
        if _tb_files(path):
            return "tensorboard"
        raise UserError(
            f"{spec}: not a run: expected a dpot run dir (metrics.jsonl), a W&B offline run "
            f"(wandb/offline-run-*/run-*.wandb), a TensorBoard log dir (events.out.tfevents.*) or a W&B path "
            f"entity/project/run_id")
    if _WANDB_URL.match(spec) or _WANDB_PATH.match(spec):
        return "wandb-online"
    raise UserError(f"{spec}: no such file or directory, and not a W&B run path (entity/project/run_id)")


def open_run(spec: str) -> Run:
    """Read RUN (any of the four kinds) into a :class:`Run`. Raises UserError on bad input."""
    kind = detect_kind(spec)
    reader = {"dpot": read_dpot, "wandb-offline": read_wandb_offline,
              "wandb-online": read_wandb_online, "tensorboard": read_tensorboard}[kind]
    run = reader(spec)
    if not run.history:
        raise UserError(f"{spec}: the run has no metrics yet ({kind}); wait for the first log_freq step "
                        f"or check that logging is enabled")
    return run


# ---------------------------------------------------------------- dpot run dir

def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read JSON ({err}); fix or remove the file") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def _read_lineage(run: Run, directory: Path) -> None:
    """Parent run of a proposal-made run: ``<dir>/parent.json`` or ``<dir>/../lineage.json[<dir name>]``."""
    own = directory / "parent.json"
    if own.exists():
        run.parent = _load_json(own).get("parent")
        return
    shared = directory.parent / "lineage.json"
    if shared.exists():
        entry = _load_json(shared).get(directory.name)
        if isinstance(entry, dict) and entry.get("parent"):
            run.parent = entry["parent"]


def read_dpot(spec: str) -> Run:
    """Read a dpot run dir; a partial last line of ``metrics.jsonl`` (run still writing) is ignored."""
    d = Path(spec).expanduser()
    run = Run(run_id=d.resolve().name, kind="dpot", location=str(d), local_dir=d)
    if (d / "train_config.json").exists():
        run.config = _load_json(d / "train_config.json")
    else:
        run.notes.append("train_config.json missing: config-based rules are skipped")
    col = _Collector()
    lines = (d / "metrics.jsonl").read_text(errors="replace").split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == last:
                run.notes.append("metrics.jsonl: last line is incomplete (run still writing?); "
                                 "read up to the last complete record")
                break
            raise UserError(f"{d / 'metrics.jsonl'}: line {i + 1} is not JSON; fix or delete that line") from None
        if not isinstance(rec, dict) or "step" not in rec:
            raise UserError(f"{d / 'metrics.jsonl'}: line {i + 1} has no 'step'")
        for k, v in rec.items():
            col.add(rec["step"], k, v)
        col.add_time(rec["step"], rec.get("_timestamp", rec.get("time")))
    _read_lineage(run, d)
    return col.fill(run)


# ---------------------------------------------------------------- W&B offline

def _unflatten_wandb_config(cfg: dict) -> dict:
    out = {}
    for k, v in cfg.items():
        if k.startswith("_"):
            continue
        out[k] = v.get("value") if isinstance(v, dict) and set(v) <= {"value", "desc"} else v
    return out


def read_wandb_offline(spec: str) -> Run:
    """Read a ``.wandb`` file with wandb's datastore; stops at the last complete record if truncated."""
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.internal import datastore

    path = Path(spec).expanduser()
    wfile = _wandb_file_in(path)
    run_dir = wfile.parent
    run = Run(run_id=wfile.stem.removeprefix("run-"), kind="wandb-offline", location=str(wfile))
    col = _Collector()
    ds = datastore.DataStore()
    try:
        ds.open_for_scan(str(wfile))
    except Exception as err:  # bad magic / header: not a W&B file or cut before its header
        raise UserError(f"{wfile}: not a readable W&B run file ({type(err).__name__}: {err}); "
                        f"the file is truncated or corrupt") from None
    n_hist, exited, truncated = 0, False, None
    while True:
        try:
            data = ds.scan_data()
        except Exception as err:
            truncated = f"{type(err).__name__}"
            break
        if data is None:
            break
        rec = pb.Record()
        try:
            rec.ParseFromString(data)
        except Exception:
            truncated = "bad record"
            break
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            row = {}
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                try:
                    row[key] = json.loads(item.value_json)
                except json.JSONDecodeError:
                    continue
            step = row.get("_step", rec.history.step.num if rec.history.HasField("step") else n_hist)
            for k, v in row.items():
                col.add(step, k, v)
            col.add_time(step, row.get("_timestamp"))
            n_hist += 1
        elif kind == "config":
            for item in rec.config.update:
                key = item.key or "/".join(item.nested_key)
                try:
                    run.config[key] = json.loads(item.value_json)
                except json.JSONDecodeError:
                    pass
        elif kind == "run":
            if rec.run.run_id:
                run.run_id = rec.run.run_id
            if rec.run.config.update:
                for item in rec.run.config.update:
                    try:
                        run.config[item.key] = json.loads(item.value_json)
                    except json.JSONDecodeError:
                        pass
        elif kind == "summary":
            for item in rec.summary.update:
                try:
                    run.summary[item.key] = json.loads(item.value_json)
                except json.JSONDecodeError:
                    pass
        elif kind == "exit":
            exited = True
    run.config = _unflatten_wandb_config(run.config)
    if truncated is not None:
        if n_hist == 0:
            raise UserError(f"{wfile}: truncated W&B file ({truncated}) with no complete history record; "
                            f"re-sync or re-copy the run")
        run.notes.append(f"{wfile.name} ends mid-record (truncated or still writing): "
                         f"read up to the last complete record ({n_hist} history rows)")
    elif not exited:
        run.notes.append("no exit record: the run is still running or was killed; read what exists")
    # plain lerobot-train: prefer the resolved train_config.json of its newest checkpoint or output dir
    out_dir = run_dir.parent.parent if run_dir.parent.name == "wandb" else None
    if out_dir is not None:
        run.local_dir = out_dir
        for cand in [out_dir / "train_config.json",
                     *sorted(out_dir.glob("checkpoints/*/pretrained_model/train_config.json"), reverse=True)]:
            if cand.exists():
                run.config = _load_json(cand)
                break
        _read_lineage(run, out_dir)
    else:
        run.local_dir = run_dir
    return col.fill(run)


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


def read_wandb_online(spec: str) -> Run:
    """Read ``entity/project/run_id`` through ``wandb.Api()``: full history (all keys), config, summary."""
    m = _WANDB_URL.match(spec) or _WANDB_PATH.match(spec)
    entity, project, run_id = m.groups()
    path = f"{entity}/{project}/{run_id}"
    if not _has_wandb_key():
        raise UserError(f"{spec}: no W&B API key (set WANDB_API_KEY or run 'wandb login'), or pass a local "
                        f"run dir / W&B offline run instead")
    import wandb

    try:
        api = wandb.Api(timeout=int(os.environ.get("DPOT_WANDB_TIMEOUT", "20")))
        wrun = api.run(path)
        run = Run(run_id=run_id, kind="wandb-online", location=f"https://wandb.ai/{entity}/{project}/runs/{run_id}")
        run.config = _unflatten_wandb_config(dict(wrun.config))
        run.summary = {k: v for k, v in dict(wrun.summary).items() if not k.startswith("_")}
        col = _Collector()
        for i, row in enumerate(wrun.scan_history(page_size=1000)):
            step = row.get("_step", i)
            for k, v in row.items():
                col.add(step, k, v)
            col.add_time(step, row.get("_timestamp"))
    except UserError:
        raise
    except Exception as err:
        msg = " ".join(str(err).split())[:200]
        raise UserError(f"{path}: cannot read the W&B run ({type(err).__name__}: {msg}); check the path, "
                        f"your access to the project and the network") from None
    run.parent = (run.config.get("dpot_meta") or {}).get("parent") if isinstance(run.config.get("dpot_meta"), dict) else None
    return col.fill(run)


# ---------------------------------------------------------------- TensorBoard

def read_tensorboard(spec: str) -> Run:
    """Read scalars from every event file under a TensorBoard log dir (tensorboard's own reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    d = Path(spec).expanduser()
    run = Run(run_id=d.resolve().name, kind="tensorboard", location=str(d), local_dir=d)
    col = _Collector()
    for ev_file in _tb_files(d):
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
                    from tensorboard.util import tensor_util

                    val = tensor_util.make_ndarray(ev.tensor_proto)
                    if val.size == 1:
                        col.add(ev.step, tag, float(val.reshape(())))
                except Exception:
                    continue
    for cand in (d / "train_config.json", d.parent / "train_config.json"):
        if cand.exists():
            run.config = _load_json(cand)
            break
    _read_lineage(run, d)
    return col.fill(run)
