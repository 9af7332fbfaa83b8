"""``predict_images``, ``bmd predict`` and ``bmd evaluate`` on the smoke study of ``test_bundle.py``:
parity with the training run, encodings, failures, identifiers, real radiographs, external validation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from test_bundle import smoke_study

from bmd.cli import main
from bmd.deploy.bundle import load_bundle
from bmd.deploy.predict import CONTRACT_COLUMNS, predict_images
from bmd.inputs.tscores import t_score, who_category
from bmd.io import read_image

pytestmark = pytest.mark.slow

BMD = [f"bmd_l{k}" for k in range(1, 5)]
PRED = [f"pred_l{k}" for k in range(1, 5)]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    return smoke_study(tmp_path_factory.getbasetemp() / "smoke_study")


@pytest.fixture(scope="module")
def bundle(study):
    return load_bundle(study["bundle"])


@pytest.fixture(scope="module")
def test_cases(study) -> pd.DataFrame:
    m = study["cohort"]
    return m[m["split"] == "test"].reset_index(drop=True)


@pytest.fixture(scope="module")
def run_predictions(study) -> pd.DataFrame:
    return pd.read_csv(study["run"] / "predictions.csv", dtype={"case_id": str}).set_index("case_id")


# --------------------------------------------------------------------------------------- parity


def test_predictions_match_the_training_run_and_follow_the_contract(bundle, test_cases, run_predictions):
    paths = list(test_cases["image_path"])
    # the network's own output (raw): the run's predictions.csv is uncalibrated
    frame = predict_images(paths, bundle, batch_size=4, raw=True)  # two batches: batching must not matter
    assert list(frame.columns) == [*CONTRACT_COLUMNS, "plausibility"]
    assert CONTRACT_COLUMNS[-2:] == ("category", "calibration") and set(frame["calibration"]) == {"none"}
    assert list(frame["image"]) == paths
    assert set(frame["status"]) <= {"ok", "flagged"}
    expected = run_predictions.loc[test_cases["case_id"], PRED].to_numpy()
    assert np.ptp(expected, axis=0).min() > 1e-3  # the model responds to its input: the check is not vacuous
    # the run's CSV has 5 decimals; crops cut here must be the cache's crops for this to hold
    np.testing.assert_allclose(frame[BMD].to_numpy(), expected, atol=2e-5)
    for k, v in enumerate(("L1", "L2", "L3", "L4")):
        np.testing.assert_allclose(frame[f"t_l{k + 1}"], t_score(frame[BMD[k]].to_numpy(), v, "F", "hologic"))
    lowest = frame[[f"t_l{k}" for k in range(1, 5)]].min(axis=1).to_numpy()
    assert list(frame["category"]) == list(who_category(lowest, -2.5))
    one_by_one = predict_images(paths, bundle, batch_size=1, raw=True)
    np.testing.assert_allclose(one_by_one[BMD].to_numpy(), frame[BMD].to_numpy(), atol=1e-5)
    male = predict_images(paths[:1], bundle, sex="M", raw=True)
    # T from BMD with the male table (BMD to float32 rounding: a batch of one versus a batch of four)
    assert male["t_l1"].iloc[0] == pytest.approx(t_score(frame["bmd_l1"].iloc[0], "L1", "M", "hologic"), abs=1e-5)


def test_a_roi_model_bundle_predicts_from_its_family_crops(study, test_cases, tmp_path):
    """A ROI model (here the paired clavicle family) goes through the same crops, family selection and
    scaler as training: the same numbers as the network on the cache's own crops."""
    import dataclasses
    import shutil

    import torch

    from bmd.deploy.bundle import export_bundle
    from bmd.model.dataset import as_float as _as_float
    from bmd.model.dataset import select_family
    from bmd.model.train import TrainConfig, build_model

    run = tmp_path / "run"
    run.mkdir()
    cfg = dataclasses.replace(TrainConfig.load(study["run"] / "config.json"), run_dir=str(run), model="roi",
                              family="clavi")
    cfg.save(run / "config.json")
    torch.manual_seed(0)
    torch.save({"model": build_model(cfg).state_dict(), "epoch": 0}, run / "best.pt")
    shutil.copyfile(study["run"] / "checkpoint.pt", run / "checkpoint.pt")  # the target scaler
    bundle = load_bundle(export_bundle(run, study["detector"], tmp_path / "bundle"))
    assert (bundle.kind, bundle.family) == ("roi", "clavi")
    frame = predict_images(list(test_cases["image_path"]), bundle)
    cache = study["cache"]
    rows = [cache.index(c) for c in test_cases["case_id"]]
    chest = _as_float(np.asarray(cache.chest[rows]))[:, None]
    local = _as_float(np.asarray(cache.local[rows]))[:, :, None]
    with torch.inference_mode():
        z = bundle.model(select_family(chest, local, "clavi")).numpy()
    np.testing.assert_allclose(frame[BMD].to_numpy(), bundle.scaler.inverse(z), atol=1e-4)


