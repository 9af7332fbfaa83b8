"""Write a twin radiograph as a DICOM file (CR, explicit VR little endian, synthetic identifiers only)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian

from bmd.infra.atomic import atomic_path

_UID_ROOT = "1.2.826.0.1.3680043.10.1188."  # synthetic: fixed root + hash, so files are deterministic


def _uid(*parts: object) -> str:
    digest = int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:24], 16)
    return (_UID_ROOT + str(digest))[:64]


def write_dicom(path: Path, stored: np.ndarray, *, bits: int, monochrome1: bool, spacing_mm: float,
                case_id: str, patient_id: str, sex: str, age: int, seed: int) -> None:
    """Write ``stored`` (uint16) atomically as a CR DICOM with PixelSpacing and a display window."""
    rows, cols = stored.shape
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = _uid(seed, case_id, "sop")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = _uid(seed, case_id, "study")
    ds.SeriesInstanceUID = _uid(seed, case_id, "series")
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientID = patient_id  # synthetic
    ds.PatientName = f"TWIN^{patient_id}"
    ds.PatientSex = sex
    ds.PatientAge = f"{int(age):03d}Y"
    ds.Manufacturer = "bmd-cxr twin"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelSpacing = [f"{spacing_mm:.4f}", f"{spacing_mm:.4f}"]
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, 0, "US"
    ds.WindowCenter = (2**bits) // 2
    ds.WindowWidth = 2**bits
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
