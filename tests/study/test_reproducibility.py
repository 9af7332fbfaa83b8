"""Two smoke-profile book builds from scratch give identical ``summary.json`` numbers.

The second build is the privacy test's: the same smoke twin (same images, same DXA values, same seed)
copied as a *site's* manifest, with MRN-like case and patient ids and identifiers planted in every
DICOM header (``tests/conftest.py``). Everything is retrained and re-evaluated from scratch in another
folder, so equal numbers show both that a build is reproducible and that no result depends on the
identifiers, at the cost of one smoke build instead of two.
"""

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


def _as_site_data(data: dict) -> dict:
    """What a build on a site's manifest cannot have or states differently: the twin's oracle ceilings,
    lung-field slope and thorax shapes, the cohort's source, the manifest parameter and the image default that follows from it."""
    data = {k: v for k, v in data.items() if k not in VOLATILE | {"oracle"}}
    data["cohort"] = {k: v for k, v in data["cohort"].items() if k != "source"}
    params = data["provenance"]["parameters"]
    for key in ("manifest", "show_images"):
        params.pop(key, None)
    for rows in data["tables"].values():
        for row in rows:
            row.pop("ceiling_r", None)
    slope = (data.get("realdata") or {}).get("spectral_slope") or {}
    for key in ("twin", "twin_within_real"):  # the twin's own lung-field slope: a site has no twin images
        slope.pop(key, None)
    for key in ("thorax_aspect", "spine_offset"):  # compared with the twin's shapes: twin only
        (data.get("realdata") or {}).pop(key, None)
    return data


def test_two_builds_from_scratch_give_identical_numbers(smoke_book, private_book):
    first = json.loads((smoke_book / "runs" / "smoke" / "summary.json").read_text())
    second = json.loads((private_book[0] / "runs" / "smoke" / "summary.json").read_text())
    assert first["cohort"]["source"] == "twin" and second["cohort"]["source"] == "manifest"
    assert first["tables"]["table2"], "the summary holds the results tables"
    assert {"table1", "table2", "table3"} <= set(first["tables"]) and first["screening"] and first["landmarks"]
    assert _differences(_as_site_data(first), _as_site_data(second)) == []
