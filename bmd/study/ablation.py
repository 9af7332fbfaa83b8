"""What each region contributes to a multi-ROI model: test-time ablation and the joint head's weights.

Ablation replaces one region's crop, for every test case, by that region's mean training crop (an
uninformative but in-distribution input) and measures how much the joint prediction's R drops; it
works for the paper's multi-ROI model and for the attention model alike. The joint head's weight norm
per region (multi-ROI model only) is a second, training-free view. Neither retrains anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bmd.columns import BMD_COLUMNS, ROI_NAMES, VERTEBRAE
from bmd.evaluation.metrics import pearson_r
from bmd.model.networks import MULTI_ROI_KINDS
from bmd.model.train import TrainConfig, build_model, run_scaler


def load_run_model(run: str | Path) -> tuple[torch.nn.Module, dict]:
    """A training run's best model (eval mode, CPU) and its config dict."""

    run = Path(run)
    config = TrainConfig.load(run / "config.json")
    model = build_model(config)
    state = torch.load(run / "best.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    return model.eval(), json.loads((run / "config.json").read_text())


@torch.no_grad()
def _features(model, chest: np.ndarray, local: np.ndarray, batch: int = 64) -> torch.Tensor:
    """The model's per-region features (N, 7, D), in batches."""
    outs = []
    for i in range(0, len(chest), batch):
        c = torch.as_tensor(np.asarray(chest[i:i + batch], dtype=np.float32))[:, None]
        loc = torch.as_tensor(np.asarray(local[i:i + batch], dtype=np.float32))[:, :, None]
        outs.append(model.features(c, loc))
    return torch.cat(outs)


def _as_unit(a: np.ndarray) -> np.ndarray:
    """Cache arrays as float32 in [0, 1] (the cache may store uint8)."""
    return np.asarray(a, dtype=np.float32) / (255.0 if a.dtype == np.uint8 else 1.0)


def roi_ablation(run: str | Path, cache, manifest: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """R of the joint prediction with each region replaced by its mean training crop.

    ``cache`` is a :class:`bmd.rois.cache.RoiCache` (the one the run trained on) and ``manifest`` the
    study manifest; the run is a ``multi_roi`` or an ``attention`` run. Returns one row per region (and
    ``none`` for the intact model): ``roi, r, delta_r`` where ``r`` is the mean over L1–L4 on ``split``
    and ``delta_r`` the drop from the intact model.
    """
    return _study(run, cache, manifest, split)[0]


@dataclass
class AttentionStudy:
    """What an attention run attends to on a split, and what each region costs it when ablated."""

    case_ids: list[str]  # the split's cases, in cache order
    weights: np.ndarray  # (N, 4, 7): each vertebra's readout attention over the ROIs (last layer)
    ablation: pd.DataFrame  # :func:`roi_ablation` of the same run

    def mean(self) -> pd.DataFrame:
        """Mean attention over the cases: vertebrae (rows) × ROIs (columns); rows sum to 1."""
        return pd.DataFrame(self.weights.mean(axis=0), index=list(VERTEBRAE), columns=list(ROI_NAMES))


def attention_study(run: str | Path, cache, manifest: pd.DataFrame, split: str = "test") -> AttentionStudy:
    """The readout attention of an ``attention`` run on every case of ``split`` and its ROI ablation,
    from one pass of the split's crops through the backbone (both read the same features)."""
    ablation, model, feats, case_ids = _study(run, cache, manifest, split, need="attention")
    with torch.no_grad():
        weights = torch.cat([model.attention_from_features(feats[i:i + 256]) for i in range(0, len(feats), 256)])
    return AttentionStudy(case_ids, weights.numpy(), ablation)


def _study(run: str | Path, cache, manifest: pd.DataFrame, split: str, need: str | None = None):
    """The ablation table, the model, the split's features and its case ids (see :func:`roi_ablation`)."""
    model, config = load_run_model(run)
    kinds = (need,) if need else MULTI_ROI_KINDS
    if config["model"] not in kinds:
        what = f"an {need}" if need else "a multi-ROI"
        raise ValueError(f"{run}: ablation needs {what} run, not a {config['model']} model")
    info = manifest.set_index("case_id").loc[list(cache.case_ids)]
    splits = info["split"].to_numpy()
    rows, train = np.flatnonzero(splits == split), np.flatnonzero(splits == "train")
    chest, local = _as_unit(np.asarray(cache.chest)[rows]), _as_unit(np.asarray(cache.local)[rows])
    mean_chest = _as_unit(np.asarray(cache.chest)[train]).mean(axis=0)
    mean_local = _as_unit(np.asarray(cache.local)[train]).mean(axis=0)
    truth = info[list(BMD_COLUMNS)].to_numpy(float)[rows]
    scaler = run_scaler(run)  # the scaling the run trained with

    def score(feats: torch.Tensor) -> float:
        with torch.no_grad():
            pred = scaler.inverse(model.joint_from_features(feats).numpy())
        rs = [pearson_r(pred[:, j], truth[:, j]) for j in range(len(VERTEBRAE))]
        # a prediction made constant by the ablation carries no information: R 0, not undefined
        return float(np.mean([0.0 if not np.isfinite(r) else r for r in rs]))

    # In eval mode a crop's features do not depend on the other crops, and only the joint head (or the
    # attention) mixes regions: so the test crops go through the backbone once, the mean crops once, and
    # each ablation swaps one region's block of features (8x less work than a forward pass per region).
    feats = _features(model, chest, local)
    mean_feats = _features(model, mean_chest[None], mean_local[None])[0]
    intact = score(feats)
    out = [{"roi": "none", "r": intact, "delta_r": 0.0}]
    for k, name in enumerate(ROI_NAMES):
        ablated = feats.clone()
        ablated[:, k] = mean_feats[k]
        r = score(ablated)
        out.append({"roi": name, "r": r, "delta_r": intact - r})
    return pd.DataFrame(out), model, feats, [cache.case_ids[i] for i in rows]


def joint_weight_norms(run: str | Path) -> pd.DataFrame:
    """The joint head's weight norm over each region's block of features (share of the total)."""
    model, config = load_run_model(run)
    if config["model"] != "multi_roi":
        raise ValueError(f"{run}: weight norms need a multi-ROI run, not a {config['model']} model")
    weight = model.joint_head.weight.detach().numpy()  # (4, 7·D)
    blocks = weight.reshape(weight.shape[0], len(ROI_NAMES), -1)
    norms = np.sqrt((blocks**2).sum(axis=(0, 2)))
    return pd.DataFrame({"roi": list(ROI_NAMES), "weight_norm": norms, "share": norms / norms.sum()})
