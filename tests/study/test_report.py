"""Results tables and figures from rows in the summary.json layout."""

import math

import matplotlib
import pytest

matplotlib.use("Agg")

from bmd.study import report


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
    assert table.loc["Chest (VGG-16)", "R"] == "0.720 [0.670, 0.770]"  # readers' names, not ids
    assert table.loc["Chest (VGG-16)", "paper R"] == "0.820" and table.loc["Chest (VGG-16)", "paper AUC"] == "—"
    assert table.loc["Chest (ResNet-50)", "R"] == "n/a"
    wide = report.per_vertebra_table(_rows(), ["vgg16", "vgg11"])
    assert list(wide.index) == ["Chest (VGG-16)", "Chest (VGG-11)"]  # the order asked for; others left out
    assert wide.loc["Chest (VGG-11)", ("paper R", "L3")] == "0.795"


def test_results_figure_has_one_row_per_model():
    fig = report.plot_results(_rows(), "Table 1")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Chest (VGG-11)", "Chest (VGG-16)", "Chest (ResNet-50)"]
    assert fig.dpi == 200 and min(t.get_fontsize() for t in ax.get_yticklabels()) >= 9
    legend = ax.get_legend().get_window_extent()
    fig.canvas.draw()
    assert legend.x0 >= ax.get_window_extent().x1  # the legend sits beside the axes, over no point
    assert {"ours (95% CI)", "paper (its own data)", "twin ceiling"} <= set(ax.get_legend_handles_labels()[1])


def _frame(seed: int = 0, n: int = 120, noise: float = 0.08):
    """A test-split predictions frame: truth and a noisy prediction (repeat scans of some patients)."""
    from frames import predictions_frame

    return predictions_frame(seed, n, noise, scans_per_patient=2)


def _shifted(frame, shift: float):
    out = frame.copy()
    for k in range(1, 5):
        out[f"pred_l{k}"] = out[f"bmd_l{k}"] + shift
    return out


def test_rows_carry_bias_mae_and_a_paired_delta_r_against_radiomics():
    import json

    import numpy as np

    reference = _frame(seed=1, noise=0.12)
    shared = reference.copy()  # the reference's errors, a little less of them: a small, consistent gain
    for k in range(1, 5):
        shared[f"pred_l{k}"] = 0.8 * reference[f"pred_l{k}"] + 0.2 * reference[f"bmd_l{k}"]
    constant = reference.copy()
    constant["pred_l1"] = 0.9  # R undefined for L1
    frames = {"shifted": _shifted(reference, 0.1), "same": reference.copy(), "shared": shared,
              "constant": constant, "radiomics": reference}
    rows = report.results_rows("table2", frames, None, n_boot=300, seed=3, reference=reference,
                               converged={"shifted": True, "same": False})
    json.dumps(rows, allow_nan=False)  # JSON-clean: undefined numbers are None
    by = {(r["model"], r["vertebra"]): r for r in rows}

    for v in ("L1", "L2", "L3", "L4", "avg"):
        assert by[("shifted", v)]["bias"] == pytest.approx(0.1) and by[("shifted", v)]["mae"] == pytest.approx(0.1)
        assert by[("same", v)]["delta_r_radiomics"] == 0 and by[("same", v)]["delta_r_radiomics_ci"] == [0, 0]
        # a prediction of truth + 0.1 has R = 1: it beats the noisy reference, the whole interval above 0
        assert by[("shifted", v)]["delta_r_radiomics_ci"][0] > 0
    assert by[("radiomics", "avg")]["delta_r_radiomics"] is None and by[("radiomics", "avg")]["converged"] is None
    assert by[("same", "avg")]["converged"] is False and by[("shifted", "L2")]["converged"] is True
    assert by[("shared", "avg")]["converged"] is None  # no flag given for it
    assert by[("constant", "L1")]["r"] is None and by[("constant", "L1")]["delta_r_radiomics"] is None
    # avg = mean of the four per-vertebra differences
    deltas = [by[("shared", v)]["delta_r_radiomics"] for v in ("L1", "L2", "L3", "L4")]
    assert by[("shared", "avg")]["delta_r_radiomics"] == pytest.approx(np.mean(deltas))
    assert by[("constant", "avg")]["delta_r_radiomics"] == pytest.approx(
        np.mean([by[("constant", v)]["delta_r_radiomics"] for v in ("L2", "L3", "L4")]))
    # paired: the shared errors cancel, so ΔR is far tighter than either model's own R interval
    width = np.diff(by[("shared", "L1")]["delta_r_radiomics_ci"])[0]
    assert 0 < width < 0.5 * np.diff(by[("shared", "L1")]["r_ci"])[0]
    assert by[("shared", "L1")]["delta_r_radiomics_ci"][0] > 0


