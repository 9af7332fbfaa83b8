"""The real-film study both chapters call: the ``realdata`` block in summary.json with and without the
real-data folder, and its figures (the detector is replaced by hand-made points: no model is trained)."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from images import chest_points, texture  # noqa: E402  (tests/ is on sys.path under pytest)
from PIL import Image  # noqa: E402

from bmd.columns import COORD_COLUMNS  # noqa: E402
from bmd.evaluation import realfilms as rf  # noqa: E402
from bmd.study import realdata as realdata_study  # noqa: E402  (realdata is the real-data folder fixture)
from bmd.study import realdata_plots, stages, summary  # noqa: E402

KEYS = {"present", "chest_pass", "non_chest_flagged", "plausibility_score", "plausibility_components",
        "chest_worst_component", "chexmask_rib_margin_pct", "spectral_slope", "thorax_aspect", "spine_offset"}


def _cohort(tmp_path, n: int = 2):
    """A twin-like cohort of ``n`` synthetic test images (PNG, spacing unknown) with hand-made landmarks."""
    rows, marks = [], []
    for i in range(n):
        path = tmp_path / f"case{i}.png"
        Image.fromarray((texture((160, 160), seed=i) * 255).astype(np.uint8)).save(path)
        rows.append({"case_id": f"C{i}", "split": "test", "image_path": str(path),
                     "landmarks_path": str(tmp_path / "landmarks.csv")})
        marks.append([f"C{i}", *chest_points((160, 160)).reshape(-1)])
    pd.DataFrame(marks, columns=["case_id", *COORD_COLUMNS]).to_csv(tmp_path / "landmarks.csv", index=False)
    return SimpleNamespace(manifest=pd.DataFrame(rows), manifest_path=tmp_path / "manifest.csv", is_twin=True)


def _fake_detector(model, images):
    """Predictions shaped like :func:`bmd.landmarks.detector.predict_landmarks`'s: a chest shape on every image,
    passed when the image is large (chest films), flagged when not."""
    points = np.stack([chest_points(np.shape(im)) for im in images])
    status = ["ok" if min(np.shape(im)) >= 400 else "flagged" for im in images]
    score = np.array([0.2 if s == "ok" else 1.5 for s in status])
    details = [SimpleNamespace(components={"appearance": 0.1, "local": 0.2, "shape": s + 0.5}) for s in score]
    return SimpleNamespace(points=points, status=status, plausibility=0.5 * 50.0 ** -score, score=score,
                           reason=["" if s == "ok" else "unlike" for s in status], details=details)


def test_without_real_films_the_block_is_null_and_no_detector_is_asked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("BMD_REALDATA", str(tmp_path / "absent"))
    monkeypatch.setattr(stages, "landmark_detector", lambda *a: pytest.fail("the detector is not needed"))
    cfg = SimpleNamespace(profile="smoke")
    study = realdata_study.real_film_study(cfg, _cohort(tmp_path), out=tmp_path)
    assert not study.present and study.real == [] and len(study.twin) == 2
    block = summary.read(summary.summary_path("smoke", tmp_path))["realdata"]
    assert set(block) == KEYS and block["present"] is False
    assert all(block[k] is None for k in KEYS - {"present", "spectral_slope", "thorax_aspect", "spine_offset"})
    assert block["spectral_slope"]["twin"] < 0 and block["spectral_slope"]["real_min"] is None
    assert block["thorax_aspect"]["twin"]["n"] == 2 and block["thorax_aspect"]["real"] is None
    assert block["spine_offset"]["twin"]["n"] == 2 and block["spine_offset"]["real"] is None
    assert study.availability_sentence() == study.plausibility_sentence() == realdata_study.absent_sentence()
    assert study.slope_sentence() == study.rib_margin_sentence() == study.shape_sentence() == ""


def test_with_real_films_every_film_is_scored_and_the_block_recorded(realdata, tmp_path, monkeypatch):
    monkeypatch.setattr(realdata_study, "predict_landmarks", _fake_detector)
    cfg = SimpleNamespace(profile="smoke")
    path = summary.summary_path("smoke", tmp_path)
    summary.update(path, realdata={"plausibility_score": {"gone.png": 1.0}})  # an earlier build's block
    study = realdata_study.real_film_study(cfg, _cohort(tmp_path), out=tmp_path, detector=tmp_path / "detector")
    chest = rf.film_table(realdata, roles=("chest",))
    assert [f.name for f in study.real] == list(chest["file"])
    assert all(f.squares and np.isfinite(f.slope) for f in study.real)
    assert {f.spacing_source for f in study.real} == {"assumed"}  # no chest film states a usable spacing
    block = summary.read(path)["realdata"]
    assert block["present"] is True and "gone.png" not in block["plausibility_score"]
    assert set(block["plausibility_score"]) == set(study.plausibility["file"]) >= set(chest["file"])
    assert block["chest_pass"]["of"] == 5 and block["non_chest_flagged"]["of"] >= 5
    assert block["chexmask_rib_margin_pct"]["max"] >= block["chexmask_rib_margin_pct"]["mean"] > 0
    assert block["spectral_slope"]["real_min"] <= block["spectral_slope"]["real_max"]
    assert "CheXmask film" in study.rib_margin_sentence()
    assert block["chest_worst_component"] == {"appearance": 0, "local": 0, "shape": 5}
    assert block["plausibility_components"][chest["file"].iloc[0]] == {"appearance": 0.1, "local": 0.2, "shape": 0.7}
    assert set(block["thorax_aspect"]["real"]) == set(chest["file"]) == set(block["spine_offset"]["real"])
    assert "For 5 of 5 real chest films" in study.shape_sentence() and "thorax aspect" in study.shape_sentence()
    assert "spine offset" in study.shape_sentence()
    table = study.texture_table()
    assert list(table["source"]) == ["twin"] * 2 + ["real"] * 5
    for name in ("same_scale", "histograms", "spectra", "detections", "rib_margin"):
        fig = getattr(realdata_plots, f"plot_{name}")(study)
        assert fig is not None, name
        plt.close(fig)


def test_the_smoke_book_shows_real_films_and_records_the_block(smoke_book):
    import json

    from bmd.infra import paths

    block = json.loads((smoke_book / "runs" / "smoke" / "summary.json").read_text())["realdata"]
    assert set(block) == KEYS and block["present"] is (paths.realdata_dir() is not None)
    assert block["spectral_slope"]["twin"] < 0  # the twin's slope needs no real films
    html = smoke_book / "_build" / "html"
    cohort = " ".join((html / "cohort.html").read_text().split())
    landmarks = " ".join((html / "landmarks.html").read_text().split())
    assert "The twin against real radiographs" in cohort
    assert "end of the cohort chapter" in landmarks  # the detector's side is shown there, computed once
    if block["present"]:
        assert block["chest_pass"]["of"] == 5 and "spectral slope" in cohort
        assert "The twin-trained detector passed" in cohort and "CheXmask film" in cohort
    else:
        assert realdata_study.absent_sentence() in cohort
