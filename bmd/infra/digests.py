"""SHA-256 digests of files, bytes and JSON-able values: the one digest helper of the package."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def sha256_files(paths: Iterable[str | os.PathLike]) -> str:
    """One SHA-256 over the bytes of ``paths`` in order (hex): e.g. the code a result was computed with."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """The SHA-256 of ``data`` (hex)."""
    return hashlib.sha256(data).hexdigest()


def sha256_json(value: object) -> str:
    """The SHA-256 of a JSON-able value in canonical form (sorted keys; other objects by ``str``)."""
    return sha256_bytes(json.dumps(value, sort_keys=True, default=str).encode())
