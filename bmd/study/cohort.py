"""The study's cohort: the twin cohort of a profile and seed, or a site's own manifest.

Every chapter starts from :func:`load_cohort`, so a notebook run on its own builds (or reuses) what
it needs instead of assuming an earlier chapter ran.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bmd.infra import paths
from bmd.infra.progress import note
from bmd.inputs.manifest import load_manifest, split_manifest
from bmd.inputs.twin import generate_twin
from bmd.landmarks.annotations import manifest_landmarks
from bmd.study import report, summary
from bmd.study.config import Profile


@dataclass(frozen=True)
class Cohort:
    """A loaded, validated manifest and where it came from."""

    manifest: pd.DataFrame
    manifest_path: Path
    is_twin: bool
    oracle: dict | None  # the twin's oracle.json (ceilings, spec, realised statistics); None for own data

    @property
    def root(self) -> Path:
        """The manifest's folder (image and landmark paths are relative to it)."""
        return self.manifest_path.parent


def load_cohort(cfg: Profile, manifest: str | Path | None = None, out: str | Path | None = None,
                progress: bool = False) -> Cohort:
    """Load a site's ``manifest``, or generate/reuse the twin cohort of ``cfg`` under ``out``.

    A manifest without a ``split`` column is split by patient (deterministic in ``cfg.seed``) with the
    profile's proportions. Another process generating the same twin cohort is waited for, and its cohort
    reused. ``progress``: a bar over the images while the twin is generated.
    """

    if manifest is not None:
        path = Path(manifest).resolve()
        df = load_manifest(path)
        if "split" not in df.columns or df["split"].isna().any() or (df["split"] == "").any():
            n = cfg.twin_n_train + cfg.twin_n_val + cfg.twin_n_test
            fractions = (cfg.twin_n_train / n, cfg.twin_n_val / n, cfg.twin_n_test / n)
            df = split_manifest(df, fractions=fractions, seed=cfg.seed)
        return Cohort(manifest=df, manifest_path=path, is_twin=False, oracle=None)


    note(f"twin cohort: generating or reusing {cfg.twin_n_cases} cases")
    folder = generate_twin(paths.twin_dir(cfg.profile, cfg.seed, out), cfg, seed=cfg.seed, progress=progress)
    oracle = json.loads((folder / "oracle.json").read_text())
    df = load_manifest(folder / "manifest.csv")
    return Cohort(manifest=df, manifest_path=folder / "manifest.csv", is_twin=True, oracle=oracle)


class LandmarkSourceError(ValueError):
    """The study cannot place its regions: no detector was given and none can be trained (one line)."""


#: Where a site finds how to provide landmarks (the appendix page of the book).
ANNOTATIONS_PAGE = "book/appendix/annotations.md"


def check_landmark_source(cfg: Profile, cohort: Cohort) -> None:
    """Refuse, in one line and before any work, a study that has no way to its landmarks.

    With a given detector (``cfg.landmark_model``) nothing is needed from the manifest. Otherwise the detector
    is trained on the training split and selected and calibrated on the validation split, so every train and
    val case needs ground-truth landmarks; the message names the manifest, counts what is missing (never
    naming a case) and gives both ways out: a ``landmarks`` column, or ``--landmark-model DIR``.
    """
    if cfg.landmark_model is not None:
        return
    df = cohort.manifest
    used = df[df["split"].isin(["train", "val"])] if "split" in df.columns else df
    truth = manifest_landmarks(df)
    have = set() if truth is None else set(truth["case_id"].astype(str))
    missing = sum(str(c) not in have for c in used["case_id"])
    if not missing:
        return
    if truth is None:
        problem = "no ground-truth landmarks (no `landmarks` column)"
    else:
        problem = f"{missing} of {len(used)} train/val case(s) without ground-truth landmarks"
    raise LandmarkSourceError(
        f"{cohort.manifest_path}: {problem}, so no landmark detector can be trained: add a `landmarks` "
        f"column pointing at annotation files (see {ANNOTATIONS_PAGE}) or pass --landmark-model DIR "
        "(papermill: -p landmark_model DIR) to use an existing detector")


def cohort_summary(cohort: Cohort) -> dict:
    """The cohort block of ``summary.json``: sizes, BMD statistics, correlations and prevalence."""

    df = cohort.manifest
    bmd = report.bmd_table(df)
    cats = report.category_table(df)
    return {
        "source": "twin" if cohort.is_twin else "manifest",
        "cases": len(df), "patients": int(df["patient_id"].nunique()),
        "split_cases": report.split_table(df)["cases"].drop("total").to_dict(),
        "bmd_mean": bmd["mean"].round(4).to_dict(), "bmd_sd": bmd["sd"].round(4).to_dict(),
        "bmd_corr": report.correlation_table(df)["r"].round(4).to_dict(),
        "positive_pct": cats["positive_pct"].round(2).to_dict(),
    }


def study_cohort(cfg: Profile, manifest: str | Path | None = None, out: str | Path | None = None) -> Cohort:
    """:func:`load_cohort`, timed and recorded in ``summary.json`` (oracle ceilings and cohort block)."""

    start = time.perf_counter()
    cohort = load_cohort(cfg, manifest=manifest, out=out)
    path = summary.summary_path(cfg.profile, out)
    summary.record_timing(path, "twin", time.perf_counter() - start)
    summary.update(path, oracle=cohort.oracle["ceilings"] if cohort.is_twin else [], cohort=cohort_summary(cohort))
    return cohort
