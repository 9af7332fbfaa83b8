"""The manifest: one CSV row per chest radiograph with its DXA result.

The schema (columns, types, ranges, how empty cells are read) lives in
``bmd/resources/manifest_schema.json`` and is read from there: it is the one source of truth for this
module and for ``data_manifest/README.md``.

:func:`load_manifest` validates a file and reports *every* problem at once, each naming the CSV row
(the line number in the file, the header being line 1) and the column, e.g.
``row 7 (case_id S0006), column bmd_l2: 'abc' is not a number``. Columns the schema does not know are
kept (as text) and ignored.

Paths (``image``, ``landmarks``) are resolved against the manifest's folder. Absolute paths and paths
through ``..`` are accepted, since hospitals often keep images outside the folder of the manifest;
``load_manifest(..., within_folder=True)`` refuses every path that leads outside it (symlinks
included), for manifests received from elsewhere.

Hostile input is refused with the same one-line messages: other encodings (UTF-16, Latin-1, binary
data), control characters (line breaks, NUL) in schema columns, digits other than ASCII ``0-9``, and
header names the loader itself adds (``image_path``, ``landmarks_path``). Values quoted in messages are
escaped and clipped, so every message stays one readable line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from bmd.columns import VERTEBRAE
from bmd.infra import paths
from bmd.infra.atomic import atomic_path
from bmd.inputs.tscores import osteoporotic, reference_ids, t_scores_for_manifest
from bmd.io import ImageReadError, read_image

SCHEMA_FILE = "manifest_schema.json"


@lru_cache(maxsize=1)
def schema() -> dict:
    """The manifest schema (``bmd/resources/manifest_schema.json``, installed with the package)."""
    return json.loads(paths.manifest_schema_file().read_text(encoding="utf-8"))


def required_columns() -> list[str]:
    """Columns every manifest must have, in schema order."""
    return [c for c, spec in schema()["columns"].items() if spec["required"]]


def optional_columns() -> list[str]:
    """Columns a manifest may have, in schema order."""
    return [c for c, spec in schema()["columns"].items() if not spec["required"]]


REQUIRED: tuple[str, ...] = tuple(required_columns())
"""``case_id, patient_id, image, bmd_l1..bmd_l4, sex, age, reference``."""
OPTIONAL: tuple[str, ...] = tuple(optional_columns())
"""``split, landmarks, t_l1..t_l4, dxa_interval_days, device``."""
BMD_COLUMNS: tuple[str, ...] = tuple(f"bmd_{v.lower()}" for v in VERTEBRAE)
T_COLUMNS: tuple[str, ...] = tuple(f"t_{v.lower()}" for v in VERTEBRAE)
SPLITS: tuple[str, ...] = tuple(schema()["columns"]["split"]["enum"])
PATH_COLUMNS: tuple[str, ...] = tuple(c for c, s in schema()["columns"].items() if s["type"] == "path")
"""Columns holding file paths; each gets a resolved ``<column>_path`` companion on loading."""
DERIVED_COLUMNS: tuple[str, ...] = tuple(f"{c}_path" for c in PATH_COLUMNS)
"""``image_path, landmarks_path``: added by :func:`load_manifest`, so a manifest may not have them."""

# ASCII digits only: \d would take other scripts' digits, which float() reads but pandas does not
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
# control characters, Unicode line and paragraph separators, and bidirectional overrides (which make
# a message read differently from what it holds)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SHOWN = 80  # longest value quoted in a message
_NON_FINITE = re.compile(r"[+-]?(nan|inf|infinity)", re.IGNORECASE)


class ManifestError(ValueError):
    """An invalid manifest; ``errors`` lists every problem, one line each."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        shown = "; ".join(self.errors[:3]) + (f"; … ({len(self.errors)} errors)" if len(self.errors) > 3 else "")
        super().__init__(shown)