def test_without_a_reference_deep_rows_have_no_delta():
    rows = report.results_rows("table2", {"multi_roi": _frame()}, None, n_boot=50)
    assert all(r["delta_r_radiomics"] is None and r["converged"] is None for r in rows)
    assert {"bias", "mae"} <= set(rows[0])


def test_table_and_sentence_say_whether_each_deep_model_beats_radiomics():
    reference = _frame(seed=1, noise=0.12)
    frames = {"better": _shifted(reference, 0.1), "same": reference.copy(), "radiomics": reference}
    rows = report.results_rows("table2", frames, None, n_boot=200, reference=reference)
    table = report.results_table(rows)
    assert table.loc["same", "ΔR vs radiomics"] == "+0.000 [+0.000, +0.000]"
    assert table.loc["Radiomics", "ΔR vs radiomics"] == "—"
    assert table.loc["better", "bias (g/cm²)"] == "+0.100" and table.loc["better", "MAE (g/cm²)"] == "0.100"
    avg = {r["model"]: r for r in rows if r["vertebra"] == "avg"}
    assert report.beats_reference(avg["better"]) is True and report.beats_reference(avg["same"]) is False
    assert report.beats_reference(avg["radiomics"]) is None
    text = report.reference_comparison(rows)
    assert "Beating" in text and "better (ΔR = +" in text
    assert "Not beating" in text and "same (ΔR = +0.000" in text
    only_same = [r for r in rows if r["model"] != "better"]
    assert report.reference_comparison(only_same).startswith("No deep model beats")
    assert report.reference_comparison([r for r in rows if r["model"] != "same"]).startswith("Every deep model beats")


def test_figure_2_shows_bias_and_mae_per_vertebra():
    fig = report.plot_predicted_vs_dxa(_shifted(_frame(), -0.05))
    texts = [" ".join(t.get_text() for t in ax.texts) for ax in fig.axes]
    assert len(texts) == 4 and all("bias -0.050" in t and "MAE 0.050 g/cm²" in t for t in texts)
    assert fig.axes[0].get_title().startswith("L1  (R = 1.000)")


def test_every_model_id_has_a_readers_name_and_summary_ids_stay():
    from bmd.study.experiments import ENSEMBLES, table_models

    ids = {label for table in table_models().values() for label in table} | set(ENSEMBLES) | set(report.BASELINES)
    assert ids <= set(report.MODEL_NAMES)
    assert report.model_name("ensm_all") == "Ensemble (all)" and report.model_name("age_sex") == "Age + sex"
    assert report.model_name("unknown_id") == "unknown_id"


def test_attention_row_carries_a_paired_delta_against_the_multi_roi_model():
    import numpy as np

    multi = _frame(seed=1, noise=0.12)
    better = _frame(seed=1, noise=0.12)
    for k in range(1, 5):  # the same cases, half the error: a clear, paired improvement
        better[f"pred_l{k}"] = better[f"bmd_l{k}"] + 0.5 * (multi[f"pred_l{k}"] - multi[f"bmd_l{k}"])
    rows = report.results_rows("table2", {"multi_roi": multi, "attention": better, "radiomics": multi}, None,
                               n_boot=200, reference=multi)
    by = {(r["model"], r["vertebra"]): r for r in rows}
    att = by[("attention", "avg")]
    assert att["delta_r_multi_roi"] > 0 and att["delta_r_multi_roi_ci"][0] > 0
    assert att["delta_r_multi_roi"] == pytest.approx(
        np.mean([by[("attention", v)]["delta_r_multi_roi"] for v in ("L1", "L2", "L3", "L4")]))
    assert "delta_r_multi_roi" not in by[("multi_roi", "avg")]  # only the attention row compares
    assert report.paired_verdict(rows).startswith("Attention (multi-ROI) beats Multi-ROI")
    table = report.paired_table(rows)
    assert list(table.index) == ["L1", "L2", "L3", "L4", "avg"] and "ΔR vs Multi-ROI" in table.columns
    tie = report.results_rows("table2", {"multi_roi": multi, "attention": multi.copy()}, None, n_boot=100)
    assert "ties with" in report.paired_verdict(tie)
    worse = report.results_rows("table2", {"multi_roi": better, "attention": multi}, None, n_boot=200)
    assert "does worse than" in report.paired_verdict(worse)
    alone = report.results_rows("table2", {"attention": multi}, None, n_boot=50)
    assert alone[0]["delta_r_multi_roi"] is None and "could not be computed" in report.paired_verdict(alone)
