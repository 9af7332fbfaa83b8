"""The book's figure style, applied wherever a figure is drawn (matplotlib is imported on first use)."""

from __future__ import annotations

#: Matplotlib settings of every book figure: 200 dpi, no text under 9 pt.
FIGURE_STYLE: dict[str, object] = {
    "figure.dpi": 200, "savefig.dpi": 200, "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": 9, "legend.title_fontsize": 9,
}


def pyplot():
    """``matplotlib.pyplot`` with the book's figure style (:data:`FIGURE_STYLE`) applied."""
    import matplotlib.pyplot as plt

    plt.rcParams.update(FIGURE_STYLE)
    return plt
