"""The image reader: real radiographs, pydicom's test files, encodings and bad inputs."""

from __future__ import annotations

import logging
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from bmd.cli import main as cli_main
from bmd.io import ImageMeta, ImageReadError, describe, read_image

# pydicom's bundled files only: names that live in the separate pydicom-data set would be downloaded
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def bundled(name: str) -> str:
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


def _all_real_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _mediastinum_minus_lungs(image: np.ndarray) -> float:
    h, w = image.shape
    rows = slice(int(0.3 * h), int(0.7 * h))
    mid = image[rows, int(0.45 * w):int(0.55 * w)].mean()
    lungs = (image[rows, int(0.2 * w):int(0.3 * w)].mean() + image[rows, int(0.7 * w):int(0.8 * w)].mean()) / 2
    return float(mid - lungs)


# ------------------------------------------------------------------------------------------ real files


def test_every_real_file_reads_or_fails_clearly(realdata):
    files = _all_real_files(realdata)
    assert len(files) >= 20
    read, refused = [], []
    for path in files:
        try:
            image, meta = read_image(path)
        except ImageReadError as exc:
            assert str(exc) and "\n" not in str(exc), path
            refused.append(path.name)
            continue
        assert image.dtype == np.float32 and image.shape == (meta.rows, meta.cols), path
        assert 0.0 <= image.min() <= image.max() <= 1.0, path
        read.append(path.name)
    assert {"RG1_J2KI.dcm", "CR-MONO1-10-chest", "GH133.dcm", "utils_example1.jpg", "6154"} <= set(read)
    assert {"RL_landmarks.txt", "LL_landmarks.txt", "H_landmarks.txt", "SOURCES.md"} <= set(refused)


@pytest.mark.parametrize("rel", CHEST_FILES)
def test_chest_radiographs_have_bone_bright_mediastinum(realdata, rel):
    image, meta = read_image(realdata / rel)
    assert _mediastinum_minus_lungs(image) > 0.05, (rel, meta.photometric)


def test_real_dicom_metadata(realdata):
    _, rg1 = read_image(realdata / "pydicom-data/RG1_J2KI.dcm")
    assert rg1.spacing is None  # the header says 0.000\0.000
    assert rg1.photometric == "MONOCHROME1" and rg1.bits_stored == 15 and (rg1.rows, rg1.cols) == (1955, 1841)
    assert rg1.modality == "CR" and rg1.transfer_syntax == "JPEG 2000 Image Compression"
    _, dental = read_image(realdata / "fo-dicom/CR-ModalitySequenceLUT.dcm")
    assert dental.spacing == pytest.approx((0.15, 0.15))
    _, mammo = read_image(realdata / "fo-dicom/GH133.dcm")  # ImagerPixelSpacing only
    assert mammo.spacing is not None and mammo.spacing[0] == pytest.approx(0.094, abs=0.001)
    _, nometa = read_image(realdata / "fo-dicom/CR-MONO1-10-chest")  # no preamble, no file meta
    assert nometa.transfer_syntax == "Implicit VR Little Endian" and nometa.spacing is None
    _, cr = read_image(realdata / "pydicom/dicomdirtests/77654033/CR1/6154")
    assert cr.spacing == pytest.approx((0.1, 0.1))


def test_real_describe_line(realdata):
    line = describe(realdata / "pydicom-data/RG1_J2KI.dcm")
    assert line.startswith("dicom MONOCHROME1 1955x1841 px, spacing unknown, 15-bit, CR")
    assert line.endswith("(raw 803..26512)") and "\n" not in line


def test_lossless_and_lossy_jpeg2000_of_the_same_tibia_agree(realdata):
    a, _ = read_image(realdata / "pydicom-data/RG3_J2KR.dcm")
    b, _ = read_image(realdata / "pydicom-data/RG3_J2KI.dcm")
    assert a.shape == b.shape and np.abs(a - b).mean() < 0.02


def test_text_file_among_real_data_is_refused(realdata):
    with pytest.raises(ImageReadError, match="^not a DICOM, PNG or JPEG file$"):
        read_image(realdata / "CheXmask-Database/Example/RL_landmarks.txt")


# ---------------------------------------------------------------------------------- pydicom test files


