"""Real radiographs as the yardstick for the twin (the ``realdata`` block of summary.json): one call, made
once per build by the cohort chapter.

:func:`real_film_study` reads the public sample films (:func:`bmd.infra.paths.realdata_dir`, or a folder
given), runs the cohort's landmark detector on every film, and measures with
:mod:`bmd.evaluation.realfilms`: intensity histograms and lung-field power spectra of twin images (ground-truth
landmarks) and real chest films (the detector's points), the detector's verdicts, and the distance of its
rib-cage points to the CheXmask lung outline. It records the ``realdata`` block of ``summary.json``. The
cohort chapter shows both the twin-against-real comparison and the detector's side from the one result
(reading the films and running the detector once per build).

Without the folder (a user's clone) nothing is read, the detector is not even asked for, and the block says
``present: false`` with nulls where real films are needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bmd.columns import N_LANDMARKS
from bmd.evaluation import realfilms as rf
from bmd.infra import paths
from bmd.io import ImageReadError, read_image
from bmd.landmarks.annotations import manifest_landmarks
from bmd.landmarks.detector import predict_landmarks
from bmd.study import stages, summary
from bmd.study.cohort import Cohort
from bmd.study.config import Profile

#: Twin images measured: the first test-split cases. Their lung-field spectral slopes spread over about
#: ±0.5 (10th-90th percentile), so the median of 8 moved by ±0.2 between cohorts, as much as the real
#: films' range is wide; 48 pin it to about ±0.08.
N_TWIN_IMAGES = 48
#: Twin images listed one by one in the texture table (the slope summary uses all of them).
N_TWIN_LISTED = 8


@dataclass
class Film:
    """One image as measured: ``image`` normalised to [0, 1] by its own percentiles (float32), its 16
    ``points`` (ground truth for the twin, the detector's for real films), pixel spacing and its source
    (``header`` or ``assumed``), the lung squares, their radial spectrum, its slope and the intensity
    histogram (bin centres, density)."""

    name: str
    source: str  # twin | real
    role: str
    image: np.ndarray
    points: np.ndarray
    spacing_mm: float
    spacing_source: str
    squares: list[rf.Square]
    spectrum: rf.RadialSpectrum | None
    slope: float
    histogram: tuple[np.ndarray, np.ndarray]

    @property
    def label(self) -> str:
        """A short name for figures: the file name of a real film, the case id of a twin image."""
        return Path(self.name).name


@dataclass
class RealFilmStudy:
    """Everything the two chapters show about real films (see :func:`real_film_study`).

    ``plausibility``: :func:`bmd.evaluation.realfilms.plausibility_table` of every film the detector ran on
    (chest, non-chest, pattern, unlisted); ``rib_margin``: :func:`~bmd.evaluation.realfilms.rib_margin_distances`
    on the CheXmask film (None without it); ``chexmask_inside``: the fraction of that film's lung squares
    inside its annotated lungs; ``slopes``: :func:`~bmd.evaluation.realfilms.slope_summary`; ``block``: the
    ``realdata`` block written to ``summary.json``; ``aspect``: :func:`~bmd.evaluation.realfilms.aspect_comparison`
    of the real chest films' thorax aspect against every twin image's (None without a twin); ``spine``: the
    same for the spine offset (:func:`~bmd.evaluation.realfilms.spine_offset_comparison`).
    """

    folder: Path | None
    twin: list[Film] = field(default_factory=list)
    real: list[Film] = field(default_factory=list)
    plausibility: pd.DataFrame | None = None
    rib_margin: pd.DataFrame | None = None
    chexmask_inside: float = float("nan")
    slopes: dict = field(default_factory=dict)
    aspect: dict | None = None
    spine: dict | None = None
    block: dict = field(default_factory=dict)

    @property
    def present(self) -> bool:
        """Whether the real-data folder was found."""
        return self.folder is not None

    def texture_table(self) -> pd.DataFrame:
        """One row per real film and per listed twin image (the first :data:`N_TWIN_LISTED`): ``source``,
        ``image``, ``spacing_mm``, ``spacing`` (``header`` or ``assumed``), ``square_mm`` (side of the lung
        squares), ``band`` (cycles/mm of the slope fit) and ``slope``."""
        rows = []
        for film in [*self.twin[:N_TWIN_LISTED], *self.real]:
            band = rf.slope_band(film.spectrum) if film.spectrum is not None else (np.nan, np.nan)
            square_mm = film.squares[0].side * film.spacing_mm if film.squares else np.nan
            rows.append({"source": film.source, "image": film.label, "spacing_mm": round(film.spacing_mm, 3),
                         "spacing": film.spacing_source, "square_mm": round(square_mm, 1),
                         "band": f"{band[0]:.3f}–{band[1]:.3f}" if np.isfinite(band[0]) else "n/a",
                         "slope": round(film.slope, 2) if np.isfinite(film.slope) else np.nan})
        columns = ["source", "image", "spacing_mm", "spacing", "square_mm", "band", "slope"]
        return pd.DataFrame(rows, columns=columns)

    def availability_sentence(self) -> str:
        """What is compared: the number of real chest films and twin images, and how much of the CheXmask
        film's lung squares lies inside its outlined lungs (a check of the lung-field placement)."""
        if not self.present:
            return absent_sentence()
        twin = (f"{len(self.twin)} twin test images" if self.twin
                else "no twin images (this cohort is not the twin, or has no landmarks)")
        text = f"Here {len(self.real)} real chest films are compared with {twin}."
        if np.isfinite(self.chexmask_inside):
            text += (f" On the CheXmask film, whose lungs are outlined, {100 * self.chexmask_inside:.0f} % of "
                     f"the lung-square pixels placed from the detector's points lie inside the outlined lungs.")
        return text

    def slope_sentence(self) -> str:
        """The computed sentence on the twin's slope against the real range; empty without real films (the
        chapter says once that they are absent, :meth:`availability_sentence`)."""
        if not self.present:
            return ""
        return rf.slope_sentence(self.slopes)

    def plausibility_sentence(self) -> str:
        """The computed sentence on what the detector passes and flags (or why there is none)."""
        if not self.present or self.plausibility is None:
            return absent_sentence()
        return rf.plausibility_sentence(self.plausibility)

    def shape_sentence(self) -> str:
        """The computed sentence on what still differs in shape: the chest films' worst plausibility
        component and their thorax aspect against the twin's (empty without real films)."""
        if not self.present:
            return ""
        return rf.shape_sentence(self.plausibility, self.aspect, self.spine)

    def rib_margin_sentence(self) -> str:
        """The computed sentence on the CheXmask rib-margin distance (empty when not measured)."""
        if self.rib_margin is None or not len(self.rib_margin):
            return ""
        d = self.rib_margin["distance_pct"]
        return (f"On the CheXmask film the detector's eight rib-cage points lie on average {d.mean():.1f} % of "
                f"the image width (at most {d.max():.1f} %) from the annotated lung outline of the same side.")


def absent_sentence() -> str:
    """What a chapter says when the real-data folder is absent."""
    return "No real radiographs folder is present in this build, so nothing here is measured on real films."


def _film(name: str, source: str, role: str, image: np.ndarray, spacing: tuple[float, float] | None,
          points: np.ndarray) -> Film:
    """Measure one image (reader output) with its 16 points."""
    norm = rf.normalise_percentiles(image).astype(np.float32)
    spacing_mm, spacing_source = rf.pixel_spacing_mm(spacing, norm.shape[1])
    squares = rf.lung_squares(points, norm.shape)
    spectrum = rf.radial_power_spectrum([sq.cut(norm) for sq in squares], spacing_mm) if squares else None
    slope = rf.spectral_slope(spectrum) if spectrum is not None else float("nan")
    return Film(name, source, role, norm, np.asarray(points, dtype=np.float64), spacing_mm, spacing_source,
                squares, spectrum, slope, rf.intensity_histogram(norm))


def twin_truth(cohort: Cohort) -> pd.DataFrame | None:
    """The twin's ground-truth landmarks (``case_id`` + 32 columns, :func:`manifest_landmarks`), read once
    for both twin measurements; None for a site's manifest (it is no twin) or a cohort without landmarks."""
    return manifest_landmarks(cohort.manifest) if cohort.is_twin else None


def twin_points(truth: pd.DataFrame | None) -> np.ndarray:
    """Every twin image's ground-truth landmarks (:func:`twin_truth`) as ``(N, 16, 2)``; empty without any."""
    if truth is None:
        return np.zeros((0, N_LANDMARKS, 2))
    return truth.drop(columns="case_id").to_numpy(dtype=np.float64).reshape(-1, N_LANDMARKS, 2)


def twin_films(cohort: Cohort, truth: pd.DataFrame | None, n: int = N_TWIN_IMAGES) -> list[Film]:
    """The first ``n`` test-split twin images with ground-truth landmarks (:func:`twin_truth`), measured;
    empty without any."""
    if truth is None:
        return []
    truth = truth.set_index("case_id")
    manifest = cohort.manifest
    cases = manifest[(manifest["split"] == "test") & manifest["case_id"].isin(truth.index)].head(n)
    out = []
    for case_id, image_path in zip(cases["case_id"], cases["image_path"], strict=True):
        image, meta = read_image(image_path)
        out.append(_film(str(case_id), "twin", "chest", image, meta.spacing,
                         truth.loc[case_id].to_numpy(dtype=np.float64).reshape(-1, 2)))
    return out


def _read_films(folder: Path) -> tuple[pd.DataFrame, list[np.ndarray], list[tuple[float, float] | None]]:
    """The films the detector runs on (table roles chest, non-chest and pattern, then readable unlisted
    files), their images and their spacings; unreadable files are left out."""
    table = rf.film_table(folder, roles=("chest", *rf.FLAG_ROLES))
    unlisted = rf.unlisted_files(folder)
    extra = pd.DataFrame({"file": [p.relative_to(folder).as_posix() for p in unlisted], "role": rf.UNLISTED,
                          "what": "", "path": unlisted})
    films = pd.concat([table, extra], ignore_index=True) if len(extra) else table
    keep, images, spacings = [], [], []
    for i, path in enumerate(films["path"]):
        try:
            image, meta = read_image(path)
        except ImageReadError:  # not an image (a stray file in a user's folder): nothing to test
            continue
        keep.append(i)
        images.append(image)
        spacings.append(meta.spacing)
    return films.iloc[keep].reset_index(drop=True), images, spacings


def real_film_study(cfg: Profile, cohort: Cohort, out: str | Path | None = None, folder: str | Path | None = None,
                    detector: Path | None = None) -> RealFilmStudy:
    """Measure the twin against the real films and the detector on them; record ``summary.json``'s
    ``realdata`` block.

    ``folder``: the real films (default :func:`bmd.infra.paths.realdata_dir`); ``detector``: the detector's
    folder, or None to get the cohort's (:func:`bmd.study.stages.landmark_detector`, trained once and
    reused) only when there are real films to run it on.
    """
    folder = Path(folder) if folder is not None else paths.realdata_dir()
    folder = folder if folder is not None and folder.is_dir() else None
    truth = twin_truth(cohort)
    study = RealFilmStudy(folder=folder, twin=twin_films(cohort, truth))
    real_slopes: list[float] = []
    if folder is not None:
        films, images, spacings = _read_films(folder)
        if detector is None:
            detector = stages.landmark_detector(cfg, cohort, out)
        pred = predict_landmarks(detector, images)
        study.plausibility = rf.plausibility_table(films, pred.status, pred.plausibility, pred.score, pred.reason,
                                                   [d.components if d is not None else None for d in pred.details])
        for i, (name, role) in enumerate(zip(films["file"], films["role"], strict=True)):
            if role == "chest":
                study.real.append(_film(name, "real", role, images[i], spacings[i], pred.points[i]))
        real_slopes = [f.slope for f in study.real]
        contours = rf.read_chexmask_contours(folder)
        chex = [f for f in study.real if f.name == rf.CHEXMASK_IMAGE]
        if contours is not None and chex:
            study.rib_margin = rf.rib_margin_distances(chex[0].points, contours, chex[0].image.shape[1])
            study.chexmask_inside = rf.fraction_inside(chex[0].squares, contours)
    study.slopes = rf.slope_summary([f.slope for f in study.twin], real_slopes)
    points = twin_points(truth)
    study.aspect = rf.aspect_comparison(rf.thorax_aspect(points),
                                        {f.name: float(rf.thorax_aspect(f.points)) for f in study.real})
    study.spine = rf.spine_offset_comparison(rf.spine_offset(points),
                                             {f.name: float(rf.spine_offset(f.points)) for f in study.real})
    study.block = rf.realdata_block(study.present, study.plausibility, study.rib_margin, study.slopes,
                                    study.aspect, study.spine)
    record(summary.summary_path(cfg.profile, out), study.block)
    return study


def record(path: str | Path, block: dict) -> dict:
    """Write the ``realdata`` block to ``summary.json``, replacing any earlier one whole (a merge would keep
    the scores of files no longer there)."""
    summary.update(path, realdata=None)
    return summary.update(path, realdata=block)
