"""External validation: a trained model bundle on another site's manifest, without retraining.

:func:`evaluate_bundle` predicts the manifest's cases with :func:`bmd.deploy.predict.predict_images` and
scores them against the site's DXA exactly as the book scores its test split
(:func:`bmd.evaluation.predictions.evaluate_predictions`: Pearson R, osteoporosis AUC on T-scores, MAE/RMSE,
Bland–Altman bias and limits, with patient-level bootstrap CIs and DeLong's AUC interval), plus the
patient-level endpoint (the lowest vertebra T-score against osteoporosis).

**Which rows.** ``split="auto"`` (the default): when the manifest has a ``split`` column with at least
one ``test`` row, only the test rows (a site that split its data keeps its train/val rows for its own
tuning, and a manifest the model was trained on is then scored on its held-out split only); otherwise
every row (to a model from elsewhere, all of a site's cases are unseen). ``"test"`` and ``"all"``
force either. Image files are not required to exist up front: an unreadable or missing image becomes
a ``failed`` row.

**Truth and T-scores** come from the site: each row's ``reference`` table and ``sex`` (and the
``t_l*`` copied from DXA reports, when present) — not the bundle's default table.

**Calibration.** As ``bmd predict``: the bundle's validation recalibration is applied unless
``raw=True``; ``metrics.json`` and every row of ``predictions.csv`` say which (``calibration``:
``validation-linear`` or ``none``). R and AUC do not depend on it; bias, MAE and the categories do.

**Which predictions count.** Metrics use every case with a prediction, ``ok`` and ``flagged`` alike
(what a user of ``bmd predict`` would be given); ``metrics_ok_only`` repeats them without the flagged
ones. Failed cases have no prediction: they are counted, listed in ``metrics.json`` (case id and
reason) and kept in ``predictions.csv``, never silently dropped.

Written into ``out`` (each file atomically): ``predictions.csv`` (one row per evaluated case: ids,
split, sex, reference, status, reason, plausibility, calibration, truth, predictions, predicted
T-scores and category), ``metrics.json`` and ``predicted_vs_dxa.png``.
"""

from __future__ import annotations

import json
import os
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from bmd.columns import BMD_COLUMNS, PRED_COLUMNS, VERTEBRAE
from bmd.deploy.bundle import UNCALIBRATED, Bundle, load_bundle
from bmd.deploy.predict import predict_images
from bmd.evaluation.figures import plot_predicted_vs_dxa
from bmd.evaluation.metrics import auc_low_is_positive
from bmd.evaluation.predictions import evaluate_predictions, predicted_t_scores
from bmd.infra.atomic import atomic_path, write_bytes, write_text
from bmd.infra.digests import sha256_file
from bmd.infra.jsonvalues import finite_or_null
from bmd.inputs.manifest import load_manifest
from bmd.inputs.tscores import t_scores_for_manifest, who_category

SPLITS = ("auto", "test", "all")
_EVALUATED = "evaluated"  # the split label the metric functions select


def _rows_to_evaluate(manifest: pd.DataFrame, split: str) -> tuple[pd.DataFrame, str]:
    has_split = "split" in manifest.columns
    has_test = has_split and bool((manifest["split"] == "test").any())
    if split == "test" and not has_test:
        raise ValueError("split='test' asked for, but the manifest has no test rows")
    if split == "test" or (split == "auto" and has_test):
        return manifest[manifest["split"] == "test"].reset_index(drop=True), "test"
    return manifest.reset_index(drop=True), "all"


