"""Read a radiograph (DICOM, PNG or JPEG) into a float image in [0, 1], bone bright.

``read_image(path) -> (image, meta)``:

* ``image``: float32 H×W array in [0, 1], bone bright, in the original geometry (no resampling,
  flips or rotations).
* ``meta``: :class:`ImageMeta`, a whitelist of technical fields. Patient names, ids, dates and free
  text are never copied out of the header, never logged and never quoted in an error message.

DICOM intensity pipeline (pydicom with the pylibjpeg decoders):

1. decode the first frame only (multi-frame files: frame 0); colour (RGB, YBR, palette) becomes grey
   luminance (0.299 R + 0.587 G + 0.114 B);
2. modality LUT: a Modality LUT Sequence, else RescaleSlope/RescaleIntercept;
3. VOI: a VOI LUT Sequence (first LUT, output scaled by the LUT's own min–max), else the first
   WindowCenter/WindowWidth pair with its VOILUTFunction (LINEAR, LINEAR_EXACT or SIGMOID). An absurd
   window (width not positive, not finite, far off or far wider than the data, or one leaving a flat
   image) is ignored and the plain min–max of the modality values is used instead: no percentiles,
   so the mapping stays monotone. An unusable modality LUT or rescale (slope 0, non-finite,
   overflowing, flattening the data) is ignored with the VOI: min–max of the stored values;
4. MONOCHROME1, or a PresentationLUTShape of INVERSE, inverts (1 − x) so that bone is always bright.
   Both together invert once: an INVERSE shape on MONOCHROME1 is how the standard spells the same
   display, not a second inversion.

Files without a preamble or file meta header are read with ``force=True`` and their transfer syntax
is inferred from the encoding pydicom detected. Hostile files are stopped before they cost memory or
time: the header is parsed under a read budget, a deflated data set is inflated in bounded steps,
and declared sizes, the pixel data length (uncompressed) or size ratio and first-frame codestream
size (compressed) are checked before any pixel buffer is allocated. PNG/JPEG (and TIFF/BMP/GIF) go
through Pillow: 8-bit data is divided by 255, 16-bit by 65535, colour becomes luminance; no pixel
spacing is known for them.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import stat
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Largest accepted side and pixel count (× samples) of one frame; a 43 cm detector at 0.1 mm is ~4300 px
#: a side, so these only stop corrupt or hostile headers. They stay below Pillow's own bomb limit (89 Mpx).
MAX_SIDE = 20_000
MAX_FRAME_PIXELS = 80_000_000
#: Largest accepted Rows × Columns × SamplesPerPixel × NumberOfFrames of a DICOM file.
MAX_TOTAL_PIXELS = 200_000_000
#: Files larger than this are refused before reading.
MAX_FILE_BYTES = 1 << 30
#: Largest accepted size of a deflated DICOM data set once inflated (pydicom inflates it in one piece).
MAX_INFLATED_BYTES = 1 << 28
#: Most ``read`` calls pydicom may make while parsing a header (plus one per 8 KiB of file); see
#: ``_ReadBudget``. Real radiograph headers take a few hundred.
MAX_HEADER_READS = 100_000
#: Compressed pixel data may be at most this many times the size of the raw pixels it holds (plus 1 MiB);
#: codecs never expand real images that much, so more means the header's size is wrong, or a bomb
#: (RLE can expand 64-fold).
MAX_COMPRESSED_RATIO = 2
#: Plausible pixel spacing in mm; anything else (0, negative, absurd) is treated as unknown.
SPACING_RANGE_MM = (0.01, 5.0)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_OTHER_PIL_MAGIC = (b"II*\x00", b"MM\x00*", b"BM", b"GIF8")
_NOT_AN_IMAGE = "not a DICOM, PNG or JPEG file"
# header values of these VRs may identify a patient; an error message quoting one is dropped
_TEXT_VRS = {"PN", "LO", "SH", "LT", "ST", "UT", "UC", "DA", "DT", "TM", "AE", "AS", "UI"}


class ImageReadError(ValueError):
    """A file that cannot be used as a radiograph; the message is one line and names no patient.

    The message is the reason alone (callers such as ``bmd inspect`` put the file name in front);
    ``path`` holds the file that was being read.
    """

    path: str | None = None


@dataclass(frozen=True)
class ImageMeta:
    """Whitelisted technical metadata of an image (never identifiers)."""

    rows: int
    cols: int
    spacing: tuple[float, float] | None  # (row, column) spacing in mm; None when unknown or absurd
    photometric: str  # of the source: MONOCHROME1, MONOCHROME2, RGB, ... or PNG-L, JPEG-RGB, PNG-I;16
    bits_stored: int | None
    modality: str | None
    view: str | None  # DICOM ViewPosition (PA, AP, LL, ...)
    source_format: str  # dicom | png | jpeg | tiff | bmp | gif
    transfer_syntax: str | None  # DICOM transfer syntax name; None for other formats


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, ImageMeta]:
    """Read a DICOM, PNG or JPEG radiograph as a float32 image in [0, 1] (bone bright) and its metadata.

    Raises :class:`ImageReadError` with a one-line reason for any file that cannot be used.
    """
    image, meta, _raw = _read_named(Path(path))
    return image, meta


def describe(path: str | os.PathLike) -> str:
    """One line about an image: format, photometric, size (rows x columns), spacing, bits, modality,
    transfer syntax and value range, e.g. ``dicom MONOCHROME1 1955x1841 px, spacing unknown, 15-bit, CR,
    JPEG 2000 Image Compression, range [0.116, 0.973] (raw 803..26512)``.

    Raises :class:`ImageReadError` like :func:`read_image`.
    """
    image, m, (raw_min, raw_max) = _read_named(Path(path))
    parts = [f"{m.source_format} {m.photometric} {m.rows}x{m.cols} px",
             f"spacing {m.spacing[0]:.4g}x{m.spacing[1]:.4g} mm" if m.spacing else "spacing unknown",
             f"{m.bits_stored}-bit" if m.bits_stored else "bits unknown"]
    parts += [x for x in (m.modality, m.view, m.transfer_syntax) if x]
    parts.append(f"range [{image.min():.3f}, {image.max():.3f}] (raw {raw_min:g}..{raw_max:g})")
    return ", ".join(parts)


def _read_named(p: Path) -> tuple[np.ndarray, ImageMeta, tuple[float, float]]:
    try:
        return _read(p)
    except ImageReadError as exc:
        exc.path = str(p)
        raise


def _read(p: Path) -> tuple[np.ndarray, ImageMeta, tuple[float, float]]:
    try:
        st = p.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise _fail("file not found") from None
    except (OSError, ValueError) as exc:  # a name too long, a symlink loop, a NUL byte in the name, ...
        raise _fail(f"cannot open file ({type(exc).__name__})") from None
    if stat.S_ISDIR(st.st_mode):
        raise _fail("is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):  # opening a FIFO would wait for a writer forever
        raise _fail("not a regular file")
    size = st.st_size
    if size == 0:
        raise _fail("empty file")
    if size > MAX_FILE_BYTES:
        raise _fail(f"file of {size} bytes is too large for a radiograph")
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise _fail(f"cannot open file ({type(exc).__name__})") from None
    has_preamble = head[128:132] == b"DICM"  # checked first: a preamble may itself look like a TIFF header
    with _quiet():
        if not has_preamble and head.startswith((_PNG_MAGIC, _JPEG_MAGIC, *_OTHER_PIL_MAGIC)):
            return _read_pillow(p)
        return _read_dicom(p, has_preamble=has_preamble)


# --------------------------------------------------------------------------------------------- errors


def _fail(reason: str) -> ImageReadError:
    return ImageReadError(" ".join(str(reason).split())[:300])


def _reason(exc: BaseException, ds=None) -> str:
    """Class name and a clipped one-line message of a low-level error.

    With a dataset, the message is dropped when it quotes any textual header value (a name, id, date,
    free text): library messages sometimes cite element values.
    """
    msg = " ".join(str(exc).split())
    msg = msg.replace("Unable to decode as exceptions were raised by all available plugins: ", "")
    if msg and ds is not None:
        values = _text_values(ds)
        if values is None or any(v in msg for v in values):
            msg = ""
    msg = msg[:150]
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _text_values(ds) -> list[str] | None:
    """Every part (≥ 3 characters) of every textual header value; None when the header cannot be walked."""
    try:
        values = []
        for elem in ds.iterall():
            if elem.VR in _TEXT_VRS and elem.value:
                items = elem.value if type(elem.value).__name__ == "MultiValue" else [elem.value]
                values += [s.strip() for v in items for s in re.split(r"[\^=\\]", str(v)) if len(s.strip()) >= 3]
        return values
    except Exception:
        return None


def _drop_record(record: logging.LogRecord) -> bool:
    return False


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence pydicom/Pillow warnings and pydicom log records while a file is read.

    A forced read of an odd file warns about every oddity, and some of those messages quote header
    values; the caller gets one clear ImageReadError instead.
    """
    names = [n for n in list(logging.root.manager.loggerDict) if n == "pydicom" or n.startswith("pydicom.")]
    loggers = [logging.getLogger(n) for n in names] or [logging.getLogger("pydicom")]
    for lg in loggers:
        lg.addFilter(_drop_record)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg in loggers:
            lg.removeFilter(_drop_record)


