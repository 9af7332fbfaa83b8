"""The 7 regions of interest: box geometry from the 16 landmarks (cropping is :mod:`bmd.rois.crop`).

Coordinates are pixels of the original image, x to the right, y down, pixel centres at integers
(the landmark convention). Left/right are the patient's: on a PA radiograph the patient's left is
on the image's right.

Geometry (version :data:`GEOMETRY_VERSION`)
-------------------------------------------
A box is an oriented rectangle: centre ``c``, unit vectors ``u`` (the crop's +x, "to the right" in
the crop) and ``v`` (the crop's +y, "down" in the crop), ``width`` along ``u`` and ``height`` along
``v``. Crop point ``(a, b)`` in [-1, 1]² (pixel *edges* at ±1) samples the image at
``c + a·width/2·u + b·height/2·v``.

* Body scale ``s`` = distance cervical → T12 (robust: two well-separated midline points; one bad
  lateral landmark cannot shrink or grow every box). Spine direction ``d`` = unit(T12 − cervical).
* **One orientation convention for every crop**: ``v`` points caudally along the anatomy and ``u``
  laterally (for the midline boxes: to the patient's left, the image right), so every crop is an
  upright view with the head up and, for the paired bones, the midline on the crop's left.
* **One aspect ratio**: every local box is a square (``height/width`` = :attr:`RoiGeometry.aspect`, 1).
* ``cervi``: centre = cervical point; ``v`` = ``d``; side ``0.30 s``.
* ``lumbar`` (the paper's name for the T12 box): centre = T12 point; ``v`` = ``d``; side ``0.30 s``.
* ``clavi_l``/``clavi_r``: ``u`` = unit(lateral end − medial end) (the box lies along the chord of
  the clavicle); ``v`` ⟂ ``u`` pointing caudally; centre = mean of the 3 clavicle points;
  side ``0.50 s`` (about the chord of an adult clavicle on a PA film).
* ``ribcage_l``/``ribcage_r``: ``v`` = the total-least-squares line through the 4 rib-cage margin
  points (first principal axis), oriented from rib 1 to rib 4; ``u`` ⟂ ``v`` pointing laterally;
  side ``0.60 s``; centre = mean of the 4 points moved *medially* by ``0.25 × side`` so that three
  quarters of the box show ribs inside the cage and the margin runs down its lateral quarter.
* **Mirroring**: right-side boxes (patient's right, image left) have a left-handed frame (``u``
  still points laterally, now to the image left, ``v`` still caudal), so their crops come out
  mirrored into the left-side orientation: the shared backbone sees one kind of clavicle and one
  kind of rib cage. A left/right-symmetric image gives identical left and right crops.
* ``chest``: the whole image, letter-boxed: a square box of side ``max(H, W)`` centred on the image
  after integer zero-padding (``(S − W) // 2`` columns on the left, ``(S − H) // 2`` rows on top), so
  a non-square radiograph is not distorted; the padding is black (air).
* Sizes and offsets are the fields of :class:`RoiGeometry` (part of the ROI cache key).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bmd.columns import LANDMARK_NAMES, LOCAL_NAMES, N_LANDMARKS

GEOMETRY_VERSION = "rois-v2"
"""Bump when a geometry or resampling rule changes: it is part of the ROI cache key."""

ROI_FAMILIES: dict[str, tuple[str, ...]] = {
    "chest": ("chest",), "cervi": ("cervi",), "clavi": ("clavi_l", "clavi_r"),
    "ribcage": ("ribcage_l", "ribcage_r"), "lumbar": ("lumbar",),
}
"""ROI family (one model of the paper's Table 2) → its ROI names."""
MIRRORED: frozenset[str] = frozenset({"clavi_r", "ribcage_r"})
"""The boxes whose crops are mirrored into the left-side orientation."""

_I = {n: i for i, n in enumerate(LANDMARK_NAMES)}
_RIBS = {side: [_I[f"rib_{side}_{k}"] for k in range(1, 5)] for side in ("l", "r")}
_CLAV = {side: [_I[f"clav_{side}_{p}"] for p in ("medial", "mid", "lateral")] for side in ("l", "r")}

Array = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class RoiGeometry:
    """Box sizes and offsets, in units of the body scale ``s`` (cervical–T12 distance)."""

    cervi: float = 0.30
    lumbar: float = 0.30
    clavi: float = 0.50
    ribcage: float = 0.60
    ribcage_medial_shift: float = 0.25  # fraction of the rib-cage box side, towards the midline
    aspect: float = 1.0  # height / width of every local box

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not math.isfinite(value) or (value <= 0 and f.name != "ribcage_medial_shift"):
                raise ValueError(f"RoiGeometry.{f.name} must be a positive number, got {value!r}")

    def as_dict(self) -> dict[str, float]:
        """The parameters as a JSON-able dict (part of the ROI cache key)."""
        return dataclasses.asdict(self)


DEFAULT_GEOMETRY = RoiGeometry()


@dataclass(frozen=True, eq=False)
class Box:
    """An oriented rectangle: crop point (a, b) ∈ [-1, 1]² ↦ ``centre + a·width/2·u + b·height/2·v``."""

    centre: np.ndarray  # (x, y) pixels
    u: np.ndarray  # unit vector: the crop's +x direction in the image
    v: np.ndarray  # unit vector ⟂ u: the crop's +y direction in the image
    width: float  # along u, pixels
    height: float  # along v, pixels

    @property
    def mirrored(self) -> bool:
        """True for a left-handed frame: the crop is a mirror image of the region."""
        return float(self.u[0] * self.v[1] - self.u[1] * self.v[0]) < 0

    @property
    def half(self) -> float:
        """Half the width (half side of a square box)."""
        return self.width / 2

    @property
    def angle(self) -> float:
        """Rotation θ in degrees of the box from upright: ``v = R(θ)·(0, 1)`` with ``R`` the usual rotation
        matrix in pixel coordinates (clockwise on screen, since y points down)."""
        return math.degrees(math.atan2(-self.v[0], self.v[1]))

    def to_image(self, ab: np.ndarray) -> np.ndarray:
        """Crop coordinates (..., 2) in [-1, 1] → image pixels (..., 2)."""
        ab = np.asarray(ab, dtype=np.float64)
        return (self.centre + ab[..., :1] * (self.width / 2) * self.u + ab[..., 1:] * (self.height / 2) * self.v)

    def from_image(self, p: np.ndarray) -> np.ndarray:
        """Image pixels (..., 2) → crop coordinates (..., 2), [-1, 1] inside the box."""
        d = np.asarray(p, dtype=np.float64) - self.centre
        return np.stack([d @ self.u / (self.width / 2), d @ self.v / (self.height / 2)], axis=-1)

    def to_crop_pixels(self, p: np.ndarray, size: int) -> np.ndarray:
        """Image pixels → pixel coordinates (column, row; centres at integers) of a ``size``² crop."""
        return (self.from_image(p) + 1) * (size / 2) - 0.5

    def corners(self) -> np.ndarray:
        """The 4 corners (4, 2) in crop order: top-left, top-right, bottom-right, bottom-left."""
        return self.to_image(np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]))

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"centre": self.centre.tolist(), "u": self.u.tolist(), "v": self.v.tolist(),
                "width": self.width, "height": self.height}


