"""Training data: ROI arrays joined to DXA targets, target scaling and per-crop augmentation.

The ROI cache gives, per case, the whole chest (Hc × Wc) and six local crops (6 × H × W) in a fixed
order (cervi, clavi_l, clavi_r, ribcage_l, ribcage_r, lumbar), already oriented (right-side crops
mirrored into the left orientation). Training never decodes an image: it indexes these arrays.
Augmentation (scaling, rotation, translation, horizontal flip) is applied to every crop separately
*after* extraction, so a flip never swaps left and right anatomy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

LOCAL_ROIS: tuple[str, ...] = ("cervi", "clavi_l", "clavi_r", "ribcage_l", "ribcage_r", "lumbar")
#: ROI family → indices into the local crops (the chest family uses the chest array instead)
FAMILY_LOCAL_INDEX: dict[str, tuple[int, ...]] = {"cervi": (0,), "clavi": (1, 2), "ribcage": (3, 4), "lumbar": (5,)}
FAMILIES: tuple[str, ...] = ("chest", "cervi", "clavi", "ribcage", "lumbar")


@dataclass
class TargetScaler:
    """Per-vertebra standardisation of BMD with training-split statistics (NaN-aware)."""

    mean: np.ndarray  # (4,)
    std: np.ndarray  # (4,)

    @classmethod
    def fit(cls, bmd: np.ndarray) -> TargetScaler:
        """Fit on training BMD (N, 4); excluded vertebrae (NaN) are ignored."""
        return cls(mean=np.nanmean(bmd, axis=0), std=np.nanstd(bmd, axis=0))

    def transform(self, bmd: np.ndarray) -> np.ndarray:
        """g/cm² → standardised units."""
        return (bmd - self.mean) / self.std

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """Standardised units → g/cm²."""
        return z * self.std + self.mean

    def to_dict(self) -> dict:
        """JSON-able form (stored in checkpoints and model bundles)."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> TargetScaler:
        """Inverse of :meth:`to_dict`."""
        return cls(mean=np.asarray(d["mean"], float), std=np.asarray(d["std"], float))


def as_float(a: np.ndarray) -> Tensor:
    t = torch.from_numpy(np.array(a, copy=True))  # memory-mapped cache rows are read-only
    return t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()


class RoiDataset(Dataset):
    """Cases of one split: ``(chest (1,Hc,Wc), local (6,1,H,W), target (4,), index)``.

    ``chest`` and ``local`` are the cache arrays (uint8 or float, memory-mapped is fine); ``rows``
    selects the cases of the split; ``targets`` are standardised BMD (NaN = excluded vertebra).
    """

    def __init__(self, chest: np.ndarray, local: np.ndarray, targets: np.ndarray, rows: np.ndarray):
        self.chest, self.local, self.targets, self.rows = chest, local, targets, np.asarray(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        r = int(self.rows[i])
        return (as_float(self.chest[r])[None], as_float(self.local[r])[:, None],
                torch.as_tensor(self.targets[r], dtype=torch.float32), r)


@dataclass(frozen=True)
class Augment:
    """Per-crop random geometry and flip, drawn independently for every crop.

    ``geometry="exact"`` (the default) moves pixels without resampling them: a horizontal flip and a
    translation by whole pixels (the border repeated), so a training crop has exactly the sharpness of
    an evaluation crop. ``geometry="affine"`` adds the paper's random scaling and rotation through a
    bilinear warp; that warp blurs fine texture in every training crop while evaluation crops are never
    warped, and a model then reads the sharper test crops as denser bone (measured on the twin: mean
    bias +0.09 to +0.15 g/cm², 0.6–1 SD of BMD). The crops' position, scale and angle vary anyway, since
    training crops are cut at landmarks jittered like the detector's error.
    """

    scale: float = 0.10  # ± relative (affine only)
    rotation_deg: float = 10.0  # ± (affine only)
    translation: float = 0.06  # ± fraction of the crop side
    flip: bool = True
    geometry: str = "exact"  # exact | affine

    def __post_init__(self) -> None:
        if self.geometry not in ("exact", "affine"):
            raise ValueError(f"augmentation geometry must be 'exact' or 'affine', got {self.geometry!r}")

    def __call__(self, crops: Tensor, generator: torch.Generator) -> Tensor:
        """Augment a batch of crops (N, 1, H, W), each crop with its own draw."""
        return self.apply(crops, self.draw(crops.shape[0], generator))

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """The random draws (n, 5) for ``n`` crops: uniform in [-1, 1)."""
        return torch.rand(n, 5, generator=generator) * 2 - 1

    def apply(self, crops: Tensor, u: Tensor) -> Tensor:
        """Move crops (N, 1, H, W) by draws ``u`` (N, 5): one ``affine_grid``/``grid_sample`` for the batch."""
        h, w = crops.shape[-2:]
        flip = torch.where((u[:, 4] > 0) & self.flip, -1.0, 1.0)
        tx, ty = self.translation * 2 * u[:, 2], self.translation * 2 * u[:, 3]
        if self.geometry == "exact":
            # whole-pixel shifts (a pixel is 2/W in normalised units): the sampler then reads pixel
            # centres exactly and bilinear weights are 0 or 1, so nothing is interpolated
            tx, ty = torch.round(tx * w / 2) * 2 / w, torch.round(ty * h / 2) * 2 / h
            cos, sin = torch.ones_like(tx), torch.zeros_like(tx)
        else:
            scale = 1 + self.scale * u[:, 0]
            angle = math.radians(self.rotation_deg) * u[:, 1]
            cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, list(crops.shape), align_corners=False)
        return F.grid_sample(crops, grid, mode="bilinear", padding_mode="border", align_corners=False)


def select_family(chest: Tensor, local: Tensor, family: str) -> Tensor:
    """The crops of one ROI family as (B, K, 1, H, W): the chest (K=1) or its local crops."""
    if family == "chest":
        return chest.unsqueeze(1)
    return local[:, list(FAMILY_LOCAL_INDEX[family])]
