"""Read a radiograph (DICOM, PNG or JPEG) into a float image in [0, 1], bone bright.

``read_image(path) -> (image, meta)``:

* ``image``: float32 H×W array in [0, 1], bone bright, in the original geometry (no resampling,
  flips or rotations).
* ``meta``: :class:`ImageMeta`, a whitelist of technical fields. Patient names, ids, dates and free
  text are never copied out of the header, never logged and never quoted in an error message.

DICOM intensity pipeline (pydicom with the pylibjpeg decoders):

1. decode the first frame (multi-frame files: frame 0 only); colour images become grey luminance;
2. modality LUT: a Modality LUT Sequence, else RescaleSlope/RescaleIntercept;
3. VOI: a VOI LUT Sequence (first LUT), else the first WindowCenter/WindowWidth pair with the
   VOILUTFunction (LINEAR, LINEAR_EXACT or SIGMOID); an absurd window (width ≤ 0, not finite, or
   far wider than the data) is ignored and the plain min–max of the modality values is used, which
   keeps the mapping monotone;
4. scale to [0, 1]; MONOCHROME1 (or a PresentationLUTShape of INVERSE on MONOCHROME2) is inverted so
   that bone is always bright.

Files without a preamble or file meta header are read with ``force=True`` and their transfer syntax
is inferred from the encoding pydicom detected. Declared sizes are checked before any pixel buffer is
allocated. PNG/JPEG go through Pillow: 8-bit data is divided by 255, 16-bit by 65535, colour is
converted to luminance; no pixel spacing is known for them.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Largest accepted side and pixel count of one frame (a 43 cm detector at 0.1 mm is ~4300 px).
MAX_SIDE = 16384
MAX_PIXELS = 80_000_000
#: Files larger than this are refused before reading (no radiograph frame needs more).
MAX_FILE_BYTES = 1 << 30
#: Plausible pixel spacing in mm; anything else (0, negative, absurd) is treated as unknown.
SPACING_RANGE_MM = (0.01, 5.0)

logging.getLogger("pydicom").addHandler(logging.NullHandler())
logging.getLogger("pydicom").propagate = False

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_OTHER_PIL_MAGIC = (b"II*\x00", b"MM\x00*", b"BM", b"GIF8")


class ImageReadError(ValueError):
    """A file that cannot be used as a radiograph; the message is one line and names no patient."""


@dataclass(frozen=True)
class ImageMeta:
    """Whitelisted technical metadata of an image (never identifiers)."""

    rows: int
    cols: int
    spacing: tuple[float, float] | None  # (row, column) spacing in mm, None when unknown or absurd
    photometric: str  # of the source, e.g. MONOCHROME1, MONOCHROME2, RGB, PNG-L, JPEG-RGB
    bits_stored: int | None
    modality: str | None
    view: str | None
    source_format: str  # dicom | png | jpeg | tiff | bmp | gif
    transfer_syntax: str | None  # DICOM transfer syntax name, None for other formats
    raw_min: float  # range of the stored values before any LUT (for inspection)
    raw_max: float

    @property
    def size(self) -> tuple[int, int]:
        """(rows, cols) of the image."""
        return self.rows, self.cols


def _fail(reason: str) -> ImageReadError:
    return ImageReadError(" ".join(str(reason).split())[:200])


def _short(exc: BaseException) -> str:
    """A short, single-line description of a low-level error (class name and a clipped message)."""
    msg = " ".join(str(exc).split())[:100]
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, ImageMeta]:
    """Read a DICOM, PNG or JPEG radiograph as a float32 image in [0, 1] (bone bright) and its metadata.

    Raises :class:`ImageReadError` with a one-line reason for any file that cannot be used.
    """
    p = Path(path)
    if not p.exists():
        raise _fail("file not found")
    if p.is_dir():
        raise _fail("is a directory, not an image file")
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise _fail(f"cannot open file ({type(exc).__name__})") from None
    if size == 0:
        raise _fail("empty file")
    if size > MAX_FILE_BYTES:
        raise _fail(f"file of {size} bytes is too large for a radiograph")
    has_preamble = head[128:132] == b"DICM"  # checked first: a DICOM preamble may look like a TIFF header
    if not has_preamble and (head.startswith(_PNG_MAGIC) or head.startswith(_JPEG_MAGIC)
                             or head.startswith(_OTHER_PIL_MAGIC)):
        return _read_pillow(p)
    # pydicom warns (and logs) about every oddity of a forced read; the caller gets one clear error instead
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _read_dicom(p, has_preamble=has_preamble)


# --------------------------------------------------------------------------------------------- Pillow


def _read_pillow(p: Path) -> tuple[np.ndarray, ImageMeta]:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(p)
            cols, rows = im.size
            _check_size(rows, cols, 1, 1)
            fmt = (im.format or "image").lower()
            mode = im.mode
            im.seek(0)
            im.load()
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _fail("declared size is absurd for a radiograph") from None
    except Exception as exc:  # truncated, corrupt or unsupported files
        raise _fail(f"cannot decode image file ({_short(exc)})") from None
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        raw = np.asarray(im, dtype=np.float32)
        image = raw / 65535.0
    elif mode in ("I", "F"):
        raw = np.asarray(im, dtype=np.float64)
        image = _minmax(raw)
    elif mode == "1":
        raw = np.asarray(im, dtype=np.float32)
        image = raw
    else:
        grey = im if mode == "L" else im.convert("L")  # colour, palette, alpha → luminance
        raw = np.asarray(grey, dtype=np.float32)
        image = raw / 255.0
    fmt = "jpeg" if fmt in ("jpeg", "mpo") else fmt
    meta = ImageMeta(rows=rows, cols=cols, spacing=None, photometric=f"{fmt.upper()}-{mode}",
                     bits_stored=16 if mode.startswith("I;16") else (8 if mode in ("L", "RGB", "RGBA", "P", "LA")
                                                                     else None),
                     modality=None, view=None, source_format=fmt, transfer_syntax=None,
                     raw_min=float(raw.min()), raw_max=float(raw.max()))
    return _finish(image), meta


# ---------------------------------------------------------------------------------------------- DICOM


def _read_dicom(p: Path, has_preamble: bool) -> tuple[np.ndarray, ImageMeta]:
    import pydicom
    from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(p, force=True)
    except Exception as exc:
        # parse errors may quote element values, so only the error class is reported
        raise _fail(f"not a readable DICOM file ({type(exc).__name__})") from None
    if not has_preamble and len(ds) == 0:
        raise _fail("not a DICOM, PNG or JPEG file")
    if not has_preamble and not any(el.tag.group in (0x0008, 0x0010, 0x0018, 0x0020, 0x0028) for el in ds):
        raise _fail("not a DICOM, PNG or JPEG file")
    if "PixelData" not in ds:
        kind = "FloatPixelData" if ("FloatPixelData" in ds or "DoubleFloatPixelData" in ds) else None
        raise _fail("DICOM float pixel data is not supported" if kind else "DICOM has no pixel data")

    tsuid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if not tsuid:
        implicit, little = ds.original_encoding
        if implicit is None:
            implicit, little = True, True
        tsuid = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        ds.file_meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = tsuid
    tsuid = UID(str(tsuid))

    rows = _int_attr(ds, "Rows")
    cols = _int_attr(ds, "Columns")
    spp = _int_attr(ds, "SamplesPerPixel", default=1)
    frames = _int_attr(ds, "NumberOfFrames", default=1) or 1
    bits_alloc = _int_attr(ds, "BitsAllocated")
    bits_stored = _int_attr(ds, "BitsStored", default=bits_alloc)
    _check_size(rows, cols, spp, 1)
    if spp not in (1, 3):
        raise _fail(f"SamplesPerPixel {spp} is not 1 or 3")
    if bits_alloc not in (1, 8, 16, 32):
        raise _fail(f"BitsAllocated {bits_alloc} is not 1, 8, 16 or 32")
    if not (1 <= (bits_stored or 0) <= bits_alloc):
        raise _fail(f"BitsStored {bits_stored} does not fit BitsAllocated {bits_alloc}")
    if frames > 10000:
        raise _fail(f"NumberOfFrames {frames} is absurd")

    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper() or "MONOCHROME2"
    if not tsuid.is_compressed:
        samples = 2 if photometric == "YBR_FULL_422" else spp  # 4:2:2 stores two samples per pixel
        expected = (rows * cols * samples * frames * bits_alloc + 7) // 8
        found = len(ds.PixelData)
        if found < expected:
            raise _fail(f"pixel data is truncated (expected {expected} bytes, found {found})")
        # trailing padding is common and harmless; much more data means Rows/Columns are wrong
        if found > expected + max(1, expected // 50):
            raise _fail(f"pixel data ({found} bytes) does not match the declared size "
                        f"{rows}x{cols}x{spp}, {bits_alloc}-bit, {frames} frame(s) ({expected} bytes)")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pydicom.pixels import pixel_array

            arr = pixel_array(ds, index=0) if frames > 1 else ds.pixel_array
    except Exception as exc:
        name = tsuid.name if tsuid.is_transfer_syntax else "unknown transfer syntax"
        raise _fail(f"cannot decode pixel data ({name}; {_short(exc)})") from None
    if arr.ndim == 3 and spp == 3:
        arr = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114  # colour → luminance
    if arr.ndim != 2 or arr.shape != (rows, cols):
        raise _fail(f"decoded pixel data has shape {arr.shape}, header says {rows}x{cols}")

    raw_min, raw_max = float(np.min(arr)), float(np.max(arr))
    try:
        image = _dicom_intensities(arr, ds)
    except ImageReadError:
        raise
    except Exception as exc:
        raise _fail(f"cannot apply the intensity LUTs ({_short(exc)})") from None

    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    if photometric == "MONOCHROME1" or (photometric == "MONOCHROME2" and shape == "INVERSE"):
        image = 1.0 - image
    meta = ImageMeta(
        rows=rows, cols=cols, spacing=_spacing(ds), photometric=photometric, bits_stored=bits_stored,
        modality=_short_str(ds.get("Modality")), view=_short_str(ds.get("ViewPosition")),
        source_format="dicom", transfer_syntax=tsuid.name if tsuid.is_transfer_syntax else str(tsuid),
        raw_min=raw_min, raw_max=raw_max,
    )
    return _finish(image), meta


def _dicom_intensities(arr: np.ndarray, ds) -> np.ndarray:
    """Modality LUT, then VOI LUT or window, scaled to [0, 1] (before any MONOCHROME1 inversion)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(arr, ds).astype(np.float64) if _has_modality_transform(ds) else arr.astype(
        np.float64)
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        try:
            lut_item = ds.VOILUTSequence[0]
            lut = np.asarray(lut_item.LUTData, dtype=np.float64).ravel()
            out = apply_voi_lut(values, ds, index=0, prefer_lut=True).astype(np.float64)
            if lut.size > 1 and np.ptp(lut) > 0:
                return np.clip((out - lut.min()) / np.ptp(lut), 0.0, 1.0)
        except Exception:  # a broken LUT falls back to the window or min–max
            pass
    window = _window(ds, values)
    if window is not None:
        centre, width, func = window
        if func == "SIGMOID":
            return 1.0 / (1.0 + np.exp(np.clip(-4.0 * (values - centre) / width, -50, 50)))
        if func == "LINEAR_EXACT":
            return np.clip((values - centre) / width + 0.5, 0.0, 1.0)
        return np.clip((values - (centre - 0.5)) / max(width - 1.0, 1e-6) + 0.5, 0.0, 1.0)
    return _minmax(values)


