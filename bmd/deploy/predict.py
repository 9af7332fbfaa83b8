"""Lumbar BMD, T-scores and the WHO category from chest radiographs, with a model bundle.

:func:`predict_images` gives one row per input, in input order, with the contract columns
``image, status, reason, bmd_l1..bmd_l4, t_l1..t_l4, category, calibration`` followed by
``plausibility`` (and ``overlay`` when overlays are written):

* ``image``: the path as given (``name="file"``), or ``sha256:`` + the first 16 hex digits of the
  file's SHA-256 (``name="hash"``; an unreadable file is ``input-<n>``, its 1-based position). Never
  anything read from a header.
* ``status``: ``ok``; ``flagged`` — numbers are given but should not be used unread: the landmark
  detector's plausibility check says the image is unlike the training chest radiographs (reason from
  :mod:`bmd.landmarks.plausibility`), or the DICOM view position is not frontal (AP/PA); ``failed`` —
  no numbers: the file cannot be read (the reader's one-line reason), is smaller than the model's
  chest input (a chest is never upsampled), its landmarks are degenerate, or anything else went wrong
  for that image. Other images are processed regardless.
* ``bmd_l*``: predicted BMD in g/cm²; ``t_l*``: their T-scores with the bundle's reference table and
  sex (see :mod:`bmd.deploy.bundle`); ``category``: the WHO category (normal T ≥ −1, osteopenia, osteoporosis
  T ≤ the bundle's threshold) of the **lowest** vertebra T-score, the patient-level endpoint
  clinicians use (DESIGN §8). T-scores and categories are meant for people aged 50 and over and
  post-menopausal women.
* ``calibration``: ``validation-linear`` — the numbers went through the bundle's validation-split
  recalibration (:mod:`bmd.deploy.bundle`; a regression output shrinks towards the mean, so a category from
  the raw output under-calls osteoporosis); ``none`` — the network's raw output (``raw=True``, or a
  bundle without a calibration). T-scores, the category and the overlay title use the same numbers.

Crops are made exactly as the training cache made them: :func:`bmd.io.read_image`, the bundle's
landmark detector on the decoded array, :func:`bmd.rois.crop.crop_rois_batch` with the cache's geometry and
sides, then the cache's storage quantisation (:func:`bmd.rois.cache.encode`) and the training
loader's decoding (:func:`bmd.model.dataset.as_float`), so predictions match the run's own. Each image is
decoded once; landmarks, crops and the network run batched over ``batch_size`` images.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bmd.columns import VERTEBRAE
from bmd.deploy.bundle import UNCALIBRATED, Bundle, BundleError, load_bundle
from bmd.infra.atomic import atomic_path
from bmd.infra.digests import sha256_bytes, sha256_file
from bmd.inputs.tscores import t_score, who_category
from bmd.io import ImageReadError, read_image
from bmd.landmarks.detector import predict_landmarks
from bmd.model.dataset import as_float as _as_float
from bmd.model.dataset import select_family
from bmd.model.networks import MULTI_ROI_KINDS
from bmd.rois.cache import encode as _encode
from bmd.rois.crop import crop_rois_batch
from bmd.rois.draw import draw_rois

BMD_OUT = tuple(f"bmd_{v.lower()}" for v in VERTEBRAE)
T_OUT = tuple(f"t_{v.lower()}" for v in VERTEBRAE)
CONTRACT_COLUMNS: tuple[str, ...] = ("image", "status", "reason", *BMD_OUT, *T_OUT, "category", "calibration")
"""The columns every prediction table starts with, in this order."""
EXTRA_COLUMNS: tuple[str, ...] = ("plausibility",)
"""Non-identifying columns after the contract ones (``overlay`` follows when overlays are written)."""
NAMING = ("file", "hash")
FRONTAL_VIEWS = frozenset({"AP", "PA"})

ImageInput = str | os.PathLike | np.ndarray


@dataclass
class _Row:
    image: str
    status: str = "failed"
    reason: str = ""
    bmd: np.ndarray | None = None
    plausibility: float = float("nan")
    overlay: str = ""


def _label(item: ImageInput, index: int, name: str) -> str:
    """The ``image`` value of an input (never header data)."""
    if name == "file":
        return f"array[{index}]" if isinstance(item, np.ndarray) else str(item)
    if isinstance(item, np.ndarray):
        digest = sha256_bytes(np.ascontiguousarray(item, dtype=np.float32).tobytes())
    else:
        try:
            digest = sha256_file(item)
        except (OSError, ValueError):
            return f"input-{index + 1}"
    return f"sha256:{digest[:16]}"


def _read(item: ImageInput) -> tuple[np.ndarray, str | None]:
    """A decoded image in [0, 1] and its DICOM view position (None when unknown or not DICOM)."""

    if isinstance(item, np.ndarray):
        if item.ndim != 2:
            raise ValueError(f"an image array must be 2-D, got shape {item.shape}")
        return np.clip(np.asarray(item, dtype=np.float32), 0, 1), None
    image, meta = read_image(item)
    return image, meta.view


def _as_trained(crops: np.ndarray, storage: str) -> torch.Tensor:
    """Crops as the training loader saw them: stored like the cache (uint8/float16), decoded like training."""

    return _as_float(_encode(crops, storage))


@torch.inference_mode()
def _infer(bundle: Bundle, images: list[np.ndarray]) -> tuple[object, np.ndarray]:
    """Landmarks and standardised-then-inverted BMD (n, 4) of decoded images, batched."""

    marks = predict_landmarks(bundle.landmarks, images, batch_size=max(1, len(images)))
    crops = crop_rois_batch(images, marks.points, bundle.roi_size, bundle.chest_size, bundle.geometry)
    chest = _as_trained(crops.chest, bundle.storage)[:, None]  # (n, 1, C, C)
    local = _as_trained(crops.local, bundle.storage)[:, :, None]  # (n, 6, 1, R, R)
    if bundle.kind in MULTI_ROI_KINDS:
        z = bundle.model(chest, local).joint
    else:
        z = bundle.model(select_family(chest, local, bundle.family))
    return marks, bundle.scaler.inverse(z.float().numpy())


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0]}" if text else exc.__class__.__name__


def _safe_stem(item: ImageInput, label: str, index: int, name: str) -> str:
    if name == "hash":
        return label.replace(":", "-")
    if isinstance(item, np.ndarray):
        return f"array-{index}"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(item).stem).strip("._") or f"input-{index + 1}"
    return stem[:120]


def _overlay_title(row: _Row, t: np.ndarray, category: str) -> str:
    lowest = float(np.nanmin(t))
    head = f"{row.status}" + (f" (plausibility {row.plausibility:.2g})" if math.isfinite(row.plausibility) else "")
    return f"{head} · BMD L1–L4 {' '.join(f'{b:.3f}' for b in row.bmd)} g/cm² · lowest T {lowest:.1f} ({category})"


def _write_overlay(path: Path, image: np.ndarray, points: np.ndarray, bundle: Bundle, title: str) -> None:
    """Landmarks and ROI boxes over the image, as PNG, written atomically."""
    from matplotlib.figure import Figure


    f = max(1, math.ceil(max(image.shape) / 800))  # the figure is ~600 px wide: more pixels only cost time
    if f > 1:  # a display copy: block means, and the points moved to its pixel grid
        h, w = (image.shape[0] // f) * f, (image.shape[1] // f) * f
        image = image[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))
        points = (points + 0.5) / f - 0.5
    fig = Figure(figsize=(6, 6 * image.shape[0] / image.shape[1] + 0.4), dpi=100)
    ax = fig.add_subplot()
    draw_rois(image, points, ax=ax, geometry=bundle.geometry)
    ax.set_title(title, fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")


def predict_images(images: Sequence[ImageInput] | ImageInput, bundle: Bundle | str | os.PathLike, *,
                   overlay_dir: str | os.PathLike | None = None, name: str = "file", batch_size: int = 8,
                   sex: str | None = None, raw: bool = False, progress: bool = False) -> pd.DataFrame:
    """Predict BMD L1–L4, T-scores and the WHO category for each image (see the module docstring).

    ``images``: file paths (DICOM, PNG, JPEG) or 2-D float arrays in [0, 1], bone bright.
    ``bundle``: a :class:`~bmd.deploy.bundle.Bundle` or its folder. ``overlay_dir``: write one PNG per image
    with a prediction (landmarks and ROI boxes), named after the input's file name or hash.
    ``name``: ``"file"`` or ``"hash"`` (what the ``image`` column shows). ``batch_size``: images
    decoded and run together (memory grows with it). ``sex``: ``F``/``M`` for the T-scores, default
    the bundle's. ``raw``: report the network's output even when the bundle carries a calibration.
    Returns a DataFrame with :data:`CONTRACT_COLUMNS` then :data:`EXTRA_COLUMNS`.
    """

    if name not in NAMING:
        raise ValueError(f"name must be one of {', '.join(NAMING)}, got {name!r}")
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    calibration = None if raw else bundle.calibration
    calibration_name = bundle.calibration_name if calibration is not None else UNCALIBRATED
    sx = bundle.sex if sex is None else str(sex).strip().upper()
    if sx not in ("F", "M"):
        raise BundleError(f"sex must be F or M, got {sex!r}")
    if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim == 2):
        images = [images]
    items = list(images)
    batch_size = max(1, int(batch_size))
    out_dir = Path(overlay_dir) if overlay_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    used_names: set[str] = set()
    rows: list[_Row] = []
    starts = range(0, len(items), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="predict", unit="batch")
    for start in starts:
        chunk = items[start : start + batch_size]
        chunk_rows = [_Row(_label(item, start + k, name)) for k, item in enumerate(chunk)]
        decoded: list[tuple[int, np.ndarray, str | None]] = []
        for k, item in enumerate(chunk):
            try:
                image, view = _read(item)
            except ImageReadError as exc:
                chunk_rows[k].reason = f"cannot read: {exc}"
                continue
            except Exception as exc:  # anything else about this one file: its own row, the others go on
                chunk_rows[k].reason = f"cannot read: {_one_line(exc)}"
                continue
            if min(image.shape) < bundle.min_image_side:
                chunk_rows[k].reason = (f"image too small ({image.shape[0]}x{image.shape[1]} px; the model needs "
                                        f"at least {bundle.min_image_side} px a side)")
                continue
            decoded.append((k, image, view))

        # one batched pass; if it fails, image by image so that one bad image fails alone
        results: dict[int, tuple[np.ndarray, str, str, float, np.ndarray]] = {}
        try:
            marks, bmd = _infer(bundle, [d[1] for d in decoded]) if decoded else (None, None)
            for j, (k, _, _) in enumerate(decoded):
                results[k] = (bmd[j], marks.status[j], marks.reason[j], float(marks.plausibility[j]),
                              marks.points[j])
        except Exception:
            for k, image, _ in decoded:
                try:
                    marks, bmd = _infer(bundle, [image])
                    results[k] = (bmd[0], marks.status[0], marks.reason[0], float(marks.plausibility[0]),
                                  marks.points[0])
                except Exception as exc:
                    chunk_rows[k].reason = f"prediction failed: {_one_line(exc)}"

        for k, image, view in decoded:
            if k not in results:
                continue
            row = chunk_rows[k]
            value, status, reason, plaus, points = results[k]
            if not np.isfinite(value).all():
                row.reason = "prediction failed: the network gave a non-finite value"
                continue
            reasons = [reason] if status == "flagged" and reason else []
            if view and view.strip().upper() not in FRONTAL_VIEWS:
                reasons.append(f"DICOM view position {view.strip()[:8]!r} is not frontal (AP/PA)")
            row.status = "flagged" if reasons or status == "flagged" else "ok"
            row.reason = "; ".join(reasons)
            row.bmd, row.plausibility = np.asarray(value, dtype=np.float64), plaus
            if calibration is not None:
                row.bmd = calibration.apply_array(row.bmd[None])[0]
            if out_dir is not None:
                stem = _safe_stem(chunk[k], row.image, start + k, name)
                candidate, n = f"{stem}.png", 1
                while candidate in used_names:
                    n += 1
                    candidate = f"{stem}-{n}.png"
                used_names.add(candidate)
                t = np.array([t_score(row.bmd[j], v, sx, bundle.reference) for j, v in enumerate(VERTEBRAE)])
                title = _overlay_title(row, t, who_category(float(t.min()), bundle.threshold))
                try:
                    _write_overlay(out_dir / candidate, image, points, bundle, title)
                    row.overlay = candidate
                except Exception as exc:  # a drawing problem must not lose the numbers
                    row.reason = "; ".join(filter(None, [row.reason, f"no overlay ({_one_line(exc)})"]))
        rows.extend(chunk_rows)
        del decoded

    bmd = np.full((len(rows), len(VERTEBRAE)), np.nan)
    for i, r in enumerate(rows):
        if r.bmd is not None:
            bmd[i] = r.bmd
    t = np.column_stack([t_score(bmd[:, j], v, sx, bundle.reference) for j, v in enumerate(VERTEBRAE)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows (failed images) stay NaN
        lowest = np.nanmin(t, axis=1)
    frame = pd.DataFrame({"image": [r.image for r in rows], "status": [r.status for r in rows],
                          "reason": [r.reason for r in rows]})
    for j, col in enumerate(BMD_OUT):
        frame[col] = bmd[:, j]
    for j, col in enumerate(T_OUT):
        frame[col] = t[:, j]
    frame["category"] = list(who_category(lowest, bundle.threshold))
    frame["calibration"] = calibration_name
    frame["plausibility"] = [r.plausibility for r in rows]
    if out_dir is not None:
        frame["overlay"] = [r.overlay for r in rows]
    return frame


def to_csv(frame: pd.DataFrame) -> str:
    """The CSV text of a prediction table (BMD and T-scores to 4 decimals)."""
    return frame.to_csv(index=False, float_format="%.4f")
