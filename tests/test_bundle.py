"""Model bundles: export from a training run made as the book makes it, round trip, refusals.

The smoke study built here (a 24-case twin, a briefly trained detector, the book's ROI cache and a
2-epoch multi-ROI run) is shared with ``test_predict.py`` through :func:`smoke_study`, which reuses
whatever an earlier module of the same session already built under pytest's base temp folder.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bmd.bundle import (
    BUNDLE_FILE,
    BUNDLE_FORMAT,
    WEIGHTS_FILE,
    Bundle,
    BundleError,
    export_bundle,
    load_bundle,
)

pytestmark = pytest.mark.slow

#: a ResNet-18 backbone: at this tiny size and training budget a VGG-16's output is nearly constant,
#: which would make the parity and encoding checks vacuous; any backbone goes through the same code
BACKBONE = "resnet18"


def smoke_study(root: Path) -> dict:
    """Build (or reuse) a smoke twin, detector, ROI cache, training run and its bundle under ``root``."""
    from bmd import paths, stages
    from bmd.cohort import load_cohort
    from bmd.config import load_profile
    from bmd.experiments import ModelSpec
    from bmd.landmarks.train import train_landmark_model
    from bmd.twin import generate_twin

    torch.set_num_threads(2)
    cfg = load_profile("smoke", twin_n_train=12, twin_n_val=6, twin_n_test=6, train_epochs=2)
    generate_twin(paths.twin_dir(cfg.profile, cfg.seed, root), cfg, seed=cfg.seed, workers=1, progress=False)
    cohort = load_cohort(cfg, out=root)
    detector = paths.run_dir(cfg.profile, root) / "landmark_model"
    if not (detector / "config.json").is_file():
        # a short recipe: the tests need a working detector with a calibrated plausibility model, not
        # an accurate one
        train_landmark_model(cohort.manifest_path, detector, input_size=64, epochs=2, batch_size=4, seed=0,
                             progress=False, log=None)
    results = stages.evaluate_detector(cfg, cohort, detector, root, evaluate=False)
    cache = stages.roi_cache(cfg, cohort, results, detector, root)
    run = stages.train_models(cfg, cohort, cache, [ModelSpec("multi_roi", BACKBONE)], root)[f"multi_roi-{BACKBONE}"]
    bundle = root / "bundle"
    if not (bundle / BUNDLE_FILE).is_file():
        export_bundle(run, detector, bundle)
    return {"root": root, "manifest": cohort.manifest_path, "cohort": cohort.manifest, "detector": detector,
            "cache": cache, "run": run, "bundle": bundle}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    return smoke_study(tmp_path_factory.getbasetemp() / "smoke_study")


@pytest.fixture()
def bundle_copy(study, tmp_path) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(study["bundle"], dest)
    return dest


def test_bundle_describes_itself_and_names_no_case_or_patient(study):
    info = json.loads((study["bundle"] / BUNDLE_FILE).read_text())
    cache = study["cache"]
    assert info["format"] == BUNDLE_FORMAT
    assert info["model"] == {**info["model"], "kind": "multi_roi", "family": "all", "backbone": BACKBONE,
                             "width": 0.125, "batch_norm": True}
    # crop sides and storage come from the training cache itself
    assert (info["inputs"]["chest_size"], info["inputs"]["roi_size"]) == (cache.chest_size, cache.roi_size)
    assert info["inputs"]["storage"] == str(cache.chest.dtype) == "uint8"
    assert info["inputs"]["geometry"] == cache.meta["inputs"]["geometry"]
    scaler = torch.load(study["run"] / "checkpoint.pt", weights_only=False)["scaler"]
    np.testing.assert_allclose(info["target_scaler"]["mean"], scaler["mean"])
    np.testing.assert_allclose(info["target_scaler"]["std"], scaler["std"])
    assert info["t_scores"] == {**info["t_scores"], "reference": "hologic", "sex": "F", "threshold": -2.5}
    saved_cfg = json.loads((study["run"] / "config.json").read_text())
    assert info["provenance"]["training_config"] == saved_cfg
    assert {"val", "test"} <= set(info["provenance"]["metrics"])
    assert {p.name for p in (study["bundle"] / "landmarks").iterdir()} == {"config.json", "weights.pt",
                                                                          "plausibility.pt"}
    assert set(info["files"]) == {WEIGHTS_FILE, "landmarks/config.json", "landmarks/weights.pt",
                                  "landmarks/plausibility.pt"}
    text = (study["bundle"] / BUNDLE_FILE).read_text()
    for ident in [*study["cohort"]["case_id"], *study["cohort"]["patient_id"]]:
        assert not re.search(rf"\b{re.escape(ident)}\b", text), ident


def test_round_trip_gives_the_run_weights_in_eval_mode(study):
    bundle = load_bundle(study["bundle"])
    assert isinstance(bundle, Bundle) and not bundle.model.training and not bundle.landmarks.net.training
    best = torch.load(study["run"] / "best.pt", weights_only=False)["model"]
    for key, value in bundle.model.state_dict().items():
        assert torch.equal(value, best[key]), key
    assert (bundle.kind, bundle.family, bundle.backbone) == ("multi_roi", "all", BACKBONE)
    assert (bundle.chest_size, bundle.roi_size, bundle.storage) == (64, 32, "uint8")
    assert (bundle.reference, bundle.sex, bundle.threshold) == ("hologic", "F", -2.5)
    assert bundle.landmarks.input_size == 64 and bundle.landmarks.plausibility is not None


def test_export_replaces_a_bundle_atomically_and_refuses_other_folders(study, tmp_path):
    dest = tmp_path / "b"
    export_bundle(study["run"], study["detector"], dest, reference="lunar", threshold=-2.0, sex="M")
    first = json.loads((dest / BUNDLE_FILE).read_text())
    assert first["t_scores"] == {**first["t_scores"], "reference": "lunar", "sex": "M", "threshold": -2.0}
    export_bundle(study["run"], study["detector"], dest)  # over an existing bundle
    assert load_bundle(dest).reference == "hologic"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temporary or old folders left
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(BundleError, match="not a model bundle; not overwriting"):
        export_bundle(study["run"], study["detector"], other)
    assert (other / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "notes"]


def test_scaler_is_refitted_exactly_when_the_checkpoint_is_gone(study, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(study["run"], run)
    (run / "checkpoint.pt").unlink()
    refit = json.loads((export_bundle(run, study["detector"], tmp_path / "b") / BUNDLE_FILE).read_text())
    saved = json.loads((study["bundle"] / BUNDLE_FILE).read_text())
    np.testing.assert_allclose(refit["target_scaler"]["mean"], saved["target_scaler"]["mean"], rtol=1e-12)
    np.testing.assert_allclose(refit["target_scaler"]["std"], saved["target_scaler"]["std"], rtol=1e-12)


def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text
    return text


def test_export_refuses_unusable_runs_with_one_line(study, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(study["run"], run)
    with pytest.raises(BundleError, match="unknown T-score reference table 'norland-x'") as e:
        export_bundle(run, study["detector"], tmp_path / "b", reference="norland-x")
    _one_line(e)
    with pytest.raises(BundleError, match="unusable landmark model bundle") as e:
        export_bundle(run, tmp_path, tmp_path / "b")
    _one_line(e)
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "cache": str(tmp_path / "gone")}))
    with pytest.raises(BundleError, match="ROI cache is gone") as e:
        export_bundle(run, study["detector"], tmp_path / "b")
    _one_line(e)
    (run / "best.pt").unlink()
    with pytest.raises(BundleError, match="no best.pt") as e:
        export_bundle(run, study["detector"], tmp_path / "b")
    _one_line(e)
    assert not (tmp_path / "b").exists()


def _edit_json(path: Path, **changes) -> None:
    info = json.loads(path.read_text())
    for dotted, value in changes.items():
        node = info
        keys = dotted.split("__")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    path.write_text(json.dumps(info))


@pytest.mark.parametrize("damage, message", [
    ("missing", "no such model bundle folder"),
    ("no_json", r"not a model bundle \(no bundle.json\)"),
    ("bad_json", "unreadable model bundle description"),
    ("format", "bundle format 'bmd-model/99'; this version reads bmd-model/1"),
    ("geometry", "cut with ROI geometry 'rois-v0'.*incompatible"),
    ("weights", "weights.pt does not match its recorded checksum"),
    ("landmarks", "landmarks/weights.pt is missing"),
    ("incomplete", "incomplete bundle.json"),
])
def test_a_damaged_or_foreign_bundle_is_refused_with_one_line(bundle_copy, damage, message):
    path = bundle_copy
    if damage == "missing":
        path = bundle_copy / "nothing-here"
    elif damage == "no_json":
        (bundle_copy / BUNDLE_FILE).unlink()
    elif damage == "bad_json":
        (bundle_copy / BUNDLE_FILE).write_text('{"format": "bmd-mo')
    elif damage == "format":
        _edit_json(bundle_copy / BUNDLE_FILE, format="bmd-model/99")
    elif damage == "geometry":
        _edit_json(bundle_copy / BUNDLE_FILE, inputs__geometry_version="rois-v0")
    elif damage == "weights":
        data = bytearray((bundle_copy / WEIGHTS_FILE).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (bundle_copy / WEIGHTS_FILE).write_bytes(bytes(data))
    elif damage == "landmarks":
        (bundle_copy / "landmarks" / "weights.pt").unlink()
    elif damage == "incomplete":
        info = json.loads((bundle_copy / BUNDLE_FILE).read_text())
        del info["target_scaler"]
        (bundle_copy / BUNDLE_FILE).write_text(json.dumps(info))
    with pytest.raises(BundleError, match=message) as e:
        load_bundle(path)
    _one_line(e)


def test_unverified_load_still_refuses_weights_of_another_model(bundle_copy, study):
    _edit_json(bundle_copy / BUNDLE_FILE, model__backbone="vgg11")
    with pytest.raises(BundleError, match="weights do not load into the described model") as e:
        load_bundle(bundle_copy, verify=False)
    _one_line(e)


def test_a_landmark_bundle_given_as_model_gets_a_hint(study):
    with pytest.raises(BundleError, match="a landmark detector .*not a model bundle"):
        load_bundle(study["detector"])


def test_training_predictions_are_reproduced_by_the_loaded_network_on_cached_crops(study):
    """The bundle's network and scaler on the cache's own crops give the run's predictions.csv."""
    from bmd.data import _as_float

    bundle = load_bundle(study["bundle"])
    cache = study["cache"]
    pred = pd.read_csv(study["run"] / "predictions.csv", dtype={"case_id": str})
    rows = [cache.index(c) for c in pred["case_id"]]
    chest = _as_float(np.asarray(cache.chest[rows]))[:, None]
    local = _as_float(np.asarray(cache.local[rows]))[:, :, None]
    with torch.inference_mode():
        z = bundle.model(chest, local).joint.numpy()
    np.testing.assert_allclose(bundle.scaler.inverse(z), pred[[f"pred_l{k}" for k in range(1, 5)]].to_numpy(),
                               atol=1e-5)
