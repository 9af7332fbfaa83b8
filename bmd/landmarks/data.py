"""Image preprocessing, landmark cohorts and augmentation for the landmark detector.

Coordinate conventions
----------------------
* **Original pixels** (what files and the rest of the project use): ``x`` right, ``y`` down, pixel *centres*
  at integers (pixel ``(0, 0)`` covers ``[-0.5, 0.5)²``).
* **Letterbox**: the image is resized, keeping its aspect ratio, so that its longer side is ``size``, then
  centred on a black ``size``×``size`` square (the short side is padded equally on both sides, the odd pixel
  going to the bottom/right). Resizing is bilinear with antialiasing, so a large radiograph is averaged down
  rather than aliased. :class:`Letterbox` records the per-axis scale and the padding.
* **Input pixels** (continuous, torchvision's key-point convention): the letterboxed square spans
  ``[0, size]``; a point at original ``x`` is at ``(x + 0.5)·scale_x + pad_x``.
* **Normalised** (inside the network, ``grid_sample`` with ``align_corners=False``): ``u = 2·input/size − 1``,
  so the square spans ``[-1, 1]``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from bmd.columns import COORD_COLUMNS, LANDMARK_NAMES, N_LANDMARKS
from bmd.inputs.manifest import load_manifest
from bmd.io import read_image
from bmd.landmarks.annotations import manifest_landmarks


def _mirror_name(name: str) -> str:
    """The name of the point on the other side of the body (``clav_l_mid`` ↔ ``clav_r_mid``)."""
    for a, b in (("_l_", "_r_"), ("_r_", "_l_")):
        if a in name:
            return name.replace(a, b)
    return name  # midline points (cervical, t12) stay


FLIP_PERMUTATION: tuple[int, ...] = tuple(LANDMARK_NAMES.index(_mirror_name(n)) for n in LANDMARK_NAMES)
"""``points[FLIP_PERMUTATION]`` renames left points as right and vice versa after a horizontal flip."""


@dataclass(frozen=True)
class Letterbox:
    """How one original image maps into the square network input (see the module docstring)."""

    height: int
    width: int
    size: int

    @property
    def resized(self) -> tuple[int, int]:
        """(rows, cols) of the image inside the square, before padding."""
        scale = self.size / max(self.height, self.width)
        return (
            max(1, min(self.size, round(self.height * scale))),
            max(1, min(self.size, round(self.width * scale))),
        )

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) scale from original to input pixels (exact per axis, after rounding the resized size)."""
        rows, cols = self.resized
        return cols / self.width, rows / self.height

    @property
    def pad(self) -> tuple[int, int]:
        """(x, y) padding on the left and top, in input pixels."""
        rows, cols = self.resized
        return (self.size - cols) // 2, (self.size - rows) // 2

    def to_input(self, points: np.ndarray) -> np.ndarray:
        """Original pixel coordinates (..., 2) → continuous input pixels."""
        (sx, sy), (px, py) = self.scale, self.pad
        p = np.asarray(points, dtype=np.float64)
        return np.stack([(p[..., 0] + 0.5) * sx + px, (p[..., 1] + 0.5) * sy + py], axis=-1)

    def from_input(self, points: np.ndarray) -> np.ndarray:
        """Continuous input pixels (..., 2) → original pixel coordinates."""
        (sx, sy), (px, py) = self.scale, self.pad
        p = np.asarray(points, dtype=np.float64)
        return np.stack([(p[..., 0] - px) / sx - 0.5, (p[..., 1] - py) / sy - 0.5], axis=-1)

    def to_normalised(self, points: np.ndarray) -> np.ndarray:
        """Original pixel coordinates → normalised [-1, 1] network coordinates."""
        return self.to_input(points) * (2.0 / self.size) - 1.0

    def from_normalised(self, points: np.ndarray) -> np.ndarray:
        """Normalised network coordinates → original pixel coordinates."""
        return self.from_input((np.asarray(points, dtype=np.float64) + 1.0) * (self.size / 2.0))


