"""The 7 regions of interest: geometry from the 16 landmarks, batched crops, drawing.

Geometry (pixel coordinates of the original image, x right, y down; ``s`` = cervical–T12 distance,
the body-size scale; ``a`` = unit vector from cervical to T12, "down the spine"):

* every box is a **square** with centre ``c``, half side ``h`` and two unit axes: ``u`` (the crop's
  x axis) and ``v`` (its y axis, pointing "down" the anatomy), so all crops share one orientation
  convention and one aspect ratio;
* ``cervi``: centred 0.05 s below the cervical point along ``a``; h = 0.12 s; v = a;
* ``lumbar`` (the paper's name for the T12 region): centred on T12; h = 0.12 s; v = a;
* ``clavi_l`` / ``clavi_r``: u runs from the medial to the lateral end (length L); v ⟂ u, pointing
  down; centred 0.1 L below the midpoint of the two ends (the clavicle sits in the upper half, the
  box reaches less above the shoulders); h = 0.5 L;
* ``ribcage_l`` / ``ribcage_r``: v runs from rib 1 to rib 4 (the principal direction of the 4 margin
  points, span S between rib 1 and rib 4); u ⟂ v, pointing laterally; centred on the points' mean
  moved 0.35 S medially (so the margin lies near the lateral edge); h = 0.5 S;
* right-side boxes have a left-handed frame (u still points laterally, i.e. to the image left), so
  their crops come out **mirrored into the left-side orientation**: medial on the crop's left,
  lateral on its right for both clavicles and both rib cages;
* ``chest``: the whole image, letter-boxed (centred, zero-padded) to a square so it is not distorted
  on non-square radiographs.

Crops are one batched affine resampling (``affine_grid`` + ``grid_sample``, bilinear,
``align_corners=False``, zeros outside the image). When a box is larger than its output, the image is
first area-averaged by the integer factor ⌊box side / output side⌋, so fine texture is averaged, not
aliased.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bmd.landmarks.points import LANDMARK_NAMES

GEOMETRY_VERSION = "rois-v1"
ROI_NAMES: tuple[str, ...] = ("chest", "cervi", "clavi_l", "clavi_r", "ribcage_l", "ribcage_r", "lumbar")
LOCAL_NAMES: tuple[str, ...] = ROI_NAMES[1:]
ROI_FAMILIES: dict[str, tuple[str, ...]] = {
    "chest": ("chest",), "cervi": ("cervi",), "clavi": ("clavi_l", "clavi_r"),
    "ribcage": ("ribcage_l", "ribcage_r"), "lumbar": ("lumbar",),
}
_I = {n: i for i, n in enumerate(LANDMARK_NAMES)}


@dataclass(frozen=True)
class Box:
    """A square ROI: centre (x, y), half side, crop x axis ``u`` and y axis ``v`` (unit vectors)."""

    centre: np.ndarray
    half: float
    u: np.ndarray
    v: np.ndarray

    def corners(self) -> np.ndarray:
        """The 4 corners (4, 2) in crop order: top-left, top-right, bottom-right, bottom-left."""
        c, h = self.centre, self.half
        return np.array([c - h * self.u - h * self.v, c + h * self.u - h * self.v,
                         c + h * self.u + h * self.v, c - h * self.u + h * self.v])


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.hypot(*v))
    if n < 1e-6:
        raise ValueError("degenerate landmarks: two defining points coincide")
    return v / n


def roi_boxes(points: np.ndarray, image_shape: tuple[int, int]) -> dict[str, Box]:
    """The 7 boxes of one image from its 16 landmarks (16, 2)."""
    p = np.asarray(points, dtype=float)
    if p.shape != (16, 2) or not np.isfinite(p).all():
        raise ValueError("need 16 finite landmarks")
    cerv, t12 = p[_I["cervical"]], p[_I["t12"]]
    s = float(np.hypot(*(t12 - cerv)))
    a = _unit(t12 - cerv)
    right = np.array([a[1], -a[0]])  # the spine's perpendicular towards the image right (patient left)
    boxes = {
        "cervi": Box(cerv + 0.05 * s * a, 0.12 * s, right, a),
        "lumbar": Box(t12, 0.12 * s, right, a),
    }
    for side, lateral_sign in (("l", 1.0), ("r", -1.0)):
        med, lat = p[_I[f"clav_{side}_medial"]], p[_I[f"clav_{side}_lateral"]]
        u = _unit(lat - med)
        # left: a right-handed frame (v = u turned +90°); right: mirrored (v = u turned −90°)
        v = np.array([-u[1], u[0]]) if lateral_sign > 0 else np.array([u[1], -u[0]])
        if v @ a < 0:
            v = -v
        length = float(np.hypot(*(lat - med)))
        boxes[f"clavi_{side}"] = Box((med + lat) / 2 + 0.1 * length * v, 0.5 * length, u, v)
        ribs = p[[_I[f"rib_{side}_{k}"] for k in range(1, 5)]]
        mean = ribs.mean(axis=0)
        centred = ribs - mean
        direction = _unit(np.linalg.svd(centred, full_matrices=False)[2][0])
        v = direction if direction @ a > 0 else -direction
        u = lateral_sign * np.array([v[1], -v[0]])  # lateral: image right for the left side
        span = float(np.hypot(*(ribs[-1] - ribs[0])))
        boxes[f"ribcage_{side}"] = Box(mean - 0.35 * span * u, 0.5 * span, u, v)
    h, w = image_shape
    boxes["chest"] = Box(np.array([(w - 1) / 2, (h - 1) / 2]), max(h, w) / 2, np.array([1.0, 0.0]),
                         np.array([0.0, 1.0]))
    return {name: boxes[name] for name in ROI_NAMES}


def _theta(box: Box, shape: tuple[int, int], k: int) -> np.ndarray:
    """affine_grid matrix mapping crop coordinates [-1, 1]² to the (k-pooled) image's normalised coordinates."""
    h, w = shape
    cx, cy = (box.centre + 0.5) / k - 0.5  # pixel centre convention in the pooled image
    half = box.half / k
    return np.array([[2 * half * box.u[0] / w, 2 * half * box.v[0] / w, (2 * cx + 1) / w - 1],
                     [2 * half * box.u[1] / h, 2 * half * box.v[1] / h, (2 * cy + 1) / h - 1]])


