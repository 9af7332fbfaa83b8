"""Real radiographs as the yardstick for the twin: which public films there are, how their intensities and
lung texture compare with the twin's, how well the detector's rib-cage points sit on an annotated lung
outline, and whether the twin-trained detector's plausibility score passes chest films and flags the rest.

The public sample films live outside the repository (:func:`bmd.infra.paths.realdata_dir`; a user's clone
has none), so every function here takes the folder, a file that is missing is left out, and the summary
block is all nulls when the folder is absent. Nothing here reads DICOM headers beyond what
:func:`bmd.io.read_image` whitelists (the pixel spacing), and nothing here runs the detector: callers
(:mod:`bmd.study.realdata`) pass the detector's points and scores in, which keeps this module free of
torch.

Choices, stated once:

* **Intensities** are those :func:`bmd.io.read_image` returns, each image then stretched to [0, 1] by its
  own 0.5th and 99.5th percentiles (:func:`normalise_percentiles`), so that a film's window and bit depth
  do not decide the comparison.
* **Pixel spacing**: the reader's, when the file states a sane one (the twin's DICOMs, some real DICOMs);
  otherwise the film's width is taken to span :data:`ASSUMED_FIELD_WIDTH_MM` (350 mm, a typical adult PA
  chest field; PNG and JPEG films carry no spacing, and two real chest DICOMs carry none or a zero one).
* **Lung field** (:func:`lung_squares`): on each side, between the spine line (mean x of ``cervical``
  and ``t12``) and the rib-cage margin (mean x of ``rib_*_2`` and ``rib_*_3``), the part from 35% to 85%
  of the way out (clear of the mediastinum and heart medially and of the ribs' lateral margin), and from
  10% below the clavicle mid-point (``clav_*_mid``) down to ``rib_*_3``; the largest square centred in
  that box, the same side on both lungs. From ground-truth landmarks for the twin and from the detector's
  points for real films.
* **Radial power spectrum** (:func:`radial_power_spectrum`): the square minus its least-squares plane,
  times a 2-D Hann window, |FFT|² scaled to a power spectral density (intensity² · mm²), averaged over
  annuli one frequency step wide; frequency in cycles/mm.
* **Spectral slope** (:func:`spectral_slope`): the least-squares slope of log10 power against log10
  frequency over :data:`SLOPE_BAND_CYCLES_PER_MM` (0.03–0.25 cycles/mm: periods of 4 to 33 mm, from rib
  spacing down to vessel-sized structure), narrowed where a square is too small (at least
  :data:`MIN_CYCLES_PER_SQUARE` cycles across it) or its pixels too coarse (at most
  :data:`MAX_NYQUIST_FRACTION` of the Nyquist frequency, where resampling and the detector's blur bend
  the spectrum). A natural image's spectrum falls roughly as a power law; its slope says how texture is
  shared between coarse and fine scales, independently of contrast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bmd.columns import LANDMARK_NAMES, PLAUSIBILITY_COMPONENTS
from bmd.infra.formatting import num

#: Roles of the files in the real-data folder. ``chest``: frontal chest radiographs; ``non_chest``:
#: radiographs of other anatomy (the detector should flag them); ``pattern``: a synthetic test pattern
#: (should be flagged too); ``annotation``: contour files and masks that go with a film; ``header_only``:
#: files too small to be images (16 × 16 pixels) that are kept for header tests only.
ROLES: tuple[str, ...] = ("chest", "non_chest", "pattern", "annotation", "header_only")
#: Roles whose films the detector should flag.
FLAG_ROLES: tuple[str, ...] = ("non_chest", "pattern")
#: Role of a readable image found in a folder that the table does not list.
UNLISTED = "unlisted"
#: Prefix of files that ship with pydicom's own test data rather than with the real-data folder.
PYDICOM_PREFIX = "pydicom-testdata:"

#: The committed table: file (relative to the real-data folder, or :data:`PYDICOM_PREFIX` + a pydicom test
#: file name) → (role, what it shows). See the folder's SOURCES.md for origins and licences.
FILM_TABLE: dict[str, tuple[str, str]] = {
    "torchxrayvision/00000001_000.png": ("chest", "PA chest, NIH ChestX-ray14, 512² PNG"),
    "torchxrayvision/00027426_000.png": ("chest", "PA chest, NIH ChestX-ray14, 512² PNG"),
    "CheXmask-Database/Example/utils_example1.jpg": ("chest", "PA chest, Wikimedia (CC0), JPEG, lung contours"),
    "pydicom-data/RG1_J2KI.dcm": ("chest", "CR chest PA, NEMA WG04, JPEG 2000"),
    "fo-dicom/CR-MONO1-10-chest": ("chest", "CR chest, 440² DICOM without a meta header"),
    "pydicom-data/RG3_J2KR.dcm": ("non_chest", "CR distal tibia, JPEG 2000 lossless"),
    "pydicom-data/RG3_J2KI.dcm": ("non_chest", "CR distal tibia, JPEG 2000 lossy"),
    "fo-dicom/CR-ModalitySequenceLUT.dcm": ("non_chest", "CR dental panoramic"),
    "fo-dicom/GH133.dcm": ("non_chest", "mammogram, MLO view"),
    f"{PYDICOM_PREFIX}CT_small.dcm": ("non_chest", "CT slice (pydicom test file)"),
    "pydicom-data/vlut_04.dcm": ("pattern", "SMPTE test pattern (synthetic)"),
    "CheXmask-Database/Example/RL_landmarks.txt": ("annotation", "right-lung contour of utils_example1.jpg"),
    "CheXmask-Database/Example/LL_landmarks.txt": ("annotation", "left-lung contour of utils_example1.jpg"),
    "CheXmask-Database/Example/H_landmarks.txt": ("annotation", "heart contour of utils_example1.jpg"),
    "CheXmask-Database/Example/RL_mask.png": ("annotation", "right-lung mask of utils_example1.jpg"),
    "CheXmask-Database/Example/LL_mask.png": ("annotation", "left-lung mask of utils_example1.jpg"),
    "CheXmask-Database/Example/H_mask.png": ("annotation", "heart mask of utils_example1.jpg"),
    "pydicom/dicomdirtests/77654033/CR1/6154": ("header_only", "CR cervical spine, 16² (header tests)"),
    "pydicom/dicomdirtests/77654033/CR2/6247": ("header_only", "CR cervical spine, 16² (header tests)"),
    "pydicom/dicomdirtests/77654033/CR3/6278": ("header_only", "CR cervical spine, 16² (header tests)"),
}

#: The film with annotated lung contours, and its contour files by the *patient's* side. The right lung
#: (RL) lies on the image's left in standard PA display; :func:`read_chexmask_contours` checks that.
CHEXMASK_IMAGE = "CheXmask-Database/Example/utils_example1.jpg"
CHEXMASK_CONTOURS: dict[str, str] = {
    "right": "CheXmask-Database/Example/RL_landmarks.txt",
    "left": "CheXmask-Database/Example/LL_landmarks.txt",
}

#: Field width (mm) assumed for a film whose pixel spacing is unknown: a typical adult PA chest field.
ASSUMED_FIELD_WIDTH_MM = 350.0
#: Percentiles that map an image to [0, 1] before any comparison.
NORMALISE_PERCENTILES = (0.5, 99.5)
#: Frequency band (cycles/mm) of the spectral slope fit.
SLOPE_BAND_CYCLES_PER_MM = (0.03, 0.25)
#: The slope band starts no lower than this many cycles across the square (the Hann window smears the
#: lowest frequencies).
MIN_CYCLES_PER_SQUARE = 2.0
#: ... and ends no higher than this fraction of the Nyquist frequency.
MAX_NYQUIST_FRACTION = 0.8
#: Fewest frequency bins a slope is fitted on; fewer gives NaN.
MIN_SLOPE_BINS = 4
#: Smallest lung square side (pixels) whose spectrum is computed.
MIN_SQUARE_PX = 16
#: Bins of the intensity histograms over [0, 1].
HISTOGRAM_BINS = 50
#: Rib-cage landmarks by the patient's side, top to bottom.
RIB_POINTS: dict[str, tuple[str, ...]] = {
    side: tuple(f"rib_{side[0]}_{k}" for k in range(1, 5)) for side in ("left", "right")
}

_INDEX = {name: i for i, name in enumerate(LANDMARK_NAMES)}


# ------------------------------------------------------------------------------------------ the films


def film_table(folder: str | os.PathLike | None, roles: Sequence[str] | None = None) -> pd.DataFrame:
    """The listed files present in ``folder`` (the real-data folder), in table order.

    Columns: ``file`` (the table's key: a path relative to ``folder``, or :data:`PYDICOM_PREFIX` + a
    pydicom test file), ``role`` (one of :data:`ROLES`), ``what`` (a few words on the content) and ``path``
    (the absolute path). ``roles`` keeps only those roles. Missing files are left out, and no folder (None,
    or one that does not exist) gives an empty frame with these columns; pydicom's test files are listed
    only beside a real-data folder.
    """
    rows = []
    base = Path(folder) if folder is not None else None
    if base is not None and base.is_dir():
        for rel, (role, what) in FILM_TABLE.items():
            if roles is not None and role not in roles:
                continue
            path = _pydicom_test_file(rel[len(PYDICOM_PREFIX):]) if rel.startswith(PYDICOM_PREFIX) else base / rel
            if path is not None and path.is_file():
                rows.append({"file": rel, "role": role, "what": what, "path": path})
    return pd.DataFrame(rows, columns=["file", "role", "what", "path"])


def unlisted_files(folder: str | os.PathLike | None) -> list[Path]:
    """Files under ``folder`` that :data:`FILM_TABLE` does not name, apart from documentation and licence
    texts (a user's own folder of films: the caller tries to read each, role :data:`UNLISTED`)."""
    if folder is None or not Path(folder).is_dir():
        return []
    base = Path(folder)
    skip_suffixes = {".md", ".txt", ".csv", ".json", ".html", ".pdf"}
    return [p for p in sorted(base.rglob("*"))
            if p.is_file() and p.relative_to(base).as_posix() not in FILM_TABLE
            and p.suffix.lower() not in skip_suffixes and not p.name.lower().startswith(("license", "licence"))
            and not p.name.startswith(".")]


def _pydicom_test_file(name: str) -> Path | None:
    """A file of pydicom's bundled test data, or None when pydicom cannot give it."""
    try:
        from pydicom.data import get_testdata_file

        found = get_testdata_file(name)
    except Exception:  # pydicom missing, or its data not installed: the file is simply not listed
        return None
    return Path(found) if found else None


def read_chexmask_contours(folder: str | os.PathLike | None) -> dict[str, np.ndarray] | None:
    """The annotated lung contours of :data:`CHEXMASK_IMAGE` by the patient's side, (N, 2) pixel (x, y);
    None when a file is missing.

    Raises ValueError when the right lung is not on the image's left of the left lung: the distances of
    :func:`rib_margin_distances` pair sides by name, so a swapped pair must not pass silently.
    """
    if folder is None:
        return None
    files = {side: Path(folder) / rel for side, rel in CHEXMASK_CONTOURS.items()}
    if not all(p.is_file() for p in files.values()):
        return None
    contours = {side: np.loadtxt(p, dtype=np.float64, ndmin=2)[:, :2] for side, p in files.items()}
    if not contours["right"][:, 0].mean() < contours["left"][:, 0].mean():
        raise ValueError("the CheXmask right-lung contour is not on the image's left: sides would be swapped")
    return contours


# ------------------------------------------------------------------------------------- intensities


def normalise_percentiles(image: np.ndarray,
                          percentiles: tuple[float, float] = NORMALISE_PERCENTILES) -> np.ndarray:
    """``image`` mapped linearly so that its own low/high percentiles become 0 and 1, clipped to [0, 1]
    (float64). A flat image gives zeros."""
    img = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(img, percentiles)
    if not hi > lo:
        return np.zeros_like(img)
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0)


