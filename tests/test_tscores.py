import math

import numpy as np
import pandas as pd
import pytest

from bmd.tscores import (
    TScoreError,
    bmd_from_t,
    load_reference_tables,
    osteoporotic,
    patient_level,
    standardized_bmd,
    t_score,
    t_scores_for_manifest,
    who_category,
)


def _ref(reference, sex, vertebra):
    row = load_reference_tables().loc[(reference, sex, vertebra)]
    return float(row["mean"]), float(row["sd"])


def test_t_score_by_hand_and_round_trip():
    mean, sd = _ref("hologic", "F", "L2")
    assert t_score(0.80, "L2", "F", "hologic") == pytest.approx((0.80 - mean) / sd)
    assert bmd_from_t(t_score(0.80, "L2", "F"), "L2", "F") == pytest.approx(0.80)
    mean_m, sd_m = _ref("lunar", "M", "L4")
    arr = t_score(np.array([1.0, np.nan]), "L4", "M", "lunar")
    assert arr[0] == pytest.approx((1.0 - mean_m) / sd_m) and math.isnan(arr[1])


def test_every_table_has_both_sexes_and_all_vertebrae_with_a_source():
    tables = load_reference_tables().reset_index()
    for ref, part in tables.groupby("reference"):
        assert set(part.sex) == {"F", "M"}, ref
        assert set(part.vertebra) == {"L1", "L2", "L3", "L4", "L1-L4"}, ref
        assert part["source"].str.len().min() > 10
        assert ((part["sd"] > 0.05) & (part["sd"] < 0.2)).all()


def test_unknown_reference_sex_or_vertebra_is_a_clear_error():
    with pytest.raises(TScoreError, match="norland_x"):
        t_score(1.0, "L1", "F", "norland_x")
    with pytest.raises(TScoreError, match="'X'"):
        t_score(1.0, "L1", "X")
    with pytest.raises(TScoreError, match="L5"):
        t_score(1.0, "L5", "F")


def test_reported_t_scores_take_precedence_cell_by_cell():
    df = pd.DataFrame({
        "reference": ["hologic", "hologic"], "sex": ["F", "M"],
        "bmd_l1": [0.8, 0.9], "bmd_l2": [0.9, np.nan], "bmd_l3": [1.0, 1.0], "bmd_l4": [1.0, 1.1],
        "t_l1": [-3.3, np.nan], "t_l2": [np.nan, np.nan], "t_l3": [np.nan, np.nan], "t_l4": [np.nan, np.nan],
    })
    t = t_scores_for_manifest(df)
    assert t.loc[0, "t_l1"] == -3.3  # copied from the DXA report
    assert t.loc[1, "t_l1"] == pytest.approx(t_score(0.9, "L1", "M"))  # computed
    assert math.isnan(t.loc[1, "t_l2"])  # excluded vertebra stays excluded


def test_who_category_boundaries_and_the_papers_strict_label():
    assert list(who_category([-0.99, -1.0, -1.01, -2.49, -2.5, -2.51])) == [
        "normal", "normal", "osteopenia", "osteopenia", "osteoporosis", "osteoporosis"]
    assert who_category(float("nan")) == ""
    assert osteoporotic(-2.5) is False or osteoporotic(-2.5) == np.False_
    assert bool(osteoporotic(-2.5, inclusive=True))
    assert list(osteoporotic([-2.6, -2.4, np.nan])) == [True, False, False]
    assert who_category(-2.0, threshold=-2.0) == "osteoporosis"


def test_standardized_bmd_matches_hui_1997_by_hand():
    assert standardized_bmd(1.0, "Hologic") == pytest.approx(1.0550 * (1.0 - 0.972) + 1.0436)
    assert standardized_bmd(1.0, "lunar") == pytest.approx(0.9683 * (1.0 - 1.100) + 1.0436)
    assert standardized_bmd(1.0, "NORLAND") == pytest.approx(0.9743 * (1.0 - 0.969) + 1.0436)
    with pytest.raises(TScoreError, match="unknown DXA maker"):
        standardized_bmd(1.0, "acme")


def test_patient_level_uses_valid_vertebrae_only():
    t = pd.DataFrame({"t_l1": [-1.0, np.nan], "t_l2": [-3.0, -2.0], "t_l3": [np.nan, -1.0], "t_l4": [0.0, np.nan]})
    pl = patient_level(t)
    assert list(pl.t_min) == [-3.0, -2.0]
    assert pl.t_mean.tolist() == pytest.approx([-4.0 / 3, -1.5])
