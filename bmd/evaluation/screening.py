"""Screening beyond the paper: endpoints, operating points, WHO categories, subgroups and agreement.

Everything starts from *predictions frames* (see :mod:`bmd.evaluation.predictions`): one row per case with ids,
split, sex, reference table, DXA truth ``bmd_l1..bmd_l4`` and predictions ``pred_l1..pred_l4``.

* **Endpoints** — each vertebra, and the patient-level endpoint clinicians use: the lowest valid
  vertebra T-score (``lowest``) and the mean over valid vertebrae (``mean``). A case is positive when
  its DXA T-score is below the threshold (the paper's T < −2.5); the score is the predicted T-score
  (lower = more likely), over the same valid vertebrae as the truth.
* **Operating points** are chosen on the validation split only (Youden's J; the highest threshold
  reaching 90% sensitivity) and applied unchanged to the test split.
* **Recalibration** — a regression output shrinks toward the mean, so thresholding it under-calls
  osteoporosis. Before categorising, predictions are mapped back with the inverse of the line
  ``pred = a + b·truth`` fitted on the validation split (per vertebra), which restores the spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score, roc_curve

from bmd.columns import BMD_COLUMNS, PRED_COLUMNS, VERTEBRAE
from bmd.evaluation.metrics import agreement, auc_low_is_positive, patient_bootstrap_weights, pearson_r
from bmd.evaluation.predictions import predicted_t_scores
from bmd.inputs.tscores import DEFAULT_THRESHOLD, t_scores_for_manifest, who_category

ENDPOINTS: tuple[str, ...] = (*VERTEBRAE, "lowest", "mean")
WHO_CATEGORIES: tuple[str, ...] = ("normal", "osteopenia", "osteoporosis")
AGE_BANDS: tuple[tuple[float, float, str], ...] = ((0, 50, "< 50"), (50, 65, "50–64"), (65, 75, "65–74"),
                                                   (75, 200, "≥ 75"))


# ------------------------------------------------------------------------------------------ endpoints


def endpoint_scores(frame: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Long table of DXA and predicted T-scores per case and endpoint.

    Columns: ``case_id, patient_id, split, sex, endpoint, t_true, t_pred, positive``. Excluded
    vertebrae (NaN truth) are left out of the vertebra rows and of ``lowest``/``mean``.
    """
    t_true = t_scores_for_manifest(frame).to_numpy(float)
    t_pred = predicted_t_scores(frame)
    t_pred = np.where(np.isfinite(t_true), t_pred, np.nan)  # only vertebrae DXA measured
    columns = {v: (t_true[:, j], t_pred[:, j]) for j, v in enumerate(VERTEBRAE)}
    with np.errstate(all="ignore"), _quiet_nan():
        columns["lowest"] = (np.nanmin(t_true, axis=1), np.nanmin(t_pred, axis=1))
        columns["mean"] = (np.nanmean(t_true, axis=1), np.nanmean(t_pred, axis=1))
    base = frame[["case_id", "patient_id", "split", "sex"]].reset_index(drop=True)
    parts = []
    for endpoint, (truth, pred) in columns.items():
        part = base.copy()
        part["endpoint"] = endpoint
        part["t_true"], part["t_pred"] = truth, pred
        parts.append(part[np.isfinite(truth) & np.isfinite(pred)])
    out = pd.concat(parts, ignore_index=True)
    out["positive"] = out["t_true"] < threshold
    return out


