"""Shared fixtures.

Real radiographs are looked for in ``$BMD_REALDATA`` or, by default, ``../shared/realdata`` beside the
checkout; tests that need them are skipped when the folder is absent (a user's clone has none).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bmd import paths


def realdata_dir() -> Path | None:
    """The folder of real test radiographs, or None when it is absent."""
    env = os.environ.get("BMD_REALDATA")
    folder = Path(env) if env else paths.repo_root().parent / "shared" / "realdata"
    return folder if folder.is_dir() else None


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The real radiographs folder; skips the test when it is absent."""
    folder = realdata_dir()
    if folder is None:
        pytest.skip("real radiographs folder not present")
    return folder
