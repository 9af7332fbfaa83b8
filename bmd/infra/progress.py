"""Progress lines from the chapters' kernels to the ``bmd book`` that runs them.

Chapters run in a papermill kernel (a subprocess) and training in torchrun (a subprocess of that), so
progress cannot be a bar drawn by the process that does the work. Instead the working code calls
:func:`note` with one short line ("training vgg11 (epoch 4/7, val R 0.71)"); when the environment
variable :data:`ENV` names a file, the line is appended to it. ``bmd book`` sets the variable (kernels
and their subprocesses inherit it), follows the file with :class:`Follower` and prints each line with
the chapter's number, name and elapsed time. Without the variable (a notebook run by hand, the tests)
:func:`note` does nothing. A file and not a pipe: a writer never blocks or dies when nobody reads, and
it survives any number of processes opening it in append mode (each line is one small write).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

#: Environment variable naming the progress file that :func:`note` appends to.
ENV = "BMD_PROGRESS_FILE"


def note(message: str) -> None:
    """Append one progress line to the file named by ``$BMD_PROGRESS_FILE`` (nothing when it is unset).

    Never raises: progress must not break the work it reports on.
    """
    target = os.environ.get(ENV)
    if not target:
        return
    line = " ".join(str(message).split()) + "\n"  # one line, whatever the message holds
    try:
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except OSError:
        pass


def elapsed(seconds: float) -> str:
    """``2m13s`` / ``45s`` / ``1h02m``: a duration as a person reads it."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Follower:
    """Follow a progress file in a thread and hand every new complete line to ``callback``."""

    def __init__(self, path: Path, callback: Callable[[str], None], interval: float = 0.5) -> None:
        self.path = Path(path)
        self.callback = callback
        self.interval = interval
        self._offset = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bmd-progress", daemon=True)

    def __enter__(self) -> Follower:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self._offset = self.path.stat().st_size
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()  # lines written just before the end

    def poll(self) -> None:
        """Hand over the complete lines written since the last poll."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].decode("utf-8", "replace").splitlines():
            if line.strip():
                self.callback(line.strip())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()


class Console:
    """Where ``bmd book`` writes its progress: one plain line per event to stdout and to a log file;
    on a terminal a tqdm bar over the steps stays below the lines."""

    def __init__(self, steps: int, log_file: Path | None = None, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.steps = steps
        self.step = 0
        self.label = ""
        self.start = time.perf_counter()
        self.step_start = self.start
        self.log = open(log_file, "a", encoding="utf-8") if log_file else None  # noqa: SIM115
        self.bar = None
        if self.stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=steps, unit="step", file=self.stream, leave=False, dynamic_ncols=True)

    def begin(self, label: str) -> None:
        """Start the next step (a chapter, the HTML build)."""
        self.step += 1
        self.label = label
        self.step_start = time.perf_counter()
        if self.bar is not None:
            self.bar.set_description(f"[{self.step}/{self.steps}] {label}")
        self.line("started", timed=False)

    def line(self, message: str, timed: bool = True) -> None:
        """One line: ``[3/8] table1: training vgg11 (epoch 4/7, val R 0.71) 2m13s`` (time in this step)."""
        text = f"[{self.step}/{self.steps}] {self.label}: {message}"
        if timed:
            text += f" {elapsed(time.perf_counter() - self.step_start)}"
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)
        if self.log is not None:
            self.log.write(text + "\n")
            self.log.flush()

    def end(self) -> None:
        """Finish the current step."""
        self.line("done in")
        if self.bar is not None:
            self.bar.update(1)

    def close(self, message: str | None = None) -> None:
        """Close the bar and the log, with a last line (e.g. where the book is)."""
        if self.bar is not None:
            self.bar.close()
        if message:
            text = f"{message} ({elapsed(time.perf_counter() - self.start)} in all)"
            print(text, file=self.stream, flush=True)
            if self.log is not None:
                self.log.write(text + "\n")
        if self.log is not None:
            self.log.close()
