"""T-scores, WHO categories and standardised BMD.

A T-score compares a BMD with young adults of the same sex measured on the same maker's device:
``T = (BMD - young_adult_mean) / young_adult_sd`` per vertebra, from a reference table chosen per
manifest row (``reference`` and ``sex`` columns). Reference tables are data
(``bmd/resources/reference_tables.csv``), each row with its source. T-scores copied from DXA reports
(``t_l1..t_l4``) take precedence over computed ones, cell by cell.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from bmd.columns import VERTEBRAE
from bmd.infra import paths

#: WHO: normal T >= -1; osteopenia -1 > T > -2.5; osteoporosis T <= -2.5.
WHO_NORMAL_MIN = -1.0
DEFAULT_THRESHOLD = -2.5

#: Hui et al. 1997 standardised spine BMD per DXA maker: (slope, offset); sBMD in g/cm² (the paper's
#: mg/cm² divided by 1000).
_SBMD = {"hologic": (1.0550, 0.972), "lunar": (0.9683, 1.100), "norland": (0.9743, 0.969)}
_SBMD_INTERCEPT = 1.0436


class TScoreError(ValueError):
    """Unknown reference table, sex, vertebra or DXA maker."""


_TABLE_COLUMNS = ("reference", "sex", "vertebra", "mean", "sd", "source")


@lru_cache(maxsize=4)
def _read_tables(path: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype={"reference": str, "sex": str, "vertebra": str, "source": str})
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise TScoreError(f"{path}: cannot read the reference tables: {exc}") from None
    missing = [c for c in _TABLE_COLUMNS if c not in df.columns]
    if missing:
        raise TScoreError(f"{path}: reference tables lack column(s) {', '.join(missing)}")
    df["reference"] = df["reference"].str.strip().str.lower()
    df["sex"] = df["sex"].str.strip().str.upper()
    df["vertebra"] = df["vertebra"].str.strip().str.upper()
    key = ["reference", "sex", "vertebra"]
    dupes = df[df.duplicated(key, keep=False)]
    if len(dupes):
        raise TScoreError(f"{path}: duplicated reference rows {sorted(set(map(tuple, dupes[key].to_numpy())))}")
    bad = df[~((df["sd"] > 0) & (df["mean"] > 0))]
    if len(bad):
        raise TScoreError(f"{path}: non-positive mean or SD in rows {', '.join(str(i + 2) for i in bad.index)}")
    return df.set_index(key).sort_index()


def load_reference_tables(path: str | Path | None = None) -> pd.DataFrame:
    """The reference tables, indexed by (reference, sex, vertebra) with ``mean``, ``sd`` (g/cm²), ``source``.

    Read once per path and cached; the caller gets a copy. Ids are normalised on reading
    (reference lower case, sex and vertebra upper case). A malformed file raises :class:`TScoreError`.
    """
    return _read_tables(str(path or paths.reference_tables_file())).copy()


def reference_ids(path: str | Path | None = None) -> list[str]:
    """The reference table ids available (e.g. ``hologic``, ``lunar``)."""
    return sorted(_read_tables(str(path or paths.reference_tables_file())).index.get_level_values(0).unique())


def _row(vertebra: str, sex: str, reference: str) -> tuple[float, float]:
    tables = _read_tables(str(paths.reference_tables_file()))
    key = (str(reference).strip().lower(), str(sex).strip().upper(), str(vertebra).strip().upper())
    if key not in tables.index:
        raise TScoreError(f"no reference values for table {reference!r}, sex {sex!r}, vertebra {vertebra!r} "
                          f"(tables: {', '.join(reference_ids())}; sex F or M; vertebra L1..L4 or L1-L4)")
    row = tables.loc[key]
    return float(row["mean"]), float(row["sd"])


def t_score(bmd, vertebra: str, sex: str, reference: str = "hologic"):
    """T-score of ``bmd`` (g/cm², scalar or array; NaN stays NaN) for one vertebra, sex and table.

    ``vertebra`` is ``L1``..``L4`` or ``L1-L4``; ``sex`` ``F`` or ``M``; ``reference`` a table id
    (case-insensitive). A scalar gives a float, anything array-like a float ndarray.
    Unknown ids raise :class:`TScoreError`.
    """
    mean, sd = _row(vertebra, sex, reference)
    return (np.asarray(bmd, dtype=float) - mean) / sd if np.ndim(bmd) else (float(bmd) - mean) / sd


def bmd_from_t(t, vertebra: str, sex: str, reference: str = "hologic"):
    """The BMD (g/cm²) that has T-score ``t``: the inverse of :func:`t_score`."""
    mean, sd = _row(vertebra, sex, reference)
    return np.asarray(t, dtype=float) * sd + mean if np.ndim(t) else float(t) * sd + mean


def t_scores_for_manifest(df: pd.DataFrame) -> pd.DataFrame:
    """T-scores ``t_l1..t_l4`` for every manifest row (same index).

    Computed from ``bmd_l*`` with the row's ``reference`` and ``sex``; where the manifest carries
    T-scores from the DXA report (columns ``t_l*``, non-empty) those win for that cell.
    """
    out = pd.DataFrame(index=df.index)
    for v in VERTEBRAE:
        col = v.lower()
        bmd = pd.to_numeric(df[f"bmd_{col}"], errors="coerce")
        computed = pd.Series(np.nan, index=df.index)
        for (ref, sex), idx in df.groupby(["reference", "sex"]).groups.items():
            computed.loc[idx] = t_score(bmd.loc[idx].to_numpy(), v, sex, ref)
        if f"t_{col}" in df.columns:
            reported = pd.to_numeric(df[f"t_{col}"], errors="coerce")
            computed = reported.where(reported.notna(), computed)
        out[f"t_{col}"] = computed
    return out


def who_category(t, threshold: float = DEFAULT_THRESHOLD):
    """WHO category of T-score(s): ``normal`` (T ≥ −1), ``osteopenia``, ``osteoporosis`` (T ≤ threshold).

    WHO counts T = −2.5 exactly as osteoporosis (≤); the paper's positive label is strict (T < −2.5):
    use :func:`osteoporotic` for that. NaN (an excluded vertebra) gives an empty string ``""``.
    A scalar gives a ``str``, an array an object array of the same shape. The categories are meant
    for people aged 50 and over and post-menopausal women.
    """
    arr = np.asarray(t, dtype=float)
    cats = np.where(arr >= WHO_NORMAL_MIN, "normal", np.where(arr <= threshold, "osteoporosis", "osteopenia"))
    cats = np.where(np.isnan(arr), "", cats).astype(object)
    return cats.item() if cats.ndim == 0 else cats


def osteoporotic(t, threshold: float = DEFAULT_THRESHOLD, inclusive: bool = False):
    """The paper's positive label: T < threshold (``inclusive=True`` gives WHO's T ≤ threshold).

    The two differ only for T exactly at the threshold (−2.5 is osteoporosis for WHO but not a
    positive in the paper). NaN is never positive: callers mask excluded vertebrae before metrics.
    A scalar gives a ``bool``, an array a bool array.
    """
    arr = np.asarray(t, dtype=float)
    with np.errstate(invalid="ignore"):
        pos = arr <= threshold if inclusive else arr < threshold
    return bool(pos) if pos.ndim == 0 else pos


def standardized_bmd(bmd, maker: str):
    """Standardised spine BMD (g/cm²; Hui et al. 1997) to put Hologic, Lunar and Norland on one scale.

    sBMD = 1.0550·(BMD−0.972)+1.0436 (Hologic), 0.9683·(BMD−1.100)+1.0436 (Lunar),
    0.9743·(BMD−0.969)+1.0436 (Norland). ``maker`` is case-insensitive; others raise
    :class:`TScoreError`. NaN stays NaN.
    """
    key = str(maker).strip().lower()
    if key not in _SBMD:
        raise TScoreError(f"unknown DXA maker {maker!r}: expected hologic, lunar or norland")
    slope, offset = _SBMD[key]
    out = slope * (np.asarray(bmd, dtype=float) - offset) + _SBMD_INTERCEPT
    return float(out) if np.ndim(bmd) == 0 else out


def patient_level(t_by_vertebra: pd.DataFrame) -> pd.DataFrame:
    """The clinical patient-level endpoint: lowest valid vertebra T (``t_min``) and their mean (``t_mean``).

    ``t_by_vertebra`` has columns ``t_l1..t_l4`` (as from :func:`t_scores_for_manifest`); NaN cells
    (excluded vertebrae) are skipped; a row with no valid vertebra gives NaN. Same index as the input.
    """
    cols = [f"t_{v.lower()}" for v in VERTEBRAE]
    t = t_by_vertebra[cols].astype(float)
    return pd.DataFrame({"t_min": t.min(axis=1, skipna=True), "t_mean": t.mean(axis=1, skipna=True)})
