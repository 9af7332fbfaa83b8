"""The ROI cache: built once, reused, invalidated by what it depends on, never used when broken."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import bmd.io
from bmd.columns import COORD_COLUMNS, LANDMARK_NAMES, LOCAL_NAMES
from bmd.rois import cache as roi_cache
from bmd.rois.cache import RoiCache, RoiCacheError, build_roi_cache, cache_key, load_cache
from bmd.rois.crop import crop_rois
from bmd.rois.geometry import RoiGeometry

SHAPE = (96, 128)
ROI, CHEST = 16, 32
_UNIT = {  # an upright PA chest in unit coordinates (patient's left = image right)
    "clav_l_medial": (0.56, 0.21), "clav_l_mid": (0.68, 0.185), "clav_l_lateral": (0.80, 0.16),
    "clav_r_medial": (0.44, 0.21), "clav_r_mid": (0.32, 0.185), "clav_r_lateral": (0.20, 0.16),
    "rib_l_1": (0.74, 0.27), "rib_l_2": (0.84, 0.38), "rib_l_3": (0.88, 0.50), "rib_l_4": (0.89, 0.62),
    "rib_r_1": (0.26, 0.27), "rib_r_2": (0.16, 0.38), "rib_r_3": (0.12, 0.50), "rib_r_4": (0.11, 0.62),
    "cervical": (0.5, 0.13), "t12": (0.5, 0.70),
}


def case_image(seed: int) -> np.ndarray:
    """A smooth random image in [0, 1]."""
    rng = np.random.default_rng(seed)
    small = rng.random((SHAPE[0] // 8, SHAPE[1] // 8))
    return np.kron(small, np.ones((8, 8)))


def case_points(i: int) -> np.ndarray:
    """Landmarks (16, 2) of case ``i``: the unit chest in the centred square, turned and shifted a little."""
    side = min(SHAPE)
    p = np.array([_UNIT[n] for n in LANDMARK_NAMES]) * side - 0.5 + [(SHAPE[1] - side) / 2, 0]
    a = 0.05 * (i - 3)
    return (p - 48) @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]).T + 48 + 0.5 * i


@pytest.fixture
def cohort(tmp_path):
    """Six small PNG radiographs, their manifest rows and landmark table."""
    folder = tmp_path / "cohort"
    folder.mkdir()
    rows, marks = [], []
    for i in range(6):
        image = case_image(10 + i)
        name = f"images/c{i}.png"
        (folder / "images").mkdir(exist_ok=True)
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(folder / name)
        pts = case_points(i)
        rows.append({"case_id": f"C{i}", "image": name, "image_path": str(folder / name)})
        marks.append([f"C{i}", *pts.ravel()])
    manifest = pd.DataFrame(rows)
    landmarks = pd.DataFrame(marks, columns=["case_id", *COORD_COLUMNS])
    return manifest, landmarks, tmp_path / "cache"


def build(cohort, **kw):
    manifest, landmarks, root = cohort
    kw.setdefault("workers", 1)
    return build_roi_cache(kw.pop("manifest", manifest), kw.pop("landmarks", landmarks), kw.pop("root", root),
                           kw.pop("roi", ROI), kw.pop("chest", CHEST), **kw)


def stamps(cache: RoiCache) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in cache.path.iterdir()}


def test_built_once_then_reused_without_decoding(cohort, monkeypatch):
    manifest, landmarks, root = cohort
    first = build(cohort)
    assert first.built and len(first) == 6 and first.case_ids == list(manifest["case_id"])
    assert first.local.shape == (6, len(LOCAL_NAMES), ROI, ROI) and first.chest.shape == (6, CHEST, CHEST)
    assert first.local.dtype == np.uint8 and isinstance(first.local, np.memmap)
    # the stored crops are the crops of the decoded images (8-bit rounding aside)
    image = bmd.io.read_image(manifest.at[2, "image_path"])[0]
    ref = crop_rois(image, landmarks.iloc[2, 1:].to_numpy(float), ROI, CHEST)
    crops = first.crops("C2")
    assert np.abs(np.stack([crops[n] for n in LOCAL_NAMES]) - ref.local).max() <= 0.5 / 255 + 1e-6
    assert np.abs(crops["chest"] - ref.chest).max() <= 0.5 / 255 + 1e-6
    assert crops["ribcage_r"].dtype == np.float32
    assert np.allclose(first.landmarks[2].ravel(), landmarks.iloc[2, 1:].to_numpy(float))

    def no_decoding(path):
        raise AssertionError("a reused cache must not decode images")

    monkeypatch.setattr(roi_cache, "read_image", no_decoding)  # the name the cache decodes with
    before = stamps(first)
    again = build(cohort)
    assert not again.built and again.path == first.path and stamps(again) == before
    assert np.array_equal(again.local, first.local)


def test_the_key_follows_manifest_landmarks_sizes_and_settings(cohort):
    manifest, landmarks, root = cohort
    base = build(cohort)
    moved = landmarks.copy()
    moved.loc[0, "x_t12"] += 0.5
    variants = {
        "fewer cases": {"manifest": manifest.iloc[1:]},
        "landmark values": {"landmarks": moved},
        "roi size": {"roi": 24},
        "chest size": {"chest": 24},
        "storage dtype": {"dtype": "float16"},
        "landmark source": {"source": "detector-abc"},
        "geometry": {"geometry": RoiGeometry(clavi=0.6)},
    }
    paths = {base.path}
    for what, kw in variants.items():
        other = build(cohort, **kw)
        assert other.built and other.path not in paths, what
        paths.add(other.path)
    assert not build(cohort).built  # the first cache is still valid and reused
    # a replaced image file (new content, new modification time) changes the key
    path = manifest.at[3, "image_path"]
    Image.fromarray(np.zeros(SHAPE, np.uint8)).save(path)
    os.utime(path, ns=(1, 1))
    rebuilt = build(cohort)
    assert rebuilt.built and rebuilt.path != base.path and rebuilt.local[3].max() == 0


@pytest.mark.parametrize("name", ["local.npy", "chest.npy", "landmarks.npy", "case_ids.txt", "meta.json"])
def test_a_truncated_file_is_detected_and_rebuilt(cohort, name):
    good = build(cohort)
    reference = np.array(good.local)
    path = good.path / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RoiCacheError):
        RoiCache.open(good.path)
    assert load_cache(good.path) is None
    again = build(cohort)
    assert again.built and again.path == good.path and np.array_equal(np.array(again.local), reference)
    assert RoiCache.open(again.path, key=again.key).key == again.key


def test_a_missing_file_and_flipped_bytes_are_detected(cohort):
    good = build(cohort)
    path = good.path / "local.npy"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other content
    path.write_bytes(bytes(data))
    assert RoiCache.open(good.path, verify="quick")  # sizes and shapes still agree...
    with pytest.raises(RoiCacheError, match="checksum"):
        RoiCache.open(good.path)  # ...the checksum does not
    assert build(cohort).built
    (good.path / "chest.npy").unlink()
    with pytest.raises(RoiCacheError, match="missing"):
        RoiCache.open(good.path)
    assert build(cohort).built


def test_a_stale_or_foreign_cache_is_refused(cohort):
    manifest, _, _ = cohort
    good = build(cohort)
    with pytest.raises(RoiCacheError, match="key"):
        RoiCache.open(good.path, key="0" * 64)
    with pytest.raises(RoiCacheError, match="case ids"):
        RoiCache.open(good.path, case_ids=list(manifest["case_id"])[::-1])
    meta = json.loads((good.path / "meta.json").read_text())
    meta["key"] = "f" * 64  # as if another build's meta had landed here
    (good.path / "meta.json").write_text(json.dumps(meta))
    assert build(cohort).built


def test_a_killed_build_is_never_taken_as_complete(cohort):
    _, _, root = cohort
    good = build(cohort)
    key = good.key
    # a build killed after writing everything into its temporary folder, but before the rename
    leftover = root / f".tmp-rois-{key[:16]}-killed"
    os.replace(good.path, leftover)
    assert load_cache(root / f"rois-{key[:16]}") is None
    fresh = build(cohort)
    assert fresh.built and fresh.key == key
    assert not leftover.exists()  # cleaned up by the next build of the same key
    assert sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) == [f"rois-{key[:16]}"]


def test_an_interrupted_build_leaves_nothing_behind(cohort, monkeypatch):
    _, _, root = cohort
    real = bmd.io.read_image
    calls = []

    def dies_on_the_third(path):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(roi_cache, "read_image", dies_on_the_third)  # the name the cache decodes with
    with pytest.raises(KeyboardInterrupt):
        build(cohort, chunk_size=2)
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.setattr(roi_cache, "read_image", real)
    assert build(cohort).built


def test_errors_name_the_case(cohort):
    manifest, landmarks, _ = cohort
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(manifest.at[1, "image_path"])
    with open(manifest.at[1, "image_path"], "wb") as fh:
        fh.write(b"not an image at all")
    with pytest.raises(RoiCacheError, match="C1"):
        build(cohort)
    broken = landmarks.copy()
    broken.loc[4, "x_t12"], broken.loc[4, "y_t12"] = broken.loc[4, "x_cervical"], broken.loc[4, "y_cervical"]
    manifest2 = manifest.drop(index=1)
    with pytest.raises(RoiCacheError, match="C4.*degenerate"):
        build(cohort, manifest=manifest2, landmarks=broken)
    with pytest.raises(ValueError, match="C5"):
        build(cohort, manifest=manifest2, landmarks=landmarks.iloc[:5])


def test_a_landmark_function_runs_on_the_decoded_images(cohort):
    manifest, landmarks, _ = cohort
    table = landmarks.set_index("case_id")
    seen = []

    def detector(images, case_ids):
        seen.extend(case_ids)
        assert all(im.shape == SHAPE and im.dtype == np.float32 for im in images)
        return np.stack([table.loc[c].to_numpy(float).reshape(16, 2) + 1.0 for c in case_ids])

    with pytest.raises(ValueError, match="source"):
        build(cohort, landmarks=detector)
    cache = build(cohort, landmarks=detector, source="detector-v1", chunk_size=4)
    assert sorted(seen) == sorted(manifest["case_id"])  # each image once
    assert np.allclose(cache.landmarks[0].ravel(), table.iloc[0].to_numpy(float) + 1.0)
    seen.clear()
    assert not build(cohort, landmarks=detector, source="detector-v1").built and seen == []
    assert cache_key(manifest, detector, ROI, CHEST, source="detector-v2") != cache.key


def test_workers_give_the_same_arrays_and_float16_storage(cohort):
    one = build(cohort, workers=1, dtype="float16")
    two = build(cohort, workers=2, chunk_size=2, dtype="float16", force=True)
    assert two.built and two.path == one.path and one.local.dtype == np.float16
    assert np.array_equal(np.asarray(two.local), np.asarray(build(cohort, workers=1, dtype="float16",
                                                                   force=True).local))
    assert np.array_equal(np.asarray(two.chest), np.asarray(one.chest))
    crops = two.crops(0)
    assert crops["chest"].dtype == np.float32 and crops["chest"].min() >= 0 and crops["chest"].max() <= 1


def test_a_live_build_of_the_same_key_is_waited_for_or_refused_in_one_line(cohort):
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    from bmd.infra.locks import LockBusy

    manifest, landmarks, root = cohort
    root.mkdir(parents=True, exist_ok=True)
    lock = root / f".rois-{cache_key(manifest, landmarks, ROI, CHEST)[:16]}.lock"
    holder = textwrap.dedent("""
        import sys
        from bmd.infra.locks import hold_lock
        with hold_lock(sys.argv[1], "a ROI cache"):
            print("held", flush=True)
            sys.stdin.readline()
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", holder, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "held"  # another process is building this very cache
        with pytest.raises(LockBusy, match=rf"^{lock}: the ROI cache rois-\w+ is in use by pid {proc.pid}$"):
            build(cohort, wait=False)
        with pytest.raises(LockBusy, match=rf"pid {proc.pid} \(gave up after waiting"):
            build(cohort, timeout=0.2)
        assert not [p for p in root.iterdir() if p.name.startswith("rois-")]  # nothing built meanwhile
    finally:
        proc.communicate("\n", timeout=60)
    assert build(cohort).built  # the holder is gone: built here
