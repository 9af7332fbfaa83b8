"""The one file lock: waits for a live holder, refuses in one line, takes over a dead holder's lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bmd.infra.locks import LockBusy, hold_lock

# A second process that takes the lock, says so, keeps it for `hold` seconds (or until killed), then
# writes `done` into the result file while still holding it.
_HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from bmd.infra.locks import hold_lock
    lock, hold, result = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])
    with hold_lock(lock, "a tiny result"):
        print("held", flush=True)
        time.sleep(hold)
        result.write_text("done")
""")


def _holder(tmp_path: Path, hold: float) -> subprocess.Popen:
    """Start a holder of ``tmp_path/x.lock`` and return once it holds the lock."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get(
        "PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path / "x.lock"), str(hold),
                             str(tmp_path / "result.txt")], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_waits_for_the_live_holder_and_then_finds_its_result(tmp_path, capsys):
    proc = _holder(tmp_path, hold=0.6)
    try:
        with hold_lock(tmp_path / "x.lock", "a tiny result", poll=0.05, report_every=0.1):
            # we got the lock only once the holder had finished its work
            assert (tmp_path / "result.txt").read_text() == "done"
            assert (tmp_path / "x.lock").read_text().strip() == str(os.getpid())
    finally:
        proc.wait(timeout=30)
    err = capsys.readouterr().err
    assert f"waiting for pid {proc.pid} building a tiny result ({tmp_path / 'x.lock'})" in err
    assert (tmp_path / "x.lock").read_text() == ""  # released: no pid left in the file


def test_without_waiting_a_live_holder_is_refused_at_once_in_one_line(tmp_path):
    proc = _holder(tmp_path, hold=30)
    try:
        with pytest.raises(LockBusy) as info, hold_lock(tmp_path / "x.lock", "a tiny result", wait=False):
            pass
        message = str(info.value)
        assert message == f"{tmp_path / 'x.lock'}: a tiny result is in use by pid {proc.pid}"
        assert not (tmp_path / "result.txt").exists()
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_waiting_gives_up_after_the_timeout_naming_the_lock_what_and_the_pid(tmp_path):
    class Busy(RuntimeError):
        pass

    proc = _holder(tmp_path, hold=30)
    try:
        with pytest.raises(Busy) as info, hold_lock(tmp_path / "x.lock", "a tiny result", timeout=0.2, poll=0.05,
                                                    error=Busy, busy=lambda pid: f"busy: pid {pid}"):
            pass
        message = str(info.value)
        assert message.startswith(f"busy: pid {proc.pid} (gave up after waiting") and "\n" not in message
        assert message.endswith(f" for {tmp_path / 'x.lock'})")  # the lock file it waited for
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_a_dead_holders_lock_is_taken_over(tmp_path):
    proc = _holder(tmp_path, hold=30)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert (tmp_path / "x.lock").read_text().strip() == str(proc.pid)  # its pid is still written there
    with hold_lock(tmp_path / "x.lock", "a tiny result", wait=False):
        assert (tmp_path / "x.lock").read_text().strip() == str(os.getpid())
    # a pid written without the lock (a stale file) does not block either
    (tmp_path / "x.lock").write_text(f"{os.getppid()}\n")
    with hold_lock(tmp_path / "x.lock", "a tiny result", wait=False):
        pass


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    lock = tmp_path / "sub" / "x.lock"  # its folder is created
    with hold_lock(lock, "a tiny result", wait=False) as fd, hold_lock(lock, "a tiny result", wait=False) as inner:
        assert inner == fd
        assert lock.read_text().strip() == str(os.getpid())
    assert lock.read_text() == ""


def test_a_launcher_hands_its_lock_to_the_children_it_names(tmp_path):
    lock = tmp_path / "x.lock"
    child = textwrap.dedent("""
        import sys
        from bmd.infra.locks import LockBusy, hold_lock
        try:
            with hold_lock(sys.argv[1], "a tiny result", wait=False, handover="BMD_TEST_LOCK", handover_key="k"):
                print("went ahead")
        except LockBusy as exc:
            print(exc)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get(
        "PYTHONPATH", "")])}
    with hold_lock(lock, "a tiny result"):
        named = subprocess.run([sys.executable, "-c", child, str(lock)], capture_output=True, text=True,
                               env={**env, "BMD_TEST_LOCK": f"{os.getpid()}:k"}, timeout=60)
        other = subprocess.run([sys.executable, "-c", child, str(lock)], capture_output=True, text=True,
                               env={**env, "BMD_TEST_LOCK": f"{os.getpid()}:another"}, timeout=60)
    assert named.stdout.strip() == "went ahead"
    assert other.stdout.strip() == f"{lock}: a tiny result is in use by pid {os.getpid()}"
