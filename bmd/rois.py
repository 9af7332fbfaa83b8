"""The 7 regions of interest: box geometry from the 16 landmarks, batched crops, drawing.

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

Resampling
----------
The 6 local boxes of an image (and of a whole batch of same-sized images) are cut by **one**
``affine_grid`` + ``grid_sample`` call (bilinear, ``align_corners=False``; outside the image is 0,
``padding="zeros"``, the same black as the chest letter-box; ``padding="border"`` repeats the edge).
Anti-aliasing by **area averaging**: when a box side is ``f`` times the output side, each output
pixel is the mean of ``k × k`` bilinear samples spread evenly over its footprint, with
``k = ceil(f)`` of the image's largest box (at most ``max_supersample``); ``k = 1`` (plain bilinear)
when no box is larger than its output. ``k`` depends only on the case itself, so a crop is the same
whichever other cases share its batch. The chest is zero-padded to a square and resized with
``interpolate(mode="bilinear", antialias=True)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bmd.landmarks.points import LANDMARK_NAMES, N_LANDMARKS

GEOMETRY_VERSION = "rois-v2"
"""Bump when a geometry or resampling rule changes: it is part of the ROI cache key."""

ROI_NAMES: tuple[str, ...] = ("chest", "cervi", "clavi_l", "clavi_r", "ribcage_l", "ribcage_r", "lumbar")
"""The 7 ROIs in their fixed order: the whole chest first, then the 6 local boxes."""
LOCAL_NAMES: tuple[str, ...] = ROI_NAMES[1:]
"""The 6 local ROIs in the order of the local crop array (N, 6, roi, roi)."""
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


@dataclass
class RoiCrops:
    """The crops of one case (``chest`` (C, C), ``local`` (6, R, R)) or of a batch (a leading N axis).

    Numpy in, numpy out (float32); a torch image gives torch tensors on its device. Index by ROI name
    (``crops["clavi_r"]``), or unpack as ``chest, local = crops``.
    """

    chest: Array
    local: Array

    def __getitem__(self, name: str) -> Array:
        if name == "chest":
            return self.chest
        return self.local[..., LOCAL_NAMES.index(name), :, :]

    def __iter__(self) -> Iterator[Array]:
        return iter((self.chest, self.local))

    def as_dict(self) -> dict[str, Array]:
        """ROI name → crop, in ``ROI_NAMES`` order."""
        return {name: self[name] for name in ROI_NAMES}


def _theta(box: Box, height: int, width: int) -> np.ndarray:
    """The 2×3 ``affine_grid`` matrix: crop coordinates [-1, 1]² → the image's normalised coordinates.

    With ``align_corners=False`` pixel x lies at normalised ``(2x + 1)/W − 1``; x and y are normalised
    by W and H separately, which is what keeps boxes square on non-square images.
    """
    hw, hh = box.width / 2, box.height / 2
    return np.array([
        [2 * hw * box.u[0] / width, 2 * hh * box.v[0] / width, (2 * box.centre[0] + 1) / width - 1],
        [2 * hw * box.u[1] / height, 2 * hh * box.v[1] / height, (2 * box.centre[1] + 1) / height - 1],
    ])


def supersample_factor(boxes: Sequence[Box], size: int, max_supersample: int = 8) -> int:
    """Samples per output pixel side for area anti-aliasing: ``ceil(largest side / size)``, clipped."""
    f = max(max(b.width, b.height) for b in boxes) / size
    return int(min(max(1, math.ceil(f - 1e-9)), max_supersample))


def _sample(images: torch.Tensor, thetas: np.ndarray, size: int, k: int, padding: str) -> torch.Tensor:
    """One grid_sample for N images (N, 1, H, W) and K boxes each (thetas (N, K, 2, 3)) → (N, K, size, size)."""
    n, nb = thetas.shape[:2]
    m = size * k
    theta = torch.as_tensor(thetas.reshape(n * nb, 2, 3), dtype=images.dtype, device=images.device)
    grid = F.affine_grid(theta, [n * nb, 1, m, m], align_corners=False)
    # the K grids of an image stacked vertically: one sampling call covers all boxes of all images
    out = F.grid_sample(images, grid.reshape(n, nb * m, m, 2), mode="bilinear", padding_mode=padding,
                        align_corners=False)
    out = out.reshape(n * nb, 1, m, m)
    if k > 1:
        out = F.avg_pool2d(out, k)  # the k×k sub-samples of a pixel's footprint → their mean (area filter)
    return out.reshape(n, nb, size, size)


def _letterbox(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 1, H, W) → (N, size, size): zero-pad to a square, then an anti-aliased bilinear resize."""
    h, w = images.shape[-2:]
    side = max(h, w)
    left, top = (side - w) // 2, (side - h) // 2
    if (h, w) != (side, side):
        images = F.pad(images, (left, side - w - left, top, side - h - top))
    out = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out[:, 0]