def intensity_histogram(image: np.ndarray, bins: int = HISTOGRAM_BINS) -> tuple[np.ndarray, np.ndarray]:
    """``(bin centres, density)`` of a [0, 1] image over ``bins`` equal bins (the density integrates to 1)."""
    density, edges = np.histogram(np.asarray(image, dtype=np.float64), bins=bins, range=(0.0, 1.0), density=True)
    return (edges[:-1] + edges[1:]) / 2, density


def pixel_spacing_mm(spacing: tuple[float, float] | None, width: int) -> tuple[float, str]:
    """``(mm per pixel, source)``: the reader's column spacing (source ``header``), else
    :data:`ASSUMED_FIELD_WIDTH_MM` over the image width (source ``assumed``)."""
    if spacing is not None and np.isfinite(spacing[1]) and spacing[1] > 0:
        return float(spacing[1]), "header"
    return ASSUMED_FIELD_WIDTH_MM / float(width), "assumed"


# ------------------------------------------------------------------------------------ lung squares


@dataclass(frozen=True)
class Square:
    """A square of pixels: columns ``x0 .. x0 + side − 1``, rows ``y0 .. y0 + side − 1``; ``side_name`` is
    the patient's side of the lung it samples."""

    side_name: str
    x0: int
    y0: int
    side: int

    def cut(self, image: np.ndarray) -> np.ndarray:
        """The square's pixels of ``image``."""
        return np.asarray(image)[self.y0:self.y0 + self.side, self.x0:self.x0 + self.side]

    def corners(self) -> np.ndarray:
        """(4, 2) pixel-edge corners (x, y), clockwise from the top left, for drawing."""
        a, b = self.x0 - 0.5, self.x0 + self.side - 0.5
        c, d = self.y0 - 0.5, self.y0 + self.side - 0.5
        return np.array([[a, c], [b, c], [b, d], [a, d]])


