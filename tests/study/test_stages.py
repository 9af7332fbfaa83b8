"""Reuse rules of the study's stages (saved results are reused only when made from the same inputs), and the
study with a landmark detector it is given instead of one it trains (`landmark_model`)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from detectors import tiny_detector
from frames import predictions_frame
from images import chest_points, texture
from PIL import Image

from bmd.columns import COORD_COLUMNS, SPLITS
from bmd.landmarks.detector import LandmarkEvaluation, predict_landmarks
from bmd.landmarks.folder import detector_digest
from bmd.landmarks.plausibility import DESCRIPTORS
from bmd.study import stages
from bmd.study.cohort import LandmarkSourceError, check_landmark_source, load_cohort
from bmd.study.config import load_profile


def _evaluation() -> LandmarkEvaluation:
    rng = np.random.default_rng(0)
    predictions = pd.DataFrame({"case_id": ["001", "002"], "status": ["ok", "flagged"],
                                "plausibility": [0.9, np.nan], "x_0": rng.random(2)})
    return LandmarkEvaluation("test", ["001", "002"], {"model": rng.random((2, 16)) * 3}, predictions, 0.5)


def test_saved_detector_evaluation_is_reused_only_for_the_same_weights_and_manifest(tmp_path):
    bundle = tmp_path / "landmark_model"
    bundle.mkdir()
    (bundle / "weights.pt").write_bytes(b"weights")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("case_id\n001\n002\n")
    cohort = SimpleNamespace(manifest_path=manifest, manifest=pd.DataFrame({"case_id": ["001", "002"]}))
    saved = tmp_path / "landmark_eval_test.json"
    ev = _evaluation()

    assert stages._saved_evaluation(saved, bundle, cohort) is None  # nothing saved yet
    stages._save_evaluation(saved, ev, bundle, cohort)
    back = stages._saved_evaluation(saved, bundle, cohort)
    assert back is not None and back.case_ids == ev.case_ids and back.flagged_fraction == 0.5
    np.testing.assert_array_equal(back.errors["model"], ev.errors["model"])
    pd.testing.assert_frame_equal(back.predictions, ev.predictions)

    (bundle / "weights.pt").write_bytes(b"retrained weights")  # a new detector: evaluate again
    assert stages._saved_evaluation(saved, bundle, cohort) is None
    stages._save_evaluation(saved, ev, bundle, cohort)
    stat = manifest.stat()
    os.utime(manifest, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # an edited manifest: evaluate again
    assert stages._saved_evaluation(saved, bundle, cohort) is None
    marks = tmp_path / "landmarks.csv"
    marks.write_text("case_id,x_0\n001,1.0\n")
    cohort = SimpleNamespace(manifest_path=manifest, manifest=pd.DataFrame({"landmarks_path": [str(marks), ""]}))
    stages._save_evaluation(saved, ev, bundle, cohort)
    assert stages._saved_evaluation(saved, bundle, cohort) is not None
    marks.write_text("case_id,x_0\n001,2.5\n")  # corrected ground truth: evaluate again
    assert stages._saved_evaluation(saved, bundle, cohort) is None
    saved.write_text("{ not json")  # a damaged file is not trusted
    assert stages._saved_evaluation(saved, bundle, cohort) is None


def _predictions(seed: int = 0, n: int = 30) -> pd.DataFrame:
    return predictions_frame(seed, n)


def test_table_rows_are_reused_only_for_the_same_predictions(tmp_path, monkeypatch):
    from bmd.study import report

    cfg = SimpleNamespace(profile="smoke", seed=0)
    frames = {"multi_roi": _predictions()}
    first = stages._results_rows(cfg, "table2", frames, None, tmp_path)
    assert {r["vertebra"] for r in first} == {"L1", "L2", "L3", "L4", "avg"}

    def fail(*args, **kwargs):
        raise AssertionError("rows were recomputed")

    real = report.results_rows
    monkeypatch.setattr(report, "results_rows", fail)
    again = stages._results_rows(cfg, "table2", frames, None, tmp_path)
    assert json.dumps(again) == json.dumps(first)  # the same numbers, NaN and None included

    monkeypatch.setattr(report, "results_rows", real)
    changed = {"multi_roi": _predictions(seed=1)}
    rows = stages._results_rows(cfg, "table2", changed, None, tmp_path)
    assert rows[0]["r"] != first[0]["r"]  # new predictions, new rows
    other_seed = stages._results_rows(SimpleNamespace(profile="smoke", seed=1), "table2", changed, None, tmp_path)
    assert other_seed[-1]["r_ci"] != rows[-1]["r_ci"]  # the bootstrap seed is part of the key
    # one file per table, stamped with the key of what made it
    assert [p.name for p in (tmp_path / "runs" / "smoke" / "rows").glob("table2*")] == ["table2.json"]
    (tmp_path / "runs" / "smoke" / "rows" / "table2.json").write_text("[]")  # edited by hand: not trusted
    assert stages._results_rows(SimpleNamespace(profile="smoke", seed=1), "table2", changed, None, tmp_path) == \
        other_seed


def test_table_rows_are_recomputed_for_another_reference_or_convergence(tmp_path, monkeypatch):
    from bmd.study import report

    cfg = SimpleNamespace(profile="smoke", seed=0)
    frames = {"multi_roi": _predictions()}
    reference = _predictions(seed=2)
    calls = []
    real = report.results_rows

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(report, "results_rows", counting)
    rows = stages._results_rows(cfg, "table2", frames, None, tmp_path, reference=reference,
                                converged={"multi_roi": True})
    assert rows[-1]["delta_r_radiomics"] is not None and rows[-1]["converged"] is True
    stages._results_rows(cfg, "table2", frames, None, tmp_path, reference=reference, converged={"multi_roi": True})
    assert len(calls) == 1  # the same inputs: reused
    again = stages._results_rows(cfg, "table2", frames, None, tmp_path, reference=reference,
                                 converged={"multi_roi": False})
    assert len(calls) == 2 and again[-1]["converged"] is False
    other = stages._results_rows(cfg, "table2", frames, None, tmp_path, reference=_predictions(seed=3),
                                 converged={"multi_roi": False})
    assert len(calls) == 3 and other[-1]["delta_r_radiomics"] != again[-1]["delta_r_radiomics"]


def test_run_converged_reads_the_flag_and_older_runs_count_as_converged(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"best_epoch": 3}))
    assert stages.run_converged(tmp_path) is True
    (tmp_path / "metrics.json").write_text(json.dumps({"best_epoch": 3, "converged": False}))
    assert stages.run_converged(tmp_path) is False


def test_radiomics_features_are_saved_per_cache_content(tmp_path, monkeypatch):
    from bmd.evaluation import radiomics

    rng = np.random.default_rng(0)
    meta = {"files": {name: {"sha256": name * 2} for name in ("chest.npy", "local.npy", "case_ids.txt")}}
    cache = SimpleNamespace(path=tmp_path / "roi_cache", case_ids=["a", "b", "c"], meta=meta,
                            chest=rng.integers(0, 256, (3, 16, 16), dtype=np.uint8),
                            local=rng.integers(0, 256, (3, 6, 8, 8), dtype=np.uint8))
    first = stages.radiomics_features(cache)
    np.testing.assert_array_equal(first, radiomics.radiomics_features(cache.chest, cache.local))
    real = radiomics.radiomics_features

    def fail(*args):
        raise AssertionError("features were recomputed")

    monkeypatch.setattr(radiomics, "radiomics_features", fail)
    np.testing.assert_array_equal(stages.radiomics_features(cache), first)  # saved copy reused
    monkeypatch.setattr(radiomics, "radiomics_features", real)
    cache.chest = cache.chest[::-1].copy()  # a rebuilt cache: other crops, other checksums
    cache.meta = {"files": {**meta["files"], "chest.npy": {"sha256": "new"}}}
    np.testing.assert_array_equal(stages.radiomics_features(cache), real(cache.chest, cache.local))
    assert [p.name for p in tmp_path.glob("radiomics_features*")] == ["radiomics_features.npy"]


def test_radiomics_features_of_an_earlier_version_are_replaced(tmp_path):
    rng = np.random.default_rng(0)
    meta = {"files": {name: {"sha256": name} for name in ("chest.npy", "local.npy", "case_ids.txt")}}
    cache = SimpleNamespace(path=tmp_path / "roi_cache", case_ids=["a", "b"], meta=meta,
                            chest=rng.integers(0, 256, (2, 16, 16), dtype=np.uint8),
                            local=rng.integers(0, 256, (2, 6, 8, 8), dtype=np.uint8))
    np.save(tmp_path / "radiomics_features-0123456789abcdef01234567.npy", np.zeros((2, 3)))  # a keyed copy
    stages.radiomics_features(cache)
    assert [p.name for p in tmp_path.glob("radiomics_features*")] == ["radiomics_features.npy"]


def test_every_table_compares_with_radiomics_and_flags_unconverged_runs(tmp_path, monkeypatch):
    """The wiring of table_results, with training replaced by saved runs: the radiomics reference reaches
    Tables 1–3, the convergence flags come from the runs (an ensemble from all its members)."""
    from bmd.inputs.twin.population import sample_population
    from bmd.study.experiments import table_models

    manifest = sample_population({"train": 80, "val": 30, "test": 40}, seed=2)
    manifest["reference"] = "hologic"
    rng = np.random.default_rng(2)
    n = len(manifest)
    cache = SimpleNamespace(case_ids=list(manifest["case_id"]), meta={}, path=tmp_path / "roi_cache",
                            chest=rng.integers(0, 256, (n, 16, 16), dtype=np.uint8),
                            local=rng.integers(0, 256, (n, 6, 8, 8), dtype=np.uint8))
    cohort = SimpleNamespace(manifest=manifest, oracle=None)
    cfg = SimpleNamespace(profile="smoke", seed=0)
    unconverged = {"roi-chest-resnet50", "multi_roi-vgg16"}
    val_test = manifest[manifest["split"] != "train"].reset_index(drop=True)

    calls: list[list[str]] = []

    def fake_training(cfg, cohort, cache, specs, out):
        calls.append([spec.name for spec in specs])
        runs = {}
        for spec in specs:
            run = tmp_path / "models" / spec.name
            run.mkdir(parents=True, exist_ok=True)
            flag = {} if spec.name == "roi-chest-vgg16" else {"converged": spec.name not in unconverged}
            (run / "metrics.json").write_text(json.dumps(flag))  # vgg16: written before the flag existed
            frame = val_test[["case_id", "patient_id", "split", "sex", "reference",
                              *(f"bmd_l{k}" for k in range(1, 5))]].copy()
            for k in range(1, 5):
                frame[f"pred_l{k}"] = frame[f"bmd_l{k}"].fillna(0.85) + rng.normal(0, 0.1, len(frame))
            frame.to_csv(run / "predictions.csv", index=False)
            runs[spec.name] = run
        return runs

    monkeypatch.setattr(stages, "prepare_rois", lambda cfg, cohort, out=None: cache)
    monkeypatch.setattr(stages, "train_models", fake_training)
    t1 = stages.table_results(cfg, cohort, "table1", tmp_path)
    t2 = stages.table_results(cfg, cohort, "table2", tmp_path, baselines=True)
    t3 = stages.table_results(cfg, cohort, "table3", tmp_path)

    assert set(t2.avg()) == {*table_models()["table2"], "age_sex", "roi_intensity", "radiomics"}
    assert "radiomics" not in t1.avg() and "radiomics" not in t3.avg()  # only the reference there
    pd.testing.assert_frame_equal(t1.reference, t2.frames["radiomics"])
    for table in (t1, t2, t3):
        for model, row in table.avg().items():
            baseline = model in ("age_sex", "roi_intensity", "radiomics")
            assert (row["delta_r_radiomics"] is None) == baseline, model
            assert (row["converged"] is None) == baseline, model
    assert t1.avg()["resnet50"]["converged"] is False and t1.avg()["vgg16"]["converged"] is True
    assert t2.avg()["lumbar"]["converged"] is True and t2.avg()["multi_roi"]["converged"] is False
    assert t3.avg()["ensm_roi"]["converged"] is True and t3.avg()["ensm_all"]["converged"] is False
    # the attention row: compared with the multi-ROI model on the same cases, paired
    attention = t2.avg()["attention"]
    assert attention["delta_r_multi_roi"] is not None and len(attention["delta_r_multi_roi_ci"]) == 2
    assert "delta_r_multi_roi" not in t2.avg()["multi_roi"]
    assert "attention-vgg16" in calls[1] and "attention-vgg16" not in calls[2]  # Table 3 needs only its members
    saved = json.loads((tmp_path / "runs" / "smoke" / "summary.json").read_text())
    assert saved["tables"]["table1"][0]["delta_r_radiomics"] is not None


def test_table_two_trains_two_runs_at_once_and_the_attention_model_after_the_multi_roi_model(tmp_path, monkeypatch):
    """train_models with training replaced by a recorder: the multi-ROI run (waited for) trains first, alone
    with both cores; the attention run starts only once it has finished; the others, side by side, get one
    core each, the longest first."""
    import threading
    import time

    from bmd.study.experiments import run_cost, table_models, train_config

    profile = load_profile("smoke", train_parallel=2)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("case_id\n")
    cohort = SimpleNamespace(manifest_path=manifest)
    cache = SimpleNamespace(path=tmp_path / "roi_cache")
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    lock, events = threading.Lock(), []

    def fake_train_model(config, nproc=1, threads=None):
        name = Path(config.run_dir).name
        with lock:
            events.append(("start", name, threads, config.init_sha256))
        if name.startswith("multi_roi"):
            time.sleep(0.3)
            Path(config.run_dir).mkdir(parents=True)
            (Path(config.run_dir) / "best.pt").write_bytes(b"weights")
        with lock:
            events.append(("end", name, threads, None))
        return Path(config.run_dir)

    monkeypatch.setattr(stages, "train_model", fake_train_model)
    # the order in which the scheduler hands jobs to the pool (two started together may begin in either order)
    from concurrent.futures import ThreadPoolExecutor

    from bmd.infra import jobs as jobs_module

    submitted, given = [], []

    class RecordingPool(ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            submitted.append(fn)
            return super().submit(fn, *args, **kwargs)

    real_run_jobs = jobs_module.run_jobs
    monkeypatch.setattr(jobs_module, "ThreadPoolExecutor", RecordingPool)
    monkeypatch.setattr(jobs_module, "run_jobs", lambda js, *a, **kw: given.extend(js) or real_run_jobs(js, *a, **kw))
    specs = list(table_models()["table2"].values())
    runs = stages.train_models(profile, cohort, cache, specs, tmp_path)
    assert list(runs) == [spec.name for spec in specs]
    assert events[:2] == [("start", "multi_roi-vgg16", 2, None), ("end", "multi_roi-vgg16", 2, None)]
    starts = [e for e in events if e[0] == "start"][1:]
    attention = next(e for e in starts if e[1] == "attention-vgg16")
    assert attention[3] is not None  # keyed by the weights it starts from, which existed by then
    drafts = {s.name: train_config(s, profile, cache.path, manifest, tmp_path / "runs") for s in specs}
    name_of = {job.run: job.name for job in given}
    order = [name_of[fn] for fn in submitted]
    assert order[0] == "multi_roi-vgg16"
    costs = [run_cost(drafts[name], profile) for name in order[1:]]
    assert costs == sorted(costs, reverse=True)  # the longest first
    assert {e[2] for e in starts} == {1}


def test_ground_truth_landmarks_from_a_file_keyed_by_image(tmp_path):
    """A landmark CSV keyed by ``image`` (which the annotation importers accept) reaches the study keyed by case."""
    from bmd.columns import COORD_COLUMNS

    rng = np.random.default_rng(0)
    coords = rng.random((3, 32)) * 100
    by_image = pd.DataFrame(coords, columns=list(COORD_COLUMNS))
    by_image.insert(0, "image", ["images/c.png", "images/a.png", "elsewhere/b.png"])  # b: matched by file name
    by_image.to_csv(tmp_path / "marks.csv", index=False)
    by_case = pd.DataFrame(coords[:1] + 1, columns=list(COORD_COLUMNS))
    by_case.insert(0, "case_id", ["d"])
    by_case.to_csv(tmp_path / "marks_d.csv", index=False)
    manifest = pd.DataFrame({"case_id": ["a", "b", "c", "d", "e"],
                             "image": ["images/a.png", "images/b.png", "images/c.png", "images/d.png", "images/e.png"],
                             "landmarks_path": [str(tmp_path / "marks.csv")] * 3 + [str(tmp_path / "marks_d.csv"), ""]})
    truth = stages.ground_truth_landmarks(SimpleNamespace(manifest=manifest))
    assert list(truth.columns) == ["case_id", *COORD_COLUMNS]
    assert list(truth["case_id"]) == ["a", "b", "c", "d"]  # manifest order; e has no landmark file
    np.testing.assert_array_equal(truth[list(COORD_COLUMNS)].to_numpy(), [coords[1], coords[2], coords[0],
                                                                           coords[0] + 1])
    assert stages.ground_truth_landmarks(SimpleNamespace(manifest=manifest.assign(landmarks_path=""))) is None


def test_the_detector_is_trained_once_per_manifest_and_recipe_and_an_older_one_is_adopted(tmp_path, monkeypatch):
    def profile(seed):
        return SimpleNamespace(profile="smoke", seed=seed, twin_image_size=256, train_precision="auto",
                               landmark_model=None)

    cfg = profile(0)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("case_id\n001\n")
    cohort = SimpleNamespace(manifest_path=manifest, manifest=pd.DataFrame({"case_id": ["001"]}))
    trained = []
    monkeypatch.setattr(stages, "check_landmark_source", lambda cfg, cohort: None)  # no ground truth here

    def fake_training(manifest_path, bundle, progress, log, **recipe):
        trained.append(recipe)
        bundle.mkdir(parents=True, exist_ok=True)
        (bundle / "weights.pt").write_bytes(b"weights")
        info = {"training": {"manifest": str(manifest_path), **{k: recipe[k] for k in ("epochs", "seed", "batch_size")}},
                "model": {"input_size": recipe["input_size"]}, "plausibility": {"descriptors": DESCRIPTORS}}
        (bundle / "config.json").write_text(json.dumps(info))

    monkeypatch.setattr(stages, "train_landmark_model", fake_training)
    bundle = stages.landmark_detector(cfg, cohort, tmp_path)
    assert stages.landmark_detector(cfg, cohort, tmp_path) == bundle and len(trained) == 1  # reused
    manifest.write_text("case_id\n001\n002\n")  # other training data: trained again
    stages.landmark_detector(cfg, cohort, tmp_path)
    assert len(trained) == 2
    stages.landmark_detector(profile(1), cohort, tmp_path)
    assert len(trained) == 3 and trained[-1]["seed"] == 1  # another recipe: trained again
    bundle.with_name(f".{bundle.name}.artifact.json").unlink()  # a detector made before stamps ...
    stages.landmark_detector(profile(1), cohort, tmp_path)
    assert len(trained) == 3  # ... whose config matches: adopted
    info = json.loads((bundle / "config.json").read_text())
    info["plausibility"] = {}  # ... but one whose plausibility check reads other descriptors is trained again
    (bundle / "config.json").write_text(json.dumps(info))
    bundle.with_name(f".{bundle.name}.artifact.json").unlink()
    stages.landmark_detector(profile(1), cohort, tmp_path)
    assert len(trained) == 4
    summary = json.loads((tmp_path / "runs" / "smoke" / "summary.json").read_text())
    assert summary["artifacts"]["landmark_model"] == "runs/smoke/landmark_model"


def test_the_bundle_is_exported_again_only_when_the_run_or_the_detector_changed(tmp_path, monkeypatch):
    cfg = SimpleNamespace(profile="smoke", seed=0, landmark_model=None)
    root = tmp_path / "runs" / "smoke"
    run = root / "models" / "multi_roi-vgg16"
    run.mkdir(parents=True)
    (run / "best.pt").write_bytes(b"model")
    (root / "landmark_model").mkdir()
    (root / "landmark_model" / "weights.pt").write_bytes(b"detector")
    frame = _predictions().assign(split="val")
    table2 = SimpleNamespace(runs={"multi_roi": run}, frames={"multi_roi": frame})
    exported = []

    def fake_export(run_dir, detector, dest):
        exported.append(run_dir)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "bundle.json").write_text("{}")

    monkeypatch.setattr(stages, "export_bundle", fake_export)
    dest = stages.export_model(cfg, table2, tmp_path)
    assert dest == root / "bundles" / "multi_roi"
    stages.export_model(cfg, table2, tmp_path)
    assert len(exported) == 1  # nothing changed
    (run / "best.pt").write_bytes(b"retrained model")
    stages.export_model(cfg, table2, tmp_path)
    assert len(exported) == 2
    (root / "landmark_model" / "weights.pt").write_bytes(b"retrained detector")
    stages.export_model(cfg, table2, tmp_path)
    assert len(exported) == 3
    dest.with_name(f".{dest.name}.artifact.json").unlink()  # exported before stamps, after both weights
    stages.export_model(cfg, table2, tmp_path)
    assert len(exported) == 3


# ------------------------------------------------------------------ a given detector (landmark_model)

#: The untrained test detectors' mean shape: the hand-made chest of tests/images.py, normalised.
CHEST_SHAPE = (chest_points((64, 64)) + 0.5) / 64 * 2 - 1


def _site(folder: Path, n: int = 9, landmarks: bool = False, odd: int | None = None) -> Path:
    """A site's manifest of ``n`` small PNG radiographs, split train/val/test in turn; no ``landmarks``
    column unless ``landmarks`` (then a landmark file for every case). Case ``odd`` is a checkerboard of
    16-pixel squares, a layout unlike anything the test detectors were calibrated on (the plausibility check
    flags it; the check reads the image at the scale of organs, so a pattern much finer than that would not
    do)."""
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows, marks = [], []
    for i in range(n):
        image = texture((128, 96), seed=i)
        if i == odd:
            image = (np.indices((128, 96)) // 16).sum(axis=0) % 2 * 0.9 + 0.05
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(folder / "images" / f"c{i}.png")
        bmd = 0.8 + 0.1 * rng.random()
        row = (f"SITECASE{i:02d},SITEPAT{i:02d},images/c{i}.png,{bmd:.3f},{bmd + 0.05:.3f},{bmd + 0.1:.3f},"
               f"{bmd + 0.12:.3f},F,{60 + i},hologic,{('train', 'val', 'test')[i % 3]}")
        rows.append(row + (",landmarks.csv" if landmarks else ""))
        marks.append([f"SITECASE{i:02d}", *(chest_points((128, 96)) + rng.normal(0, 1.0, (16, 2))).ravel()])
    header = "case_id,patient_id,image,bmd_l1,bmd_l2,bmd_l3,bmd_l4,sex,age,reference,split"
    if landmarks:
        header += ",landmarks"
        pd.DataFrame(marks, columns=["case_id", *COORD_COLUMNS]).to_csv(folder / "landmarks.csv", index=False)
    (folder / "manifest.csv").write_text("\n".join([header, *rows]) + "\n")
    return folder / "manifest.csv"


@pytest.fixture(scope="module")
def calibration_images() -> np.ndarray:
    """Images the test detectors' plausibility models are fitted and calibrated on."""
    return np.stack([texture((64, 64), seed=100 + i) for i in range(12)])