def letterbox_image(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Resize a 2-D float image (aspect kept, bilinear + antialias) and centre it on a black square."""
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {image.shape}")
    box = Letterbox(int(image.shape[0]), int(image.shape[1]), int(size))
    rows, cols = box.resized
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    small = F.interpolate(t, size=(rows, cols), mode="bilinear", align_corners=False, antialias=True)[0, 0]
    out = np.zeros((size, size), dtype=np.float32)
    px, py = box.pad
    out[py : py + rows, px : px + cols] = small.clamp(0, 1).numpy()
    return out, box


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float → uint8 (8 bits are plenty for landmark detection and keep a cohort cache small)."""
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


@dataclass
class LandmarkCohort:
    """Letterboxed images of one or more manifest splits, with their ground-truth landmarks.

    ``images``: (N, S, S) uint8; ``boxes``: the letterbox of each image; ``points``: (N, 16, 2) original
    pixel coordinates (NaN where a case has no landmarks).
    """

    case_ids: list[str]
    image_paths: list[str]
    images: np.ndarray
    boxes: list[Letterbox]
    points: np.ndarray

    def __len__(self) -> int:
        return len(self.case_ids)

    @property
    def widths(self) -> np.ndarray:
        """Original image widths (the denominator of error percentages)."""
        return np.array([b.width for b in self.boxes], dtype=np.float64)

    def normalised_points(self) -> np.ndarray:
        """(N, 16, 2) ground truth in normalised network coordinates."""
        return (
            np.stack([b.to_normalised(p) for b, p in zip(self.boxes, self.points, strict=True)])
            if len(self)
            else np.zeros((0, N_LANDMARKS, 2))
        )


def landmarks_for_manifest(df: pd.DataFrame) -> np.ndarray:
    """(N, 16, 2) ground-truth points of manifest rows, in row order; NaN where a row has none.

    The points come from the one reader of a manifest's landmark files,
    :func:`bmd.landmarks.annotations.manifest_landmarks` (matched by ``case_id``, else by ``image``).
    """
    out = np.full((len(df), N_LANDMARKS, 2), np.nan)
    table = manifest_landmarks(df)
    if table is None:
        return out
    where = {c: i for i, c in enumerate(table["case_id"])}
    coords = table[list(COORD_COLUMNS)].to_numpy(dtype=np.float64).reshape(-1, N_LANDMARKS, 2)
    for row, case_id in enumerate(df["case_id"].astype(str)):
        if case_id in where:
            out[row] = coords[where[case_id]]
    return out


def load_landmark_cohort(
    manifest: str | os.PathLike | pd.DataFrame,
    splits: Sequence[str] | None,
    input_size: int,
    progress: bool = False,
    require_points: bool = True,
) -> LandmarkCohort:
    """Read and letterbox the images of the given manifest splits (all rows when ``splits`` is None)."""

    df = manifest if isinstance(manifest, pd.DataFrame) else load_manifest(manifest)
    if splits is not None:
        if "split" not in df.columns:
            raise ValueError("the manifest has no split column; the detector trains on the train split only")
        df = df[df["split"].isin(list(splits))]
    df = df.reset_index(drop=True)
    points = landmarks_for_manifest(df)
    if require_points:
        missing = df["case_id"][np.isnan(points).any(axis=(1, 2))].tolist()
        if missing:
            shown = ", ".join(map(str, missing[:5])) + (
                f" … ({len(missing)} cases)" if len(missing) > 5 else ""
            )
            raise ValueError(f"no ground-truth landmarks for case(s) {shown}")
    images = np.zeros((len(df), input_size, input_size), dtype=np.uint8)
    boxes: list[Letterbox] = []
    rows = range(len(df))
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, desc=f"read {'+'.join(splits) if splits else 'images'}", unit="img", leave=False)
    for i in rows:
        image, _meta = read_image(df.at[i, "image_path"])
        boxed, box = letterbox_image(image, input_size)
        images[i] = to_uint8(boxed)
        boxes.append(box)
    return LandmarkCohort(
        df["case_id"].astype(str).tolist(), df["image_path"].tolist(), images, boxes, points
    )


# --------------------------------------------------------------------------------------------- augmentation


