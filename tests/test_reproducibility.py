"""Two smoke-profile book builds from scratch give identical ``summary.json`` numbers."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

#: Keys that legitimately differ between builds (DESIGN §9).
VOLATILE = {"timings_s", "created", "commit"}


def _differences(a, b, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}/{k}: only in one build" for k in set(a) ^ set(b)]
        for key in sorted(set(a) & set(b)):
            out += _differences(a[key], b[key], f"{where}/{key}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def test_two_builds_from_scratch_give_identical_numbers(smoke_book, tmp_path):
    from bmd.book import build_book

    build_book(profile="smoke", out=tmp_path)
    first = json.loads((smoke_book / "runs" / "smoke" / "summary.json").read_text())
    second = json.loads((tmp_path / "runs" / "smoke" / "summary.json").read_text())
    for data in (first, second):
        for key in VOLATILE:
            data.pop(key, None)
    assert first["tables"]["table2"], "the summary holds the results tables"
    assert _differences(first, second) == []
