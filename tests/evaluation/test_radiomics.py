"""Hand-crafted ROI features and the validation-tuned ridge of the ``radiomics`` baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from bmd.columns import ID_COLUMNS, PRED_COLUMNS
from bmd.evaluation import radiomics
from bmd.evaluation.baselines import age_sex_baseline
from bmd.evaluation.metrics import pearson_r
from bmd.evaluation.predictions import evaluate_predictions
from bmd.evaluation.radiomics import (
    ROI_FEATURES,
    fit_ridge,
    radiomics_baseline,
    radiomics_features,
    roi_features,
)

BANDS = [i for i, name in enumerate(ROI_FEATURES) if name.startswith("band") and name.endswith("_logsd")]


def _feature(images: np.ndarray, name: str) -> np.ndarray:
    return roi_features(images)[:, ROI_FEATURES.index(name)]


def test_feature_matrix_has_one_block_per_roi_and_names():
    rng = np.random.default_rng(0)
    chest = rng.integers(0, 256, (5, 48, 48), dtype=np.uint8)
    local = rng.integers(0, 256, (5, 6, 24, 24), dtype=np.uint8)
    feats = radiomics_features(chest, local)
    names = radiomics.feature_names()
    assert feats.shape == (5, 7 * len(ROI_FEATURES)) == (5, len(names))
    assert np.isfinite(feats).all()
    assert names[0] == "chest:mean" and names[len(ROI_FEATURES)] == "cervi:mean" and names[-1].startswith("lumbar:")
    # the second block is the first local ROI's own features
    np.testing.assert_allclose(feats[:, len(ROI_FEATURES):2 * len(ROI_FEATURES)], roi_features(local[:, 0]))
    flat = radiomics_features(np.full((2, 16, 16), 128, np.uint8), np.full((2, 6, 8, 8), 128, np.uint8))
    assert np.isfinite(flat).all()  # a featureless crop: no division by zero, no log of zero


@pytest.mark.parametrize("octave", range(radiomics.N_OCTAVES))
def test_a_grating_puts_its_energy_in_the_matching_octave(octave):
    y, x = np.mgrid[0:128, 0:128]
    period = 4 * 2**octave  # the band at pyramid level k passes periods around 4·2^k pixels
    grating = (0.5 + 0.2 * np.sin(2 * np.pi * (x + 0.3 * y) / period)).astype(np.float32)
    energies = roi_features(grating[None])[0, BANDS]
    assert int(np.argmax(energies)) == octave


def test_intensity_statistics_of_8_bit_and_float_crops_agree():
    rng = np.random.default_rng(1)
    crops = (rng.random((20, 40, 36)) ** 3 * 255).astype(np.uint8)  # skewed histogram
    as_uint8, as_float = roi_features(crops), roi_features(crops.astype(np.float32) / 255)
    np.testing.assert_allclose(as_uint8, as_float, atol=1e-5)
    flat = crops.reshape(20, -1) / 255
    np.testing.assert_allclose(as_uint8[:, ROI_FEATURES.index("p50")],
                               np.percentile(flat, 50, axis=1, method="inverted_cdf"))
    from scipy.stats import skew

    np.testing.assert_allclose(as_uint8[:, ROI_FEATURES.index("skew")], skew(flat, axis=1), rtol=1e-6)
    assert (as_uint8[:, ROI_FEATURES.index("skew")] > 0.5).all()


def test_a_brighter_bone_centre_raises_the_contrast_features_and_a_global_gain_leaves_the_ratio():
    rng = np.random.default_rng(2)
    base = 0.4 + 0.02 * rng.normal(size=(64, 64))
    crops = []
    for bone in (0.45, 0.6, 0.75):
        img = base.copy()
        img[20:44, 20:44] += bone - 0.4
        crops.append(img)
    crops = np.stack(crops).astype(np.float32)
    for name in ("centre_minus_ring", "log_centre_over_ring", "centre_minus_ring_z"):
        assert np.all(np.diff(_feature(crops, name)) > 0), name
    # a brighter exposure multiplies bone and surroundings alike: their ratio stays
    np.testing.assert_allclose(_feature(crops * 1.3, "log_centre_over_ring"), _feature(crops, "log_centre_over_ring"),
                               atol=1e-3)
    assert np.all(_feature(crops * 1.3, "centre_minus_ring") > _feature(crops, "centre_minus_ring"))


def test_texture_in_the_centre_only_raises_the_centre_texture_ratio():
    rng = np.random.default_rng(3)
    plain = np.full((2, 64, 64), 0.5, np.float32) + 0.01 * rng.normal(size=(2, 64, 64)).astype(np.float32)
    textured = plain.copy()
    textured[:, 20:44, 20:44] += 0.1 * rng.normal(size=(2, 24, 24)).astype(np.float32)
    assert np.all(_feature(textured, "band0_log_centre_over_ring") > _feature(plain, "band0_log_centre_over_ring") + 1)


def _split_masks(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    split = np.array(["train"] * (n // 2) + ["val"] * (n // 4) + ["test"] * (n - n // 2 - n // 4))
    return split == "train", split == "val", split == "test"


def test_ridge_learns_informative_features_and_shrinks_noise_to_nothing():
    rng = np.random.default_rng(4)
    n, p = 800, 40
    x = rng.normal(size=(n, p)) * rng.uniform(0.1, 50, p)  # wildly different feature scales
    train, val, test = _split_masks(n)
    y = x[:, :5] @ (1 / x[train, :5].std(axis=0)) + rng.normal(0, 0.5, n)
    fit = fit_ridge(x, y, train, val)
    assert pearson_r(fit.predict(x[test]), y[test]) > 0.95
    assert pearson_r(fit.predict(x[val]), y[val]) > 0.95

    noise = rng.normal(size=n)  # a target no feature knows about
    fit = fit_ridge(x, noise, train, val)
    assert abs(pearson_r(fit.predict(x[test]), noise[test])) < 0.15
    assert fit.alpha >= 100  # validation asks for heavy shrinkage
    assert np.abs(fit.predict(x[test]) - noise[train].mean()).max() < 0.5


def test_ridge_penalty_is_chosen_on_validation_and_coefficients_come_from_training_only():
    rng = np.random.default_rng(5)
    n, p = 400, 30
    x = rng.normal(size=(n, p))
    train, val, test = _split_masks(n)
    y = x[:, 0] + rng.normal(0, 2.0, n)
    y[train & (rng.random(n) < 0.1)] = np.nan  # excluded vertebrae are left out, not fitted as zero
    fit = fit_ridge(x, y, train, val)
    assert fit.alpha == fit.alphas[np.argmin(fit.val_mse)]
    ok = train & np.isfinite(y)
    mean, sd = x[ok].mean(axis=0), x[ok].std(axis=0)
    ref = Ridge(alpha=fit.alpha).fit((x[ok] - mean) / sd, y[ok])
    np.testing.assert_allclose(fit.coef, ref.coef_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fit.predict(x[test]), ref.predict((x[test] - mean) / sd), atol=1e-9)

    # other validation targets may choose another penalty, but the test cases never matter
    y_other_test = y.copy()
    y_other_test[test] = rng.normal(size=test.sum()) * 100
    again = fit_ridge(x, y_other_test, train, val)
    assert again.alpha == fit.alpha and np.array_equal(again.coef, fit.coef)
    with pytest.raises(ValueError, match="validation"):
        fit_ridge(x, y, train, np.zeros(n, bool))


def test_radiomics_baseline_frame_has_the_baseline_layout_and_reads_bone_from_the_crops():
    from bmd.inputs.twin.population import sample_population

    manifest = sample_population({"train": 300, "val": 100, "test": 120}, seed=6)
    manifest["reference"] = "hologic"
    n = len(manifest)
    rng = np.random.default_rng(6)
    # the bone centre's brightness against a randomly exposed surround carries BMD
    z = (manifest["bmd_l1"].fillna(manifest["bmd_l1"].mean()).to_numpy() - 0.85) / 0.15
    surround = rng.uniform(0.2, 0.6, n)
    bone = surround * (1.3 + 0.15 * z + 0.05 * rng.normal(size=n))
    chest = np.repeat(surround[:, None, None], 32, 1).repeat(32, 2) + 0.02 * rng.normal(size=(n, 32, 32))
    local = np.repeat(chest[:, None, :16, :16], 6, axis=1).copy()
    local[:, :, 4:12, 4:12] = bone[:, None, None, None] + 0.02 * rng.normal(size=(n, 6, 8, 8))
    to8 = lambda a: (np.clip(a, 0, 1) * 255).astype(np.uint8)  # noqa: E731
    frame = radiomics_baseline(manifest, radiomics_features(to8(chest), to8(local)))

    reference = age_sex_baseline(manifest)
    assert list(frame.columns) == list(reference.columns)
    pd.testing.assert_frame_equal(frame[ID_COLUMNS], reference[ID_COLUMNS])
    assert np.isfinite(frame[PRED_COLUMNS].to_numpy()).all()
    table = evaluate_predictions(frame, "test", n_boot=50).set_index("vertebra")
    assert table.loc["L1", "r"] > 0.8