class _quiet_nan:
    """Silence numpy's all-NaN-slice warnings (a case with every vertebra excluded has no endpoint)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


# ------------------------------------------------------------------------------------ operating points


@dataclass(frozen=True)
class OperatingPoint:
    """A predicted-T-score threshold: a case is called positive when its predicted T ≤ ``threshold``."""

    name: str
    threshold: float


def choose_operating_points(val: pd.DataFrame, sensitivity: float = 0.90) -> list[OperatingPoint]:
    """Youden's J and the first threshold reaching ``sensitivity``, from one endpoint's validation rows."""
    positive, score = val["positive"].to_numpy(bool), val["t_pred"].to_numpy(float)
    if positive.all() or not positive.any():
        raise ValueError("choosing an operating point needs positives and negatives in the validation split")
    # roc_curve wants "higher = more positive": negate the T-score
    fpr, tpr, thr = roc_curve(positive, -score)
    youden = int(np.argmax(tpr - fpr))
    reach = int(np.flatnonzero(tpr >= sensitivity)[0])
    return [OperatingPoint("Youden", float(-thr[youden])),
            OperatingPoint(f"{round(100 * sensitivity)}% sensitivity", float(-thr[reach]))]


def _wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def confusion_metrics(positive: np.ndarray, called: np.ndarray | None) -> dict:
    """Sensitivity, specificity, PPV, NPV (with Wilson 95% intervals) and the counts behind them.

    ``called`` None means no operating point could be chosen: every figure is NaN.
    """
    if called is None:
        nan = float("nan")
        return {"tp": 0, "fp": 0, "tn": 0, "fn": 0, **{k: nan for k in ("sensitivity", "specificity", "ppv", "npv")},
                **{f"{k}_ci": [nan, nan] for k in ("sensitivity", "specificity", "ppv", "npv")}}
    positive, called = np.asarray(positive, bool), np.asarray(called, bool)
    tp, fn = int((positive & called).sum()), int((positive & ~called).sum())
    tn, fp = int((~positive & ~called).sum()), int((~positive & called).sum())
    out: dict = {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    for name, k, n in (("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp), ("ppv", tp, tp + fp),
                       ("npv", tn, tn + fn)):
        out[name] = k / n if n else float("nan")
        out[f"{name}_ci"] = list(_wilson(k, n))
    return out


def operating_point_table(frames: dict[str, pd.DataFrame], endpoint: str = "lowest",
                          threshold: float = DEFAULT_THRESHOLD, sensitivity: float = 0.90) -> pd.DataFrame:
    """For each model: thresholds chosen on validation, then test-split sensitivity, specificity, PPV, NPV.

    One row per (model, operating point) with the threshold, the AUC of the endpoint on the test split
    and the confusion counts.
    """
    rows = []
    for model, frame in frames.items():
        scores = endpoint_scores(frame, threshold)
        scores = scores[scores["endpoint"] == endpoint]
        val, test = scores[scores["split"] == "val"], scores[scores["split"] == "test"]
        auc = auc_low_is_positive(test["t_pred"].to_numpy(), test["positive"].to_numpy())
        try:
            points = choose_operating_points(val, sensitivity)
        except ValueError:  # e.g. a tiny cohort without positives in its validation split
            points = [OperatingPoint(name, float("nan")) for name in ("Youden", f"{round(100 * sensitivity)}% "
                                                                                 "sensitivity")]
        for point in points:
            called = None if np.isnan(point.threshold) else test["t_pred"].to_numpy() <= point.threshold
            rows.append({"model": model, "endpoint": endpoint, "operating_point": point.name,
                         "threshold_t": point.threshold, "auc": auc,
                         **confusion_metrics(test["positive"].to_numpy(), called)})
    return pd.DataFrame(rows)


def format_operating_points(table: pd.DataFrame) -> pd.DataFrame:
    """The operating-point table for display: percentages with 95% intervals."""

    def pct(value: float, ci: list) -> str:
        if not np.isfinite(value):
            return "n/a"
        return f"{100 * value:.0f}% [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"

    out = pd.DataFrame({
        "model": table["model"], "operating point": table["operating_point"],
        "predicted T ≤": table["threshold_t"].map(lambda t: f"{t:.2f}" if np.isfinite(t) else "n/a"),
        **{name.upper() if len(name) == 3 else name: [pct(v, c) for v, c in zip(table[name], table[f"{name}_ci"],
                                                                                 strict=True)]
           for name in ("sensitivity", "specificity", "ppv", "npv")},
        "TP/FP/TN/FN": [f"{a}/{b}/{c}/{d}" for a, b, c, d in table[["tp", "fp", "tn", "fn"]].to_numpy()],
    })
    return out.set_index(["model", "operating point"])


def best_on_validation(frames: dict[str, pd.DataFrame]) -> str:
    """The model whose validation-split R (mean over L1–L4) is highest: a choice that never sees test data."""

    def val_r(frame: pd.DataFrame) -> float:
        part = frame[frame["split"] == "val"]
        return float(np.nanmean([pearson_r(part[p].to_numpy(float), part[b].to_numpy(float))
                                 for b, p in zip(BMD_COLUMNS, PRED_COLUMNS, strict=True)]))

    return max(frames, key=lambda name: val_r(frames[name]))


# --------------------------------------------------------------------------------------- recalibration


@dataclass(frozen=True)
class Recalibration:
    """Per-vertebra inverse-regression lines ``truth = (pred − intercept) / slope`` from validation."""

    intercept: tuple[float, ...]
    slope: tuple[float, ...]

    @classmethod
    def fit(cls, frame: pd.DataFrame, split: str = "val") -> Recalibration:
        """Fit ``pred = a + b·truth`` per vertebra on one split (the validation split by default)."""
        part = frame[frame["split"] == split]
        a, b = [], []
        for bcol, pcol in zip(BMD_COLUMNS, PRED_COLUMNS, strict=True):
            x, y = part[bcol].to_numpy(float), part[pcol].to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            if ok.sum() < 3 or np.ptp(x[ok]) == 0:
                raise ValueError(f"recalibration needs at least 3 distinct {bcol} values in the {split} split")
            slope, intercept = np.polyfit(x[ok], y[ok], 1)
            if slope <= 0 or np.ptp(y[ok]) == 0:
                raise ValueError(f"{pcol} does not increase with {bcol} on the {split} split: cannot recalibrate")
            a.append(float(intercept))
            b.append(float(slope))
        return cls(tuple(a), tuple(b))

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A copy of ``frame`` with recalibrated predictions."""
        out = frame.copy()
        out[PRED_COLUMNS] = self.apply_array(out[PRED_COLUMNS].to_numpy(float))
        return out

    def apply_array(self, pred: np.ndarray) -> np.ndarray:
        """Recalibrated predictions of an (N, 4) array of raw ones (L1–L4, g/cm²)."""
        pred = np.asarray(pred, dtype=np.float64)
        return (pred - np.asarray(self.intercept)) / np.asarray(self.slope)

    @property
    def scale(self) -> tuple[float, ...]:
        """``a`` of ``calibrated = a·raw + b`` per vertebra (``1 / slope``)."""
        return tuple(1.0 / s for s in self.slope)

    @property
    def offset(self) -> tuple[float, ...]:
        """``b`` of ``calibrated = a·raw + b`` per vertebra (``−intercept / slope``)."""
        return tuple(-i / s for i, s in zip(self.intercept, self.slope, strict=True))

    def to_dict(self) -> dict:
        """A JSON-ready description: the fitted lines and the map they give, per vertebra."""
        return {"vertebrae": list(VERTEBRAE), "fit": "pred = intercept + slope * truth", "intercept":
                list(self.intercept), "slope": list(self.slope),
                "map": "calibrated = scale * raw + offset", "scale": list(self.scale), "offset": list(self.offset)}

    @classmethod
    def from_dict(cls, data: dict) -> Recalibration:
        """The inverse of :meth:`to_dict` (the fitted lines are what is read back)."""
        intercept = tuple(float(x) for x in data["intercept"])
        slope = tuple(float(x) for x in data["slope"])
        if len(intercept) != len(VERTEBRAE) or len(slope) != len(VERTEBRAE):
            raise ValueError(f"a recalibration needs {len(VERTEBRAE)} intercepts and slopes")
        if not all(np.isfinite(intercept)) or not all(np.isfinite(s) and s > 0 for s in slope):
            raise ValueError("a recalibration needs finite intercepts and positive slopes")
        return cls(intercept, slope)