# ------------------------------------------------------------------------------------ encodings


def _dataset(stored: np.ndarray, photometric: str = "MONOCHROME2", **extra) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition = "CR", "PA"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    for key, value in extra.items():
        setattr(ds, key, value)
    return ds


@pytest.fixture(scope="module")
def picture(test_cases) -> np.ndarray:
    """A twin test radiograph as 16-bit values spanning 0..65535 exactly: with no window, a DICOM reads as
    value / 65535 (min–max), which is also how a 16-bit PNG reads, so every encoding below is lossless."""
    image, _ = read_image(test_cases["image_path"].iloc[0])
    return np.round((image - image.min()) / (image.max() - image.min()) * 65535).astype(np.uint16)


def _write_variant(name: str, u16: np.ndarray, folder: Path) -> Path:
    path = folder / f"{name}.dcm"
    if name == "plain":
        _dataset(u16).save_as(path, enforce_file_format=True)
    elif name == "monochrome1":  # inverted storage, displayed inverted again: the same picture
        _dataset(65535 - u16, "MONOCHROME1").save_as(path, enforce_file_format=True)
    elif name in ("rle", "jpeg2000"):
        ds = _dataset(u16)
        try:
            ds.compress(RLELossless if name == "rle" else JPEG2000Lossless)
        except (RuntimeError, ImportError, ValueError, NotImplementedError) as exc:
            pytest.skip(f"no {name} encoder here ({exc.__class__.__name__})")
        ds.save_as(path, enforce_file_format=True)
    elif name == "big-endian":
        ds = _dataset(u16)
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        ds.PixelData = u16.astype(">u2").tobytes()  # OW is written as is: swap the bytes ourselves
        ds.save_as(path, enforce_file_format=True)
    elif name == "no-preamble-no-meta":
        ds = _dataset(u16)
        del ds.file_meta
        ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
        assert path.read_bytes()[128:132] != b"DICM"
    elif name == "png16":
        from PIL import Image

        path = folder / "png16.png"
        Image.fromarray(u16).save(path)
    return path


@pytest.fixture(scope="module")
def plain_prediction(picture, bundle, tmp_path_factory) -> pd.Series:
    path = _write_variant("plain", picture, tmp_path_factory.mktemp("plain"))
    return predict_images([path], bundle).iloc[0]


@pytest.mark.parametrize("variant", ["monochrome1", "rle", "jpeg2000", "big-endian", "no-preamble-no-meta", "png16"])
def test_the_same_picture_in_any_lossless_encoding_gets_the_same_prediction(variant, picture, bundle,
                                                                            plain_prediction, tmp_path):
    path = _write_variant(variant, picture, tmp_path)
    np.testing.assert_allclose(read_image(path)[0], picture / 65535.0, atol=1e-6)
    row = predict_images([path], bundle).iloc[0]
    assert row["status"] == plain_prediction["status"] != "failed"
    # lossless encodings decode to the same floats (to float32 rounding); the only slack left is a crop
    # pixel sitting exactly on a uint8 rounding edge, worth far less than 1e-4 g/cm² (the BMD SD is ~0.1)
    np.testing.assert_allclose(row[BMD].to_numpy(float), plain_prediction[BMD].to_numpy(float), atol=1e-4)
    assert row["category"] == plain_prediction["category"]


