"""Is this image a frontal chest radiograph, and do the detected points sit on a chest's anatomy?

A graph detector always returns a chest-*shaped* set of points, even for a tibia, so the shape alone
cannot tell a chest from anything else. The score therefore also looks at the image itself, never at
DICOM headers (a mislabelled header must not make a knee a chest):

* ``appearance``: the image's layout at the scale of organs: the standardised network input (zero mean,
  unit variance) averaged over a 16 × 16 grid of cells (two dark lung fields beside a bright
  mediastinum, the shoulders above, the diaphragm and abdomen below);
* ``local``: the standardised input, smoothed over about 2% of its side, sampled on a 5 × 5 grid of ±4%
  of the side around each of the 16 predicted points (does each point sit where its structure should:
  a rib-cage margin between lung and chest wall, a clavicle across the apex?);
* ``shape``: the predicted shape after similarity (Procrustes) alignment to the mean shape (residual
  anatomy that pose cannot explain).

Why the image and not the detector's own features: both descriptors were first the detector's backbone
features (channel means and SDs of its two deepest stages; its feature map at the points). A network
trained on the twin cohort encodes the twin's texture, noise and rendering, so those features measured
"twin-ness": every real chest film of the real-data folder sat far out in them (the points landing right
on the films), and which films passed moved with the detector's training seed. At the scale of organs the
twin's anatomy was set against real films, so the layout is where a real chest film and the twin agree and a tibia,
a dental panoramic, a mammogram, a CT slice or a test pattern do not. The descriptors do not depend on the
network's weights: a retrained detector keeps its check.

A blank input (no contrast: :data:`MIN_CONTRAST`) is flagged outright: standardised, it has no layout
to compare.

Each component is a Mahalanobis distance to the training-split features (mean and Ledoit–Wolf shrunk
covariance of standardised features), of each training image as it is and under a few draws of another
acquisition (framing, processing, noise: :mod:`bmd.landmarks.acquisition`). Calibration on a held-out split
(the validation split, varied likewise) puts each component on a common scale,
``s_k = (log d_k − median) / (q99 − median)`` in log distance, takes the maximum over components, and
rescales that the same way, so that the combined score ``s`` is 0 at the calibration median and 1 at its
99th percentile. ``plausibility = 0.5 · 50^(−s)`` (capped at 1) is an approximate tail probability,
exponential through the calibration median (0.5) and 99th percentile (0.01). An image is ``flagged`` when
``s > 1`` (plausibility below 0.01): by construction ~99% of the calibration chest radiographs pass; the
test-split pass rate is reported by evaluation as an honest check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bmd.columns import PLAUSIBILITY_COMPONENTS
from bmd.landmarks.model import LandmarkNet

COMPONENTS: tuple[str, ...] = PLAUSIBILITY_COMPONENTS
_REASONS = {
    "appearance": "image content unlike the training chest radiographs",
    "local": "image content at the detected landmarks unlike the training anatomy",
    "shape": "detected landmark configuration unlike the training shapes",
}
_BLANK_REASON = "blank image: no contrast to read"
#: calibration quantile: the fraction of calibration images that pass
PASS_QUANTILE = 0.99
#: the descriptors' version, saved with a fitted model: one fitted on other descriptors cannot score these
DESCRIPTORS = "image-layout/1"
#: ``appearance``: the standardised input averaged over LAYOUT_GRID × LAYOUT_GRID cells
LAYOUT_GRID = 16
#: ``local``: PATCH_GRID × PATCH_GRID samples over ±PATCH_HALF_WIDTH (normalised units: ±4% of the input
#: side) around each point, of the input smoothed by a box of PATCH_SMOOTH of its side
PATCH_GRID = 5
PATCH_HALF_WIDTH = 0.08
PATCH_SMOOTH = 5 / 256
_CHUNK = 128  # images per batch: bounds the float copies of a large split
#: below this SD of its grey levels (in [0, 1]; about 2.5 levels of 255) an input is blank: standardised, it
#: would be all zeros, a layout near enough to the average chest's to pass, so it is flagged outright with
#: the score BLANK_SCORE. The twin's and the real chest films' inputs have an SD of 0.13 and more.
MIN_CONTRAST = 0.01
BLANK_SCORE = 10.0


class PlausibilityDescriptorError(ValueError):
    """A saved plausibility model was fitted on descriptors other than this version's."""