def _show(value: str) -> str:
    """A cell or name as quoted in a message: control characters escaped, clipped to one short line."""
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(value))
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _quoted(value: str) -> str:
    """``repr`` of a cell (which escapes control characters), clipped like :func:`_show`."""
    text = str(value)
    return repr(text) if len(text) <= _SHOWN else repr(text[: _SHOWN - 1]) + "…"


def _where(line: int, case_id: str | None, column: str) -> str:
    case = f" (case_id {_show(case_id)})" if case_id else ""
    return f"row {line}{case}, column {_show(column)}"


def _one_of(values) -> str:
    values = list(values)
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]


def _read_rows(path: Path) -> tuple[int, list[str], list[tuple[int, list[str]]]]:
    """(header line, header, [(line, cells)]) of a CSV; blank lines are skipped but keep their numbers."""
    if not path.exists():
        raise ManifestError([f"{path}: manifest file not found"])
    if not path.is_file():
        raise ManifestError([f"{path}: not a regular file"])
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or data[:200].count(b"\x00") > len(data[:200]) // 4:
        raise ManifestError([f"{path}: UTF-16 or UTF-32 text, not UTF-8; save the manifest as UTF-8 CSV"])
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise ManifestError([f"{path}: row {line}: NUL byte, so not a text file; save the manifest as UTF-8 CSV"])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ManifestError([f"{path}: row {line}: not UTF-8 text (byte {exc.start}); "
                             "save the manifest as UTF-8 CSV"]) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    last = 0
    try:
        for cells in reader:
            start, last = last + 1, reader.line_num
            if any(c.strip() for c in cells):
                rows.append((start, cells))
    except csv.Error as exc:
        raise ManifestError([f"{path}: row {reader.line_num}: not valid CSV: {exc}"]) from None
    if not rows:
        raise ManifestError([f"{path}: empty manifest (no header, no rows)"])
    if len(rows) == 1:
        raise ManifestError([f"{path}: manifest has a header but no data rows"])
    header_line, header = rows[0]
    # a byte-order mark left inside the text (files joined together) is no part of a name
    header = [h.replace("\ufeff", "").strip() for h in header]
    if len(header) == 1 and (sep := next((c for c in ";\t|" if c in header[0]), None)):
        raise ManifestError([f"{path}: row {header_line} (header): one column only; the manifest must be "
                             f"comma-separated, this one looks separated by {sep!r}"])
    return header_line, header, rows[1:]


def _parse_number(value: str) -> tuple[float | None, str | None]:
    """(number, None) or (None, reason)."""
    if _NON_FINITE.fullmatch(value):
        return None, f"{_quoted(value)} is not a finite number"
    if not _NUMBER.fullmatch(value):
        return None, f"{_quoted(value)} is not a number"
    number = float(value)
    if not math.isfinite(number):
        return None, f"{_quoted(value)} is not a finite number"
    return number, None


