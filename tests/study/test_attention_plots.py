"""The attention figures draw from plain data (no run needed) and the exported model is chosen on validation."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from images import chest_points, texture  # noqa: E402  (tests/ is on sys.path under pytest)

from bmd.columns import ROI_NAMES, VERTEBRAE
from bmd.study import attention_plots


def test_summary_figure_has_a_panel_per_view_and_cases_figure_one_per_case():
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.ones(7), size=(3, 4))
    mean = pd.DataFrame(w.mean(axis=0), index=list(VERTEBRAE), columns=list(ROI_NAMES))
    ablation = pd.DataFrame({"roi": ["none", *ROI_NAMES], "r": 0.5, "delta_r": [0.0, *rng.random(7)]})
    ceilings = pd.DataFrame({"roi": ["chest", "cervi", "clavi", "ribcage", "lumbar", "all"], "r": 0.5})
    assert len(attention_plots.plot_attention_summary(mean, ablation, ceilings).axes) == 3
    assert len(attention_plots.plot_attention_summary(mean, ablation, None).axes) == 2
    fig = attention_plots.plot_attention_cases([texture((128, 128))] * 3, [chest_points()] * 3, w, ["a", "b", "c"])
    assert len(fig.axes) == 3
    # the boxes' line widths follow the attention: the most attended local ROI has the widest line
    lines = fig.axes[0].lines
    local = w[0].mean(axis=0)[1:]
    assert int(np.argmax([ln.get_linewidth() for ln in lines])) == int(np.argmax(local))


def test_the_exported_model_is_chosen_on_the_validation_split_only():
    from types import SimpleNamespace

    from test_stages import _predictions

    from bmd.study import stages

    def frame(val_noise: float, test_noise: float) -> pd.DataFrame:
        val, test = _predictions(seed=1), _predictions(seed=2)
        rng = np.random.default_rng(3)
        for part, noise in ((val, val_noise), (test, test_noise)):
            for k in range(1, 5):
                part[f"pred_l{k}"] = part[f"bmd_l{k}"] + rng.normal(0, noise, len(part))
        val["split"] = "val"
        return pd.concat([val, test], ignore_index=True)

    # attention better on validation, worse on test: exported (test never decides)
    t2 = SimpleNamespace(frames={"multi_roi": frame(0.2, 0.01), "attention": frame(0.05, 0.3)},
                         runs={"multi_roi": "m", "attention": "a"})
    label, scores = stages.choose_exported_model(t2)
    assert label == "attention" and scores["attention"] > scores["multi_roi"]
    t2.frames = {"multi_roi": frame(0.05, 0.3), "attention": frame(0.2, 0.01)}
    assert stages.choose_exported_model(t2)[0] == "multi_roi"
    t2.frames["attention"] = t2.frames["multi_roi"].copy()  # a tie keeps the paper's model
    assert stages.choose_exported_model(t2)[0] == "multi_roi"