def lung_squares(points: np.ndarray, shape: tuple[int, int]) -> list[Square]:
    """The two lung-field squares (patient's left, then right) placed from 16 landmarks (see the module's
    docstring), clipped to an image of ``shape`` (rows, columns); both have the same side. Empty when the
    points are not finite or leave no square of at least :data:`MIN_SQUARE_PX`."""
    pts = np.asarray(points, dtype=np.float64).reshape(len(LANDMARK_NAMES), 2)
    if not np.isfinite(pts).all():
        return []
    spine_x = (pts[_INDEX["cervical"], 0] + pts[_INDEX["t12"], 0]) / 2
    boxes = {}
    for side in ("left", "right"):
        s = side[0]
        margin_x = (pts[_INDEX[f"rib_{s}_2"], 0] + pts[_INDEX[f"rib_{s}_3"], 0]) / 2
        xa, xb = sorted((spine_x + 0.35 * (margin_x - spine_x), spine_x + 0.85 * (margin_x - spine_x)))
        top, bottom = pts[_INDEX[f"clav_{s}_mid"], 1], pts[_INDEX[f"rib_{s}_3"], 1]
        ya, yb = top + 0.10 * (bottom - top), bottom
        # clip to the image before the square is sized, so that it stays centred in what is visible
        xa, xb = max(xa, 0.0), min(xb, shape[1] - 1.0)
        ya, yb = max(min(ya, yb), 0.0), min(max(ya, yb), shape[0] - 1.0)
        boxes[side] = (xa, xb, ya, yb)
    side_px = int(np.floor(min(min(xb - xa, yb - ya) for xa, xb, ya, yb in boxes.values())))
    if side_px < MIN_SQUARE_PX:
        return []
    out = []
    for side, (xa, xb, ya, yb) in boxes.items():
        x0 = int(round((xa + xb) / 2 - side_px / 2))
        y0 = int(round((ya + yb) / 2 - side_px / 2))
        x0 = min(max(x0, 0), shape[1] - side_px)
        y0 = min(max(y0, 0), shape[0] - side_px)
        out.append(Square(side, x0, y0, side_px))
    return out