def test_every_bundled_pydicom_file_reads_or_fails_clearly():
    outcomes = {"ok": 0, "refused": 0}
    for path in sorted(p for p in PYDICOM_FILES.rglob("*") if p.is_file()):
        try:
            image, meta = read_image(path)
        except ImageReadError as exc:
            assert str(exc) and "\n" not in str(exc), path
            outcomes["refused"] += 1
            continue
        assert image.dtype == np.float32 and image.shape == (meta.rows, meta.cols), path
        assert 0.0 <= image.min() <= image.max() <= 1.0, path
        outcomes["ok"] += 1
    assert outcomes["ok"] >= 30 and outcomes["refused"] >= 10


@pytest.mark.parametrize("name", ["CT_small.dcm", "JPEG2000.dcm", "JPGExtended.dcm", "SC_rgb_jpeg_gdcm.dcm",
                                  "SC_ybr_full_422_uncompressed.dcm", "examples_palette.dcm", "image_dfl.dcm",
                                  "liver_1frame.dcm", "liver_expb_1frame.dcm", "rtdose.dcm", "693_J2KI.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_rle_2frame.dcm"])
def test_named_pydicom_files_read(name):
    image, meta = read_image(bundled(name))
    assert image.ndim == 2 and image.dtype == np.float32 and meta.source_format == "dicom"
    assert image.max() > image.min()


@pytest.mark.parametrize(("name", "pattern"), [
    ("rtplan.dcm", "^DICOM has no pixel data$"),
    ("MR_truncated.dcm", r"pixel data is truncated \(expected 8192 bytes, found 8130\)"),
    ("JPEG-lossy.dcm", "^cannot decode JPEG Extended .* pixel data: RuntimeError"),
    ("README.txt", "^not a DICOM, PNG or JPEG file$"),
    ("zipMR.gz", "^not a DICOM, PNG or JPEG file$"),
])
def test_named_pydicom_files_are_refused(name, pattern):
    with pytest.raises(ImageReadError, match=pattern):
        read_image(bundled(name))


@pytest.mark.parametrize("variant", ["MR_small_bigendian.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                                     "MR_small_implicit.dcm", "MR_small_expb.dcm", "MR_small_padded.dcm",
                                     "MR_small_jpeg_ls_lossless.dcm"])
def test_encodings_of_mr_small_give_the_same_image(variant):
    ref, _ = read_image(bundled("MR_small.dcm"))
    img, _ = read_image(bundled(variant))
    assert np.allclose(ref, img, atol=1e-6)


def test_colour_dicom_becomes_grey():
    image, meta = read_image(bundled("SC_rgb_rle.dcm"))
    assert image.shape == (meta.rows, meta.cols) and meta.photometric == "RGB"
    ybr, _ = read_image(bundled("SC_rgb_dcmtk_+eb+cy+n1.dcm"))  # same picture as YBR_FULL JPEG
    assert np.abs(ybr - read_image(bundled("SC_rgb_dcmtk_+eb+cr.dcm"))[0]).mean() < 0.02


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
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    signed = pixels.dtype.kind == "i"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, int(signed)
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    for key, value in extra.items():
        setattr(ds, key, value)
    return ds


def _pattern(shape=(48, 40), bits=12) -> np.ndarray:
    y, x = np.mgrid[: shape[0], : shape[1]]
    return ((np.sin(x / 5.0) + np.cos(y / 7.0) + 2) / 4 * (2**bits - 1)).astype(np.uint16)


def _save(ds: Dataset, path, **kwargs) -> str:
    ds.save_as(path, **({"enforce_file_format": True} | kwargs))
    return str(path)