# ------------------------------------------------------------------------------------------- geometry


def _unit(vec: np.ndarray, what: str) -> tuple[np.ndarray, float]:
    n = float(np.hypot(vec[0], vec[1]))
    if not n > 1e-6:
        raise ValueError(f"degenerate landmarks: {what} has zero length")
    return vec / n, n


def _right_of(v: np.ndarray) -> np.ndarray:
    """The ``u`` of a right-handed (unmirrored) frame whose ``v`` is given: (0, 1) ↦ (1, 0)."""
    return np.array([v[1], -v[0]])


def _below(u: np.ndarray) -> np.ndarray:
    """The ``v`` of a right-handed frame whose ``u`` is given: (1, 0) ↦ (0, 1)."""
    return np.array([-u[1], u[0]])


def check_landmarks(landmarks: Array) -> np.ndarray:
    """The landmarks as a float64 (16, 2) array; raises ``ValueError`` when the shape is wrong or a value
    is not finite."""
    p = landmarks.detach().cpu().numpy() if isinstance(landmarks, torch.Tensor) else landmarks
    p = np.asarray(p, dtype=np.float64)
    if p.shape == (2 * N_LANDMARKS,):
        p = p.reshape(N_LANDMARKS, 2)  # the 32 CSV columns: x, y per point
    if p.shape != (N_LANDMARKS, 2):
        raise ValueError(f"expected {N_LANDMARKS} landmarks as a (16, 2) array, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("landmarks must be 16 finite points (got NaN or inf)")
    return p


def body_scale(landmarks: Array) -> float:
    """The body-size scale ``s``: the cervical–T12 distance in pixels."""
    p = check_landmarks(landmarks)
    return _unit(p[_I["t12"]] - p[_I["cervical"]], "the cervical–T12 distance")[1]


def local_boxes(landmarks: Array, geometry: RoiGeometry | None = None) -> dict[str, Box]:
    """The 6 local boxes of one image (``LOCAL_NAMES`` order) from its 16 landmarks (16, 2).

    The rules are in the module docstring. Raises ``ValueError`` for non-finite or degenerate
    landmarks (coinciding defining points).
    """
    g = geometry or DEFAULT_GEOMETRY
    p = check_landmarks(landmarks)
    cerv, t12 = p[_I["cervical"]], p[_I["t12"]]
    d, s = _unit(t12 - cerv, "the cervical–T12 distance")
    spine_u = _right_of(d)  # towards the patient's left (image right) on an upright PA film

    def square(centre: np.ndarray, u: np.ndarray, v: np.ndarray, rel: float) -> Box:
        side = rel * s
        return Box(np.asarray(centre, dtype=np.float64), u, v, side, side * g.aspect)

    boxes = {"cervi": square(cerv, spine_u, d, g.cervi), "lumbar": square(t12, spine_u, d, g.lumbar)}
    for side, mirrored in (("l", False), ("r", True)):
        med, _, lat = p[_CLAV[side]]
        u, _ = _unit(lat - med, f"the {side} clavicle")
        v = -_below(u) if mirrored else _below(u)  # a left-handed frame mirrors the right side
        boxes[f"clavi_{side}"] = square(p[_CLAV[side]].mean(axis=0), u, v, g.clavi)

        ribs = p[_RIBS[side]]
        mean = ribs.mean(axis=0)
        # total-least-squares line: the first right-singular vector of the centred points
        _, sing, vt = np.linalg.svd(ribs - mean, full_matrices=False)
        if not sing[0] > 1e-6:
            raise ValueError(f"degenerate landmarks: the {side} rib-cage points coincide")
        v = vt[0] if vt[0] @ (ribs[-1] - ribs[0]) >= 0 else -vt[0]  # from rib 1 towards rib 4
        u = -_right_of(v) if mirrored else _right_of(v)  # lateral: image left for the right side
        box = square(mean, u, v, g.ribcage)
        boxes[f"ribcage_{side}"] = dataclasses.replace(box, centre=mean - g.ribcage_medial_shift * box.width * u)
    return {name: boxes[name] for name in LOCAL_NAMES}


def chest_box(image_shape: tuple[int, int]) -> Box:
    """The whole image as a square box (letter-boxed, integer zero padding; see the module docstring)."""
    h, w = int(image_shape[0]), int(image_shape[1])
    side = max(h, w)
    # the padded square's centre, (side − 1) / 2, in original pixel coordinates
    centre = np.array([(side - 1) / 2 - (side - w) // 2, (side - 1) / 2 - (side - h) // 2], dtype=np.float64)
    return Box(centre, np.array([1.0, 0.0]), np.array([0.0, 1.0]), float(side), float(side))


def roi_boxes(landmarks: Array, image_shape: tuple[int, int], geometry: RoiGeometry | None = None
              ) -> dict[str, Box]:
    """All 7 boxes of one image (``ROI_NAMES`` order): the letter-boxed chest and the 6 local boxes."""
    return {"chest": chest_box(image_shape), **local_boxes(landmarks, geometry)}


# ------------------------------------------------------------------------------------------- cropping
