"""The seed paper's published numbers, kept as data so every table can show them beside ours.

Source: Wang F, Zheng K, Lu Y, et al. "Opportunistic Screening of Osteoporosis Using Plain Film Chest
X-ray", arXiv:2104.01734 v1 (2021), Tables 1–3 (``bmd/resources/paper_results.csv``) and its text.
"""

from __future__ import annotations

from functools import lru_cache

import pandas as pd

from bmd.infra import paths

CITATION = "Wang et al., arXiv:2104.01734 v1 (2021)"

#: DXA inter-vertebra Pearson correlations reported in the paper's text.
VERTEBRA_CORRELATIONS: dict[tuple[str, str], float] = {("L1", "L2"): 0.907, ("L1", "L3"): 0.883, ("L1", "L4"): 0.825}

#: Train/val/test case counts of the paper's patient-level split.
SPLIT_SIZES: dict[str, int] = {"train": 1087, "val": 265, "test": 329}

#: Other published figures shown as reference lines (other data, not comparable one to one).
PRIME_2021 = {"r": 0.853, "auc": 0.928}  # the published PRIME/MICCAI workshop version
FOLLOW_UP_2022 = {"r_l1": (0.889, 0.894), "auc": (0.963, 0.968), "cases": 13719}  # arXiv:2201.01838


@lru_cache(maxsize=1)
def results() -> pd.DataFrame:
    """The paper's Tables 1–3 in long form: ``table, model, vertebra, r, auc``."""
    return pd.read_csv(paths.paper_results_file())


def value(table: str, model: str, vertebra: str, metric: str) -> float | None:
    """One published number (``metric`` is ``r`` or ``auc``), or None where the paper has none."""
    df = results()
    hit = df[(df.table == table) & (df.model == model) & (df.vertebra == vertebra)]
    return None if hit.empty else float(hit.iloc[0][metric])