def _as_batch(images: Array | Sequence[Array]) -> tuple[list[torch.Tensor], bool, torch.device | None]:
    """Images as a list of 2-D float32 tensors; whether the input was torch; its device."""
    if isinstance(images, torch.Tensor):
        batch = images[None] if images.ndim == 2 else images
        if batch.ndim != 3:
            raise ValueError(f"expected (H, W) or (N, H, W) images, got shape {tuple(images.shape)}")
        return list(batch.float()), True, images.device
    if isinstance(images, np.ndarray):
        batch = images[None] if images.ndim == 2 else images
        if batch.ndim != 3:
            raise ValueError(f"expected (H, W) or (N, H, W) images, got shape {images.shape}")
        return [torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)) for b in batch], False, None
    items = list(images)
    if any(isinstance(im, torch.Tensor) for im in items):
        device = next(im.device for im in items if isinstance(im, torch.Tensor))
        return [torch.as_tensor(im, dtype=torch.float32, device=device) for im in items], True, device
    return [torch.from_numpy(np.ascontiguousarray(im, dtype=np.float32)) for im in items], False, None


def crop_boxes(image: Array, boxes: Sequence[Box], size: int, *, padding: str = "zeros",
               max_supersample: int = 8) -> Array:
    """Crops (K, size, size) of one grey image (H, W) at any boxes, in one resampling call (area
    anti-aliased, see the module docstring). Numpy in → numpy float32 out; torch in → torch out."""
    ims, is_torch, _ = _as_batch(image)
    if len(ims) != 1:
        raise ValueError("crop_boxes takes one 2-D image")
    img = ims[0]
    thetas = np.stack([_theta(b, *img.shape) for b in boxes])[None]
    out = _sample(img[None, None], thetas, size, supersample_factor(boxes, size, max_supersample), padding)[0]
    return out if is_torch else out.numpy()


def crop_rois_batch(images: Array | Sequence[Array], landmarks: Array, roi_size: int, chest_size: int,
                    geometry: RoiGeometry | None = None, *, padding: str = "zeros", max_supersample: int = 8
                    ) -> RoiCrops:
    """The 7 crops of N cases: ``chest`` (N, chest_size, chest_size), ``local`` (N, 6, roi_size, roi_size).

    ``images``: an (N, H, W) array/tensor or a sequence of 2-D images (sizes may differ); ``landmarks``
    (N, 16, 2) in each image's pixels. Images of one size and one anti-aliasing factor share a single
    ``grid_sample`` call (all their local boxes at once) and a single resize for the chest.
    """
    ims, is_torch, device = _as_batch(images)
    pts = landmarks.detach().cpu().numpy() if isinstance(landmarks, torch.Tensor) else np.asarray(landmarks)
    if len(pts) != len(ims):
        raise ValueError(f"{len(ims)} images but {len(pts)} landmark sets")
    if padding not in ("zeros", "border"):
        raise ValueError(f"padding must be 'zeros' or 'border', got {padding!r}")
    n = len(ims)
    dev = device or torch.device("cpu")
    chest = torch.empty(n, chest_size, chest_size, device=dev)
    local = torch.empty(n, len(LOCAL_NAMES), roi_size, roi_size, device=dev)
    thetas, groups = [], {}
    for i, (img, p) in enumerate(zip(ims, pts, strict=True)):
        boxes = list(local_boxes(p, geometry).values())
        thetas.append(np.stack([_theta(b, *img.shape) for b in boxes]))
        key = (tuple(img.shape), supersample_factor(boxes, roi_size, max_supersample))
        groups.setdefault(key, []).append(i)
    for (_shape, k), idx in groups.items():
        stack = torch.stack([ims[i] for i in idx])[:, None]
        local[idx] = _sample(stack, np.stack([thetas[i] for i in idx]), roi_size, k, padding)
        chest[idx] = _letterbox(stack, chest_size)
    if is_torch:
        return RoiCrops(chest, local)
    return RoiCrops(chest.numpy(), local.numpy())


