"""Figures of the screening chapter: ROC bands, Bland–Altman, calibration, published references, ROIs.

Each function takes plain data (predictions frames, tables from :mod:`bmd.evaluation.screening` and
:mod:`bmd.study.ablation`) and returns a matplotlib Figure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bmd.columns import BMD_COLUMNS, PRED_COLUMNS, VERTEBRAE
from bmd.evaluation.metrics import agreement, auc_low_is_positive
from bmd.evaluation.screening import endpoint_scores, roc_with_band
from bmd.infra.plotting import pyplot
from bmd.inputs import paper
from bmd.study.report import model_name


def plot_roc(frames: dict[str, pd.DataFrame], endpoints: tuple[str, ...] = (*VERTEBRAE, "lowest", "mean"),
             split: str = "test", n_boot: int = 1000, seed: int = 0, banded: tuple[str, ...] | None = None):
    """ROC curves per endpoint on ``split``; models in ``banded`` (default: all) get a 95% bootstrap band."""
    plt = pyplot()


    banded = tuple(frames) if banded is None else banded
    cols = min(3, len(endpoints))
    rows = -(-len(endpoints) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(endpoints):]:
        ax.set_visible(False)
    for ax, endpoint in zip(axes.flat, endpoints, strict=False):
        for i, (model, frame) in enumerate(frames.items()):
            scores = endpoint_scores(frame)
            part = scores[(scores["split"] == split) & (scores["endpoint"] == endpoint)]
            auc = auc_low_is_positive(part["t_pred"].to_numpy(), part["positive"].to_numpy())
            curve = roc_with_band(part, n_boot=n_boot if model in banded else 0, seed=seed)
            style = {"color": f"C{i}", "lw": 1.4, "ls": "-" if model in banded else "--"}
            ax.plot(curve["fpr"], curve["tpr"], label=f"{model_name(model)} ({auc:.3f})", **style)
            if model in banded and n_boot:
                ax.fill_between(curve["fpr"], curve["tpr_lo"], curve["tpr_hi"], color=f"C{i}", alpha=0.15, lw=0)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set_title("lowest vertebra" if endpoint == "lowest" else ("L1–L4 mean" if endpoint == "mean" else endpoint))
        ax.set_xlabel("1 − specificity")
        ax.legend(loc="lower right", frameon=False, title="AUC")
        ax.set_aspect("equal")
        ax.set_ylabel("sensitivity")
    fig.tight_layout()
    return fig


def plot_bland_altman(frame: pd.DataFrame, split: str = "test"):
    """Bland–Altman per vertebra: difference (predicted − DXA) against the mean, bias and 95% limits."""
    plt = pyplot()


    part = frame[frame["split"] == split]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6), sharey=True)
    for ax, v, bcol, pcol in zip(axes, VERTEBRAE, BMD_COLUMNS, PRED_COLUMNS, strict=True):
        truth, pred = part[bcol].to_numpy(float), part[pcol].to_numpy(float)
        ok = np.isfinite(truth) & np.isfinite(pred)
        a = agreement(pred, truth)
        ax.scatter((truth[ok] + pred[ok]) / 2, pred[ok] - truth[ok], s=8, alpha=0.5, edgecolor="none")
        for y, ls in ((a.bias, "-"), (a.loa_low, "--"), (a.loa_high, "--")):
            ax.axhline(y, color="C3", lw=1, ls=ls)
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_title(f"{v}: bias {a.bias:+.3f}\nlimits {a.loa_low:+.3f} to {a.loa_high:+.3f}", fontsize=9)
        ax.set_xlabel("mean of predicted and DXA (g/cm²)")
    axes[0].set_ylabel("predicted − DXA (g/cm²)")
    fig.tight_layout()
    return fig


def plot_calibration(frames: dict[str, pd.DataFrame], split: str = "test", bins: int = 8):
    """Mean predicted against mean DXA BMD in bins of predicted BMD (all vertebrae pooled)."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    lo, hi = np.inf, -np.inf
    for i, (name, frame) in enumerate(frames.items()):
        part = frame[frame["split"] == split]
        truth = part[list(BMD_COLUMNS)].to_numpy(float).ravel()
        pred = part[list(PRED_COLUMNS)].to_numpy(float).ravel()
        ok = np.isfinite(truth) & np.isfinite(pred)
        truth, pred = truth[ok], pred[ok]
        edges = np.quantile(pred, np.linspace(0, 1, bins + 1))
        which = np.clip(np.searchsorted(edges, pred, side="right") - 1, 0, bins - 1)
        mp = [pred[which == b].mean() for b in range(bins) if (which == b).any()]
        mt = [truth[which == b].mean() for b in range(bins) if (which == b).any()]
        ax.plot(mp, mt, "o-", color=f"C{i}", label=model_name(name), ms=4)
        lo, hi = min(lo, truth.min(), pred.min()), max(hi, truth.max(), pred.max())
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("mean predicted BMD in bin (g/cm²)")
    ax.set_ylabel("mean DXA BMD in bin (g/cm²)")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def plot_published_reference(rows: list[dict]):
    """Our R and AUC (L1–L4 mean, 95% CI) per model beside the published figures on other data."""
    plt = pyplot()

    avg = [r for r in rows if r["vertebra"] == "avg"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.4 * len(avg) + 1.8), sharey=True)
    refs = {"r": (paper.PRIME_2021["r"], paper.FOLLOW_UP_2022["r_l1"]),
            "auc": (paper.PRIME_2021["auc"], paper.FOLLOW_UP_2022["auc"])}
    for ax, metric in zip(axes, ("r", "auc"), strict=True):
        for i, r in enumerate(avg):
            lo, hi = r[f"{metric}_ci"]
            if r[metric] is not None and np.isfinite(r[metric]):
                err = None if lo is None or hi is None else [[r[metric] - lo], [hi - r[metric]]]
                ax.errorbar(r[metric], i, xerr=err, fmt="o", color="C0", capsize=3)
        prime, (f_lo, f_hi) = refs[metric]
        ax.axvline(prime, color="C3", ls="--", lw=1, label="PRIME 2021 (other data)")
        ax.axvspan(f_lo, f_hi, color="C2", alpha=0.25,
                   label="follow-up 2022, " + ("L1 " if metric == "r" else "") + "(other data)")
        ax.set_xlabel({"r": "Pearson R (L1–L4 mean; follow-up: L1)", "auc": "osteoporosis AUC (L1–L4 mean)"}[metric])
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(avg)), [model_name(r["model"]) for r in avg])
    axes[0].invert_yaxis()
    axes[1].legend(frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def plot_roi_contribution(ablation: pd.DataFrame, ceilings: pd.DataFrame | None = None):
    """Drop in test R (L1–L4 mean) when each region is ablated and, on the twin, each region family's own
    information ceiling (R). (The joint head's weight share per region is left out: it stays near 1/7
    for every region and tells a reader nothing.)"""
    plt = pyplot()

    panels = 2 if ceilings is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.0 * panels, 3.4), squeeze=False)
    axes = axes[0]
    abl = ablation[ablation["roi"] != "none"]
    axes[0].barh(abl["roi"], abl["delta_r"], color="C0")
    axes[0].axvline(0, color="grey", lw=0.8)
    axes[0].set_xlabel("drop in test R when ablated")
    axes[0].invert_yaxis()
    if ceilings is not None:
        axes[1].barh([model_name(r) for r in ceilings["roi"]], ceilings["r"], color="C2")
        axes[1].set_xlabel("twin ceiling R (family alone)")
        axes[1].invert_yaxis()
    fig.tight_layout()
    return fig
