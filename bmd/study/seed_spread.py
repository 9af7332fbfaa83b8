"""How much the twin's seed moves the headline numbers: the quick study on several seeds, mean ± SD.

A twin cohort is one random draw of patients, images and splits; a single seed can flatter or
punish a model by as much as a change of model does. :func:`run_seeds` builds (or reuses) the
study's models on each seed — the cohort, the detector, the ROI cache, Table 2's models and
baselines and Table 3's ensembles, exactly as the book does — and :func:`spread` summarises the
test-split R, AUC, bias and MAE of the models that carry the study's claim. The result is saved as
``runs/<profile>/seed_spread.json`` (:func:`save`), which the reproducibility chapter shows when it
exists. Nothing in the default build or the tests runs this: it is ``benchmarks/seeds.py``.

Seed ``s`` is built under ``<root>/seeds/seed-<s>``, except the profile's own seed, which reuses the
book's folders under ``<root>`` (so after ``make book`` that seed costs nothing), and a seed whose book was
already built elsewhere (``bmd book --seed s --out DIR``), which reuses that folder when it is named in
``books``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bmd.infra import paths
from bmd.infra.atomic import write_text
from bmd.study import stages
from bmd.study.cohort import study_cohort
from bmd.study.config import load_profile

#: The rows whose spread matters: the paper's model, the ensembles, the whole-chest VGG-16 and the
#: strongest hand-crafted baseline.
MODELS: tuple[str, ...] = ("multi_roi", "attention", "ensm_roi", "ensm_all", "chest", "radiomics")
METRICS: tuple[str, ...] = ("r", "auc", "bias", "mae")
FILE_NAME = "seed_spread.json"


def seed_root(root: str | Path | None, profile_seed: int, seed: int) -> Path:
    """The ``--out`` folder seed ``seed`` is built in (the book's own folder for the profile's seed)."""
    base = paths.out_root(root)
    return base if seed == profile_seed else base / "seeds" / f"seed-{seed}"


def study_on_seed(profile: str | Path, seed: int, root: str | Path | None = None,
                  book: str | Path | None = None) -> dict[str, dict]:
    """Build (or reuse) the quick study's Table 2 and 3 models on one twin seed; model → avg metrics.

    Each value holds ``r``, ``auc``, ``bias``, ``mae`` (test split, mean over L1–L4) and ``converged``.
    ``book``: the ``--out`` folder of a book already built on this seed and profile, used instead of
    :func:`seed_root` (its finished runs are reused).
    """

    base = load_profile(profile)
    cfg = load_profile(profile, seed=seed)
    out = Path(book) if book is not None else seed_root(root, base.seed, seed)
    cohort = study_cohort(cfg, out=out)
    t2 = stages.table_results(cfg, cohort, "table2", out, baselines=True)
    t3 = stages.table_results(cfg, cohort, "table3", out)
    rows = {**t2.avg(), **t3.avg()}
    return {m: {k: rows[m].get(k) for k in (*METRICS, "converged")} for m in MODELS if m in rows}


def spread(per_seed: dict[int, dict[str, dict]]) -> pd.DataFrame:
    """Mean and SD over seeds of each model's metrics: one row per model, columns ``<metric>_mean``,
    ``<metric>_sd`` and ``seeds`` (how many seeds had a number); SD is the sample SD (ddof 1)."""
    rows = []
    models = [m for m in MODELS if any(m in res for res in per_seed.values())]
    for model in models:
        row: dict = {"model": model}
        for metric in METRICS:
            values = np.array([res[model][metric] for res in per_seed.values()
                               if model in res and res[model].get(metric) is not None], dtype=float)
            row[f"{metric}_mean"] = float(values.mean()) if len(values) else None
            row[f"{metric}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else None
            row["seeds"] = len(values)
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def run_seeds(profile: str | Path, seeds: list[int], root: str | Path | None = None,
              log=print, books: dict[int, str | Path] | None = None) -> dict:
    """The study on every seed, then the spread; returns what :func:`save` writes.

    ``books`` maps a seed to the ``--out`` folder of a book already built on it (see :func:`study_on_seed`).
    """
    per_seed: dict[int, dict] = {}
    for seed in seeds:
        start = time.perf_counter()
        per_seed[seed] = study_on_seed(profile, seed, root, (books or {}).get(seed))
        if log is not None:
            multi = per_seed[seed].get("multi_roi", {})
            log(f"seed {seed}: multi-ROI R {multi.get('r', float('nan')):.3f}, "
                f"bias {multi.get('bias', float('nan')):+.3f} g/cm² ({time.perf_counter() - start:.0f} s)")
    return result_of(profile, per_seed)


def result_of(profile: str | Path, per_seed: dict[int, dict[str, dict]]) -> dict:
    """The JSON-ready record of a seed study: profile, seeds, per-seed metrics and their spread."""
    table = spread(per_seed)
    return {"profile": str(profile), "seeds": list(per_seed),
            "per_seed": {str(s): v for s, v in per_seed.items()},
            "spread": json.loads(table.reset_index().to_json(orient="records"))}


def save(result: dict, profile_name: str, root: str | Path | None = None) -> Path:
    """Write the result to ``runs/<profile>/seed_spread.json`` under ``root`` (atomically)."""

    path = paths.run_dir(profile_name, root) / FILE_NAME
    write_text(path, json.dumps(result, indent=1))
    return path


def load(profile_name: str, root: str | Path | None = None) -> dict | None:
    """The saved seed spread of a profile's run folder, or None when it was never computed."""
    try:
        return json.loads((paths.run_dir(profile_name, root) / FILE_NAME).read_text())
    except (OSError, ValueError):
        return None


def spread_table(result: dict) -> pd.DataFrame:
    """The saved spread as a display table: one row per model, 'mean ± SD' per metric."""
    def cell(row: dict, metric: str) -> str:
        mean, sd = row.get(f"{metric}_mean"), row.get(f"{metric}_sd")
        if mean is None:
            return "n/a"
        return f"{mean:+.3f} ± {sd:.3f}" if metric == "bias" and sd is not None else (
            f"{mean:.3f} ± {sd:.3f}" if sd is not None else f"{mean:.3f}")

    rows = [{"model": r["model"], **{m: cell(r, m) for m in METRICS}, "seeds": r["seeds"]}
            for r in result["spread"]]
    return pd.DataFrame(rows).set_index("model").rename(
        columns={"r": "R", "auc": "AUC", "bias": "bias (g/cm²)", "mae": "MAE (g/cm²)"})