def crop_rois(image: Array, landmarks: Array, roi_size: int, chest_size: int,
              geometry: RoiGeometry | None = None, *, padding: str = "zeros", max_supersample: int = 8
              ) -> RoiCrops:
    """The 7 crops of one image (H, W) at its landmarks (16, 2): ``chest`` (chest_size²) and ``local``
    (6, roi_size²) in ``LOCAL_NAMES`` order. Numpy in → float32 numpy; torch in → torch (same device)."""
    if image.ndim != 2:
        raise ValueError(f"crop_rois takes one 2-D image, got shape {tuple(image.shape)}")
    out = crop_rois_batch(image, check_landmarks(landmarks)[None], roi_size, chest_size, geometry,
                          padding=padding, max_supersample=max_supersample)
    return RoiCrops(out.chest[0], out.local[0])


# -------------------------------------------------------------------------------------------- drawing

ROI_COLOURS: dict[str, str] = {
    "chest": "white", "cervi": "tab:green", "clavi_l": "tab:orange", "clavi_r": "tab:orange",
    "ribcage_l": "tab:cyan", "ribcage_r": "tab:cyan", "lumbar": "tab:red",
}
_LANDMARK_COLOURS = {"clav": "tab:orange", "rib": "tab:cyan", "cervical": "tab:green", "t12": "tab:red"}


def draw_rois(image: Array, landmarks: Array, ax=None, geometry: RoiGeometry | None = None,
              labels: bool = True, chest: bool = True):
    """Draw an image with its 16 landmarks and the ROI boxes; returns the Axes.

    Each box's top edge (the crop's first row) is drawn thicker and its top-left corner (the crop's
    first pixel) marked with a dot, so orientation and mirroring can be read off the drawing. The
    chest box is dashed (it differs from the image border only on non-square images).
    """
    from bmd.report import pyplot

    plt = pyplot()

    img = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    pts = check_landmarks(landmarks)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5 * img.shape[0] / img.shape[1]))
    ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    for name, box in roi_boxes(pts, img.shape, geometry).items():
        if name == "chest" and not chest:
            continue
        colour = ROI_COLOURS[name]
        c = box.corners()
        style = "--" if name == "chest" else "-"
        ax.plot(*np.vstack([c, c[:1]]).T, style, color=colour, lw=1)
        if name != "chest":
            ax.plot(*c[:2].T, color=colour, lw=2.5)
            ax.plot(*c[0], "o", color=colour, ms=3)
            if labels:
                ax.annotate(name, box.centre, color=colour, fontsize=9, ha="center", va="center")
    for prefix, colour in _LANDMARK_COLOURS.items():
        idx = [i for i, n in enumerate(LANDMARK_NAMES) if n.startswith(prefix)]
        ax.scatter(pts[idx, 0], pts[idx, 1], s=10, c=colour, edgecolors="k", linewidths=0.3, zorder=3)
    ax.set_xlim(-0.5, img.shape[1] - 0.5)
    ax.set_ylim(img.shape[0] - 0.5, -0.5)
    ax.set_axis_off()
    return ax


def draw_roi_gallery(crops: RoiCrops | Mapping[str, Array] | Array, local: Array | None = None,
                     title: str | None = None):
    """The 7 crops of one case side by side (``ROI_NAMES`` order); returns the Figure.

    ``crops``: a :class:`RoiCrops` of one case, a mapping ROI name → crop (e.g. ``RoiCache.crops(i)``),
    or the chest crop with the 6 local crops given as ``local``.
    """
    from bmd.report import pyplot

    plt = pyplot()

    if isinstance(crops, RoiCrops):
        named = crops.as_dict()
    elif isinstance(crops, Mapping):
        named = dict(crops)
    else:
        if local is None:
            raise ValueError("give the 6 local crops as `local` with a chest crop")
        named = RoiCrops(crops, local).as_dict()
    fig, axes = plt.subplots(1, len(ROI_NAMES), figsize=(2 * len(ROI_NAMES), 2.4))
    for ax, name in zip(axes, ROI_NAMES, strict=True):
        crop = named[name]
        crop = crop.detach().cpu().numpy() if isinstance(crop, torch.Tensor) else np.asarray(crop, dtype=np.float32)
        if crop.dtype == np.uint8:
            crop = crop / 255.0
        ax.imshow(crop, cmap="gray", vmin=0, vmax=1)
        ax.set_title(name + (" (mirrored)" if name in MIRRORED else ""), fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