def _lowest_t_endpoint(frame: pd.DataFrame, threshold: float, n_boot: int, seed: int) -> dict:
    """AUC of the lowest predicted vertebra T-score for osteoporosis by the lowest true one (patient
    bootstrap CI), and sensitivity/specificity of the predicted category at the threshold."""

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t_true = np.nanmin(t_scores_for_manifest(frame).to_numpy(float), axis=1)
        t_pred = np.nanmin(predicted_t_scores(frame), axis=1)
    ok = np.isfinite(t_true) & np.isfinite(t_pred)
    t_true, t_pred, patients = t_true[ok], t_pred[ok], frame["patient_id"].to_numpy()[ok]
    positive = t_true < threshold  # the paper's label; WHO's category uses <=, they differ only at equality
    called = t_pred <= threshold
    auc = auc_low_is_positive(t_pred, positive)
    ids, inverse = np.unique(patients, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(ids))]
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot if len(ids) else 0):
        pick = np.concatenate([members[k] for k in rng.integers(0, len(ids), len(ids))])
        boot.append(auc_low_is_positive(t_pred[pick], positive[pick]))
    boot = np.asarray(boot, dtype=float)
    boot = boot[np.isfinite(boot)]
    lo, hi = (np.quantile(boot, [0.025, 0.975]).tolist() if boot.size >= max(1, n_boot // 2)
              else [float("nan"), float("nan")])
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return {"n": int(ok.sum()), "n_positive": n_pos, "auc": auc, "auc_lo": lo, "auc_hi": hi,
            "sensitivity": float((called & positive).sum() / n_pos) if n_pos else float("nan"),
            "specificity": float((~called & ~positive).sum() / n_neg) if n_neg else float("nan")}


def _same_manifest_as_training(bundle: Bundle, manifest_path: Path) -> bool:
    """Whether the bundle was trained on this very manifest: same SHA-256 (older bundles: same path)."""
    recorded = bundle.info.get("training_data", {}).get("manifest_sha256")
    if recorded:
        return sha256_file(manifest_path) == recorded
    training = bundle.info.get("provenance", {}).get("training_config", {})
    return bool(training.get("manifest")) and Path(str(training["manifest"])).resolve() == manifest_path


def _records(df: pd.DataFrame) -> list[dict]:
    return json.loads(df.to_json(orient="records"))  # NaN → null, numpy → plain JSON numbers


def evaluate_bundle(bundle: Bundle | str | os.PathLike, manifest: str | os.PathLike, out: str | os.PathLike, *,
                    split: str = "auto", n_boot: int = 2000, seed: int = 0, batch_size: int = 8,
                    raw: bool = False, progress: bool = False) -> dict:
    """Validate a model bundle on a manifest (see the module docstring); returns what ``metrics.json`` holds.

    ``raw``: score the network's output even when the bundle carries a calibration.

    Raises :class:`bmd.inputs.manifest.ManifestError` for an invalid manifest and
    :class:`bmd.deploy.bundle.BundleError` for an unusable bundle.
    """

    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    manifest_path = Path(manifest).resolve()
    table = load_manifest(manifest_path, check_files=False)  # a missing image is a failed row, not an abort
    rows, used = _rows_to_evaluate(table, split)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    pred = predict_images(list(rows["image_path"]), bundle, batch_size=batch_size, raw=raw, progress=progress)
    keep = [c for c in ("case_id", "patient_id", "split", "sex", "age", "reference", "image") if c in rows.columns]
    frame = rows[keep].copy()
    if "split" not in frame.columns:
        frame["split"] = ""
    frame["status"], frame["reason"], frame["plausibility"] = pred["status"], pred["reason"], pred["plausibility"]
    frame["calibration"] = pred["calibration"]
    frame[BMD_COLUMNS] = rows[BMD_COLUMNS].to_numpy(float)
    for v in VERTEBRAE:
        if f"t_{v.lower()}" in rows.columns:
            frame[f"t_{v.lower()}"] = rows[f"t_{v.lower()}"].to_numpy(float)
    frame[PRED_COLUMNS] = pred[[f"bmd_{v.lower()}" for v in VERTEBRAE]].to_numpy(float)
    frame[[f"pred_t_{v.lower()}" for v in VERTEBRAE]] = np.nan
    predicted = frame["status"] != "failed"
    if predicted.any():

        frame.loc[predicted, [f"pred_t_{v.lower()}" for v in VERTEBRAE]] = predicted_t_scores(frame[predicted])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lowest = np.nanmin(frame[[f"pred_t_{v.lower()}" for v in VERTEBRAE]].to_numpy(float), axis=1)

    frame["pred_category"] = list(who_category(lowest, bundle.threshold))
    write_text(out / "predictions.csv", frame.to_csv(index=False, float_format="%.5f"))

    def metrics_of(mask: pd.Series) -> tuple[list[dict], dict | None]:
        part = frame[mask].assign(split=_EVALUATED)
        if len(part) < 3:
            return [], None
        table_ = evaluate_predictions(part, _EVALUATED, threshold=bundle.threshold, n_boot=n_boot, seed=seed)
        return _records(table_), _lowest_t_endpoint(part, bundle.threshold, n_boot, seed)

    metrics, lowest_t = metrics_of(predicted)
    ok_only, lowest_ok = metrics_of(frame["status"] == "ok")
    failed = frame[frame["status"] == "failed"]
    same = _same_manifest_as_training(bundle, manifest_path)
    calibration = str(pred["calibration"].iloc[0]) if len(pred) else (UNCALIBRATED if raw else
                                                                        bundle.calibration_name)
    result = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "bundle": str(bundle.path), "manifest": str(manifest_path), "rows": used,
        "same_manifest_as_training": same, "calibration": calibration,
        "threshold": bundle.threshold, "n_boot": n_boot, "seed": seed,
        "n_cases": int(len(frame)), "n_patients": int(frame["patient_id"].nunique()),
        "n_ok": int((frame["status"] == "ok").sum()), "n_flagged": int((frame["status"] == "flagged").sum()),
        "n_failed": int(len(failed)),
        "failed": [{"case_id": str(c), "reason": str(r)} for c, r in zip(failed["case_id"], failed["reason"],
                                                                          strict=True)],
        "metrics": metrics, "lowest_t": lowest_t,
        "metrics_ok_only": ok_only, "lowest_t_ok_only": lowest_ok,
        "figure": None,
    }
    if int(predicted.sum()) >= 3:
        import matplotlib.pyplot as plt


        fig = plot_predicted_vs_dxa(frame[predicted].assign(split=_EVALUATED), split=_EVALUATED)
        fig.suptitle(f"external validation: {int(predicted.sum())} cases ({used} rows of {manifest_path.name})",
                     fontsize=9)
        fig.tight_layout()
        with atomic_path(out / "predicted_vs_dxa.png") as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)
        result["figure"] = "predicted_vs_dxa.png"
    result = finite_or_null(result)
    write_bytes(out / "metrics.json", json.dumps(result, indent=1).encode())
    return result
