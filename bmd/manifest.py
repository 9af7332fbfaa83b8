"""The manifest: one CSV row per chest radiograph with its DXA result.

The schema (columns, types, ranges) lives in ``data_manifest/manifest_schema.json`` and is read from
there: it is the one source of truth for this module and for ``data_manifest/README.md``.
:func:`load_manifest` validates a file and reports *every* problem at once, each naming the CSV line
(the header is line 1) and the column. Extra columns are kept and ignored.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from bmd import VERTEBRAE, paths

BMD_COLUMNS: tuple[str, ...] = tuple(f"bmd_{v.lower()}" for v in VERTEBRAE)
T_COLUMNS: tuple[str, ...] = tuple(f"t_{v.lower()}" for v in VERTEBRAE)
SPLITS: tuple[str, ...] = ("train", "val", "test")


@lru_cache(maxsize=1)
def schema() -> dict:
    """The manifest schema (``data_manifest/manifest_schema.json``)."""
    return json.loads((paths.data_manifest_dir() / "manifest_schema.json").read_text())


def required_columns() -> list[str]:
    """Columns every manifest must have."""
    return [c for c, spec in schema()["columns"].items() if spec["required"]]


def optional_columns() -> list[str]:
    """Columns a manifest may have."""
    return [c for c, spec in schema()["columns"].items() if not spec["required"]]


class ManifestError(ValueError):
    """An invalid manifest; ``errors`` lists every problem, one line each."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        shown = "; ".join(self.errors[:3]) + (f"; … ({len(self.errors)} errors)" if len(self.errors) > 3 else "")
        super().__init__(shown)