def load_manifest(path: str | os.PathLike, check_files: bool | str = True, *,
                  within_folder: bool = False) -> pd.DataFrame:
    """Read and validate a manifest CSV; returns a typed DataFrame (index 0..n-1, rows in file order).

    ``check_files``: ``True`` checks that every ``image`` (and ``landmarks`` file) exists, is a regular
    file and is readable (cheap: no decoding); ``"decode"`` also decodes every image with
    :func:`bmd.io.read_image` (slow for big cohorts); ``False`` checks nothing on disk.

    ``within_folder``: refuse paths that lead outside the manifest's folder once resolved (``..``,
    absolute paths elsewhere, symlinks pointing out), for a manifest received from someone else. By
    default they are accepted: images often live outside the folder holding the manifest.

    The DataFrame keeps every column as written, typed: numbers (``bmd_l*``, ``age``, ``t_l*``,
    ``dxa_interval_days``) as floats with NaN for empty cells; text as ``str`` (empty cells ``""``),
    except ``split`` whose empty cells become NaN. For each path column it adds ``image_path`` /
    ``landmarks_path``: absolute paths resolved against the manifest's folder (``""`` where the cell
    is empty), keeping ``image`` / ``landmarks`` as written. Unknown columns are kept as text.

    Raises :class:`ManifestError` listing every problem found, one line each, naming the row (line
    number in the file, header = line 1) and the column. Nothing is written, whatever the outcome.
    """

    try:
        path = Path(path).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte in the name, ...
        raise ManifestError([f"{_show(os.fspath(path))}: cannot open: {type(exc).__name__}"]) from None
    header_line, header, rows = _read_rows(path)
    spec = schema()["columns"]
    errors: list[str] = []
    hdr = f"row {header_line} (header)"

    # header: unnamed columns, duplicates, missing required columns, names the loader adds itself
    width = len(header)
    keep: dict[str, int] = {}
    for k, name in enumerate(header):
        if not name:
            used = [line for line, cells in rows if k < len(cells) and cells[k].strip()]
            if used:
                errors.append(f"{hdr}, column number {k + 1}: no column name, but row {used[0]} has a value there")
            continue
        if name in keep:
            errors.append(f"{hdr}, column {_show(name)}: duplicated column name (columns {keep[name] + 1} and "
                          f"{k + 1}); the first is used")
            continue
        if name in DERIVED_COLUMNS:
            errors.append(f"{hdr}, column {name}: reserved for the resolved path the loader adds; "
                          "rename or drop this column")
            continue
        keep[name] = k
    lowered = {name.lower(): name for name in keep}
    for col in REQUIRED:
        if col not in keep:
            hint = f" (found {_quoted(lowered[col])}: names are case-sensitive)" if col in lowered else ""
            errors.append(f"{hdr}, column {col}: required column missing{hint}")

    # cells
    records: list[dict[str, str]] = []
    lines: list[int] = []
    ragged: set[int] = set()
    for line, cells in rows:
        cells = [c.strip() for c in cells]
        if len(cells) > width and not any(cells[width:]):
            cells = cells[:width]  # trailing empty cells (e.g. spreadsheet exports)
        if len(cells) != width:
            case = cells[keep["case_id"]] if "case_id" in keep and keep["case_id"] < len(cells) else None
            case_txt = f" (case_id {_show(case)})" if case else ""
            errors.append(f"row {line}{case_txt}: has {len(cells)} cells, the header has {width} "
                          "(its cells are not checked further)")
            ragged.add(line)
            cells = (cells + [""] * width)[:width]
        records.append({name: cells[k] for name, k in keep.items()})
        lines.append(line)

    refs = set(reference_ids())
    present = [c for c in spec if c in keep]
    unusable: set[tuple[int, str]] = set()  # (line, column) of cells whose text cannot be used at all
    for line, rec in zip(lines, records, strict=True):
        if line in ragged:
            continue
        case = rec.get("case_id") or None
        for col in present:
            colspec, value = spec[col], rec[col]
            if value == "":
                if colspec.get("empty") == "error":
                    errors.append(f"{_where(line, case, col)}: empty")
                continue
            if _CONTROL.search(value):
                # a line break, tab or NUL in an id or a path is a broken export, never data
                errors.append(f"{_where(line, case, col)}: {_quoted(value)} contains a control character")
                unusable.add((line, col))
                continue
            if colspec["type"] == "number":
                number, problem = _parse_number(value)
                if problem:
                    errors.append(f"{_where(line, case, col)}: {problem}")
                elif not colspec["min"] <= number <= colspec["max"]:
                    unit = f" {colspec['unit']}" if "unit" in colspec else ""
                    errors.append(f"{_where(line, case, col)}: {_show(value)} is outside the plausible range "
                                  f"{colspec['min']}–{colspec['max']}{unit}")
            elif "enum" in colspec and value not in colspec["enum"]:
                errors.append(f"{_where(line, case, col)}: {_quoted(value)} is not {_one_of(colspec['enum'])}")
            elif colspec.get("enum_from") == "reference_tables.csv" and value not in refs:
                errors.append(f"{_where(line, case, col)}: unknown reference table {_quoted(value)} "
                              f"(known: {', '.join(sorted(refs))})")
        bmd_present = [c for c in BMD_COLUMNS if c in keep]
        if bmd_present and all(rec[c] == "" for c in bmd_present):
            errors.append(f"{_where(line, case, 'bmd_l1..bmd_l4')}: all four vertebrae are empty "
                          "(at least one is needed)")

    df = pd.DataFrame.from_records(records, columns=list(keep))
    df.index = pd.Index(lines, name="line")
    errors.extend(_cross_row_errors(df))

    root = path.parent
    for col in PATH_COLUMNS:
        if col in df.columns:
            resolved = []
            for line, value in zip(lines, df[col], strict=True):
                skip = not value or line in ragged or (line, col) in unusable
                target, problem = ("", None) if skip else _resolve(root, value)
                if problem is None and target and within_folder and not Path(target).is_relative_to(root):
                    problem = "leads outside the manifest's folder"
                if problem:
                    case = df.at[line, "case_id"] if "case_id" in df.columns else None
                    errors.append(f"{_where(line, case or None, col)}: {problem}: {_show(value)}")
                    target = ""
                resolved.append(target)
            df[f"{col}_path"] = resolved
    if check_files:
        errors.extend(_check_files(df.drop(index=sorted(ragged)), decode=check_files == "decode"))
    if errors:
        raise ManifestError(errors)

    for col, colspec in spec.items():
        if col in df.columns and colspec["type"] == "number":
            # the cells passed _parse_number, so float() reads each exactly as it was validated
            df[col] = [float(v) if v != "" else np.nan for v in df[col]]
            df[col] = df[col].astype(float)
    if "split" in df.columns:
        df["split"] = df["split"].replace("", np.nan)
    return df.reset_index(drop=True)


