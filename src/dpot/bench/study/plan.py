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


def plan_jobs(methods: list[Method], seeds: int) -> list[Job]:
    """Jobs in execution order: the calibration runs (seed 0 of a ``calibration`` method), then by method group
    (core first), then seed, then the order of ``methods``."""
    order = [m.name for m in methods]
    jobs = [Job(m, s) for m in methods for s in range(seeds)]
    return sorted(jobs, key=lambda j: (-1 if j.method.calibration and j.seed == 0 else j.method.group, j.seed,
                                       order.index(j.method.name)))


__all__ = ["Job", "plan_jobs"]