def _detector(folder: Path, calibration_images: np.ndarray, shift: float = 0.0) -> Path:
    """A calibrated untrained detector whose points sit at the chest shape (moved right by ``shift``)."""
    return tiny_detector(folder, mean_shape=CHEST_SHAPE + [shift, 0.0], calibrate_on=calibration_images)


def _never_trained(*args, **kwargs):
    raise AssertionError("a detector was trained")


def test_without_ground_truth_or_a_detector_the_study_stops_in_one_line_before_any_training(tmp_path, monkeypatch):
    manifest = _site(tmp_path / "site")
    cfg = load_profile("smoke")
    cohort = load_cohort(cfg, manifest=manifest)
    monkeypatch.setattr(stages, "train_landmark_model", _never_trained)
    with pytest.raises(LandmarkSourceError) as info:
        stages.landmark_detector(cfg, cohort, tmp_path / "out")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{manifest}: no ground-truth landmarks")
    # both ways out: annotations in a landmarks column, or a detector
    assert "`landmarks` column" in message and "book/appendix/annotations.md" in message
    assert "--landmark-model DIR" in message and "landmark_model" in message
    assert "SITECASE" not in message  # counted, never named
    assert not (tmp_path / "out").exists()  # nothing started

    marked = _site(tmp_path / "marked", landmarks=True)
    table = pd.read_csv(marked.parent / "landmarks.csv")
    table[table["case_id"] != "SITECASE01"].to_csv(marked.parent / "landmarks.csv", index=False)  # a val case
    with pytest.raises(LandmarkSourceError, match=r"1 of 6 train/val case\(s\) without ground-truth landmarks"):
        check_landmark_source(cfg, load_cohort(cfg, manifest=marked))
    check_landmark_source(dataclasses.replace(cfg, landmark_model="/any/detector"), cohort)  # a detector: fine


