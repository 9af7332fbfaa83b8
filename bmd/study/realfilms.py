"""The twin against real radiographs: the detector on real films, their lung-field spectra and histograms.

One call (:func:`realfilm_results`) reads the public real radiographs (:mod:`bmd.evaluation.realfilms`
names them), runs the twin-trained detector on them, compares the lung-field power spectra and the
intensity histograms of real chest films with a sample of twin test images, measures the detected rib
margin against the CheXmask contours, and records the ``realdata`` block of ``summary.json``. Without
the folder it records ``present: false`` and nulls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bmd.columns import COORD_COLUMNS
from bmd.evaluation import realfilms
from bmd.infra import paths
from bmd.io import ImageReadError, read_image
from bmd.landmarks.annotations import manifest_landmarks
from bmd.landmarks.detector import predict_landmarks
from bmd.study import summary
from bmd.study.cohort import Cohort
from bmd.study.config import Profile

#: Twin test images whose lung fields stand for the twin (the first of the test split).
TWIN_SAMPLE = 24
_NOT_IMAGES = {".txt", ".md", ".csv", ".json", ".py"}


@dataclass
class RealFilmResults:
    """What :func:`realfilm_results` found. ``files``: one row per real file (``file``, ``role``,
    ``status``, ``plausibility``, ``score``, ``spacing_mm``, ``slope``); ``images``/``points``: the real
    films in ``files`` order (normalised images, detected points); ``spectra``: ``source`` → (frequency
    in cycles/mm, power), ``source`` a real file or ``twin``; ``histograms``: the same for the intensity
    histograms; ``block``: the ``realdata`` block of ``summary.json``."""

    files: pd.DataFrame
    images: list[np.ndarray] = field(default_factory=list)
    points: np.ndarray | None = None
    spectra: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    twin_images: list[np.ndarray] = field(default_factory=list)
    twin_spacing_mm: float = float("nan")
    histograms: dict[str, np.ndarray] = field(default_factory=dict)
    block: dict = field(default_factory=dict)


def _empty_block(present: bool) -> dict:
    return {"present": present, "chest_pass": None, "chest_total": None, "non_chest_flagged": None,
            "non_chest_total": None, "plausibility_score": {}, "chexmask_rib_margin_pct": None,
            "spectral_slope": None}


def _ct_slice() -> list[realfilms.RealFile]:
    """pydicom's bundled CT slice, a further non-chest image (absolute path; empty without pydicom's data)."""
    try:
        from pydicom.data import get_testdata_file

        found = get_testdata_file("CT_small.dcm")
    except Exception:  # noqa: BLE001 - pydicom's test data is optional
        return []
    return [realfilms.RealFile(str(found), "non_chest")] if found else []


def _twin_sample(cohort: Cohort) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
    test = cohort.manifest[cohort.manifest["split"] == "test"].head(TWIN_SAMPLE)
    marks = manifest_landmarks(test)
    if marks is None:
        return [], [], []
    marks = marks.set_index("case_id")
    images, points, spacings = [], [], []
    for _, case in test.iterrows():
        if case["case_id"] not in marks.index:
            continue
        image, meta = read_image(case["image_path"])
        images.append(image)
        points.append(marks.loc[case["case_id"], list(COORD_COLUMNS)].to_numpy(float).reshape(16, 2))
        spacings.append(realfilms.spacing_or_assumed(meta.spacing[1] if meta.spacing else None, image.shape[1]))
    return images, points, spacings


def realfilm_results(cfg: Profile, cohort: Cohort, detector: str | Path, out: str | Path | None = None,
                     folder: str | Path | None = None) -> RealFilmResults:
    """Run the detector on the real radiographs and compare them with the twin; records ``realdata``."""
    folder = Path(folder) if folder is not None else paths.realdata_dir()
    files = realfilms.available_files(folder)
    path = summary.summary_path(cfg.profile, out)
    if folder is None or not folder.is_dir():
        block = _empty_block(False)
        summary.update(path, realdata=block)
        return RealFilmResults(files=pd.DataFrame(columns=["file", "role", "status", "plausibility", "score",
                                                           "spacing_mm", "slope"]), block=block)
    rows, images = [], []
    for f in [*files, *_ct_slice()]:
        try:
            image, meta = read_image(folder / f.relative)
        except ImageReadError:
            continue  # listed but unreadable here: left out of the comparison, not an error of the study
        spacing = realfilms.spacing_or_assumed(meta.spacing[1] if meta.spacing else None, image.shape[1])
        name = f.relative if not Path(f.relative).is_absolute() else "pydicom:" + Path(f.relative).name
        rows.append({"file": name, "role": f.role, "spacing_mm": spacing})
        images.append(image)
    known = {str(Path(folder) / f.relative) for f in files}
    for extra in sorted(Path(folder).rglob("*")):  # anything else in the folder that reads as an image
        annotation = extra.stem.endswith("_mask")  # CheXmask's label masks are not radiographs
        if extra.is_file() and str(extra) not in known and extra.suffix.lower() not in _NOT_IMAGES and not annotation:
            try:
                image, meta = read_image(extra)
            except ImageReadError:
                continue
            rows.append({"file": str(extra.relative_to(folder)), "role": "unlabelled",
                         "spacing_mm": realfilms.spacing_or_assumed(meta.spacing[1] if meta.spacing else None,
                                                                   image.shape[1])})
            images.append(image)
    pred = predict_landmarks(detector, images)
    frame = pd.DataFrame(rows)
    frame["status"] = pred.status
    frame["plausibility"] = np.round(pred.plausibility, 4)
    frame["score"] = np.round(pred.score, 3)
    spectra, histograms, slopes = {}, {}, []
    for i, row in frame.iterrows():
        slope = float("nan")
        if row["role"] == "chest":
            freq, power = realfilms.lung_spectrum(images[i], pred.points[i], row["spacing_mm"])
            spectra[row["file"]] = (freq, power)
            histograms[row["file"]] = realfilms.intensity_histogram(images[i])
            slope = realfilms.spectral_slope(freq, power)
        slopes.append(slope)
    frame["slope"] = np.round(slopes, 3)

    twin_images, twin_points, twin_spacings = _twin_sample(cohort) if cohort.is_twin else ([], [], [])
    twin_slopes = []
    if twin_images:
        curves = [realfilms.lung_spectrum(im, pts, sp) for im, pts, sp in zip(twin_images, twin_points,
                                                                                twin_spacings, strict=True)]
        curves = [c for c in curves if len(c[0])]
        grid = curves[0][0]
        spectra["twin"] = (grid, np.exp(np.mean([np.log(np.interp(grid, f, p)) for f, p in curves], axis=0)))
        twin_slopes = [realfilms.spectral_slope(f, p) for f, p in curves]
        histograms["twin"] = np.mean([realfilms.intensity_histogram(im) for im in twin_images], axis=0)

    chest = frame[frame["role"] == "chest"]
    other = frame[frame["role"].isin(["non_chest", "pattern"])]
    real_slopes = chest["slope"].dropna()
    twin_slope = float(np.median(twin_slopes)) if twin_slopes else None
    block = _empty_block(True)
    block.update({
        "chest_pass": int((chest["status"] == "ok").sum()), "chest_total": len(chest),
        "non_chest_flagged": int((other["status"] != "ok").sum()), "non_chest_total": len(other),
        "plausibility_score": dict(zip(frame["file"], frame["score"].astype(float), strict=True)),
    })
    if len(real_slopes):
        block["spectral_slope"] = {
            "twin": twin_slope, "twin_images": len(twin_slopes),
            "real_min": float(real_slopes.min()), "real_max": float(real_slopes.max()),
            "twin_within_real": None if twin_slope is None else bool(real_slopes.min() <= twin_slope <= real_slopes.max()),
            "band_cycles_per_mm": list(realfilms.SLOPE_BAND),
        }
    if realfilms.CHEXMASK_IMAGE in set(frame["file"]) and all(
            (folder / c).is_file() for c in realfilms.CHEXMASK_CONTOURS.values()):
        i = int(np.flatnonzero(frame["file"] == realfilms.CHEXMASK_IMAGE)[0])
        contours = {tag: realfilms.read_contour(folder / c) for tag, c in realfilms.CHEXMASK_CONTOURS.items()}
        block["chexmask_rib_margin_pct"] = realfilms.rib_margin_distance(pred.points[i], contours,
                                                                         images[i].shape[1])
    summary.update(path, realdata=block)
    return RealFilmResults(files=frame, images=[realfilms.normalise(im) for im in images], points=pred.points,
                           spectra=spectra, histograms=histograms, block=block,
                           twin_images=[realfilms.normalise(im) for im in twin_images[:2]],
                           twin_spacing_mm=float(twin_spacings[0]) if twin_spacings else float("nan"))


def realdata_sentence(block: dict) -> str:
    """What passes, what is flagged and how the twin's lung-field spectrum compares, in words, from the
    ``realdata`` block."""
    if not block.get("present"):
        return "No real radiographs were available to compare the twin with."
    parts = [f"{block['chest_pass']} of {block['chest_total']} real chest films pass the plausibility check "
             f"and {block['non_chest_flagged']} of {block['non_chest_total']} non-chest images and patterns "
             "are flagged."]
    margin = block.get("chexmask_rib_margin_pct")
    if margin:
        parts.append(f"On the CheXmask example the detected rib-cage points lie {margin['mean']:.2f}% of the "
                     f"image width (at most {margin['max']:.2f}%) from the annotated lung contours.")
    slope = block.get("spectral_slope")
    if slope and slope.get("twin") is not None:
        where = "inside" if slope["twin_within_real"] else "outside"
        parts.append(f"The twin's lung-field spectral slope, {slope['twin']:.2f}, lies {where} the real films' "
                     f"range ({slope['real_min']:.2f} to {slope['real_max']:.2f}).")
    return " ".join(parts)
