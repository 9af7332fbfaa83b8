"""How one radiograph was taken and processed: pose and framing, X-ray physics, vendor processing, marks.

The attenuation map ``A`` (line integrals, :mod:`bmd.inputs.twin.render`) becomes a stored image in
three steps, each with per-image random settings that confound any absolute grey value:

1. **Exposure** (:func:`expose`): ``I = I0 · heel · exp(−A) + scatter`` → detector blur → quantum
   noise → ``L = −log I`` (bone bright). Beam quality (kV) scales bone against soft-tissue attenuation
   before this step (:attr:`Acquisition.bone_kv`), so bone contrast alone cannot be read as density;
   soft tissue against air (the skin line, the lungs) shows the same beam and lets a model undo it.
2. **Vendor processing** (:func:`process`): the log image is windowed by its own percentiles, then a
   multi-scale contrast equalisation (each of four bands of a Laplacian pyramid compressed by a random power)
   and an unsharp mask of random strength and radius, then a random gamma/sigmoid display curve.
3. **Marks** (:func:`burn_in`): collimator shutters (unexposed, bright), a side marker and text-like
   blocks burned into the pixel data, as on hospital films.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bmd.inputs.twin.spec import TwinSpec


@dataclass(frozen=True)
class Acquisition:
    """Everything about one exposure that is not the person (drawn by :func:`draw_acquisition`)."""

    rotation: float  # radians
    scale: float  # > 1: tighter framing (lungs only), < 1: wide field with neck and upper abdomen
    shift: tuple[float, float]  # image fraction
    exposure_photons: float
    bone_kv: float  # bone attenuation factor of the beam (lower at high kV)
    soft_kv: float  # soft-tissue attenuation factor of the same beam
    heel: float
    scatter: float
    blur: float  # detector sigma in pixels of a 512 image
    mce_power: float  # multi-scale contrast equalisation: band amplitude exponent (1 = none)
    unsharp: float  # unsharp-mask strength
    unsharp_radius: float  # its Gaussian sigma, pixels of a 512 image
    gamma: float  # display curve exponent
    sigmoid: float  # display curve S-shape strength (0 = none)
    shutters: tuple[float, float, float, float]  # collimated margin (left, right, top, bottom), image fraction
    marker_corner: int  # 0..3: which corner holds the side marker
    text_corner: int
    monochrome1: bool
    bits: int


def draw_acquisition(rng: np.random.Generator, spec: TwinSpec) -> Acquisition:
    """Random pose, framing, physics and processing of one radiograph (a fixed number of draws)."""
    u = rng.uniform
    v = rng.random(4)
    shutters = tuple(float(s) for s in np.where(v < spec.shutter_share, u(0.0, 0.08, 4), 0.0))
    return Acquisition(
        rotation=float(np.deg2rad(u(-spec.rotation_deg, spec.rotation_deg))),
        scale=float(np.exp(u(np.log(spec.scale_range[0]), np.log(spec.scale_range[1])))),
        shift=(float(u(-spec.translation_frac, spec.translation_frac)),
               float(u(-spec.translation_frac, spec.translation_frac))),
        exposure_photons=float(np.exp(u(np.log(spec.photons[0]), np.log(spec.photons[1])))),
        # one tube voltage sets both: harder beams flatten bone more than soft tissue, so the soft tissue
        # against air (skin line, lungs) tells the beam and lets a model undo its effect on bone
        **_beam(float(u()), spec),
        heel=float(u(*spec.heel_gradient) * rng.choice([-1, 1])),
        scatter=float(u(*spec.scatter_fraction)),
        blur=float(u(*spec.blur_px)),
        mce_power=float(u(*spec.mce_power)),
        unsharp=float(u(*spec.unsharp_strength)),
        unsharp_radius=float(u(*spec.unsharp_radius_px)),
        gamma=float(np.exp(u(-np.log(spec.gamma_max), np.log(spec.gamma_max)))),
        sigmoid=float(u(0.0, spec.sigmoid_max)),
        shutters=shutters,  # type: ignore[arg-type]
        marker_corner=int(rng.integers(4)),
        text_corner=int(rng.integers(4)),
        monochrome1=bool(rng.random() < spec.monochrome1_share),
        bits=int(rng.choice(spec.bits_stored)),
    )


def _beam(kv: float, spec: TwinSpec) -> dict[str, float]:
    """Bone and soft-tissue attenuation factors of a beam at relative tube voltage ``kv`` (0 soft … 1 hard)."""
    (b_soft, b_hard), (s_soft, s_hard) = spec.bone_kv, spec.soft_kv
    return {"bone_kv": b_soft + kv * (b_hard - b_soft), "soft_kv": s_soft + kv * (s_hard - s_soft)}


def expose(A: np.ndarray, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """Attenuation map → log image (bone bright): heel effect, scatter, detector blur, quantum noise."""
    size = A.shape[0]
    yy = (np.arange(size, dtype=np.float32) / size - 0.5)[:, None]
    intensity = (1 + acq.heel * yy) * np.exp(-A)
    k = max(size // 32, 1)
    small = intensity.reshape(size // k, k, size // k, k).mean(axis=(1, 3))
    scatter = upsample(ndimage.gaussian_filter(small, sigma=small.shape[0] / 10), k)
    intensity = intensity + acq.scatter * scatter.mean() * 0.5 + acq.scatter * scatter
    intensity = ndimage.gaussian_filter(intensity, sigma=acq.blur * size / 512, truncate=3.0)
    noise = rng.standard_normal((size, size)).astype(np.float32)
    intensity = intensity + np.sqrt(np.maximum(intensity, 1e-6) / acq.exposure_photons) * noise
    return (-np.log(np.maximum(intensity, 2e-3))).astype(np.float32)


def blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter; wide kernels run on a block-averaged copy and are interpolated back (fast)."""
    k = 1
    while sigma / (2 * k) >= 2.0 and x.shape[0] % (2 * k) == 0 and x.shape[1] % (2 * k) == 0:
        k *= 2
    if k == 1:
        return ndimage.gaussian_filter(x, sigma, truncate=3.0)
    small = x.reshape(x.shape[0] // k, k, x.shape[1] // k, k).mean(axis=(1, 3))
    small = ndimage.gaussian_filter(small, sigma / k, truncate=3.0)
    return upsample(small, k)


def upsample(small: np.ndarray, k: int) -> np.ndarray:
    """Enlarge by an integer factor: pixel repetition smoothed by a k-box (close to linear interpolation)."""
    return ndimage.uniform_filter(np.repeat(np.repeat(small, k, axis=0), k, axis=1), k, mode="nearest")


def _window(log: np.ndarray, exposed: np.ndarray) -> np.ndarray:
    """Scale the log image to [0, 1] by the percentiles of its exposed area (the vendor's auto-window)."""
    sample = log[exposed][::7] if exposed.any() else log.ravel()[::7]
    lo, hi = np.percentile(sample, [0.5, 99.7])
    return np.clip((log - np.float32(lo)) / np.float32(max(hi - lo, 1e-6)), 0, 1)


def process(log: np.ndarray, acq: Acquisition, exposed: np.ndarray) -> np.ndarray:
    """Vendor processing of a log image → display values in [0, 1] (bone bright)."""
    size = log.shape[0]
    f = size / 512
    x = _window(log, exposed)
    # multi-scale contrast equalisation: compress each band's amplitude by a power (relative to its RMS)
    if acq.mce_power != 1.0:
        base = x
        bands = []
        for sigma in (1.0, 2.0, 4.0, 8.0):
            low = blur(base, sigma * f)
            bands.append(base - low)
            base = low
        x = base
        for band in bands:
            rms = float(np.sqrt(np.mean(band[::3, ::3] ** 2))) + 1e-6
            x = x + np.float32(rms) * np.sign(band) * (np.abs(band) * np.float32(1 / rms)) ** np.float32(acq.mce_power)
    if acq.unsharp > 0:
        x = x + np.float32(acq.unsharp) * (x - blur(x, acq.unsharp_radius * f))
    x = _window(x, exposed)
    if acq.sigmoid > 0:
        s = 1 + 6 * acq.sigmoid
        lo, hi = 1 / (1 + np.exp(s * 0.5)), 1 / (1 + np.exp(-s * 0.5))
        x = (1 / (1 + np.exp(-s * (x - 0.5))) - lo) / (hi - lo)
    return np.clip(x, 0, 1) ** np.float32(acq.gamma)


def shutter_mask(size: int, acq: Acquisition) -> np.ndarray:
    """True inside the collimated (exposed) field."""
    left, right, top, bottom = (int(round(s * size)) for s in acq.shutters)
    mask = np.zeros((size, size), bool)
    mask[top:size - bottom, left:size - right] = True
    return mask


def burn_in(x: np.ndarray, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """Burn a side marker ("L" or "R" strokes) and a line of text-like blocks into display values."""
    size = x.shape[0]
    out = x.copy()
    unit = max(size // 128, 1)

    def corner_origin(corner: int, w: int, h: int) -> tuple[int, int]:
        margin = 3 * unit
        c0 = margin if corner % 2 == 0 else size - margin - w
        r0 = margin if corner < 2 else size - margin - h
        return r0, c0

    # side marker: an "L" (two strokes) or an "R" (a box and a leg), bright
    h, w = 7 * unit, 5 * unit
    r0, c0 = corner_origin(acq.marker_corner, w, h)
    out[r0:r0 + h, c0:c0 + unit] = 1.0
    if rng.random() < 0.5:
        out[r0 + h - unit:r0 + h, c0:c0 + w] = 1.0
    else:
        out[r0:r0 + unit, c0:c0 + w] = 1.0
        out[r0 + h // 2:r0 + h // 2 + unit, c0:c0 + w] = 1.0
        out[r0:r0 + h // 2, c0 + w - unit:c0 + w] = 1.0
        for k in range(h - h // 2):  # the leg: a diagonal from the bowl down to the right
            cc = c0 + int(round(k * (w - unit) / max(h - h // 2 - 1, 1)))
            out[r0 + h // 2 + k, cc:cc + unit] = 1.0
    # text: a row of character-sized blocks with gaps (a date or a station name), on the other corner
    corner = acq.text_corner if acq.text_corner != acq.marker_corner else (acq.marker_corner + 1) % 4
    n_chars = int(rng.integers(6, 14))
    ch_w, ch_h = 3 * unit, 4 * unit
    r0, c0 = corner_origin(corner, n_chars * (ch_w + unit), ch_h)
    level = float(rng.uniform(0.85, 1.0))
    for i in range(n_chars):
        if rng.random() < 0.15:  # a space
            continue
        cc = c0 + i * (ch_w + unit)
        out[r0:r0 + ch_h, cc:cc + ch_w] = level
        hole = rng.integers(0, 3)
        out[r0 + unit:r0 + unit + max(unit, ch_h // 3), cc + hole * unit // 2:cc + hole * unit // 2 + unit] = 0.2
    return out
