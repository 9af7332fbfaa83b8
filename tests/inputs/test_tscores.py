"""T-scores, reference tables, WHO categories, standardised BMD and the patient-level endpoint."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bmd.infra import paths
from bmd.inputs.tscores import (
    TScoreError,
    bmd_from_t,
    load_reference_tables,
    osteoporotic,
    patient_level,
    reference_ids,
    standardized_bmd,
    t_score,
    t_scores_for_manifest,
    who_category,
)


def _ref(reference, sex, vertebra):
    row = load_reference_tables().loc[(reference, sex, vertebra)]
    return float(row["mean"]), float(row["sd"])


@pytest.fixture
def toy_table(tmp_path, monkeypatch):
    """A one-table reference file with round numbers, used in place of the shipped one."""
    path = tmp_path / "ref.csv"
    rows = ["reference,sex,vertebra,mean,sd,source"]
    rows += [f"toy,{s},{v},1.0,0.1,test" for s in "FM" for v in ("L1", "L2", "L3", "L4", "L1-L4")]
    path.write_text("\n".join(rows) + "\n")
    monkeypatch.setattr(paths, "reference_tables_file", lambda: path)
    return path


def test_t_score_by_hand(toy_table):
    assert t_score(0.85, "L1", "F", "toy") == pytest.approx(-1.5)  # (0.85 − 1.0) / 0.1
    assert t_score(1.25, "l3", "m", "TOY") == pytest.approx(2.5)  # ids are case-insensitive
    assert bmd_from_t(-2.5, "L2", "F", "toy") == pytest.approx(0.75)
    assert reference_ids() == ["toy"]


def test_t_score_from_the_shipped_rows_and_round_trip():
    mean, sd = _ref("hologic", "F", "L2")
    assert t_score(0.80, "L2", "F", "hologic") == pytest.approx((0.80 - mean) / sd)
    assert isinstance(t_score(0.80, "L2", "F"), float)
    assert bmd_from_t(t_score(0.80, "L2", "F"), "L2", "F") == pytest.approx(0.80)
    mean_m, sd_m = _ref("lunar", "M", "L4")
    arr = t_score(np.array([1.0, np.nan]), "L4", "M", "lunar")
    assert arr[0] == pytest.approx((1.0 - mean_m) / sd_m) and math.isnan(arr[1])
    t = np.linspace(-4, 2, 7)
    np.testing.assert_allclose(t_score(bmd_from_t(t, "L1", "M", "lunar"), "L1", "M", "lunar"), t)


def test_every_table_has_both_sexes_all_vertebrae_realistic_values_and_a_source():
    tables = load_reference_tables().reset_index()
    assert set(tables.reference) == {"hologic", "lunar"}
    for ref, part in tables.groupby("reference"):
        assert len(part) == 10, ref
        assert set(part.sex) == {"F", "M"}, ref
        assert set(part.vertebra) == {"L1", "L2", "L3", "L4", "L1-L4"}, ref
        assert part["source"].str.contains("approximate").all()
        assert part["mean"].between(0.9, 1.3).all() and part["sd"].between(0.10, 0.14).all(), ref


def test_hologic_rows_are_frozen():
    """The twin cohort's osteoporosis prevalence is calibrated against these values."""
    expected = {("F", "L1"): (0.945, 0.105), ("F", "L2"): (1.040, 0.112), ("F", "L3"): (1.090, 0.115),
                ("F", "L4"): (1.085, 0.115), ("F", "L1-L4"): (1.047, 0.110),
                ("M", "L1"): (0.985, 0.115), ("M", "L2"): (1.065, 0.120), ("M", "L3"): (1.105, 0.125),
                ("M", "L4"): (1.100, 0.125), ("M", "L1-L4"): (1.068, 0.120)}
    for (sex, v), (mean, sd) in expected.items():
        assert _ref("hologic", sex, v) == (mean, sd)


def test_lunar_rows_are_the_hologic_rows_on_the_lunar_scale():
    """The shipped lunar table is derived with Hui 1997: equal standardised BMD, hence equal T-scores."""
    for sex in "FM":
        for v in ("L1", "L2", "L3", "L4", "L1-L4"):
            h_mean, h_sd = _ref("hologic", sex, v)
            l_mean, l_sd = _ref("lunar", sex, v)
            assert standardized_bmd(l_mean, "lunar") == pytest.approx(standardized_bmd(h_mean, "hologic"), abs=1e-3)
            assert l_sd * 0.9683 == pytest.approx(h_sd * 1.0550, abs=1e-3)


def test_unknown_reference_sex_or_vertebra_is_a_clear_error():
    with pytest.raises(TScoreError, match="norland_x"):
        t_score(1.0, "L1", "F", "norland_x")
    with pytest.raises(TScoreError, match="'X'"):
        t_score(1.0, "L1", "X")
    with pytest.raises(TScoreError, match="L5"):
        t_score(1.0, "L5", "F")
    assert issubclass(TScoreError, ValueError)


