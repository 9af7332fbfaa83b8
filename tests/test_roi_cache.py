"""The ROI cache: built once, reused, invalidated by what it depends on, never used when broken."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bmd.config import Profile
from bmd.manifest import load_manifest
from bmd.roi_cache import build_roi_cache, load_cache
from bmd.twin import generate_twin

TINY = Profile(profile="tiny", twin_n_train=4, twin_n_val=1, twin_n_test=1, twin_image_size=128, chest_size=32,
               roi_size=16)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = generate_twin(tmp_path_factory.mktemp("cache_twin"), TINY, workers=1, progress=False)
    return load_manifest(out / "manifest.csv"), pd.read_csv(out / "landmarks.csv")


def test_cache_is_built_once_and_reused(cohort, tmp_path):
    manifest, marks = cohort
    a = build_roi_cache(manifest, marks, tmp_path, 16, 32, workers=1)
    assert a.chest.shape == (6, 32, 32) and a.local.shape == (6, 6, 16, 16) and a.chest.dtype == np.uint8
    assert a.case_ids == list(manifest["case_id"]) and a.local.max() > 0
    mtime = (a.path / "local.npy").stat().st_mtime_ns
    b = build_roi_cache(manifest, marks, tmp_path, 16, 32, workers=1)
    assert b.path == a.path and (b.path / "local.npy").stat().st_mtime_ns == mtime


def test_cache_key_follows_size_landmarks_and_source(cohort, tmp_path):
    manifest, marks = cohort
    base = build_roi_cache(manifest, marks, tmp_path, 16, 32, workers=1).path
    assert build_roi_cache(manifest, marks, tmp_path, 24, 32, workers=1).path != base
    moved = marks.copy()
    moved.iloc[0, 1] += 3.0
    assert build_roi_cache(manifest, moved, tmp_path, 16, 32, workers=1).path != base
    assert build_roi_cache(manifest, marks, tmp_path, 16, 32, source="detector", workers=1).path != base


def test_truncated_or_stale_cache_is_rebuilt_not_used(cohort, tmp_path):
    manifest, marks = cohort
    good = build_roi_cache(manifest, marks, tmp_path, 16, 32, workers=1)
    reference = np.array(good.local)
    data = (good.path / "local.npy").read_bytes()
    (good.path / "local.npy").write_bytes(data[: len(data) // 2])
    assert load_cache(good.path) is None
    again = build_roi_cache(manifest, marks, tmp_path, 16, 32, workers=1)
    assert np.array_equal(np.array(again.local), reference)
    meta = json.loads((again.path / "meta.json").read_text())
    assert load_cache(again.path, key=meta["key"] + "x") is None
    (again.path / "meta.json").unlink()  # as if the build was killed before its last write
    assert load_cache(again.path) is None


def test_killed_build_leaves_only_a_hidden_temp_folder(cohort, tmp_path, monkeypatch):
    manifest, marks = cohort
    import bmd.roi_cache as rc

    def boom(task):
        raise KeyboardInterrupt

    monkeypatch.setattr(rc, "_crop_one", boom)
    with pytest.raises(KeyboardInterrupt):
        build_roi_cache(manifest, marks, tmp_path, 16, 32, workers=1)
    assert list(tmp_path.iterdir()) == []
