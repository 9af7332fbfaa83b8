"""Results tables and figures from rows in the summary.json layout."""

import math

import matplotlib

matplotlib.use("Agg")

from bmd import report  # noqa: E402


def _rows():
    rows = []
    for model, r, paper_r in (("vgg11", 0.61, 0.795), ("vgg16", 0.72, 0.820), ("resnet50", math.nan, 0.808)):
        for v in ("L1", "L2", "L3", "L4", "avg"):
            rows.append({"model": model, "vertebra": v, "r": r, "r_ci": [r - 0.05, r + 0.05], "auc": 0.8,
                         "auc_ci": [0.7, 0.9], "mae": 0.08, "paper_r": paper_r, "paper_auc": None,
                         "ceiling_r": 0.86})
    return rows


def test_best_model_skips_undefined_values_and_num_says_na():
    avg = {r["model"]: r for r in _rows() if r["vertebra"] == "avg"}
    assert report.best_model(avg) == "vgg16"
    assert report.best_model(avg, among=["resnet50"]) == "resnet50"
    assert report.num(math.nan) == "n/a" and report.num(None) == "n/a" and report.num(0.12345) == "0.123"


def test_tables_show_ours_with_ci_beside_the_papers():
    table = report.results_table(_rows())
    assert table.loc["vgg16", "R"] == "0.720 [0.670, 0.770]"
    assert table.loc["vgg16", "paper R"] == "0.820" and table.loc["vgg16", "paper AUC"] == "—"
    assert table.loc["resnet50", "R"] == "n/a"
    wide = report.per_vertebra_table(_rows(), ["vgg16", "vgg11"])
    assert list(wide.index) == ["vgg16", "vgg11"]  # the order asked for; others left out
    assert wide.loc["vgg11", ("paper R", "L3")] == "0.795"


def test_results_figure_has_one_row_per_model():
    fig = report.plot_results(_rows(), "Table 1")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["vgg11", "vgg16", "resnet50"]
    assert {"ours (95% CI)", "paper (its own data)", "twin ceiling"} <= set(ax.get_legend_handles_labels()[1])