def test_same_picture_in_different_encodings_reads_the_same(tmp_path):
    pix = _pattern()
    ref, meta = read_image(_save(_dataset(pix), tmp_path / "plain.dcm"))
    assert meta.photometric == "MONOCHROME2" and meta.bits_stored == 12
    assert ref.min() == 0.0 and ref.max() == 1.0  # no window: plain min–max

    variants = {"mono1": _dataset((2**12 - 1) - pix, photometric="MONOCHROME1"),
                "signed": _dataset(pix.astype(np.int16) - 2048)}
    rle = _dataset(pix)
    rle.compress(RLELossless)
    variants["rle"] = rle
    big = _dataset(pix)
    big.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    big.PixelData = pix.astype(">u2").tobytes()  # OW is written as is: swap the bytes ourselves
    variants["big-endian"] = big
    paths = {name: _save(ds, tmp_path / f"{name}.dcm") for name, ds in variants.items()}
    for name, implicit in (("nometa-implicit", True), ("nometa-explicit", False)):
        ds = _dataset(pix)
        del ds.file_meta
        paths[name] = _save(ds, tmp_path / f"{name}.dcm", implicit_vr=implicit, little_endian=True,
                            enforce_file_format=False)
        assert Path(paths[name]).read_bytes()[128:132] != b"DICM"
    for name, path in paths.items():
        img, m = read_image(path)
        assert np.allclose(img, ref, atol=1e-5), name
    assert read_image(paths["nometa-explicit"])[1].transfer_syntax == "Explicit VR Little Endian"
    assert read_image(paths["big-endian"])[1].transfer_syntax == "Explicit VR Big Endian"


def test_window_and_rescale_are_applied(tmp_path):
    pix = _pattern()
    path = _save(_dataset(pix, RescaleSlope=2.0, RescaleIntercept=-100.0, WindowCenter=[2000.0, 10.0],
                          WindowWidth=[1000.0, 5.0]), tmp_path / "win.dcm")
    image, _ = read_image(path)
    values = pix.astype(float) * 2 - 100
    expected = np.clip((values - 1999.5) / 999.0 + 0.5, 0, 1)  # the first window, DICOM LINEAR
    assert np.allclose(image, expected, atol=1e-5)


def test_sigmoid_window(tmp_path):
    pix = _pattern()
    path = _save(_dataset(pix, WindowCenter=2000.0, WindowWidth=800.0, VOILUTFunction="SIGMOID"), tmp_path / "s.dcm")
    expected = 1 / (1 + np.exp(-4 * (pix.astype(float) - 2000) / 800))
    assert np.allclose(read_image(path)[0], expected, atol=1e-5)


@pytest.mark.parametrize("width", [0.0, -50.0, 1e12])
def test_absurd_window_is_ignored(tmp_path, width):
    path = _save(_dataset(_pattern(), WindowCenter=100.0, WindowWidth=width), tmp_path / "badwin.dcm")
    image, _ = read_image(path)
    assert image.min() == 0.0 and image.max() == 1.0  # min–max fallback, not a flat image


@pytest.mark.parametrize(("photometric", "shape", "inverted"), [
    ("MONOCHROME2", "IDENTITY", False), ("MONOCHROME2", "INVERSE", True),
    ("MONOCHROME1", "INVERSE", True), ("MONOCHROME1", None, True),
])
def test_monochrome1_and_inverse_presentation_invert_once(tmp_path, photometric, shape, inverted):
    pix = _pattern()
    extra = {"PresentationLUTShape": shape} if shape else {}
    image, _ = read_image(_save(_dataset(pix, photometric=photometric, **extra), tmp_path / "p.dcm"))
    plain = (pix - pix.min()) / np.ptp(pix)
    assert np.allclose(image, 1 - plain if inverted else plain, atol=1e-5)


def test_spacing_zero_is_unknown_and_imager_spacing_is_the_fallback(tmp_path):
    pix = _pattern()
    cases = {"zero": ({"PixelSpacing": [0, 0]}, None), "negative": ({"PixelSpacing": [-0.1, 0.1]}, None),
             "huge": ({"PixelSpacing": [50, 50]}, None), "good": ({"PixelSpacing": [0.2, 0.25]}, (0.2, 0.25)),
             "imager": ({"PixelSpacing": [0, 0], "ImagerPixelSpacing": [0.139, 0.139]}, (0.139, 0.139))}
    for name, (extra, expected) in cases.items():
        meta = read_image(_save(_dataset(pix, **extra), tmp_path / f"{name}.dcm"))[1]
        assert meta.spacing == (pytest.approx(expected) if expected else None), name


def test_multi_frame_reads_the_first_frame(tmp_path):
    pix = _pattern()
    frames = np.stack([pix, pix[::-1]])
    ds = _dataset(frames, NumberOfFrames=2)
    image, meta = read_image(_save(ds, tmp_path / "mf.dcm"))
    assert image.shape == pix.shape == (meta.rows, meta.cols)
    assert np.allclose(image, (pix - pix.min()) / np.ptp(pix), atol=1e-5)