def _check_size(rows: int, cols: int, spp: int = 1, frames: int = 1) -> None:
    if rows <= 0 or cols <= 0:
        raise _fail(f"declared size {rows}x{cols} is empty")
    if rows > MAX_SIDE or cols > MAX_SIDE or rows * cols * spp > MAX_FRAME_PIXELS:
        raise _fail(f"declared size {rows}x{cols} is absurd for a radiograph")
    if frames < 1 or rows * cols * spp * frames > MAX_TOTAL_PIXELS:
        raise _fail(f"declared {frames} frames of {rows}x{cols} is absurd for a radiograph")


# --------------------------------------------------------------------------------------------- Pillow


def _read_pillow(p: Path) -> tuple[np.ndarray, ImageMeta, tuple[float, float]]:
    from PIL import Image

    try:
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # inside _quiet's catch_warnings
        with Image.open(p) as im:
            cols, rows = im.size
            _check_size(rows, cols)  # from the header alone, before any pixel is decoded
            fmt = (im.format or "image").lower()
            mode = im.mode
            im.seek(0)
            im.load()
            if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                raw = np.asarray(im).astype(np.float32)
                image, bits = raw / 65535.0, 16
            elif mode == "I":
                raw = np.asarray(im).astype(np.float64)
                # 16-bit data some formats open as 32-bit ints; anything wider is stretched min–max
                fits16 = raw.size and raw.min() >= 0 and raw.max() <= 65535
                image, bits = (raw / 65535.0, 16) if fits16 else (_minmax(raw), None)
            elif mode == "F":
                raw = np.asarray(im).astype(np.float64)
                image, bits = _minmax(raw), None
            elif mode == "1":
                raw = np.asarray(im).astype(np.float32)
                image, bits = raw, 1
            else:  # L, and colour / palette / alpha converted to luminance
                grey = im if mode == "L" else im.convert("L")
                raw = np.asarray(grey).astype(np.float32)
                image, bits = raw / 255.0, 8
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _fail("declared size is absurd for a radiograph (over the decompression-bomb limit)") from None
    except Exception as exc:  # truncated, corrupt or unsupported files
        raise _fail(f"cannot decode image file ({_reason(exc)})") from None
    fmt = "jpeg" if fmt in ("jpeg", "mpo") else fmt
    meta = ImageMeta(rows=rows, cols=cols, spacing=None, photometric=f"{fmt.upper()}-{mode}",
                     bits_stored=bits, modality=None, view=None, source_format=fmt, transfer_syntax=None)
    return _finish(image), meta, (float(raw.min()), float(raw.max()))


