"""Figures of what the attention model attends to (Table 2's "Beyond the paper" section).

Plain data in, a matplotlib Figure out, in the book's figure style (:func:`bmd.infra.plotting.pyplot`); nothing
here reads files or trains.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bmd.columns import ROI_NAMES, VERTEBRAE
from bmd.infra.plotting import pyplot
from bmd.rois.draw import ROI_COLOURS
from bmd.rois.geometry import roi_boxes
from bmd.study.report import model_name

#: The ROI family each of the 7 ROI tokens belongs to (the twin's ceilings are per family).
FAMILY_OF: dict[str, str] = {"chest": "chest", "cervi": "cervi", "clavi_l": "clavi", "clavi_r": "clavi",
                             "ribcage_l": "ribcage", "ribcage_r": "ribcage", "lumbar": "lumbar"}


def plot_attention_summary(mean: pd.DataFrame, ablation: pd.DataFrame, ceilings: pd.DataFrame | None = None):
    """Mean attention of each vertebra's readout over the 7 ROIs (heat map, test split) beside the drop
    in test R when each ROI is ablated and, on the twin, each ROI family's information ceiling.

    ``mean``: vertebrae × ROIs (:meth:`bmd.study.ablation.AttentionStudy.mean`); ``ablation``:
    :func:`bmd.study.ablation.roi_ablation` rows; ``ceilings``: the twin's ``oracle['ceilings']`` rows of the
    ``avg`` vertebra (``roi``, ``r``), or None.
    """
    plt = pyplot()
    import seaborn as sns

    panels = 3 if ceilings is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.4 * panels, 3.4),
                             gridspec_kw={"width_ratios": [1.5] + [1] * (panels - 1)})
    values = mean.loc[list(VERTEBRAE), list(ROI_NAMES)]
    # a fixed floor for the colour scale's top: uniform attention (1/7 each) then looks uniform and dim,
    # not saturated
    sns.heatmap(values, annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=max(2 / len(ROI_NAMES),
                float(values.to_numpy().max())), cbar=False, ax=axes[0])
    axes[0].set_title("mean attention (readout → ROI)")
    axes[0].set_xlabel("ROI token")
    axes[0].set_ylabel("vertebra readout")
    axes[0].tick_params(axis="x", rotation=45)
    abl = ablation[ablation["roi"] != "none"].set_index("roi").loc[list(ROI_NAMES)]
    axes[1].barh(list(abl.index), abl["delta_r"], color="C0")
    axes[1].axvline(0, color="grey", lw=0.8)
    axes[1].set_xlabel("drop in test R when ablated")
    axes[1].invert_yaxis()
    if ceilings is not None:
        ceil = ceilings.set_index("roi")["r"]
        # the two sides of a paired family share their family's ceiling
        values = [ceil.get(FAMILY_OF[roi], np.nan) for roi in ROI_NAMES]
        axes[2].barh(list(ROI_NAMES), values, color="C2")
        axes[2].set_xlabel("twin ceiling R (family alone)")
        axes[2].invert_yaxis()
    fig.tight_layout()
    return fig


def plot_attention_cases(images: list[np.ndarray], landmarks: list[np.ndarray], weights: np.ndarray,
                         titles: list[str] | None = None):
    """Radiographs with their ROI boxes drawn by attention: line width and opacity follow each ROI's
    attention (mean over the four vertebra readouts), its value written at the box's centre.

    ``weights``: (n, 4, 7) readout attention of the n cases, ``landmarks``: (16, 2) per case. The chest
    token is the whole image: its share is written in the corner instead of a box.
    """
    plt = pyplot()

    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.9), squeeze=False)
    for ax, img, pts, w, title in zip(axes[0], images, landmarks, weights, titles or [""] * n, strict=True):
        per_roi = np.asarray(w).mean(axis=0)  # mean over the vertebra readouts; sums to 1 over the ROIs
        top = float(per_roi.max()) or 1.0
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        for k, (name, box) in enumerate(roi_boxes(pts, img.shape).items()):
            share = float(per_roi[k])
            if name == "chest":
                ax.text(0.02, 0.98, f"chest {share:.2f}", transform=ax.transAxes, va="top", ha="left",
                        fontsize=9, color="black", bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8})
                continue
            c = box.corners()
            ax.plot(*np.vstack([c, c[:1]]).T, "-", color=ROI_COLOURS[name], lw=0.5 + 4.5 * share / top,
                    alpha=0.35 + 0.65 * share / top)
            ax.annotate(f"{share:.2f}", box.centre, color="white", fontsize=9, ha="center", va="center",
                        bbox={"boxstyle": "round,pad=0.15", "fc": ROI_COLOURS[name], "alpha": 0.7, "lw": 0})
        ax.set_xlim(-0.5, img.shape[1] - 0.5)
        ax.set_ylim(img.shape[0] - 0.5, -0.5)
        ax.set_axis_off()
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"{model_name('attention')}: attention per ROI (mean over L1–L4 readouts)", fontsize=10)
    fig.tight_layout()
    return fig