def test_a_given_detector_places_every_cases_regions_on_a_manifest_without_landmarks(tmp_path, monkeypatch,
                                                                                     calibration_images):
    manifest = _site(tmp_path / "site", odd=5)
    det = _detector(tmp_path / "det", calibration_images)
    cfg = load_profile("smoke", landmark_model=str(det), roi_size=16, chest_size=32)
    out = tmp_path / "out"
    cohort = load_cohort(cfg, manifest=manifest)
    monkeypatch.setattr(stages, "train_landmark_model", _never_trained)

    detector = stages.landmark_detector(cfg, cohort, out)
    assert detector == det.resolve()
    results = stages.evaluate_detector(cfg, cohort, detector, out)
    assert results.source == "external" and results.ground_truth is None and results.evaluation is None
    assert list(results.detected["case_id"]) == list(cohort.manifest["case_id"])
    cache = stages.roi_cache(cfg, cohort, results, detector, out)
    # every split, the training cases included, is cut at the detector's own points
    expected = predict_landmarks(det, list(cohort.manifest["image_path"])).points
    assert cache.case_ids == list(cohort.manifest["case_id"]) and set(cohort.manifest["split"]) == set(SPLITS)
    np.testing.assert_allclose(np.asarray(cache.landmarks), expected, atol=1e-3)
    assert cache.meta["landmark_source"] == f"all:external_detector(sha256:{detector_digest(det)[:16]})"

    text = (out / "runs" / "smoke" / "summary.json").read_text()
    landmarks = json.loads(text)["landmarks"]
    assert landmarks["source"] == "external" and landmarks["detector_sha256"] == detector_digest(det)
    assert landmarks["mean_error_pct"] is None and landmarks["accuracy"].startswith("unmeasured")
    counts = landmarks["plausibility"]
    assert set(counts) == {"train", "val", "test", "all"} and counts["all"]["cases"] == 9
    assert all(c["ok"] + c["flagged"] + c["failed"] == c["cases"] for c in counts.values())
    assert counts["test"]["flagged"] >= 1 and counts["all"]["flagged"] == sum(counts[s]["flagged"] for s in SPLITS)
    assert "landmark_model" not in json.loads(text).get("artifacts", {})  # nothing of this run folder
    assert str(tmp_path) not in text and "SITECASE" not in text  # the detector by digest, cases by count

    paragraph = results.accuracy_text(cohort.manifest)
    assert "accuracy on this data is unmeasured" in paragraph and "no ground-truth landmarks" in paragraph
    assert f"flagged {counts['all']['flagged']} of 9 images" in paragraph and "SITECASE" not in paragraph
    table = results.plausibility(cohort.manifest)
    assert list(table.index) == ["train", "val", "test", "all"] and table.loc["all", "cases"] == 9


