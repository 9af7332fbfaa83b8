"""Predictions frames → metrics, ensembles and baselines."""

import numpy as np
import pandas as pd
import pytest

from bmd.columns import PRED_COLUMNS
from bmd.evaluation.baselines import age_sex_baseline, roi_intensity_baseline, roi_intensity_features
from bmd.evaluation.predictions import ensemble, evaluate_predictions
from bmd.inputs.twin.population import sample_population


@pytest.fixture(scope="module")
def cohort():
    df = sample_population({"train": 1087, "val": 265, "test": 329}, seed=4)
    df["reference"] = "hologic"
    return df


def test_age_sex_baseline_is_informative_but_weak(cohort):
    pred = age_sex_baseline(cohort)
    assert set(pred["split"]) == {"val", "test"} and len(pred) == 265 + 329
    table = evaluate_predictions(pred, "test", n_boot=200).set_index("vertebra")
    assert 0.2 < table.loc["avg", "r"] < 0.55
    assert table.loc["avg", "r_lo"] < table.loc["avg", "r"] < table.loc["avg", "r_hi"]


def test_ensemble_is_the_mean_and_keeps_truth(cohort):
    a = age_sex_baseline(cohort)
    b = a.copy()
    b[PRED_COLUMNS] = b[PRED_COLUMNS] + 0.1
    e = ensemble([a, b.sample(frac=1, random_state=0)])  # order does not matter
    assert np.allclose(e[PRED_COLUMNS].to_numpy(), a[PRED_COLUMNS].to_numpy() + 0.05)
    assert e["bmd_l1"].equals(a["bmd_l1"])
    with pytest.raises(ValueError):
        ensemble([])


def test_roi_intensity_features_and_baseline(cohort):
    n = len(cohort)
    rng = np.random.default_rng(0)
    level = np.clip(cohort["g"].to_numpy() * 0.1 + 0.5, 0, 1)
    chest = np.clip(level[:, None, None] + rng.normal(0, 0.2, (n, 4, 4)), 0, 1)
    local = np.clip(level[:, None, None, None] + rng.normal(0, 0.2, (n, 6, 4, 4)), 0, 1)
    feats = roi_intensity_features((chest * 255).astype(np.uint8), (local * 255).astype(np.uint8))
    assert feats.shape == (n, 7) and feats.min() >= 0 and feats.max() <= 1
    table = evaluate_predictions(roi_intensity_baseline(cohort, feats), "test", n_boot=100).set_index("vertebra")
    assert table.loc["avg", "r"] > 0.5  # the brightness here carries bone health by construction
    assert isinstance(table, pd.DataFrame)