def crop_boxes(image: np.ndarray | torch.Tensor, boxes: list[Box], size: int) -> torch.Tensor:
    """Crops (len(boxes), size, size) of a grey image (H, W), anti-aliased by integer area pooling."""
    img = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None]
    out = torch.empty(len(boxes), size, size)
    groups: dict[int, list[int]] = {}
    for i, box in enumerate(boxes):
        groups.setdefault(max(1, int(2 * box.half / size)), []).append(i)
    for k, idx in groups.items():
        src = F.avg_pool2d(img, k, ceil_mode=True) if k > 1 else img
        theta = torch.tensor(np.stack([_theta(boxes[i], tuple(src.shape[-2:]), k) for i in idx]),
                             dtype=torch.float32)
        grid = F.affine_grid(theta, [len(idx), 1, size, size], align_corners=False)
        out[idx] = F.grid_sample(src.expand(len(idx), -1, -1, -1), grid, mode="bilinear", padding_mode="zeros",
                                 align_corners=False)[:, 0]
    return out


def crop_rois(image: np.ndarray, points: np.ndarray, roi_size: int, chest_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The chest (chest_size²) and the 6 local crops (6, roi_size²) of one image, float32 in [0, 1]."""
    boxes = roi_boxes(points, image.shape)
    chest = crop_boxes(image, [boxes["chest"]], chest_size)[0]
    local = crop_boxes(image, [boxes[n] for n in LOCAL_NAMES], roi_size)
    return chest.numpy(), local.numpy()


# -------------------------------------------------------------------------------------------- drawing

_COLOURS = {"cervi": "tab:green", "clavi_l": "tab:orange", "clavi_r": "tab:orange", "ribcage_l": "tab:cyan",
            "ribcage_r": "tab:cyan", "lumbar": "tab:red"}


def draw_rois(image: np.ndarray, points: np.ndarray, ax=None):
    """Landmarks and the 6 local ROI boxes over an image (the top edge of each box drawn thicker)."""
    import matplotlib.pyplot as plt

    from bmd.twin.gallery import draw_landmarks

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    for name, box in roi_boxes(points, image.shape).items():
        if name == "chest":
            continue
        c = box.corners()
        ax.plot(*np.vstack([c, c[:1]]).T, color=_COLOURS[name], lw=1)
        ax.plot(*c[:2].T, color=_COLOURS[name], lw=2.5)
    draw_landmarks(ax, np.asarray(points), size=10)
    ax.set_axis_off()
    return ax


def draw_roi_gallery(chest: np.ndarray, local: np.ndarray, title: str | None = None):
    """The 7 crops of one case side by side; returns the Figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 7, figsize=(14, 2.4))
    for ax, name, crop in zip(axes, ROI_NAMES, [chest, *local], strict=True):
        ax.imshow(crop, cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