def who_confusion(frame: pd.DataFrame, split: str = "test", endpoint: str = "lowest") -> tuple[pd.DataFrame, float]:
    """WHO three-category confusion matrix (rows DXA, columns predicted) and the weighted kappa.

    Categories use WHO's cut-offs (normal T ≥ −1, osteoporosis T ≤ −2.5) on the endpoint's T-scores.
    """
    scores = endpoint_scores(frame)
    part = scores[(scores["split"] == split) & (scores["endpoint"] == endpoint)]
    truth = pd.Categorical(who_category(part["t_true"].to_numpy()), categories=WHO_CATEGORIES)
    pred = pd.Categorical(who_category(part["t_pred"].to_numpy()), categories=WHO_CATEGORIES)
    table = pd.crosstab(pd.Series(truth, name="DXA"), pd.Series(pred, name="predicted"), dropna=False)
    table = table.reindex(index=list(WHO_CATEGORIES), columns=list(WHO_CATEGORIES), fill_value=0)
    kappa = float(cohen_kappa_score(np.asarray(truth), np.asarray(pred), labels=list(WHO_CATEGORIES),
                                    weights="linear")) if len(part) else float("nan")
    return table, kappa


# ------------------------------------------------------------------------------------------- subgroups


def subgroup_table(frames: dict[str, pd.DataFrame], manifest: pd.DataFrame, endpoint: str = "lowest",
                   threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Test-split AUC and sensitivity/specificity at the Youden point per subgroup and model.

    Subgroups: sex, age band and, where the manifest has them, ``device``. The Youden threshold is
    chosen once per model on the whole validation split (not per subgroup).
    """
    info = manifest.set_index("case_id")
    rows = []
    for model, frame in frames.items():
        scores = endpoint_scores(frame, threshold)
        scores = scores[scores["endpoint"] == endpoint].set_index("case_id")
        try:
            youden = choose_operating_points(scores[scores["split"] == "val"].reset_index())[0]
        except ValueError:  # no positives (or no negatives) to choose from: no calls at all
            youden = OperatingPoint("Youden", float("nan"))
        test = scores[scores["split"] == "test"]
        age = info.loc[test.index, "age"].to_numpy(float)
        groups: dict[str, dict[str, np.ndarray]] = {
            "sex": {s: (test["sex"] == s).to_numpy() for s in ("F", "M")},
            "age": {label: (age >= lo) & (age < hi) for lo, hi, label in AGE_BANDS},
        }
        if "device" in info.columns:
            device = info.loc[test.index, "device"].fillna("").astype(str).to_numpy()
            groups["device"] = {d: device == d for d in sorted(set(device) - {""})}
        for kind, members in groups.items():
            for label, mask in members.items():
                sub = test[mask]
                positive = sub["positive"].to_numpy()
                m = confusion_metrics(positive, None if np.isnan(youden.threshold)
                                      else sub["t_pred"].to_numpy() <= youden.threshold)
                rows.append({"model": model, "subgroup": kind, "group": label, "cases": len(sub),
                             "positives": int(positive.sum()),
                             "auc": auc_low_is_positive(sub["t_pred"].to_numpy(), positive),
                             "sensitivity": m["sensitivity"], "specificity": m["specificity"]})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- agreement


def agreement_table(frames: dict[str, pd.DataFrame], split: str = "test") -> pd.DataFrame:
    """MAE, RMSE, Bland–Altman bias and 95% limits (g/cm²) per model and vertebra."""

    rows = []
    for model, frame in frames.items():
        part = frame[frame["split"] == split]
        for v, bcol, pcol in zip(VERTEBRAE, BMD_COLUMNS, PRED_COLUMNS, strict=True):
            a = agreement(part[pcol].to_numpy(float), part[bcol].to_numpy(float))
            rows.append({"model": model, "vertebra": v, "n": a.n, "mae": a.mae, "rmse": a.rmse, "bias": a.bias,
                         "loa_low": a.loa_low, "loa_high": a.loa_high})
    return pd.DataFrame(rows)


def weighted_tpr_at(positive: np.ndarray, score: np.ndarray, weights: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """TPR at the FPRs of ``grid`` for each row of case ``weights`` (B, N): the ROC of every resample at once.

    A case drawn k times counts k times, so row b gives the ROC curve (``roc_curve``, interpolated at
    ``grid``) of the resample that row describes. ``score``: higher = more likely positive. Rows without
    a weighted positive or negative are NaN.
    """
    positive, score = np.asarray(positive, bool), np.asarray(score, float)
    weights = np.atleast_2d(np.asarray(weights, float))
    order = np.argsort(-score, kind="mergesort")
    sorted_score = score[order]
    # one ROC point per distinct score (tied cases pass a threshold together), as roc_curve
    last = np.r_[np.flatnonzero(np.diff(sorted_score) != 0), len(score) - 1]
    w = weights[:, order]
    tps = np.cumsum(w * positive[order], axis=1)[:, last]
    fps = np.cumsum(w * ~positive[order], axis=1)[:, last]
    out = np.full((len(weights), len(grid)), np.nan)
    for b in np.flatnonzero((tps[:, -1] > 0) & (fps[:, -1] > 0)):
        fpr = np.r_[0.0, fps[b] / fps[b, -1]]
        tpr = np.r_[0.0, tps[b] / tps[b, -1]]
        out[b] = np.interp(grid, fpr, tpr)
    return out


def roc_with_band(scores: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                  grid: np.ndarray | None = None) -> pd.DataFrame:
    """ROC curve of one endpoint's rows with a 95% patient-level bootstrap band (TPR at fixed FPR).

    Returns ``fpr, tpr, tpr_lo, tpr_hi``. The resamples are scored at once as case weights
    (:func:`bmd.evaluation.metrics.patient_bootstrap_weights`).
    """

    grid = np.linspace(0, 1, 101) if grid is None else grid
    positive, score = scores["positive"].to_numpy(bool), -scores["t_pred"].to_numpy(float)
    tpr = weighted_tpr_at(positive, score, np.ones((1, len(score))), grid)[0]
    lo = hi = np.full(grid.shape, np.nan)
    if n_boot and len(score):
        boot = weighted_tpr_at(positive, score, patient_bootstrap_weights(scores["patient_id"].to_numpy(), n_boot,
                                                                          seed), grid)
        with _quiet_nan():
            lo, hi = np.nanquantile(boot, 0.025, axis=0), np.nanquantile(boot, 0.975, axis=0)
    return pd.DataFrame({"fpr": grid, "tpr": tpr, "tpr_lo": lo, "tpr_hi": hi})
