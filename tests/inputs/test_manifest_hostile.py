"""Hostile manifests: other encodings, broken headers, escaping paths, absurd numbers, huge files.

Every problem must come back as a :class:`ManifestError` whose ``errors`` are one line each and name
the row (the line in the file, header = line 1) and the column; ``bmd validate-manifest`` prints them
one per line and exits with status 1, without a traceback; nothing is ever written.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from manifests import HEADER, ROWS, image_folder, write_csv  # tests/ is on sys.path

from bmd.cli import main as cli_main
from bmd.inputs.manifest import BMD_COLUMNS, REQUIRED, ManifestError, load_manifest

COLUMNS = HEADER.split(",")


@pytest.fixture
def folder(tmp_path):
    return image_folder(tmp_path)


def _set(row: int, column: str, value: str, rows=ROWS) -> list[str]:
    table = [r.split(",") for r in rows]
    table[row][COLUMNS.index(column)] = value
    return [",".join(r) for r in table]


def _errors(path: Path, **kwargs) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load_manifest(path, **kwargs)
    errors = info.value.errors
    assert errors and all(e and "\n" not in e and "\r" not in e and len(e) < 400 for e in errors), errors
    return errors


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folder`` (hidden ones too) with its size and modification time."""
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


# ------------------------------------------------------------------------------------------ encodings


@pytest.mark.parametrize(("encoding", "pattern"), [
    ("utf-16", "UTF-16 or UTF-32 text, not UTF-8; save the manifest as UTF-8 CSV$"),
    ("utf-16-le", "UTF-16 or UTF-32 text, not UTF-8"),
    ("utf-16-be", "UTF-16 or UTF-32 text, not UTF-8"),
    ("utf-32", "UTF-16 or UTF-32 text, not UTF-8"),
])
def test_wide_encodings_get_one_clear_error(folder, encoding, pattern):
    errors = _errors(write_csv(folder, ROWS, encoding=encoding))
    assert len(errors) == 1 and errors[0].startswith(str(folder / "m.csv")), errors
    assert re.search(pattern, errors[0]), errors


def test_latin1_names_the_row_with_the_first_bad_byte(folder):
    rows = _set(2, "patient_id", "pé2")
    errors = _errors(write_csv(folder, rows, encoding="latin-1"))
    assert errors == [f"{folder / 'm.csv'}: row 4: not UTF-8 text (byte {len(HEADER) + len(ROWS[0]) + len(ROWS[1]) + 7}); "
                      "save the manifest as UTF-8 CSV"]


def test_binary_junk_and_nul_bytes(folder):
    junk = folder / "junk.csv"
    junk.write_bytes(random.Random(0).randbytes(4000))
    assert len(_errors(junk)) == 1
    nul = write_csv(folder, _set(1, "case_id", "c\x002"), name="nul.csv")
    assert _errors(nul) == [f"{nul}: row 3: NUL byte, so not a text file; save the manifest as UTF-8 CSV"]
    gz = folder / "m.csv.gz"
    gz.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4)
    assert len(_errors(gz)) == 1


def test_byte_order_marks_are_accepted(folder):
    assert len(load_manifest(write_csv(folder, ROWS, encoding="utf-8-sig"))) == 3
    # two files joined together leave a mark inside the text: it is no part of a column name
    path = folder / "twice.csv"
    path.write_text("\ufeff\ufeff" + HEADER + "\n" + "\n".join(ROWS) + "\n", encoding="utf-8")
    assert list(load_manifest(path).columns[:2]) == ["case_id", "patient_id"]


@pytest.mark.parametrize("sep", [";", "\t"])
def test_other_separators_get_one_clear_error(folder, sep):
    path = write_csv(folder, [r.replace(",", sep) for r in ROWS], header=HEADER.replace(",", sep))
    errors = _errors(path)
    assert len(errors) == 1 and f"looks separated by {sep!r}" in errors[0], errors


# -------------------------------------------------------------------------------------------- header


def test_extra_columns_are_kept_as_text(folder):
    rows = [r + f",scanner {k},{k * 1.5}" for k, r in enumerate(ROWS)]
    df = load_manifest(write_csv(folder, rows, header=HEADER + ",note,bmd_l5"))
    assert list(df["note"]) == ["scanner 0", "scanner 1", "scanner 2"]
    assert list(df["bmd_l5"]) == ["0.0", "1.5", "3.0"]  # unknown: kept as written, not typed


