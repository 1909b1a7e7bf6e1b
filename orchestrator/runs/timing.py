"""Timed work runs alone: which Ray resource a job asks for given its `JobSpec.timing`, which jobs run as
one interleaved task, and how many other jobs shared a node during a job's timed phase (no ray here).
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from clusters.spec import TIMING_RESOURCE
from orchestrator.suites.spec import JobSpec
from results import names

__all__ = ["TIMING_RESOURCE", "contended", "interleaved_groups", "overlapping_jobs", "timing_request"]

# Timed work runs alone (`JobSpec.timing`): every node declares one unit of TIMING_RESOURCE; an exclusive
# job asks for the whole unit, a shared job for SHARED_SHARE of it, so Ray never places anything of a
# suite beside an exclusive job on its node and packs shared jobs freely. Design choice: the unit is held
# for the whole job, not only around its timed phases (train steps, the infer sweep): they are most of a
# job, and a lock the scheduler holds can neither deadlock nor be left held by a dead worker, as a lock
# taken inside the worker (a named actor per node) could. An `interleaved` group (one kind, one
# comparison group) runs as one task, `run_interleaved` in one process, holding the unit as well.
SHARED_SHARE = 0.001  # what a shared job holds: up to 1000 side by side, none beside an exclusive job
CPU_SLACK = 0.5  # cores of other processes' CPU a phase tolerates beyond the cores its job left free


def timing_request(timing: str, num_workers: int = 1) -> dict[str, float]:
    """The TIMING_RESOURCE a job (each worker of a gang) asks for. A gang's workers split the unit, so a
    gang on one node (STRICT_PACK) holds it whole; a gang spread over nodes holds a part of each node's,
    and its contention is then measured rather than excluded (contention.overlapping_jobs)."""
    if timing == "shared":
        return {TIMING_RESOURCE: SHARED_SHARE}
    return {TIMING_RESOURCE: round(1.0 / num_workers, 4)}


def interleaved_groups(jobs: Iterable[JobSpec]) -> list[tuple[JobSpec, ...]]:
    """The jobs in submission units, in order: an `interleaved` job with every other of its kind and
    comparison group (one process), any other job alone."""
    units: dict[Any, list[JobSpec]] = {}
    for job in jobs:
        key = (job.kind, job.labels.get("group")) if job.timing == "interleaved" else id(job)
        units.setdefault(key, []).append(job)
    return [tuple(unit) for unit in units.values()]


@dataclass(frozen=True)
class Occupancy:
    """One job attempt on a node, from its start (worker clock) to its end (None: still running)."""

    job: str
    node: str
    start_s: float
    end_s: float | None = None


def overlapping_jobs(
    phase: tuple[float, float], node: str, others: Iterable[Occupancy], exclude: set[str] = frozenset()
) -> int:
    """How many other jobs occupied `node` at some time in the phase [start, end] (closed intervals: a
    job that started the instant the phase ended counts). `exclude`: the phase's own job(s)."""
    start, end = phase
    return sum(
        1
        for o in others
        if o.node == node
        and o.job not in exclude
        and o.start_s <= end
        and (o.end_s is None or o.end_s >= start)
    )


def contended(timing: str, enforced: bool, metrics: Mapping[str, float], overlapping: int) -> bool:
    """Whether a job's speed numbers were measured under contention: its timing was shared or could not be
    enforced, another job of a suite ran on its node meanwhile, other processes on its node used more CPU
    than the cores the job left free (+ CPU_SLACK), or another process held its GPU."""
    if timing == "shared" or not enforced or overlapping > 0:
        return True
    other = metrics.get(names.TIMING_OTHER_CPU_CORES)
    cpus = metrics.get(names.TIMING_NODE_CPUS)
    if other is not None and cpus is not None:
        free = cpus - metrics.get(names.TIMING_THREADS, 1.0)
        if other > free + CPU_SLACK:
            return True
    return metrics.get(names.TIMING_OTHER_DEVICE_PROCS, 0.0) > 0
