"""From per-case predictions to the paper's metrics, ensembles, ΔR between two models (the baselines live in :mod:`bmd.evaluation.baselines`).

A *predictions frame* has one row per case: ``case_id, patient_id, split, sex, reference``, the DXA
truth ``bmd_l1..bmd_l4`` (NaN = excluded) and the predictions ``pred_l1..pred_l4`` (g/cm²); T-scores
copied from DXA reports (``t_l1..t_l4``) may ride along and are used for the truth only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bmd.columns import BMD_COLUMNS, ID_COLUMNS, PRED_COLUMNS
from bmd.evaluation.metrics import evaluate, paired_delta_r
from bmd.inputs.tscores import t_scores_for_manifest


def predicted_t_scores(frame: pd.DataFrame) -> np.ndarray:
    """T-scores (N, 4) of the predicted BMD, with each row's reference table and sex."""

    as_bmd = frame[["sex", "reference"]].copy()
    for b, p in zip(BMD_COLUMNS, PRED_COLUMNS, strict=True):
        as_bmd[b] = frame[p].to_numpy()
    return t_scores_for_manifest(as_bmd).to_numpy()


def evaluate_predictions(frame: pd.DataFrame, split: str = "test", threshold: float = -2.5, n_boot: int = 2000,
                         seed: int = 0) -> pd.DataFrame:
    """The metrics table of :func:`bmd.evaluation.metrics.evaluate` for one split of a predictions frame."""

    part = frame[frame["split"] == split].reset_index(drop=True)
    return evaluate(part[PRED_COLUMNS].to_numpy(float), part[BMD_COLUMNS].to_numpy(float),
                    predicted_t_scores(part), t_scores_for_manifest(part).to_numpy(),
                    part["patient_id"].to_numpy(), threshold=threshold, n_boot=n_boot, seed=seed)


def delta_r_against(frame: pd.DataFrame, reference: pd.DataFrame, split: str = "test", n_boot: int = 2000,
                    seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """R(frame) − R(reference) on the cases of ``split`` both frames predicted (matched on ``case_id``),
    per vertebra and ``avg``, with the paired patient-level bootstrap of :func:`bmd.evaluation.metrics.paired_delta_r`.

    The resamples are drawn as :func:`evaluate_predictions` draws them (same seed, same patients), so on
    the same cases they are the very resamples behind each model's own R interval.
    """

    part = frame[frame["split"] == split].reset_index(drop=True)
    ref = reference.drop_duplicates("case_id").set_index("case_id")
    part = part[part["case_id"].isin(ref.index)].reset_index(drop=True)
    ref_pred = ref.loc[part["case_id"], PRED_COLUMNS].to_numpy(float)
    return paired_delta_r(part[PRED_COLUMNS].to_numpy(float), ref_pred, part[BMD_COLUMNS].to_numpy(float),
                          part["patient_id"].to_numpy(), n_boot=n_boot, seed=seed, level=level)


def ensemble(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Mean prediction of several models' frames (aligned on ``case_id``; no retraining)."""
    if not frames:
        raise ValueError("an ensemble needs at least one predictions frame")
    base = frames[0].set_index("case_id")
    preds = [f.set_index("case_id").loc[base.index, PRED_COLUMNS].to_numpy(float) for f in frames]
    out = base.copy()
    out[PRED_COLUMNS] = np.mean(preds, axis=0)
    return out.reset_index()


def val_test_frame(manifest: pd.DataFrame, predictions: dict[str, np.ndarray]) -> pd.DataFrame:
    """The predictions frame of a model fitted on ``manifest``: its ids and truth, ``pred_l1..pred_l4``
    (one array per column, rows following ``manifest``), val and test rows only."""
    out = manifest[[c for c in ID_COLUMNS + BMD_COLUMNS + ["t_l1", "t_l2", "t_l3", "t_l4"]
                    if c in manifest.columns]].copy()
    for p in PRED_COLUMNS:
        out[p] = predictions[p]
    return out[out["split"].isin(["val", "test"])].reset_index(drop=True)
