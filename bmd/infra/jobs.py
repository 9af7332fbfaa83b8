"""Run jobs a few at a time, after the jobs they depend on, each with a fixed number of CPU threads.

Training runs of the CPU profiles are small: a width-1/8 network on 64-128 px crops keeps two cores
only partly busy, so two runs side by side with one thread each finish sooner than the same runs one
after the other with two threads each. Measured on a 2-core Xeon (torch 2.14.1, bfloat16, batch 64, one
training step): multi-ROI VGG-16 0.65 s with 2 threads, 1.05 s with 1, 1.09 s each with two running at
once (1.19x the throughput); ResNet-50 0.19 / 0.32 / 0.31 s (1.22x); chest VGG-16 0.21 / 0.41 / 0.43 s
(1.0x). Running side by side also overlaps what a run does on one core only (starting its processes,
reading the cache, writing its results).

The plan is fixed before anything runs, so that a job's threads never depend on timing (a run's float
rounding depends on its thread count, and the same inputs must give the same numbers):

* a job that others wait for runs alone with every core: it holds them up (the multi-ROI model, which the
  attention model waits for, took 527 s for the 28 epochs the quick profile then trained, on one core
  beside the others, about 350 s alone on both). Training every model of Tables 1-2 in one plan instead,
  the multi-ROI model on one core from the start beside the others, was no faster (quick profile, seed
  4242: 1,228 s of training against 1,224 s table by table): the multi-ROI model then took 620 s, and the
  runs beside it slowed down too (the chest VGG-16 244 s against 214 s);
* every other job runs beside up to ``slots - 1`` others with ``cores // slots`` threads (every core
  when it is the only such job, or when ``slots`` is 1).

Jobs that others wait for start as soon as they are ready; the others start longest first (``cost``,
then the order given), each once every job it names in ``after`` has finished. The first failure stops
new jobs from starting; the running ones finish, then it is raised.
"""

from __future__ import annotations

import graphlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Job:
    """One unit of work: ``run(threads)`` does it with ``threads`` CPU threads.

    ``after``: names of the jobs it needs finished first; ``cost``: its expected running time in any unit
    (only the order in which jobs start depends on it).
    """

    name: str
    run: Callable[[int], Any]
    after: tuple[str, ...] = ()
    cost: float = 1.0


@dataclass(frozen=True)
class Plan:
    """How :func:`run_jobs` runs a list of jobs: who runs alone, and each job's threads."""

    alone: frozenset[str]
    threads: dict[str, int]


def plan_jobs(jobs: Sequence[Job], slots: int, cores: int) -> Plan:
    """The fixed plan of ``jobs`` (see the module docstring); raises ``ValueError`` for a bad job list."""
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names repeat: {names}")
    for job in jobs:
        unknown = [n for n in job.after if n not in names]
        if unknown:
            raise ValueError(f"job {job.name} waits for unknown job(s) {', '.join(unknown)}")
    try:
        graphlib.TopologicalSorter({job.name: job.after for job in jobs}).prepare()
    except graphlib.CycleError as exc:
        raise ValueError(f"jobs wait for each other in a cycle: {', '.join(exc.args[1])}") from None
    alone = frozenset(n for job in jobs for n in job.after)
    shared = [job.name for job in jobs if job.name not in alone]
    share = cores if slots <= 1 or len(shared) <= 1 else max(1, cores // slots)
    return Plan(alone, {job.name: cores if job.name in alone else share for job in jobs})


def run_jobs(jobs: Sequence[Job], slots: int = 1, cores: int | None = None) -> dict[str, Any]:
    """Run ``jobs`` at most ``slots`` at a time on ``cores`` CPU cores (default: this machine's); name → result.

    Raises ``ValueError`` before anything runs when a job names an unknown job in ``after``, names are
    repeated, or the dependencies form a cycle.
    """
    cores = cores or os.cpu_count() or 1
    slots = max(1, slots)
    plan = plan_jobs(jobs, slots, cores)
    # jobs that hold others up first, then the longest; sorted() keeps the given order among equals
    pending = sorted(jobs, key=lambda job: (job.name not in plan.alone, -job.cost))
    results: dict[str, Any] = {}
    running: dict[Future, Job] = {}
    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=slots) as pool:
        try:
            while pending or running:
                # nothing starts beside a job that runs alone, and a job that runs alone waits for an empty pool
                if failure is None and not any(j.name in plan.alone for j in running.values()):
                    for job in [j for j in pending if all(n in results for n in j.after)]:
                        if len(running) >= slots or (job.name in plan.alone and running):
                            break
                        pending.remove(job)
                        running[pool.submit(job.run, plan.threads[job.name])] = job
                        if job.name in plan.alone:
                            break
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    job = running.pop(future)
                    try:
                        results[job.name] = future.result()
                    except BaseException as exc:  # noqa: BLE001 - re-raised once the running jobs end
                        failure = failure or exc
        except BaseException:
            # interrupted while waiting: start nothing more; the pool's exit waits for the running jobs
            pending.clear()
            raise
    if failure is not None:
        raise failure
    return results