def _resolve(root: Path, value: str) -> tuple[str, str | None]:
    """(absolute path, None), or ("", reason) for a path that cannot be resolved."""
    try:
        return str((root / value).resolve()), None
    except RuntimeError:  # Python < 3.13 reports a symlink loop this way
        return "", "cannot resolve the path (symlink loop)"
    except (OSError, ValueError) as exc:
        return "", f"cannot resolve the path ({type(exc).__name__})"


def _rows_text(lines) -> str:
    """``2, 4, 9`` — or the first ten and a count, so a message stays one readable line."""
    lines = list(lines)
    shown = ", ".join(map(str, lines[:10]))
    return shown if len(lines) <= 10 else f"{shown}, … ({len(lines)} rows)"


def _cross_row_errors(df: pd.DataFrame) -> list[str]:
    """Duplicate case ids and patients spread over several splits."""
    errors = []
    if "case_id" in df.columns:
        ids = df["case_id"]
        dup = ids[ids.duplicated(keep=False) & (ids != "")]
        for case_id, lines in dup.groupby(dup, sort=False).groups.items():
            errors.append(f"rows {_rows_text(lines)} (case_id {_show(case_id)}), column case_id: "
                          "duplicate case_id")
    if "split" in df.columns and "patient_id" in df.columns:
        given = df[df["split"].isin(SPLITS) & (df["patient_id"] != "")]
        spread = given.groupby("patient_id", sort=False)["split"].nunique()
        for pid in spread[spread > 1].index:
            part = given[given["patient_id"] == pid]
            where = ", ".join(f"row {ln} {s}" for ln, s in list(zip(part.index, part["split"], strict=True))[:10])
            where += f", … ({len(part)} rows)" if len(part) > 10 else ""
            errors.append(f"rows {_rows_text(part.index)} (patient_id {_show(pid)}), column split: "
                          f"one patient in more than one split ({where})")
    return errors


def _file_problem(target: str) -> str | None:
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"cannot access: {exc.strerror or type(exc).__name__}"
    except ValueError:  # a NUL byte in the path (a manifest's cells never get here with one)
        return "not a valid path"
    if not Path(target).is_file():
        return "not a regular file"
    if not os.access(target, os.R_OK):
        return "file not readable"
    if st.st_size == 0:
        return "empty file"
    return None


