"""Figures of the twin-against-real comparison (:mod:`bmd.study.realfilms`): films at one physical scale,
lung-field spectra and histograms, and the detector's points on every real chest film."""

from __future__ import annotations

import numpy as np

from bmd.evaluation.realfilms import SLOPE_BAND
from bmd.infra.plotting import pyplot
from bmd.rois.draw import draw_rois
from bmd.study.realfilms import RealFilmResults


def _chest_rows(results: RealFilmResults) -> list[int]:
    return [i for i, role in enumerate(results.files["role"]) if role == "chest"]


def plot_films_at_one_scale(results: RealFilmResults):
    """Two twin images beside the real chest films, each drawn over its physical extent in mm (one scale)."""
    plt = pyplot()
    chest = _chest_rows(results)
    panels = [(im, results.twin_spacing_mm, "twin") for im in results.twin_images] + [
        (results.images[i], results.files["spacing_mm"].iloc[i], results.files["file"].iloc[i].split("/")[-1])
        for i in chest]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9), squeeze=False)
    limit = max(im.shape[1] * sp for im, sp, _ in panels)
    for ax, (im, sp, title) in zip(axes[0], panels, strict=True):
        h, w = im.shape
        ax.imshow(im, cmap="gray", extent=(0, w * sp, h * sp, 0))
        ax.set_xlim(0, limit)
        ax.set_ylim(limit, 0)
        ax.set_title(title[:22], fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].set_ylabel("mm")
    fig.tight_layout()
    return fig


def plot_spectra_and_histograms(results: RealFilmResults):
    """Left: lung-field radial power spectra (log–log), the slope band shaded; right: intensity histograms."""
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, (freq, power) in results.spectra.items():
        twin = name == "twin"
        a.loglog(freq, power / power[0], lw=2.5 if twin else 1.2, color="black" if twin else None,
                 label="twin (mean)" if twin else name.split("/")[-1][:22])
    a.axvspan(*SLOPE_BAND, color="0.9", zorder=0)
    a.set_xlabel("frequency (cycles/mm)")
    a.set_ylabel("power (relative to the lowest frequency)")
    a.legend(fontsize=7)
    bins = None
    for name, hist in results.histograms.items():
        twin = name == "twin"
        bins = np.linspace(0, 1, len(hist) + 1)
        b.step(bins[:-1], hist, where="post", lw=2.5 if twin else 1.2, color="black" if twin else None,
               label="twin (mean)" if twin else name.split("/")[-1][:22])
    b.set_xlabel("grey level (each image normalised by its own 0.5–99.5th percentiles)")
    b.set_ylabel("share of pixels")
    b.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_detections(results: RealFilmResults):
    """The detector's points and boxes on every real chest film, titled with its verdict."""
    plt = pyplot()
    chest = _chest_rows(results)
    fig, axes = plt.subplots(1, max(len(chest), 1), figsize=(3.3 * max(len(chest), 1), 3.6), squeeze=False)
    for ax, i in zip(axes[0], chest, strict=False):
        draw_rois(results.images[i], results.points[i], ax=ax)
        row = results.files.iloc[i]
        ax.set_title(f"{row['file'].split('/')[-1][:22]}\n{row['status']} (score {row['score']:.2f})", fontsize=8)
    fig.tight_layout()
    return fig
