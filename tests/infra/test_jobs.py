"""Jobs run a few at a time, after what they wait for, with their share of the cores."""

from __future__ import annotations

import threading
import time

import pytest

from bmd.infra.jobs import Job, run_jobs, threads_for


class Recorder:
    """Jobs that record when they start and end, and the threads they were given."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []
        self.threads: dict[str, int] = {}
        self.live = 0
        self.most_live = 0

    def job(self, name: str, seconds: float = 0.05, after: tuple[str, ...] = (), fail: bool = False) -> Job:
        def run(threads: int) -> str:
            with self.lock:
                self.events.append(("start", name))
                self.threads[name] = threads
                self.live += 1
                self.most_live = max(self.most_live, self.live)
            time.sleep(seconds)
            with self.lock:
                self.live -= 1
                self.events.append(("end", name))
            if fail:
                raise RuntimeError(f"{name} failed")
            return f"result of {name}"
        return Job(name, run, after)

    def index(self, kind: str, name: str) -> int:
        return self.events.index((kind, name))


def test_results_by_name_and_at_most_slots_at_once():
    rec = Recorder()
    out = run_jobs([rec.job(n) for n in "abcde"], slots=2, cores=2)
    assert out == {n: f"result of {n}" for n in "abcde"}
    assert rec.most_live == 2


def test_one_slot_runs_in_the_given_order_with_every_core():
    rec = Recorder()
    run_jobs([rec.job(n, 0.01) for n in "cab"], slots=1, cores=4)
    assert [name for kind, name in rec.events if kind == "start"] == ["c", "a", "b"]
    assert rec.most_live == 1
    assert set(rec.threads.values()) == {4}


def test_a_job_waits_for_the_jobs_it_names():
    rec = Recorder()
    run_jobs([rec.job("base", 0.2), rec.job("child", after=("base",)), rec.job("other", 0.05)], slots=2, cores=2)
    assert rec.index("start", "child") > rec.index("end", "base")
    # while the child waited, the other job used the free slot
    assert rec.index("start", "other") < rec.index("end", "base")


def test_jobs_side_by_side_share_the_cores_and_a_lone_job_gets_them_all():
    rec = Recorder()
    # a and b start together; c waits for a and runs alone at the end (b finished long before)
    run_jobs([rec.job("a", 0.3), rec.job("b", 0.05), rec.job("c", after=("a",))], slots=2, cores=2)
    assert rec.threads == {"a": 1, "b": 1, "c": 2}


def test_threads_share():
    assert threads_for(1, 8, 2) == 8
    assert threads_for(2, 8, 2) == 4
    assert threads_for(5, 8, 2) == 4  # never more jobs at once than slots
    assert threads_for(2, 1, 2) == 1  # at least one


def test_a_failure_starts_nothing_more_and_is_raised_after_the_running_jobs_end():
    rec = Recorder()
    with pytest.raises(RuntimeError, match="bad failed"):
        run_jobs([rec.job("bad", 0.01, fail=True), rec.job("slow", 0.2), rec.job("later"), rec.job("never")],
                 slots=2, cores=2)
    assert ("end", "slow") in rec.events  # the running job was not abandoned
    assert ("start", "never") not in rec.events and ("start", "later") not in rec.events


@pytest.mark.parametrize("jobs, message", [
    ([Job("a", lambda t: t), Job("a", lambda t: t)], "repeat"),
    ([Job("a", lambda t: t, ("missing",))], "unknown job"),
    ([Job("a", lambda t: t, ("b",)), Job("b", lambda t: t, ("a",))], "cycle"),
])
def test_bad_job_lists_are_refused_before_anything_runs(jobs, message):
    with pytest.raises(ValueError, match=message):
        run_jobs(jobs, slots=2)