def test_with_ground_truth_too_the_given_detector_is_used_and_measured_against_it(tmp_path, monkeypatch,
                                                                                  calibration_images):
    manifest = _site(tmp_path / "site", landmarks=True)
    det = _detector(tmp_path / "det", calibration_images, shift=0.1)  # off the ground truth by 5% of 64 px
    cfg = load_profile("smoke", landmark_model=str(det), roi_size=16, chest_size=32)
    out = tmp_path / "out"
    cohort = load_cohort(cfg, manifest=manifest)
    monkeypatch.setattr(stages, "train_landmark_model", _never_trained)
    results = stages.evaluate_detector(cfg, cohort, stages.landmark_detector(cfg, cohort, out), out)
    assert results.ground_truth is not None and results.evaluation.split == "test"
    assert results.evaluation.case_ids == list(cohort.manifest.loc[cohort.manifest["split"] == "test", "case_id"])
    cache = stages.roi_cache(cfg, cohort, results, det, out)
    # the training crops too come from the detector, not from jittered ground truth
    np.testing.assert_allclose(np.asarray(cache.landmarks), predict_landmarks(det, list(
        cohort.manifest["image_path"])).points, atol=1e-3)
    landmarks = json.loads((out / "runs" / "smoke" / "summary.json").read_text())["landmarks"]
    assert landmarks["source"] == "external" and landmarks["accuracy"].startswith("measured")
    assert landmarks["mean_error_pct"] > 1 and landmarks["n"] == 3
    assert "mean radial error" in results.accuracy_text(cohort.manifest)


