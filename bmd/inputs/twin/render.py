"""Render one synthetic frontal (PA) chest radiograph and its 16 landmarks.

A person's anatomy (:mod:`bmd.inputs.twin.anatomy`) is laid out in canonical coordinates; the
acquisition's pose maps it to image pixels; every structure is evaluated on the pixel grid mapped back
through the inverse pose, only inside its own bounding box. Two attenuation maps are summed: soft
tissue and air (torso, breasts, abdomen, mediastinum, heart, aortic knob, lungs with branching vessels,
trachea and main bronchi) and bone (vertebrae with pedicles, posterior and fainter anterior ribs,
clavicles, humeral heads and scapulae; twelve ribs, the last two short and floating, so T12 is the
vertebra of the last rib). The beam weighs them differently (kV), then
:mod:`bmd.inputs.twin.acquisition` exposes, processes and marks the image.

Bone density shows the way a chest film shows it, through three channels per bone:

* ``m_k`` — radio-opacity of the cancellous interior, scaled by the person's bone depth (a bone-size
  factor no projection can see) and by the beam; visible at any resolution, against the surrounding
  soft tissue;
* ``c_k`` — cortical thickness as a fraction of the bone's width: a profile shape (bright rims, thin
  or thick), near the resolution limit, best seen in the local crops;
* ``tau_k`` — a trabecular pattern of 3.5–7 px period at 512 px (2.6–5.2 mm over a 380 mm field: just
  above the local crops' resolution limit, far below the whole-chest input's) in the cancellous
  interior, whose relative contrast follows the texture channel; blurred by the detector, buried in
  quantum noise behind the heart and partly equalised by the vendor's processing.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from bmd.inputs.twin.acquisition import (
    Acquisition,
    blur,
    burn_in,
    draw_acquisition,
    expose,
    process,
    shutter_mask,
    upsample,
)
from bmd.inputs.twin.anatomy import (
    CLAV_LATERAL,
    CLAV_MEDIAL,
    HUMERUS_RADIUS,
    SIDES,
    Anatomy,
    body_halfwidth,
    cage_halfwidth,
    canonical_landmarks,
    clavicle_curve,
    diaphragm_y,
    draw_anatomy,
    humeral_head,
    spine_x,
    vertebra_levels,
)
from bmd.inputs.twin.spec import TwinSpec


def _sig(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # logistic, overflow-free


class _Canvas:
    """The pixel grid of one image, its map to canonical coordinates and the two attenuation maps."""

    def __init__(self, size: int, anatomy: Anatomy, acq: Acquisition):
        self.size = size
        self.a = anatomy
        self.acq = acq
        c, s = np.cos(acq.rotation), np.sin(acq.rotation)
        self.rot = np.array([[c, -s], [s, c]])
        self.soft = np.zeros((size, size), np.float32)
        self.bone = np.zeros((size, size), np.float32)

    def to_image(self, q: np.ndarray) -> np.ndarray:
        """Canonical (..., 2) → image pixel coordinates (x, y), pixel centres at integers."""
        centre = np.array([0.5, 0.5])
        p = centre + self.acq.scale * (q - centre) @ self.rot.T + np.asarray(self.acq.shift)
        return p * self.size - 0.5

    def grid(self, x0: float, x1: float, y0: float, y1: float):
        """Slices of the image covering a canonical box, and the canonical X, Y inside them (or None)."""
        corners = self.to_image(np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]))
        lo = np.clip(np.floor(corners.min(axis=0)).astype(int) - 2, 0, self.size)
        hi = np.clip(np.ceil(corners.max(axis=0)).astype(int) + 3, 0, self.size)
        if (hi <= lo).any():
            return None
        sl = (slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        jj, ii = np.meshgrid(np.arange(lo[0], hi[0], dtype=np.float32), np.arange(lo[1], hi[1], dtype=np.float32))
        pts = np.stack([(jj + 0.5) / self.size, (ii + 0.5) / self.size], axis=-1)
        q = 0.5 + (pts - 0.5 - np.asarray(self.acq.shift, dtype=np.float32)) @ self.rot.astype(np.float32) / self.acq.scale
        return sl, q[..., 0], q[..., 1]

    def u(self, X: np.ndarray) -> np.ndarray:
        """Signed horizontal offset from the midline in body-width units (+ = image right)."""
        return (X - 0.5) / self.a.body_width


class _Bones:
    """Per-bone density channels turned into drawing constants (cancellous opacity, cortex, texture)."""

    def __init__(self, latents: dict, spec: TwinSpec, texture: np.ndarray, other: float):
        self.lat, self.spec, self.texture = latents, spec, texture
        self.depth = float(np.clip(1 + spec.bone_size_sd * latents["size"], 0.6, 1.4))
        self.other = other  # density of bones that carry no lumbar information (humerus, scapula)

    def channels(self, key: str | None) -> tuple[float, float, float]:
        """(m, c, tau) of a bone family; mid-thoracic vertebrae average the cervical and T12 channels."""
        if key is None:
            return tuple(0.5 * (self.lat[f"{ch}_cervi"] + self.lat[f"{ch}_t12"]) for ch in ("m", "c", "tau"))
        if key == "other":
            return self.other, self.other, 0.0
        return self.lat[f"m_{key}"], self.lat[f"c_{key}"], self.lat[f"tau_{key}"]

    def draw(self, cv: _Canvas, sl, x: np.ndarray, along: np.ndarray, base: float, key: str | None,
             end_plates: tuple[np.ndarray, float] | None = None) -> None:
        """Add a bone whose cross-section across ``x`` (−1..1, the bone's half-width) is a cortical tube.

        ``along`` (0..1) fades the bone along its length; ``end_plates`` = (distance from the body's centre
        line, half-height), when given, make it a short body with cortical end plates of the same
        thickness as its walls (a vertebra) instead of a long bone.
        """
        m, c, tau = self.channels(key)
        s = self.spec
        t = float(np.clip(s.cortex_frac * (1 + s.cortex_per_sd * c), 0.05, 0.6))
        mu = s.marrow_mu * (1 + s.marrow_per_sd * m)
        amp = float(np.clip(s.texture_amp + s.texture_amp_per_sd * tau, 0.02, 0.8))
        outer = np.sqrt(np.clip(1 - x * x, 0, 1))
        inner = np.sqrt(np.clip((1 - t) ** 2 - x * x, 0, 1))
        if end_plates is not None:
            dist, half = end_plates
            y_outer = _sig((half - dist) / 0.0025)
            y_inner = _sig((half * (1 - t) - dist) / 0.0025)
            cortex, inner = outer * y_outer - inner * y_inner, inner * y_inner
        else:
            cortex = outer - inner
        tex = 1 + amp * self.texture[sl]
        cv.bone[sl] += (base * self.depth * along * (s.cortex_mu * cortex + mu * inner * tex)).astype(np.float32)


def _soft_tissue(cv: _Canvas, field: np.ndarray) -> None:
    sl, X, Y = cv.grid(-0.3, 1.3, -0.3, 1.3)
    a = cv.a
    u = cv.u(X)
    half = np.where(u > 0, body_halfwidth(a, Y, 1), body_halfwidth(a, Y, -1))
    body = np.sqrt(np.clip(1 - (u / half) ** 2, 0, 1)) * _sig((half - np.abs(u)) / 0.01)
    abdomen = 0.35 * _sig((Y - diaphragm_y(a, u)) / 0.02)
    cv.soft[sl] += (3.2 * a.soft_thickness * body * (1 + field[sl]) + abdomen * body).astype(np.float32)
    if a.breast > 0:
        for side in (-1, 1):
            cy = a.t1_y + 0.46 * a.cage_height
            r2 = ((u - side * 0.24) / 0.15) ** 2 + ((Y - cy) / 0.10) ** 2
            lower = _sig((Y - cy + 0.02) / 0.02)  # the lower edge is the visible one
            cv.soft[sl] += (0.7 * a.breast * np.sqrt(np.clip(1 - r2, 0, 1)) * (0.5 + 0.5 * lower)).astype(np.float32)


def _airways(a: Anatomy) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, float]]]:
    """Carina point and the airway segments (start, end, half-width) in canonical units."""
    carina_y = a.t1_y + 0.12 * a.cage_height
    carina = np.array([float(spine_x(a, carina_y)) - 0.004, carina_y])
    top = np.array([0.5 - 0.004, a.t1_y - 0.25])
    hilum_r = carina + np.array([-0.075 * a.body_width, 0.055 * a.cage_height])
    hilum_l = carina + np.array([0.095 * a.body_width, 0.075 * a.cage_height])
    segs = [(top, carina, 0.018), (carina, hilum_r, 0.011), (carina, hilum_l, 0.010)]
    return carina, segs


def _segment_distance(X: np.ndarray, Y: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    d = p1 - p0
    t = np.clip(((X - p0[0]) * d[0] + (Y - p0[1]) * d[1]) / float(d @ d), 0, 1)
    return np.hypot(X - p0[0] - t * d[0], Y - p0[1] - t * d[1])


def _lungs(cv: _Canvas) -> np.ndarray | None:
    """Subtract the lungs' air (mediastinum, heart and aortic knob excluded); returns the lung mask."""
    a = cv.a
    region = cv.grid(0.0, 1.0, a.t1_y - 0.15, a.t1_y + 0.85)
    if region is None:
        return None
    sl, X, Y = region
    u = cv.u(X)
    ax = np.abs(u)
    rc = np.where(u >= 0, cage_halfwidth(a, Y, 1), cage_halfwidth(a, Y, -1))
    med = 0.05 + 0.035 * np.clip((Y - a.t1_y) / 0.35, 0, 1)
    e = 0.010
    dia = diaphragm_y(a, u)
    inside = _sig((rc - 0.012 - ax) / e) * _sig((ax - med) / e) * _sig((dia - Y) / e) * _sig((Y - (a.t1_y - 0.04)) / e)
    hy = a.t1_y + 0.45 * a.cage_height + 0.5 * a.inspiration
    heart = ((u - 0.05 - a.heart_shift) / (0.165 * a.heart_size)) ** 2 + ((Y - hy) / (0.12 * a.heart_size)) ** 2
    inside *= _sig((np.sqrt(heart) - 1.0) / 0.06)
    ky = a.t1_y + 0.17 * a.cage_height
    knob = np.hypot(u - 0.062, Y - ky) / (0.028 * a.aortic_knob)
    inside *= _sig((knob - 1.0) / 0.15)
    depth = np.sqrt(np.clip(1 - ((ax - (med + rc) / 2) / ((rc - med) / 2 + 1e-3)) ** 2, 0, 1)) ** 0.5
    cv.soft[sl] -= (2.1 * inside * (0.35 + 0.65 * depth)).astype(np.float32)
    # trachea and main bronchi: air in the mediastinum
    mask = np.zeros((cv.size, cv.size), np.float32)
    mask[sl] = inside
    _, segs = _airways(a)
    for p0, p1, half in segs:
        lo, hi = np.minimum(p0, p1) - half - 0.01, np.maximum(p0, p1) + half + 0.01
        region = cv.grid(lo[0], hi[0], lo[1], hi[1])
        if region is None:
            continue
        sl, X, Y = region
        dist = _segment_distance(X, Y, p0, p1)
        airway = _sig((half - dist) / 0.004) * np.sqrt(np.clip(1 - (dist / half) ** 2, 0, 1))
        cv.soft[sl] -= (0.55 * airway * (1 - mask[sl])).astype(np.float32)
    return mask


def _vessels(cv: _Canvas, rng: np.random.Generator, lung: np.ndarray | None) -> None:
    """Branching pulmonary vessels from the hila, thinning and fading towards the periphery."""
    if lung is None:
        return
    a = cv.a
    _, segs = _airways(a)
    size = cv.size
    classes = (1.0, 2.0, 3.5)  # vessel radius classes, pixels of a 512 image: generations 2+, 1, 0
    layers = np.zeros((len(classes), size * size), np.float32)
    step = 0.6 / size
    # breadth-first tree: 6 trunks per hilum radiating up, laterally and down, each splitting in two
    # five times with a random turn and a shorter child
    starts, angles, lengths = [], [], []
    for hilum, side in ((segs[1][1], -1), (segs[2][1], 1)):
        for base in (-1.9, -1.2, -0.4, 0.3, 0.9, 1.5):
            starts.append(hilum)
            angles.append((np.pi - base if side < 0 else base) + rng.uniform(-0.2, 0.2))
            lengths.append(rng.uniform(0.05, 0.08) * a.cage_height)
    p, angle, length = np.asarray(starts), np.asarray(angles), np.asarray(lengths)
    for level in range(5):
        end = p + length[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        n = max(int(length.max() / step), 2)
        t = np.linspace(0, 1, n)[None, :, None]
        pix = np.round(cv.to_image(p[:, None] + t * (end - p)[:, None])).astype(int).reshape(-1, 2)
        ok = (pix >= 0).all(axis=1) & (pix < size).all(axis=1)
        weight = np.repeat(length * size / (n - 1), n)[ok]  # pixels of vessel length each point stands for
        layers[max(2 - level, 0)] += np.bincount(pix[ok, 1] * size + pix[ok, 0], weights=weight,
                                                 minlength=size * size).astype(np.float32)
        if level < 4:
            turn = np.tile([-1.0, 1.0], len(angle)) * rng.uniform(0.25, 0.6, 2 * len(angle))
            p, angle = np.repeat(end, 2, axis=0), np.repeat(angle, 2) + turn
            length = np.repeat(length, 2) * rng.uniform(0.62, 0.8, 2 * len(length))
    layers = layers.reshape(len(classes), size, size)
    f = size / 512
    total = np.zeros((size, size), np.float32)
    for k, radius in enumerate(classes):
        total += blur(layers[k], radius * f) * (radius * f) * 0.9
    cv.soft += (0.25 * total * lung / (1 + 0.1 * total)).astype(np.float32)


def _spine(cv: _Canvas, bones: _Bones) -> None:
    a = cv.a
    for name, yc in vertebra_levels(a).items():
        xc = float(spine_x(a, yc))
        region = cv.grid(xc - 0.07, xc + 0.07, yc - 0.035, yc + 0.035)
        if region is None:
            continue
        sl, X, Y = region
        if name.startswith("C") or name == "T1":
            key, hh, hw = "cervi", 0.016, 0.027
        elif name.startswith("L") or name in ("T11", "T12"):
            key, hh, hw = "t12", 0.021, 0.045 if name.startswith("L") else 0.038
        else:
            key, hh, hw = None, 0.019 * a.cage_height, 0.036
        hw *= a.body_width
        x = (X - xc) / hw
        bones.draw(cv, sl, x, np.ones_like(x), 1.0, key, end_plates=(np.abs(Y - yc), hh))
        # pedicles: two cortical rings in the upper half of the body
        for s in (-1, 1):
            r = np.hypot((X - xc - s * 0.62 * hw) / (0.2 * hw), (Y - yc + 0.3 * hh) / (0.35 * hh))
            ring = np.exp(-((r - 1) / 0.3) ** 2)
            cv.bone[sl] += (0.25 * bones.depth * ring).astype(np.float32)


def _ribs(cv: _Canvas, bones: _Bones, rng: np.random.Generator) -> None:
    a = cv.a
    levels = vertebra_levels(a)
    jitter = 1 + np.clip(0.08 * rng.standard_normal((2, 12, 2)), -0.2, 0.2)  # per rib: slope, thickness
    for side, tag in SIDES:
        key = f"rib_{tag}"
        for j in range(12):  # ribs 11 and 12 are short and float: the last rib marks T12
            slope, thick = jitter[0 if side > 0 else 1, j]
            y0 = levels[f"T{j + 1}"]
            ym = y0 + 0.04 * a.cage_height
            rc = float(cage_halfwidth(a, np.float64(ym), side))
            # the posterior rib runs from its vertebra (wherever scoliosis and rotation put the spine) to the margin
            xs, margin = float(spine_x(a, y0)), 0.5 + side * rc * a.body_width
            x0, x1 = sorted((xs + side * 0.02 * a.body_width, margin + side * 0.03 * a.body_width))
            drop = 0.075 * a.cage_height * slope
            half = 0.0080 * a.cage_height * thick
            region = cv.grid(x0, x1, y0 - 0.035, y0 + drop + 0.02)
            if region is not None:
                sl, X, Y = region
                r = (X - xs) / (margin - xs)
                rr = np.clip(r, 0, 1)
                # posterior rib: from the transverse process, up a little, then sloping down to the margin
                yc = y0 - 0.012 * np.sin(np.pi * rr) + drop * rr**2
                tip = 1.02 if j < 10 else (0.62 if j == 10 else 0.42)
                along = _sig((r - 0.08) / 0.02) * _sig((tip - r) / 0.02)
                bones.draw(cv, sl, (Y - yc) / half, along, 0.42, key)
            # anterior rib: from the margin down towards the sternum, fainter, fading at the cartilage
            xa0, xa1 = sorted((0.5 + side * 0.3 * rc * a.body_width, 0.5 + side * (rc + 0.03) * a.body_width))
            anterior = 1 <= j < 10
            region = cv.grid(xa0, xa1, y0 + drop - 0.02, y0 + drop + 0.13 * a.cage_height) if anterior else None
            if region is not None:
                sl, X, Y = region
                r = side * cv.u(X) / rc
                rr = np.clip(r, 0, 1)
                ya = y0 + drop + 0.16 * a.cage_height * (1 - rr) ** 1.3
                along = _sig((r - 0.38) / 0.05) * _sig((1.0 - r) / 0.02)
                bones.draw(cv, sl, (Y - ya) / (0.0100 * a.cage_height * thick), along, 0.2, key)


def _clavicles(cv: _Canvas, bones: _Bones) -> None:
    a = cv.a
    for side, tag in SIDES:
        i = 0 if side > 0 else 1
        reach = CLAV_MEDIAL + (CLAV_LATERAL - CLAV_MEDIAL) * a.clav_length[i] + 0.02
        x0, x1 = sorted((0.5 + side * 0.02 * a.body_width, 0.5 + side * reach * a.body_width))
        region = cv.grid(x0, x1, a.t1_y - 0.12, a.t1_y + 0.08)
        if region is None:
            continue
        sl, X, Y = region
        ax = side * cv.u(X)
        r = (ax - CLAV_MEDIAL) / ((CLAV_LATERAL - CLAV_MEDIAL) * a.clav_length[i])
        rr = np.clip(r, 0, 1)
        _, yc = clavicle_curve(a, rr, side)
        half = 0.012 - 0.003 * rr
        along = _sig(r / 0.02) * _sig((1 - r) / 0.02)
        bones.draw(cv, sl, (Y - yc) / half, along, 0.9, f"clav_{tag}")


def _shoulders(cv: _Canvas, bones: _Bones) -> None:
    a = cv.a
    for side, _tag in SIDES:
        i = 0 if side > 0 else 1
        head_ax, cy = humeral_head(a, side)
        cx = 0.5 + side * head_ax * a.body_width
        region = cv.grid(cx - 0.08, cx + 0.08, cy - 0.07, cy + 0.30)
        if region is None:
            continue
        sl, X, Y = region
        head = np.hypot((X - cx) / HUMERUS_RADIUS, (Y - cy) / (1.1 * HUMERUS_RADIUS))  # a sphere: its shell projects like a tube radially
        bones.draw(cv, sl, head, np.ones_like(head), 1.0, "other")
        shaft_x = (X - (cx + side * 0.012)) / 0.026
        bones.draw(cv, sl, shaft_x, _sig((Y - cy - 0.01) / 0.01), 0.9, "other")
        # scapula: a plate lateral to the ribs with a thicker lateral border
        region = cv.grid(cx - 0.16, cx + 0.16, cy - 0.02, cy + 0.28)
        if region is None:
            continue
        sl, X, Y = region
        ax = side * cv.u(X)
        inner_edge = 0.30 + 0.5 * a.shoulder[i]
        plate = _sig((ax - inner_edge) / 0.01) * _sig((0.43 - ax) / 0.01) * _sig((Y - cy + 0.005) / 0.01)
        plate *= _sig((cy + 0.23 - Y - 0.6 * (ax - inner_edge)) / 0.01)
        border = np.exp(-(((ax - 0.41 + 0.25 * (Y - cy)) / 0.008) ** 2)) * plate
        cv.bone[sl] += ((0.18 * plate + 0.25 * border) * bones.depth * (1 + 0.15 * bones.other)).astype(np.float32)


def _parenchyma(cv: _Canvas, rng: np.random.Generator, lung: np.ndarray | None, spec: TwinSpec) -> None:
    """Fine lung texture (small vessels, interstitium) below the resolution of the drawn vessel tree.

    Real lung fields are not empty between the large vessels: their texture carries power at periods of a
    few millimetres, so their spectrum falls less steeply than the twin's did with the vessel tree alone
    (lung-field slope about −3.35 against −3.3 … −2.5 on the real chest films of the real-data folder).
    """
    if lung is None:
        return
    amp = spec.lung_texture_amp * float(np.exp(spec.lung_texture_amp_log_sd * rng.standard_normal()))
    texture = band_pass_noise(rng, cv.size, spec.lung_texture_period_px)
    cv.soft += (amp * texture * lung).astype(np.float32)


def band_pass_noise(rng: np.random.Generator, size: int, periods: tuple[float, float]) -> np.ndarray:
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
    field = ndimage.zoom(coarse, 32 / 6, order=3, mode="nearest")
    field = upsample(field, max(size // 32, 1))[:size, :size]
    return field / (field.std() + 1e-8) * sd


def _inside(points: np.ndarray, size: int, acq: Acquisition) -> bool:
    left, right, top, bottom = acq.shutters
    lo = np.array([max(0.01, left + 0.01), max(0.01, top + 0.01)]) * size
    hi = np.array([min(0.99, 1 - right - 0.01), min(0.99, 1 - bottom - 0.01)]) * size - 1
    return bool((points >= lo).all() and (points <= hi).all())


def render_case(latents: dict, sex: str, seed: int | list[int], size: int,
                spec: TwinSpec | None = None) -> tuple[np.ndarray, np.ndarray, Acquisition]:
    """Render one radiograph.

    ``latents`` holds the person's bone-size factor ``size`` and the case's ``m_/c_/tau_<bone>``
    channels. Returns the stored pixel values (uint16, MONOCHROME1 already inverted when drawn so), the
    16 landmarks (16, 2) in image pixel coordinates, and the acquisition.
    """
    spec = spec or TwinSpec()
    rng = np.random.default_rng(seed)
    anatomy = draw_anatomy(rng, sex, spec)
    for _ in range(50):  # a pose that would cut landmarks off the field is redrawn (the radiographer re-centres)
        acq = draw_acquisition(rng, spec)
        cv = _Canvas(size, anatomy, acq)
        pts = cv.to_image(canonical_landmarks(anatomy))
        if _inside(pts, size, acq):
            break
    bones = _Bones(latents, spec, band_pass_noise(rng, size, spec.texture_period_px), float(rng.standard_normal()))
    # soft tissue, lungs and airways are smooth: drawn at half resolution and enlarged (a third of the time)
    k = 2 if size % 2 == 0 and size >= 128 else 1
    coarse = _Canvas(size // k, anatomy, acq)
    _soft_tissue(coarse, _smooth_field(rng, size // k, spec.soft_tissue_field_sd))
    lung = _lungs(coarse)
    cv.soft += upsample(coarse.soft, k) if k > 1 else coarse.soft
    if lung is not None and k > 1:
        lung = upsample(lung, k)
    _vessels(cv, rng, lung)
    _parenchyma(cv, rng, lung, spec)
    _spine(cv, bones)
    _ribs(cv, bones, rng)
    _clavicles(cv, bones)
    _shoulders(cv, bones)

    field = shutter_mask(size, acq)
    A = acq.soft_kv * cv.soft + acq.bone_kv * cv.bone + np.where(field, 0.0, 4.0).astype(np.float32)
    log = expose(A, acq, rng)
    display = burn_in(process(log, acq, field), acq, rng)
    maxval = 2**acq.bits - 1
    stored = np.round(display * maxval).astype(np.uint16)
    if acq.monochrome1:
        stored = (maxval - stored).astype(np.uint16)
    return stored, pts, acq
