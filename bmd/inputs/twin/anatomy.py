"""One person's chest anatomy: shape parameters, the curves they define and the 16 landmarks.

Everything is in *canonical* coordinates: x, y in [0, 1] of a standard field, x to the image right
(the patient's left on a PA view), y down. A pose (:mod:`bmd.inputs.twin.acquisition`) maps canonical
to image pixels. Shape varies per person beyond pose, so that the landmarks are not one template under
an affine map: rib-cage width (per side) and height, the level of T1 (neck length), clavicle tilt and
length per side, shoulder height per side, the taper of the upper rib cage (conical to barrel-shaped), a
lateral curve of the thoracic spine, axial rotation (the spine projected off the midline between the
clavicles' medial ends), inspiration depth (diaphragm level) and heart size. The spreads of thorax height,
taper and rotation come from the spec (:class:`~bmd.inputs.twin.spec.TwinSpec`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bmd.columns import LANDMARK_NAMES
from bmd.inputs.twin.spec import TwinSpec

LEVEL = 0.048  # vertebral level height (canonical units, before the thorax-height factor)
RIB_LEVELS = (0.09, 0.21, 0.33, 0.45)  # rib-cage margin landmarks: depth below T1 (canonical units)
CLAV_MEDIAL, CLAV_LATERAL = 0.045, 0.33  # |u| of the clavicle ends at unit length (body-width units)
SIDES = ((1, "l"), (-1, "r"))  # +1: image right = the patient's left
NECK_HALF, SHOULDER_HALF = 0.09, 0.47  # soft-tissue half-widths of the neck and of the shoulders (body-width units)
HUMERUS_OFFSET, HUMERUS_RADIUS = 0.105, 0.05  # humeral head centre lateral to the clavicle's end, and its radius
SHOULDER_COVER = 0.03  # soft tissue over the lateral clavicle at the top of the shoulder (about 11 mm)


@dataclass(frozen=True)
class Anatomy:
    """Shape of one person (drawn by :func:`draw_anatomy`; canonical units unless stated)."""

    body_width: float  # torso width factor
    cage_width: tuple[float, float]  # rib-cage half-width factor (patient's left, right)
    cage_height: float  # vertical scale of the thorax below T1
    t1_y: float  # level of the T1 body centre (neck length / framing)
    inspiration: float  # diaphragm shift (+ = deeper breath, lower domes)
    heart_size: float
    heart_shift: float
    clav_tilt: tuple[float, float]  # extra rise of the lateral clavicle end (left, right)
    clav_length: tuple[float, float]  # clavicle length factor (left, right)
    shoulder: tuple[float, float]  # vertical offset of the shoulder girdle (left, right; + = lower)
    scoliosis: float  # lateral offset amplitude of the thoracic spine curve
    scoliosis_phase: float
    breast: float  # 0 for men
    soft_thickness: float
    aortic_knob: float  # size factor
    dome_offset: tuple[float, float]  # diaphragm dome apex below the base level (patient's right, left)
    cage_apex: float  # depth below the cage top over which the apex rounds off (before cage_height)
    spine_shift: float = 0.0  # lateral offset of the whole spine from axial rotation (+ = image right)
    cage_flare: float = 0.0  # how much narrower the upper cage is than at the 4th margin level (conical ... barrel)


def draw_anatomy(rng: np.random.Generator, sex: str, spec: TwinSpec | None = None) -> Anatomy:
    """Random anatomy of one person (a fixed number of draws, so later draws stay aligned)."""
    spec = spec or TwinSpec()
    n = rng.standard_normal(16)
    cage = float(np.clip(1.0 + 0.06 * n[0], 0.85, 1.15))
    side = np.clip(0.025 * n[1:3], -0.05, 0.05)
    male = sex == "M"
    return Anatomy(
        body_width=float(np.clip(1.0 + 0.05 * n[3] + (0.03 if male else 0.0), 0.85, 1.18)),
        cage_width=(float(cage * (1 + side[0])), float(cage * (1 + side[1]))),
        cage_height=float(np.clip(spec.thorax_height[0] + spec.thorax_height[1] * n[4], 0.8, 1.35)),
        t1_y=float(np.clip(0.17 + 0.015 * n[5], 0.13, 0.21)),
        inspiration=float(np.clip(0.03 * n[6], -0.06, 0.06)),
        heart_size=float(np.clip(1.0 + 0.10 * n[7], 0.8, 1.3)),
        heart_shift=float(np.clip(0.015 * n[8], -0.03, 0.03)),
        clav_tilt=(float(np.clip(0.035 * n[9], -0.07, 0.07)), float(np.clip(0.035 * n[10], -0.07, 0.07))),
        clav_length=(float(np.clip(1 + 0.07 * n[11], 0.85, 1.15)), float(np.clip(1 + 0.07 * n[12], 0.85, 1.15))),
        shoulder=(float(np.clip(0.012 * n[13], -0.025, 0.025)), float(np.clip(0.012 * n[14], -0.025, 0.025))),
        scoliosis=float(np.clip(0.012 * n[15], -0.03, 0.03)),
        scoliosis_phase=float(rng.uniform(-0.5, 0.5)),
        breast=float(rng.uniform(0.2, 1.0)) * (not male),
        soft_thickness=float(np.clip(1.0 + 0.12 * rng.standard_normal(), 0.7, 1.4)),
        aortic_knob=float(rng.uniform(0.7, 1.3)),
        dome_offset=(float(rng.uniform(-0.01, 0.015)), float(rng.uniform(0.01, 0.045))),
        cage_apex=_lognormal(rng, spec.cage_apex, 0.4),
        spine_shift=rotation_shift(spec, float(rng.standard_normal())),
        cage_flare=_lognormal(rng, spec.cage_flare, 0.6),
    )


def _lognormal(rng: np.random.Generator, median_log_sd: tuple[float, float], clip: float) -> float:
    """One log-normal draw around ``median`` with log-SD ``log_sd``, its log-deviation clipped to ±``clip``."""
    median, log_sd = median_log_sd
    return float(median * np.exp(np.clip(log_sd * rng.standard_normal(), -clip, clip)))


def rotation_shift(spec: TwinSpec, z: float) -> float:
    """Lateral offset (canonical units) of the spine from the clavicles' midline for a rotation of ``z`` SD
    about the body's long axis: the vertebral bodies lie ``spine_depth_mm`` behind the clavicles' medial
    ends, so they project ``depth · sin(angle)`` to the side (the rib-cage margins, near the axis, stay)."""
    angle = np.deg2rad(spec.axial_rotation_deg * float(np.clip(z, -2.4, 2.4)))
    return float(spec.spine_depth_mm / spec.field_width_mm * np.sin(angle))


def spine_x(a: Anatomy, y: np.ndarray | float) -> np.ndarray:
    """x of the spine's centre line at height ``y`` (a gentle lateral curve of the thoracic spine, the whole
    spine shifted by axial rotation)."""
    t = np.clip((np.asarray(y) - a.t1_y) / (0.62 * a.cage_height), 0, 1)
    return 0.5 + a.spine_shift + a.scoliosis * np.sin(np.pi * t + a.scoliosis_phase) - a.scoliosis * np.sin(a.scoliosis_phase)


def vertebra_levels(a: Anatomy) -> dict[str, float]:
    """Body centre y of C4–C7, T1–T12 and L1–L4."""
    levels = {f"C{7 - i}": a.t1_y - (i + 1) * LEVEL for i in range(4)}
    levels.update({f"T{i + 1}": a.t1_y + i * LEVEL * a.cage_height for i in range(12)})
    levels.update({f"L{i + 1}": a.t1_y + (12 + i) * LEVEL * 1.05 * a.cage_height for i in range(4)})
    return levels


#: depth below the cage top (cage heights) down to which the rib cage keeps widening: the 4th margin level
CAGE_FULL_DEPTH = 0.5


def cage_halfwidth(a: Anatomy, y: np.ndarray, side: int) -> np.ndarray:
    """Half-width of the rib cage's lateral margin (body-width units) at height ``y`` on one side.

    A rounded apex, then a margin that keeps widening down to the 4th margin level (widest there, a waist
    below): real frontal films' rib cages widen steadily from the 1st to the 4th level (the detector's points
    on the five real chest films: 0.80, 0.92, 0.95 and 1 of the 4th level's width), where a cage that
    reached full width by the 2nd level made the 3rd and 4th levels equally wide, a constraint every real
    film broke."""
    w = a.cage_width[0 if side > 0 else 1]
    top = a.t1_y - 0.05
    depth = (y - top) / a.cage_height
    rel = np.clip(depth / a.cage_apex, 0, 1)
    flare = 1 - a.cage_flare * np.clip(CAGE_FULL_DEPTH - depth, 0, None) ** 1.5
    waist = 1 - 0.08 * np.clip((y - (a.t1_y + 0.58 * a.cage_height)) / 0.2, 0, 1)
    return 0.385 * w * np.sqrt(rel) * flare * waist


def diaphragm_y(a: Anatomy, u: np.ndarray) -> np.ndarray:
    """y of the diaphragm at signed offset ``u`` (body-width units): two domes, costophrenic angles laterally."""
    base = a.t1_y + 0.53 * a.cage_height + a.inspiration
    top = base + np.where(u < 0, a.dome_offset[0], a.dome_offset[1])  # patient's right dome usually higher
    ax = np.abs(u)
    return top + 1.9 * np.maximum(ax - 0.17, 0) ** 2 + 1.0 * np.maximum(0.17 - ax, 0) ** 2


def body_halfwidth(a: Anatomy, y: np.ndarray, side: int) -> np.ndarray:
    """Half-width (body-width units) of the soft-tissue outline at height ``y`` on one side: the neck, widening
    into the shoulder over 0.10, then a slight taper down the chest.

    Each shoulder rises over its own girdle: its widening starts so that the skin lies at least
    ``SHOULDER_COVER`` above the clavicle along its whole length (on a real film the acromioclavicular joint
    sits under the top of the shoulder, never in the air above it), and the shoulder is wide enough to hold
    the humeral head under the deltoid."""
    _, lat_y = clavicle_curve(a, np.float64(1.0), side)
    head_ax, _ = humeral_head(a, side)
    base = min(a.t1_y - 0.07, float(lat_y) - SHOULDER_COVER - 0.07)
    full = max(SHOULDER_HALF, head_ax + HUMERUS_RADIUS + 0.02)
    t = np.clip((np.asarray(y) - base) / 0.10, 0, 1)
    half = NECK_HALF + (full - NECK_HALF) * (3 * t**2 - 2 * t**3)
    return half - 0.05 * np.clip((np.asarray(y) - a.t1_y - 0.25) / 0.5, 0, 1)


def humeral_head(a: Anatomy, side: int) -> tuple[float, float]:
    """(|u|, y) of the humeral head's centre on one side: ``HUMERUS_OFFSET`` lateral to the clavicle's end,
    low enough that the head's top lies just below the acromion, level with the clavicle's end."""
    lat_ax, lat_y = clavicle_curve(a, np.float64(1.0), side)
    return float(lat_ax) + HUMERUS_OFFSET, float(lat_y) + 0.045


def clavicle_curve(a: Anatomy, r: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(|u|, y) of the clavicle's centre line at fraction ``r`` (0 medial, 1 lateral) on one side."""
    i = 0 if side > 0 else 1
    ax = CLAV_MEDIAL + r * (CLAV_LATERAL - CLAV_MEDIAL) * a.clav_length[i]
    y = (a.t1_y + 0.008 + a.shoulder[i] * r - (0.045 + a.clav_tilt[i]) * r
         + 0.012 * np.sin(2 * np.pi * r))
    return ax, y


def canonical_landmarks(a: Anatomy) -> np.ndarray:
    """The 16 landmarks in canonical coordinates (``LANDMARK_NAMES`` order)."""
    pts: dict[str, tuple[float, float]] = {}
    levels = vertebra_levels(a)
    for side, tag in SIDES:
        for name, r in (("medial", 0.0), ("mid", 0.5), ("lateral", 1.0)):
            ax, y = clavicle_curve(a, np.float64(r), side)
            pts[f"clav_{tag}_{name}"] = (0.5 + side * float(ax) * a.body_width, float(y))
        for k, depth in enumerate(RIB_LEVELS, start=1):
            y = a.t1_y + depth * a.cage_height
            rc = float(cage_halfwidth(a, np.float64(y), side))
            pts[f"rib_{tag}_{k}"] = (0.5 + side * rc * a.body_width, y)
    pts["cervical"] = (float(spine_x(a, levels["C7"])), levels["C7"])
    pts["t12"] = (float(spine_x(a, levels["T12"])), levels["T12"])
    return np.array([pts[n] for n in LANDMARK_NAMES], dtype=np.float64)