def image_descriptors(images: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``appearance`` and ``local`` descriptors of a batch, and each input's contrast.

    ``images``: (N, S, S) letterboxed network inputs, uint8 or float in [0, 1]; ``points``: (N, 16, 2) in
    normalised letterbox coordinates ([-1, 1]). Returns (N, LAYOUT_GRID²), (N, 16 · PATCH_GRID²) and (N,)
    the SD of each input's grey levels in [0, 1] units (below :data:`MIN_CONTRAST` the input is blank).
    """
    images = np.asarray(images)
    points = np.asarray(points, dtype=np.float32)
    if len(images) != len(points):
        raise ValueError(f"{len(images)} images but {len(points)} point sets")
    n = len(images)
    if n == 0:
        return np.zeros((0, LAYOUT_GRID**2)), np.zeros((0, points.shape[1] * PATCH_GRID**2)), np.zeros(0)
    size = images.shape[-1]
    k = max(1, round(PATCH_SMOOTH * size)) | 1  # odd, so the smoothing keeps the grid centred
    ticks = torch.linspace(-PATCH_HALF_WIDTH, PATCH_HALF_WIDTH, PATCH_GRID)
    gy, gx = torch.meshgrid(ticks, ticks, indexing="ij")
    offsets = torch.stack([gx, gy], dim=-1).reshape(-1, 2)
    layout, local, contrast = [], [], []
    for i in range(0, n, _CHUNK):
        chunk = images[i : i + _CHUNK]
        x = torch.from_numpy(np.asarray(chunk, dtype=np.float32))[:, None]
        if chunk.dtype == np.uint8:
            x = x / 255.0
        contrast.append(x.double().std(dim=(1, 2, 3), correction=0).numpy())
        x = LandmarkNet.standardise(x)  # as the detector's own input: windowing must not matter
        layout.append(F.adaptive_avg_pool2d(x, LAYOUT_GRID).flatten(1).numpy())
        smooth = F.avg_pool2d(x, k, stride=1, padding=k // 2)
        pts = torch.from_numpy(points[i : i + _CHUNK])
        grid = pts[:, :, None, :] + offsets[None, None]  # (B, 16, P, 2)
        sampled = F.grid_sample(smooth, grid, mode="bilinear", padding_mode="border", align_corners=False)
        local.append(sampled[:, 0].reshape(len(pts), -1).numpy())
    return (np.concatenate(layout).astype(np.float64), np.concatenate(local).astype(np.float64),
            np.concatenate(contrast))


@dataclass(frozen=True)
class PlausibilityResult:
    """One image's verdict: ``score`` (0 typical, > 1 flagged), ``plausibility`` (≈ tail probability),
    ``status`` (``ok``/``flagged``), ``reason`` (empty when ok) and the per-component scores."""

    score: float
    plausibility: float
    status: str
    reason: str
    components: dict[str, float]


def procrustes_residual(points: np.ndarray, mean_shape: np.ndarray) -> np.ndarray:
    """(N, 16, 2) → (N, 32): each shape similarity-aligned (translation, rotation, scale) to the mean
    shape, minus the mean shape."""
    pts = np.asarray(points, dtype=np.float64)
    ref = np.asarray(mean_shape, dtype=np.float64)
    ref_c = ref - ref.mean(axis=0)
    out = np.zeros((len(pts), ref.size))
    for i, p in enumerate(pts):
        pc = p - p.mean(axis=0)
        # optimal rotation+scale as a complex ratio: z_ref ≈ a · z_p
        zp = pc[:, 0] + 1j * pc[:, 1]
        zr = ref_c[:, 0] + 1j * ref_c[:, 1]
        a = np.vdot(zp, zr) / max(np.vdot(zp, zp).real, 1e-12)
        aligned = a * zp
        out[i] = (np.stack([aligned.real, aligned.imag], axis=1) - ref_c).reshape(-1)
    return out


class _Gaussian:
    """Mean and shrunk precision of standardised features; :meth:`distance` is the Mahalanobis distance."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, precision: np.ndarray):
        self.mean, self.scale, self.precision = mean, scale, precision

    @classmethod
    def fit(cls, x: np.ndarray) -> _Gaussian:
        from sklearn.covariance import LedoitWolf

        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(axis=0)
        scale = x.std(axis=0) + 1e-6 + 1e-3 * x.std(axis=0).mean()  # guards constant features
        z = (x - mean) / scale
        cov = LedoitWolf(assume_centered=True).fit(z).covariance_
        return cls(mean, scale, np.linalg.pinv(cov, hermitian=True))

    def distance(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return np.sqrt(np.maximum(np.einsum("ni,ij,nj->n", z, self.precision, z), 0.0))

    def state(self) -> dict[str, torch.Tensor]:
        return {
            "mean": torch.from_numpy(self.mean),
            "scale": torch.from_numpy(self.scale),
            "precision": torch.from_numpy(self.precision),
        }

    @classmethod
    def from_state(cls, s: dict[str, torch.Tensor]) -> _Gaussian:
        return cls(s["mean"].double().numpy(), s["scale"].double().numpy(), s["precision"].double().numpy())


def _calib(values: np.ndarray) -> tuple[float, float]:
    """(median, 99th percentile) of log distances, with a floor on their gap."""
    med = float(np.median(values))
    q = float(np.quantile(values, PASS_QUANTILE, method="higher"))
    return med, max(q, med + 1e-3)


class PlausibilityModel:
    """Fitted on training-split features, calibrated on a held-out split; scores new images."""

    def __init__(self, mean_shape: np.ndarray):
        self.mean_shape = np.asarray(mean_shape, dtype=np.float64)
        self.gaussians: dict[str, _Gaussian] = {}
        self.calibration: dict[str, tuple[float, float]] = {}

    def features(self, images: np.ndarray, points: np.ndarray) -> dict[str, np.ndarray]:
        """The per-component feature vectors of a batch: ``images`` (N, S, S) letterboxed network inputs
        (uint8, or float in [0, 1]) and the points predicted on them (N, 16, 2), normalised coordinates."""
        appearance, local, contrast = image_descriptors(images, points)
        return {"appearance": appearance, "local": local, "shape": procrustes_residual(points, self.mean_shape),
                "contrast": contrast}

    def _log_distances(self, feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: np.log(self.gaussians[k].distance(feats[k]) + 1e-9) for k in COMPONENTS}

    def _component_scores(self, logd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            k: (logd[k] - self.calibration[k][0]) / (self.calibration[k][1] - self.calibration[k][0])
            for k in COMPONENTS
        }

    def fit(self, train: dict[str, np.ndarray], calibration: dict[str, np.ndarray]) -> PlausibilityModel:
        """Fit the Gaussians on ``train`` features, then calibrate on ``calibration`` features.

        The calibration split must be unseen by the Gaussians *and* by the network's weights: out-of-fold
        distances of training images were tried and are too small (the network has seen those images), which
        set the threshold too low (3.3% of twin test images flagged against 2.4% with validation alone).
        """
        self.gaussians = {k: _Gaussian.fit(train[k]) for k in COMPONENTS}
        logd = self._log_distances(calibration)
        self.calibration = {k: _calib(logd[k]) for k in COMPONENTS}
        combined = np.max(np.stack(list(self._component_scores(logd).values())), axis=0)
        self.calibration["combined"] = _calib(combined)
        return self

    def score(self, feats: dict[str, np.ndarray]) -> list[PlausibilityResult]:
        """Verdicts for a batch of feature vectors (as from :meth:`features`)."""
        comp = self._component_scores(self._log_distances(feats))
        stacked = np.stack([comp[k] for k in COMPONENTS])
        med, q = self.calibration["combined"]
        s = (stacked.max(axis=0) - med) / (q - med)
        blank = np.asarray(feats["contrast"]) < MIN_CONTRAST
        s = np.where(blank, np.maximum(s, BLANK_SCORE), s)
        out = []
        for i, si in enumerate(s):
            si = float(si)
            plaus = float(min(1.0, 0.5 * 50.0 ** (-si)))
            comps = {k: round(float(comp[k][i]), 3) for k in COMPONENTS}
            if si > 1.0:
                what = _BLANK_REASON if blank[i] else _REASONS[COMPONENTS[int(np.argmax(stacked[:, i]))]]
                reason = f"{what} (plausibility {plaus:.2g}, score {si:.2f} > 1)"
                out.append(PlausibilityResult(si, plaus, "flagged", reason, comps))
            else:
                out.append(PlausibilityResult(si, plaus, "ok", "", comps))
        return out

    def state(self) -> dict:
        """Tensors and numbers to save in the detector folder."""
        return {
            "descriptors": DESCRIPTORS,
            "mean_shape": torch.from_numpy(self.mean_shape),
            "gaussians": {k: g.state() for k, g in self.gaussians.items()},
            "calibration": {k: list(v) for k, v in self.calibration.items()},
        }

    @classmethod
    def from_state(cls, state: dict) -> PlausibilityModel:
        """Inverse of :meth:`state`; :class:`PlausibilityDescriptorError` for a model fitted on other
        descriptors (an earlier version's detector)."""
        found = state.get("descriptors", "detector-features")
        if found != DESCRIPTORS:
            raise PlausibilityDescriptorError(
                f"its plausibility model was fitted on {found!r} descriptors, this version scores {DESCRIPTORS!r}: "
                "retrain the detector (bmd landmarks train)"
            )
        m = cls(state["mean_shape"].double().numpy())
        m.gaussians = {k: _Gaussian.from_state(v) for k, v in state["gaussians"].items()}
        m.calibration = {k: (float(v[0]), float(v[1])) for k, v in state["calibration"].items()}
        return m