@pytest.mark.parametrize("name", ["image_path", "landmarks_path"])
def test_columns_the_loader_adds_are_refused(folder, name):
    rows = [r + ",/etc/passwd" for r in ROWS]
    errors = _errors(write_csv(folder, rows, header=f"{HEADER},{name}"))
    assert errors == [f"row 1 (header), column {name}: reserved for the resolved path the loader adds; "
                      "rename or drop this column"]


def test_every_missing_required_column_is_named(folder):
    keep = [c for c in COLUMNS if c not in ("age", "sex", "image")]
    rows = [",".join(v for c, v in zip(COLUMNS, r.split(","), strict=True) if c in keep) for r in ROWS]
    errors = _errors(write_csv(folder, rows, header=",".join(keep).replace("case_id", "CASE_ID")))
    assert errors == [
        "row 1 (header), column case_id: required column missing (found 'CASE_ID': names are case-sensitive)",
        "row 1 (header), column image: required column missing",
        "row 1 (header), column sex: required column missing",
        "row 1 (header), column age: required column missing",
    ]


def test_header_only_and_duplicated_names(folder):
    rows = [r + ",0.5" for r in ROWS]
    errors = _errors(write_csv(folder, rows, header=HEADER + ",bmd_l1"))
    assert errors == ["row 1 (header), column bmd_l1: duplicated column name (columns 4 and 12); the first is used"]
    hostile = "x\u200b" * 300  # a long invisible name is shown clipped
    errors = _errors(write_csv(folder, [r + ",1,2" for r in ROWS], header=f"{HEADER},{hostile},{hostile}", name="d.csv"))
    assert len(errors) == 1 and "duplicated column name" in errors[0] and "…" in errors[0]


# --------------------------------------------------------------------------------------------- paths


@pytest.fixture
def nested(folder):
    """A manifest folder inside ``folder``, whose images are outside it."""
    sub = folder / "site"
    sub.mkdir()
    (sub / "inside.png").write_bytes((folder / "img" / "a.png").read_bytes())
    (sub / "link.png").symlink_to(folder / "img" / "b.png")
    return sub


@pytest.mark.parametrize(("image", "reason"), [
    ("../img/a.png", None), ("{folder}/img/b.png", None), ("link.png", None),
    ("inside.png", "inside"), ("{folder}/site/inside.png", "inside"), ("./../site/inside.png", "inside"),
])
def test_paths_leaving_the_folder_are_accepted_unless_confined(folder, nested, image, reason):
    image = image.format(folder=folder)
    path = write_csv(nested, _set(0, "image", image, rows=[ROWS[0].replace("img/a.png", "inside.png")]))
    assert load_manifest(path).loc[0, "image_path"].endswith(".png")  # default: images may live elsewhere
    if reason == "inside":
        assert load_manifest(path, within_folder=True).loc[0, "image_path"] == str(nested / "inside.png")
    else:
        assert _errors(path, within_folder=True) == [
            f"row 2 (case_id c1), column image: leads outside the manifest's folder: {image}"]


def test_confined_paths_check_landmarks_too_and_report_every_row(folder, nested):
    rows = [ROWS[0].replace("img/a.png", "../img/a.png") + ",../../etc/passwd",
            ROWS[1].replace("img/b.png", "inside.png") + ",",
            ROWS[2].replace("img/a.png", "/etc/hostname") + ",inside.png"]
    errors = _errors(write_csv(nested, rows, header=HEADER + ",landmarks"), within_folder=True, check_files=False)
    assert errors == [
        "row 2 (case_id c1), column image: leads outside the manifest's folder: ../img/a.png",
        "row 4 (case_id c3), column image: leads outside the manifest's folder: /etc/hostname",
        "row 2 (case_id c1), column landmarks: leads outside the manifest's folder: ../../etc/passwd",
    ]


def test_unresolvable_and_odd_paths_name_their_row(folder):
    (folder / "loop.png").symlink_to(folder / "loop.png")
    os.mkfifo(folder / "pipe.png")
    rows = _set(0, "image", "loop.png")
    rows = _set(1, "image", '"img/a\n.png"', rows)
    rows = _set(2, "image", "x" * 5000, rows)
    errors = sorted(_errors(write_csv(folder, rows + [ROWS[0].replace("c1,p1,img/a.png", "c4,p4,pipe.png")])))
    # the quoted two-line cell takes lines 3 and 4, so c3 is on line 5
    assert errors[0] == "row 2 (case_id c1), column image: cannot resolve the path (symlink loop): loop.png"
    assert errors[1] == r"row 3 (case_id c2), column image: 'img/a\n.png' contains a control character"
    assert errors[2].startswith("row 5 (case_id c3), column image: cannot access: File name too long: xxx")
    assert errors[2].endswith("x…")
    assert errors[3] == "row 6 (case_id c4), column image: not a regular file: pipe.png"
    assert len(errors) == 4


