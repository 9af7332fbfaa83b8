"""The ``radiomics`` baseline: hand-crafted features of the 7 ROIs and a ridge regression per vertebra.

It is the strong hand-crafted baseline that keeps the twin honest (DESIGN §4): if band-pass texture,
bone-against-surroundings contrast and intensity statistics of the same crops the deep models see
come close to the deep models, the twin is too easy. Features of one ROI (``ROI_FEATURES``):

* intensity statistics: mean, SD, 10th/50th/90th percentiles and skewness;
* band-pass texture: the log SD of each of ``N_OCTAVES`` Laplacian-pyramid bands (a difference of
  Gaussians at every octave: finest band first), i.e. how much structure the ROI holds at each scale;
* bone against its surroundings: the centre of the crop (where the box puts the bone) against the
  border ring (soft tissue and lung around it): mean difference, log ratio, difference in units of
  the ring's SD (contrast normalised by the surround), log ratio of the SDs, and for the two finest
  bands the log ratio of the centre's band SD to the ring's (trabecular texture of the bone against
  the texture of its surroundings).

Everything is vectorised over cases (``scipy.ndimage.gaussian_filter`` on stacked arrays, the pyramid
halving the size at each octave), so the quick cohort's 1,681 cases × 7 ROIs take a few seconds.

The model: features standardised with training-split statistics, one ridge regression per vertebra
fitted on the training split, its penalty chosen on the validation split from a log grid (lowest
validation MSE), test cases never seen. Age and sex are left out on purpose: the deep models do not
see them either (the ``age_sex`` baseline covers them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from bmd.columns import BMD_COLUMNS, PRED_COLUMNS, ROI_NAMES
from bmd.evaluation.predictions import val_test_frame

#: Octaves of the band-pass pyramid (for a 64² crop: bands at 64, 32, 16, 8 and 4 pixels).
N_OCTAVES = 5
#: Bands (finest first) whose centre-against-ring texture ratio is a feature.
TEXTURE_CONTRAST_BANDS = 2
#: Names of the features of one ROI, in column order.
ROI_FEATURES: tuple[str, ...] = (
    "mean", "sd", "p10", "p50", "p90", "skew",
    *(f"band{k}_logsd" for k in range(N_OCTAVES)),
    "centre_minus_ring", "log_centre_over_ring", "centre_minus_ring_z", "log_sd_centre_over_ring",
    *(f"band{k}_log_centre_over_ring" for k in range(TEXTURE_CONTRAST_BANDS)),
)
#: The penalty grid searched on the validation split (features are standardised, so the scale is shared).
ALPHAS: np.ndarray = np.logspace(-2, 5, 29)

# below one grey level of an 8-bit crop: keeps the log of a flat band finite without hiding real texture
_EPS = 1e-4
# cases per block: bounds memory (float32 copies of a block) for paper-sized crops too
_BLOCK = 256


def feature_names() -> list[str]:
    """Column names of :func:`radiomics_features`: ``<roi>:<feature>``, ROIs in ``ROI_NAMES`` order."""

    return [f"{roi}:{name}" for roi in ROI_NAMES for name in ROI_FEATURES]


def _unit_float(images: np.ndarray) -> np.ndarray:
    """Crops as float32 in [0, 1] (uint8 caches store value × 255)."""
    scale = 1 / 255.0 if images.dtype == np.uint8 else 1.0
    return np.asarray(images, dtype=np.float32) * np.float32(scale)


def _centre_and_ring(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the central half of a crop (the bone) and of its outer eighth (the surroundings)."""
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    centre = (rows >= h // 4) & (rows < h - h // 4) & (cols >= w // 4) & (cols < w - w // 4)
    mh, mw = max(1, h // 8), max(1, w // 8)
    ring = (rows < mh) | (rows >= h - mh) | (cols < mw) | (cols >= w - mw)
    return centre, ring


def _masked_mean_sd(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-case mean and SD of ``x`` (N, H, W) over a (H, W) mask."""
    vals = x[:, mask]
    return vals.mean(axis=1), vals.std(axis=1)


def _intensity_statistics(images: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per case: mean, SD, 10th/50th/90th percentiles (inverted CDF) and skewness of a crop stack in [0, 1].

    An 8-bit stack goes through one histogram per case (256 levels): the moments and percentiles of
    the histogram are exact and far cheaper than sorting and cubing every pixel.
    """
    n = len(images)
    if images.dtype == np.uint8:
        flat = images.reshape(n, -1)
        hist = np.bincount((np.arange(n)[:, None] * 256 + flat).ravel(), minlength=n * 256).reshape(n, 256)
        levels = np.arange(256) / 255.0
        prob = hist / flat.shape[1]
        mean = prob @ levels
        dev = levels[None, :] - mean[:, None]
        var, third = (prob * dev**2).sum(axis=1), (prob * dev**3).sum(axis=1)
        cdf = np.cumsum(hist, axis=1)
        pct = [levels[np.argmax(cdf >= q * flat.shape[1], axis=1)] for q in (0.1, 0.5, 0.9)]
    else:
        flat = _unit_float(images).reshape(n, -1)
        mean = flat.mean(axis=1, dtype=np.float64)
        dev = flat - mean[:, None].astype(np.float32)
        sq = dev * dev
        var, third = sq.mean(axis=1, dtype=np.float64), (sq * dev).mean(axis=1, dtype=np.float64)
        pct = list(np.percentile(flat, [10, 50, 90], axis=1, method="inverted_cdf"))
    sd = np.sqrt(var)
    # a flat crop (no spread) has no skew rather than a division by zero
    skew = np.where(sd > _EPS, third / np.maximum(sd, _EPS) ** 3, 0.0)
    return mean, sd, *pct, skew


def roi_features(images: np.ndarray) -> np.ndarray:
    """The ``ROI_FEATURES`` of a stack of crops of one ROI: (N, H, W) uint8 or float in [0, 1] → (N, F)."""
    x = _unit_float(images)
    n, h, w = x.shape
    mean, sd, p10, p50, p90, skew = _intensity_statistics(images)

    centre, ring = _centre_and_ring(h, w)
    c_mean, c_sd = _masked_mean_sd(x, centre)
    r_mean, r_sd = _masked_mean_sd(x, ring)
    contrast = [c_mean - r_mean, np.log((c_mean + _EPS) / (r_mean + _EPS)), (c_mean - r_mean) / (r_sd + _EPS),
                np.log((c_sd + _EPS) / (r_sd + _EPS))]

    # Laplacian pyramid: each band is the level minus its blur (a DoG one octave wide); the blurred level,
    # halved, is the next level, so the coarse octaves cost a fraction of the fine one
    band_sd, texture = [], []
    level = x
    for k in range(N_OCTAVES):
        low = ndimage.gaussian_filter(level, sigma=(0, 1, 1), mode="reflect")
        band = level - low
        band_sd.append(np.log(np.sqrt((band**2).reshape(n, -1).mean(axis=1)) + _EPS))
        if k < TEXTURE_CONTRAST_BANDS:
            bc, br = _centre_and_ring(*band.shape[1:])
            c_rms = np.sqrt((band[:, bc] ** 2).mean(axis=1))
            r_rms = np.sqrt((band[:, br] ** 2).mean(axis=1))
            texture.append(np.log((c_rms + _EPS) / (r_rms + _EPS)))
        level = low[:, ::2, ::2]
    out = np.column_stack([mean, sd, p10, p50, p90, skew, *band_sd, *contrast, *texture]).astype(np.float64)
    return out


def radiomics_features(chest: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Features of all 7 ROIs: ``chest`` (N, Hc, Wc) and ``local`` (N, 6, H, W) → (N, 7 × F).

    Columns follow :func:`feature_names`. The arrays may be the ROI cache's memory maps: they are
    read block by block.
    """
    if len(chest) != len(local):
        raise ValueError(f"chest and local crops differ in cases: {len(chest)} vs {len(local)}")
    blocks = []
    for start in range(0, len(chest), _BLOCK):
        c = np.asarray(chest[start:start + _BLOCK])
        loc = np.asarray(local[start:start + _BLOCK])
        blocks.append(np.column_stack([roi_features(c), *(roi_features(loc[:, j]) for j in range(loc.shape[1]))]))
    if not blocks:
        return np.zeros((0, len(ROI_FEATURES) * (1 + local.shape[1])))
    return np.concatenate(blocks)


@dataclass(frozen=True)
class RidgeFit:
    """A ridge regression on standardised features, fitted on the training split.

    ``alpha`` is the penalty chosen on the validation split; ``val_mse`` the validation MSE of each
    ``alphas`` entry (the selection curve).
    """

    alpha: float
    coef: np.ndarray  # (F,) on standardised features
    intercept: float
    mean: np.ndarray  # (F,) training-split feature means
    scale: np.ndarray  # (F,) training-split feature SDs (1 where a feature is constant)
    alphas: np.ndarray
    val_mse: np.ndarray

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predictions for raw (unstandardised) feature rows."""
        return ((np.asarray(features, float) - self.mean) / self.scale) @ self.coef + self.intercept


def fit_ridge(features: np.ndarray, target: np.ndarray, train: np.ndarray, val: np.ndarray,
              alphas: np.ndarray = ALPHAS) -> RidgeFit:
    """Ridge of ``target`` on ``features`` fitted on ``train`` rows, penalty chosen by MSE on ``val`` rows.

    Rows with a NaN target (an excluded vertebra) are left out of both. The selection uses the
    validation split only (not an internal cross-validation of the training split), as every other
    model here chooses its epoch on it; the chosen fit is the training-split fit, so validation
    cases never enter the coefficients.
    """
    x, y = np.asarray(features, float), np.asarray(target, float)
    tr = np.asarray(train, bool) & np.isfinite(y)
    va = np.asarray(val, bool) & np.isfinite(y)
    if tr.sum() < 2 or va.sum() < 1:
        raise ValueError(f"ridge needs training and validation cases with a target (have {tr.sum()} and {va.sum()})")
    mean = x[tr].mean(axis=0)
    scale = x[tr].std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)  # a constant feature stays 0 after standardising
    xs = (x - mean) / scale
    y_mean = y[tr].mean()
    # one SVD gives the ridge solution of every penalty: coef(a) = V diag(s / (s² + a)) Uᵀ y
    u, s, vt = np.linalg.svd(xs[tr], full_matrices=False)
    uty = u.T @ (y[tr] - y_mean)
    alphas = np.asarray(alphas, float)
    coefs = vt.T @ (s / (s**2 + alphas[:, None]) * uty).T  # (F, A): one column per penalty
    val_mse = ((xs[va] @ coefs + y_mean - y[va, None]) ** 2).mean(axis=0)
    best = int(np.argmin(val_mse))
    return RidgeFit(float(alphas[best]), coefs[:, best], float(y_mean), mean, scale, alphas, val_mse)


def fit_radiomics(manifest: pd.DataFrame, features: np.ndarray, alphas: np.ndarray = ALPHAS) -> dict[str, RidgeFit]:
    """One :func:`fit_ridge` per vertebra (``bmd_l1`` … ``bmd_l4`` → fit); rows of ``features`` follow ``manifest``."""
    train = (manifest["split"] == "train").to_numpy()
    val = (manifest["split"] == "val").to_numpy()
    return {b: fit_ridge(features, manifest[b].to_numpy(float), train, val, alphas) for b in BMD_COLUMNS}


def radiomics_baseline(manifest: pd.DataFrame, features: np.ndarray, alphas: np.ndarray = ALPHAS) -> pd.DataFrame:
    """The ``radiomics`` baseline's val/test predictions frame (the layout of :mod:`bmd.evaluation.predictions`)."""
    fits = fit_radiomics(manifest, features, alphas)
    pred = np.column_stack([fits[b].predict(features) for b in BMD_COLUMNS])
    return val_test_frame(manifest, dict(zip(PRED_COLUMNS, pred.T, strict=True)))
