"""Shared fixtures.

Real radiographs are looked for in ``$BMD_REALDATA`` or, by default, ``../shared/realdata`` beside the
checkout; tests that need them are skipped when the folder is absent (a user's clone has none).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bmd.infra import paths


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
    from bmd.study.book import build_book

    out = tmp_path_factory.mktemp("smoke_book")
    build_book(profile="smoke", out=out)
    return out


#: Identifiers planted in the DICOM headers of the private cohort; none may reach any output.
PLANTED_HEADER_VALUES = {
    "PatientName": "Plantedname^Hortensia^Q",
    "PatientID": "MRN40417733",
    "PatientBirthDate": "19410923",
    "AccessionNumber": "ACC88120457",
    "InstitutionName": "Saint Plantedwell Infirmary",
    "ReferringPhysicianName": "Drplanted^Ottokar",
    "StudyDescription": "CHEST PA Plantedwell",
    "ImageComments": "seen by Dr Plantedwell re fall 3rd floor",
    "PatientComments": "lives alone at 17 Plantedwell Road",
}


def _plant(src: Path, dst: Path) -> dict[str, str]:
    """Copy a twin cohort, plant identifiers in every DICOM header and give cases MRN-like ids.

    Returns the old → new id mapping (case and patient ids).
    """
    import shutil

    import pandas as pd
    import pydicom

    shutil.copytree(src, dst)
    manifest = pd.read_csv(dst / "manifest.csv", dtype=str)
    new_case = {c: f"MRN{7301100 + i:08d}" for i, c in enumerate(manifest["case_id"])}
    new_patient = {p: f"PT{55200 + i:06d}X" for i, p in enumerate(sorted(set(manifest["patient_id"])))}
    for image in manifest["image"]:
        path = dst / image
        if path.suffix.lower() != ".dcm":
            continue
        ds = pydicom.dcmread(path)
        for key, value in PLANTED_HEADER_VALUES.items():
            setattr(ds, key, value)
        ds.save_as(path)
    manifest["case_id"] = manifest["case_id"].map(new_case)
    manifest["patient_id"] = manifest["patient_id"].map(new_patient)
    manifest.to_csv(dst / "manifest.csv", index=False)
    for name in ("landmarks.csv",):
        table = pd.read_csv(dst / name, dtype=str)
        table["case_id"] = table["case_id"].map(new_case)
        table.to_csv(dst / name, index=False)
    (dst / "latents.csv").unlink(missing_ok=True)  # the generator's latents are not part of a site's data
    (dst / "oracle.json").unlink(missing_ok=True)
    return {**new_case, **new_patient}


@pytest.fixture(scope="session")
def private_book(smoke_book, tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """The smoke book built on a *site's* manifest: the smoke twin with planted identifiers.

    Returns ``(out folder, cohort folder, old → new id mapping)``. Built once per test session.
    """
    from bmd.study.book import build_book

    base = tmp_path_factory.mktemp("private")
    cohort = base / "cohort"
    mapping = _plant(smoke_book / "data" / "twin" / "smoke-seed0", cohort)
    out = base / "out"
    build_book(profile="smoke", manifest=cohort / "manifest.csv", out=out)
    return out, cohort, mapping
