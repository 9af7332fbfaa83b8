"""The image reader: real radiographs, pydicom's test files, encodings and bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage, generate_uid

from bmd.cli import main as cli_main
from bmd.io import ImageMeta, ImageReadError, describe, read_image

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"  # bundled files only, no downloads


def get_testdata_file(name: str) -> str:
    path = PYDICOM_FILES / name
    if not path.is_file():
        pytest.skip(f"pydicom test file {name} not bundled")
    return str(path)


CHEST_FILES = [
    "torchxrayvision/00000001_000.png",
    "torchxrayvision/00027426_000.png",
    "CheXmask-Database/Example/utils_example1.jpg",
    "pydicom-data/RG1_J2KI.dcm",
    "fo-dicom/CR-MONO1-10-chest",
]


def _all_real_files(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in ("SOURCES.md", "LICENSE",
                                                                                 "License.txt"))


def _mediastinum_minus_lungs(image: np.ndarray) -> float:
    h, w = image.shape
    rows = slice(int(0.3 * h), int(0.7 * h))
    mid = image[rows, int(0.45 * w):int(0.55 * w)].mean()
    lungs = (image[rows, int(0.2 * w):int(0.3 * w)].mean() + image[rows, int(0.7 * w):int(0.8 * w)].mean()) / 2
    return float(mid - lungs)


# ------------------------------------------------------------------------------------------ real files


def test_every_real_file_reads_or_fails_clearly(realdata):
    files = _all_real_files(realdata)
    assert len(files) >= 15
    for path in files:
        try:
            image, meta = read_image(path)
        except ImageReadError as exc:
            assert "\n" not in str(exc) and str(exc), path
            continue
        assert image.dtype == np.float32 and image.shape == (meta.rows, meta.cols), path
        assert 0.0 <= image.min() <= image.max() <= 1.0, path


@pytest.mark.parametrize("rel", CHEST_FILES)
def test_chest_radiographs_have_bone_bright_mediastinum(realdata, rel):
    image, meta = read_image(realdata / rel)
    assert _mediastinum_minus_lungs(image) > 0.05, (rel, meta.photometric)


def test_real_dicom_metadata(realdata):
    _, rg1 = read_image(realdata / "pydicom-data/RG1_J2KI.dcm")
    assert rg1.spacing is None  # the header says 0.000\0.000
    assert rg1.photometric == "MONOCHROME1" and rg1.bits_stored == 15 and (rg1.rows, rg1.cols) == (1955, 1841)
    _, dental = read_image(realdata / "fo-dicom/CR-ModalitySequenceLUT.dcm")
    assert dental.spacing == pytest.approx((0.15, 0.15))
    _, mammo = read_image(realdata / "fo-dicom/GH133.dcm")
    assert mammo.spacing is not None and mammo.spacing[0] == pytest.approx(0.094, abs=0.001)
    _, nometa = read_image(realdata / "fo-dicom/CR-MONO1-10-chest")  # no preamble, no file meta
    assert nometa.transfer_syntax == "Implicit VR Little Endian" and nometa.spacing is None
    _, cr = read_image(realdata / "pydicom/dicomdirtests/77654033/CR1/6154")
    assert cr.spacing == pytest.approx((0.1, 0.1))  # ImagerPixelSpacing only


def test_lossless_and_lossy_jpeg2000_of_the_same_tibia_agree(realdata):
    a, _ = read_image(realdata / "pydicom-data/RG3_J2KR.dcm")
    b, _ = read_image(realdata / "pydicom-data/RG3_J2KI.dcm")
    assert a.shape == b.shape and np.abs(a - b).mean() < 0.02


def test_text_file_among_real_data_is_refused(realdata):
    with pytest.raises(ImageReadError, match="not a DICOM, PNG or JPEG file"):
        read_image(realdata / "CheXmask-Database/Example/RL_landmarks.txt")


# ---------------------------------------------------------------------------------- pydicom test files


def test_every_pydicom_test_file_reads_or_fails_clearly():
    outcomes = {"ok": 0, "refused": 0}
    for path in sorted(PYDICOM_FILES.rglob("*")):
        try:
            read_image(path)
            outcomes["ok"] += 1
        except ImageReadError as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
    assert outcomes["ok"] >= 30 and outcomes["refused"] >= 10


@pytest.mark.parametrize("variant", ["MR_small_bigendian.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                                     "MR_small_implicit.dcm", "MR_small_expb.dcm", "MR_small_padded.dcm"])
def test_encodings_of_mr_small_give_the_same_image(variant):
    ref, _ = read_image(get_testdata_file("MR_small.dcm"))
    img, _ = read_image(get_testdata_file(variant))
    assert np.allclose(ref, img, atol=1e-6)


def test_rgb_dicom_becomes_grey():
    image, meta = read_image(get_testdata_file("SC_rgb_rle.dcm"))
    assert image.ndim == 2 and meta.photometric == "RGB"


# ------------------------------------------------------------------------------- synthetic encodings


def _dataset(pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12, **extra) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for key, value in extra.items():
        setattr(ds, key, value)
    return ds


def _pattern(shape=(48, 40), bits=12) -> np.ndarray:
    y, x = np.mgrid[: shape[0], : shape[1]]
    return ((np.sin(x / 5.0) + np.cos(y / 7.0) + 2) / 4 * (2**bits - 1)).astype(np.uint16)


def test_same_picture_in_different_encodings_reads_the_same(tmp_path):
    pix = _pattern()
    plain = tmp_path / "plain.dcm"
    _dataset(pix).save_as(plain, enforce_file_format=True)
    ref, meta = read_image(plain)
    assert meta.photometric == "MONOCHROME2" and meta.bits_stored == 12

    mono1 = tmp_path / "mono1.dcm"
    _dataset((2**12 - 1) - pix, photometric="MONOCHROME1").save_as(mono1, enforce_file_format=True)
    rle = tmp_path / "rle.dcm"
    ds = _dataset(pix)
    ds.compress(RLELossless)
    ds.save_as(rle, enforce_file_format=True)
    nometa = tmp_path / "nometa.dcm"
    ds = _dataset(pix)
    del ds.file_meta
    ds.save_as(nometa, implicit_vr=True, little_endian=True, enforce_file_format=False)
    for path in (mono1, rle, nometa):
        img, _ = read_image(path)
        assert np.allclose(img, ref, atol=1e-5), path.name


def test_window_and_rescale_are_applied(tmp_path):
    pix = _pattern()
    path = tmp_path / "win.dcm"
    _dataset(pix, RescaleSlope=2.0, RescaleIntercept=-100.0, WindowCenter=2000.0, WindowWidth=1000.0).save_as(
        path, enforce_file_format=True)
    image, _ = read_image(path)
    values = pix.astype(float) * 2 - 100
    expected = np.clip((values - 1999.5) / 999.0 + 0.5, 0, 1)
    assert np.allclose(image, expected, atol=1e-5)


def test_absurd_window_is_ignored_and_zero_spacing_is_unknown(tmp_path):
    pix = _pattern()
    path = tmp_path / "badwin.dcm"
    _dataset(pix, WindowCenter=100.0, WindowWidth=0.0, PixelSpacing=[0, 0]).save_as(path, enforce_file_format=True)
    image, meta = read_image(path)
    assert image.min() == 0.0 and image.max() == 1.0  # min–max fallback, not a flat image
    assert meta.spacing is None
    path2 = tmp_path / "goodspacing.dcm"
    _dataset(pix, PixelSpacing=[0.2, 0.25]).save_as(path2, enforce_file_format=True)
    assert read_image(path2)[1].spacing == (0.2, 0.25)


def test_png_16_bit_and_rgb(tmp_path):
    arr16 = (np.linspace(0, 65535, 32 * 24).reshape(32, 24)).astype(np.uint16)
    Image.fromarray(arr16).save(tmp_path / "a.png")
    img, meta = read_image(tmp_path / "a.png")
    assert np.allclose(img, arr16 / 65535.0, atol=1e-6) and meta.source_format == "png"
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "b.jpg", quality=100)
    img, meta = read_image(tmp_path / "b.jpg")
    assert img.shape == (10, 12) and meta.source_format == "jpeg"


# ------------------------------------------------------------------------------------------ bad inputs


def _save(ds: Dataset, path) -> str:
    ds.save_as(path, enforce_file_format=True)
    return str(path)


BAD_CASES = {
    "missing": (lambda d: str(d / "nope.dcm"), "file not found"),
    "directory": (lambda d: str(d), "is a directory"),
    "empty": (lambda d: _write(d / "e.dcm", b""), "empty file"),
    "text": (lambda d: _write(d / "t.txt", b"hello\n" * 50), "not a DICOM, PNG or JPEG"),
    "truncated pixels": (lambda d: _save(_truncated(), d / "tr.dcm"), r"truncated \(expected 3840 bytes"),
    "huge declared size": (lambda d: _save(_declared(60000, 60000), d / "huge.dcm"), "absurd"),
    "no pixel data": (lambda d: _save(_no_pixels(), d / "np.dcm"), "has no pixel data"),
    "bits allocated wrong": (lambda d: _save(_bits(), d / "bits.dcm"), "BitsAllocated 12"),
    "rows too small": (lambda d: _save(_declared(4, 40), d / "rows.dcm"), "does not match the declared size"),
    "corrupt png": (lambda d: _write(d / "c.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40), "cannot decode image file"),
    "huge png": (lambda d: _huge_png(d / "h.png"), "absurd"),
    "rows missing": (lambda d: _save(_no_rows(), d / "norows.dcm"), "Rows is missing"),
}


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _truncated() -> Dataset:
    ds = _dataset(_pattern())
    ds.PixelData = ds.PixelData[:1000]
    return ds


def _declared(rows: int, cols: int) -> Dataset:
    ds = _dataset(_pattern())
    ds.Rows, ds.Columns = rows, cols
    return ds


def _no_pixels() -> Dataset:
    ds = _dataset(_pattern())
    del ds.PixelData
    return ds


def _bits() -> Dataset:
    ds = _dataset(_pattern())
    ds.BitsAllocated = 12
    return ds


def _no_rows() -> Dataset:
    ds = _dataset(_pattern())
    del ds.Rows
    return ds


def _huge_png(path) -> str:
    # a valid PNG header declaring 100000 x 100000 pixels; Pillow reads the size without decoding
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    idat = zlib.compress(b"\0" * 100)
    return _write(path, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_inputs_fail_with_their_own_message(tmp_path, case):
    make, pattern = BAD_CASES[case]
    path = make(tmp_path)
    with pytest.raises(ImageReadError, match=pattern) as info:
        read_image(path)
    assert "\n" not in str(info.value)


def test_inspect_prints_one_line_per_file_and_fails_when_one_fails(tmp_path, capsys):
    good = _save(_dataset(_pattern()), tmp_path / "g.dcm")
    bad = tmp_path / "b.txt"
    bad.write_text("not an image")
    assert cli_main(["inspect", good]) == 0
    assert cli_main(["inspect", good, str(bad)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[-1].startswith(f"{bad}: cannot use:")
    assert "48x40" not in lines[0] and "40x48 px" in lines[0]


# ------------------------------------------------------------------------------------------- privacy

IDENTIFIERS = {"PatientName": "Doe^Jane", "PatientID": "MRN12345", "PatientBirthDate": "19470312",
               "AccessionNumber": "ACC778899", "InstitutionName": "St Example Hospital",
               "ImageComments": "callback 555-0199"}


def test_no_identifier_leaves_the_reader(tmp_path):
    ds = _dataset(_pattern(), **IDENTIFIERS)
    path = _save(ds, tmp_path / "ident.dcm")
    _, meta = read_image(path)
    texts = [repr(meta), describe(path)]
    broken = _dataset(_pattern(), **IDENTIFIERS)
    broken.PixelData = broken.PixelData[:100]
    with pytest.raises(ImageReadError) as info:
        read_image(_save(broken, tmp_path / "broken.dcm"))
    texts.append(str(info.value))
    for value in IDENTIFIERS.values():
        for part in value.split("^"):
            assert all(part not in text for text in texts), part
    assert set(ImageMeta.__dataclass_fields__) == {
        "rows", "cols", "spacing", "photometric", "bits_stored", "modality", "view", "source_format",
        "transfer_syntax", "raw_min", "raw_max"}


def test_dataset_read_without_pydicom_warnings_escaping(tmp_path, recwarn):
    read_image(_save(_dataset(_pattern()), tmp_path / "w.dcm"))
    assert not [w for w in recwarn if "pydicom" in str(w.filename)]


def test_dcmread_of_written_file_is_valid(tmp_path):
    path = _save(_dataset(_pattern()), tmp_path / "v.dcm")
    assert pydicom.dcmread(path).Rows == 48
