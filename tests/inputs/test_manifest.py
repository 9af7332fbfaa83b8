"""Manifest validation, splitting, summary and atomic writing."""

from __future__ import annotations

import os
import re
import stat

import numpy as np
import pandas as pd
import pytest
from manifests import HEADER, ROWS, image_folder, write_csv  # tests/ is on sys.path

from bmd.cli import main as cli_main
from bmd.infra import paths
from bmd.inputs.manifest import (
    OPTIONAL,
    REQUIRED,
    ManifestError,
    load_manifest,
    schema,
    split_manifest,
    summarize,
    write_manifest,
)
from bmd.inputs.tscores import osteoporotic, t_scores_for_manifest


@pytest.fixture
def folder(tmp_path):
    return image_folder(tmp_path)


def _replace(row_index: int, column: str, value: str, rows=None) -> list[str]:
    cols = HEADER.split(",")
    table = [r.split(",") for r in (rows or ROWS)]
    table[row_index][cols.index(column)] = value
    return [",".join(r) for r in table]


def _drop_column(column: str) -> tuple[str, list[str]]:
    cols = HEADER.split(",")
    k = cols.index(column)
    return ",".join(c for i, c in enumerate(cols) if i != k), [
        ",".join(c for i, c in enumerate(r.split(",")) if i != k) for r in ROWS]


# ---------------------------------------------------------------------------------------------- good


def test_good_manifest_loads_typed(folder):
    df = load_manifest(write_csv(folder, ROWS))
    assert len(df) == 3 and df["bmd_l1"].dtype == float and df["age"].dtype == float
    assert np.isnan(df.loc[1, "bmd_l2"])  # empty cell: excluded vertebra
    assert df.loc[0, "image"] == "img/a.png"  # as written
    assert df.loc[0, "image_path"] == str((folder / "img" / "a.png").resolve())
    assert list(df["case_id"]) == ["c1", "c2", "c3"]
    text = summarize(df)
    assert "3 cases, 2 patients" in text and "split: train 2, val 0, test 1" in text
    assert "L2: BMD" in text and "excluded 1" in text and "F 2, M 1" in text and "age 66–71" in text


def test_schema_file_is_the_source_of_the_column_constants():
    columns = schema()["columns"]
    assert REQUIRED == ("case_id", "patient_id", "image", "bmd_l1", "bmd_l2", "bmd_l3", "bmd_l4",
                        "sex", "age", "reference")
    assert OPTIONAL == ("split", "landmarks", "t_l1", "t_l2", "t_l3", "t_l4", "dxa_interval_days", "device")
    assert set(columns) == set(REQUIRED) | set(OPTIONAL)
    for name, spec in columns.items():
        assert spec["type"] in {"string", "number", "path"} and spec["description"], name
        assert spec["empty"] in {"error", "excluded", "allowed"}, name
        if spec["type"] == "number":
            assert spec["min"] < spec["max"], name


def test_shipped_example_manifest_is_valid():
    df = load_manifest(paths.data_manifest_dir() / "example" / "manifest.csv", check_files="decode")
    assert len(df) == 4 and df["split"].notna().all()
    assert df["landmarks_path"].iloc[0].endswith("landmarks.csv") and df["landmarks_path"].iloc[3] == ""


def test_extra_columns_blank_lines_and_trailing_commas(folder):
    rows = [ROWS[0] + ",scanner A,", "", ROWS[1] + ",scanner B,", ROWS[2] + ",,"]
    df = load_manifest(write_csv(folder, rows, header=HEADER + ",note,"))
    assert list(df["note"]) == ["scanner A", "scanner B", ""] and "" not in df.columns
    # a blank line does not shift the row numbers of what follows
    rows = [ROWS[0], "", "", *_replace(1, "sex", "x")[1:]]
    with pytest.raises(ManifestError) as info:
        load_manifest(write_csv(folder, rows, name="blank.csv"))
    assert info.value.errors == ["row 5 (case_id c2), column sex: 'x' is not F or M"]


def test_quoted_multiline_cell_keeps_row_numbers(folder):
    rows = [ROWS[0] + ',"two\nlines"', ROWS[1] + ",ok", _replace(2, "age", "abc")[2] + ",ok"]
    with pytest.raises(ManifestError) as info:
        load_manifest(write_csv(folder, rows, header=HEADER + ",note"))
    assert info.value.errors == ["row 5 (case_id c3), column age: 'abc' is not a number"]


