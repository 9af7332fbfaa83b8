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

from bmd.deploy.bundle import (
    BUNDLE_FILE,
    BUNDLE_FORMAT,
    CARD_FILE,
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
    from bmd.infra import paths
    from bmd.inputs.twin import generate_twin
    from bmd.landmarks.fit import train_landmark_model
    from bmd.study import stages
    from bmd.study.cohort import load_cohort
    from bmd.study.config import load_profile
    from bmd.study.experiments import ModelSpec

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
    # the run's config, its paths reduced to names (a bundle holds no absolute path)
    assert info["provenance"]["training_config"] == {
        **saved_cfg, **{k: Path(saved_cfg[k]).name for k in ("run_dir", "cache", "manifest")}}
    assert {"val", "test"} <= set(info["provenance"]["metrics"])
    assert {p.name for p in (study["bundle"] / "landmarks").iterdir()} == {"config.json", "weights.pt",
                                                                          "plausibility.pt"}
    assert set(info["files"]) == {WEIGHTS_FILE, CARD_FILE, "landmarks/config.json", "landmarks/weights.pt",
                                  "landmarks/plausibility.pt"}
    for name in (BUNDLE_FILE, CARD_FILE, "landmarks/config.json"):
        text = (study["bundle"] / name).read_text()
        for ident in [*study["cohort"]["case_id"], *study["cohort"]["patient_id"]]:
            assert not re.search(rf"\b{re.escape(ident)}\b", text), (name, ident)


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


def test_scaler_is_the_runs_own_when_the_checkpoint_is_gone(study, tmp_path):
    """best.pt holds the scaler training fitted; without it and the checkpoint the export stops in one line."""
    run = tmp_path / "run"
    shutil.copytree(study["run"], run)
    (run / "checkpoint.pt").unlink()
    again = json.loads((export_bundle(run, study["detector"], tmp_path / "b") / BUNDLE_FILE).read_text())
    saved = json.loads((study["bundle"] / BUNDLE_FILE).read_text())
    assert again["target_scaler"] == saved["target_scaler"]
    best = torch.load(run / "best.pt", weights_only=False)
    del best["scaler"]
    torch.save(best, run / "best.pt")
    with pytest.raises(BundleError, match="no target scaler") as e:
        export_bundle(run, study["detector"], tmp_path / "c")
    assert _one_line(e)


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
    with pytest.raises(BundleError, match="unusable landmark detector") as e:
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


def test_a_landmark_detector_given_as_model_gets_a_hint(study):
    with pytest.raises(BundleError, match="a landmark detector .*not a model bundle"):
        load_bundle(study["detector"])


def test_training_predictions_are_reproduced_by_the_loaded_network_on_cached_crops(study):
    """The bundle's network and scaler on the cache's own crops give the run's predictions.csv."""
    from bmd.model.dataset import as_float as _as_float

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


# ----------------------------------------------------------------------------- calibration, card, paths


def _run_with_known_shrinkage(study, tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """A copy of the study's run whose validation predictions shrink the truth by a known line."""
    run = tmp_path / "run"
    shutil.copytree(study["run"], run)
    pred = pd.read_csv(run / "predictions.csv", dtype={"case_id": str, "patient_id": str})
    val = pred["split"] == "val"
    rng = np.random.default_rng(0)
    for k in range(1, 5):
        truth = pred.loc[val, f"bmd_l{k}"].to_numpy(float)
        pred.loc[val, f"pred_l{k}"] = 0.3 + 0.6 * truth + rng.normal(0, 0.01, len(truth))
    pred.to_csv(run / "predictions.csv", index=False)
    return run, pred


def test_the_validation_recalibration_travels_in_the_bundle_and_predict_applies_it(study, tmp_path, capsys):
    from bmd.cli import main
    from bmd.deploy.predict import predict_images
    from bmd.evaluation.screening import Recalibration
    from bmd.inputs.tscores import t_score, who_category

    run, pred = _run_with_known_shrinkage(study, tmp_path)
    dest = export_bundle(run, study["detector"], tmp_path / "b")
    info = json.loads((dest / BUNDLE_FILE).read_text())
    fitted = Recalibration.fit(pred)
    cal = info["calibration"]
    assert cal["method"] == "validation-linear" and cal["split"] == "val" and cal["n_cases"] == int(
        (pred["split"] == "val").sum())
    np.testing.assert_allclose(cal["slope"], fitted.slope)
    np.testing.assert_allclose(cal["intercept"], fitted.intercept)
    assert all(0.5 < s < 0.7 for s in cal["slope"])
    scale, offset = np.array(cal["scale"]), np.array(cal["offset"])
    bundle = load_bundle(dest)
    assert bundle.calibration == fitted and bundle.calibration_name == "validation-linear"

    images = list(study["cohort"].query("split == 'test'")["image_path"])[:3]
    calibrated = predict_images(images, bundle)
    raw = predict_images(images, bundle, raw=True)
    assert set(calibrated["calibration"]) == {"validation-linear"} and set(raw["calibration"]) == {"none"}
    bmd_cols = [f"bmd_l{k}" for k in range(1, 5)]
    np.testing.assert_allclose(calibrated[bmd_cols].to_numpy(), scale * raw[bmd_cols].to_numpy() + offset,
                               rtol=1e-9, atol=1e-12)
    # T-scores and the category come from the numbers reported
    for k, v in enumerate(("L1", "L2", "L3", "L4")):
        np.testing.assert_allclose(calibrated[f"t_l{k + 1}"], t_score(calibrated[bmd_cols[k]].to_numpy(), v, "F",
                                                                      "hologic"))
    lowest = calibrated[[f"t_l{k}" for k in range(1, 5)]].min(axis=1).to_numpy()
    assert list(calibrated["category"]) == list(who_category(lowest, -2.5))

    # the command line: calibrated by default, --raw for the network's output, the column says which
    assert main(["predict", *images, "--model", str(dest), "--out", str(tmp_path / "cal.csv"), "--quiet"]) == 0
    assert "calibration validation-linear" in capsys.readouterr().out
    assert main(["predict", *images, "--model", str(dest), "--out", str(tmp_path / "raw.csv"), "--raw",
                 "--quiet"]) == 0
    cal_csv, raw_csv = pd.read_csv(tmp_path / "cal.csv"), pd.read_csv(tmp_path / "raw.csv")
    assert list(cal_csv.columns[:13]) == ["image", "status", "reason", *bmd_cols, "t_l1", "t_l2", "t_l3", "t_l4",
                                          "category", "calibration"]
    assert set(cal_csv["calibration"]) == {"validation-linear"} and set(raw_csv["calibration"]) == {"none"}
    np.testing.assert_allclose(cal_csv[bmd_cols].to_numpy(), scale * raw_csv[bmd_cols].to_numpy() + offset,
                               atol=3e-4)  # the CSV has 4 decimals


def test_a_bundle_without_calibration_predicts_raw(study, tmp_path):
    from bmd.deploy.predict import predict_images

    run, _ = _run_with_known_shrinkage(study, tmp_path)
    dest = export_bundle(run, study["detector"], tmp_path / "b")
    images = list(study["cohort"].query("split == 'test'")["image_path"])[:2]
    raw = predict_images(images, load_bundle(dest), raw=True)
    info = json.loads((dest / BUNDLE_FILE).read_text())
    del info["calibration"]  # a bundle exported before calibration existed
    (dest / BUNDLE_FILE).write_text(json.dumps(info))
    old = load_bundle(dest)
    assert old.calibration is None and old.calibration_name == "none"
    frame = predict_images(images, old)
    assert set(frame["calibration"]) == {"none"}
    np.testing.assert_allclose(frame[[f"bmd_l{k}" for k in range(1, 5)]].to_numpy(),
                               raw[[f"bmd_l{k}" for k in range(1, 5)]].to_numpy())
    # a run whose predictions do not follow the truth: no calibration, and the card and bundle.json say why
    pred = pd.read_csv(run / "predictions.csv")
    pred.loc[pred["split"] == "val", "pred_l2"] = 1.0
    pred.to_csv(run / "predictions.csv", index=False)
    dest = export_bundle(run, study["detector"], tmp_path / "flat")
    cal = json.loads((dest / BUNDLE_FILE).read_text())["calibration"]
    assert cal["method"] == "none" and "pred_l2" in cal["reason"]
    assert load_bundle(dest).calibration is None
    assert "None: `bmd predict` reports the network's raw output" in (dest / CARD_FILE).read_text()


def _strings(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def test_no_absolute_path_anywhere_in_an_exported_bundle(study, tmp_path_factory):
    import os

    bundle = study["bundle"]
    cfg = json.loads((study["run"] / "config.json").read_text())
    assert Path(cfg["cache"]).is_absolute() and Path(cfg["manifest"]).is_absolute()  # what there was to strip
    forbidden = {str(tmp_path_factory.getbasetemp()), str(study["root"]), os.path.expanduser("~"),
                 str(Path.cwd())}
    forbidden = {f for f in forbidden if len(f) > 1}
    files = [p for p in bundle.rglob("*") if p.is_file()]
    assert {p.relative_to(bundle).as_posix() for p in files} >= {BUNDLE_FILE, CARD_FILE, "landmarks/config.json"}
    for path in files:
        data = path.read_bytes()
        for f in forbidden:
            assert f.encode() not in data, (path.name, f)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # tensors
        # any path-like token: none may exist on this machine or point into a temporary or home folder
        for token in re.findall(r"(?<![\w.])/[^\s\"'`|)\]]+", text):
            assert not Path(token).exists(), (path.name, token)
        if path.suffix == ".json":
            for s in _strings(json.loads(text)):
                assert not s.startswith(("/", "~")) and not re.match(r"^[A-Za-z]:[\\/]", s), (path.name, s)


def test_the_model_card_says_what_the_model_is_for_and_what_it_was_trained_on(study):
    import hashlib

    from bmd.deploy.model_card import CARD_SECTIONS

    card = (study["bundle"] / CARD_FILE).read_text()
    info = json.loads((study["bundle"] / BUNDLE_FILE).read_text())
    headings = re.findall(r"^## (.+)$", card, flags=re.M)
    assert headings == list(CARD_SECTIONS)
    assert {"Training data", "Test performance", "Calibration", "Intended use", "Input requirements",
            "Known limits"} <= set(headings)
    oracle = json.loads((Path(study["manifest"]).parent / "oracle.json").read_text())
    sha = hashlib.sha256(Path(study["manifest"]).read_bytes()).hexdigest()
    data = info["training_data"]
    assert data["source"] == "twin" and data["manifest"] == "manifest.csv" and data["manifest_sha256"] == sha
    assert data["twin"]["spec_hash"] == oracle["spec_hash"] and data["twin"]["spec_version"] == oracle["spec_version"]
    assert data["split_sizes"] == {"train": 12, "val": 6, "test": 6}
    assert oracle["spec_hash"] in card and oracle["spec_version"] in card and sha in card
    assert "12 training, 6 validation" in card and "6 test cases" in card
    assert "not a diagnostic device" in card and "not for real patients" in card
    assert f"At least {info['inputs']['chest_size']} pixels" in card and "DICOM" in card and "PNG" in card
    # test R and AUC with CIs as the run measured them; bias and MAE from its predictions
    metrics = {r["vertebra"]: r for r in json.loads((study["run"] / "metrics.json").read_text())["splits"]["test"]}
    rows = {r["vertebra"]: r for r in info["performance"]["test"]["rows"]}
    pred = pd.read_csv(study["run"] / "predictions.csv").query("split == 'test'")
    for v in ("L1", "L2", "L3", "L4", "avg"):
        assert rows[v]["r"] == pytest.approx(metrics[v]["r"]) and rows[v]["auc_lo"] == pytest.approx(metrics[v]["auc_lo"], nan_ok=True)
    diff = pred["pred_l1"] - pred["bmd_l1"]
    assert rows["L1"]["bias"] == pytest.approx(diff.mean()) and rows["L1"]["mae"] == pytest.approx(diff.abs().mean())
    assert rows["L1"]["bias_lo"] <= rows["L1"]["bias"] <= rows["L1"]["bias_hi"]
    m1 = metrics["L1"]
    with_ci = bool(np.isfinite([m1["r_lo"], m1["r_hi"]]).all())  # a tiny split may leave a CI undefined
    assert (f"{m1['r']:.3f} [{m1['r_lo']:.3f}, {m1['r_hi']:.3f}]" if with_ci else f"{m1['r']:.3f}") in card
    assert f"{rows['L1']['mae']:.3f} [" in card
    cal = info["calibration"]["method"]
    assert (cal == "validation-linear") == ("`validation-linear`: a regression output" in card)


def test_an_attention_run_exports_loads_and_predicts_unchanged(study, tmp_path):
    """A run of kind ``attention`` (the study's run with attention weights in its best.pt) goes through
    export, load and ``bmd predict`` like a multi-ROI run."""
    import dataclasses

    from bmd.cli import main
    from bmd.model.dataset import as_float as _as_float
    from bmd.model.networks import AttentionROIModel
    from bmd.model.train import TrainConfig, build_model

    run = tmp_path / "run"
    shutil.copytree(study["run"], run)
    cfg = dataclasses.replace(TrainConfig.load(run / "config.json"), model="attention", run_dir=str(run))
    cfg.save(run / "config.json")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    torch.save({"model": model.state_dict(), "epoch": 0}, run / "best.pt")
    export_bundle(run, study["detector"], tmp_path / "bundle")
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.kind == "attention" and isinstance(bundle.model, AttentionROIModel)
    for key, value in bundle.model.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    assert "attention" in (tmp_path / "bundle" / CARD_FILE).read_text()
    cache = study["cache"]
    chest, local = _as_float(np.asarray(cache.chest[:3]))[:, None], _as_float(np.asarray(cache.local[:3]))[:, :, None]
    with torch.inference_mode():
        assert torch.equal(bundle.model(chest, local).joint, model(chest, local).joint)
    image = str(study["cohort"]["image_path"].iloc[0])
    assert main(["predict", image, "--model", str(tmp_path / "bundle"), "--out", str(tmp_path / "p.csv")]) == 0
    out = pd.read_csv(tmp_path / "p.csv")
    assert out.loc[0, "status"] in ("ok", "flagged") and np.isfinite(out.loc[0, "bmd_l1"])


def test_the_multi_roi_family_is_all_in_old_runs_and_bundles_too(study, bundle_copy, tmp_path):
    """Runs and bundles written when a multi-ROI config said family "chest" export and load as "all"."""
    assert load_bundle(study["bundle"]).family == "all"
    _edit_json(bundle_copy / BUNDLE_FILE, model__family="chest")
    assert load_bundle(bundle_copy).family == "all"
    run = tmp_path / "run"
    shutil.copytree(study["run"], run)
    _edit_json(run / "config.json", family="chest")
    exported = json.loads((export_bundle(run, study["detector"], tmp_path / "b") / BUNDLE_FILE).read_text())
    assert exported["model"]["family"] == "all"


def test_a_warm_started_runs_source_is_named_by_its_run_and_digest_not_its_path():
    """The attention model's config names the multi-ROI checkpoint it started from: in a bundle, by run
    folder name, file name and SHA-256 only."""
    from bmd.deploy.bundle import _portable_config
    from bmd.model.train import TrainConfig

    cfg = TrainConfig(run_dir="/site/runs/attention-vgg16", cache="/site/cache", manifest="/site/m.csv",
                      model="attention", init_from="/site/runs/multi_roi-vgg16/best.pt", init_sha256="ab" * 32)
    out = _portable_config(cfg)
    assert out["init_from"] == "multi_roi-vgg16/best.pt" and out["init_sha256"] == "ab" * 32
    assert not any(str(v).startswith("/") for v in out.values())
