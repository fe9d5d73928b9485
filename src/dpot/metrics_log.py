"""The ``metrics.jsonl`` file of a dpot run: its writer, its reader and its cut-back on resume, in one place.

Format: one JSON object per line, ``{"step": <int>, "<key>": <value>, ...}``, appended and flushed as the run
trains (readable while it is alive). Non-finite floats are written as the strings ``"nan"`` / ``"inf"`` /
``"-inf"`` (JSON has no literal for them). A run killed mid-write can leave a torn *last* line; every reader
here drops it. Light to import (no torch): the report, the autopilot and the study read runs through it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from dpot.atomic import write_text
from dpot.errors import UserError

METRICS_FILE = "metrics.jsonl"


class JsonlSink:
    """Append ``{"step": s, **metrics}`` lines to ``path``, flushed at once (readable while the run is alive)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": int(step)}
        row.update({k: _jsonable(v) for k, v in metrics.items()})
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _jsonable(v):
    v = float(v)
    return v if math.isfinite(v) else str(v)


@dataclass(frozen=True)
class MetricsLog:
    """The records of one ``metrics.jsonl``, in file order; ``torn_tail``: its last line was incomplete
    (dropped)."""

    rows: list[dict]
    torn_tail: bool = False


def _path(run: str | Path) -> Path:
    run = Path(run)
    return run if run.name == METRICS_FILE else run / METRICS_FILE


def load_metrics(run: str | Path, *, strict: bool = False) -> MetricsLog:
    """Read the ``metrics.jsonl`` of ``run`` (a run directory, or the file itself); an absent file reads as empty.

    A torn last line (not JSON) is always dropped and flagged. Any other line that is not a JSON object with a
    ``step`` is skipped when ``strict`` is false (readers that must go on: the autopilot, progress lines) and
    raises :class:`UserError` naming the file and line when ``strict`` is true (the report: a damaged log is said,
    not silently shortened).
    """
    path = _path(run)
    if not path.exists():
        return MetricsLog([])
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    rows: list[dict] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == last:
                return MetricsLog(rows, torn_tail=True)
            if strict:
                raise UserError(f"{path}: line {i + 1} is not JSON; fix or delete that line") from None
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
        elif strict:
            raise UserError(f"{path}: line {i + 1} has no 'step'")
    return MetricsLog(rows)


def read_metrics(run: str | Path) -> list[dict]:
    """The records of ``run``'s ``metrics.jsonl`` (lenient :func:`load_metrics`); ``[]`` when absent."""
    return load_metrics(run).rows


def truncate_metrics(run: str | Path, max_step: int) -> None:
    """Drop records with ``step > max_step`` (written by a killed run after its last checkpoint) before
    resuming, and a torn last line; rewritten atomically."""
    path = _path(run)
    if not path.exists():
        return
    keep = [r for r in read_metrics(path) if int(r["step"]) <= max_step]
    write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
