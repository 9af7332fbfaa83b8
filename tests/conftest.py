"""Shared fixtures.

Real radiographs are looked for in ``$BMD_REALDATA`` or, by default, ``../shared/realdata`` beside the
checkout; tests that need them are skipped when the folder is absent (a user's clone has none).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bmd import paths


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The real radiographs folder; skips the test when it is absent."""
    folder = paths.realdata_dir()
    if folder is None:
        pytest.skip("real radiographs folder not present")
    return folder


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory) -> Path:
    """One smoke-profile book build per test session (cohort, notebooks, HTML) under a temp folder.

    Returns the ``--out`` folder; every test that needs a built book reads this one build.
    """
    from bmd.book import build_book

    out = tmp_path_factory.mktemp("smoke_book")
    build_book(profile="smoke", out=out)
    return out
