"""Metrics against hand-computed values and library references."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from bmd.evaluation.metrics import agreement, auc_low_is_positive, delong_ci, evaluate, pearson_r


def test_pearson_by_hand_and_masking():
    x = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    y = np.array([2.0, 4.0, 5.0, 9.0, 1.0])
    xm, ym = x[:4] - 2.5, y[:4] - 5.0
    assert pearson_r(x, y) == pytest.approx((xm * ym).sum() / np.sqrt((xm**2).sum() * (ym**2).sum()))
    assert np.isnan(pearson_r([1, 1, 1], [1, 2, 3]))


def test_auc_matches_sklearn_with_ties_and_low_scores_positive():
    rng = np.random.default_rng(0)
    score = np.round(rng.normal(size=200), 1)  # ties
    positive = rng.random(200) < 0.3
    assert auc_low_is_positive(score, positive) == pytest.approx(roc_auc_score(positive, -score))
    # by hand: positives (0, 2.5) vs negatives (2, 3): pairs (0,2) (0,3) (2.5,3) ordered, (2.5,2) not → 3/4
    assert auc_low_is_positive([0, 2.5, 2, 3], [True, True, False, False]) == pytest.approx(0.75)
    assert auc_low_is_positive([0, 1, 2, 3], [True, True, False, False]) == 1.0
    assert np.isnan(auc_low_is_positive([0, 1], [True, True]))


def test_delong_matches_auc_and_brackets_it():
    rng = np.random.default_rng(1)
    positive = rng.random(300) < 0.3
    score = rng.normal(size=300) - positive * 1.0
    auc, lo, hi = delong_ci(score, positive)
    assert auc == pytest.approx(auc_low_is_positive(score, positive))
    assert lo < auc < hi and 0.05 < hi - lo < 0.25


def test_agreement_by_hand():
    a = agreement([1.0, 2.0, 4.0], [1.5, 2.0, 3.0])
    diff = np.array([-0.5, 0.0, 1.0])
    assert a.mae == pytest.approx(0.5) and a.rmse == pytest.approx(np.sqrt(1.25 / 3))
    assert a.bias == pytest.approx(diff.mean())
    assert a.loa_high - a.loa_low == pytest.approx(2 * 1.96 * diff.std(ddof=1))


def test_evaluate_point_values_cis_and_patient_bootstrap():
    rng = np.random.default_rng(2)
    n = 120
    truth = rng.normal(0.85, 0.15, (n, 4))
    truth[5, 2] = np.nan  # an excluded vertebra
    pred = truth + rng.normal(0, 0.08, (n, 4))
    t_true = (truth - 1.0) / 0.11
    t_pred = (pred - 1.0) / 0.11
    patients = np.repeat(np.arange(n // 2), 2)
    df = evaluate(pred, truth, t_pred, t_true, patients, n_boot=300, seed=0).set_index("vertebra")
    ok = ~np.isnan(truth[:, 2])
    assert df.loc["L3", "r"] == pytest.approx(stats.pearsonr(pred[ok, 2], truth[ok, 2]).statistic)
    assert df.loc["L3", "n"] == n - 1
    assert df.loc["avg", "r"] == pytest.approx(df.loc[["L1", "L2", "L3", "L4"], "r"].mean())
    for v in ("L1", "avg"):
        assert df.loc[v, "r_lo"] < df.loc[v, "r"] < df.loc[v, "r_hi"]
        assert df.loc[v, "auc_lo"] < df.loc[v, "auc"] < df.loc[v, "auc_hi"]
    again = evaluate(pred, truth, t_pred, t_true, patients, n_boot=300, seed=0)
    pd.testing.assert_frame_equal(df.reset_index(), again)


def test_weighted_bootstrap_equals_explicit_resampling():
    from bmd.evaluation.metrics import (
        auc_low_is_positive,
        patient_bootstrap_weights,
        pearson_r,
        weighted_auc_low_is_positive,
        weighted_pearson,
    )

    rng = np.random.default_rng(1)
    n = 60
    patients = rng.integers(0, 35, n)
    x = rng.normal(size=n)
    y = x + rng.normal(size=n)
    x[3] = np.nan
    score = np.round(y * 2) / 2  # ties between positives and negatives
    positive = rng.random(n) < 0.3
    weights = patient_bootstrap_weights(patients, 50, seed=4)
    ids = np.unique(patients)
    for b in range(50):
        # the resample the weights stand for: every case repeated as often as its patient was drawn
        pick = np.repeat(np.arange(n), weights[b].astype(int))
        assert set(patients[pick]) <= set(ids)
        assert weighted_pearson(x, y, weights[b:b + 1])[0] == pytest.approx(pearson_r(x[pick], y[pick]), nan_ok=True)
        assert weighted_auc_low_is_positive(score, positive, weights[b:b + 1])[0] == pytest.approx(
            auc_low_is_positive(score[pick], positive[pick]), nan_ok=True)
    # each resample draws as many patients as there are
    per_patient = np.array([weights[:, np.flatnonzero(patients == p)[0]] for p in ids]).T
    assert np.all(per_patient.sum(axis=1) == len(ids))
