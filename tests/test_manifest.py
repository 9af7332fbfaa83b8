"""Manifest validation, splitting, summary and atomic writing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bmd.cli import main as cli_main
from bmd.manifest import (
    ManifestError,
    load_manifest,
    required_columns,
    split_manifest,
    summarize,
    write_manifest,
)

HEADER = "case_id,patient_id,image,bmd_l1,bmd_l2,bmd_l3,bmd_l4,sex,age,reference,split"
GOOD_ROWS = [
    "c1,p1,img/a.png,0.80,0.85,0.90,0.95,F,66,hologic,train",
    "c2,p1,img/b.png,0.70,,0.80,0.82,F,67,hologic,train",
    "c3,p2,img/a.png,1.00,1.05,1.10,1.12,M,71,lunar,test",
]


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "img" / name)
    return tmp_path


def _write(folder, rows, header=HEADER, name="m.csv", encoding="utf-8"):
    path = folder / name
    path.write_bytes(("\n".join([header, *rows]) + "\n").encode(encoding))
    return path


def test_good_manifest_loads_typed(folder):
    df = load_manifest(_write(folder, GOOD_ROWS))
    assert len(df) == 3 and df["bmd_l1"].dtype == float
    assert np.isnan(df.loc[1, "bmd_l2"])  # excluded vertebra
    assert df.loc[0, "image_path"] == str(folder / "img" / "a.png")
    assert "4 cases" not in summarize(df) and "3 cases, 2 patients" in summarize(df)


def test_schema_is_the_source_of_required_columns():
    assert required_columns() == ["case_id", "patient_id", "image", "bmd_l1", "bmd_l2", "bmd_l3", "bmd_l4",
                                  "sex", "age", "reference"]


def _replace(row_index: int, column: str, value: str) -> list[str]:
    cols = HEADER.split(",")
    rows = [r.split(",") for r in GOOD_ROWS]
    rows[row_index][cols.index(column)] = value
    return [",".join(r) for r in rows]


BAD = {
    "missing column": (dict(header=HEADER.replace(",age", ""), rows=[r.rsplit(",", 3)[0] + ",hologic,train"
                                                                       for r in GOOD_ROWS]),
                       r"missing required column\(s\): age"),
    "duplicate header": (dict(header=HEADER + ",sex", rows=[r + ",F" for r in GOOD_ROWS]),
                         "duplicated column header.*sex"),
    "missing image": (dict(rows=_replace(0, "image", "img/zzz.png")), r"row 2 \(case_id c1\), column image: file not"),
    "non-numeric bmd": (dict(rows=_replace(1, "bmd_l3", "0,8x")), r"row 3 .*column bmd_l3: '0' |has 12 cells"),
    "text bmd": (dict(rows=_replace(1, "bmd_l3", "abc")), r"row 3 \(case_id c2\), column bmd_l3: 'abc' is not a number"),
    "implausible bmd": (dict(rows=_replace(2, "bmd_l4", "3.7")), r"row 4 .*column bmd_l4: 3.7 is outside the plausible"),
    "negative bmd": (dict(rows=_replace(2, "bmd_l1", "-0.5")), r"row 4 .*column bmd_l1: -0.5 is outside"),
    "inf bmd": (dict(rows=_replace(0, "bmd_l2", "inf")), r"row 2 .*column bmd_l2: 'inf' is not a finite number"),
    "nan bmd": (dict(rows=_replace(0, "bmd_l2", "nan")), r"row 2 .*column bmd_l2: 'nan' is not a finite number"),
    "all vertebrae empty": (dict(rows=["c9,p9,img/a.png,,,,,F,60,hologic,train"]),
                            r"row 2 \(case_id c9\), column bmd_l1..bmd_l4: all four vertebrae are empty"),
    "bad sex": (dict(rows=_replace(0, "sex", "female")), r"row 2 .*column sex: 'female' is not F or M"),
    "bad age": (dict(rows=_replace(0, "age", "7")), r"row 2 .*column age: 7 is outside the plausible range 18–110"),
    "duplicate case id": (dict(rows=_replace(2, "case_id", "c1")), r"rows 2, 4, column case_id: duplicate case_id c1"),
    "unknown reference": (dict(rows=_replace(0, "reference", "acme")), r"row 2 .*unknown reference table 'acme'"),
    "bad split": (dict(rows=_replace(0, "split", "training")), r"row 2 .*column split: 'training' is not train"),
    "patient in two splits": (dict(rows=_replace(1, "split", "val")),
                              r"patient p1 is in more than one split: row 2 \(train\), row 3 \(val\)"),
    "empty case id": (dict(rows=_replace(0, "case_id", "")), r"row 2, column case_id: empty"),
    "ragged row": (dict(rows=[*GOOD_ROWS, "c4,p4,img/a.png,0.9"]), r"row 5: has 4 cells, the header has 11"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_manifest_names_row_and_column(folder, case):
    kwargs, pattern = BAD[case]
    path = _write(folder, kwargs["rows"], header=kwargs.get("header", HEADER))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert any(__import__("re").search(pattern, e) for e in info.value.errors), info.value.errors


def test_empty_and_header_only_and_non_utf8(folder):
    (folder / "empty.csv").write_text("")
    with pytest.raises(ManifestError, match="empty manifest"):
        load_manifest(folder / "empty.csv")
    with pytest.raises(ManifestError, match="no data rows"):
        load_manifest(_write(folder, [], name="h.csv"))
    latin = _write(folder, [GOOD_ROWS[0].replace("c1", "cé1")], name="l.csv", encoding="latin-1")
    with pytest.raises(ManifestError, match="not UTF-8"):
        load_manifest(latin)
    with pytest.raises(ManifestError, match="manifest file not found"):
        load_manifest(folder / "none.csv")


def test_all_errors_are_reported_at_once(folder):
    rows = _replace(0, "sex", "x")
    rows[1] = rows[1].replace("0.70", "abc")
    rows[2] = rows[2].replace("lunar", "acme")
    with pytest.raises(ManifestError) as info:
        load_manifest(_write(folder, rows))
    assert len(info.value.errors) == 3


def test_file_checks_can_be_skipped_or_deepened(folder):
    path = _write(folder, _replace(0, "image", "img/zzz.png"))
    assert len(load_manifest(path, check_files=False)) == 3
    (folder / "img" / "b.png").write_text("not an image")
    with pytest.raises(ManifestError, match="cannot use img/b.png"):
        load_manifest(_write(folder, GOOD_ROWS), check_files="decode")


def _cohort(n_patients=60, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        bmd = rng.normal(0.85, 0.15)
        for scan in range(1 + (p % 7 == 0)):
            rows.append({"case_id": f"c{p}_{scan}", "patient_id": f"p{p}", "image": "x.png",
                         **{f"bmd_l{k}": bmd + 0.03 * k for k in range(1, 5)}, "sex": "F", "age": 70,
                         "reference": "hologic"})
    return pd.DataFrame(rows)


def test_split_is_patient_level_deterministic_sized_and_stratified():
    df = _cohort()
    a = split_manifest(df, sizes=(44, 12, 13), seed=3)
    b = split_manifest(df, sizes=(44, 12, 13), seed=3)
    assert a["split"].tolist() == b["split"].tolist()
    assert (a.groupby("patient_id")["split"].nunique() == 1).all()
    counts = a["split"].value_counts()
    assert abs(counts["train"] - 44) <= 1 and abs(counts["val"] - 12) <= 1 and abs(counts["test"] - 13) <= 1
    from bmd.tscores import osteoporotic, t_scores_for_manifest

    pos = osteoporotic(t_scores_for_manifest(a).to_numpy()).any(axis=1)
    rates = pd.Series(pos).groupby(a["split"].to_numpy()).mean()
    assert rates.max() - rates.min() < 0.2
    assert split_manifest(df, seed=4)["split"].tolist() != a["split"].tolist()


def test_complete_split_is_kept():
    df = _cohort().assign(split="test")
    assert split_manifest(df)["split"].eq("test").all()


def test_write_manifest_is_atomic_and_round_trips(folder):
    df = load_manifest(_write(folder, GOOD_ROWS))
    out = write_manifest(df, folder / "copy.csv")
    again = load_manifest(out)
    assert again[["case_id", "bmd_l1"]].equals(df[["case_id", "bmd_l1"]])
    assert not list(folder.glob(".copy.csv.*"))


def test_validate_manifest_cli(folder, capsys):
    assert cli_main(["validate-manifest", str(_write(folder, GOOD_ROWS))]) == 0
    assert "3 cases, 2 patients" in capsys.readouterr().out
    assert cli_main(["validate-manifest", str(_write(folder, _replace(0, "sex", "x"), name="bad.csv"))]) == 1
    err = capsys.readouterr().err
    assert "invalid manifest (1 error(s))" in err and "column sex" in err
