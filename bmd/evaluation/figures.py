"""Figure 2 of the paper: predicted against DXA BMD, per vertebra (matplotlib and seaborn on first use)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bmd.columns import BMD_COLUMNS, VERTEBRAE
from bmd.evaluation.metrics import agreement, pearson_r
from bmd.infra.formatting import fmt, num
from bmd.infra.plotting import pyplot


def plot_predicted_vs_dxa(frame: pd.DataFrame, split: str = "test"):
    """Figure 2 of the paper: predicted vs DXA BMD per vertebra (seaborn scatter with identity line),
    each panel with its R, bias (mean of prediction − DXA) and MAE in g/cm²."""
    plt = pyplot()
    import seaborn as sns

    part = frame[frame["split"] == split]
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.3), sharex=True, sharey=True)
    lo = float(np.nanmin(part[[*BMD_COLUMNS]].to_numpy())) - 0.05
    hi = float(np.nanmax(part[[*BMD_COLUMNS]].to_numpy())) + 0.05
    for ax, v, col in zip(axes, VERTEBRAE, BMD_COLUMNS, strict=True):
        sub = part[[col, f"pred_{v.lower()}"]].dropna()
        r = pearson_r(sub[f"pred_{v.lower()}"], sub[col])
        agr = agreement(sub[f"pred_{v.lower()}"], sub[col])
        sns.scatterplot(x=sub[col], y=sub[f"pred_{v.lower()}"], s=10, alpha=0.6, ax=ax, edgecolor=None)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
        ax.set_title(f"{v}  (R = {num(r)})")
        # the systematic offset and the typical error, in the units a DXA report uses
        ax.text(0.04, 0.96, f"bias {fmt(agr.bias, signed=True)}\nMAE {num(agr.mae)} g/cm²", transform=ax.transAxes,
                va="top", ha="left", fontsize=9, bbox={"boxstyle": "round", "fc": "white", "ec": "0.8", "alpha": 0.8})
        ax.set_xlabel("DXA BMD (g/cm²)")
        ax.set_ylabel("predicted BMD (g/cm²)")
    fig.tight_layout()
    return fig
