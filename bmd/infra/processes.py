"""Worker processes that must not outlive the process that started them."""

from __future__ import annotations

import os
import select
import threading
import time


def exit_with(pid: int) -> None:
    """End this (worker) process when process ``pid`` ends, however it ends.

    An orphaned worker would go on writing into a folder that the next run cleans or reuses.
    Pool workers come from a fork server, which lives as long as its workers do, so the kernel's
    parent-death signal cannot be used: a daemon thread waits on the process instead.
    """

    def watch() -> None:
        try:
            fd = os.pidfd_open(pid)  # Linux: readable once the process has exited
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            select.select([fd], [], [])
        else:
            while True:
                time.sleep(0.5)
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    pass
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
