"""The one file lock: an exclusive advisory ``flock`` on a lock file that holds its owner's pid.

Every artifact that one process builds and others reuse (the twin cohort, the detector, the ROI cache,
a training run, a model bundle, a book build) is guarded by :func:`hold_lock`:

* **Waits for a live holder.** A second process building the same artifact waits (checking every
  ``poll`` seconds, with a progress line "waiting for pid N building <what> (<lock file>)" at most every
  ``report_every`` seconds, the first after a second) and then, typically, reuses what the first one built. After ``timeout``
  seconds it gives up with :class:`LockBusy` (or the caller's error class): one line naming the lock
  file, what it guards and the holder's pid. ``wait=False`` refuses at once with the same kind of line.
* **Takes over a dead holder's lock.** ``flock`` is released by the kernel when its holder dies, so a
  killed builder never blocks anyone; the stale pid left in the file is simply overwritten.
* **Re-entrant** within a process (nested holds of one lock file share it).
* **Hand-over.** A launcher can hold a lock for the child processes it starts (torchrun workers): it
  passes the locked descriptor down and names itself in an environment variable ``"<pid>:<key>"``;
  a child that finds the lock held by exactly that pid goes ahead without locking again.

On a file system without ``flock`` (or off POSIX) the lock is not enforced: the work goes ahead, as
the atomic writes behind every artifact still keep readers from seeing half-written files.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bmd.infra import progress

try:
    import fcntl
except ImportError:  # not POSIX: no flock, the pid in the file is the only guard
    fcntl = None

#: Seconds a waiter waits for a live holder before giving up (a paper-profile training run takes hours).
DEFAULT_TIMEOUT = 24 * 3600.0

_HELD: dict[str, list] = {}  # resolved lock file -> [fd, depth]


class LockBusy(RuntimeError):
    """Another live process holds a lock (refused at once, or waited for in vain); one line."""


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: held by another open file; None: no locks here (off POSIX, or the file system)."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def holder_pid(fd: int, patience: float = 1.0) -> int | None:
    """The pid written in a held lock file (waits up to ``patience`` s: the holder writes it just after locking)."""
    deadline = time.monotonic() + patience
    while True:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return int(text)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def _default_busy(path: Path, what: str, pid: int | None) -> str:
    return f"{path}: {what} is in use by pid {pid or '?'}"


@contextlib.contextmanager
def hold_lock(path: str | os.PathLike, what: str, *, wait: bool = True, timeout: float | None = None,
              poll: float = 0.5, report_every: float = 10.0, error: type[Exception] = LockBusy,
              busy: Callable[[int | None], str] | None = None, handover: str | None = None,
              handover_key: str | None = None) -> Iterator[int]:
    """Hold the exclusive lock ``path`` (created, with its folder, if needed); yields its descriptor.

    ``what`` names what the lock guards in messages ("the twin cohort", "run folder X"). A live holder is
    waited for (``wait``), for at most ``timeout`` seconds (default :data:`DEFAULT_TIMEOUT`), with a
    progress line at most every ``report_every`` seconds; then, or at once when ``wait`` is False,
    ``error`` is raised with one line: ``busy(pid)`` if given, else "<lock file>: <what> is in use by
    pid N" (after a timeout, with how long it waited for which lock file). ``handover``/``handover_key``: an environment variable whose value
    ``"<pid>:<handover_key>"`` says that pid holds the lock for this process (see the module docstring).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield _HELD[key][0]
        finally:
            _HELD[key][1] -= 1
        return
    limit = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    message = busy or (lambda pid: _default_busy(path, what, pid))
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start = time.monotonic()
        last_report: float | None = None
        while True:
            owned = _try_flock(fd)
            if owned is not False:
                break
            owner = holder_pid(fd)
            if handover and owner is not None and os.environ.get(handover) == f"{owner}:{handover_key}":
                break  # our launcher holds it for us
            waited = time.monotonic() - start
            if not wait:
                raise error(message(owner))
            if waited >= limit:
                raise error(f"{message(owner)} (gave up after waiting {progress.elapsed(waited)} for {path})")
            # a short wait (another writer finishing a small file) is not worth a line
            due = waited >= min(1.0, report_every) if last_report is None else \
                time.monotonic() - last_report >= report_every
            if due:
                line = f"waiting for pid {owner or '?'} building {what} ({path})"
                progress.note(line)
                print(line, file=sys.stderr, flush=True)
                last_report = time.monotonic()
            time.sleep(poll)
        if owned:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD[key] = [fd, 1]
        try:
            yield fd
        finally:
            del _HELD[key]
            if owned:
                os.ftruncate(fd, 0)  # no pid left behind: the file says "free" to anyone reading it
    finally:
        os.close(fd)
