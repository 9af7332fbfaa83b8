"""Screening metrics: endpoints, operating points chosen on validation, recalibration, WHO categories."""

import numpy as np
import pandas as pd
import pytest

from bmd.evaluation import screening
from bmd.inputs.tscores import bmd_from_t


def _frame(n: int = 400, noise: float = 0.4, shrink: float = 0.5, seed: int = 0) -> pd.DataFrame:
    """A predictions frame whose truth T-scores are known and whose predictions shrink toward the mean."""
    rng = np.random.default_rng(seed)
    t_true = rng.normal(-1.2, 1.3, (n, 1)) + rng.normal(0, 0.4, (n, 4))
    t_pred = shrink * t_true + (1 - shrink) * t_true.mean() + rng.normal(0, noise, (n, 4))
    frame = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "patient_id": [f"p{i // 2}" for i in range(n)],
                          "split": np.where(np.arange(n) % 2 == 0, "val", "test"), "sex": "F",
                          "reference": "hologic"})
    for j, v in enumerate(("L1", "L2", "L3", "L4")):
        frame[f"bmd_{v.lower()}"] = bmd_from_t(t_true[:, j], v, "F")
        frame[f"pred_{v.lower()}"] = bmd_from_t(t_pred[:, j], v, "F")
    return frame


def test_lowest_and_mean_endpoints_skip_excluded_vertebrae():
    frame = _frame(4)
    frame.loc[0, "bmd_l2"] = np.nan
    scores = screening.endpoint_scores(frame)
    row = scores[(scores.case_id == "c0")].set_index("endpoint")
    assert "L2" not in row.index
    others = row.loc[["L1", "L3", "L4"]]
    assert row.loc["lowest", "t_true"] == pytest.approx(others["t_true"].min())
    assert row.loc["mean", "t_pred"] == pytest.approx(others["t_pred"].mean())
    assert row.loc["lowest", "positive"] == (row.loc["lowest", "t_true"] < -2.5)


def test_confusion_metrics_match_hand_counts():
    positive = np.array([1, 1, 1, 0, 0, 0, 0, 1], bool)
    called = np.array([1, 1, 0, 0, 0, 1, 0, 1], bool)
    m = screening.confusion_metrics(positive, called)
    assert (m["tp"], m["fn"], m["tn"], m["fp"]) == (3, 1, 3, 1)
    assert m["sensitivity"] == 0.75 and m["specificity"] == 0.75 and m["ppv"] == 0.75 and m["npv"] == 0.75
    lo, hi = m["sensitivity_ci"]
    assert 0.3 < lo < 0.75 < hi < 1.0  # Wilson interval for 3/4


def test_operating_points_come_from_validation_and_reach_their_target():
    frame = _frame()
    scores = screening.endpoint_scores(frame)
    val = scores[(scores.split == "val") & (scores.endpoint == "lowest")]
    youden, sens90 = screening.choose_operating_points(val)
    called = val["t_pred"] <= sens90.threshold
    assert (called & val.positive).sum() / val.positive.sum() >= 0.9
    assert val["t_pred"].min() <= youden.threshold <= val["t_pred"].max()
    # changing only the test split's predictions must not move the thresholds
    moved = frame.copy()
    moved.loc[moved.split == "test", [f"pred_l{i}" for i in range(1, 5)]] += 0.3
    a = screening.operating_point_table({"m": frame})
    b = screening.operating_point_table({"m": moved})
    assert np.allclose(a["threshold_t"], b["threshold_t"])
    assert not np.allclose(a["specificity"], b["specificity"])


def test_recalibration_undoes_shrinkage_and_calls_more_osteoporosis():
    frame = _frame(shrink=0.5, noise=0.1)
    raw, _ = screening.who_confusion(frame)
    recal = screening.Recalibration.fit(frame)
    assert all(0.3 < s < 0.7 for s in recal.slope)  # the shrinkage built into the frame
    cal, kappa = screening.who_confusion(recal.apply(frame))
    assert cal["osteoporosis"].sum() > raw["osteoporosis"].sum()
    truth_op = raw.loc["osteoporosis"].sum()
    assert abs(cal["osteoporosis"].sum() - truth_op) < abs(raw["osteoporosis"].sum() - truth_op)
    assert 0 < kappa <= 1 and list(cal.index) == list(screening.WHO_CATEGORIES)


def test_recalibration_refuses_a_prediction_that_does_not_follow_the_truth():
    frame = _frame()
    frame["pred_l1"] = 1.0
    with pytest.raises(ValueError, match="pred_l1"):
        screening.Recalibration.fit(frame)


def test_subgroups_cover_every_case_once_per_kind():
    frame = _frame()
    frame["sex"] = np.where(np.arange(len(frame)) % 3 == 0, "M", "F")
    manifest = frame[["case_id"]].assign(age=np.linspace(40, 90, len(frame)), device=np.where(
        np.arange(len(frame)) % 4 == 0, "A", "B"))
    sub = screening.subgroup_table({"m": frame}, manifest)
    n_test = (frame.split == "test").sum()
    for kind in ("sex", "age", "device"):
        assert sub[sub.subgroup == kind]["cases"].sum() == n_test


def test_no_positives_in_validation_gives_na_not_a_crash():
    frame = _frame()
    frame = frame[~((frame.split == "val") & (frame.bmd_l1 < 0.8))]  # drop most val positives
    val_pos = screening.endpoint_scores(frame)
    val_pos = val_pos[(val_pos.split == "val") & (val_pos.endpoint == "lowest")]
    frame = frame[~frame.case_id.isin(val_pos[val_pos.positive].case_id)]
    table = screening.operating_point_table({"m": frame})
    assert table["sensitivity"].isna().all() and np.isfinite(table["auc"]).all()


def test_roc_band_contains_the_curve_and_best_on_validation_ignores_test():
    frame = _frame()
    scores = screening.endpoint_scores(frame)
    part = scores[(scores.split == "test") & (scores.endpoint == "lowest")]
    roc = screening.roc_with_band(part, n_boot=200)
    inside = (roc.tpr >= roc.tpr_lo - 1e-9) & (roc.tpr <= roc.tpr_hi + 1e-9)
    assert inside.mean() > 0.9 and roc.tpr.iloc[-1] == 1.0
    worse = frame.copy()
    worse.loc[worse.split == "val", "pred_l1"] = worse.loc[worse.split == "val", "pred_l1"].sample(
        frac=1, random_state=0).to_numpy()
    assert screening.best_on_validation({"good": frame, "worse": worse}) == "good"


def test_weighted_roc_equals_roc_curve_of_the_explicit_resample():
    """Each weight row gives sklearn's ROC (interpolated at the grid) of the resample it describes."""
    from sklearn.metrics import roc_curve

    from bmd.evaluation.metrics import patient_bootstrap_weights

    rng = np.random.default_rng(3)
    n = 60
    patients = np.repeat(np.arange(40), [2] * 20 + [1] * 20)
    positive = rng.random(n) < 0.35
    score = np.round(positive * 0.8 + rng.normal(0, 1, n), 1)  # rounded: ties between cases
    grid = np.linspace(0, 1, 101)
    weights = patient_bootstrap_weights(patients, 25, seed=1)
    got = screening.weighted_tpr_at(positive, score, weights, grid)
    for b in range(len(weights)):
        pick = np.repeat(np.arange(n), weights[b].astype(int))
        if positive[pick].all() or not positive[pick].any():
            assert np.isnan(got[b]).all()
            continue
        fpr, tpr, _ = roc_curve(positive[pick], score[pick])
        np.testing.assert_allclose(got[b], np.interp(grid, fpr, tpr), atol=1e-12)
