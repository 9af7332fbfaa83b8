"""No patient identifiers in anything published: a smoke book and predictions on planted identifiers.

The private cohort is the smoke twin with identifiers planted in every DICOM header (name, id, birth
date, accession number, institution, physician, free-text comments) and MRN-like case and patient ids
in its manifest (see ``tests/conftest.py``). Header values must appear in no output at all; manifest
ids may stay in internal run files but not in the built book.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import PLANTED_HEADER_VALUES

pytestmark = pytest.mark.slow


def _needles() -> list[bytes]:
    """Every planted value and its distinctive parts (a name split at ^ must not leak either)."""
    parts = set()
    for value in PLANTED_HEADER_VALUES.values():
        parts.add(value)
        parts.update(p for p in value.replace("^", " ").split() if len(p) >= 6)
    return sorted({p.encode() for p in parts} | {p.lower().encode() for p in parts})


def _hits(folder: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            low = data.lower()
            found += [f"{path.relative_to(folder)}: {n.decode()}" for n in needles if n.lower() in low]
    return found


def test_planting_worked(private_book):
    import pydicom

    _, cohort, _ = private_book
    ds = pydicom.dcmread(next((cohort / "images").glob("*.dcm")))
    assert str(ds.PatientName) == PLANTED_HEADER_VALUES["PatientName"]


def test_no_header_identifier_in_any_output_of_the_book(private_book):
    out, _, _ = private_book
    assert _hits(out, _needles()) == []


def test_no_manifest_id_in_the_built_book(private_book):
    out, _, mapping = private_book
    ids = [v.encode() for v in mapping.values()]
    assert _hits(out / "_build" / "html", ids) == []
    # the internal run folder keeps ids (predictions per case), which is why it is not published
    assert _hits(out / "runs", ids[:3])


def test_private_book_shows_no_patient_images(private_book, smoke_book):
    out, _, _ = private_book

    def images(book: Path, page: str) -> int:
        return (book / "_build" / "html" / page).read_text().count("<img")

    assert images(out, "cohort.html") < images(smoke_book, "cohort.html")
    assert images(out, "landmarks.html") < images(smoke_book, "landmarks.html")


def test_predict_writes_no_identifier(private_book, tmp_path):
    from bmd.cli import main

    out, cohort, _ = private_book
    summary = json.loads((out / "runs" / "smoke" / "summary.json").read_text())
    bundle = out / summary["artifacts"]["multi_roi_model"]
    images = sorted((cohort / "images").glob("*.dcm"))[:6]
    csv, overlays = tmp_path / "pred.csv", tmp_path / "overlays"
    main(["predict", *map(str, images), "--model", str(bundle), "--out", str(csv), "--overlay", str(overlays)])
    assert csv.is_file() and len(csv.read_text().splitlines()) == len(images) + 1
    assert _hits(tmp_path, _needles()) == []