# ---------------------------------------------------------------------------------------- spectra


@dataclass(frozen=True)
class RadialSpectrum:
    """An azimuthally averaged power spectrum: ``frequency`` (cycles/mm, ascending, DC excluded) and
    ``power`` (power spectral density, intensity² · mm², at each frequency), from squares of ``side``
    pixels at ``spacing_mm``."""

    frequency: np.ndarray
    power: np.ndarray
    side: int
    spacing_mm: float

    @property
    def nyquist(self) -> float:
        """The Nyquist frequency (cycles/mm)."""
        return 0.5 / self.spacing_mm


def _detrend_plane(patch: np.ndarray) -> np.ndarray:
    """``patch`` minus its least-squares plane: a gradient across the square (exposure, body thickness)
    would otherwise leak into every low frequency."""
    n_rows, n_cols = patch.shape
    yy, xx = np.mgrid[0:n_rows, 0:n_cols]
    design = np.column_stack([np.ones(patch.size), xx.ravel(), yy.ravel()])
    coef, *_ = np.linalg.lstsq(design, patch.ravel(), rcond=None)
    return patch - (design @ coef).reshape(patch.shape)


def radial_power_spectrum(patches: np.ndarray | Sequence[np.ndarray], spacing_mm: float) -> RadialSpectrum:
    """The radial power spectrum of one square patch, or the mean over several of the same side.

    Each patch is detrended (least-squares plane), Hann-windowed in 2-D and transformed; the power
    ``|F|² · spacing² / Σ window²`` (a periodogram density that does not depend on the window or the patch
    size) is averaged over annuli ``k − ½ ≤ r < k + ½`` of the frequency radius, k = 1 .. side/2, at
    frequency ``k / (side · spacing)``.
    """
    single = isinstance(patches, np.ndarray) and patches.ndim == 2
    stack = [np.asarray(p, dtype=np.float64) for p in ([patches] if single else patches)]
    side = stack[0].shape[0]
    if any(p.shape != (side, side) for p in stack):
        raise ValueError("patches must be squares of one side")
    window = np.outer(np.hanning(side), np.hanning(side))
    scale = spacing_mm**2 / float(np.sum(window**2))
    power2d = np.mean([np.abs(np.fft.fftshift(np.fft.fft2(_detrend_plane(p) * window)))**2 for p in stack],
                      axis=0) * scale
    centre = side // 2
    yy, xx = np.mgrid[0:side, 0:side]
    radius = np.rint(np.hypot(xx - centre, yy - centre)).astype(int)  # annulus k holds k − ½ ≤ r < k + ½
    k = np.arange(1, side // 2 + 1)
    sums = np.bincount(radius.ravel(), weights=power2d.ravel(), minlength=k[-1] + 1)
    counts = np.bincount(radius.ravel(), minlength=k[-1] + 1)
    return RadialSpectrum(k / (side * spacing_mm), sums[k] / counts[k], side, float(spacing_mm))


def slope_band(spectrum: RadialSpectrum,
               band: tuple[float, float] = SLOPE_BAND_CYCLES_PER_MM) -> tuple[float, float]:
    """The band (cycles/mm) the slope of ``spectrum`` is fitted over: ``band`` narrowed to at least
    :data:`MIN_CYCLES_PER_SQUARE` cycles across the square and at most :data:`MAX_NYQUIST_FRACTION` of
    the Nyquist frequency."""
    lo = max(band[0], MIN_CYCLES_PER_SQUARE / (spectrum.side * spectrum.spacing_mm))
    hi = min(band[1], MAX_NYQUIST_FRACTION * spectrum.nyquist)
    return lo, hi


def spectral_slope(spectrum: RadialSpectrum, band: tuple[float, float] = SLOPE_BAND_CYCLES_PER_MM) -> float:
    """Least-squares slope of log10 power against log10 frequency over :func:`slope_band`; NaN with fewer
    than :data:`MIN_SLOPE_BINS` positive bins in it. For power ∝ f^(−β) the slope is −β."""
    lo, hi = slope_band(spectrum, band)
    keep = (spectrum.frequency >= lo) & (spectrum.frequency <= hi) & (spectrum.power > 0)
    if keep.sum() < MIN_SLOPE_BINS:
        return float("nan")
    slope, _intercept = np.polyfit(np.log10(spectrum.frequency[keep]), np.log10(spectrum.power[keep]), 1)
    return float(slope)


def lung_spectrum(image: np.ndarray, points: np.ndarray, spacing_mm: float) -> RadialSpectrum | None:
    """The radial spectrum of the two :func:`lung_squares` of a [0, 1] image (their mean power), or None
    when the points leave no square."""
    squares = lung_squares(points, np.shape(image))
    if not squares:
        return None
    return radial_power_spectrum([sq.cut(image) for sq in squares], spacing_mm)


# ----------------------------------------------------------------------------- rib-margin distance


def nearest_on_polyline(points: np.ndarray, contour: np.ndarray,
                        closed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(distances (K,), nearest points (K, 2))``: for each of ``points`` (K, 2), the nearest point of the
    polyline through ``contour`` (M, 2), segments included (and the closing segment when ``closed``)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    c = np.asarray(contour, dtype=np.float64).reshape(-1, 2)
    if closed and len(c) > 2:
        c = np.vstack([c, c[:1]])
    if len(c) == 1:
        return np.linalg.norm(p - c[0], axis=1), np.repeat(c, len(p), axis=0)
    a, b = c[:-1], c[1:]  # segments a → b
    ab = b - a
    length2 = np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-12)
    t = np.clip(np.einsum("kij,ij->ki", p[:, None, :] - a[None], ab) / length2, 0.0, 1.0)
    candidates = a[None] + t[..., None] * ab[None]  # (K, segments, 2): the nearest point of each segment
    dist = np.linalg.norm(p[:, None, :] - candidates, axis=-1)
    best = np.argmin(dist, axis=1)
    rows = np.arange(len(p))
    return dist[rows, best], candidates[rows, best]


def polyline_distances(points: np.ndarray, contour: np.ndarray, closed: bool = True) -> np.ndarray:
    """Distance of each of ``points`` (K, 2) to the nearest point of the polyline through ``contour``
    (:func:`nearest_on_polyline`)."""
    return nearest_on_polyline(points, contour, closed)[0]


def rib_margin_distances(points: np.ndarray, contours: Mapping[str, np.ndarray], width: float) -> pd.DataFrame:
    """Distance from each rib-cage landmark to the lung contour of the same patient's side.

    ``points``: the 16 landmarks (pixels); ``contours``: ``{"left": (M, 2), "right": (N, 2)}`` closed
    contours by the patient's side (:func:`read_chexmask_contours`); ``width``: the image width (pixels).
    Columns: ``landmark`` (``rib_l_1`` … ``rib_r_4``), ``side``, ``x``, ``y`` (the landmark), ``nearest_x``,
    ``nearest_y`` (the nearest contour point), ``distance_px`` and ``distance_pct`` (% of the image width).
    """
    pts = np.asarray(points, dtype=np.float64).reshape(len(LANDMARK_NAMES), 2)
    rows = []
    for side, names in RIB_POINTS.items():
        own = pts[[_INDEX[n] for n in names]]
        dist, nearest = nearest_on_polyline(own, contours[side])
        rows += [{"landmark": n, "side": side, "x": p[0], "y": p[1], "nearest_x": q[0], "nearest_y": q[1],
                  "distance_px": float(d), "distance_pct": 100.0 * float(d) / width}
                 for n, p, q, d in zip(names, own, nearest, dist, strict=True)]
    return pd.DataFrame(rows, columns=["landmark", "side", "x", "y", "nearest_x", "nearest_y", "distance_px",
                                       "distance_pct"])


def inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Whether each of ``points`` (K, 2) lies inside the closed ``polygon`` (M, 2), by the even–odd rule
    (a horizontal ray from the point crosses the outline an odd number of times)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    a = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    b = np.roll(a, -1, axis=0)
    px, py = p[:, :1], p[:, 1:]
    spans = (a[None, :, 1] > py) != (b[None, :, 1] > py)  # the edge straddles the ray's height
    with np.errstate(divide="ignore", invalid="ignore"):
        dx_dy = (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])  # inf on horizontal edges, which never span
        x_cross = a[None, :, 0] + (py - a[None, :, 1]) * dx_dy[None]
    return (np.sum(spans & (px < x_cross), axis=1) % 2) == 1


