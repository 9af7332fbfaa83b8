"""The twin-against-real stage: the ``realdata`` block of summary.json, with and without the folder."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd

from bmd.study import summary
from bmd.study.cohort import Cohort
from bmd.study.realfilms import realdata_sentence, realfilm_results
from tests.detectors import tiny_detector


def _site_cohort(tmp_path) -> Cohort:
    return Cohort(manifest=pd.DataFrame(), manifest_path=tmp_path / "manifest.csv", is_twin=False, oracle=None)


def test_without_the_folder_the_block_says_absent_with_nulls(tmp_path):
    cfg = SimpleNamespace(profile="smoke")
    out = realfilm_results(cfg, _site_cohort(tmp_path), tiny_detector(tmp_path / "det"), tmp_path,
                           folder=tmp_path / "missing")
    block = json.loads(summary.summary_path("smoke", tmp_path).read_text())["realdata"]
    assert block["present"] is False and block["chest_pass"] is None and block["spectral_slope"] is None
    assert out.files.empty and "No real radiographs" in realdata_sentence(block)


def test_with_the_folder_every_film_is_scored_and_counted(tmp_path, realdata):
    cfg = SimpleNamespace(profile="smoke")
    out = realfilm_results(cfg, _site_cohort(tmp_path), tiny_detector(tmp_path / "det"), tmp_path, folder=realdata)
    block = json.loads(summary.summary_path("smoke", tmp_path).read_text())["realdata"]
    assert block["present"] is True and block["chest_total"] == 5 and block["non_chest_total"] >= 5
    assert set(out.files.loc[out.files["role"] == "chest", "file"]) <= set(block["plausibility_score"])
    assert block["chexmask_rib_margin_pct"]["max"] >= block["chexmask_rib_margin_pct"]["mean"] > 0
    slope = block["spectral_slope"]
    assert slope["real_min"] <= slope["real_max"] < 0 and slope["twin"] is None  # a site cohort: no twin
    assert len(out.images) == len(out.files) and out.points.shape == (len(out.files), 16, 2)
    assert "real chest films" in realdata_sentence(block)