def test_malformed_reference_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("reference,sex,vertebra,mean,sd,source\nx,F,L1,1.0,0,zero sd\n")
    with pytest.raises(TScoreError, match="non-positive mean or SD in rows 2"):
        load_reference_tables(bad)
    (tmp_path / "cols.csv").write_text("reference,sex,mean\nx,F,1\n")
    with pytest.raises(TScoreError, match="lack column"):
        load_reference_tables(tmp_path / "cols.csv")


def test_load_reference_tables_returns_a_copy():
    tables = load_reference_tables()
    tables["mean"] = 0.0
    assert load_reference_tables()["mean"].min() > 0.5


def test_reported_t_scores_take_precedence_cell_by_cell():
    df = pd.DataFrame({
        "reference": ["hologic", "hologic", "lunar"], "sex": ["F", "M", "F"],
        "bmd_l1": [0.8, 0.9, 1.0], "bmd_l2": [0.9, np.nan, 1.0], "bmd_l3": [1.0, 1.0, np.nan],
        "bmd_l4": [1.0, 1.1, 1.0],
        "t_l1": [-3.3, np.nan, np.nan], "t_l2": [np.nan, np.nan, np.nan], "t_l3": [np.nan, np.nan, -2.0],
        "t_l4": [np.nan, np.nan, np.nan],
    }, index=[10, 11, 12])
    t = t_scores_for_manifest(df)
    assert list(t.columns) == ["t_l1", "t_l2", "t_l3", "t_l4"] and list(t.index) == [10, 11, 12]
    assert t.loc[10, "t_l1"] == -3.3  # copied from the DXA report
    mean, sd = _ref("hologic", "F", "L2")
    assert t.loc[10, "t_l2"] == pytest.approx((0.9 - mean) / sd)  # computed beside it
    assert t.loc[11, "t_l1"] == pytest.approx(t_score(0.9, "L1", "M"))  # per-row sex
    assert t.loc[12, "t_l1"] == pytest.approx(t_score(1.0, "L1", "F", "lunar"))  # per-row table
    assert t.loc[12, "t_l3"] == -2.0  # a report T-score even where the BMD cell is empty
    assert math.isnan(t.loc[11, "t_l2"])  # excluded vertebra stays excluded


def test_who_category_boundaries_and_the_papers_strict_label():
    assert list(who_category([-0.99, -1.0, -1.01, -2.49, -2.5, -2.51])) == [
        "normal", "normal", "osteopenia", "osteopenia", "osteoporosis", "osteoporosis"]
    assert who_category(-1.0) == "normal" and who_category(-2.5) == "osteoporosis"
    assert who_category(float("nan")) == ""
    assert list(who_category([np.nan, 0.5])) == ["", "normal"]
    assert who_category(-2.0, threshold=-2.0) == "osteoporosis"
    # the paper's positive label is strict: T = −2.5 is WHO osteoporosis but not a positive
    assert osteoporotic(-2.5) is False and osteoporotic(-2.5001) is True
    assert osteoporotic(-2.5, inclusive=True) is True
    assert list(osteoporotic([-2.6, -2.4, np.nan])) == [True, False, False]
    assert list(osteoporotic([-2.1, -1.9], threshold=-2.0)) == [True, False]


def test_standardized_bmd_matches_hui_1997_by_hand():
    assert standardized_bmd(1.0, "Hologic") == pytest.approx(1.0550 * (1.0 - 0.972) + 1.0436)
    assert standardized_bmd(1.0, "lunar") == pytest.approx(0.9683 * (1.0 - 1.100) + 1.0436)
    assert standardized_bmd(1.0, "NORLAND") == pytest.approx(0.9743 * (1.0 - 0.969) + 1.0436)
    assert standardized_bmd(0.972, "hologic") == pytest.approx(1.0436)
    out = standardized_bmd(np.array([1.1, np.nan]), "lunar")
    assert out[0] == pytest.approx(1.0436) and math.isnan(out[1])
    with pytest.raises(TScoreError, match="unknown DXA maker"):
        standardized_bmd(1.0, "acme")


def test_patient_level_uses_valid_vertebrae_only():
    t = pd.DataFrame({"t_l1": [-1.0, np.nan, np.nan], "t_l2": [-3.0, -2.0, np.nan],
                      "t_l3": [np.nan, -1.0, np.nan], "t_l4": [0.0, np.nan, np.nan]})
    pl = patient_level(t)
    assert list(pl.columns) == ["t_min", "t_mean"]
    assert pl.t_min.tolist()[:2] == [-3.0, -2.0]
    assert pl.t_mean.tolist()[:2] == pytest.approx([-4.0 / 3, -1.5])
    assert pl.iloc[2].isna().all()  # no valid vertebra