def fraction_inside(squares: Sequence[Square], contours: Mapping[str, np.ndarray]) -> float:
    """The fraction of the squares' pixel centres that lie inside the lung contour of their side (a check
    that the lung field chosen from landmarks is lung); NaN without squares."""
    inside, total = 0, 0
    for sq in squares:
        yy, xx = np.mgrid[sq.y0:sq.y0 + sq.side, sq.x0:sq.x0 + sq.side]
        centres = np.column_stack([xx.ravel(), yy.ravel()]).astype(np.float64)
        inside += int(inside_polygon(centres, contours[sq.side_name]).sum())
        total += centres.shape[0]
    return inside / total if total else float("nan")


# -------------------------------------------------------------------------------- plausibility


def plausibility_table(films: pd.DataFrame, status: Sequence[str], plausibility: Sequence[float],
                       score: Sequence[float], reason: Sequence[str] | None = None,
                       components: Sequence[Mapping[str, float] | None] | None = None) -> pd.DataFrame:
    """The detector's verdict on each film beside what it should be.

    ``films``: rows of :func:`film_table` (``file``, ``role``); the other arguments: the detector's
    outputs for those films in the same order (:func:`bmd.landmarks.detector.predict_landmarks`;
    ``components``: each verdict's per-component scores, None for a film without one). Columns: ``file``,
    ``role``, ``status`` (``ok``/``flagged``/``failed``), ``plausibility``, ``score`` (> 1 is flagged),
    ``reason``, one column per component of :data:`PLAUSIBILITY_COMPONENTS` (NaN without components),
    ``worst`` (the component with the largest score; empty without one), ``expected`` (``ok`` for chest
    films, ``flagged`` for :data:`FLAG_ROLES`, empty otherwise) and ``as_expected`` (bool; False where
    nothing is expected).
    """
    n = len(films)
    components = list(components) if components is not None else [None] * n
    if not (len(status) == len(plausibility) == len(score) == len(components) == n):
        raise ValueError("one verdict per film is needed")
    expected = ["ok" if r == "chest" else "flagged" if r in FLAG_ROLES else "" for r in films["role"]]
    table = pd.DataFrame({
        "file": list(films["file"]), "role": list(films["role"]), "status": list(status),
        "plausibility": np.asarray(plausibility, dtype=np.float64),
        "score": np.asarray(score, dtype=np.float64),
        "reason": list(reason) if reason is not None else [""] * n,
    })
    for k in PLAUSIBILITY_COMPONENTS:
        table[k] = [float(c[k]) if c else np.nan for c in components]
    comp = table[list(PLAUSIBILITY_COMPONENTS)].to_numpy(dtype=np.float64)
    table["worst"] = [PLAUSIBILITY_COMPONENTS[int(np.argmax(row))] if np.isfinite(row).all() else ""
                      for row in comp]
    table["expected"] = expected
    table["as_expected"] = [bool(e) and s == e for s, e in zip(table["status"], expected, strict=True)]
    return table