def test_png_8_and_16_bit_and_rgb(tmp_path):
    arr16 = (np.linspace(0, 65535, 32 * 24).reshape(32, 24)).astype(np.uint16)
    Image.fromarray(arr16).save(tmp_path / "a.png")
    img, meta = read_image(tmp_path / "a.png")
    assert np.allclose(img, arr16 / 65535.0, atol=1e-6) and meta.source_format == "png" and meta.bits_stored == 16
    arr8 = np.full((5, 7), 51, np.uint8)
    Image.fromarray(arr8).save(tmp_path / "c.png")
    img, meta = read_image(tmp_path / "c.png")
    assert np.allclose(img, 0.2) and meta.photometric == "PNG-L" and meta.spacing is None
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "b.jpg", quality=100)
    img, meta = read_image(tmp_path / "b.jpg")
    assert img.shape == (10, 12) and meta.source_format == "jpeg" and meta.photometric == "JPEG-RGB"
    assert abs(img.mean() - 0.587 * 200 / 255) < 0.02  # luminance


# ------------------------------------------------------------------------------------------ bad inputs


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _modified(**changes) -> Dataset:
    ds = _dataset(_pattern())
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    return ds


def _huge_png(path: Path) -> str:
    # a valid PNG header declaring 100000 x 100000 pixels; Pillow reads the size without decoding
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 100)
    return _write(path, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _big_png(path: Path) -> str:
    # 20001 columns: over the side limit but under Pillow's own limit, so the reader's check speaks
    Image.new("L", (20001, 2)).save(path)
    return str(path)


BAD_CASES = {
    "missing": (lambda d: str(d / "nope.dcm"), "^file not found$"),
    "directory": (lambda d: str(d), "^is a directory"),
    "empty": (lambda d: _write(d / "e.dcm", b""), "^empty file$"),
    "text": (lambda d: _write(d / "t.txt", b"hello\n" * 50), "^not a DICOM, PNG or JPEG file$"),
    "random bytes": (lambda d: _write(d / "r.bin", np.random.default_rng(0).bytes(3000)),
                     "^not a DICOM, PNG or JPEG file$"),
    "truncated pixels": (lambda d: _save(_modified(PixelData=_dataset(_pattern()).PixelData[:1000]), d / "tr.dcm"),
                         r"^pixel data is truncated \(expected 3840 bytes, found 1000\)$"),
    "8-bit data declared 16": (lambda d: _save(_modified(PixelData=_pattern().astype(np.uint8).tobytes()),
                                               d / "b8.dcm"), r"truncated \(expected 3840 bytes, found 1920\)"),
    "huge declared size": (lambda d: _save(_modified(Rows=60000, Columns=60000), d / "huge.dcm"),
                           "^declared size 60000x60000 is absurd"),
    "too many frames": (lambda d: _save(_modified(NumberOfFrames=1_000_000), d / "frames.dcm"),
                        "^declared 1000000 frames of 48x40 is absurd"),
    "zero rows": (lambda d: _save(_modified(Rows=0), d / "zero.dcm"), "^declared size 0x40 is empty$"),
    "no pixel data": (lambda d: _save(_modified(PixelData=None), d / "np.dcm"), "^DICOM has no pixel data$"),
    "bits allocated 12": (lambda d: _save(_modified(BitsAllocated=12), d / "bits.dcm"),
                          "^BitsAllocated 12 is not 1, 8, 16 or 32$"),
    "rows too small": (lambda d: _save(_modified(Rows=4), d / "rows.dcm"), "does not match the declared size"),
    "rows missing": (lambda d: _save(_modified(Rows=None), d / "norows.dcm"), "^DICOM Rows is missing"),
    "corrupt png": (lambda d: _write(d / "c.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40), "^cannot decode image file"),
    "truncated jpeg": (lambda d: _write(d / "t.jpg", _jpeg_bytes()[:300]), "^cannot decode image file"),
    "huge png": (lambda d: _huge_png(d / "h.png"), "absurd"),
    "wide png": (lambda d: _big_png(d / "w.png"), "^declared size 2x20001 is absurd"),
}


def _jpeg_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_inputs_fail_with_their_own_message(tmp_path, case):
    make, pattern = BAD_CASES[case]
    path = make(tmp_path)
    with pytest.raises(ImageReadError, match=pattern) as info:
        read_image(path)
    assert "\n" not in str(info.value) and isinstance(info.value, ValueError)


def test_huge_declared_size_is_refused_before_allocating(tmp_path):
    path = _save(_modified(Rows=60000, Columns=60000), tmp_path / "huge.dcm")
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ImageReadError, match="absurd"):
            read_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6 and time.perf_counter() - start < 5


def test_compressed_data_without_transfer_syntax_is_refused(tmp_path):
    ds = _dataset(_pattern())
    ds.compress(RLELossless)
    del ds.file_meta
    path = _save(ds, tmp_path / "rle-nometa.dcm", implicit_vr=False, little_endian=True, enforce_file_format=False)
    with pytest.raises(ImageReadError, match="compressed but the file names no transfer syntax"):
        read_image(path)


def test_inspect_prints_one_line_per_file_and_fails_when_one_fails(tmp_path, capsys):
    pix = _pattern()
    good = _save(_dataset(pix), tmp_path / "g.dcm")
    bad = tmp_path / "b.txt"
    bad.write_text("not an image")
    assert cli_main(["inspect", good]) == 0
    assert cli_main(["inspect", good, str(bad)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[-1] == f"{bad}: cannot use: not a DICOM, PNG or JPEG file"
    assert lines[0] == (f"{good}: dicom MONOCHROME2 48x40 px, spacing unknown, 12-bit, CR, "
                        f"Explicit VR Little Endian, range [0.000, 1.000] (raw {pix.min()}..{pix.max()})")


# ------------------------------------------------------------------------------------------- privacy

IDENTIFIERS = {"PatientName": "Doe^Jane", "PatientID": "MRN12345", "PatientBirthDate": "19470312",
               "AccessionNumber": "ACC778899", "InstitutionName": "St Example Hospital",
               "ImageComments": "callback 555-0199", "StudyDate": "20230405"}


def _leaks(text: str) -> list[str]:
    parts = [p for v in IDENTIFIERS.values() for p in v.split("^")]
    return [p for p in parts if p in text]


def test_no_identifier_leaves_the_reader(tmp_path, caplog):
    import pydicom.config

    path = _save(_dataset(_pattern(), **IDENTIFIERS), tmp_path / "ident.dcm")
    texts = []
    pydicom.config.debug(True, default_handler=False)  # a caller's debug logging lists every element read
    try:
        with caplog.at_level(logging.DEBUG):
            _, meta = read_image(path)
            texts += [repr(meta), describe(path)]
            broken = _dataset(_pattern(), **IDENTIFIERS)
            broken.PixelData = broken.PixelData[:100]
            with pytest.raises(ImageReadError) as info:
                read_image(_save(broken, tmp_path / "broken.dcm"))
            texts.append(str(info.value))
    finally:
        pydicom.config.debug(False, default_handler=False)
    texts.append(caplog.text)
    assert not any(_leaks(t) for t in texts), [_leaks(t) for t in texts]
    assert set(ImageMeta.__dataclass_fields__) == {
        "rows", "cols", "spacing", "photometric", "bits_stored", "modality", "view", "source_format",
        "transfer_syntax"}


def test_a_decoder_message_quoting_a_header_value_is_dropped(tmp_path, monkeypatch):
    import pydicom.pixels

    path = _save(_dataset(_pattern(), **IDENTIFIERS), tmp_path / "ident.dcm")

    def failing_decoder(*args, **kwargs):
        raise ValueError("cannot handle element value 'Doe^Jane'\nsecond line")

    monkeypatch.setattr(pydicom.pixels, "pixel_array", failing_decoder)
    with pytest.raises(ImageReadError, match=r"^cannot decode Explicit VR Little Endian pixel data: ValueError$"):
        read_image(path)


def test_no_pydicom_warnings_escape(tmp_path, recwarn):
    ds = _dataset(_pattern(), PatientName="x" * 100)  # a too-long value pydicom would warn about
    del ds.file_meta
    path = _save(ds, tmp_path / "w.dcm", implicit_vr=True, little_endian=True, enforce_file_format=False)
    recwarn.clear()
    read_image(path)
    assert not [w for w in recwarn if "pydicom" in str(w.filename)]
