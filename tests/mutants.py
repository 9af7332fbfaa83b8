"""Hostile images: a deterministic mutant generator for :func:`bmd.io.read_image` and a guarded runner.

Valid seed files (pydicom's bundled test files, a DICOM written by the twin's writer, small PNG/JPEG
files and, when present, the real radiographs) are corrupted in reproducible ways: truncation, byte
flips in the header and in the pixel data, wrong Rows/Columns/BitsAllocated/BitsStored/
SamplesPerPixel/NumberOfFrames, PixelData removed, absurd windows, rescales, LUTs, spacings and
transfer syntaxes, and declared sizes far beyond any radiograph. The same ``(seeds, count, seed)``
always gives the same mutants, byte for byte.

:func:`run_mutants` reads each file in a worker process under an address-space limit and a per-file
time limit, so a hang, a crash or a runaway allocation in a decoder shows up as an outcome instead
of stopping the run. The contract checked for every file: the image reads (float32, 2-D, finite,
in [0, 1], shaped like its metadata) or :class:`bmd.io.ImageReadError` is raised.

Used by ``tests/test_io_mutants.py`` and ``benchmarks/bench_reader_fuzz.py``; run as a script with
``--worker`` it is the worker process itself.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import selectors
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: File names (in pydicom's bundled test data) used as DICOM seeds: small files covering native
#: little/big endian, implicit VR, no file meta, deflate, RLE, JPEG, JPEG-LS, JPEG 2000, colour,
#: palette, YBR 4:2:2, multi-frame, signed data and a modality LUT.
PYDICOM_SEEDS = (
    "MR_small.dcm", "CT_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "JPGExtended.dcm", "JPEG2000.dcm",
    "SC_rgb_rle.dcm", "SC_rgb_jpeg_gdcm.dcm", "SC_ybr_full_422_uncompressed.dcm", "SC_rgb_small_odd.dcm",
    "examples_palette.dcm", "image_dfl.dcm", "ExplVR_LitEndNoMeta.dcm", "SC_rgb_rle_2frame.dcm",
    "rtdose_1frame.dcm", "liver_1frame.dcm",
)

#: Mutation kinds and the formats each applies to.
KINDS: dict[str, tuple[str, ...]] = {
    "truncate": ("dicom", "png", "jpeg", "tiff", "bmp"),
    "truncate-pixels": ("dicom",),
    "flip-header": ("dicom", "png", "jpeg", "tiff", "bmp"),
    "flip-pixels": ("dicom", "png", "jpeg", "tiff", "bmp"),
    "bad-size": ("dicom", "png", "jpeg"),
    "huge-size": ("dicom", "png", "jpeg"),
    "bad-bits": ("dicom",),
    "bad-samples": ("dicom",),
    "bad-frames": ("dicom",),
    "no-pixels": ("dicom",),
    "bad-window": ("dicom",),
    "bad-rescale": ("dicom",),
    "bad-photometric": ("dicom",),
    "bad-lut": ("dicom",),
    "bad-spacing": ("dicom",),
    "bad-transfer-syntax": ("dicom",),
    "bad-length": ("dicom",),
    "deep-sequence": ("dicom",),
    "codestream-size": ("dicom",),
    "deflate-bomb": ("dicom",),
}

#: Absurd numeric header values (as DICOM decimal strings).
ABSURD_NUMBERS = ("inf", "-inf", "nan", "NaN", "1e300", "-1e300", "1e999", "0", "-0", "-1", "1e-300",
                  "abc", "", "1\\2", "4294967296")

_MONO_TS = "1.2.840.10008.1.2.1"
_DEFLATE_TS = "1.2.840.10008.1.2.1.99"
_PIXEL_TAGS = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")  # (7FE0,0010) little- and big-endian
# placeholders written by pydicom and then replaced byte for byte, so that values pydicom itself would
# refuse to write (nan, inf, text in a number) still end up in the file with a correct length
_DS_PLACEHOLDER = "7654321.98765432"  # 16 characters, the longest DS
_IS_PLACEHOLDER = "1357924680"  # 10 characters, a valid 32-bit IS


@dataclass(frozen=True)
class Seed:
    """A valid file to corrupt."""

    name: str
    data: bytes
    fmt: str  # dicom | png | jpeg | tiff | bmp


@dataclass(frozen=True)
class Mutant:
    """One corrupted file: ``kind`` of mutation applied to the seed ``source``."""

    index: int
    kind: str
    source: str
    detail: str
    suffix: str
    data: bytes

    @property
    def filename(self) -> str:
        """A unique, readable file name."""
        stem = re.sub(r"[^A-Za-z0-9_.+-]", "_", Path(self.source).stem)[:40]
        return f"{self.index:04d}-{self.kind}-{stem}{self.suffix}"


@dataclass(frozen=True)
class Outcome:
    """What reading one file gave: ``read``, ``refused`` (ImageReadError), ``error`` (any other
    exception), ``bad-image`` (read, but outside the contract), ``memory`` (the read needed more than
    half the worker's memory allowance, or ran out of it: a refusal must come before allocating),
    ``hang`` (over the time limit) or ``crash`` (the worker process died). ``peak_mb``: the worker's peak resident memory
    during this read above what was resident before it (0 where the system does not tell)."""

    path: str
    status: str
    reason: str
    seconds: float
    peak_mb: float = 0.0


# --------------------------------------------------------------------------------------------- seeds


def _pattern(rows: int, cols: int, peak: int) -> np.ndarray:
    y, x = np.mgrid[:rows, :cols]
    return ((np.sin(x / 5.0) + np.cos(y / 7.0) + 2) / 4 * peak).astype(np.uint16)


def _pil_bytes(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kwargs)
    return buf.getvalue()


def pydicom_seeds(names: Iterable[str] = PYDICOM_SEEDS) -> list[Seed]:
    """pydicom's bundled test files of these names (never downloaded: absent names are left out)."""
    from pydicom.data import get_testdata_file

    seeds = []
    for name in names:
        path = get_testdata_file(name, download=False)
        if path:
            seeds.append(Seed(f"pydicom/{name}", Path(path).read_bytes(), "dicom"))
    return seeds


def twin_seed() -> Seed:
    """A small radiograph written by the twin's DICOM writer (CR, MONOCHROME1, window, spacing)."""
    from bmd.inputs.twin.dicom import write_dicom

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "twin.dcm"
        write_dicom(path, _pattern(48, 40, 4095), bits=12, monochrome1=True, spacing_mm=0.2,
                    case_id="M0001", patient_id="P0001", sex="F", age=70, seed=0)
        return Seed("twin/M0001.dcm", path.read_bytes(), "dicom")


def picture_seeds() -> list[Seed]:
    """Small PNG (8-bit, 16-bit, RGB), JPEG (grey, RGB), TIFF and BMP files (the last two get the
    byte-level mutations only)."""
    grey16 = _pattern(40, 32, 65535)
    grey8 = (grey16 >> 8).astype(np.uint8)
    rgb = np.stack([grey8, grey8[::-1], 255 - grey8], axis=-1)
    return [Seed("png/grey8.png", _pil_bytes(grey8, "PNG"), "png"),
            Seed("png/grey16.png", _pil_bytes(grey16, "PNG"), "png"),
            Seed("png/rgb.png", _pil_bytes(rgb, "PNG"), "png"),
            Seed("jpeg/grey.jpg", _pil_bytes(grey8, "JPEG", quality=90), "jpeg"),
            Seed("jpeg/rgb-progressive.jpg", _pil_bytes(rgb, "JPEG", quality=90, progressive=True), "jpeg"),
            Seed("tiff/grey16.tif", _pil_bytes(grey16, "TIFF"), "tiff"),
            Seed("bmp/rgb.bmp", _pil_bytes(rgb, "BMP"), "bmp")]


def _format_of(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[128:132] == b"DICM" or data[:4] in (b"\x08\x00\x05\x00", b"\x08\x00\x08\x00", b"\x08\x00\x00\x00"):
        return "dicom"
    return None


def real_seeds(folder: Path | None, max_bytes: int = 4_000_000) -> list[Seed]:
    """The radiographs (DICOM, PNG, JPEG) under ``folder``; none when it is absent."""
    if folder is None or not Path(folder).is_dir():
        return []
    seeds = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        if path.stat().st_size > max_bytes:
            continue
        data = path.read_bytes()
        fmt = _format_of(data)
        if fmt:
            seeds.append(Seed(f"real/{path.relative_to(folder)}", data, fmt))
    return seeds


def default_seeds(realdata: Path | None = None) -> list[Seed]:
    """pydicom's files, the twin's DICOM, small PNG/JPEG files and (when given) the real radiographs."""
    return [*pydicom_seeds(), twin_seed(), *picture_seeds(), *real_seeds(realdata)]


# ------------------------------------------------------------------------------------------ mutating


def _pixel_offset(data: bytes) -> int:
    """Where the pixel data value roughly starts (the last PixelData tag); half the file when unknown."""
    pos = max(data.rfind(tag) for tag in _PIXEL_TAGS)
    return min(pos + 12, len(data) - 1) if pos > 0 else len(data) // 2


def _flip(data: bytes, lo: int, hi: int, rng: random.Random, count: int) -> tuple[bytes, str]:
    buf = bytearray(data)
    hi = max(hi, lo + 1)
    places = sorted(rng.randrange(lo, hi) for _ in range(count))
    for k in places:
        buf[k] ^= rng.choice((0xFF, 0x80, 0x01, rng.randrange(1, 256)))
    return bytes(buf), f"{count} byte(s) in {lo}..{hi}"


def _read_dataset(data: bytes):
    import pydicom

    with warnings.catch_warnings():  # odd seeds and odd values are the point here
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data), force=True)


