"""The simple baselines of Table 2: age + sex, and a ridge on per-ROI mean intensities.

Each returns a predictions frame (validation and test rows) fitted on the training split; the strong
hand-crafted baseline is :mod:`bmd.evaluation.radiomics`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression, RidgeCV

from bmd.columns import BMD_COLUMNS, PRED_COLUMNS
from bmd.evaluation.predictions import val_test_frame


def fit_predict(model, features: np.ndarray, manifest: pd.DataFrame) -> pd.DataFrame:
    """Fit ``model`` per vertebra on the training rows of ``features`` and predict every row."""
    train = (manifest["split"] == "train").to_numpy()
    predictions = {}
    for b, p in zip(BMD_COLUMNS, PRED_COLUMNS, strict=True):
        y = manifest[b].to_numpy(float)
        ok = train & np.isfinite(y)
        predictions[p] = model.fit(features[ok], y[ok]).predict(features)
    return val_test_frame(manifest, predictions)


def age_sex_baseline(manifest: pd.DataFrame) -> pd.DataFrame:
    """The clinical baseline: a linear model of BMD on age and sex, fitted on the training split."""
    features = np.column_stack([manifest["age"].to_numpy(float), (manifest["sex"] == "M").to_numpy(float)])
    return fit_predict(LinearRegression(), features, manifest)


def roi_intensity_features(chest: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Hand-crafted features: the mean intensity of each of the 7 ROIs (N, 7), in [0, 1]."""
    scale = 255.0 if chest.dtype == np.uint8 else 1.0
    means = [np.asarray(chest, dtype=np.float32).reshape(len(chest), -1).mean(axis=1) / scale]
    flat = np.asarray(local, dtype=np.float32).reshape(len(local), local.shape[1], -1).mean(axis=2) / scale
    return np.column_stack([means[0], flat])


def roi_intensity_baseline(manifest: pd.DataFrame, features: np.ndarray) -> pd.DataFrame:
    """A ridge model of BMD on per-ROI mean intensities (rows of ``features`` follow ``manifest``)."""
    return fit_predict(RidgeCV(alphas=np.logspace(-4, 3, 15)), features, manifest)
