"""How one chest film may look under another acquisition: framing, display processing and noise.

The plausibility model (:mod:`bmd.landmarks.plausibility`) asks whether an image is a frontal chest film
like the training ones. Fitted on the twin's images as they are, it learned the twin's own framing and
processing as part of "a chest film", and flagged every real chest film of the real-data folder, while the
detector's points landed right on them. Hospitals frame (collimate, crop) and process (edge enhancement,
display curves) their films in many ways, so the model is fitted on each training image as it is and under
a few random draws of such variation (:func:`acquisition_draws`), and calibrated on the validation images
likewise. The variation changes how a film was taken and shown, never what it shows: a tibia stays a tibia.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bmd.landmarks.data import Letterbox, letterbox_image, to_uint8


@dataclass(frozen=True)
class AcquisitionVariation:
    """The ranges one draw samples from, each uniformly.

    ``crop``: the largest fraction of the film cut from each side, each side independently (collimation and
    framing, from wide fields to lungs only); ``gamma``: display curve exponent; ``unsharp``: strength of an
    unsharp mask (vendor edge enhancement) of radius ``unsharp_radius`` (fraction of the input side);
    ``blur_p`` and ``blur_sigma``: chance and SD (input pixels) of a detector blur; ``noise``: the largest
    SD of added noise (grey levels in [0, 1]).
    """

    crop: float = 0.12
    gamma: tuple[float, float] = (0.6, 1.6)
    unsharp: tuple[float, float] = (0.0, 1.5)
    unsharp_radius: tuple[float, float] = (2 / 256, 12 / 256)
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    noise: float = 0.03


def vary_acquisition(image: np.ndarray, box: Letterbox, rng: np.random.Generator,
                     variation: AcquisitionVariation | None = None) -> np.ndarray:
    """One draw of ``image`` (a letterboxed (S, S) uint8 network input, ``box`` its letterbox) under another
    acquisition: the film inside the letterbox is cropped, processed and letterboxed again; (S, S) uint8."""
    v = variation or AcquisitionVariation()
    size = image.shape[-1]
    rows, cols = box.resized
    px, py = box.pad
    film = image[py : py + rows, px : px + cols].astype(np.float32) / 255.0
    top, bottom, left, right = (rng.uniform(0.0, v.crop, 4) * [rows, rows, cols, cols]).astype(int)
    film = film[top : rows - bottom, left : cols - right]
    film = np.clip(film, 0.0, 1.0) ** rng.uniform(*v.gamma)
    radius = rng.uniform(*v.unsharp_radius) * size
    film = film + rng.uniform(*v.unsharp) * (film - ndimage.gaussian_filter(film, radius))
    lo, hi = np.quantile(film, [0.005, 0.995])  # processing ends with the display window on the film
    film = (film - lo) / max(float(hi - lo), 1e-6)
    if rng.random() < v.blur_p:
        film = ndimage.gaussian_filter(film, rng.uniform(*v.blur_sigma))
    film = film + rng.uniform(0.0, v.noise) * rng.standard_normal(film.shape)
    boxed, _ = letterbox_image(np.clip(film, 0.0, 1.0).astype(np.float32), size)
    return to_uint8(boxed)


def acquisition_draws(images: np.ndarray, boxes: Sequence[Letterbox], draws: int, seed: int,
                      variation: AcquisitionVariation | None = None) -> np.ndarray:
    """``images`` (N, S, S uint8) followed by ``draws`` rounds of one varied copy each: ((1 + draws)·N, S, S).

    The same seed gives the same draws."""
    rng = np.random.default_rng(seed)
    varied = [vary_acquisition(image, box, rng, variation)
              for _ in range(draws) for image, box in zip(images, boxes, strict=True)]
    return np.concatenate([images, np.stack(varied)]) if varied else np.asarray(images)
