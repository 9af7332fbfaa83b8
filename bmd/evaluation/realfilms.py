"""Real radiographs as the twin's yardstick: which files are which, and what to compare.

The folder of public real radiographs (:func:`bmd.infra.paths.realdata_dir`; not in the repository) holds
five frontal chest films, non-chest radiographs and a synthetic test pattern. This module knows their
roles (:data:`ROLES`) and computes what a twin image should share with a real chest film:

* the intensity histogram of the image normalised by its own 0.5th/99.5th percentiles;
* the radial (azimuthally averaged) power spectrum of the lung field and its slope: the least-squares
  slope of log power against log frequency over :data:`SLOPE_BAND` (0.05–0.25 cycles/mm, structures of
  4–20 mm: vessels, rib edges, the texture of the lung field — above the finest detail that a 512-px
  twin or a down-sampled real film can hold). The lung field is two boxes, one per lung, placed from the
  16 landmarks (:func:`lung_boxes`);
* on the CheXmask example, the distance from each detected rib-cage point to the annotated lung contour
  of its side (:func:`rib_margin_distance`).

Pixel spacing: DICOM files carry it (or not); PNG/JPEG films are assumed to span
:data:`ASSUMED_FIELD_MM` across, the usual chest field. Everything here is pure numpy on images and
points: the detector runs in :mod:`bmd.study.realfilms`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bmd.columns import LANDMARK_NAMES

#: Relative path (inside the real-data folder) → role: ``chest`` (a frontal chest film), ``non_chest``
#: (a radiograph of something else) or ``pattern`` (a synthetic test image).
ROLES: dict[str, str] = {
    "torchxrayvision/00000001_000.png": "chest",
    "torchxrayvision/00027426_000.png": "chest",
    "CheXmask-Database/Example/utils_example1.jpg": "chest",
    "pydicom-data/RG1_J2KI.dcm": "chest",
    "fo-dicom/CR-MONO1-10-chest": "chest",
    "pydicom-data/RG3_J2KR.dcm": "non_chest",
    "pydicom-data/RG3_J2KI.dcm": "non_chest",
    "fo-dicom/CR-ModalitySequenceLUT.dcm": "non_chest",
    "fo-dicom/GH133.dcm": "non_chest",
    "pydicom-data/vlut_04.dcm": "pattern",
}
#: The CheXmask example and its annotated lung contours (patient's right lung, left lung).
CHEXMASK_IMAGE = "CheXmask-Database/Example/utils_example1.jpg"
CHEXMASK_CONTOURS = {"r": "CheXmask-Database/Example/RL_landmarks.txt", "l": "CheXmask-Database/Example/LL_landmarks.txt"}
#: Field width assumed for films without a pixel spacing (mm).
ASSUMED_FIELD_MM = 350.0
#: Frequency band of the spectral slope (cycles/mm).
SLOPE_BAND = (0.05, 0.25)


@dataclass(frozen=True)
class RealFile:
    """One file of the real-data folder: its path relative to the folder and its role."""

    relative: str
    role: str


def available_files(folder: str | Path | None) -> list[RealFile]:
    """The files of :data:`ROLES` present in ``folder`` (none when the folder is absent)."""
    if folder is None or not Path(folder).is_dir():
        return []
    return [RealFile(rel, role) for rel, role in ROLES.items() if (Path(folder) / rel).is_file()]


def normalise(image: np.ndarray) -> np.ndarray:
    """The image scaled to [0, 1] by its own 0.5th and 99.5th percentiles."""
    x = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(x[:: max(1, x.shape[0] // 256), :: max(1, x.shape[1] // 256)], [0.5, 99.5])
    return np.clip((x - lo) / max(float(hi - lo), 1e-6), 0, 1)


def intensity_histogram(image: np.ndarray, bins: int = 32) -> np.ndarray:
    """Share of pixels in each of ``bins`` equal bins of the normalised image (sums to 1)."""
    counts, _ = np.histogram(normalise(image), bins=bins, range=(0, 1))
    return counts / max(counts.sum(), 1)


def lung_boxes(points: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Two boxes ``(x0, y0, x1, y1)`` inside the lungs from the 16 landmarks (pixel coordinates).

    Per side: horizontally from 30% to 80% of the way from the spine (the cervical and T12 points'
    mean x) to the rib-cage margin at the second rib-cage point; vertically from the first to the third
    rib-cage point — the mid-lung field, clear of the mediastinum, the apex and the diaphragm.
    """
    p = dict(zip(LANDMARK_NAMES, np.asarray(points, dtype=float), strict=True))
    spine = 0.5 * (p["cervical"][0] + p["t12"][0])
    boxes = []
    for tag in ("r", "l"):
        margin = p[f"rib_{tag}_2"][0]
        xa, xb = sorted((spine + 0.3 * (margin - spine), spine + 0.8 * (margin - spine)))
        ya, yb = sorted((p[f"rib_{tag}_1"][1], p[f"rib_{tag}_3"][1]))
        boxes.append((int(round(xa)), int(round(ya)), int(round(xb)), int(round(yb))))
    return boxes


