"""The trained landmark detector: its folder, loading, running and evaluating it.

* :func:`load_landmark_model` reads a detector folder (written by :func:`bmd.landmarks.fit.train_landmark_model`
  through :func:`save_landmark_model`); :func:`predict_landmarks` runs it on files or arrays and returns points
  in *original* image pixels with a plausibility verdict per image;
  :meth:`LandmarkPredictions.write_labelme` writes them as Labelme files for a site to correct.
* :func:`evaluate_landmarks` gives per-landmark and overall mean and 95th-percentile radial errors, as a
  percentage of the image width, for the detector and two baselines: the mean training shape placed in the
  letterbox frame, and the global (affine) stage alone.
* :func:`recipe_for_profile`: the training arguments a study profile uses.
* :mod:`bmd.landmarks.folder` checks a detector folder and names it by its content (no torch needed).

Detector folder (``config.json`` is written last, atomically, so a folder with one is complete)::

    config.json        format, landmark names, model config (input size, architecture), mean shape,
                       augmentation, optimiser, seed, training history, validation errors, plausibility
                       calibration summary, timings
    weights.pt         the network's state dict
    plausibility.pt    the plausibility model's statistics (means, precisions, calibration)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bmd.columns import COORD_COLUMNS, LANDMARK_NAMES, N_LANDMARKS
from bmd.infra.atomic import write_text
from bmd.io import ImageReadError, read_image
from bmd.landmarks.annotations import write_labelme
from bmd.landmarks.data import LandmarkCohort, Letterbox, letterbox_image, load_landmark_cohort, to_uint8
from bmd.landmarks.folder import (
    CONFIG_FILE,
    DETECTOR_FORMAT,
    PLAUSIBILITY_FILE,
    WEIGHTS_FILE,
    DetectorFolderError,
    read_detector_config,
)
from bmd.landmarks.model import LandmarkNet, ModelConfig
from bmd.landmarks.plausibility import PlausibilityDescriptorError, PlausibilityModel, PlausibilityResult
from bmd.training.folder import save_checkpoint


def default_input_size(image_size: int) -> int:
    """The detector's input side for a cohort of ``image_size`` radiographs: half the image, at most 256
    (128 for the smoke twin's 256² images, 256 for the quick and paper twins)."""
    return int(max(64, min(256, image_size // 2)) // 32 * 32)


def recipe_for_profile(profile) -> dict:
    """Training arguments for a :class:`~bmd.study.config.Profile`: input side from the twin image size, and an
    epoch budget that fits the profile (smoke: seconds; quick: a few CPU minutes; paper: longer)."""
    base = {"input_size": default_input_size(profile.twin_image_size), "seed": profile.seed,
            "precision": profile.train_precision, "plausibility_draws": 2}
    if profile.profile == "smoke":
        return {**base, "epochs": 15, "batch_size": 8}
    if profile.profile == "quick":
        return {**base, "epochs": 10, "batch_size": 16}
    return {**base, "epochs": 40, "batch_size": 16}


@dataclass
class LandmarkModel:
    """A loaded (or freshly trained) detector: network, plausibility model and the folder's config."""

    net: LandmarkNet
    plausibility: PlausibilityModel | None
    info: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def config(self) -> ModelConfig:
        """Architecture parameters."""
        return self.net.config

    @property
    def input_size(self) -> int:
        """Side of the square network input."""
        return self.net.config.input_size


@dataclass
class LandmarkPredictions:
    """Predictions for N images: ``points`` (N, 16, 2) original pixels (NaN where reading failed),
    ``stage_points`` (N, stages, 16, 2) the same for every stage (global first), and per image the
    status (``ok``/``flagged``/``failed``), reason, plausibility and score; ``widths`` and ``heights``
    are the original images' sizes (NaN where reading failed)."""

    images: list[str]
    points: np.ndarray
    stage_points: np.ndarray
    status: list[str]
    reason: list[str]
    plausibility: np.ndarray
    score: np.ndarray
    widths: np.ndarray
    details: list[PlausibilityResult | None]
    heights: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        """The prediction CSV layout: ``image, status, reason, plausibility`` then the 32 coordinates."""
        df = pd.DataFrame(self.points.reshape(len(self.images), -1), columns=list(COORD_COLUMNS))
        df.insert(0, "plausibility", np.round(self.plausibility, 4))
        df.insert(0, "reason", self.reason)
        df.insert(0, "status", self.status)
        df.insert(0, "image", self.images)
        return df

    def write_labelme(self, paths: Sequence[str | os.PathLike]) -> list[Path | None]:
        """Write each image's points as a Labelme file at ``paths[i]`` (see
        :func:`bmd.landmarks.annotations.labelme_paths`), for a site to correct instead of placing
        the points from scratch.

        A file holds the 16 points, the image's size and file name (never its folder or anything
        from its header) and the verdict: a ``flagged`` image has its ``flagged`` flag ticked.
        Failed images get no file (None in the returned list).
        """
        if len(paths) != len(self.images):
            raise ValueError(f"{len(paths)} Labelme path(s) for {len(self.images)} image(s)")
        written: list[Path | None] = []
        for i, path in enumerate(paths):
            if self.status[i] == "failed":
                written.append(None)
                continue
            written.append(
                write_labelme(
                    self.points[i], LANDMARK_NAMES, (int(self.heights[i]), int(self.widths[i])), path,
                    image_path=Path(self.images[i]).name, status=self.status[i], reason=self.reason[i],
                    plausibility=float(self.plausibility[i]), score=float(self.score[i]),
                )
            )
        return written


@torch.no_grad()
def network_outputs(net: LandmarkNet, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Run the network (eval mode) on (N, S, S) uint8 or float images: ``stages`` (N, stages, 16, 2), the
    points after each stage in normalised coordinates."""
    net.eval()
    stages = []
    for i in range(0, len(images), batch_size):
        chunk = images[i : i + batch_size]
        x = torch.from_numpy(np.asarray(chunk)).float()
        if chunk.dtype == np.uint8:
            x = x / 255.0
        out = net(x[:, None])
        stages.append(torch.stack(out.stages, dim=1).numpy())
    if not stages:
        return {"stages": np.zeros((0, net.config.n_local + 1, N_LANDMARKS, 2))}
    return {"stages": np.concatenate(stages).astype(np.float64)}


def to_original(boxes: Sequence[Letterbox], normalised: np.ndarray) -> np.ndarray:
    """(N, ..., 16, 2) normalised → original pixel coordinates, image by image."""
    return (
        np.stack([b.from_normalised(p) for b, p in zip(boxes, normalised, strict=True)])
        if len(boxes)
        else np.zeros_like(normalised)
    )


def radial_errors_pct(pred: np.ndarray, truth: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """(N, 16) radial errors as a percentage of each image's width."""
    return np.linalg.norm(pred - truth, axis=-1) / np.asarray(widths, dtype=np.float64)[:, None] * 100.0


def error_summary(err: np.ndarray) -> dict:
    """Overall and per-landmark mean and 95th percentile of (N, 16) errors (% width)."""
    return {
        "mean_error_pct": float(np.mean(err)),
        "p95_error_pct": float(np.percentile(err, 95)),
        "per_landmark": {
            n: {
                "mean_error_pct": float(np.mean(err[:, j])),
                "p95_error_pct": float(np.percentile(err[:, j], 95)),
            }
            for j, n in enumerate(LANDMARK_NAMES)
        },
    }


def save_landmark_model(model: LandmarkModel, out_dir: str | os.PathLike) -> Path:
    """Write a detector folder (weights and plausibility first, ``config.json`` last; each file atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = {
        **model.info,
        "format": DETECTOR_FORMAT,
        "landmark_names": list(LANDMARK_NAMES),
        "model": model.config.as_dict(),
        "mean_shape": model.net.mean_shape.double().numpy().round(6).tolist(),
        "files": {"weights": WEIGHTS_FILE, "plausibility": PLAUSIBILITY_FILE},
    }
    (out / CONFIG_FILE).unlink(missing_ok=True)  # the detector is incomplete until config.json is back
    save_checkpoint(model.net.state_dict(), out / WEIGHTS_FILE)
    if model.plausibility is not None:
        save_checkpoint(model.plausibility.state(), out / PLAUSIBILITY_FILE)
    else:
        (out / PLAUSIBILITY_FILE).unlink(missing_ok=True)
    write_text(out / CONFIG_FILE, json.dumps(info, indent=1))
    return out


def load_landmark_model(detector: str | os.PathLike) -> LandmarkModel:
    """Load a detector folder written by :func:`bmd.landmarks.fit.train_landmark_model`."""
    path = Path(detector)
    info = read_detector_config(path)  # one line naming the folder when it is not a usable detector
    cfg = ModelConfig.from_dict(info["model"])
    net = LandmarkNet(cfg, torch.tensor(info["mean_shape"], dtype=torch.float32))
    net.load_state_dict(torch.load(path / info["files"]["weights"], map_location="cpu", weights_only=True))
    net.eval()
    plaus_file = path / info["files"].get("plausibility", PLAUSIBILITY_FILE)
    plaus = None
    if plaus_file.is_file():
        try:
            plaus = PlausibilityModel.from_state(torch.load(plaus_file, map_location="cpu", weights_only=True))
        except PlausibilityDescriptorError as exc:
            raise DetectorFolderError(f"{path}: {exc}") from None
    return LandmarkModel(net=net, plausibility=plaus, info=info, path=path)


def _prepare(items: Sequence, size: int) -> tuple[np.ndarray, list[Letterbox | None], list[str], list[str]]:
    """Read/letterbox inputs (paths or 2-D arrays); returns images, boxes (None = failed), names, errors."""

    images = np.zeros((len(items), size, size), dtype=np.uint8)
    boxes: list[Letterbox | None] = []
    names, errors = [], []
    for i, item in enumerate(items):
        if isinstance(item, np.ndarray):
            names.append(f"array[{i}]")
            image = item
        else:
            names.append(str(item))
            try:
                image, _meta = read_image(item)
            except ImageReadError as exc:
                boxes.append(None)
                errors.append(str(exc))
                continue
        boxed, box = letterbox_image(np.clip(np.asarray(image, dtype=np.float32), 0, 1), size)
        images[i] = to_uint8(boxed)
        boxes.append(box)
        errors.append("")
    return images, boxes, names, errors


def predict_landmarks(
    model: LandmarkModel | str | os.PathLike,
    images: Sequence | str | os.PathLike | np.ndarray,
    batch_size: int = 16,
) -> LandmarkPredictions:
    """Detect the 16 landmarks on each image (file paths or 2-D float arrays in [0, 1], bone bright).

    Returns points in original pixel coordinates and a plausibility verdict per image. Files that
    cannot be read get status ``failed``, NaN points and the reader's one-line reason.
    """
    if not isinstance(model, LandmarkModel):
        model = load_landmark_model(model)
    if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim == 2):
        images = [images]
    items = list(images)
    arr, boxes, names, errors = _prepare(items, model.input_size)
    ok = [i for i, b in enumerate(boxes) if b is not None]
    inputs = arr[ok]
    fwd = network_outputs(model.net, inputs, batch_size)
    n_st = model.config.n_local + 1
    stage_points = np.full((len(items), n_st, N_LANDMARKS, 2), np.nan)
    stage_points[ok] = to_original([boxes[i] for i in ok], fwd["stages"])
    status = ["failed"] * len(items)
    reason = [e for e in errors]
    plaus = np.full(len(items), np.nan)
    score = np.full(len(items), np.nan)
    details: list[PlausibilityResult | None] = [None] * len(items)
    if model.plausibility is not None and ok:
        feats = model.plausibility.features(inputs, fwd["stages"][:, -1])
        for j, verdict in zip(ok, model.plausibility.score(feats), strict=True):
            status[j], reason[j], plaus[j], score[j], details[j] = (
                verdict.status,
                verdict.reason,
                verdict.plausibility,
                verdict.score,
                verdict,
            )
    else:
        for j in ok:
            status[j], reason[j] = "ok", ""
    widths = np.array([b.width if b is not None else np.nan for b in boxes], dtype=np.float64)
    heights = np.array([b.height if b is not None else np.nan for b in boxes], dtype=np.float64)
    return LandmarkPredictions(
        names, stage_points[:, -1].copy(), stage_points, status, reason, plaus, score, widths, details,
        heights,
    )


@dataclass
class LandmarkEvaluation:
    """Errors (% image width) of the model and the two baselines on one split."""

    split: str
    case_ids: list[str]
    errors: dict[str, np.ndarray]  # method → (N, 16)
    predictions: pd.DataFrame
    flagged_fraction: float

    def summary(self) -> dict:
        """JSON-ready: overall and per-landmark mean/p95 for the model, and the same for each baseline."""
        out = {
            "split": self.split,
            "n": len(self.case_ids),
            **error_summary(self.errors["model"]),
            "baselines": {k: error_summary(self.errors[k]) for k in ("mean_shape", "global_only")},
            "flagged_fraction": self.flagged_fraction,
        }
        return out

    def to_dict(self) -> dict:
        """JSON-ready and lossless (Python floats round-trip through JSON); :meth:`from_dict` restores it."""
        return {"split": self.split, "case_ids": list(self.case_ids),
                "errors": {k: np.asarray(v, dtype=float).tolist() for k, v in self.errors.items()},
                "predictions": self.predictions.to_dict(orient="list"),
                "flagged_fraction": self.flagged_fraction}

    @classmethod
    def from_dict(cls, data: dict) -> LandmarkEvaluation:
        """The evaluation :meth:`to_dict` wrote."""
        predictions = pd.DataFrame(data["predictions"])
        predictions["case_id"] = predictions["case_id"].astype(str)
        return cls(data["split"], [str(c) for c in data["case_ids"]],
                   {k: np.asarray(v, dtype=float) for k, v in data["errors"].items()}, predictions,
                   float(data["flagged_fraction"]))

    def table(self) -> pd.DataFrame:
        """Per-landmark mean and p95 error (% width) for the model and baselines, with an ``overall`` row."""
        rows = []
        for method, err in self.errors.items():
            for j, n in enumerate((*LANDMARK_NAMES, "overall")):
                e = err[:, j] if j < N_LANDMARKS else err.reshape(-1)
                rows.append(
                    {
                        "method": method,
                        "landmark": n,
                        "mean_error_pct": float(np.mean(e)),
                        "p95_error_pct": float(np.percentile(e, 95)),
                    }
                )
        return pd.DataFrame(rows)


def evaluate_landmarks(
    model: LandmarkModel | str | os.PathLike,
    manifest: str | os.PathLike | pd.DataFrame,
    split: str | None = "test",
    batch_size: int = 16,
    progress: bool = False,
) -> LandmarkEvaluation:
    """Radial errors on a manifest split for the model, the mean shape and the global stage alone."""
    if not isinstance(model, LandmarkModel):
        model = load_landmark_model(model)
    cohort: LandmarkCohort = load_landmark_cohort(
        manifest, [split] if split else None, model.input_size, progress=progress
    )
    fwd = network_outputs(model.net, cohort.images, batch_size)
    stages = to_original(cohort.boxes, fwd["stages"])
    mean = model.net.mean_shape.double().numpy()
    mean_pts = to_original(cohort.boxes, np.broadcast_to(mean, (len(cohort), N_LANDMARKS, 2)))
    errors = {
        "model": radial_errors_pct(stages[:, -1], cohort.points, cohort.widths),
        "mean_shape": radial_errors_pct(mean_pts, cohort.points, cohort.widths),
        "global_only": radial_errors_pct(stages[:, 0], cohort.points, cohort.widths),
    }
    status = ["ok"] * len(cohort)
    plaus = np.full(len(cohort), np.nan)
    if model.plausibility is not None and len(cohort):
        verdicts = model.plausibility.score(
            model.plausibility.features(cohort.images, fwd["stages"][:, -1])
        )
        status = [v.status for v in verdicts]
        plaus = np.array([v.plausibility for v in verdicts])
    pred = pd.DataFrame(stages[:, -1].reshape(len(cohort), -1), columns=list(COORD_COLUMNS))
    pred.insert(0, "plausibility", plaus)
    pred.insert(0, "status", status)
    pred.insert(0, "image", cohort.image_paths)
    pred.insert(0, "case_id", cohort.case_ids)
    flagged = float(np.mean([s == "flagged" for s in status])) if status else 0.0
    return LandmarkEvaluation(split or "all", cohort.case_ids, errors, pred, flagged)