# ---------------------------------------------------------------------------------------------- DICOM


def _read_dicom(p: Path, has_preamble: bool) -> tuple[np.ndarray, ImageMeta, tuple[float, float]]:
    try:
        ds = _parse_dicom(p)
    except ImageReadError:
        raise
    except Exception as exc:
        # parse errors may quote element values, so only the error class is reported
        if not has_preamble:
            raise _fail(_NOT_AN_IMAGE) from None
        raise _fail(f"not a readable DICOM file ({type(exc).__name__})") from None
    try:
        return _dicom_image(ds, has_preamble)
    except ImageReadError:
        raise
    except Exception as exc:  # a header value pydicom cannot convert, or anything else unforeseen
        raise _fail(f"unusable DICOM file ({_reason(exc, ds)})") from None


class _HeaderTooLarge(Exception):
    pass


class _ReadBudget:
    """A binary file whose ``read`` calls are counted, failing past a budget.

    pydicom parses a header element by element, a few reads each; a small hostile file of a hundred
    thousand empty sequence items or tiny elements keeps it busy for seconds per megabyte. Real
    headers take a few hundred reads (a few thousand for odd ones), and undefined-length values are
    scanned in 8 KiB reads, hence a fixed allowance plus one read per 8 KiB of file. Once the budget
    is spent every further read fails, so no caller can swallow the error and go on.

    A read is also clipped to what is left of the file: a corrupt length field asks for gigabytes,
    and a buffered file allocates the whole request before finding the end.
    """

    def __init__(self, fh, size: int):
        self._fh = fh
        self._size = size
        self._left = MAX_HEADER_READS + size // 8192
        self.spent = False

    def read(self, size: int | None = -1) -> bytes:
        self._left -= 1
        if self._left < 0:
            self.spent = True
            raise _HeaderTooLarge
        if size is not None and size >= 0:
            size = min(size, max(0, self._size - self._fh.tell()))
        return self._fh.read(size)

    def __getattr__(self, name: str):
        return getattr(self._fh, name)