# ------------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(("value", "problem"), [
    ("nan", "'nan' is not a finite number"), ("NaN", "'NaN' is not a finite number"),
    ("inf", "'inf' is not a finite number"), ("-Infinity", "'-Infinity' is not a finite number"),
    ("1e400", "'1e400' is not a finite number"), ("1e-400", "1e-400 is outside the plausible range 0.2–2.5 g/cm2"),
    ("-0.8", "-0.8 is outside"), ("0", "0 is outside"), ("25", "25 is outside the plausible range"),
    ("812", "812 is outside"), ("0x1p-1", "'0x1p-1' is not a number"), ("0_8", "'0_8' is not a number"),
    ("０.８", "'０.８' is not a number"), ("٠٫٨", "'٠٫٨' is not a number"), ("0.8.1", "'0.8.1' is not a number"),
    ("8" * 500, "8'… is not a finite number"), ("0.8 g", "'0.8 g' is not a number"),
])
def test_bmd_values_that_are_not_plausible_numbers(folder, value, problem):
    errors = _errors(write_csv(folder, _set(1, "bmd_l3", f'"{value}"')))
    assert len(errors) == 1 and errors[0].startswith("row 3 (case_id c2), column bmd_l3: ") and problem in errors[0]


@pytest.mark.parametrize(("value", "expected"), [("+0.8", 0.8), (".8", 0.8), ("8e-1", 0.8), (" 0.8 ", 0.8),
                                                  ("2.5", 2.5), ("0.2", 0.2)])
def test_plausible_spellings_load_as_the_number_validated(folder, value, expected):
    df = load_manifest(write_csv(folder, _set(1, "bmd_l3", f'"{value}"')))
    assert df.loc[1, "bmd_l3"] == expected


def test_thousands_of_rows_with_one_bad_cell(folder):
    rows = [f"s{k},p{k},img/a.png,0.8,0.9,1.0,1.1,{'FM'[k % 2]},{40 + k % 50},hologic,,"
            + ('"a\nnote"' if k == 10 else "") for k in range(5000)]
    rows[3141] = rows[3141].replace(",0.9,", ",9.9,")
    path = write_csv(folder, rows, header=HEADER + ",note")
    start = time.perf_counter()
    errors = _errors(path)
    # line = header (1) + row index + 1, plus the one extra line of the quoted two-line note before it
    assert errors == ["row 3144 (case_id s3141), column bmd_l2: 9.9 is outside the plausible range 0.2–2.5 g/cm2"]
    assert time.perf_counter() - start < 20
    ok = write_csv(folder, [r.replace(",9.9,", ",0.9,") for r in rows], header=HEADER + ",note", name="ok.csv")
    df = load_manifest(ok)
    assert len(df) == 5000 and df["bmd_l2"].notna().all()


def test_messages_about_many_rows_stay_one_short_line(folder):
    rows = [f"same,p{k},img/a.png,0.8,0.9,1.0,1.1,F,60,hologic,{('train', 'test')[k % 2]}" for k in range(2000)]
    rows = [r.replace(f"p{k},", "p0,") for k, r in enumerate(rows)]
    errors = _errors(write_csv(folder, rows))
    assert errors[0].startswith("rows 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, … (2000 rows) (case_id same), column case_id")
    assert errors[1].startswith("rows 2, 3, 4,") and "(patient_id p0), column split" in errors[1]
    assert len(errors) == 2


def test_line_separators_and_bidi_overrides_are_control_characters_too(folder):
    rows = _set(0, "patient_id", "p\u2028x")
    rows = _set(1, "patient_id", "p\u202e1x", rows)
    errors = _errors(write_csv(folder, rows))
    assert errors == [r"row 2 (case_id c1), column patient_id: 'p\u2028x' contains a control character",
                      r"row 3 (case_id c2), column patient_id: 'p\u202e1x' contains a control character"]


def test_control_characters_in_schema_columns_but_not_in_notes(folder):
    rows = _set(0, "case_id", '"c\t1"')
    rows = _set(1, "sex", '"F\x1b"', rows)  # surrounding spaces, \r and \t included, are stripped
    rows = [r + (',"free\ntext\x07"' if k == 2 else ",") for k, r in enumerate(rows)]
    errors = _errors(write_csv(folder, rows, header=HEADER + ",note"))
    assert errors == [r"row 2 (case_id c\t1), column case_id: 'c\t1' contains a control character",
                      r"row 3 (case_id c2), column sex: 'F\x1b' contains a control character"]