def _check_files(df: pd.DataFrame, decode: bool) -> list[str]:
    errors = []
    problems: dict[str, str | None] = {}
    decoded: dict[str, str | None] = {}
    for line, rec in df.iterrows():
        case = rec.get("case_id") or None
        for col in PATH_COLUMNS:
            pcol = f"{col}_path"
            if pcol not in df.columns or not rec[pcol]:
                continue
            target = rec[pcol]
            if target not in problems:
                problems[target] = _file_problem(target)
            if problems[target]:
                errors.append(f"{_where(line, case, col)}: {problems[target]}: {_show(rec[col])}")
            elif decode and col == "image":
                if target not in decoded:

                    try:
                        read_image(target)
                        decoded[target] = None
                    except ImageReadError as exc:
                        decoded[target] = str(exc)
                if decoded[target]:
                    errors.append(f"{_where(line, case, col)}: cannot use {_show(rec[col])}: {decoded[target]}")
    return errors


def _split_targets(n: int, sizes, fractions) -> np.ndarray:
    if sizes is not None:
        target = np.array(sizes, dtype=int)
        if target.shape != (3,) or (target < 0).any() or target.sum() != n:
            raise ValueError(f"split sizes {tuple(sizes)} must be 3 non-negative counts adding up to the {n} cases")
        return target
    frac = np.array(fractions, dtype=float)
    if frac.shape != (3,) or (frac < 0).any() or frac.sum() <= 0:
        raise ValueError(f"split fractions {tuple(fractions)} must be 3 non-negative numbers, not all 0")
    raw = frac / frac.sum() * n
    target = np.floor(raw).astype(int)
    target[np.argsort(-(raw - target), kind="stable")[: n - target.sum()]] += 1
    return target


def split_manifest(df: pd.DataFrame, sizes: tuple[int, int, int] | None = None,
                   fractions: tuple[float, float, float] = (0.65, 0.15, 0.20), seed: int = 0) -> pd.DataFrame:
    """Assign ``split`` (train/val/test) by patient, deterministic in ``seed``, stratified by osteoporosis.

    - ``sizes`` (cases per split, adding up to ``len(df)``) win over ``fractions`` (scaled to case
      counts by largest remainder).
    - All scans of a patient land in one split. A patient is positive when any scan has any vertebra
      with T < −2.5 (:func:`bmd.inputs.tscores.t_scores_for_manifest`, so report T-scores count).
    - A manifest whose ``split`` column is complete is returned unchanged. Where it is partly filled,
      patients that already have a split keep it and the others fill the remaining targets.
    - Positive patients are dealt first, then negative ones; each stratum in a seeded random order,
      patients with more scans first, each patient to the split furthest below its target (relative),
      so per-split prevalence is even and case counts land within a patient's size of the targets.

    Returns a copy with the ``split`` column set (same index).
    """

    if "split" in df.columns and df["split"].isin(SPLITS).all():
        return df
    target = _split_targets(len(df), sizes, fractions).astype(float)
    positive = osteoporotic(t_scores_for_manifest(df).to_numpy()).any(axis=1)
    given = df["split"].where(df["split"].isin(SPLITS)) if "split" in df.columns else pd.Series(np.nan, df.index)
    cases = pd.DataFrame({"patient_id": df["patient_id"].astype(str).to_numpy(), "pos": positive,
                          "given": given.to_numpy()})
    per_patient = cases.groupby("patient_id", sort=True).agg(n=("pos", "size"), pos=("pos", "any"))
    given_sets = cases.dropna(subset=["given"]).groupby("patient_id")["given"].agg(lambda s: sorted(set(s)))
    per_patient["given"] = [given_sets.get(pid, []) for pid in per_patient.index]
    clash = per_patient[per_patient["given"].map(len) > 1]
    if len(clash):
        raise ValueError(f"patient(s) {', '.join(clash.index[:5])} already have scans in more than one split")

    assigned: dict[str, str] = {}
    filled = np.zeros(3)
    pos_filled = np.zeros(3)
    for pid, row in per_patient.iterrows():
        if row["given"]:
            j = SPLITS.index(row["given"][0])
            assigned[pid] = SPLITS[j]
            filled[j] += row["n"]
            pos_filled[j] += row["n"] * row["pos"]
    free = per_patient[per_patient["given"].map(len) == 0]
    pos_target = target / max(target.sum(), 1) * float((per_patient["n"] * per_patient["pos"]).sum())
    rng = np.random.default_rng(seed)
    for stratum in (True, False):
        group = free[free["pos"] == stratum]
        order = rng.permutation(len(group))
        ids, counts = group.index.to_numpy()[order], group["n"].to_numpy()[order]
        for k in np.argsort(-counts, kind="stable"):
            if stratum:
                deficit = (pos_target - pos_filled) / np.maximum(pos_target, 1e-9)
            else:
                deficit = (target - filled) / np.maximum(target, 1e-9)
            deficit[target == 0] = -np.inf
            j = int(np.argmax(deficit))
            assigned[ids[k]] = SPLITS[j]
            filled[j] += counts[k]
            pos_filled[j] += counts[k] * stratum
    out = df.copy()
    out["split"] = df["patient_id"].astype(str).map(assigned).to_numpy()
    return out