# ------------------------------------------------------------------------------ failures and CLI


def test_a_bad_file_among_good_ones_fails_alone_and_sets_the_exit_status(test_cases, study, tmp_path, capsys):
    good = [Path(p) for p in test_cases["image_path"].iloc[:2]]
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\0" * 128 + b"DICM" + b"\x13" * 64)
    truncated = tmp_path / "truncated.dcm"
    data = good[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out" / "results.csv"
    overlays = tmp_path / "overlays"
    args = ["predict", str(good[0]), str(garbage), str(truncated), str(tmp_path / "absent.dcm"), str(good[1]),
            "--model", str(study["bundle"]), "--out", str(out), "--overlay", str(overlays), "--quiet"]
    assert main(args) == 1
    frame = pd.read_csv(out, keep_default_na=False)
    assert list(frame.columns[: len(CONTRACT_COLUMNS)]) == list(CONTRACT_COLUMNS)
    assert list(frame["status"] == "failed") == [False, True, True, True, False]
    assert all(r.startswith("cannot read: ") for r in frame["reason"][1:4])
    assert "file not found" in frame["reason"][3]
    assert (frame.loc[[1, 2, 3], BMD] == "").all().all() and (frame.loc[[1, 2, 3], "category"] == "").all()
    assert frame.loc[[0, 4], BMD].astype(float).notna().all().all()
    assert sorted(p.name for p in overlays.iterdir()) == sorted(f"{p.stem}.png" for p in good)
    assert [p.name for p in out.parent.iterdir()] == ["results.csv"]  # written atomically, nothing left over
    # only good files: exit status 0; a folder expands to its images
    folder = tmp_path / "good"
    folder.mkdir()
    for p in good:
        (folder / p.name).write_bytes(p.read_bytes())
    assert main(["predict", str(folder), "--model", str(study["bundle"]), "--out", str(tmp_path / "g.csv"),
                 "--quiet"]) == 0
    assert len(pd.read_csv(tmp_path / "g.csv")) == 2


def test_unusable_bundle_or_output_is_one_line_without_traceback(study, test_cases, tmp_path, capsys):
    image = str(test_cases["image_path"].iloc[0])
    assert main(["predict", image, "--model", str(tmp_path / "no-bundle")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such model bundle folder" in err and "Traceback" not in err
    assert main(["predict", image, "--model", str(study["detector"])]) == 1
    assert "not a model bundle" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["predict", image, "--model", str(study["bundle"]), "--out", str(blocker / "r.csv"),
                 "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bmd predict: ") and "Traceback" not in err
    for verb in ("predict", "evaluate"):
        with pytest.raises(SystemExit) as e:
            main([verb, "--help"])
        assert e.value.code == 0
        assert "--model" in capsys.readouterr().out


PLANTED = {"PatientName": "Doe^Jane", "PatientID": "PID-314159", "PatientBirthDate": "19450101",
           "AccessionNumber": "ACC-271828", "InstitutionName": "St Elsewhere Hospital",
           "ReferringPhysicianName": "House^Gregory", "OtherPatientIDs": "OPID-161803",
           "StudyDescription": "CHEST PA Jane Doe"}


def _leaks(text: str) -> list[str]:
    needles = {*PLANTED.values(), "Doe", "Jane", "314159", "271828", "Elsewhere", "Gregory", "161803", "19450101"}
    return [n for n in needles if n.lower() in text.lower()]


def _png_text(data: bytes) -> str:
    """The text chunks of a PNG (tEXt/zTXt/iTXt): where a writer would put metadata."""
    import struct
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, texts = 8, []
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            body = key + b" " + zlib.decompress(rest[1:])
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            texts.append(body.decode("latin-1"))
        pos += 12 + length
    return "\n".join(texts)


@pytest.mark.parametrize("naming", ["file", "hash"])
def test_no_header_identifier_reaches_the_csv_or_the_overlays(naming, test_cases, study, tmp_path):
    ds = pydicom.dcmread(test_cases["image_path"].iloc[0])
    for key, value in PLANTED.items():
        setattr(ds, key, value)
    path = tmp_path / "scan.dcm"
    ds.save_as(path, enforce_file_format=True)
    out, overlays = tmp_path / "r.csv", tmp_path / "ov"
    assert main(["predict", str(path), "--model", str(study["bundle"]), "--out", str(out), "--overlay",
                 str(overlays), "--name", naming, "--quiet"]) == 0
    text = out.read_text()
    assert _leaks(text) == []
    names = [p.name for p in overlays.iterdir()]
    assert len(names) == 1 and _leaks(names[0]) == []
    assert _leaks(_png_text((overlays / names[0]).read_bytes())) == []
    image = pd.read_csv(out)["image"].iloc[0]
    if naming == "hash":
        assert re.fullmatch(r"sha256:[0-9a-f]{16}", image) and "scan" not in text
        assert names == [image.replace(":", "-") + ".png"]
    else:
        assert image == str(path) and names == ["scan.png"]


# ------------------------------------------------------------------------------- real radiographs

NOT_CHEST = ("pydicom-data/RG3_J2KR.dcm", "pydicom-data/RG3_J2KI.dcm", "fo-dicom/CR-ModalitySequenceLUT.dcm",
             "fo-dicom/GH133.dcm", "pydicom-data/vlut_04.dcm")
CHEST = ("pydicom-data/RG1_J2KI.dcm", "fo-dicom/CR-MONO1-10-chest", "torchxrayvision/00000001_000.png",
         "torchxrayvision/00027426_000.png", "CheXmask-Database/Example/utils_example1.jpg")


def test_every_real_file_gets_an_honest_row(realdata, bundle):
    files = sorted(p for p in realdata.rglob("*") if p.is_file())
    frame = predict_images(files, bundle).set_index(pd.Index([p.relative_to(realdata).as_posix() for p in files]))
    assert len(frame) == len(files) and set(frame["status"]) <= {"ok", "flagged", "failed"}
    failed = frame[frame["status"] == "failed"]
    assert (failed["reason"].str.len() > 0).all() and failed[BMD].isna().all().all()
    given = frame[frame["status"] != "failed"]
    assert np.isfinite(given[BMD + [f"t_l{k}" for k in range(1, 5)]].to_numpy(float)).all()
    assert given["category"].isin(["normal", "osteopenia", "osteoporosis"]).all()
    assert (frame.loc[frame["status"] == "flagged", "reason"].str.len() > 0).all()
    for rel in NOT_CHEST:  # a tibia, a dental panoramic, a mammogram, a test pattern are never "ok"
        if rel in frame.index:
            assert frame.loc[rel, "status"] == "flagged", rel
    for rel in CHEST:  # real chest films are read and predicted (flagged or not: an honest verdict)
        if rel in frame.index:
            assert frame.loc[rel, "status"] != "failed", (rel, frame.loc[rel, "reason"])
    for rel in frame.index:
        if rel.endswith((".txt", ".md", "LICENSE")):
            assert frame.loc[rel, "reason"].startswith("cannot read"), rel
        if "dicomdirtests" in rel:  # 16x16 thumbnails
            assert frame.loc[rel, "reason"].startswith("image too small"), rel


# ------------------------------------------------------------------------------ external validation


def test_evaluate_on_the_twin_scores_its_test_split_like_the_book(study, run_predictions, tmp_path):
    from bmd.deploy.external import evaluate_bundle
    from bmd.evaluation.predictions import evaluate_predictions

    result = evaluate_bundle(study["bundle"], study["manifest"], tmp_path / "ev", n_boot=200, raw=True)
    assert result["rows"] == "test" and result["n_cases"] == 6 and result["n_failed"] == 0
    assert result["same_manifest_as_training"] is True and result["calibration"] == "none"
    assert {p.name for p in (tmp_path / "ev").iterdir()} == {"predictions.csv", "metrics.json", "predicted_vs_dxa.png"}
    assert (tmp_path / "ev" / "predicted_vs_dxa.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved == result
    pred = pd.read_csv(tmp_path / "ev" / "predictions.csv", dtype={"case_id": str})
    assert set(pred["split"]) == {"test"} and (pred["status"] != "failed").all() and set(pred["calibration"]) == {
        "none"}
    np.testing.assert_allclose(pred[PRED].to_numpy(), run_predictions.loc[pred["case_id"], PRED].to_numpy(),
                               atol=2e-5)
    book = evaluate_predictions(run_predictions.reset_index(), "test", n_boot=200, seed=0).set_index("vertebra")
    ours = pd.DataFrame(result["metrics"]).set_index("vertebra")
    assert list(ours.index) == ["L1", "L2", "L3", "L4", "avg"]
    for col in ("r", "mae", "rmse", "bias", "loa_low", "loa_high"):
        np.testing.assert_allclose(ours[col].astype(float), book[col].astype(float), atol=1e-3, err_msg=col)
    assert {"r_lo", "r_hi", "auc", "auc_lo", "auc_hi"} <= set(ours.columns)
    assert set(result["lowest_t"]) >= {"auc", "auc_lo", "auc_hi", "sensitivity", "specificity", "n"}


def test_evaluate_on_another_sites_manifest_lists_failed_images(study, tmp_path, capsys):
    raw = pd.read_csv(study["manifest"], dtype=str, keep_default_na=False)
    site = raw[raw["split"] == "test"].drop(columns=["split", "landmarks"]).reset_index(drop=True)
    site["image"] = [str(Path(study["manifest"]).parent / p) for p in site["image"]]
    site.loc[2, "image"] = "images/not-there.dcm"
    manifest = tmp_path / "site" / "manifest.csv"
    manifest.parent.mkdir()
    site.to_csv(manifest, index=False)
    out = tmp_path / "ev"
    code = main(["evaluate", "--model", str(study["bundle"]), "--manifest", str(manifest), "--out", str(out),
                 "--n-boot", "100", "--quiet"])
    assert code == 1
    printed = capsys.readouterr().out
    assert f"failed: {site.loc[2, 'case_id']}: cannot read: file not found" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rows"] == "all" and metrics["n_cases"] == 6 and metrics["n_failed"] == 1
    assert metrics["same_manifest_as_training"] is False
    assert metrics["calibration"] == load_bundle(study["bundle"]).calibration_name  # the default: as bmd predict
    assert f"calibration {metrics['calibration']}" in printed
    assert metrics["failed"] == [{"case_id": site.loc[2, "case_id"], "reason": "cannot read: file not found"}]
    assert metrics["metrics"][0]["n"] == 5  # the failed case is counted and listed, not scored
    pred = pd.read_csv(out / "predictions.csv", dtype={"case_id": str})
    assert len(pred) == 6 and pred.loc[2, "status"] == "failed" and pred.loc[2, PRED].isna().all()
    # an invalid manifest: every problem on its own line, exit status 1
    bad = tmp_path / "bad.csv"
    site.drop(columns=["sex"]).to_csv(bad, index=False)
    assert main(["evaluate", "--model", str(study["bundle"]), "--manifest", str(bad), "--out", str(out)]) == 1
    assert "column sex: required column missing" in capsys.readouterr().err

