"""Draw a gallery of cohort radiographs with their 16 landmarks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from bmd.columns import LANDMARK_NAMES
from bmd.infra.plotting import pyplot
from bmd.io import read_image

#: landmark families and their colours in drawings
FAMILY_COLOURS = {"clavicle": "tab:orange", "rib cage": "tab:cyan", "cervical": "tab:green", "T12": "tab:red"}


def landmark_family(name: str) -> str:
    """The family a landmark belongs to (for colours and legends)."""
    if name.startswith("clav"):
        return "clavicle"
    if name.startswith("rib"):
        return "rib cage"
    return "cervical" if name == "cervical" else "T12"


def draw_landmarks(ax, points: np.ndarray, size: float = 14) -> None:
    """Scatter the 16 landmarks on an axis, coloured by family."""
    for family, colour in FAMILY_COLOURS.items():
        idx = [i for i, n in enumerate(LANDMARK_NAMES) if landmark_family(n) == family]
        ax.scatter(points[idx, 0], points[idx, 1], s=size, c=colour, label=family, edgecolors="k", linewidths=0.3)


def draw_gallery(cohort_dir: str | os.PathLike, n: int = 8, seed: int = 0, columns: int = 4):
    """A figure of ``n`` random cases of a cohort folder (manifest.csv + landmarks.csv) with landmarks."""

    plt = pyplot()


    folder = Path(cohort_dir)
    manifest = pd.read_csv(folder / "manifest.csv")
    marks = pd.read_csv(folder / "landmarks.csv").set_index("case_id")
    picks = manifest.sample(n=min(n, len(manifest)), random_state=seed)
    rows = int(np.ceil(len(picks) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, (_, case) in zip(axes.ravel(), picks.iterrows(), strict=False):
        image, meta = read_image(folder / case["image"])
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        pts = marks.loc[case["case_id"]].to_numpy(dtype=float).reshape(16, 2)
        draw_landmarks(ax, pts)
        ax.set_title(f"{case['case_id']} · {case['sex']} {case['age']} · L1 {case['bmd_l1']:.2f}\n"
                     f"{meta.photometric}, {meta.bits_stored}-bit", fontsize=9)
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig
