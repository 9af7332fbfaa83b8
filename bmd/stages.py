"""The study's expensive stages, each built once and reused: the landmark detector and the ROI cache.

Notebooks call one function per stage; each records its time and its numbers in ``summary.json``
and returns what the next stage needs. A stage reuses its earlier output when that output was made
from the same inputs (same manifest, recipe and sizes), so a rebuild with nothing changed retrains
nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bmd import paths, summary
from bmd.cohort import Cohort
from bmd.config import Profile
from bmd.landmarks.points import COORD_COLUMNS


def landmark_detector(cfg: Profile, cohort: Cohort, out: str | Path | None = None) -> Path:
    """Train the landmark detector on the cohort's train split (or reuse it); returns the bundle folder."""
    from bmd.landmarks.train import recipe_for_profile, train_landmark_model

    run = paths.run_dir(cfg.profile, out)
    bundle = run / "landmark_model"
    recipe = recipe_for_profile(cfg)
    start = time.perf_counter()
    if not _bundle_matches(bundle, cohort.manifest_path, recipe):
        train_landmark_model(cohort.manifest_path, bundle, progress=False, log=None, **recipe)
    path = summary.summary_path(cfg.profile, out)
    summary.record_timing(path, "landmarks", time.perf_counter() - start)
    summary.update(path, artifacts={"landmark_model": str(bundle.relative_to(paths.out_root(out)))})
    return bundle


def _bundle_matches(bundle: Path, manifest: Path, recipe: dict) -> bool:
    try:
        info = json.loads((bundle / "config.json").read_text())
    except (OSError, ValueError):
        return False
    training = info.get("training", {})
    return (training.get("manifest") == str(manifest) and training.get("epochs") == recipe["epochs"]
            and training.get("seed") == recipe["seed"] and training.get("batch_size") == recipe["batch_size"]
            and info.get("model", {}).get("input_size") == recipe["input_size"])


@dataclass
class LandmarkResults:
    """Detector accuracy on the test split and the landmark tables the ROI stage uses."""

    evaluation: object  # bmd.landmarks.train.LandmarkEvaluation
    detected: pd.DataFrame  # case_id + 32 coordinates, status and image width: detector output for every case
    ground_truth: pd.DataFrame | None  # case_id + 32 coordinates from the manifest's landmark files


def ground_truth_landmarks(cohort: Cohort) -> pd.DataFrame | None:
    """The manifest's ground-truth landmarks (case_id + 32 columns), or None when it has none."""
    df = cohort.manifest
    if "landmarks_path" not in df.columns or (df["landmarks_path"] == "").all():
        return None
    from bmd.landmarks.annotations import read_landmark_csv

    frames = [read_landmark_csv(p) for p in sorted(set(df["landmarks_path"]) - {""})]
    table = pd.concat(frames).drop_duplicates("case_id").set_index("case_id")
    present = [c for c in df["case_id"] if c in table.index]
    return table.loc[present, list(COORD_COLUMNS)].reset_index()


def evaluate_detector(cfg: Profile, cohort: Cohort, bundle: Path, out: str | Path | None = None) -> LandmarkResults:
    """Test-split errors (model, mean shape, global stage) and detector landmarks for every case."""
    from bmd.landmarks.train import evaluate_landmarks, predict_landmarks

    truth = ground_truth_landmarks(cohort)
    evaluation = None
    if truth is not None:
        evaluation = evaluate_landmarks(bundle, cohort.manifest_path, split="test")
        summary.update(summary.summary_path(cfg.profile, out), landmarks=evaluation.summary())
    pred = predict_landmarks(bundle, list(cohort.manifest["image_path"]))
    detected = pd.DataFrame(pred.points.reshape(len(cohort.manifest), -1), columns=list(COORD_COLUMNS))
    detected.insert(0, "case_id", cohort.manifest["case_id"].to_numpy())
    detected["status"] = pred.status
    detected["width"] = pred.widths
    return LandmarkResults(evaluation, detected, truth)


def roi_cache(cfg: Profile, cohort: Cohort, results: LandmarkResults, out: str | Path | None = None):
    """Crop every case once: detector landmarks for val/test, ground truth jittered like the detector for train.

    Training crops come from ground truth plus Gaussian jitter with the detector's validation error, so
    that train and test crops are alike (without ground truth every split uses the detector).
    """
    from bmd.roi_cache import build_roi_cache

    start = time.perf_counter()
    marks = results.detected[["case_id", *COORD_COLUMNS]].set_index("case_id")
    source = "detector"
    if results.ground_truth is not None:
        truth = results.ground_truth.set_index("case_id")
        train_ids = [c for c in cohort.manifest.loc[cohort.manifest["split"] == "train", "case_id"] if c in truth.index]
        width = results.detected.set_index("case_id").loc[train_ids, "width"].to_numpy(dtype=float)
        sd_pct = _jitter_pct(results)
        rng = np.random.default_rng(cfg.seed)
        noise = rng.normal(0, 1, (len(train_ids), 32)) * (sd_pct / 100 * width)[:, None]
        marks.loc[train_ids] = truth.loc[train_ids].to_numpy() + noise
        source = f"train:ground_truth+jitter({sd_pct:.3f}%),val/test:detector"
    cache = build_roi_cache(cohort.manifest, marks.reset_index(), paths.run_dir(cfg.profile, out) / "roi_cache",
                            cfg.roi_size, cfg.chest_size, source=source)
    summary.record_timing(summary.summary_path(cfg.profile, out), "rois", time.perf_counter() - start)
    return cache


def _jitter_pct(results: LandmarkResults) -> float:
    """Per-coordinate SD (% of width) matching the detector's mean radial error on held-out cases."""
    if results.evaluation is None:
        return 0.0
    mean_radial = float(np.mean(results.evaluation.errors["model"]))
    return mean_radial / np.sqrt(np.pi / 2)  # a 2-D Gaussian with this SD per axis has this mean radius
