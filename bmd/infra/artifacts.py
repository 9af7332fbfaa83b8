"""Is this artifact still current? One answer for every artifact the study builds and reuses.

An artifact (a folder such as the detector or a training run, or one file such as a table's rows)
is current when the **key** of the inputs it was made from equals the key of today's inputs. The key
is :func:`inputs_key` of a JSON-able description of the inputs: configuration values, input files'
content digests (:func:`bmd.infra.digests.sha256_file`) or cheap ``(path, size, mtime)`` stamps
(:func:`file_stamp`), the digests of the code that computes it (:func:`bmd.infra.digests.sha256_files`),
and the keys of the artifacts it was made from. The key and the description are written, atomically and
after the artifact itself, to one **stamp file** beside it: ``.<name>.artifact.json``. No stamp, another
key, or (for a file) a file changed since it was stamped means: build again.

:meth:`Artifact.build` does the rest of what every owner needs: it reuses a current artifact, else it
takes the artifact's lock (:func:`bmd.infra.locks.hold_lock`: waiting for a live process that is
building the same artifact), checks again (that process may have just built it), and builds and stamps
it. An artifact made before stamps existed is adopted when the owner's previous rule (``legacy``) still
accepts it, so old run folders are reused instead of rebuilt.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from bmd.infra.atomic import write_text
from bmd.infra.digests import sha256_json
from bmd.infra.locks import hold_lock


def inputs_key(inputs: object) -> str:
    """The key of an artifact's inputs: the SHA-256 of their JSON description (sorted keys)."""
    return sha256_json(inputs)


def file_stamp(path: str | os.PathLike) -> list:
    """``[path, size, mtime_ns]`` of a file: a cheap stand-in for its content in a key."""
    st = os.stat(path)
    return [str(path), st.st_size, st.st_mtime_ns]


@dataclass(frozen=True)
class Artifact:
    """One thing on disk that an owner builds once and reuses while its inputs are unchanged.

    ``path``: the folder or file; ``what``: how messages name it ("the landmark detector");
    ``folder``: whether it is a folder or a file (a file is also checked to be unchanged since its
    stamp: same size and modification time); ``lock``: the lock
    file guarding its build (default ``.<name>.lock`` beside it).
    """

    path: Path
    what: str
    folder: bool = True
    lock: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def stamp(self) -> Path:
        """The stamp file beside the artifact (never inside: a folder handed on stays as it was built)."""
        return self.path.with_name(f".{self.path.name}.artifact.json")

    @property
    def lock_file(self) -> Path:
        """The lock file that serialises builds of this artifact."""
        return self.lock or self.path.with_name(f".{self.path.name}.lock")

    def read_stamp(self) -> dict | None:
        """The stamp's content, or None when it is missing or unreadable."""
        try:
            data = json.loads(self.stamp.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def is_current(self, key: str) -> bool:
        """Whether the artifact exists and was stamped with ``key`` (a file: and is unchanged since)."""
        data = self.read_stamp()
        if data is None or data.get("key") != key or not self.path.exists():
            return False
        if not self.folder:
            try:
                return data.get("file") == file_stamp(self.path)[1:]
            except OSError:
                return False
        return True

    def mark(self, key: str, inputs: object = None) -> None:
        """Stamp the artifact as made from ``key`` (written atomically; call once it is complete)."""
        data: dict = {"key": key, "inputs": inputs}
        if not self.folder:
            data["file"] = file_stamp(self.path)[1:]
        write_text(self.stamp, json.dumps(data, indent=1, sort_keys=True, default=str))

    def clear(self) -> None:
        """Remove the stamp: the artifact is no longer taken as current (before rebuilding it in place)."""
        self.stamp.unlink(missing_ok=True)

    def holding(self, wait: bool = True, timeout: float | None = None, error: type[Exception] | None = None
                ) -> AbstractContextManager:
        """This artifact's lock (see :func:`bmd.infra.locks.hold_lock`)."""
        extra = {} if error is None else {"error": error}
        return hold_lock(self.lock_file, self.what, wait=wait, timeout=timeout, **extra)

    def build(self, key: str, make: Callable[[], object], *, inputs: object = None,
              valid: Callable[[], bool] | None = None, legacy: Callable[[], bool] | None = None,
              lock: Callable[[], AbstractContextManager] | None = None, wait: bool = True,
              timeout: float | None = None) -> bool:
        """Reuse the artifact when current for ``key``, else build it with ``make()`` and stamp it.

        ``valid``: an extra check that the artifact is usable (e.g. its files are all there);
        ``legacy``: the owner's previous rule, for an artifact without a stamp (made before stamps
        existed): when it accepts the artifact, the artifact is stamped and reused. ``lock``: the lock
        to build under (default :meth:`holding`). Returns True when it was built here.
        """
        if self._reusable(key, inputs, valid, legacy):
            return False
        with (lock() if lock is not None else self.holding(wait=wait, timeout=timeout)):
            if self._reusable(key, inputs, valid, legacy):  # built by the process we waited for
                return False
            self.clear()
            make()
            self.mark(key, inputs)
        return True

    def _reusable(self, key: str, inputs: object, valid: Callable[[], bool] | None,
                  legacy: Callable[[], bool] | None) -> bool:
        if self.is_current(key):
            return valid is None or valid()
        if legacy is not None and self.read_stamp() is None and self.path.exists():
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                if legacy() and (valid is None or valid()):
                    self.mark(key, inputs)
                    return True
        return False
