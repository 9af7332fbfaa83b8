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


def detected_landmarks(cfg: Profile, cohort: Cohort, bundle: Path, out: str | Path | None = None) -> pd.DataFrame:
    """Detector landmarks for every case (case_id, 32 coordinates, status, width), computed once per bundle."""
    from bmd.landmarks.train import predict_landmarks

    saved = paths.run_dir(cfg.profile, out) / "landmarks_detected.csv"
    weights = bundle / "weights.pt"
    if saved.is_file() and saved.stat().st_mtime_ns >= weights.stat().st_mtime_ns:
        detected = pd.read_csv(saved, dtype={"case_id": str})
        if list(detected["case_id"]) == list(cohort.manifest["case_id"]):
            return detected
    pred = predict_landmarks(bundle, list(cohort.manifest["image_path"]))
    detected = pd.DataFrame(pred.points.reshape(len(cohort.manifest), -1), columns=list(COORD_COLUMNS))
    detected.insert(0, "case_id", cohort.manifest["case_id"].to_numpy())
    detected["status"] = pred.status
    detected["width"] = pred.widths
    from bmd.atomic import write_text

    write_text(saved, detected.to_csv(index=False))
    return detected


def evaluate_detector(cfg: Profile, cohort: Cohort, bundle: Path, out: str | Path | None = None,
                      evaluate: bool = True) -> LandmarkResults:
    """Test-split errors (model, mean shape, global stage) and detector landmarks for every case."""
    from bmd.landmarks.train import evaluate_landmarks

    truth = ground_truth_landmarks(cohort)
    evaluation = None
    if truth is not None and evaluate:
        evaluation = evaluate_landmarks(bundle, cohort.manifest_path, split="test")
        summary.update(summary.summary_path(cfg.profile, out), landmarks=evaluation.summary())
    return LandmarkResults(evaluation, detected_landmarks(cfg, cohort, bundle, out), truth)


def roi_cache(cfg: Profile, cohort: Cohort, results: LandmarkResults, bundle: Path, out: str | Path | None = None):
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
        sd_pct = _jitter_pct(bundle)
        rng = np.random.default_rng(cfg.seed)
        noise = rng.normal(0, 1, (len(train_ids), 32)) * (sd_pct / 100 * width)[:, None]
        marks.loc[train_ids] = truth.loc[train_ids].to_numpy() + noise
        source = f"train:ground_truth+jitter({sd_pct:.3f}%),val/test:detector"
    cache = build_roi_cache(cohort.manifest, marks.reset_index(), paths.run_dir(cfg.profile, out) / "roi_cache",
                            cfg.roi_size, cfg.chest_size, source=source)
    summary.record_timing(summary.summary_path(cfg.profile, out), "rois", time.perf_counter() - start)
    return cache


def _jitter_pct(bundle: Path) -> float:
    """Per-coordinate SD (% of width) matching the detector's mean radial error on the validation split.

    The validation error (recorded in the bundle) sets it, so no test-split information reaches training.
    """
    info = json.loads((bundle / "config.json").read_text())
    mean_radial = float(info["val_errors"]["model"]["mean_error_pct"])
    return mean_radial / np.sqrt(np.pi / 2)  # a 2-D Gaussian with this SD per axis has this mean radius


def train_models(cfg: Profile, cohort: Cohort, cache, specs: list, out: str | Path | None = None) -> dict[str, Path]:
    """Train (or reuse) each model spec on the ROI cache through the DDP entry point; name → run folder."""
    from bmd.experiments import train_config, train_model

    start = time.perf_counter()
    runs = paths.run_dir(cfg.profile, out) / "models"
    done = {}
    for spec in specs:
        config = train_config(spec, cfg, cache.path, cohort.manifest_path, runs)
        done[spec.name] = train_model(config, nproc=cfg.train_nproc)
    summary.record_timing(summary.summary_path(cfg.profile, out), "training", time.perf_counter() - start)
    return done


def predictions(run: Path) -> pd.DataFrame:
    """The saved val/test predictions of a training run."""
    return pd.read_csv(run / "predictions.csv", dtype={"case_id": str, "patient_id": str})


def baseline_predictions(cohort: Cohort, cache) -> dict[str, pd.DataFrame]:
    """The two baselines' val/test predictions: ``age_sex`` and ``roi_intensity`` (on the ROI cache)."""
    from bmd.evaluation import age_sex_baseline, roi_intensity_baseline, roi_intensity_features

    manifest = cohort.manifest.set_index("case_id").loc[cache.case_ids].reset_index()
    features = roi_intensity_features(np.asarray(cache.chest), np.asarray(cache.local))
    return {"age_sex": age_sex_baseline(manifest), "roi_intensity": roi_intensity_baseline(manifest, features)}