def test_a_new_detector_rebuilds_its_landmarks_and_crops_and_a_copied_one_nothing(tmp_path, monkeypatch,
                                                                                  calibration_images):
    manifest = _site(tmp_path / "site")
    out = tmp_path / "out"
    detections = []
    real_predict = stages.predict_landmarks

    def counting_predict(detector, images):
        detections.append(Path(detector).name)
        return real_predict(detector, images)

    monkeypatch.setattr(stages, "predict_landmarks", counting_predict)
    monkeypatch.setattr(stages, "train_landmark_model", _never_trained)

    def crops(detector: Path):
        cfg = load_profile("smoke", landmark_model=str(detector), roi_size=16, chest_size=32)
        cohort = load_cohort(cfg, manifest=manifest)
        found = stages.landmark_detector(cfg, cohort, out)
        return stages.roi_cache(cfg, cohort, stages.evaluate_detector(cfg, cohort, found, out), found, out)

    first = crops(_detector(tmp_path / "a", calibration_images))
    assert first.built and detections == ["a"]
    shutil.copytree(tmp_path / "a", tmp_path / "copy_of_a")  # the same detector, elsewhere
    again = crops(tmp_path / "copy_of_a")
    assert not again.built and again.path == first.path and detections == ["a"]  # nothing detected or cut
    other = crops(_detector(tmp_path / "b", calibration_images, shift=0.05))  # another detector
    assert other.built and other.path != first.path and detections == ["a", "b"]
    assert not np.allclose(np.asarray(other.landmarks), np.asarray(first.landmarks))