def test_absolute_and_parent_paths_are_accepted(folder):
    sub = folder / "manifests"
    sub.mkdir()
    rows = _replace(0, "image", str(folder / "img" / "a.png"))
    rows = _replace(1, "image", "../img/b.png", rows)
    rows = _replace(2, "image", "../img/a.png", rows)
    df = load_manifest(write_csv(sub, rows))
    assert df["image_path"].tolist() == [str((folder / "img" / n).resolve()) for n in ("a.png", "b.png", "a.png")]


# ----------------------------------------------------------------------------------------------- bad

BAD = {
    "missing column": (dict(header=_drop_column("age")[0], rows=_drop_column("age")[1]),
                       r"^row 1 \(header\), column age: required column missing$"),
    "duplicate header": (dict(header=HEADER + ",sex", rows=[r + ",F" for r in ROWS]),
                         r"^row 1 \(header\), column sex: duplicated column name \(columns 8 and 12\)"),
    "unnamed column with values": (dict(header=HEADER + ",", rows=[ROWS[0] + ",x", *(r + "," for r in ROWS[1:])]),
                                   r"^row 1 \(header\), column number 12: no column name, but row 2 has a value"),
    "missing image": (dict(rows=_replace(0, "image", "img/zzz.png")),
                      r"^row 2 \(case_id c1\), column image: file not found: img/zzz.png$"),
    "image is a folder": (dict(rows=_replace(1, "image", "img")),
                          r"^row 3 \(case_id c2\), column image: not a regular file: img$"),
    "empty image cell": (dict(rows=_replace(1, "image", "")), r"^row 3 \(case_id c2\), column image: empty$"),
    "text bmd": (dict(rows=_replace(1, "bmd_l3", "abc")),
                 r"^row 3 \(case_id c2\), column bmd_l3: 'abc' is not a number$"),
    "decimal comma bmd": (dict(rows=_replace(1, "bmd_l3", '"0,8"')),
                          r"^row 3 \(case_id c2\), column bmd_l3: '0,8' is not a number$"),
    "implausible bmd": (dict(rows=_replace(2, "bmd_l4", "3.7")),
                        r"^row 4 \(case_id c3\), column bmd_l4: 3.7 is outside the plausible range 0.2–2.5 g/cm2$"),
    "bmd in mg/cm2": (dict(rows=_replace(2, "bmd_l2", "1050")), r"^row 4 \(case_id c3\), column bmd_l2: 1050 is outside"),
    "negative bmd": (dict(rows=_replace(2, "bmd_l1", "-0.5")), r"^row 4 \(case_id c3\), column bmd_l1: -0.5 is outside"),
    "inf bmd": (dict(rows=_replace(0, "bmd_l2", "inf")),
                r"^row 2 \(case_id c1\), column bmd_l2: 'inf' is not a finite number$"),
    "nan bmd": (dict(rows=_replace(0, "bmd_l2", "NaN")),
                r"^row 2 \(case_id c1\), column bmd_l2: 'NaN' is not a finite number$"),
    "all vertebrae empty": (dict(rows=["c9,p9,img/a.png,,,,,F,60,hologic,train"]),
                            r"^row 2 \(case_id c9\), column bmd_l1..bmd_l4: all four vertebrae are empty"),
    "bad sex": (dict(rows=_replace(0, "sex", "female")), r"^row 2 \(case_id c1\), column sex: 'female' is not F or M$"),
    "bad age": (dict(rows=_replace(0, "age", "7")),
                r"^row 2 \(case_id c1\), column age: 7 is outside the plausible range 18–110 years$"),
    "text age": (dict(rows=_replace(0, "age", "sixty")), r"^row 2 \(case_id c1\), column age: 'sixty' is not a number$"),
    "empty age": (dict(rows=_replace(2, "age", "")), r"^row 4 \(case_id c3\), column age: empty$"),
    "duplicate case id": (dict(rows=_replace(2, "case_id", "c1")),
                          r"^rows 2, 4 \(case_id c1\), column case_id: duplicate case_id$"),
    "empty case id": (dict(rows=_replace(0, "case_id", "")), r"^row 2, column case_id: empty$"),
    "unknown reference": (dict(rows=_replace(0, "reference", "acme")),
                          r"^row 2 \(case_id c1\), column reference: unknown reference table 'acme' \(known: hologic"),
    "bad split": (dict(rows=_replace(0, "split", "training")),
                  r"^row 2 \(case_id c1\), column split: 'training' is not train, val or test$"),
    "patient in two splits": (dict(rows=_replace(1, "split", "val")),
                              r"^rows 2, 3 \(patient_id p1\), column split: one patient in more than one split "
                              r"\(row 2 train, row 3 val\)$"),
    "column name in another case": (dict(header=HEADER.replace("case_id", "Case_ID"), rows=ROWS),
                                    r"^row 1 \(header\), column case_id: required column missing \(found 'Case_ID'"),
    "ragged row": (dict(rows=[*ROWS, "c4,p4,img/none.png,0.9"]),
                   r"^row 5 \(case_id c4\): has 4 cells, the header has 11"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_manifest_names_row_and_column(folder, case):
    kwargs, pattern = BAD[case]
    path = write_csv(folder, kwargs["rows"], header=kwargs.get("header", HEADER))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert len(info.value.errors) == 1, info.value.errors  # the one problem, nothing spurious
    assert re.search(pattern, info.value.errors[0]), info.value.errors


BAD_OPTIONAL = {
    "t-score out of range": ("t_l2", "-12", r"^row 2 \(case_id c1\), column t_l2: -12 is outside the plausible range -10–10$"),
    "t-score text": ("t_l4", "low", r"^row 2 \(case_id c1\), column t_l4: 'low' is not a number$"),
    "interval text": ("dxa_interval_days", "3 weeks",
                      r"^row 2 \(case_id c1\), column dxa_interval_days: '3 weeks' is not a number$"),
    "missing landmark file": ("landmarks", "nope.csv", r"^row 2 \(case_id c1\), column landmarks: file not found"),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONAL))
def test_bad_optional_columns(folder, case):
    column, value, pattern = BAD_OPTIONAL[case]
    header = HEADER + f",{column},device"
    rows = [ROWS[0] + f",{value},", *(r + ",," for r in ROWS[1:])]
    with pytest.raises(ManifestError) as info:
        load_manifest(write_csv(folder, rows, header=header))
    assert len(info.value.errors) == 1 and re.search(pattern, info.value.errors[0]), info.value.errors


def test_file_level_problems(folder):
    (folder / "empty.csv").write_text("")
    with pytest.raises(ManifestError, match="empty manifest"):
        load_manifest(folder / "empty.csv")
    (folder / "blank.csv").write_text("\n \n")
    with pytest.raises(ManifestError, match="empty manifest"):
        load_manifest(folder / "blank.csv")
    with pytest.raises(ManifestError, match="header but no data rows"):
        load_manifest(write_csv(folder, [], name="h.csv"))
    latin = write_csv(folder, [ROWS[0], ROWS[1].replace("c2", "cé2")], name="l.csv", encoding="latin-1")
    with pytest.raises(ManifestError, match=r"row 3: not UTF-8"):
        load_manifest(latin)
    with pytest.raises(ManifestError, match="manifest file not found"):
        load_manifest(folder / "none.csv")
    with pytest.raises(ManifestError, match="not a regular file"):
        load_manifest(folder / "img")
    bom = write_csv(folder, ROWS, name="bom.csv", encoding="utf-8-sig")  # spreadsheet UTF-8 with BOM
    assert list(load_manifest(bom).columns[:2]) == ["case_id", "patient_id"]


def test_all_errors_are_reported_at_once(folder):
    rows = _replace(0, "sex", "x")
    rows = _replace(1, "bmd_l1", "abc", rows)
    rows = _replace(2, "reference", "acme", rows)
    with pytest.raises(ManifestError) as info:
        load_manifest(write_csv(folder, rows))
    errors = info.value.errors
    assert len(errors) == 3
    assert [e.split(",")[0] for e in errors] == ["row 2 (case_id c1)", "row 3 (case_id c2)", "row 4 (case_id c3)"]


def test_a_missing_column_does_not_hide_row_errors(folder):
    header, rows = _drop_column("age")
    rows[0] = rows[0].replace("0.80", "9.9")
    with pytest.raises(ManifestError) as info:
        load_manifest(write_csv(folder, rows, header=header))
    assert len(info.value.errors) == 2 and "column age: required column missing" in info.value.errors[0]
    assert info.value.errors[1].startswith("row 2 (case_id c1), column bmd_l1: 9.9 is outside")


def test_file_checks_can_be_skipped_or_deepened(folder):
    path = write_csv(folder, _replace(0, "image", "img/zzz.png"))
    assert len(load_manifest(path, check_files=False)) == 3
    (folder / "img" / "b.png").write_text("not an image")
    good = write_csv(folder, ROWS, name="g.csv")
    assert len(load_manifest(good)) == 3  # existence only: no decoding by default
    with pytest.raises(ManifestError) as info:
        load_manifest(good, check_files="decode")
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith("row 3 (case_id c2), column image: cannot use img/b.png: ")


# --------------------------------------------------------------------------------------------- split


def _cohort(n_patients=60, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        bmd = rng.normal(0.85, 0.15)
        for scan in range(1 + (p % 7 == 0) + (p % 11 == 0)):
            rows.append({"case_id": f"c{p}_{scan}", "patient_id": f"p{p}", "image": "x.png",
                         **{f"bmd_l{k}": bmd + 0.03 * k for k in range(1, 5)}, "sex": "F", "age": 70.0,
                         "reference": "hologic"})
    return pd.DataFrame(rows)


def _positive(df):
    return osteoporotic(t_scores_for_manifest(df).to_numpy()).any(axis=1)


def test_split_is_patient_level_deterministic_sized_and_stratified():
    df = _cohort(200)
    n = len(df)
    sizes = (round(0.65 * n), round(0.15 * n), n - round(0.65 * n) - round(0.15 * n))
    a = split_manifest(df, sizes=sizes, seed=3)
    b = split_manifest(df, sizes=sizes, seed=3)
    assert a["split"].tolist() == b["split"].tolist()
    assert split_manifest(df, sizes=sizes, seed=4)["split"].tolist() != a["split"].tolist()
    assert (a.groupby("patient_id")["split"].nunique() == 1).all()
    counts = a["split"].value_counts()
    for s, target in zip(("train", "val", "test"), sizes, strict=True):
        assert abs(counts[s] - target) <= 2, (counts, sizes)  # within one patient's scans
    pos = _positive(a)
    assert 0.15 < pos.mean() < 0.85  # the cohort has both strata
    rates = pd.Series(pos).groupby(a["split"].to_numpy()).mean()
    assert rates.max() - rates.min() < 0.06, rates


def test_split_fractions_and_bad_sizes():
    df = _cohort(100)
    out = split_manifest(df, fractions=(0.5, 0.25, 0.25))
    counts = out["split"].value_counts()
    assert abs(counts["train"] - len(df) / 2) <= 2 and counts.sum() == len(df)
    with pytest.raises(ValueError, match="adding up"):
        split_manifest(df, sizes=(1, 2, 3))


def test_complete_split_is_kept_and_partial_split_is_honoured():
    df = _cohort().assign(split="test")
    assert split_manifest(df) is df
    df = _cohort()
    df["split"] = np.where(df["patient_id"].isin(["p0", "p1"]), "val", None)
    out = split_manifest(df, seed=1)
    assert (out.loc[df["patient_id"].isin(["p0", "p1"]), "split"] == "val").all()
    assert out["split"].isin(["train", "val", "test"]).all()
    assert (out.groupby("patient_id")["split"].nunique() == 1).all()


def test_split_then_load_round_trip(folder):
    df = _cohort(20).assign(image="img/a.png")
    path = write_manifest(split_manifest(df, seed=0), folder / "split.csv")
    again = load_manifest(path)
    assert again["split"].notna().all() and len(again) == len(df)


# ------------------------------------------------------------------------------------- write and CLI


def test_write_manifest_is_atomic_and_round_trips(folder, monkeypatch):
    rows = _replace(0, "case_id", "cé1")  # non-ASCII survives (UTF-8 whatever the locale)
    df = load_manifest(write_csv(folder, rows))
    target = folder / "copy.csv"
    out = write_manifest(df, target)
    assert out == target and not list(folder.glob(".copy.csv.*"))
    text = target.read_text(encoding="utf-8")
    assert text.splitlines()[0] == HEADER and "image_path" not in text
    assert ",66,hologic" in text  # whole-number floats written as integers
    again = load_manifest(target)
    pd.testing.assert_frame_equal(again, df)
    assert stat.S_IMODE(os.stat(target).st_mode) & 0o044  # not left private like a temp file

    # a failure half way leaves the old file intact and no temp file behind
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_manifest(df.iloc[:1], target)
    assert target.read_bytes() == before and not list(folder.glob(".copy.csv.*"))


def test_validate_manifest_cli(folder, capsys):
    assert cli_main(["validate-manifest", str(write_csv(folder, ROWS))]) == 0
    out = capsys.readouterr().out
    assert "3 cases, 2 patients" in out and "T < -2.5" in out
    bad = write_csv(folder, _replace(0, "sex", "x", _replace(1, "image", "img/none.png")), name="bad.csv")
    assert cli_main(["validate-manifest", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "invalid manifest (2 error(s))" in err and "row 2 (case_id c1), column sex" in err
    assert cli_main(["validate-manifest", "--no-file-check", str(write_csv(folder, _replace(1, "image", "img/none.png"),
                                                                        name="nf.csv"))]) == 0