def _where(line: int, case_id: str | None, column: str) -> str:
    case = f" (case_id {case_id})" if case_id else ""
    return f"row {line}{case}, column {column}"


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and data rows of a CSV; raises ManifestError for unreadable or empty files."""
    if not path.is_file():
        raise ManifestError([f"{path}: manifest file not found"])
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError([f"{path}: not UTF-8 text (byte {exc.start}); save the manifest as UTF-8 CSV"]) from None
    rows = list(csv.reader(text.splitlines()))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise ManifestError([f"{path}: empty manifest (no header)"])
    header = [h.strip() for h in rows[0]]
    if len(rows) == 1:
        raise ManifestError([f"{path}: manifest has a header but no data rows"])
    return header, rows[1:]


def load_manifest(path: str | os.PathLike, check_files: bool | str = True) -> pd.DataFrame:
    """Read and validate a manifest CSV; returns a typed DataFrame.

    ``check_files``: True checks that every image (and landmark file) exists and is a regular file;
    ``"decode"`` also decodes every image with :func:`bmd.io.read_image` (slow for big cohorts);
    False checks nothing on disk. The DataFrame keeps the columns as written (BMD, age and T-scores as
    floats, empty cells as NaN) and adds ``image_path``/``landmarks_path``: absolute paths resolved
    against the manifest's folder. Raises :class:`ManifestError` listing every problem.
    """
    from bmd.tscores import reference_ids

    path = Path(path).resolve()
    header, rows = _read_rows(path)
    errors: list[str] = []
    spec = schema()["columns"]

    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        errors.append(f"{path.name}: duplicated column header(s): {', '.join(dupes)}")
    missing = [c for c in required_columns() if c not in header]
    if missing:
        errors.append(f"{path.name}: missing required column(s): {', '.join(missing)}")
    if errors:
        raise ManifestError(errors)

    width = len(header)
    records = []
    for i, row in enumerate(rows, start=2):
        if len(row) != width:
            errors.append(f"row {i}: has {len(row)} cells, the header has {width}")
            row = (row + [""] * width)[:width]
        records.append({h: cell.strip() for h, cell in zip(header, row, strict=True)})
    df = pd.DataFrame.from_records(records, columns=header)
    df.index = pd.RangeIndex(2, 2 + len(df), name="line")

    refs = set(reference_ids())
    for line, rec in df.iterrows():
        case = rec["case_id"] or None
        for col in ("case_id", "patient_id", "image"):
            if not rec[col]:
                errors.append(f"{_where(line, case, col)}: empty")
        for col, colspec in spec.items():
            if col not in df.columns or colspec["type"] != "number":
                continue
            value = rec[col]
            if value == "":
                if col in required_columns() and colspec.get("empty") != "excluded":
                    errors.append(f"{_where(line, case, col)}: empty")
                continue
            try:
                number = float(value)
            except ValueError:
                errors.append(f"{_where(line, case, col)}: {value!r} is not a number")
                continue
            if not math.isfinite(number):
                errors.append(f"{_where(line, case, col)}: {value!r} is not a finite number")
            elif not colspec["min"] <= number <= colspec["max"]:
                unit = f" {colspec['unit']}" if "unit" in colspec else ""
                errors.append(f"{_where(line, case, col)}: {value} is outside the plausible range "
                              f"{colspec['min']}–{colspec['max']}{unit}")
        if all(rec[c] == "" for c in BMD_COLUMNS):
            errors.append(f"{_where(line, case, 'bmd_l1..bmd_l4')}: all four vertebrae are empty")
        if rec["sex"] not in spec["sex"]["enum"]:
            errors.append(f"{_where(line, case, 'sex')}: {rec['sex']!r} is not F or M")
        if rec["reference"] not in refs:
            errors.append(f"{_where(line, case, 'reference')}: unknown reference table {rec['reference']!r} "
                          f"(known: {', '.join(sorted(refs))})")
        if "split" in df.columns and rec["split"] not in ("", *SPLITS):
            errors.append(f"{_where(line, case, 'split')}: {rec['split']!r} is not train, val or test")

    dup_ids = df["case_id"][df["case_id"].duplicated(keep=False) & (df["case_id"] != "")]
    for case_id, lines in dup_ids.groupby(dup_ids).groups.items():
        errors.append(f"rows {', '.join(map(str, lines))}, column case_id: duplicate case_id {case_id}")
    if "split" in df.columns:
        with_split = df[df["split"] != ""]
        spread = with_split.groupby("patient_id")["split"].nunique()
        for pid in spread[spread > 1].index:
            part = with_split[with_split["patient_id"] == pid]
            where = ", ".join(f"row {ln} ({s})" for ln, s in zip(part.index, part["split"], strict=True))
            errors.append(f"column split: patient {pid} is in more than one split: {where}")

    root = path.parent
    df["image_path"] = [str((root / p).resolve()) if p else "" for p in df["image"]]
    if "landmarks" in df.columns:
        df["landmarks_path"] = [str((root / p).resolve()) if p else "" for p in df["landmarks"]]
    if check_files:
        errors.extend(_check_files(df, decode=check_files == "decode"))
    if errors:
        raise ManifestError(errors)

    for col, colspec in spec.items():
        if col in df.columns and colspec["type"] == "number":
            df[col] = pd.to_numeric(df[col].replace("", np.nan), errors="coerce").astype(float)
    if "split" in df.columns:
        df["split"] = df["split"].replace("", np.nan)
    return df.reset_index(drop=True)


def _check_files(df: pd.DataFrame, decode: bool) -> list[str]:
    errors = []
    seen: dict[str, bool] = {}
    for line, rec in df.iterrows():
        case = rec["case_id"] or None
        for col, pcol in (("image", "image_path"), ("landmarks", "landmarks_path")):
            if pcol not in df.columns or not rec[pcol]:
                continue
            target = rec[pcol]
            if target not in seen:
                seen[target] = Path(target).is_file()
            if not seen[target]:
                errors.append(f"{_where(line, case, col)}: file not found: {rec[col]}")
        if decode and seen.get(rec["image_path"]):
            from bmd.io import ImageReadError, read_image

            try:
                read_image(rec["image_path"])
            except ImageReadError as exc:
                errors.append(f"{_where(line, case, 'image')}: cannot use {rec['image']}: {exc}")
    return errors


def split_manifest(df: pd.DataFrame, sizes: tuple[int, int, int] | None = None,
                   fractions: tuple[float, float, float] = (0.65, 0.15, 0.20), seed: int = 0) -> pd.DataFrame:
    """Assign ``split`` by patient, deterministic in ``seed``, stratified by osteoporosis status.

    All scans of a patient land in one split. ``sizes`` (cases per split) win over ``fractions``.
    A manifest whose ``split`` column is already complete is returned unchanged. Patients are
    positive when any scan has any vertebra with T < −2.5; positives and negatives are dealt out
    separately, each in random order, to the split furthest below its target.
    """
    from bmd.tscores import osteoporotic, t_scores_for_manifest

    if "split" in df.columns and df["split"].isin(SPLITS).all():
        return df
    n = len(df)
    if sizes is None:
        raw = np.array(fractions, dtype=float) / sum(fractions) * n
        sizes_arr = np.floor(raw).astype(int)
        sizes_arr[np.argsort(raw - sizes_arr)[::-1][: n - sizes_arr.sum()]] += 1
    else:
        sizes_arr = np.array(sizes, dtype=int)
        if sizes_arr.sum() != n:
            raise ValueError(f"split sizes {tuple(sizes_arr)} do not add up to the {n} cases")
    t = t_scores_for_manifest(df)
    positive_case = osteoporotic(t.to_numpy()).any(axis=1)
    patients = pd.DataFrame({"patient_id": df["patient_id"].to_numpy(), "pos": positive_case})
    per_patient = patients.groupby("patient_id", sort=True).agg(n=("pos", "size"), pos=("pos", "any"))
    rng = np.random.default_rng(seed)
    assigned: dict[str, str] = {}
    filled = np.zeros(3)
    target = sizes_arr.astype(float)
    for stratum in (True, False):
        group = per_patient[per_patient["pos"] == stratum]
        order = rng.permutation(len(group))
        # larger patients first within a stratum so repeat scans do not overshoot a small split
        ids = group.index.to_numpy()[order]
        counts = group["n"].to_numpy()[order]
        for k in np.argsort(-counts, kind="stable"):
            deficit = (target - filled) / np.maximum(target, 1)
            j = int(np.argmax(deficit))
            assigned[ids[k]] = SPLITS[j]
            filled[j] += counts[k]
    out = df.copy()
    out["split"] = out["patient_id"].map(assigned)
    return out


def summarize(df: pd.DataFrame) -> str:
    """A short text summary: cases, patients, splits, BMD mean ± SD and T < −2.5 prevalence per vertebra."""
    from bmd.tscores import osteoporotic, t_scores_for_manifest

    lines = [f"{len(df)} cases, {df['patient_id'].nunique()} patients"]
    if "split" in df.columns and df["split"].notna().any():
        counts = df["split"].value_counts()
        lines.append("split: " + ", ".join(f"{s} {int(counts.get(s, 0))}" for s in SPLITS))
    sexes = df["sex"].value_counts()
    lines.append(f"sex: F {int(sexes.get('F', 0))}, M {int(sexes.get('M', 0))}; "
                 f"age {df['age'].min():.0f}–{df['age'].max():.0f} (mean {df['age'].mean():.1f})")
    t = t_scores_for_manifest(df)
    for v, col, tcol in zip(VERTEBRAE, BMD_COLUMNS, T_COLUMNS, strict=True):
        x = df[col]
        valid = t[tcol].dropna().to_numpy()
        prev = 100 * float(np.mean(osteoporotic(valid))) if len(valid) else float("nan")
        lines.append(f"{v}: BMD {x.mean():.3f} ± {x.std():.3f} g/cm² (n {int(x.notna().sum())}, "
                     f"excluded {int(x.isna().sum())}); T < -2.5 in {prev:.1f}%")
    return "\n".join(lines)


def write_manifest(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a manifest CSV atomically (temp file in the same folder, then rename); returns the path.

    The derived ``image_path``/``landmarks_path`` columns are not written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = df.drop(columns=[c for c in ("image_path", "landmarks_path") if c in df.columns])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            out.to_csv(fh, index=False, float_format="%.4f")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
