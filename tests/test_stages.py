"""Reuse rules of the study's stages: saved results are reused only when made from the same inputs."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd

from bmd import stages
from bmd.landmarks.train import LandmarkEvaluation


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
    rng = np.random.default_rng(seed)
    bmd = rng.normal(0.85, 0.15, (n, 4))
    frame = pd.DataFrame({"case_id": [f"C{i:03d}" for i in range(n)], "patient_id": [f"P{i:03d}" for i in range(n)],
                          "split": ["test"] * n, "sex": ["F", "M"] * (n // 2), "reference": "hologic"})
    for k in range(4):
        frame[f"bmd_l{k + 1}"] = bmd[:, k]
        frame[f"pred_l{k + 1}"] = bmd[:, k] + rng.normal(0, 0.08, n)
    return frame


def test_table_rows_are_reused_only_for_the_same_predictions(tmp_path, monkeypatch):
    from bmd import report

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
    assert len(list((tmp_path / "runs" / "smoke" / "rows").glob("table2-*.json"))) == 1  # older rows removed
