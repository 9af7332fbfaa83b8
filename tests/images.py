"""Synthetic images and hand-made landmarks shared by the tests of the ROI code and its figures."""

from __future__ import annotations

import numpy as np
import torch

from bmd.columns import LANDMARK_NAMES

# an upright PA chest in unit coordinates (patient's left = image right), left side only
_LEFT = {
    "clav_l_medial": (0.56, 0.21), "clav_l_mid": (0.68, 0.185), "clav_l_lateral": (0.80, 0.16),
    "rib_l_1": (0.74, 0.27), "rib_l_2": (0.84, 0.38), "rib_l_3": (0.88, 0.50), "rib_l_4": (0.89, 0.62),
}
_MIDLINE = {"cervical": (0.5, 0.13), "t12": (0.5, 0.70)}


def chest_points(shape: tuple[int, int] = (128, 128)) -> np.ndarray:
    """Hand-made landmarks (16, 2) of a chest filling the largest centred square of an image."""
    unit = dict(_MIDLINE)
    for name, (x, y) in _LEFT.items():
        unit[name] = (x, y)
        unit[name.replace("_l_", "_r_")] = (1 - x, y)  # mirror image about the midline
    h, w = shape
    side = min(h, w)
    p = np.array([unit[n] for n in LANDMARK_NAMES]) * side - 0.5
    return p + np.array([(w - side) / 2, (h - side) / 2])  # symmetric about x = (W − 1) / 2


def texture(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A smooth random image in [0, 1] (no structure at the pixel scale: crops compare well)."""
    rng = np.random.default_rng(seed)
    small = torch.from_numpy(rng.random((1, 1, shape[0] // 8 + 2, shape[1] // 8 + 2), dtype=np.float32))
    return torch.nn.functional.interpolate(small, size=shape, mode="bicubic", align_corners=False)[0, 0].clamp(
        0, 1).numpy()
