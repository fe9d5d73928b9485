"""Several workers on one search: who trains which trial, the coordination lock, heartbeats, take-over.

A worker is ``host:pid``. It claims a waiting trial with ``study.ask()`` (the storage hands a waiting trial to one
worker only), or takes over a running trial whose worker is gone: same host and its pid dead, or no heartbeat for
:data:`STALE_S` seconds. While it trains a trial it writes a heartbeat every :data:`HEARTBEAT_S` seconds.
Coordination steps (enqueueing the next trials) run one at a time under an ``flock`` on ``DIR/.lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from dpot.autopilot.record import TrialRecord
from dpot.autopilot.store import Entry, TrialStore

STALE_S = 180.0          # a running trial without heartbeat for this long is taken over
HEARTBEAT_S = 15.0


def worker_id() -> str:
    """This process as a worker: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this host (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def dir_lock(out: Path) -> Iterator[None]:
    """Exclusive ``flock`` on ``out/.lock`` for the duration of the block (blocks until it is free)."""
    with open(out / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def orphaned(entry: Entry, me: str) -> bool:
    """True when ``entry`` is running for a worker other than ``me`` that is gone (see the module docstring)."""
    from optuna.trial import TrialState

    if entry.state != TrialState.RUNNING:
        return False
    owner = str(entry.record.worker or "")
    host, _, pid = owner.rpartition(":")
    if owner == me:
        return False
    if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
        return True
    beat = entry.record.heartbeat
    return beat is None or time.time() - float(beat) > STALE_S


class Claimer:
    """Hands this worker its next trial.

    Args:
        store: the search's :class:`TrialStore`.
        out: the search directory (for the lock).
        me: this worker (:func:`worker_id`).
        say: prints a progress line.
    """

    def __init__(self, store: TrialStore, out: Path, me: str, say: Callable[[str], None]):
        self.store, self.out, self.me, self.say = store, out, me, say

    def _own(self, trial, record: TrialRecord) -> tuple[object, TrialRecord]:
        record.worker, record.heartbeat = self.me, time.time()
        TrialStore.write(trial, record, ("worker", "heartbeat"))
        return trial, record

    def claim(self) -> tuple[object, TrialRecord] | None:
        """``(optuna.trial.Trial, its record)``: an orphaned running trial (taken over) or a waiting one; None
        when there is none. A waiting trial enqueued twice by a race between machines (same run and rung as an
        asked one), or a sampler trial made because another worker took the last waiting one, is closed as a
        duplicate."""
        from optuna.trial import TrialState

        if any(orphaned(e, self.me) for e in self.store.entries()):
            with dir_lock(self.out):
                for e in self.store.entries():
                    if orphaned(e, self.me):
                        self.say(f"autopilot: taking over {e.record.name} (worker {e.record.worker} is gone)")
                        return self._own(self.store.handle(e.number), e.record)
        while self.store.any_waiting():
            trial = self.store.study.ask()
            attrs = trial.user_attrs
            if "name" not in attrs:        # another worker took the last waiting one first: a sampler trial
                self.store.mark_duplicate(trial)
                continue
            record = TrialRecord.from_attrs(attrs)
            done = [e for e in self.store.entries() if (e.record.name, e.record.rung) == (record.name, record.rung)
                    and e.number != trial.number and e.state != TrialState.WAITING]
            if done:                       # enqueued twice by a race between machines: keep the first
                self.store.mark_duplicate(trial)
                continue
            return self._own(trial, record)
        return None


@contextlib.contextmanager
def heartbeat(trial) -> Iterator[None]:
    """Write ``heartbeat`` (unix time) on ``trial`` every :data:`HEARTBEAT_S` seconds while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):
                trial.set_user_attr("heartbeat", time.time())

    threading.Thread(target=beat, daemon=True).start()
    try:
        yield
    finally:
        stop.set()
