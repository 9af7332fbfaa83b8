"""Draw ROI boxes and landmarks on a radiograph, and galleries of crops (matplotlib on first use)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from bmd.columns import LANDMARK_NAMES, ROI_NAMES
from bmd.infra.plotting import pyplot
from bmd.rois.crop import RoiCrops
from bmd.rois.geometry import MIRRORED, Array, RoiGeometry, check_landmarks, roi_boxes

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