def _parse_dicom(p: Path):
    """The pydicom data set of ``p``, parsed under a read budget and with bounded inflation."""
    import pydicom
    from pydicom.dataset import FileDataset
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    with open(p, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        try:
            preamble = read_preamble(fh, True)
            meta = _read_file_meta_info(fh)
            deflated = str(meta.get("TransferSyntaxUID", "") or "") == DeflatedExplicitVRLittleEndian
        except Exception:  # no usable file meta: the plain read below decides
            deflated = False
        if deflated:
            # pydicom would inflate the whole rest in one piece and then parse it unbudgeted
            body = _inflate(fh)
            source = _ReadBudget(io.BytesIO(body), len(body))
            try:
                dataset = read_dataset(source, is_implicit_VR=False, is_little_endian=True)
            except Exception:
                if source.spent:
                    raise _fail(_TOO_LARGE_HEADER) from None
                raise
            return FileDataset(str(p), dataset, preamble=preamble, file_meta=meta, is_implicit_VR=False,
                               is_little_endian=True)
        fh.seek(0)
        source = _ReadBudget(fh, size)
        try:
            return pydicom.dcmread(source, force=True)
        except Exception:
            if source.spent:
                raise _fail(_TOO_LARGE_HEADER) from None
            raise


_TOO_LARGE_HEADER = "DICOM header has too many elements or sequence items to be a radiograph's"


def _inflate(fh) -> bytes:
    """Inflate the rest of ``fh`` (raw deflate), refusing more than :data:`MAX_INFLATED_BYTES`.

    A deflated data set of a few megabytes can inflate to gigabytes (a "zip bomb"); inflating in
    bounded steps stops at the limit instead of allocating it all.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    parts: list[bytes] = []
    total = 0
    try:
        while (chunk := fh.read(1 << 20)) and not inflater.eof:
            while chunk and not inflater.eof:
                part = inflater.decompress(chunk, 1 << 24)
                total += len(part)
                if total > MAX_INFLATED_BYTES:
                    raise _fail(f"deflated data set inflates to more than {MAX_INFLATED_BYTES} bytes")
                parts.append(part)
                chunk = inflater.unconsumed_tail
        parts.append(inflater.flush())
    except zlib.error:
        raise _fail("not a readable DICOM file (corrupt deflated data)") from None
    return b"".join(parts)


def _dicom_image(ds, has_preamble: bool) -> tuple[np.ndarray, ImageMeta, tuple[float, float]]:
    from pydicom.dataset import FileMetaDataset
    from pydicom.pixels import apply_color_lut, pixel_array
    from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    # a forced read of random bytes "succeeds"; without a preamble, demand the usual image groups
    tags = ds.keys()  # tags only: iterating the dataset would convert (and validate) every value
    if not has_preamble and not any(t.group in (0x0008, 0x0010, 0x0018, 0x0020, 0x0028) for t in tags):
        raise _fail(_NOT_AN_IMAGE)
    if "PixelData" not in ds:
        floats = "FloatPixelData" in ds or "DoubleFloatPixelData" in ds
        raise _fail("DICOM float pixel data is not supported" if floats else "DICOM has no pixel data")

    file_meta = getattr(ds, "file_meta", None)
    tsuid = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if not tsuid:
        if ds["PixelData"].is_undefined_length:
            raise _fail("DICOM pixel data is compressed but the file names no transfer syntax")
        implicit, little = ds.original_encoding
        if implicit is None:
            implicit, little = True, True
        tsuid = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        if file_meta is None:
            ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = tsuid  # the pixel decoders read it from here
    tsuid = UID(str(tsuid))
    ts_name = tsuid.name if tsuid.is_transfer_syntax else "unknown transfer syntax"

    rows, cols = _int_attr(ds, "Rows"), _int_attr(ds, "Columns")
    spp = _int_attr(ds, "SamplesPerPixel", default=1)
    frames = _int_attr(ds, "NumberOfFrames", default=1)
    bits_alloc = _int_attr(ds, "BitsAllocated")
    bits_stored = _int_attr(ds, "BitsStored", default=bits_alloc)
    _check_size(rows, cols, spp, frames)
    if spp not in (1, 3):
        raise _fail(f"SamplesPerPixel {spp} is not 1 or 3")
    if bits_alloc not in (1, 8, 16, 32):
        raise _fail(f"BitsAllocated {bits_alloc} is not 1, 8, 16 or 32")
    if not 1 <= bits_stored <= bits_alloc:
        raise _fail(f"BitsStored {bits_stored} does not fit BitsAllocated {bits_alloc}")

    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper() or "MONOCHROME2"
    if tsuid.is_transfer_syntax and not tsuid.is_compressed:
        samples = 2 if photometric == "YBR_FULL_422" else spp  # 4:2:2 stores two samples per pixel
        expected = (rows * cols * samples * frames * bits_alloc + 7) // 8
        found = len(ds.PixelData)
        if found < expected:
            raise _fail(f"pixel data is truncated (expected {expected} bytes, found {found})")
        # a padding byte (or a few) is harmless; much more data means Rows/Columns/Bits are wrong
        if found > expected + max(1, expected // 50):
            raise _fail(f"pixel data ({found} bytes) does not match the declared size {rows}x{cols}x{spp}, "
                        f"{bits_alloc}-bit, {frames} frame(s) ({expected} bytes)")
    elif "PixelData" in ds and ds["PixelData"].is_undefined_length:
        _check_encapsulated(ds, tsuid, rows, cols, spp, frames, bits_alloc)

    try:
        arr = pixel_array(ds, index=0)  # only the first frame is decoded
        if photometric == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
    except Exception as exc:
        raise _fail(f"cannot decode {ts_name} pixel data: {_reason(exc, ds)}") from None
    if arr.ndim == 3 and arr.shape[-1] == 3:
        arr = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114  # colour → luminance
    if arr.shape != (rows, cols):
        raise _fail(f"decoded pixel data has shape {arr.shape}, the header says {rows}x{cols}")
    raw = (float(np.min(arr)), float(np.max(arr)))

    try:
        image = _dicom_intensities(arr, ds, colour=photometric != "MONOCHROME1" and photometric != "MONOCHROME2")
    except ImageReadError:
        raise
    except Exception as exc:
        raise _fail(f"cannot apply the intensity LUTs ({_reason(exc, ds)})") from None
    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    if photometric == "MONOCHROME1" or shape == "INVERSE":
        image = 1.0 - image
    meta = ImageMeta(
        rows=rows, cols=cols, spacing=_spacing(ds), photometric=photometric[:32], bits_stored=bits_stored,
        modality=_code(ds.get("Modality")), view=_code(ds.get("ViewPosition")), source_format="dicom",
        transfer_syntax=tsuid.name if tsuid.is_transfer_syntax else None,
    )
    return _finish(image), meta, raw


def _check_encapsulated(ds, tsuid, rows: int, cols: int, spp: int, frames: int, bits_alloc: int) -> None:
    """Checks of compressed pixel data before a decoder sees it.

    Decoders size their output from the codestream's own header, not from Rows/Columns: a JPEG,
    JPEG-LS or JPEG 2000 frame declaring 60000 x 60000 pixels would make them allocate gigabytes and
    run for minutes before the mismatch is noticed. So the first frame's declared size must be the
    header's, and the compressed data must not be absurdly larger than the pixels it encodes.
    """
    from pydicom.encaps import generate_fragments
    from pydicom.uid import JPEG2000TransferSyntaxes, JPEGLSTransferSyntaxes, JPEGTransferSyntaxes

    found = len(ds.PixelData)
    raw = (rows * cols * spp * bits_alloc + 7) // 8
    if found > frames * (MAX_COMPRESSED_RATIO * raw + (1 << 20)):
        raise _fail(f"compressed pixel data ({found} bytes) is far larger than the declared "
                    f"{frames} frame(s) of {rows}x{cols} pixels")
    if tsuid in JPEG2000TransferSyntaxes:
        family = "JPEG 2000"
    elif tsuid in JPEGTransferSyntaxes or tsuid in JPEGLSTransferSyntaxes:
        family = "JPEG"
    else:
        return
    head = b""
    try:
        for k, fragment in enumerate(generate_fragments(ds.PixelData)):
            if k == 0:
                continue  # the Basic Offset Table
            head += fragment[: 1 << 20]
            size = _codestream_size(head, family)
            if size is not None or len(head) >= 1 << 20:
                break
        else:
            size = None
    except Exception:  # broken encapsulation: the decoder reports it
        return
    if size is None:
        return
    h, w = size
    if w != cols or h not in (rows, 0):  # a JPEG may leave the height to a later DNL marker (0)
        raise _fail(f"the {family} codestream declares {h}x{w} pixels, the header says {rows}x{cols}")


# JPEG start-of-frame markers (SOF0..SOF15 without DHT, JPG and DAC) and JPEG-LS's SOF55
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}


def _codestream_size(data: bytes, family: str) -> tuple[int, int] | None:
    """(rows, columns) declared by the frame header of a JPEG / JPEG-LS or JPEG 2000 codestream, or
    None when no header is found in ``data``."""
    if family == "JPEG 2000":
        k = data.find(b"\xff\x4f\xff\x51")  # SOC then SIZ, also inside a JP2 box
        if k < 0 or len(data) < k + 24:
            return None
        xsiz, ysiz, xo, yo = struct.unpack(">IIII", data[k + 8:k + 24])
        return ysiz - yo, xsiz - xo
    k = data.find(b"\xff\xd8")
    if k < 0:
        return None
    j = k + 2
    while j + 4 <= len(data):
        if data[j] != 0xFF:
            return None
        marker = data[j + 1]
        if marker == 0xFF:  # fill byte
            j += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            j += 2
            continue
        if marker in _SOF_MARKERS:
            if j + 9 > len(data):
                return None
            h, w = struct.unpack(">HH", data[j + 5:j + 9])
            return h, w
        if marker in (0xDA, 0xD9):  # scan or end before any frame header
            return None
        j += 2 + struct.unpack(">H", data[j + 2:j + 4])[0]
    return None


def _dicom_intensities(arr: np.ndarray, ds, colour: bool) -> np.ndarray:
    """Modality LUT, then VOI LUT or window (or min–max), scaled to [0, 1]; before any inversion.

    Header values that would turn the picture into one flat grey or into non-finite numbers are
    treated like absent ones, as for windows: an unusable modality LUT or rescale (a broken LUT,
    slope 0, not a number, not finite, overflowing, or swallowing the data) is dropped together with
    the VOI, whose values are in its units, and the stored values are scaled min–max.
    """
    from pydicom.pixels import apply_voi_lut

    stored = arr.astype(np.float64)
    if colour:  # LUTs and windows are defined for monochrome data only
        return _minmax(stored)
    values = _modality(arr, stored, ds)
    if values is None:
        return _minmax(stored)
    varies = float(np.ptp(values)) > 0
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        try:
            lut = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float64).ravel()
            out = apply_voi_lut(values, ds, index=0, prefer_lut=True).astype(np.float64)
            if lut.size > 1 and np.ptp(lut) > 0:
                out = np.clip((out - lut.min()) / np.ptp(lut), 0.0, 1.0)
                if np.isfinite(out).all() and (not varies or float(np.ptp(out)) > 0):
                    return out
        except Exception:  # a broken LUT falls back to the window or min–max
            pass
    window = _window(ds, values)
    if window is not None:
        out = _apply_window(values, *window)
        if not varies or float(np.ptp(out)) > 0:
            return out
    return _minmax(values)  # no usable VOI, or one that leaves a flat image


def _modality(arr: np.ndarray, stored: np.ndarray, ds) -> np.ndarray | None:
    """Modality values: the Modality LUT Sequence, else stored × RescaleSlope + RescaleIntercept
    (pydicom's rule: both or neither), else the stored values; None when the LUT or rescale is
    unusable."""
    from pydicom.pixels import apply_modality_lut

    if "ModalityLUTSequence" in ds:
        try:
            values = apply_modality_lut(arr, ds).astype(np.float64)
        except Exception:  # descriptor and data disagree, an impossible bit depth, ...
            return None
    elif "RescaleSlope" in ds and "RescaleIntercept" in ds:
        try:
            slope, intercept = float(_first(ds.RescaleSlope)), float(_first(ds.RescaleIntercept))
        except (TypeError, ValueError, IndexError):
            return None
        if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0:
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            values = stored * slope + intercept
    else:
        return stored
    if values.shape != stored.shape or not np.isfinite(values).all():
        return None
    if np.ptp(stored) > 0 and np.ptp(values) == 0:  # a flat LUT, or an intercept swallowing the data
        return None
    return values


def _apply_window(values: np.ndarray, centre: float, width: float, func: str) -> np.ndarray:
    if func == "SIGMOID":
        return 1.0 / (1.0 + np.exp(np.clip(-4.0 * (values - centre) / width, -50.0, 50.0)))
    if func == "LINEAR_EXACT":
        return np.clip((values - centre) / width + 0.5, 0.0, 1.0)
    if width == 1.0:  # LINEAR with width 1 is a threshold (DICOM PS3.3 C.11.2.1.2.1)
        return (values > centre - 0.5).astype(np.float64)
    return np.clip((values - (centre - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _window(ds, values: np.ndarray) -> tuple[float, float, str] | None:
    """The first window (centre, width, function), or None when absent or absurd for these values."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    try:
        centre, width = float(_first(ds.WindowCenter)), float(_first(ds.WindowWidth))
    except (TypeError, ValueError, IndexError):
        return None
    func = str(_first(ds.get("VOILUTFunction", "LINEAR")) or "LINEAR").strip().upper()
    func = func if func in ("LINEAR", "LINEAR_EXACT", "SIGMOID") else "LINEAR"
    if not (math.isfinite(centre) and math.isfinite(width)) or width <= 0 or (func == "LINEAR" and width < 1):
        return None
    lo, hi = float(values.min()), float(values.max())
    span = max(hi - lo, 1.0)
    # a window far off or far wider than the data would turn the image into one flat grey
    if width > 100 * span or centre < lo - 10 * span or centre > hi + 10 * span:
        return None
    return centre, width, func


def _first(value):
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return value[0] if len(value) else None
    return value


def _int_attr(ds, keyword: str, default: int | None = None) -> int:
    value = _first(ds.get(keyword))
    if value in (None, "") and default is not None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _fail(f"DICOM {keyword} is missing or not an integer") from None


def _spacing(ds) -> tuple[float, float] | None:
    """PixelSpacing, else ImagerPixelSpacing, as (row, column) mm; None when absent or implausible."""
    lo, hi = SPACING_RANGE_MM
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            value = ds.get(keyword)
            values = [float(v) for v in (value if type(value).__name__ == "MultiValue" else [value])]
        except (TypeError, ValueError):
            continue
        if len(values) == 1:
            values *= 2
        if len(values) == 2 and all(math.isfinite(v) and lo <= v <= hi for v in values):
            return values[0], values[1]
    return None


def _code(value) -> str | None:
    """A short code string (Modality, ViewPosition); never free text."""
    text = str(_first(value) or "").strip() if value is not None else ""
    return text[:16] or None


def _minmax(values: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(values)), float(np.max(values))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise _fail("pixel values are not finite")
    with np.errstate(over="ignore", invalid="ignore"):
        span = hi - lo  # may overflow for values near ±1.8e308
        out = (values - lo) / span if hi > lo else np.zeros(values.shape)
    if not np.isfinite(out).all():  # then scale in two steps, which cannot overflow
        out = (values / 2 - lo / 2) / (hi / 2 - lo / 2)
    return out


def _finish(image: np.ndarray) -> np.ndarray:
    """float32, C-contiguous, in [0, 1]; a non-finite value here would be a bug upstream, and is
    refused rather than silently turned into black."""
    out = np.asarray(image, dtype=np.float32)
    if not np.isfinite(out).all():
        raise _fail("pixel values are not finite")
    return np.ascontiguousarray(np.clip(out, 0.0, 1.0))