class RandomHorizontalFlipLR(v2.Transform):
    """Horizontal flip that also swaps left and right landmark names.

    torchvision mirrors key-point coordinates but cannot know that the patient's left clavicle, once on
    the other side of the image, must be called the right one; here the last-but-one axis of every
    :class:`~torchvision.tv_tensors.KeyPoints` (the 16 landmarks) is permuted with :data:`FLIP_PERMUTATION`.
    Key points are continuous coordinates (the image spans ``[0, W]``), mirrored as ``x → W − x``.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = float(p)

    def make_params(self, flat_inputs: list) -> dict:
        return {"flip": bool(torch.rand(()) < self.p)}

    def transform(self, inpt, params: dict):
        if not params["flip"]:
            return inpt
        if isinstance(inpt, tv_tensors.KeyPoints):
            if inpt.shape[-2] != N_LANDMARKS:
                raise ValueError(
                    f"expected {N_LANDMARKS} key points on axis -2, got shape {tuple(inpt.shape)}"
                )
            # torchvision 0.29 flips key points as W-1-x (pixel-index convention) although its affine
            # kernels treat them as continuous (rotation about W/2); the continuous W-x keeps both consistent
            flipped = inpt.as_subclass(torch.Tensor).clone()
            flipped[..., 0] = inpt.canvas_size[1] - flipped[..., 0]
            return tv_tensors.wrap(flipped[..., list(FLIP_PERMUTATION), :], like=inpt)
        return self._call_kernel(TF.horizontal_flip, inpt)


def flip_points(points: np.ndarray, width: float) -> np.ndarray:
    """Mirror (..., 16, 2) *continuous* coordinates in an image of ``width`` and swap left/right names."""
    p = np.array(points, dtype=np.float64, copy=True)
    p[..., 0] = width - p[..., 0]
    return p[..., list(FLIP_PERMUTATION), :]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation parameters (geometry moves the points with the image; intensity does not move them)."""

    degrees: float = 10.0
    translate: float = 0.06
    scale: tuple[float, float] = (0.9, 1.1)
    flip_p: float = 0.0
    gamma: tuple[float, float] = (0.7, 1.4)
    brightness: float = 0.15
    contrast: float = 0.25
    noise_sigma: float = 0.02
    blur_p: float = 0.25


class LandmarkAugment:
    """Random flip (with left/right swap), affine (scale, rotation, translation) and intensity jitter.

    Works on one image (1, S, S) in [0, 1] and its points (16, 2) in continuous input pixels, through
    torchvision.transforms.v2 with :class:`~torchvision.tv_tensors.KeyPoints`, so the points follow exactly
    the geometry the image underwent. Randomness comes from torch's global generator (seeded by training).
    """

    def __init__(self, config: AugmentConfig | None = None):
        c = config or AugmentConfig()
        self.config = c
        self.geometry = v2.Compose(
            [
                RandomHorizontalFlipLR(c.flip_p),
                v2.RandomAffine(
                    degrees=c.degrees,
                    translate=(c.translate, c.translate),
                    scale=c.scale,
                    interpolation=v2.InterpolationMode.BILINEAR,
                    fill=0.0,
                ),
            ]
        )
        self.intensity = v2.Compose(
            [
                v2.ColorJitter(brightness=c.brightness, contrast=c.contrast),
                v2.RandomApply([v2.GaussianBlur(5, sigma=(0.3, 1.2))], p=c.blur_p),
            ]
        )

    def __call__(self, image: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = tuple(image.shape[-2:])
        img = tv_tensors.Image(image)
        kp = tv_tensors.KeyPoints(points, canvas_size=size)
        img, kp = self.geometry(img, kp)
        c = self.config
        lo, hi = math.log(c.gamma[0]), math.log(c.gamma[1])
        gamma = math.exp(lo + (hi - lo) * float(torch.rand(())))
        out = self.intensity(img.clamp(0, 1) ** gamma)
        if c.noise_sigma > 0:
            out = out + c.noise_sigma * float(torch.rand(())) * torch.randn_like(out)
        return out.as_subclass(torch.Tensor).clamp(0, 1), kp.as_subclass(torch.Tensor)


class LandmarkDataset(Dataset):
    """Letterboxed uint8 images + normalised targets → (image (1, S, S) float, target (16, 2) normalised)."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, augment: LandmarkAugment | None = None):
        self.images = images
        self.targets = np.asarray(targets, dtype=np.float32)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(self.images[i]).float().div_(255.0)[None]
        target = torch.from_numpy(self.targets[i])
        if self.augment is not None:
            size = image.shape[-1]
            pix = (target + 1.0) * (size / 2.0)
            image, pix = self.augment(image, pix)
            target = pix * (2.0 / size) - 1.0
        return image, target.float()