def _dicom_bytes(ds, texts: dict[str, str] | None = None) -> bytes:
    """Encode ``ds`` like its original, then put raw ``texts`` in place of their placeholders."""
    from pydicom import config

    buf = io.BytesIO()
    mode = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(buf, enforce_file_format=False)
    finally:
        config.settings.writing_validation_mode = mode
    data = buf.getvalue()
    for placeholder, text in (texts or {}).items():
        raw = text.encode("ascii")[: len(placeholder)].ljust(len(placeholder), b" ")
        data = data.replace(placeholder.encode("ascii"), raw)
    return data


def _set_number(ds, keyword: str, value: str, texts: dict[str, str]) -> None:
    """Set a DS or IS element to any text, valid or not (written through a placeholder)."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    vr = dictionary_VR(tag)
    placeholder = _DS_PLACEHOLDER if vr == "DS" else _IS_PLACEHOLDER
    ds.add_new(tag, vr, placeholder)
    texts[placeholder] = value


def _dicom_mutation(kind: str, seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    """Apply one DICOM mutation; returns (bytes, a short description)."""
    data = seed.data
    pix = _pixel_offset(data)
    if kind == "truncate":
        cut = rng.randrange(1, len(data))
        return data[:cut], f"cut at {cut} of {len(data)}"
    if kind == "truncate-pixels":
        cut = rng.randrange(min(pix, len(data) - 1), len(data))
        return data[:cut], f"cut at {cut} of {len(data)} (pixel data from ~{pix})"
    if kind == "flip-header":
        return _flip(data, 0, pix, rng, rng.choice((1, 2, 4, 8)))
    if kind == "flip-pixels":
        return _flip(data, pix, len(data), rng, rng.choice((1, 4, 16, 64)))
    if kind == "bad-length":
        return _length_edit(data, rng)
    if kind == "deep-sequence":
        return _deep_sequence(data, rng)
    if kind == "codestream-size":
        return _resize_codestream(data, _codestream(data), rng)
    if kind == "deflate-bomb":
        return _deflate_bomb(data, rng)

    ds = _read_dataset(data)
    texts: dict[str, str] = {}
    if kind == "bad-size":
        key = rng.choice(("Rows", "Columns", "both"))
        rows, cols = int(ds.get("Rows", 16) or 16), int(ds.get("Columns", 16) or 16)
        value = rng.choice((0, 1, 2, 3, rows - 1, rows + 1, rows * 2, cols // 2, 255, 4097, 20001, 65535))
        value = min(max(value, 0), 65535)
        for k in (("Rows", "Columns") if key == "both" else (key,)):
            setattr(ds, k, value)
        detail = f"{key}={value}"
    elif kind == "huge-size":
        value = rng.choice((60000, 65535, 30000, 20001))
        ds.Rows = ds.Columns = value
        if rng.random() < 0.5:
            _set_number(ds, "NumberOfFrames", rng.choice(("1", "1000", "99999")), texts)
        detail = f"{value}x{value}"
    elif kind == "bad-bits":
        key = rng.choice(("BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "all"))
        value = rng.choice((0, 1, 2, 7, 8, 12, 15, 16, 17, 24, 32, 33, 64, 255, 65535))
        if key == "all":
            ds.BitsAllocated = ds.BitsStored = value
            ds.HighBit = max(value - 1, 0)
        else:
            setattr(ds, key, value)
        detail = f"{key}={value}"
    elif kind == "bad-samples":
        value = rng.choice((0, 2, 3, 4, 255, 65535))
        ds.SamplesPerPixel = value
        if rng.random() < 0.5:
            ds.PlanarConfiguration = rng.choice((0, 1, 2))
        detail = f"SamplesPerPixel={value}"
    elif kind == "bad-frames":
        value = rng.choice(("0", "-1", "2", "3", "1000000", "abc", "", "1.5", "nan", "2147483647"))
        _set_number(ds, "NumberOfFrames", value, texts)
        detail = f"NumberOfFrames={value!r}"
    elif kind == "no-pixels":
        if "PixelData" in ds:
            del ds.PixelData
        detail = "PixelData removed"
    elif kind in ("bad-window", "bad-rescale"):
        keys = (("WindowCenter", "WindowWidth") if kind == "bad-window" else ("RescaleSlope", "RescaleIntercept"))
        if kind == "bad-rescale" and "ModalityLUTSequence" in ds and rng.random() < 0.5:
            del ds.ModalityLUTSequence
        chosen = {k: rng.choice(ABSURD_NUMBERS) if rng.random() < 0.7 else rng.choice(("1", "100", "-1024"))
                  for k in keys}
        placeholders = iter(("1234567.12345678", "2345678.23456789"))  # two distinct DS placeholders
        for key, value in chosen.items():
            placeholder = next(placeholders)
            ds.add_new(key, "DS", placeholder)
            texts[placeholder] = value
        if kind == "bad-window" and rng.random() < 0.3:
            ds.VOILUTFunction = rng.choice(("SIGMOID", "LINEAR_EXACT", "BOGUS"))
        detail = ", ".join(f"{k}={v!r}" for k, v in chosen.items())
    elif kind == "bad-photometric":
        value = rng.choice(("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR",
                            "", "XYZ", "monochrome2"))
        ds.PhotometricInterpretation = value
        detail = f"PhotometricInterpretation={value!r}"
    elif kind == "bad-lut":
        detail = _bad_lut(ds, rng)
    elif kind == "bad-spacing":
        value = rng.choice(ABSURD_NUMBERS)
        _set_number(ds, rng.choice(("PixelSpacing", "ImagerPixelSpacing")), value, texts)
        detail = f"spacing={value!r}"
    elif kind == "bad-transfer-syntax":
        value = rng.choice(("1.2.840.10008.1.2", "1.2.840.10008.1.2.2", _MONO_TS, "1.2.840.10008.1.2.4.50",
                            "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80",
                            "1.2.840.10008.1.2.4.100", "1.2.3.4", ""))
        return _retag_transfer_syntax(data, value), f"TransferSyntaxUID={value!r}"
    else:
        raise ValueError(f"unknown DICOM mutation {kind!r}")
    return _dicom_bytes(ds, texts), detail


def _bad_lut(ds, rng: random.Random) -> str:
    """Add (or replace) a VOI or modality LUT with an inconsistent descriptor and data."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    entries = rng.choice((0, 1, 2, 16, 256, 4096, 65535))
    first = rng.choice((0, 1, 100, 32768, 65535))
    bits = rng.choice((0, 1, 8, 12, 16, 17, 40))
    length = rng.choice((0, 1, 2, 16, 256, 4096))
    lut = np.asarray([rng.randrange(0, 65536) for _ in range(min(length, 64))] * max(1, length // 64),
                     dtype=np.uint16)[:length]
    item = Dataset()
    item.add_new(0x00283002, "US", [entries, first, bits])  # LUTDescriptor
    item.add_new(0x00283006, "OW", lut.tobytes())  # LUTData
    if rng.random() < 0.5:
        ds.VOILUTSequence = DicomSequence([item])
        where = "VOI"
    else:
        item.ModalityLUTType = "US"
        ds.ModalityLUTSequence = DicomSequence([item])
        where = "modality"
    return f"{where} LUT descriptor [{entries}, {first}, {bits}], {length} entries"


def _retag_transfer_syntax(data: bytes, uid: str) -> bytes:
    """Replace the file meta TransferSyntaxUID (0002,0010), fixing its element length but not the
    group length; a file without one gets the bytes unchanged."""
    tag = b"\x02\x00\x10\x00UI"
    pos = data.find(tag, 128)
    if pos < 0:
        return data
    old_len = struct.unpack("<H", data[pos + 6:pos + 8])[0]
    value = uid.encode("ascii")
    value += b"\0" * (len(value) % 2)
    return data[:pos + 6] + struct.pack("<H", len(value)) + value + data[pos + 8 + old_len:]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_resize(data: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR declaring another size (with a valid CRC)."""
    body = struct.pack(">II", width, height) + data[24:29]
    return data[:8] + _png_chunk(b"IHDR", body) + data[33:]


def _jpeg_resize(data: bytes, width: int, height: int, before: bytes = b"") -> bytes:
    """``before`` + the JPEG (or JPEG-LS) ``data`` with its first frame header declaring another size."""
    k = 2
    while k + 4 <= len(data):
        if data[k] != 0xFF:
            break
        marker = data[k + 1]
        seglen = struct.unpack(">H", data[k + 2:k + 4])[0]
        if (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or marker == 0xF7:
            return before + data[:k + 5] + struct.pack(">HH", height, width) + data[k + 9:]
        k += 2 + seglen
    return before + data


def _picture_mutation(kind: str, seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    data = seed.data
    # header: PNG signature and IHDR; JPEG markers up to the start of scan
    head = {"png": 33, "jpeg": max(data.find(b"\xff\xda"), 20)}.get(seed.fmt, min(64, len(data) // 2))
    if kind == "truncate":
        cut = rng.randrange(1, len(data))
        return data[:cut], f"cut at {cut} of {len(data)}"
    if kind == "flip-header":
        return _flip(data, 0, head, rng, rng.choice((1, 2, 4)))
    if kind == "flip-pixels":
        return _flip(data, head, len(data), rng, rng.choice((1, 4, 16, 64)))
    if kind in ("bad-size", "huge-size"):
        if kind == "huge-size":
            w = h = rng.choice((60000, 65535, 30000, 20001) if seed.fmt == "jpeg" else (60000, 100000, 2**31 - 1))
        else:
            w, h = rng.choice(((0, 8), (8, 0), (1, 1), (3, 5000), (16, 16), (64, 64), (5000, 3), (20001, 2)))
        resize = _png_resize if seed.fmt == "png" else _jpeg_resize
        return resize(data, w, h), f"declared {h}x{w}"
    raise ValueError(f"unknown {seed.fmt} mutation {kind!r}")


_SUFFIX = {"dicom": ".dcm", "png": ".png", "jpeg": ".jpg", "tiff": ".tif", "bmp": ".bmp"}
_BYTE_LEVEL = ("truncate", "truncate-pixels", "flip-header", "flip-pixels", "bad-length")


def generate(seeds: Sequence[Seed], count: int, seed: int = 0) -> list[Mutant]:
    """``count`` mutants of ``seeds``, deterministic in ``seed``.

    Kinds take turns; each mutant draws its seed file and its parameters from a generator seeded by
    ``(seed, index)``, so one mutant does not depend on the others or on the order they are made in.
    A kind is applied only to seeds it fits (see :func:`applies`); a kind no seed fits is skipped,
    so fewer than ``count`` mutants may come back.
    """
    info: dict[str, dict] = {}
    mutants = []
    kinds = list(KINDS)
    for index in range(count):
        kind = kinds[index % len(kinds)]
        rng = random.Random(f"{seed}:{index}")
        pool = [s for s in seeds if applies(kind, s, info)]
        if not pool:
            continue
        source = rng.choice(pool)
        with warnings.catch_warnings():  # pydicom warns about the odd values set on purpose
            warnings.simplefilter("ignore")
            if source.fmt == "dicom":
                data, detail = _dicom_mutation(kind, source, rng)
            else:
                data, detail = _picture_mutation(kind, source, rng)
        mutants.append(Mutant(index, kind, source.name, detail, _SUFFIX[source.fmt], data))
    return mutants


def applies(kind: str, seed: Seed, cache: dict[str, dict] | None = None) -> bool:
    """Whether mutation ``kind`` fits ``seed``: its format, and for DICOM what the file holds."""
    if seed.fmt not in KINDS[kind]:
        return False
    if seed.fmt != "dicom" or kind in _BYTE_LEVEL:
        return True
    facts = _facts(seed, {} if cache is None else cache)
    if kind == "deflate-bomb":
        return facts["ts"] == _DEFLATE_TS and facts["meta_end"] > 0
    if kind == "deep-sequence":
        return facts["explicit_le"] and facts["meta_end"] > 0
    if kind == "codestream-size":
        return facts["codestream"] is not None
    return facts["pixels"] and facts["ts"] != _DEFLATE_TS  # attribute edits: re-encoded by pydicom


def _facts(seed: Seed, cache: dict[str, dict]) -> dict:
    if seed.name not in cache:
        facts = {"ts": "", "pixels": False, "explicit_le": False, "meta_end": _meta_end(seed.data),
                 "codestream": _codestream(seed.data)}
        try:
            ds = _read_dataset(seed.data)
            facts["ts"] = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
            facts["pixels"] = "PixelData" in ds
            # every encapsulated syntax, and native explicit VR little endian, encode the body alike
            facts["explicit_le"] = facts["ts"] not in ("", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2",
                                                       _DEFLATE_TS)
        except Exception:
            pass
        cache[seed.name] = facts
    return cache[seed.name]


def _meta_end(data: bytes) -> int:
    """Offset of the first data set element after the file meta group (explicit VR little endian);
    0 when the file has no preamble or the group cannot be walked."""
    if data[128:132] != b"DICM":
        return 0
    k = 132
    while k + 8 <= len(data):
        group = struct.unpack("<H", data[k:k + 2])[0]
        if group != 0x0002:
            return k
        vr = data[k + 4:k + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            k += 12 + struct.unpack("<I", data[k + 8:k + 12])[0]
        else:
            k += 8 + struct.unpack("<H", data[k + 6:k + 8])[0]
    return 0


def _codestream(data: bytes) -> tuple[str, int] | None:
    """(``"j2k"`` or ``"jpeg"``, offset) of the first compressed frame's header in encapsulated data."""
    pix = _pixel_offset(data)
    k = data.find(b"\xff\x4f\xff\x51", pix)
    if k > 0:
        return "j2k", k
    k = data.find(b"\xff\xd8\xff", pix)
    return ("jpeg", k) if k > 0 else None


def _length_edit(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Give one element of the header an absurd value length (explicit VR), or overwrite 4 bytes
    with 0xFFFFFFFF (an undefined length) in an implicit VR header."""
    pix = _pixel_offset(data)
    long_vrs = rb"OB|OW|OF|OD|OL|OV|SQ|UT|UN|UC|UR"
    short_vrs = rb"AE|AS|AT|CS|DA|DS|DT|FL|FD|IS|LO|LT|PN|SH|SL|SS|ST|TM|UI|UL|US"
    places = [(m.start(), 4) for m in re.finditer(rb"(?s)(?=.{4}(?:" + long_vrs + rb")\x00\x00)", data[:pix])]
    places += [(m.start(), 2) for m in re.finditer(rb"(?s)(?=.{4}(?:" + short_vrs + rb"))", data[:pix])]
    value = rng.choice((0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF, 0x10000, len(data) * 2, 0, 1, 3))
    if not places:
        k = rng.randrange(0, max(1, pix - 4))
        return data[:k] + struct.pack("<I", 0xFFFFFFFF) + data[k + 4:], f"undefined length at {k}"
    k, width = rng.choice(places)
    if width == 4:
        return data[:k + 8] + struct.pack("<I", value) + data[k + 12:], f"length {value:#x} at {k}"
    value &= 0xFFFF
    return data[:k + 6] + struct.pack("<H", value) + data[k + 8:], f"length {value:#x} at {k}"


_SQ_START = struct.pack("<HH", 0x0008, 0x1140) + b"SQ\0\0" + b"\xff" * 4  # ReferencedImageSequence
_ITEM = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
_ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
_SQ_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def _deep_sequence(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A sequence nested thousands deep, or holding a hundred thousand items, at the data set start."""
    cut = rng.random() < 0.3  # and never closed
    if rng.random() < 0.6:
        depth = rng.choice((100, 2000, 20000, 100000))
        return deep_sequence(data, depth=depth, cut=cut), f"sequence nested {depth} deep" + (", cut" if cut else "")
    items = rng.choice((10000, 100000))
    return deep_sequence(data, items=items, cut=cut), f"sequence of {items} items" + (", cut" if cut else "")


def deep_sequence(data: bytes, depth: int = 1, items: int = 1, cut: bool = False) -> bytes:
    """An explicit VR little-endian DICOM file with a sequence nested ``depth`` deep (each level one
    item) or holding ``items`` empty items inserted before its first data set element; ``cut``
    leaves the sequence unclosed."""
    if depth > 1:
        body = (_SQ_START + _ITEM) * depth + (_ITEM_END + _SQ_END) * depth
    else:
        body = _SQ_START + (_ITEM + _ITEM_END) * items + _SQ_END
    if cut:
        body = body[: len(body) // 2]
    k = _meta_end(data)
    return data[:k] + body + data[k:]


def _resize_codestream(data: bytes, where: tuple[str, int], rng: random.Random) -> tuple[bytes, str]:
    """Make the first frame's codestream declare another size than Rows/Columns (or other tiles)."""
    rows, cols = rng.choice(((60000, 60000), (20000, 20000), (65535, 1), (1, 65535), (8, 8), (0, 0),
                             (4096, 4096)))
    tiles = where[0] == "j2k" and rng.random() < 0.3
    return codestream_resized(data, rows, cols, tiles=tiles), (
        "JPEG 2000 tiles of 60000x60000" if tiles else f"{where[0]} codestream declares {rows}x{cols}")


def codestream_resized(data: bytes, rows: int, cols: int, tiles: bool = False) -> bytes:
    """A DICOM file whose first JPEG / JPEG-LS / JPEG 2000 frame header declares ``rows`` x ``cols``
    (with ``tiles``: JPEG 2000 tiles of 60000 x 60000 instead); unchanged without such a frame."""
    where = _codestream(data)
    if where is None:
        return data
    family, k = where
    if family == "j2k":
        if tiles:
            return data[:k + 24] + struct.pack(">II", 60000, 60000) + data[k + 32:]
        return data[:k + 8] + struct.pack(">II", cols, rows) + data[k + 16:]
    return _jpeg_resize(data[k:], cols, rows, data[:k])


_BOMB_CHUNK: bytes | None = None


def _deflate_bomb(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    gib = rng.choice((0.3, 1, 4))
    return deflate_bomb(data, gib), f"inflates to {gib:g} GiB"


def deflate_bomb(data: bytes, gib: float) -> bytes:
    """A deflated DICOM file (``data``) whose data set is followed by ``gib`` GiB of deflated zeros:
    about 1 MB in the file per GiB inflated."""
    global _BOMB_CHUNK
    if _BOMB_CHUNK is None:  # 16 MiB of zeros, deflated and flushed to a byte boundary: repeatable
        packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        _BOMB_CHUNK = packer.compress(bytes(1 << 24)) + packer.flush(zlib.Z_SYNC_FLUSH)
    meta_end = _meta_end(data)
    body = zlib.decompress(data[meta_end:], -zlib.MAX_WBITS)
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = packer.compress(body) + packer.flush(zlib.Z_SYNC_FLUSH)
    stream = head + _BOMB_CHUNK * int(gib * 64) + b"\x03\x00"  # 64 chunks a GiB, then an empty final block
    return data[:meta_end] + stream


def write_mutants(folder: Path, mutants: Sequence[Mutant]) -> list[Path]:
    """Write each mutant under ``folder``; returns the paths in the same order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for m in mutants:
        path = folder / m.filename
        path.write_bytes(m.data)
        paths.append(path)
    return paths


def reason_class(message: str) -> str:
    """A refusal message without its numbers and details, to count refusals by kind of reason."""
    text = re.sub(r"\([^()]*\)", "", message)  # details in brackets
    text = re.sub(r"\(.*", "", text)  # and any bracket left open by clipping
    text = re.sub(r":.*", "", text)  # low-level error after a colon
    text = re.sub(r"\d+", "N", text)
    return " ".join(text.split()) or message[:40]


# --------------------------------------------------------------------------------------------- running

_WORKER_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_mutants(paths: Sequence[Path], *, timeout_s: float = 30.0, memory_mb: int = 2048,
                workers: int = 2) -> list[Outcome]:
    """Read every file in worker processes; returns one :class:`Outcome` per path, in order.

    Each worker reads under an address-space limit of ``memory_mb`` MiB above what its imports use;
    a read whose peak memory passes half of that, or that runs out of it, is recorded as ``memory``.
    A file taking longer than ``timeout_s`` seconds is recorded as a ``hang`` and its worker
    replaced, as is a worker that dies (``crash``).
    """
    pending = list(enumerate(paths))[::-1]
    results: dict[int, Outcome] = {}
    sel = selectors.DefaultSelector()
    env = {**os.environ, **_WORKER_ENV}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--memory-mb", str(memory_mb)]
    root = Path(__file__).resolve().parent.parent
    active: dict[int, tuple[subprocess.Popen, int, float]] = {}  # worker id -> (process, index, start)

    def spawn() -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, bufsize=1, env=env, cwd=root)
        sel.register(proc.stdout, selectors.EVENT_READ, proc)
        return proc

    def assign(proc: subprocess.Popen) -> None:
        if not pending:
            _stop(proc, sel)
            return
        index, path = pending.pop()
        try:
            proc.stdin.write(str(path) + "\n")
            proc.stdin.flush()
        except OSError:  # the worker died between two files: count this one as a crash
            results[index] = Outcome(str(path), "crash", "worker died before reading", 0.0)
            _stop(proc, sel)
            assign(spawn())
            return
        active[proc.pid] = (proc, index, time.monotonic())

    for _ in range(max(1, min(workers, len(paths)))):
        assign(spawn())
    while active:
        now = time.monotonic()
        wait = max(0.05, min(start + timeout_s - now for _, _, start in active.values()))
        for key, _ in sel.select(timeout=wait):
            proc = key.data
            if proc.pid not in active:
                continue
            _, index, start = active.pop(proc.pid)
            line = proc.stdout.readline()
            if line:
                results[index] = Outcome(**json.loads(line))
                if results[index].status == "memory":  # a fresh worker, with a fresh peak to measure
                    _stop(proc, sel)
                    proc = spawn()
                assign(proc)
            else:  # the worker died while reading this file
                code = proc.wait()
                _stop(proc, sel)
                results[index] = Outcome(str(paths[index]), "crash", f"worker exit status {code}",
                                         time.monotonic() - start)
                assign(spawn())
        for pid, (proc, index, start) in list(active.items()):
            if time.monotonic() - start > timeout_s:
                active.pop(pid)
                proc.kill()
                proc.wait()
                _stop(proc, sel)
                results[index] = Outcome(str(paths[index]), "hang", f"over {timeout_s:g} s", timeout_s)
                assign(spawn())
    return [results[k] for k in range(len(paths))]


def _stop(proc: subprocess.Popen, sel: selectors.BaseSelector) -> None:
    with contextlib.suppress(KeyError, ValueError):
        sel.unregister(proc.stdout)
    for stream in (proc.stdin, proc.stdout):
        with contextlib.suppress(OSError):
            stream.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def check_one(path: str) -> Outcome:
    """Read one file in this process and judge the result against the reader's contract."""
    from bmd.io import ImageReadError, read_image

    start = time.perf_counter()
    try:
        image, meta = read_image(path)
    except ImageReadError as exc:
        message = str(exc)
        status = "refused" if message and "\n" not in message else "error"
        return Outcome(path, status, message, time.perf_counter() - start)
    except BaseException as exc:  # noqa: BLE001 - any other exception breaks the contract
        return Outcome(path, "error", f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}",
                       time.perf_counter() - start)
    seconds = time.perf_counter() - start
    problems = []
    if not isinstance(image, np.ndarray) or image.dtype != np.float32 or image.ndim != 2:
        problems.append(f"type {type(image).__name__} {getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}")
    elif not np.isfinite(image).all():
        problems.append("non-finite values")
    elif image.size and not (float(image.min()) >= 0.0 and float(image.max()) <= 1.0):
        problems.append(f"values outside [0, 1]: {float(image.min())}..{float(image.max())}")
    elif image.shape != (meta.rows, meta.cols) or image.size == 0:
        problems.append(f"shape {image.shape} vs meta {meta.rows}x{meta.cols}")
    if problems:
        return Outcome(path, "bad-image", "; ".join(problems), seconds)
    return Outcome(path, "read", f"{meta.source_format} {meta.rows}x{meta.cols}", seconds)


def _worker(memory_mb: int) -> None:
    """Answer one JSON line per path read from stdin (see :func:`check_one`)."""
    results = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints of decoders must not mix with the answers
    # imports first, so that the memory limit counts only the reading
    import pydicom.pixels  # noqa: F401

    import bmd.io  # noqa: F401

    try:
        import resource

        with open("/proc/self/status") as fh:
            vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
        limit = vm + memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, OSError, StopIteration, ValueError):
        pass  # no such limit on this system; the time limit still holds
    for line in sys.stdin:
        path = line.rstrip("\n")
        if path:
            _reset_peak()
            before = _memory_mb("VmRSS")
            outcome = check_one(path)
            grown = max(0.0, _memory_mb("VmHWM") - before)
            status = outcome.status
            # the reader reports a failed allocation as a refusal naming MemoryError; both that and a
            # big allocation mean a size was not checked before allocating
            if "MemoryError" in outcome.reason or grown > memory_mb / 2:
                status = "memory"
            outcome = Outcome(outcome.path, status, outcome.reason, outcome.seconds, round(grown, 1))
            results.write(json.dumps(outcome.__dict__) + "\n")


def _memory_mb(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process in MiB; 0 where unknown.

    Not ``getrusage``'s peak: Linux carries that over ``exec`` from the parent, which may have been
    much bigger than a worker ever gets.
    """
    try:
        with open("/proc/self/status") as fh:
            return next(int(row.split()[1]) for row in fh if row.startswith(field + ":")) / 1024
    except (OSError, StopIteration, ValueError):
        return 0.0


def _reset_peak() -> None:
    """Start a new peak (``VmHWM``) at the current resident size, where the system allows."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


if __name__ == "__main__":
    if "--worker" in sys.argv:
        mb = int(sys.argv[sys.argv.index("--memory-mb") + 1]) if "--memory-mb" in sys.argv else 2048
        try:
            import bmd  # noqa: F401 - installed, or found through PYTHONPATH
        except ImportError:  # a plain checkout
            sys.path.append(str(Path(__file__).resolve().parent.parent))
        _worker(mb)