def test_the_bundle_carries_the_given_detector_and_is_exported_again_only_when_it_changes(tmp_path, monkeypatch,
                                                                                         calibration_images):
    det = _detector(tmp_path / "det", calibration_images)
    cfg = SimpleNamespace(profile="smoke", seed=0, landmark_model=str(det))
    run = tmp_path / "runs" / "smoke" / "models" / "multi_roi-vgg16"
    run.mkdir(parents=True)
    (run / "best.pt").write_bytes(b"model")
    table2 = SimpleNamespace(runs={"multi_roi": run}, frames={"multi_roi": _predictions().assign(split="val")})
    exported = []

    def fake_export(run_dir, detector, dest):
        exported.append(detector)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "bundle.json").write_text("{}")

    monkeypatch.setattr(stages, "export_bundle", fake_export)
    stages.export_model(cfg, table2, tmp_path)
    assert exported == [det.resolve()]
    shutil.copytree(det, tmp_path / "moved")
    stages.export_model(SimpleNamespace(profile="smoke", seed=0, landmark_model=str(tmp_path / "moved")), table2,
                        tmp_path)
    assert len(exported) == 1  # the same content elsewhere: nothing to export again
    _detector(det, calibration_images, shift=0.05)  # retrained in place
    stages.export_model(cfg, table2, tmp_path)
    assert len(exported) == 2
