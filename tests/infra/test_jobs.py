"""Jobs run a few at a time, after what they wait for, with their share of the cores."""

from __future__ import annotations

import threading
import time

import pytest

from bmd.infra.jobs import Job, plan_jobs, run_jobs


class Recorder:
    """Jobs that record when they start and end, and the threads they were given."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []
        self.threads: dict[str, int] = {}
        self.live = 0
        self.most_live = 0

    def job(self, name: str, seconds: float = 0.05, after: tuple[str, ...] = (), fail: bool = False,
            cost: float = 1.0) -> Job:
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
        return Job(name, run, after, cost)

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


def test_a_job_others_wait_for_runs_alone_with_every_core_and_first():
    rec = Recorder()
    run_jobs([rec.job("other", 0.05), rec.job("child", after=("base",)), rec.job("base", 0.1),
              rec.job("third", 0.05)], slots=2, cores=2)
    assert rec.events[:2] == [("start", "base"), ("end", "base")]  # first, and nothing beside it
    assert rec.threads == {"base": 2, "child": 1, "other": 1, "third": 1}
    assert rec.index("start", "child") > rec.index("end", "base")


def test_threads_are_fixed_by_the_plan_not_by_what_happens_to_run_at_the_time():
    jobs = [Job("a", len, cost=3), Job("b", len), Job("c", len, ("a",))]
    plan = plan_jobs(jobs, slots=2, cores=8)
    assert plan.alone == {"a"} and plan.threads == {"a": 8, "b": 4, "c": 4}
    assert plan_jobs(jobs, slots=1, cores=8).threads == {"a": 8, "b": 8, "c": 8}
    assert plan_jobs([Job("a", len), Job("b", len, ("a",))], slots=2, cores=8).threads == {"a": 8, "b": 8}
    assert plan_jobs([Job("a", len), Job("b", len)], slots=2, cores=1).threads == {"a": 1, "b": 1}


def test_longest_jobs_start_first():
    rec = Recorder()
    run_jobs([rec.job("short", 0.01, cost=1), rec.job("long", 0.01, cost=5), rec.job("mid", 0.01, cost=3)],
             slots=1, cores=1)
    assert [name for kind, name in rec.events if kind == "start"] == ["long", "mid", "short"]


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
