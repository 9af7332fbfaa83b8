"""Cut the 7 ROIs out of images, one batched resampling call per batch.

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

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bmd.columns import LOCAL_NAMES, ROI_NAMES
from bmd.rois.geometry import Array, Box, RoiGeometry, check_landmarks, local_boxes


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
