"""What each region contributes to the multi-ROI model: test-time ablation and the joint head's weights.

Ablation replaces one region's crop, for every test case, by that region's mean training crop (an
uninformative but in-distribution input) and measures how much the joint prediction's R drops. The
joint head's weight norm per region is a second, training-free view. Neither retrains anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bmd import VERTEBRAE
from bmd.data import BMD_COLUMNS, TargetScaler
from bmd.metrics import pearson_r
from bmd.rois import ROI_NAMES


def load_run_model(run: str | Path) -> tuple[torch.nn.Module, dict]:
    """A training run's best model (eval mode, CPU) and its config dict."""
    from bmd.train import TrainConfig, build_model

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

    ``cache`` is a :class:`bmd.roi_cache.RoiCache` (the one the run trained on) and ``manifest`` the
    study manifest. Returns one row per region (and ``none`` for the intact model): ``roi, r, delta_r``
    where ``r`` is the mean over L1–L4 on ``split`` and ``delta_r`` the drop from the intact model.
    """
    model, config = load_run_model(run)
    if config["model"] != "multi_roi":
        raise ValueError(f"{run}: ablation needs a multi-ROI run, not a {config['model']} model")
    info = manifest.set_index("case_id").loc[list(cache.case_ids)]
    splits = info["split"].to_numpy()
    rows, train = np.flatnonzero(splits == split), np.flatnonzero(splits == "train")
    chest, local = _as_unit(np.asarray(cache.chest)[rows]), _as_unit(np.asarray(cache.local)[rows])
    mean_chest = _as_unit(np.asarray(cache.chest)[train]).mean(axis=0)
    mean_local = _as_unit(np.asarray(cache.local)[train]).mean(axis=0)
    truth = info[list(BMD_COLUMNS)].to_numpy(float)[rows]
    train_bmd = info[list(BMD_COLUMNS)].to_numpy(float)[train]
    scaler = TargetScaler.fit(train_bmd)  # the scaling the run trained with (fitted on the same train rows)

    def score(feats: torch.Tensor) -> float:
        with torch.no_grad():
            pred = scaler.inverse(model.joint_head(feats.flatten(1)).numpy())
        rs = [pearson_r(pred[:, j], truth[:, j]) for j in range(len(VERTEBRAE))]
        # a prediction made constant by the ablation carries no information: R 0, not undefined
        return float(np.mean([0.0 if not np.isfinite(r) else r for r in rs]))

    # In eval mode a crop's features do not depend on the other crops, and only the joint head mixes
    # regions: so the test crops go through the backbone once, the mean crops once, and each ablation
    # swaps one region's block of features (8x less work than a forward pass per ablated region).
    feats = _features(model, chest, local)
    mean_feats = _features(model, mean_chest[None], mean_local[None])[0]
    intact = score(feats)
    out = [{"roi": "none", "r": intact, "delta_r": 0.0}]
    for k, name in enumerate(ROI_NAMES):
        ablated = feats.clone()
        ablated[:, k] = mean_feats[k]
        r = score(ablated)
        out.append({"roi": name, "r": r, "delta_r": intact - r})
    return pd.DataFrame(out)


def joint_weight_norms(run: str | Path) -> pd.DataFrame:
    """The joint head's weight norm over each region's block of features (share of the total)."""
    model, config = load_run_model(run)
    if config["model"] != "multi_roi":
        raise ValueError(f"{run}: weight norms need a multi-ROI run, not a {config['model']} model")
    weight = model.joint_head.weight.detach().numpy()  # (4, 7·D)
    blocks = weight.reshape(weight.shape[0], len(ROI_NAMES), -1)
    norms = np.sqrt((blocks**2).sum(axis=(0, 2)))
    return pd.DataFrame({"roi": list(ROI_NAMES), "weight_norm": norms, "share": norms / norms.sum()})
