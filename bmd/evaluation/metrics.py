"""The paper's metrics and the agreement statistics, with confidence intervals.

Per vertebra: Pearson R between predicted and DXA BMD; osteoporosis AUC computed on T-scores
(positives: true T below the threshold; score: the predicted T-score, lower = more likely); MAE and
RMSE in g/cm²; Bland–Altman bias and 95% limits of agreement. "avg" is the mean of the four
per-vertebra values, as in the paper's tables. 95% CIs come from a patient-level bootstrap (all scans
of a resampled patient go together, so repeat scans do not shrink the interval); DeLong's CI for
the AUC is given as a secondary figure (it treats scans as independent). Excluded vertebrae (NaN
truth) are masked everywhere.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bmd.columns import VERTEBRAE


def pearson_r(pred: np.ndarray, truth: np.ndarray) -> float:
    """Pearson R over pairs where both are finite (NaN when fewer than 3 pairs or no spread)."""
    pred, truth = np.asarray(pred, float), np.asarray(truth, float)
    ok = np.isfinite(pred) & np.isfinite(truth)
    if ok.sum() < 3 or np.ptp(pred[ok]) == 0 or np.ptp(truth[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(pred[ok], truth[ok])[0, 1])


def auc_low_is_positive(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC where a *lower* score means more likely positive (NaN scores dropped; NaN if one class)."""
    score, positive = np.asarray(score, float), np.asarray(positive, bool)
    ok = np.isfinite(score)
    pos = positive[ok]
    n_pos = int(pos.sum())
    n_neg = int(pos.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # Mann–Whitney U with average ranks for ties: the same value as sklearn's roc_auc_score, much faster
    ranks = stats.rankdata(-score[ok])
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def delong_ci(score: np.ndarray, positive: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """AUC (lower score = positive) and its DeLong confidence interval: ``(auc, low, high)``."""
    score, positive = np.asarray(score, float), np.asarray(positive, bool)
    ok = np.isfinite(score)
    x = -score[ok & positive]  # positives, higher = more positive
    y = -score[ok & ~positive]
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        return float("nan"), float("nan"), float("nan")
    # structural components: psi(x, y) = 1 if x > y, 0.5 if equal
    cmp = (x[:, None] > y[None, :]).astype(float) + 0.5 * (x[:, None] == y[None, :])
    auc = cmp.mean()
    v10 = cmp.mean(axis=1)
    v01 = cmp.mean(axis=0)
    var = v10.var(ddof=1) / m + v01.var(ddof=1) / n
    z = stats.norm.ppf(0.5 + level / 2)
    half = z * np.sqrt(max(var, 0.0))
    return float(auc), float(max(auc - half, 0.0)), float(min(auc + half, 1.0))


@dataclass(frozen=True)
class Agreement:
    """Agreement of predicted and DXA BMD for one vertebra (g/cm²)."""

    n: int
    mae: float
    rmse: float
    bias: float  # mean of prediction − truth
    loa_low: float  # bias − 1.96 SD of the differences
    loa_high: float


def agreement(pred: np.ndarray, truth: np.ndarray) -> Agreement:
    """MAE, RMSE and Bland–Altman bias and 95% limits of agreement over finite pairs."""
    pred, truth = np.asarray(pred, float), np.asarray(truth, float)
    ok = np.isfinite(pred) & np.isfinite(truth)
    diff = pred[ok] - truth[ok]
    if diff.size == 0:
        nan = float("nan")
        return Agreement(0, nan, nan, nan, nan, nan)
    sd = diff.std(ddof=1) if diff.size > 1 else 0.0
    return Agreement(int(diff.size), float(np.abs(diff).mean()), float(np.sqrt((diff**2).mean())),
                     float(diff.mean()), float(diff.mean() - 1.96 * sd), float(diff.mean() + 1.96 * sd))


def _point_metrics(pred: np.ndarray, truth: np.ndarray, t_pred: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """(R per vertebra, AUC per vertebra) as a (2, 4) array."""
    out = np.full((2, len(VERTEBRAE)), np.nan)
    for j in range(len(VERTEBRAE)):
        out[0, j] = pearson_r(pred[:, j], truth[:, j])
        valid = np.isfinite(truth[:, j])
        out[1, j] = auc_low_is_positive(t_pred[valid, j], positive[valid, j])
    return out


def patient_bootstrap_weights(patient_ids: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """Case weights (n_boot, N) of a patient-level bootstrap: how often each case's patient was drawn.

    Drawing patients with replacement and keeping all their cases is the same as weighting each case
    by its patient's draw count, which lets every resample be scored at once.
    """
    ids, inverse = np.unique(np.asarray(patient_ids), return_inverse=True)
    draws = np.random.default_rng(seed).integers(0, len(ids), (n_boot, len(ids)))
    counts = np.zeros((n_boot, len(ids)))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts[:, inverse]


def weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pearson R of (x, y) under each row of frequency ``weights`` (B, N): :func:`pearson_r` of a resample."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    w = weights[:, ok]
    x, y = x[ok], y[ok]
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = (w @ x) / total, (w @ y) / total
        dx, dy = x[None] - mx[:, None], y[None] - my[:, None]
        vx, vy, cov = (w * dx**2).sum(1), (w * dy**2).sum(1), (w * dx * dy).sum(1)
        r = cov / np.sqrt(vx * vy)
    # as pearson_r: fewer than 3 distinct cases, or no spread in either variable → undefined
    drawn = w > 0

    def no_spread(v: np.ndarray) -> np.ndarray:
        return np.where(drawn, v, np.inf).min(axis=1) == np.where(drawn, v, -np.inf).max(axis=1)

    r[(drawn.sum(axis=1) < 3) | no_spread(x) | no_spread(y)] = np.nan
    return np.clip(r, -1.0, 1.0)


def weighted_auc_low_is_positive(score: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`auc_low_is_positive` under each row of frequency ``weights`` (B, N), ties counted half."""
    score, positive = np.asarray(score, float), np.asarray(positive, bool)
    ok = np.isfinite(score)
    score, positive, w = score[ok], positive[ok], weights[:, ok]
    if score.size == 0:
        return np.full(len(weights), np.nan)
    levels, group = np.unique(score, return_inverse=True)
    onehot = np.zeros((score.size, levels.size))
    onehot[np.arange(score.size), group] = 1.0
    pos_w = (w * positive) @ onehot  # (B, G): positive weight at each distinct score
    neg_w = (w * ~positive) @ onehot
    # negatives scoring strictly higher than each level (lower score = more likely positive)
    higher = np.cumsum(neg_w[:, ::-1], axis=1)[:, ::-1] - neg_w
    n_pos, n_neg = pos_w.sum(1), neg_w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos_w * (higher + 0.5 * neg_w)).sum(1) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def _bootstrap_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap ``samples`` (NaN where fewer than half the resamples are defined)."""
    alpha = (1 - level) / 2
    finite = samples[np.isfinite(samples)]
    if finite.size < samples.size // 2:
        return float("nan"), float("nan")
    return float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha))


def paired_delta_r(pred: np.ndarray, reference: np.ndarray, truth: np.ndarray, patient_ids: np.ndarray,
                   n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """R(pred) − R(reference) per vertebra and ``avg``, with a paired patient-level bootstrap CI.

    ``pred``, ``reference`` and ``truth`` are (N, 4) BMD of the same cases. Both models are scored on
    the very same resamples (one weight row per resample, :func:`patient_bootstrap_weights` with
    ``seed``, as :func:`evaluate` draws them), so the interval is that of the difference and not of two
    independent estimates: what two models share (the hard cases of a resample) cancels. ``avg`` is
    the mean of the four per-vertebra differences, its CI from the same resamples. Returns one row per
    vertebra (L1..L4, avg) with ``delta_r, delta_r_lo, delta_r_hi``.
    """
    pred, reference, truth = (np.asarray(a, float) for a in (pred, reference, truth))
    if len(truth) == 0:  # no common cases: nothing to compare
        return pd.DataFrame([{"vertebra": v, "delta_r": np.nan, "delta_r_lo": np.nan, "delta_r_hi": np.nan}
                             for v in (*VERTEBRAE, "avg")])
    weights = patient_bootstrap_weights(patient_ids, n_boot, seed)
    point = np.full(len(VERTEBRAE), np.nan)
    boot = np.full((n_boot, len(VERTEBRAE)), np.nan)
    for j in range(len(VERTEBRAE)):
        # a case counts for both models only where both predicted it (and the truth is there)
        ok = np.isfinite(pred[:, j]) & np.isfinite(reference[:, j]) & np.isfinite(truth[:, j])
        a, b, t = (np.where(ok, x[:, j], np.nan) for x in (pred, reference, truth))
        point[j] = pearson_r(a, t) - pearson_r(b, t)
        boot[:, j] = weighted_pearson(a, t, weights) - weighted_pearson(b, t, weights)
    rows = [{"vertebra": v, "delta_r": float(point[j]), "delta_r_lo": _bootstrap_ci(boot[:, j], level)[0],
             "delta_r_hi": _bootstrap_ci(boot[:, j], level)[1]} for j, v in enumerate(VERTEBRAE)]
    with warnings.catch_warnings():  # a vertebra undefined in every resample stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        avg_point, avg_boot = float(np.nanmean(point)), np.nanmean(boot, axis=1)
    lo, hi = _bootstrap_ci(avg_boot, level)
    rows.append({"vertebra": "avg", "delta_r": avg_point, "delta_r_lo": lo, "delta_r_hi": hi})
    return pd.DataFrame(rows)


def evaluate(pred: np.ndarray, truth: np.ndarray, t_pred: np.ndarray, t_true: np.ndarray,
             patient_ids: np.ndarray, threshold: float = -2.5, n_boot: int = 2000, seed: int = 0,
             level: float = 0.95) -> pd.DataFrame:
    """The paper's metrics per vertebra and ``avg`` with patient-level bootstrap CIs.

    ``pred``/``truth`` are BMD (N, 4) in g/cm² (NaN truth = excluded vertebra), ``t_pred``/``t_true``
    the corresponding T-scores. Returns one row per vertebra (L1..L4, avg) with ``r, r_lo, r_hi,
    auc, auc_lo, auc_hi, auc_delong_lo, auc_delong_hi, mae, rmse, bias, loa_low, loa_high, n,
    n_positive``. Bootstrap resamples patients with replacement (``n_boot`` times, seeded).
    """
    pred, truth = np.asarray(pred, float), np.asarray(truth, float)
    t_pred, t_true = np.asarray(t_pred, float), np.asarray(t_true, float)
    with np.errstate(invalid="ignore"):
        positive = t_true < threshold
    point = _point_metrics(pred, truth, t_pred, positive)

    weights = patient_bootstrap_weights(patient_ids, n_boot, seed)
    boot = np.full((n_boot, 2, len(VERTEBRAE)), np.nan)
    for j in range(len(VERTEBRAE)):
        boot[:, 0, j] = weighted_pearson(pred[:, j], truth[:, j], weights)
        valid = np.isfinite(truth[:, j])
        boot[:, 1, j] = weighted_auc_low_is_positive(t_pred[valid, j], positive[valid, j], weights[:, valid])

    def ci(samples: np.ndarray) -> tuple[float, float]:
        return _bootstrap_ci(samples, level)

    rows = []
    for j, v in enumerate(VERTEBRAE):
        valid = np.isfinite(truth[:, j])
        agr = agreement(pred[:, j], truth[:, j])
        _, d_lo, d_hi = delong_ci(t_pred[valid, j], positive[valid, j], level)
        rows.append({"vertebra": v, "r": point[0, j], "r_lo": ci(boot[:, 0, j])[0], "r_hi": ci(boot[:, 0, j])[1],
                     "auc": point[1, j], "auc_lo": ci(boot[:, 1, j])[0], "auc_hi": ci(boot[:, 1, j])[1],
                     "auc_delong_lo": d_lo, "auc_delong_hi": d_hi, "mae": agr.mae, "rmse": agr.rmse,
                     "bias": agr.bias, "loa_low": agr.loa_low, "loa_high": agr.loa_high, "n": agr.n,
                     "n_positive": int(positive[valid, j].sum())})
    with warnings.catch_warnings():  # an all-NaN sample (no positives anywhere) stays NaN, shown as n/a
        warnings.simplefilter("ignore", RuntimeWarning)
        avg_boot = np.nanmean(boot, axis=2)  # the avg of each bootstrap sample, so its CI is consistent
        rows.append({
            "vertebra": "avg", "r": float(np.nanmean(point[0])), "r_lo": ci(avg_boot[:, 0])[0],
            "r_hi": ci(avg_boot[:, 0])[1], "auc": float(np.nanmean(point[1])), "auc_lo": ci(avg_boot[:, 1])[0],
            "auc_hi": ci(avg_boot[:, 1])[1], "auc_delong_lo": np.nan, "auc_delong_hi": np.nan,
            **{k: float(np.nanmean([r[k] for r in rows])) for k in ("mae", "rmse", "bias", "loa_low", "loa_high")},
            "n": int(sum(r["n"] for r in rows)), "n_positive": int(sum(r["n_positive"] for r in rows))})
    return pd.DataFrame(rows)