def _has_modality_transform(ds) -> bool:
    return "ModalityLUTSequence" in ds or "RescaleSlope" in ds or "RescaleIntercept" in ds


def _window(ds, values: np.ndarray) -> tuple[float, float, str] | None:
    """The first window (centre, width, function), or None when absent or absurd for these values."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    try:
        centre = float(_first(ds.WindowCenter))
        width = float(_first(ds.WindowWidth))
    except (TypeError, ValueError):
        return None
    lo, hi = float(values.min()), float(values.max())
    span = max(hi - lo, 1.0)
    if not (math.isfinite(centre) and math.isfinite(width)) or width <= 1.0:
        return None
    # a window far outside or far wider than the data would turn the image into one flat grey
    if width > 100 * span or centre < lo - 10 * span or centre > hi + 10 * span:
        return None
    func = str(_first(ds.get("VOILUTFunction", "LINEAR")) or "LINEAR").strip().upper()
    return centre, width, func if func in ("LINEAR", "LINEAR_EXACT", "SIGMOID") else "LINEAR"


def _first(value):
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return value[0] if len(value) else None
    return value


def _int_attr(ds, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    try:
        value = int(_first(value))
    except (TypeError, ValueError):
        raise _fail(f"DICOM {keyword} is missing or not an integer") from None
    return value


def _check_size(rows: int, cols: int, spp: int, frames: int) -> None:
    if rows <= 0 or cols <= 0:
        raise _fail(f"declared size {rows}x{cols} is empty")
    if rows > MAX_SIDE or cols > MAX_SIDE or rows * cols * spp * frames > MAX_PIXELS:
        raise _fail(f"declared size {rows}x{cols} is absurd for a radiograph")


def _spacing(ds) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if keyword not in ds:
            continue
        try:
            values = [float(v) for v in (ds[keyword].value if ds[keyword].VM > 1 else [ds[keyword].value])]
        except (TypeError, ValueError):
            continue
        if len(values) == 1:
            values = values * 2
        lo, hi = SPACING_RANGE_MM
        if len(values) >= 2 and all(math.isfinite(v) and lo <= v <= hi for v in values[:2]):
            return float(values[0]), float(values[1])
    return None


def _short_str(value) -> str | None:
    if value is None:
        return None
    text = str(_first(value) or "").strip()
    return text[:16] or None


def _minmax(values: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(values)), float(np.max(values))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise _fail("pixel values are not finite")
    return (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)


def _finish(image: np.ndarray) -> np.ndarray:
    out = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0), 0.0, 1.0)
    return np.ascontiguousarray(out)


# ------------------------------------------------------------------------------------------- describe


def describe(path: str | os.PathLike) -> str:
    """One line about an image: format, photometric, size, spacing, bits, modality and value range."""
    image, m = read_image(path)
    spacing = f"spacing {m.spacing[0]:.3g}x{m.spacing[1]:.3g} mm" if m.spacing else "spacing unknown"
    bits = f"{m.bits_stored}-bit" if m.bits_stored else "bits unknown"
    parts = [m.source_format, m.photometric, f"{m.cols}x{m.rows} px (WxH)", spacing, bits]
    if m.modality:
        parts.append(m.modality)
    if m.transfer_syntax:
        parts.append(m.transfer_syntax)
    parts.append(f"range [{image.min():.3f}, {image.max():.3f}] (raw {m.raw_min:g}..{m.raw_max:g})")
    return ", ".join(parts)
