"""Figures of the twin against real radiographs (:mod:`bmd.study.realdata`): the images at one physical
scale, intensity histograms, lung-field power spectra, the detector on real chest films and the CheXmask
rib-margin check. Each function takes a :class:`~bmd.study.realdata.RealFilmStudy` and returns a Figure.
"""

from __future__ import annotations

import numpy as np

from bmd.evaluation import realfilms as rf
from bmd.infra.plotting import pyplot
from bmd.rois.draw import draw_rois
from bmd.study.realdata import Film, RealFilmStudy

_SQUARE_COLOUR = "gold"


def _draw_squares(ax, film: Film, scale: float = 1.0) -> None:
    for sq in film.squares:
        c = sq.corners() * scale
        ax.plot(*np.vstack([c, c[:1]]).T, color=_SQUARE_COLOUR, lw=1)


def plot_same_scale(study: RealFilmStudy, n_twin: int = 3):
    """Twin images beside the real chest films, every panel in millimetres on the same axes limits, so that
    one displayed pixel is the same number of mm everywhere; the lung squares whose spectra are compared are
    drawn in gold. Titles say where a spacing is assumed."""
    plt = pyplot()
    films = [*study.twin[:n_twin], *study.real]
    cols = min(4, len(films))
    rows = -(-len(films) // cols)
    width_mm = max(f.image.shape[1] * f.spacing_mm for f in films)
    height_mm = max(f.image.shape[0] * f.spacing_mm for f in films)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, rows * (3.2 * height_mm / width_mm + 0.7)),
                             squeeze=False, sharex=True, sharey=True)
    for ax in axes.flat[len(films):]:
        ax.set_visible(False)
    for ax, film in zip(axes.flat, films, strict=False):
        h, w = film.image.shape
        ax.imshow(film.image, cmap="gray", vmin=0, vmax=1, interpolation="antialiased",
                  extent=(-0.5 * film.spacing_mm, (w - 0.5) * film.spacing_mm, (h - 0.5) * film.spacing_mm,
                          -0.5 * film.spacing_mm))
        _draw_squares(ax, film, film.spacing_mm)
        spacing = f"{film.spacing_mm:.2f} mm" + (" (assumed)" if film.spacing_source == "assumed" else "")
        ax.set_title(f"{film.source}: {film.label[:22]}\n{spacing}", fontsize=9)
        ax.set_xlim(0, width_mm)
        ax.set_ylim(height_mm, 0)
        ax.set_aspect("equal")
    for ax in axes[-1]:
        ax.set_xlabel("mm")
    for ax in axes[:, 0]:
        ax.set_ylabel("mm")
    fig.tight_layout()
    return fig


def plot_histograms(study: RealFilmStudy):
    """Intensity histograms (each image normalised by its own 0.5/99.5 percentiles): the twin images' mean
    density with their range shaded, and each real chest film."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    if study.twin:
        centres = study.twin[0].histogram[0]
        dens = np.array([f.histogram[1] for f in study.twin])
        ax.fill_between(centres, dens.min(axis=0), dens.max(axis=0), color="0.6", alpha=0.4, lw=0)
        ax.plot(centres, dens.mean(axis=0), color="k", lw=2,
                label=f"twin (mean of {len(study.twin)}, range shaded)")
    for i, film in enumerate(study.real):
        ax.plot(*film.histogram, color=f"C{i}", lw=1.2, label=film.label)
    ax.set_xlabel("intensity (0.5th–99.5th percentile → 0–1)")
    ax.set_ylabel("density")
    ax.legend(frameon=False, fontsize=9)
    fig.tight_layout()
    return fig


def plot_spectra(study: RealFilmStudy):
    """Radial power spectra of the lung squares (log–log, cycles/mm): each twin image in grey, each real
    chest film in colour with its slope; the band of the slope fit shaded."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.6, 4.0))
    ax.axvspan(*rf.SLOPE_BAND_CYCLES_PER_MM, color="0.92", zorder=0, label="slope band")
    twin = [f for f in study.twin if f.spectrum is not None]
    for j, film in enumerate(twin):
        median = np.nanmedian([f.slope for f in twin])
        label = f"twin ({len(twin)} images; median slope {median:.2f})" if j == 0 else None
        ax.loglog(film.spectrum.frequency, film.spectrum.power, color="0.5", lw=0.8, label=label)
    for i, film in enumerate(study.real):
        if film.spectrum is not None:
            ax.loglog(film.spectrum.frequency, film.spectrum.power, color=f"C{i}", lw=1.3,
                      label=f"{film.label[:24]} ({film.slope:.2f})")
    ax.set_xlabel("spatial frequency (cycles/mm)")
    ax.set_ylabel("power (intensity² · mm²)")
    ax.legend(frameon=False, fontsize=9, title="lung field (slope)", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def plot_detections(study: RealFilmStudy):
    """The detector's 16 points and the ROI boxes they place, on every real chest film, titled with the
    verdict and score (> 1 is flagged)."""
    plt = pyplot()
    verdicts = study.plausibility.set_index("file") if study.plausibility is not None else None
    n = len(study.real)
    cols = min(5, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, film in zip(axes.flat, study.real, strict=False):
        draw_rois(film.image, film.points, ax=ax, labels=False)
        v = verdicts.loc[film.name] if verdicts is not None else None
        verdict = f"{v['status']}, score {v['score']:.2f}" if v is not None else ""
        ax.set_title(f"{film.label[:24]}\n{verdict}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_rib_margin(study: RealFilmStudy):
    """The CheXmask film with its annotated lung outlines, the detector's rib-cage points and the segment
    from each to the nearest outline point of the same side, labelled in % of the image width; None when
    the film or its outlines are missing."""
    plt = pyplot()
    chex = [f for f in study.real if f.name == rf.CHEXMASK_IMAGE]
    contours = rf.read_chexmask_contours(study.folder)
    if study.rib_margin is None or not chex or contours is None:
        return None
    film = chex[0]
    fig, ax = plt.subplots(figsize=(5.5, 5.5 * film.image.shape[0] / film.image.shape[1]))
    ax.imshow(film.image, cmap="gray", vmin=0, vmax=1)
    colours = {"right": "tab:red", "left": "tab:blue"}
    for side, c in contours.items():
        closed = np.vstack([c, c[:1]])
        ax.plot(closed[:, 0], closed[:, 1], color=colours[side], lw=1, label=f"patient's {side} lung")
    for row in study.rib_margin.itertuples():
        ax.plot([row.x, row.nearest_x], [row.y, row.nearest_y], color="yellow", lw=1)
        ax.plot(row.x, row.y, "o", color="cyan", ms=3, mec="k", mew=0.3)
        ax.annotate(f"{row.distance_pct:.1f} %", (row.x, row.y), color="k", fontsize=9,
                    xytext=(-6 if row.side == "left" else 6, 0), textcoords="offset points",
                    ha="right" if row.side == "left" else "left", va="center",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    ax.legend(fontsize=9, loc="lower center", framealpha=0.8)
    ax.set_axis_off()
    fig.tight_layout()
    return fig
