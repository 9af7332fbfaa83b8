"""Hostile images: mutants of valid files either read within the contract or raise ImageReadError.

The generator and the guarded runner live in ``tests/mutants.py`` (also used by
``benchmarks/bench_reader_fuzz.py``). Each file is read in a worker process with an address-space
limit and a per-file time limit, so a hang or a runaway allocation fails the test instead of
stopping it. The fast test reads a sample covering every mutation kind; the slow one reads 600
mutants, of the real radiographs too when they are present.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from mutants import (
    KINDS,
    codestream_resized,
    deep_sequence,
    default_seeds,
    deflate_bomb,
    generate,
    picture_seeds,
    pydicom_seeds,
    reason_class,
    run_mutants,
    twin_seed,
    write_mutants,
)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from bmd import io as bmd_io
from bmd.infra import paths
from bmd.io import ImageReadError, read_image

SEED = 20240611
FAST_COUNT = 120  # six of each kind
SLOW_COUNT = 600
TIME_LIMIT_S = 60.0  # per file; far above the slowest real decode, so only a hang reaches it
MEMORY_MB = 2048  # per worker, above what its imports take


def _small_seeds():
    return [*pydicom_seeds(), twin_seed(), *picture_seeds()]


def _failures(mutants, outcomes) -> list[str]:
    return [f"{o.status}: {m.filename} ({m.detail}): {o.reason}"
            for m, o in zip(mutants, outcomes, strict=True) if o.status not in ("read", "refused")]


def test_mutants_are_deterministic_and_cover_every_kind():
    seeds = _small_seeds()
    first = generate(seeds, 2 * len(KINDS), seed=SEED)
    again = generate(seeds, 2 * len(KINDS), seed=SEED)
    other = generate(seeds, 2 * len(KINDS), seed=SEED + 1)
    assert [(m.filename, m.data) for m in first] == [(m.filename, m.data) for m in again]
    assert [m.data for m in first] != [m.data for m in other]
    assert {m.kind for m in first} == set(KINDS)
    assert all(m.data != s.data for m in first for s in seeds if s.name == m.source)  # each one changed


def test_sample_of_mutants_reads_or_is_refused(tmp_path):
    mutants = generate(_small_seeds(), FAST_COUNT, seed=SEED)
    assert len(mutants) == FAST_COUNT and Counter(m.kind for m in mutants) == Counter(
        {k: FAST_COUNT // len(KINDS) for k in KINDS})
    outcomes = run_mutants(write_mutants(tmp_path, mutants), timeout_s=TIME_LIMIT_S, memory_mb=MEMORY_MB)
    assert not _failures(mutants, outcomes)
    statuses = Counter(o.status for o in outcomes)
    assert statuses["read"] > 10 and statuses["refused"] > 50, statuses


@pytest.mark.slow
def test_600_mutants_including_real_radiographs_read_or_are_refused(tmp_path):
    mutants = generate(default_seeds(paths.realdata_dir()), SLOW_COUNT, seed=SEED)
    assert len(mutants) == SLOW_COUNT
    outcomes = run_mutants(write_mutants(tmp_path, mutants), timeout_s=TIME_LIMIT_S, memory_mb=MEMORY_MB)
    assert not _failures(mutants, outcomes)
    by_kind = Counter((m.kind, o.status) for m, o in zip(mutants, outcomes, strict=True))
    # kinds that can never give a usable image are always refused
    for kind in ("no-pixels", "huge-size", "deflate-bomb"):
        assert by_kind[(kind, "read")] == 0, kind
    refusals = Counter(reason_class(o.reason) for o in outcomes if o.status == "refused")
    assert len(refusals) >= 15, refusals  # refused for many different, specific reasons


# ------------------------------------------------------------------- regressions found by the mutants


def _bundled(name: str) -> Path:
    path = pydicom.data.get_testdata_file(name, download=False)
    if not path:
        pytest.skip(f"pydicom test file {name} not bundled")
    return Path(path)


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "MR_small_jp2klossless.dcm", "JPGExtended.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm"])
@pytest.mark.parametrize("size", [(60000, 60000), (20000, 20000), (8, 8)])
def test_codestream_size_other_than_the_header_is_refused_before_decoding(tmp_path, name, size):
    # decoders size their buffers from the codestream: 20000 x 20000 in a 64 x 64 file made them
    # allocate gigabytes and run for minutes
    path = tmp_path / name
    path.write_bytes(codestream_resized(_bundled(name).read_bytes(), *size))
    start = time.perf_counter()
    with pytest.raises(ImageReadError, match=rf"codestream declares {size[0]}x{size[1]} pixels, the header says"):
        read_image(path)
    assert time.perf_counter() - start < 5


def test_jpeg2000_tiles_larger_than_the_image_are_harmless(tmp_path):
    path = tmp_path / "tiles.dcm"
    path.write_bytes(codestream_resized(_bundled("MR_small_jp2klossless.dcm").read_bytes(), 0, 0, tiles=True))
    try:
        image, _ = read_image(path)
    except ImageReadError:
        return
    assert np.isfinite(image).all()


def test_deflate_bomb_is_refused_without_inflating_it(tmp_path):
    path = tmp_path / "bomb.dcm"
    path.write_bytes(deflate_bomb(_bundled("image_dfl.dcm").read_bytes(), 4))
    assert path.stat().st_size < 8_000_000
    with pytest.raises(ImageReadError, match="^deflated data set inflates to more than"):
        read_image(path)


@pytest.mark.parametrize(("depth", "items", "cut"), [(20000, 1, False), (100000, 1, True), (1, 100000, False)])
def test_header_with_a_huge_or_deep_sequence_is_refused_quickly(tmp_path, depth, items, cut):
    path = tmp_path / "seq.dcm"
    path.write_bytes(deep_sequence(_bundled("MR_small.dcm").read_bytes(), depth=depth, items=items, cut=cut))
    start = time.perf_counter()
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert "\n" not in str(info.value) and time.perf_counter() - start < 10


def test_a_real_sized_sequence_still_reads(tmp_path):
    path = tmp_path / "seq.dcm"
    path.write_bytes(deep_sequence(_bundled("MR_small.dcm").read_bytes(), items=200))
    assert read_image(path)[0].shape == (64, 64)


def _dataset(**extra) -> tuple[Dataset, np.ndarray]:
    y, x = np.mgrid[:48, :40]
    pix = ((np.sin(x / 5.0) + np.cos(y / 7.0) + 2) / 4 * 4095).astype(np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "CR", 48, 40, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pix.tobytes()
    for key, value in extra.items():
        setattr(ds, key, value)
    return ds, pix


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize(("slope", "intercept", "inverted"), [
    ("0", "0", False), ("1e308", "0", False), ("1", "1e300", False), ("1e300", "4294967296", False),
    ("-1e300", "-1e300", True), ("nan", "0", False), ("inf", "0", False), ("1", "-inf", False),
    ("abc", "0", False),
])
def test_unusable_rescale_is_ignored_not_turned_into_a_flat_image(tmp_path, slope, intercept, inverted):
    # these gave all-black or all-white images: non-finite values silently became 0, a window in the
    # wrong units clipped everything
    ds, pix = _dataset(RescaleSlope="7654321.98765432", RescaleIntercept="1234567.12345678",
                       WindowCenter="2000", WindowWidth="1000")
    path = _save(ds, tmp_path / "r.dcm")
    data = path.read_bytes()
    for placeholder, text in (("7654321.98765432", slope), ("1234567.12345678", intercept)):
        # pydicom refuses to write nan or inf: put them in place of a placeholder of the same length
        data = data.replace(placeholder.encode(), text.encode().ljust(len(placeholder)))
    path.write_bytes(data)
    image, _ = read_image(path)
    plain = (pix - pix.min()) / np.ptp(pix)
    assert np.allclose(image, 1 - plain if inverted else plain, atol=1e-5)


@pytest.mark.parametrize(("centre", "width"), [("-0", "1"), ("100000", "1"), ("-3", "2")])
def test_window_that_leaves_a_flat_image_is_ignored(tmp_path, centre, width):
    ds, pix = _dataset(WindowCenter=centre, WindowWidth=width)
    image, _ = read_image(_save(ds, tmp_path / "w.dcm"))
    assert np.allclose(image, (pix - pix.min()) / np.ptp(pix), atol=1e-5)


def test_broken_modality_lut_is_ignored(tmp_path):
    from pydicom.sequence import Sequence

    ds, pix = _dataset()
    item = Dataset()
    item.add_new(0x00283002, "US", [0, 0, 16])  # 65536 entries declared
    item.add_new(0x00283006, "OW", np.arange(16, dtype=np.uint16).tobytes())  # 16 given
    item.ModalityLUTType = "US"
    ds.ModalityLUTSequence = Sequence([item])
    image, _ = read_image(_save(ds, tmp_path / "lut.dcm"))
    assert np.allclose(image, (pix - pix.min()) / np.ptp(pix), atol=1e-5)


# ---------------------------------------------------------------------------------------- odd paths


def test_odd_paths_are_refused_with_image_read_error(tmp_path):
    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    loop = tmp_path / "loop.dcm"
    loop.symlink_to(loop)
    cases = {str(fifo): "^not a regular file$", "/dev/null": "^not a regular file$",
             "x" * 5000 + ".dcm": r"^cannot open file \(OSError\)$",
             str(loop): r"^cannot open file \(OSError\)$", "a\0b.dcm": r"^cannot open file \(ValueError\)$",
             str(tmp_path / "missing" / "x.dcm"): "^file not found$"}
    for path, pattern in cases.items():
        with pytest.raises(ImageReadError, match=pattern) as info:
            read_image(path)
        assert info.value.path == path


def test_error_names_the_file_in_its_path_attribute(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("hello")
    with pytest.raises(ImageReadError) as info:
        bmd_io.describe(path)
    assert info.value.path == str(path) and str(info.value) == "not a DICOM, PNG or JPEG file"