def summarize(df: pd.DataFrame) -> str:
    """A short text summary of a loaded manifest.

    Cases, patients, split sizes, sex counts, age range, reference tables, and per vertebra the BMD
    mean ± SD (g/cm²), the number of excluded cells and the share with T < −2.5 (the paper's label).
    """

    lines = [f"{len(df)} cases, {df['patient_id'].nunique()} patients"]
    if "split" in df.columns:
        counts = df["split"].value_counts()
        unassigned = int(df["split"].isna().sum())
        lines.append("split: " + ", ".join(f"{s} {int(counts.get(s, 0))}" for s in SPLITS)
                     + (f", unassigned {unassigned}" if unassigned else ""))
    sexes = df["sex"].value_counts()
    age = pd.to_numeric(df["age"], errors="coerce")
    lines.append(f"sex: F {int(sexes.get('F', 0))}, M {int(sexes.get('M', 0))}; "
                 f"age {age.min():.0f}–{age.max():.0f} (mean {age.mean():.1f})")
    refs = df["reference"].value_counts()
    lines.append("reference: " + ", ".join(f"{r} {int(k)}" for r, k in refs.items()))
    t = t_scores_for_manifest(df)
    for v, col, tcol in zip(VERTEBRAE, BMD_COLUMNS, T_COLUMNS, strict=True):
        x = pd.to_numeric(df[col], errors="coerce")
        valid = t[tcol].dropna().to_numpy()
        prev = 100 * float(np.mean(osteoporotic(valid))) if len(valid) else float("nan")
        lines.append(f"{v}: BMD {x.mean():.3f} ± {x.std():.3f} g/cm² (n {int(x.notna().sum())}, "
                     f"excluded {int(x.isna().sum())}); T < -2.5 in {prev:.1f}%")
    return "\n".join(lines)


def write_manifest(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a manifest CSV atomically; returns the path.

    The CSV (UTF-8) is written to a temporary file in the target folder, flushed to disk and renamed
    over ``path`` (``os.replace``), so readers see the old file or the new one, never half a file.
    The derived ``image_path``/``landmarks_path`` columns are not written. Floats are written with 4
    decimals (0.1 mg/cm² for BMD); float columns holding only whole numbers (e.g. ``age``) as
    integers; NaN as an empty cell.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = df.drop(columns=[f"{c}_path" for c in PATH_COLUMNS if f"{c}_path" in df.columns])
    for col in out.columns:
        values = out[col]
        if values.dtype.kind == "f" and values.notna().any():
            finite = values.dropna()
            if np.isfinite(finite).all() and (finite == np.round(finite)).all():
                out[col] = values.astype("Int64")
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        out.to_csv(fh, index=False, float_format="%.4f")
        fh.flush()
        os.fsync(fh.fileno())
    return path
