"""Render one synthetic frontal (PA) chest radiograph and its 16 landmarks.

Anatomy is laid out in *canonical* coordinates (x, y in [0, 1] of a standard field, x to the image
right = the patient's left on a PA view, y down). A pose (rotation, scale, translation) maps canonical
to image coordinates; every structure is evaluated on the pixel grid mapped back through the inverse
pose, only inside its own bounding box. The image is X-ray physics in miniature:

    A = soft tissue − lung air + Σ bones            (attenuation line integrals)
    I = I0 · heel · exp(−A) + scatter               (transmitted intensity)
    I → detector blur → quantum noise → L = −log I  (bone bright)

Bone density shows twice: as mean attenuation (bone attenuation scaled by the attenuation channel
``m_k``, confounded by the person's bone size, local soft-tissue thickness, scatter, heel effect and
exposure) and as trabecular texture (a band-pass pattern of 4–9 px period at 512 px whose contrast
follows the texture channel ``tau_k``; it survives in local ROI crops but averages out at the
whole-chest input's resolution, a quarter of the image side or less).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bmd.columns import LANDMARK_NAMES
from bmd.inputs.twin.spec import TwinSpec

# vertebral levels: y of body centres in canonical units
_T1_Y, _LEVEL = 0.17, 0.048
_CERVICAL = {f"C{7 - i}": _T1_Y - (i + 1) * _LEVEL for i in range(4)}  # C7..C4
_THORACIC = {f"T{i + 1}": _T1_Y + i * _LEVEL for i in range(12)}
_LUMBAR = {f"L{i + 1}": _T1_Y + (12 + i) * _LEVEL * 1.05 for i in range(4)}
_RIB_LEVELS = (0.26, 0.38, 0.50, 0.62)  # y of the 4 rib-cage margin landmarks
_CLAV_MEDIAL, _CLAV_LATERAL = 0.045, 0.33  # |u| of the clavicle ends


@dataclass(frozen=True)
class CaseParams:
    """Everything that varies between radiographs (drawn by :func:`draw_params`)."""

    rotation: float  # radians
    scale: float
    shift: tuple[float, float]  # image fraction
    body_width: float
    soft_thickness: float
    breast: float  # 0 for men
    bone_size: float
    exposure_photons: float
    heel: float
    scatter: float
    blur: float  # sigma in pixels of a 512 image
    monochrome1: bool
    bits: int
    diaphragm: tuple[float, float]  # dome apex y (patient right, patient left)


def draw_params(rng: np.random.Generator, sex: str, spec: TwinSpec) -> CaseParams:
    """Random pose, body habitus and acquisition of one radiograph."""
    u = rng.uniform
    return CaseParams(
        rotation=np.deg2rad(u(-spec.rotation_deg, spec.rotation_deg)),
        scale=1.0 + u(-spec.scale_frac, spec.scale_frac),
        shift=(u(-spec.translation_frac, spec.translation_frac), u(-spec.translation_frac, spec.translation_frac)),
        body_width=float(np.clip(1.0 + spec.body_width_sd * rng.standard_normal(), 0.85, 1.15)),
        soft_thickness=float(np.clip(1.0 + 0.12 * rng.standard_normal(), 0.7, 1.4)),
        breast=float(u(0.2, 1.0)) if sex == "F" else 0.0,
        bone_size=float(np.clip(1.0 + spec.bone_size_sd * rng.standard_normal(), 0.7, 1.3)),
        exposure_photons=float(np.exp(u(np.log(spec.photons[0]), np.log(spec.photons[1])))),
        heel=float(u(*spec.heel_gradient) * rng.choice([-1, 1])),
        scatter=float(u(*spec.scatter_fraction)),
        blur=float(u(*spec.blur_px)),
        monochrome1=bool(rng.random() < spec.monochrome1_share),
        bits=int(rng.choice(spec.bits_stored)),
        diaphragm=(float(u(0.68, 0.72)), float(u(0.70, 0.75))),
    )


def _sig(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # logistic, overflow-free


class _Canvas:
    """The pixel grid of one image and its map to canonical coordinates."""

    def __init__(self, size: int, p: CaseParams):
        self.size = size
        self.p = p
        c, s = np.cos(p.rotation), np.sin(p.rotation)
        self.rot = np.array([[c, -s], [s, c]])
        self.A = np.zeros((size, size), np.float32)
        self.edge = 1.5 / size  # soft edge width, canonical units (≈ 1.5 px)

    def to_image(self, q: np.ndarray) -> np.ndarray:
        """Canonical (..., 2) → image pixel coordinates (x, y), pixel centres at integers."""
        centre = np.array([0.5, 0.5])
        p = centre + self.p.scale * (q - centre) @ self.rot.T + np.asarray(self.p.shift)
        return p * self.size - 0.5

    def grid(self, x0: float, x1: float, y0: float, y1: float):
        """Slices of the image covering a canonical box, and the canonical X, Y inside them."""
        corners = self.to_image(np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]))
        lo = np.floor(corners.min(axis=0)).astype(int) - 2
        hi = np.ceil(corners.max(axis=0)).astype(int) + 3
        lo = np.clip(lo, 0, self.size)
        hi = np.clip(hi, 0, self.size)
        if (hi <= lo).any():
            return None
        sl = (slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        jj, ii = np.meshgrid(np.arange(lo[0], hi[0], dtype=np.float32), np.arange(lo[1], hi[1], dtype=np.float32))
        pts = np.stack([(jj + 0.5) / self.size, (ii + 0.5) / self.size], axis=-1)
        q = 0.5 + (pts - 0.5 - np.asarray(self.p.shift, dtype=np.float32)) @ self.rot.astype(np.float32) / self.p.scale
        return sl, q[..., 0], q[..., 1]

    def u(self, X: np.ndarray) -> np.ndarray:
        """Signed horizontal offset from the midline in body-width units (+ = image right)."""
        return (X - 0.5) / self.p.body_width


def _torso_halfwidth(y: np.ndarray) -> np.ndarray:
    neck = 0.09
    shoulders = 0.47
    t = np.clip((y - 0.10) / 0.10, 0, 1)
    return neck + (shoulders - neck) * (3 * t**2 - 2 * t**3)


def _ribcage_halfwidth(y: np.ndarray) -> np.ndarray:
    return 0.385 * np.sqrt(np.clip((y - 0.12) / 0.24, 0, 1)) * (1 - 0.08 * np.clip((y - 0.75) / 0.2, 0, 1))


def _diaphragm(u: np.ndarray, apex: tuple[float, float]) -> np.ndarray:
    ax = np.abs(u)
    top = np.where(u < 0, apex[0], apex[1])  # patient right (image left) dome is usually higher
    return top + 1.8 * np.maximum(ax - 0.16, 0) ** 2 + 1.0 * np.maximum(0.16 - ax, 0) ** 2


def _soft_tissue(cv: _Canvas, field: np.ndarray) -> None:
    g = cv.grid(-0.2, 1.2, -0.2, 1.2)
    sl, X, Y = g
    u = cv.u(X)
    half = _torso_halfwidth(Y)
    body = np.sqrt(np.clip(1 - (u / half) ** 2, 0, 1)) * _sig((half - np.abs(u)) / 0.01)
    abdomen = 0.35 * _sig((Y - _diaphragm(u, cv.p.diaphragm)) / 0.02)
    cv.A[sl] += (3.2 * cv.p.soft_thickness * body * (1 + field[sl]) + abdomen * body).astype(np.float32)
    if cv.p.breast > 0:
        for side in (-1, 1):
            r2 = ((u - side * 0.24) / 0.14) ** 2 + ((Y - 0.63) / 0.10) ** 2
            cv.A[sl] += (0.6 * cv.p.breast * np.sqrt(np.clip(1 - r2, 0, 1))).astype(np.float32)


def _lungs(cv: _Canvas) -> None:
    region = cv.grid(0.0, 1.0, 0.05, 0.95)
    if region is None:
        return
    sl, X, Y = region
    u = cv.u(X)
    ax = np.abs(u)
    rc = _ribcage_halfwidth(Y)
    med = 0.055 + 0.035 * np.clip((Y - 0.15) / 0.35, 0, 1)
    e = 0.012
    inside = _sig((rc - 0.012 - ax) / e) * _sig((ax - med) / e) * _sig((_diaphragm(u, cv.p.diaphragm) - Y) / e)
    inside *= _sig((Y - 0.13) / e)
    heart = ((u - 0.06) / 0.17) ** 2 + ((Y - 0.60) / 0.12) ** 2
    inside *= _sig((np.sqrt(heart) - 1.0) / 0.08)
    depth = np.sqrt(np.clip(1 - ((ax - (med + rc) / 2) / ((rc - med) / 2 + 1e-3)) ** 2, 0, 1)) ** 0.5
    cv.A[sl] -= (2.1 * inside * (0.35 + 0.65 * depth)).astype(np.float32)


def _bone(cv: _Canvas, sl, profile: np.ndarray, base: float, m: float, amp: float, texture: np.ndarray,
          spec: TwinSpec) -> None:
    """Add a bone: attenuation profile × density (attenuation channel) × texture (texture channel)."""
    density = base * cv.p.bone_size * (1 + spec.bone_contrast_per_sd * m)
    cv.A[sl] += (profile * density * (1 + amp * texture[sl])).astype(np.float32)


def _texture_amp(tau: float, spec: TwinSpec) -> float:
    return float(np.clip(spec.texture_amp + spec.texture_amp_per_sd * tau, 0.03, 0.8))


def _spine(cv: _Canvas, lat: dict, tex: np.ndarray, spec: TwinSpec) -> None:
    region = cv.grid(0.38, 0.62, -0.1, 1.1)
    if region is None:
        return
    sl, X, Y = region
    u = cv.u(X)
    cv.A[sl] += (0.35 * _sig((0.032 - np.abs(u)) / 0.006)).astype(np.float32)  # posterior elements
    levels = {**_CERVICAL, **_THORACIC, **_LUMBAR}
    for name, yc in levels.items():
        region = cv.grid(0.40, 0.60, yc - 0.04, yc + 0.04)
        if region is None:
            continue
        sl, X, Y = region
        u = cv.u(X)
        lumbar_like = name.startswith("L") or name in ("T11", "T12")
        hh = 0.016 if name.startswith("C") else (0.021 if lumbar_like else 0.019)
        hw = 0.027 if name.startswith("C") else (0.045 if name.startswith("L") else 0.036)
        prof = _sig((hw - np.abs(u)) / 0.004) * _sig((hh - np.abs(Y - yc)) / 0.004)
        prof *= 0.75 + 0.25 * np.sqrt(np.clip(1 - (u / hw) ** 2, 0, 1))
        if name.startswith("C") or name in ("T1",):
            key = "cervi"
        elif lumbar_like:
            key = "t12"
        else:
            key = None
        if key:
            m, tau = lat[f"m_{key}"], lat[f"tau_{key}"]
        else:  # mid-thoracic vertebrae: seen only by the whole chest
            m = 0.5 * (lat["m_cervi"] + lat["m_t12"])
            tau = 0.5 * (lat["tau_cervi"] + lat["tau_t12"])
        _bone(cv, sl, prof, 1.0, m, _texture_amp(tau, spec), tex, spec)


def _clavicle_y(r: np.ndarray) -> np.ndarray:
    return 0.178 - 0.045 * r + 0.012 * np.sin(2 * np.pi * r)


def _clavicles(cv: _Canvas, lat: dict, tex: np.ndarray, spec: TwinSpec) -> None:
    for side, key in ((1, "clav_l"), (-1, "clav_r")):
        x0, x1 = sorted((0.5 + side * 0.02 * cv.p.body_width, 0.5 + side * 0.36 * cv.p.body_width))
        region = cv.grid(x0, x1, 0.08, 0.24)
        if region is None:
            continue
        sl, X, Y = region
        ax = side * cv.u(X)
        r = (ax - _CLAV_MEDIAL) / (_CLAV_LATERAL - _CLAV_MEDIAL)
        half = 0.012 - 0.003 * np.clip(r, 0, 1)
        dy = (Y - _clavicle_y(np.clip(r, 0, 1))) / half
        prof = np.sqrt(np.clip(1 - dy**2, 0, 1)) * _sig(r / 0.02) * _sig((1 - r) / 0.02)
        _bone(cv, sl, prof, 0.9, lat[f"m_{key}"], _texture_amp(lat[f"tau_{key}"], spec), tex, spec)


def _ribs(cv: _Canvas, lat: dict, tex: np.ndarray, spec: TwinSpec) -> None:
    for side, key in ((1, "rib_l"), (-1, "rib_r")):
        amp = _texture_amp(lat[f"tau_{key}"], spec)
        for j in range(10):
            y0 = _T1_Y + j * _LEVEL
            x0, x1 = sorted((0.5 + side * 0.02 * cv.p.body_width, 0.5 + side * 0.42 * cv.p.body_width))
            region = cv.grid(x0, x1, y0 - 0.05, y0 + 0.12)
            if region is None:
                continue
            sl, X, Y = region
            ax = side * cv.u(X)
            rc = 0.385 * np.sqrt(np.clip((y0 + 0.04 - 0.12) / 0.24, 0.05, 1))
            r = ax / rc
            yc = y0 - 0.012 * np.sin(np.pi * np.clip(r, 0, 1)) + 0.075 * np.clip(r, 0, 1) ** 2
            half = 0.0085
            dy = (Y - yc) / half
            prof = np.sqrt(np.clip(1 - dy**2, 0, 1)) * _sig((r - 0.08) / 0.02) * _sig((1.02 - r) / 0.02)
            _bone(cv, sl, prof, 0.55, lat[f"m_{key}"], amp, tex, spec)


def _shoulders(cv: _Canvas, lat: dict, tex: np.ndarray, spec: TwinSpec) -> None:
    for side in (-1, 1):
        cx = 0.5 + side * 0.445 * cv.p.body_width
        region = cv.grid(cx - 0.08, cx + 0.08, 0.08, 0.40)
        if region is None:
            continue
        sl, X, Y = region
        r2 = ((X - cx) / 0.05) ** 2 + ((Y - 0.175) / 0.055) ** 2
        head = np.sqrt(np.clip(1 - r2, 0, 1))
        shaft = _sig((0.028 - np.abs(X - (cx + side * 0.01))) / 0.004) * _sig((Y - 0.18) / 0.01)
        prof = np.maximum(head, 0.8 * shaft)
        _bone(cv, sl, prof, 1.1, 0.0, spec.texture_amp, tex, spec)
        # scapula: a faint triangular plate lateral to the ribs
        region = cv.grid(cx - 0.14, cx + 0.14, 0.15, 0.45)
        if region is None:
            continue
        sl, X, Y = region
        ax = side * (X - 0.5) / cv.p.body_width
        plate = _sig((ax - 0.30) / 0.01) * _sig((0.42 - ax) / 0.01) * _sig((Y - 0.19) / 0.01)
        plate *= _sig((0.40 - Y - 0.6 * (ax - 0.30)) / 0.01)
        cv.A[sl] += (0.25 * plate).astype(np.float32)


def _band_pass_noise(rng: np.random.Generator, size: int, periods: tuple[float, float]) -> np.ndarray:
    """Zero-mean, unit-variance texture with the given periods at 512 px (scaled with image size)."""
    white = rng.standard_normal((size, size)).astype(np.float32)
    f = np.fft.rfft2(white)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    period = 1.0 / np.maximum(np.sqrt(fx**2 + fy**2), 1e-6) * (512.0 / size)
    f *= ((period >= periods[0]) & (period <= periods[1])).astype(np.float32)
    out = np.fft.irfft2(f, s=(size, size)).astype(np.float32)
    return out / (out.std() + 1e-8)


def _smooth_field(rng: np.random.Generator, size: int, sd: float) -> np.ndarray:
    """Smooth random field (a few blobs across the image) with standard deviation ``sd``."""
    coarse = rng.standard_normal((6, 6)).astype(np.float32)
    field = ndimage.zoom(coarse, size / 6, order=3, mode="nearest")[:size, :size]
    return field / (field.std() + 1e-8) * sd


def render_case(latents: dict, sex: str, seed: int | list[int], size: int,
                spec: TwinSpec | None = None) -> tuple[np.ndarray, np.ndarray, CaseParams]:
    """Render one radiograph.

    ``latents`` holds the case's ``m_<bone>`` and ``tau_<bone>`` values. Returns the stored pixel
    values (uint16, MONOCHROME1 already inverted when drawn so), the 16 landmarks (16, 2) in image
    pixel coordinates, and the drawn parameters.
    """
    spec = spec or TwinSpec()
    rng = np.random.default_rng(seed)
    for _ in range(50):  # a pose that would cut landmarks off the field is redrawn (the radiographer re-centres)
        p = draw_params(rng, sex, spec)
        cv = _Canvas(size, p)
        pts = landmarks(cv)
        if (pts >= 0.01 * size).all() and (pts <= 0.99 * size - 1).all():
            break
    texture = _band_pass_noise(rng, size, spec.texture_period_px)
    field = _smooth_field(rng, size, spec.soft_tissue_field_sd)
    _soft_tissue(cv, field)
    _lungs(cv)
    _spine(cv, latents, texture, spec)
    _ribs(cv, latents, texture, spec)
    _clavicles(cv, latents, texture, spec)
    _shoulders(cv, latents, texture, spec)

    # acquisition: heel effect, scatter, detector blur, quantum noise, log
    yy = (np.arange(size, dtype=np.float32) / size - 0.5)[:, None]
    intensity = (1 + p.heel * yy) * np.exp(-cv.A)
    k = max(size // 32, 1)
    small = intensity.reshape(size // k, k, size // k, k).mean(axis=(1, 3))
    scatter = ndimage.zoom(ndimage.gaussian_filter(small, sigma=small.shape[0] / 10), k, order=1)
    intensity = intensity + p.scatter * scatter.mean() * 0.5 + p.scatter * scatter
    intensity = ndimage.gaussian_filter(intensity, sigma=p.blur * size / 512)
    noise = rng.standard_normal((size, size)).astype(np.float32)
    intensity = intensity + np.sqrt(np.maximum(intensity, 1e-6) / p.exposure_photons) * noise
    log = -np.log(np.maximum(intensity, 2e-3))
    lo, hi = np.percentile(log[::4, ::4], [0.5, 99.7])
    maxval = 2**p.bits - 1
    stored = np.round(np.clip((log - lo) / (hi - lo), 0, 1) * maxval).astype(np.uint16)
    if p.monochrome1:
        stored = (maxval - stored).astype(np.uint16)
    return stored, pts, p


def canonical_landmarks(body_width: float) -> np.ndarray:
    """The 16 landmarks in canonical coordinates (LANDMARK_NAMES order)."""
    pts = {}
    for side, tag in ((1, "l"), (-1, "r")):
        for name, r in (("medial", 0.0), ("mid", 0.5), ("lateral", 1.0)):
            ax = _CLAV_MEDIAL + r * (_CLAV_LATERAL - _CLAV_MEDIAL)
            pts[f"clav_{tag}_{name}"] = (0.5 + side * ax * body_width, float(_clavicle_y(np.float64(r))))
        for k, y in enumerate(_RIB_LEVELS, start=1):
            rc = float(_ribcage_halfwidth(np.float64(y)))
            pts[f"rib_{tag}_{k}"] = (0.5 + side * rc * body_width, y)
    pts["cervical"] = (0.5, _CERVICAL["C7"])
    pts["t12"] = (0.5, _THORACIC["T12"])
    return np.array([pts[n] for n in LANDMARK_NAMES], dtype=np.float64)


def landmarks(cv: _Canvas) -> np.ndarray:
    """The 16 landmarks of a rendered case in image pixel coordinates."""
    return cv.to_image(canonical_landmarks(cv.p.body_width))