# --------------------------------------------------------------------------------- nothing is written


def test_failed_load_and_failed_validation_write_nothing(folder, capsys):
    path = write_csv(folder, _set(2, "bmd_l1", "25"))
    before = _snapshot(folder)
    _errors(path)
    _errors(path, check_files="decode")
    assert cli_main(["validate-manifest", str(path)]) == 1
    assert _snapshot(folder) == before


# ------------------------------------------------------------------------------------ command line


def test_validate_manifest_prints_every_error_on_its_own_line(folder, capsys):
    rows = _set(0, "case_id", '"c\n1"')
    rows = _set(1, "bmd_l2", "nan", rows)
    rows = _set(2, "image", '"../../x\n.dcm"', rows)
    path = write_csv(folder, rows)
    assert cli_main(["validate-manifest", str(path)]) == 1
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and "Traceback" not in captured.err
    assert lines[0] == f"{path}: invalid manifest (3 error(s)):"
    assert lines[1:] == [  # row numbers are lines in the file: the two-line cell shifts the others
        r"  row 2 (case_id c\n1), column case_id: 'c\n1' contains a control character",
        "  row 4 (case_id c2), column bmd_l2: 'nan' is not a finite number",
        r"  row 5 (case_id c3), column image: '../../x\n.dcm' contains a control character",
    ]


@pytest.mark.parametrize("content", [b"\xff\xfe" + b"c\0" * 50, b"", b"\x89PNG\r\n\x1a\n" + bytes(300)])
def test_validate_manifest_subprocess_exits_1_without_traceback(folder, content):
    path = folder / "bad.csv"
    path.write_bytes(content)
    done = subprocess.run([sys.executable, "-m", "bmd", "validate-manifest", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()]  # a file that is not a manifest: one line
    assert done.stderr.startswith(f"bmd validate-manifest: {path}: ")


# -------------------------------------------------------------------------------------- random cells

HOSTILE_CELLS = ["", " ", "nan", "inf", "-1", "0", "1e309", "25", "abc", "０", "F\x0b", "../x.dcm", "/etc/passwd",
                 "img/a.png", "a" * 3000, '"', "\u202e", "=cmd|' /C calc'!A0", "M", "train", "lunar", "None",
                 "0.8", "18", "111", "\ufeff", "é", "\\\\server\\share\\x.dcm", "C:\\x.dcm", "..", "."]


def test_random_hostile_cells_give_row_and_column_errors_or_load(folder):
    rng = random.Random(7)
    for k in range(150):
        rows = list(ROWS)
        for _ in range(rng.choice((1, 2, 3))):
            cell = rng.choice(HOSTILE_CELLS)
            quoted = '"' + cell.replace('"', '""') + '"'
            rows = _set(rng.randrange(3), rng.choice(COLUMNS), quoted, rows)
        path = write_csv(folder, rows, name=f"r{k}.csv")
        try:
            df = load_manifest(path)
        except ManifestError as exc:
            assert exc.errors and all("\n" not in e and len(e) < 400 for e in exc.errors), exc.errors
            assert all(e.startswith(("row ", "rows ")) for e in exc.errors), exc.errors
            continue
        assert len(df) == 3 and set(REQUIRED) <= set(df.columns)
        for col in BMD_COLUMNS:
            assert df[col].dtype == float and (df[col].isna() | df[col].between(0.2, 2.5)).all()


def test_validate_manifest_within_folder_flag_refuses_escaping_paths(tmp_path, capsys):
    import shutil

    from bmd.cli import main
    from bmd.infra.paths import data_manifest_dir

    site = tmp_path / "site"
    shutil.copytree(data_manifest_dir() / "example", site)
    manifest = site / "manifest.csv"
    text = manifest.read_text().splitlines()
    first = text[1].split(",")
    (tmp_path / "outside.dcm").write_bytes((site / first[2]).read_bytes())
    first[2] = "../outside.dcm"
    manifest.write_text("\n".join([text[0], ",".join(first), *text[2:]]) + "\n")
    assert main(["validate-manifest", str(manifest), "--no-file-check"]) == 0
    capsys.readouterr()
    assert main(["validate-manifest", str(manifest), "--no-file-check", "--within-folder"]) == 1
    err = capsys.readouterr().err
    assert "row 2" in err and "outside the manifest's folder" in err