def radial_power_spectrum(patch: np.ndarray, spacing_mm: float, n_bins: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """(frequency in cycles/mm, mean power) of a patch: mean removed, Hann-windowed, azimuthally averaged
    in log-spaced frequency bins (empty bins dropped)."""
    x = np.asarray(patch, dtype=np.float64)
    x = x - x.mean()
    window = np.outer(np.hanning(x.shape[0]), np.hanning(x.shape[1]))
    power = np.abs(np.fft.fftshift(np.fft.fft2(x * window))) ** 2 / window.sum() ** 2
    fy = np.fft.fftshift(np.fft.fftfreq(x.shape[0]))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(x.shape[1]))[None, :]
    radius = np.sqrt(fx**2 + fy**2) / spacing_mm  # cycles/mm
    edges = np.geomspace(1.0 / (max(x.shape) * spacing_mm), 0.5 / spacing_mm, n_bins + 1)
    which = np.digitize(radius.ravel(), edges) - 1
    ok = (which >= 0) & (which < n_bins)
    sums = np.bincount(which[ok], weights=power.ravel()[ok], minlength=n_bins)
    counts = np.bincount(which[ok], minlength=n_bins)
    centres = np.sqrt(edges[:-1] * edges[1:])
    keep = counts > 0
    return centres[keep], sums[keep] / counts[keep]


def spectral_slope(freq: np.ndarray, power: np.ndarray, band: tuple[float, float] = SLOPE_BAND) -> float:
    """Least-squares slope of log power against log frequency inside ``band`` (NaN with < 3 points)."""
    f, p = np.asarray(freq), np.asarray(power)
    ok = (f >= band[0]) & (f <= band[1]) & (p > 0)
    if ok.sum() < 3:
        return float("nan")
    return float(np.polyfit(np.log(f[ok]), np.log(p[ok]), 1)[0])


def lung_spectrum(image: np.ndarray, points: np.ndarray, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The lung field's radial power spectrum: both :func:`lung_boxes`, each spectrum on a common
    frequency grid, averaged (boxes smaller than 16 pixels a side are skipped)."""
    x = normalise(image)
    spectra = []
    for x0, y0, x1, y1 in lung_boxes(points):
        x0, y0 = max(x0, 0), max(y0, 0)
        patch = x[y0:y1, x0:x1]
        if min(patch.shape) >= 16:
            spectra.append(radial_power_spectrum(patch, spacing_mm))
    if not spectra:
        return np.array([]), np.array([])
    grid = np.geomspace(SLOPE_BAND[0] / 2, min(f.max() for f, _ in spectra), 24)
    power = np.mean([np.exp(np.interp(np.log(grid), np.log(f), np.log(p))) for f, p in spectra], axis=0)
    return grid, power


def spacing_or_assumed(spacing_mm: float | None, width_px: int) -> float:
    """The pixel spacing (mm), or :data:`ASSUMED_FIELD_MM` spread over the image width."""
    if spacing_mm is not None and np.isfinite(spacing_mm) and spacing_mm > 0:
        return float(spacing_mm)
    return ASSUMED_FIELD_MM / width_px


def read_contour(path: str | Path) -> np.ndarray:
    """An annotated contour file: one ``x y`` pixel pair per line → (n, 2)."""
    return np.loadtxt(path, dtype=float).reshape(-1, 2)


def polyline_distance(point: np.ndarray, contour: np.ndarray) -> float:
    """Distance from a point to a closed polyline (pixels)."""
    a = np.asarray(contour, dtype=float)
    b = np.roll(a, -1, axis=0)
    d = b - a
    t = np.clip(((point - a) * d).sum(axis=1) / np.maximum((d * d).sum(axis=1), 1e-12), 0, 1)
    return float(np.min(np.linalg.norm(a + t[:, None] * d - point, axis=1)))


def rib_margin_distance(points: np.ndarray, contours: dict[str, np.ndarray], width_px: float) -> dict[str, float]:
    """Distance (% of the image width) from the 8 detected rib-cage points to the lung contour of their own
    side (``contours``: ``"r"``/``"l"`` = the patient's right/left lung): ``mean`` and ``max``."""
    p = dict(zip(LANDMARK_NAMES, np.asarray(points, dtype=float), strict=True))
    d = [polyline_distance(p[f"rib_{tag}_{k}"], contours[tag]) for tag in ("r", "l") for k in range(1, 5)]
    pct = 100.0 * np.asarray(d) / width_px
    return {"mean": float(pct.mean()), "max": float(pct.max())}
