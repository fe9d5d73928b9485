"""The study's plan: one :class:`Job` per (method, seed), in execution order."""

from __future__ import annotations

from dataclasses import dataclass

from dpot.bench.presets import Method


@dataclass(frozen=True)
class Job:
    """One (method, seed) run of the study."""

    method: Method
    seed: int

    @property
    def id(self) -> str:
        return f"{self.method.name}-seed{self.seed}"


# The first FIRST_SEEDS seeds of every arm run before any arm's later seeds (a powered design's 6th and 7th seeds
# of its core arms come after the other arms' seeds: the minimum design first)
FIRST_SEEDS = 5


def plan_jobs(methods: list[Method], seeds: int, cap: int | None = None) -> list[Job]:
    """Jobs in execution order: the calibration runs (seed 0 of a ``calibration`` method), then the first
    :data:`FIRST_SEEDS` seeds by method group (core first), seed and the order of ``methods``, then the later seeds.

    ``seeds``: seeds of a method whose ``Method.seeds`` is None; ``cap``: at most this many seeds per method (the
    command line's ``--seeds``)."""
    order = [m.name for m in methods]

    def n_seeds(m: Method) -> int:
        n = seeds if m.seeds is None else m.seeds
        return n if cap is None else min(n, cap)

    jobs = [Job(m, s) for m in methods for s in range(n_seeds(m))]

    def key(j: Job) -> tuple:
        if j.method.calibration and j.seed == 0:
            tier = -1
        else:
            tier = j.method.group if j.seed < FIRST_SEEDS else 100 + j.method.group
        return tier, j.seed, order.index(j.method.name)

    return sorted(jobs, key=key)


__all__ = ["FIRST_SEEDS", "Job", "plan_jobs"]