def plausibility_counts(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """``{"chest_pass": {"n", "of"}, "non_chest_flagged": {"n", "of"}}`` from :func:`plausibility_table`:
    chest films passed (status ``ok``) and non-chest or pattern films flagged."""
    chest = table[table["role"] == "chest"]
    other = table[table["role"].isin(FLAG_ROLES)]
    return {"chest_pass": {"n": int((chest["status"] == "ok").sum()), "of": len(chest)},
            "non_chest_flagged": {"n": int((other["status"] == "flagged").sum()), "of": len(other)}}


def worst_component_counts(table: pd.DataFrame, role: str = "chest") -> dict[str, int]:
    """How often each plausibility component is a film's largest, over the films of one ``role`` that have
    components (:func:`plausibility_table`); every component is a key, zeros included."""
    worst = table.loc[(table["role"] == role) & (table["worst"] != ""), "worst"]
    return {k: int((worst == k).sum()) for k in PLAUSIBILITY_COMPONENTS}


# ------------------------------------------------------------------------------------ thorax shape


def thorax_aspect(points: np.ndarray) -> np.ndarray:
    """Height over width of the thorax from the 16 landmarks, ``(…, 16, 2)`` → ``(…)``.

    Height: from the mid-point of the two medial clavicle ends down to T12; width: between the two
    third rib-cage points. A taller, narrower chest gives a larger ratio; it is unchanged by translation
    and scale (the image's size, the framing), so twin and real films compare directly (square pixels
    assumed).
    """
    p = np.asarray(points, dtype=np.float64)
    return _over_cage_width(p, p[..., _INDEX["t12"], 1] - _clavicles_mid(p, 1))


def _clavicles_mid(p: np.ndarray, axis: int) -> np.ndarray:
    """Mid-point of the two medial clavicle ends along ``axis`` (0 = x, 1 = y)."""
    return 0.5 * (p[..., _INDEX["clav_l_medial"], axis] + p[..., _INDEX["clav_r_medial"], axis])


def _over_cage_width(p: np.ndarray, length: np.ndarray) -> np.ndarray:
    """``length`` over the rib-cage width between the third rib-cage points (NaN where that width is 0)."""
    width = np.abs(p[..., _INDEX["rib_l_3"], 0] - p[..., _INDEX["rib_r_3"], 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(width > 0, length / width, np.nan)


def spine_offset(points: np.ndarray) -> np.ndarray:
    """Signed offset of the cervical point from the mid-point of the two medial clavicle ends, over the
    rib-cage width (between the third rib-cage points), ``(…, 16, 2)`` → ``(…)``; + = image right.

    Axial rotation of the patient projects the spine, which lies behind the clavicles' medial ends, to one
    side of their mid-point (the radiographer's check for a rotated PA film). Free of position and scale.
    """
    p = np.asarray(points, dtype=np.float64)
    return _over_cage_width(p, p[..., _INDEX["cervical"], 0] - _clavicles_mid(p, 0))


def _within_twin(twin_values: Sequence[float], real_values: Mapping[str, float], key: str) -> dict | None:
    """Real films' values of one shape measure within the twin's distribution of it (see
    :func:`aspect_comparison`, whose layout this is, with ``key`` naming the value)."""
    tw = np.asarray([a for a in twin_values if np.isfinite(a)], dtype=np.float64)
    if not tw.size:
        return None
    p05, med, p95 = (float(v) for v in np.percentile(tw, [5, 50, 95]))
    real = {str(f): {key: float(a), "twin_percentile": float(100.0 * np.mean(tw < a))}
            for f, a in real_values.items() if np.isfinite(a)}
    values = [r[key] for r in real.values()]
    return {"twin": {"p05": p05, "median": med, "p95": p95, "n": int(tw.size)}, "real": real,
            "above_twin_p95": {"n": int(sum(a > p95 for a in values)), "of": len(values)},
            "below_twin_p05": {"n": int(sum(a < p05 for a in values)), "of": len(values)}}


def aspect_comparison(twin_aspects: Sequence[float], real_aspects: Mapping[str, float]) -> dict | None:
    """The real chest films' thorax aspect (:func:`thorax_aspect`) within the twin's distribution.

    ``{"twin": {"p05", "median", "p95", "n"}, "real": {file: {"aspect", "twin_percentile"}},
    "above_twin_p95": {"n", "of"}, "below_twin_p05": {"n", "of"}}``; ``twin_percentile`` is the percentage
    of twin images with a smaller aspect. None without twin aspects; ``real`` empty without real films.
    """
    return _within_twin(twin_aspects, real_aspects, "aspect")


def spine_offset_comparison(twin_offsets: Sequence[float], real_offsets: Mapping[str, float]) -> dict | None:
    """The real chest films' spine offset (:func:`spine_offset`) within the twin's distribution; the layout
    of :func:`aspect_comparison` with ``offset`` for ``aspect``."""
    return _within_twin(twin_offsets, real_offsets, "offset")


# ------------------------------------------------------------------------------ summary and text


def slope_summary(twin_slopes: Sequence[float], real_slopes: Sequence[float]) -> dict[str, float | bool | None]:
    """``{twin, real_min, real_max, twin_within_real}``: the twin's median slope over its images, the range
    over the real chest films, and whether the first lies within the second; None where a value cannot
    be computed (no twin images, no real films)."""
    tw = np.asarray([s for s in twin_slopes if np.isfinite(s)], dtype=np.float64)
    re = np.asarray([s for s in real_slopes if np.isfinite(s)], dtype=np.float64)
    twin = float(np.median(tw)) if tw.size else None
    lo, hi = (float(re.min()), float(re.max())) if re.size else (None, None)
    within = bool(lo <= twin <= hi) if twin is not None and lo is not None else None
    return {"twin": twin, "real_min": lo, "real_max": hi, "twin_within_real": within}


def realdata_block(present: bool, plausibility: pd.DataFrame | None = None,
                   rib_margin: pd.DataFrame | None = None,
                   slopes: Mapping[str, float | bool | None] | None = None,
                   aspect: Mapping | None = None, spine: Mapping | None = None) -> dict:
    """The ``realdata`` block of ``summary.json``.

    Keys: ``present`` (the real-data folder was found); ``chest_pass`` and ``non_chest_flagged``
    (``{"n", "of"}``, :func:`plausibility_counts`); ``plausibility_score`` (file → the detector's combined
    score, > 1 flagged, for every film it ran on); ``plausibility_components`` (file → its per-component
    scores, or None); ``chest_worst_component`` (:func:`worst_component_counts` of the chest films);
    ``chexmask_rib_margin_pct`` (``{mean, max}`` of :func:`rib_margin_distances`, % of the image width);
    ``spectral_slope`` (:func:`slope_summary`); ``thorax_aspect`` (:func:`aspect_comparison`);
    ``spine_offset`` (:func:`spine_offset_comparison`). Whatever
    cannot be computed (no folder, no CheXmask files, no twin) is None (JSON null).
    """
    counts = plausibility_counts(plausibility) if present and plausibility is not None else None
    scores = components = worst = None
    if present and plausibility is not None:
        scores = {str(f): (float(s) if np.isfinite(s) else None)
                  for f, s in zip(plausibility["file"], plausibility["score"], strict=True)}
        comp = plausibility[list(PLAUSIBILITY_COMPONENTS)].to_numpy(dtype=np.float64)
        components = {str(f): ({k: float(v) for k, v in zip(PLAUSIBILITY_COMPONENTS, row, strict=True)}
                               if np.isfinite(row).all() else None)
                      for f, row in zip(plausibility["file"], comp, strict=True)}
        worst = worst_component_counts(plausibility)
    rib = None
    if present and rib_margin is not None and len(rib_margin):
        d = rib_margin["distance_pct"].to_numpy(dtype=np.float64)
        rib = {"mean": float(np.mean(d)), "max": float(np.max(d))}
    slope = {key: (slopes or {}).get(key) for key in ("twin", "real_min", "real_max", "twin_within_real")}
    return {
        "present": bool(present),
        "chest_pass": counts["chest_pass"] if counts else None,
        "non_chest_flagged": counts["non_chest_flagged"] if counts else None,
        "plausibility_score": scores,
        "plausibility_components": components,
        "chest_worst_component": worst,
        "chexmask_rib_margin_pct": rib,
        "spectral_slope": _twin_side_only(slope, present, ("real_min", "real_max", "twin_within_real")),
        "thorax_aspect": (None if aspect is None else
                          _twin_side_only(aspect, present, ("real", "above_twin_p95", "below_twin_p05"))),
        "spine_offset": (None if spine is None else
                         _twin_side_only(spine, present, ("real", "above_twin_p95", "below_twin_p05"))),
    }


def _twin_side_only(block: Mapping, present: bool, real_keys: Sequence[str]) -> dict:
    """A block comparing the twin with real films, its real side nulled when the real-data folder is absent
    (whatever was passed for it then describes no real film)."""
    return {**block, **({} if present else dict.fromkeys(real_keys))}


def slope_sentence(slopes: Mapping[str, float | bool | None]) -> str:
    """One sentence from :func:`slope_summary`: the twin's slope against the real range."""
    twin, lo, hi = slopes.get("twin"), slopes.get("real_min"), slopes.get("real_max")
    if twin is None:
        return "The twin's lung-field spectral slope could not be computed."
    if lo is None or hi is None:
        return (f"The twin's lung-field spectral slope is {num(twin, 2)}; no real chest film gave a slope to "
                f"compare it with.")
    if slopes.get("twin_within_real"):
        return (f"The twin's lung-field spectral slope ({num(twin, 2)}) lies within the range of the real chest "
                f"films ({num(lo, 2)} to {num(hi, 2)}): by this one measure its lung texture shares power "
                f"between coarse and fine scales as real lung texture does.")
    if twin < lo:
        how = "steeper than real lung texture (too much coarse, too little fine structure)"
    else:
        how = "flatter than real lung texture (too little coarse, too much fine structure)"
    return (f"The twin's lung-field spectral slope ({num(twin, 2)}) lies outside the range of the real chest "
            f"films ({num(lo, 2)} to {num(hi, 2)}): its texture is {how}.")


def plausibility_sentence(table: pd.DataFrame) -> str:
    """One sentence from :func:`plausibility_table`: what passes and what is flagged, naming the films
    that miss their expected verdict."""
    counts = plausibility_counts(table)
    cp, nf = counts["chest_pass"], counts["non_chest_flagged"]
    text = (f"The twin-trained detector passed {cp['n']} of {cp['of']} real chest films and flagged "
            f"{nf['n']} of {nf['of']} non-chest images and test patterns")
    missed = table[table["expected"].astype(bool) & ~table["as_expected"]]
    if missed.empty:
        return text + ", as it should."
    names = ", ".join(f"{Path(str(f)).name} ({r.replace('_', '-')}: {s})"
                      for f, r, s in zip(missed["file"], missed["role"], missed["status"], strict=True))
    return text + f"; against expectation: {names}."


_COMPONENT_WORDS = {"appearance": "the image's layout at the scale of organs",
                    "local": "the image around the detected points",
                    "shape": "the configuration of the detected points"}


def shape_sentence(table: pd.DataFrame | None, aspect: Mapping | None, spine: Mapping | None = None) -> str:
    """What still differs, computed: which plausibility component scores the real chest films worst, and
    where their thorax aspect (:func:`thorax_aspect`) and spine offset (:func:`spine_offset`) fall in the
    twin's distribution. Empty when none can be said."""
    parts = []
    if table is not None:
        worst = worst_component_counts(table)
        n = sum(worst.values())
        if n:
            top = max(worst, key=worst.get)
            parts.append(f"For {worst[top]} of {n} real chest films the largest part of the plausibility score is "
                         f"{top} ({_COMPONENT_WORDS[top]}), against the twin's validation images.")
    if aspect is not None and aspect.get("real"):
        tw = aspect["twin"]
        real = sorted(r["aspect"] for r in aspect["real"].values())
        up, down = aspect["above_twin_p95"], aspect["below_twin_p05"]
        text = (f"The real films' thorax aspect (clavicle-to-T12 height over the rib-cage width at the third rib "
                f"point, from the detector's points) is {num(real[0], 2)}–{num(real[-1], 2)}, against the twin's "
                f"median {num(tw['median'], 2)} (5th–95th percentile {num(tw['p05'], 2)}–{num(tw['p95'], 2)}, "
                f"ground truth)")
        if up["n"] or down["n"]:
            text += (f": {up['n']} of {up['of']} lie above the twin's 95th percentile and {down['n']} below its "
                     f"5th — real thoraces are {'taller for their width' if up['n'] >= down['n'] else 'wider for their height'}"
                     f" than most of the twin's.")
        else:
            text += ": all lie within the twin's 5th–95th percentile."
        parts.append(text)
    if spine is not None and spine.get("real"):
        tw = spine["twin"]
        real = sorted(r["offset"] for r in spine["real"].values())
        outside = spine["above_twin_p95"]["n"] + spine["below_twin_p05"]["n"]
        parts.append(
            f"The real films' spine offset (the cervical point from the mid-point of the clavicles' medial ends, "
            f"over the rib-cage width; a sign of a rotated patient) is {num(real[0], 3)} to {num(real[-1], 3)}, "
            f"against the twin's 5th–95th percentile {num(tw['p05'], 3)} to {num(tw['p95'], 3)}: {outside} of "
            f"{len(real)} lie outside it.")
    return " ".join(parts)
