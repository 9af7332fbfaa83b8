"""Training the detector on the smoke twin, detector folders, prediction, evaluation and plausibility
(including real non-chest radiographs whose DICOM headers were rewritten to claim a chest)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch

from bmd.columns import COORD_COLUMNS, N_LANDMARKS
from bmd.inputs.twin import generate_twin
from bmd.landmarks.detector import (
    evaluate_landmarks,
    load_landmark_model,
    predict_landmarks,
    save_landmark_model,
)
from bmd.landmarks.fit import train_landmark_model
from bmd.study.config import load_profile

torch.set_num_threads(2)

SMOKE_RECIPE = {"input_size": 128, "epochs": 15, "batch_size": 8, "seed": 0, "progress": False, "log": None}

#: real files that are not chest radiographs (relative to the real-data folder); CT_small comes with pydicom
NON_CHEST = ("pydicom-data/RG3_J2KR.dcm", "fo-dicom/CR-ModalitySequenceLUT.dcm", "fo-dicom/GH133.dcm")


@pytest.fixture(scope="module")
def smoke_twin(tmp_path_factory):
    return generate_twin(
        tmp_path_factory.mktemp("lm_twin"), load_profile("smoke"), seed=0, workers=2, progress=False
    )


@pytest.fixture(scope="module")
def smoke_model(smoke_twin, tmp_path_factory):
    return train_landmark_model(
        smoke_twin / "manifest.csv", tmp_path_factory.mktemp("lm_model") / "detector", **SMOKE_RECIPE
    )


@pytest.mark.slow
def test_training_beats_the_mean_shape_on_val_and_writes_a_detector(smoke_model):
    info = json.loads((smoke_model / "config.json").read_text())
    assert {"config.json", "weights.pt", "plausibility.pt"} <= {p.name for p in smoke_model.iterdir()}
    assert not (smoke_model / ".train_state.pt").exists()
    assert info["model"]["input_size"] == 128 and len(info["mean_shape"]) == N_LANDMARKS
    assert (
        info["training"]["n_train"] == 24 and info["training"]["n_val"] == 12
    )  # train split only; val selects
    val = info["val_errors"]
    assert val["model"]["mean_error_pct"] < 0.9 * val["mean_shape"]["mean_error_pct"]


@pytest.mark.slow
def test_detector_round_trip_gives_identical_predictions(smoke_model, smoke_twin, tmp_path):
    images = sorted((smoke_twin / "images").glob("*.dcm"))[:5]
    model = load_landmark_model(smoke_model)
    first = predict_landmarks(model, images)
    copy = save_landmark_model(model, tmp_path / "copy")
    second = predict_landmarks(load_landmark_model(copy), [str(p) for p in images])
    np.testing.assert_array_equal(first.points, second.points)
    np.testing.assert_array_equal(first.plausibility, second.plausibility)
    assert first.points.shape == (5, N_LANDMARKS, 2)
    # batched inference gives the same points as one image at a time
    single = np.concatenate([predict_landmarks(model, [p]).points for p in images])
    np.testing.assert_allclose(single, first.points, atol=1e-3)
    frame = first.to_frame()
    assert list(frame.columns[:4]) == ["image", "status", "reason", "plausibility"]
    assert list(frame.columns[4:]) == list(COORD_COLUMNS)


@pytest.mark.slow
def test_evaluation_reports_model_and_both_baselines(smoke_model, smoke_twin):
    ev = evaluate_landmarks(smoke_model, smoke_twin / "manifest.csv", split="test")
    s = ev.summary()
    assert s["n"] == 12 and set(s["baselines"]) == {"mean_shape", "global_only"}
    for block in (s, *s["baselines"].values()):
        assert block["p95_error_pct"] >= block["mean_error_pct"] > 0
        assert len(block["per_landmark"]) == N_LANDMARKS
    assert s["mean_error_pct"] < s["baselines"]["mean_shape"]["mean_error_pct"]
    table = ev.table()
    assert set(table["method"]) == {"model", "mean_shape", "global_only"}
    # the saved form (what a rebuild reuses) restores the same evaluation exactly
    back = type(ev).from_dict(json.loads(json.dumps(ev.to_dict())))
    assert back.summary() == s and back.case_ids == ev.case_ids
    pd.testing.assert_frame_equal(back.predictions, ev.predictions)


def test_training_is_deterministic_for_a_seed(smoke_twin, tmp_path):
    recipe = {
        **SMOKE_RECIPE,
        "input_size": 64,
        "epochs": 1,
        "model_config": {"width": 8, "channels": 16, "hidden": 32, "gcn_layers": 1},
    }
    a = train_landmark_model(smoke_twin / "manifest.csv", tmp_path / "a", **recipe)
    b = train_landmark_model(smoke_twin / "manifest.csv", tmp_path / "b", **recipe)
    wa = torch.load(a / "weights.pt", weights_only=True)
    wb = torch.load(b / "weights.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_killed_training_resumes_to_the_same_model(smoke_twin, tmp_path):
    recipe = {
        **SMOKE_RECIPE,
        "input_size": 64,
        "epochs": 2,
        "model_config": {"width": 8, "channels": 16, "hidden": 32, "gcn_layers": 1},
    }

    class Killed(Exception):
        pass

    def kill_after_first_epoch(line: str) -> None:
        if line.startswith("landmarks epoch 1/2"):
            raise Killed

    with pytest.raises(Killed):
        train_landmark_model(
            smoke_twin / "manifest.csv", tmp_path / "resumed", **{**recipe, "log": kill_after_first_epoch}
        )
    assert (tmp_path / "resumed" / ".train_state.pt").is_file() and not (
        tmp_path / "resumed" / "config.json"
    ).exists()
    lines: list[str] = []
    resumed = train_landmark_model(
        smoke_twin / "manifest.csv", tmp_path / "resumed", **{**recipe, "log": lines.append}
    )
    assert any("resuming after epoch 1" in line for line in lines)
    assert not any(line.startswith("landmarks epoch 1/2") for line in lines)
    whole = train_landmark_model(smoke_twin / "manifest.csv", tmp_path / "whole", **recipe)
    wa = torch.load(resumed / "weights.pt", weights_only=True)
    wb = torch.load(whole / "weights.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_unreadable_inputs_are_failed_not_fatal(smoke_model, tmp_path):
    bad = tmp_path / "not_an_image.dcm"
    bad.write_bytes(b"hello")
    pred = predict_landmarks(smoke_model, [bad, np.random.default_rng(0).random((90, 70))])
    assert pred.status[0] == "failed" and pred.reason[0] and np.isnan(pred.points[0]).all()
    assert pred.status[1] in ("ok", "flagged") and np.isfinite(pred.points[1]).all()


def _as_chest_pa(src, dst):
    """A copy of a DICOM file whose header claims a PA chest radiograph (pixels untouched)."""
    ds = pydicom.dcmread(src, force=True)
    ds.BodyPartExamined = "CHEST"
    ds.Modality = "CR"
    ds.ViewPosition = "PA"
    ds.save_as(dst)
    return dst


@pytest.mark.slow
def test_non_chest_radiographs_are_flagged_even_with_chest_headers(smoke_model, realdata, tmp_path):
    from pydicom.data import get_testdata_file

    model = load_landmark_model(smoke_model)
    files = [realdata / f for f in NON_CHEST] + [get_testdata_file("CT_small.dcm")]
    relabelled = [_as_chest_pa(f, tmp_path / f"chest_{i}.dcm") for i, f in enumerate(files)]
    assert pydicom.dcmread(relabelled[0]).BodyPartExamined == "CHEST"
    for batch in (files, relabelled):
        pred = predict_landmarks(model, batch)
        assert pred.status == ["flagged"] * len(batch), list(
            zip(map(str, batch), pred.status, pred.score, strict=True)
        )
        assert all(r for r in pred.reason)


@pytest.mark.slow
def test_chest_radiographs_like_the_training_ones_mostly_pass(smoke_model, smoke_twin, tmp_path):
    images = sorted((smoke_twin / "images").glob("*.dcm"))
    pred = predict_landmarks(smoke_model, images)
    assert np.mean([s == "ok" for s in pred.status]) >= 0.8
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.slow
def test_cli_landmarks_predict_writes_the_csv_and_fails_on_unreadable(smoke_model, smoke_twin, tmp_path, capsys):
    from bmd.cli import main

    images = sorted((smoke_twin / "images").iterdir())[:3]
    out = tmp_path / "lm.csv"
    assert main(["landmarks", "predict", "--model", str(smoke_model), *map(str, images), "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns[:4]) == ["image", "status", "reason", "plausibility"] and len(frame.columns) == 36
    bad = tmp_path / "bad.dcm"
    bad.write_text("nope")
    assert main(["landmarks", "predict", "--model", str(smoke_model), str(images[0]), str(bad)]) == 1
    assert "not a DICOM, PNG or JPEG file" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_landmarks_train_uses_the_profile_recipe(smoke_twin, tmp_path):
    from bmd.cli import main

    out = tmp_path / "detector"
    args = ["landmarks", "train", "--manifest", str(smoke_twin / "manifest.csv"), "--out", str(out),
            "--profile", "smoke", "--epochs", "1", "--quiet"]
    assert main(args) == 0
    assert json.loads((out / "config.json").read_text())["model"]["input_size"] == 128
