"""The ROI cache: every crop of a manifest computed once, stored compactly, verified on load.

A cache is a folder ``<root>/<key>/`` holding ``chest.npy`` (N, chest, chest) and ``local.npy``
(N, 6, roi, roi) as uint8, ``case_ids.txt`` and ``meta.json`` (key, shapes, SHA-256 of both arrays).
The key hashes the manifest's cases and image files (path, size, modification time), the landmark
source name and values, the ROI geometry version and the sizes: change any of them and a new cache
is built. A cache whose files are missing, truncated or do not match their checksums is rebuilt,
never used. Builds happen in a temporary folder renamed into place, so a killed build leaves nothing
that is later taken as complete. Training reads the arrays memory-mapped and never decodes an image.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from bmd.landmarks.points import COORD_COLUMNS
from bmd.rois import GEOMETRY_VERSION, crop_rois


@dataclass(frozen=True)
class RoiCache:
    """A verified cache: memory-mapped arrays and the case ids of their rows."""

    path: Path
    case_ids: list[str]
    chest: np.ndarray  # (N, chest, chest) uint8
    local: np.ndarray  # (N, 6, roi, roi) uint8


def cache_key(manifest: pd.DataFrame, landmarks: pd.DataFrame, source: str, roi_size: int, chest_size: int) -> str:
    """The hash naming a cache: cases, image files, landmark source and values, geometry and sizes."""
    h = hashlib.sha256()
    h.update(json.dumps([GEOMETRY_VERSION, source, int(roi_size), int(chest_size)]).encode())
    for case_id, image in zip(manifest["case_id"], manifest["image_path"], strict=True):
        st = os.stat(image)
        h.update(f"{case_id}|{image}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    coords = landmarks.set_index("case_id").loc[list(manifest["case_id"]), list(COORD_COLUMNS)]
    h.update(np.round(coords.to_numpy(dtype=float), 2).tobytes())
    return h.hexdigest()[:20]


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_cache(folder: str | os.PathLike, key: str | None = None) -> RoiCache | None:
    """The cache in ``folder`` if it is complete, uncorrupted (and has ``key`` when given), else None."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if key is not None and meta["key"] != key:
            return None
        for name in ("chest", "local"):
            if _sha(folder / f"{name}.npy") != meta["sha256"][name]:
                return None
        chest = np.load(folder / "chest.npy", mmap_mode="r")
        local = np.load(folder / "local.npy", mmap_mode="r")
        case_ids = (folder / "case_ids.txt").read_text().split()
    except (OSError, ValueError, KeyError):
        return None
    if list(chest.shape) != meta["chest_shape"] or list(local.shape) != meta["local_shape"]:
        return None
    if len(case_ids) != len(chest):
        return None
    return RoiCache(folder, case_ids, chest, local)


def _crop_one(task: tuple) -> tuple[int, np.ndarray, np.ndarray]:
    from bmd.io import read_image

    index, image_path, points, roi_size, chest_size = task
    image, _ = read_image(image_path)
    chest, local = crop_rois(image, points, roi_size, chest_size)
    return index, np.round(chest * 255).astype(np.uint8), np.round(local * 255).astype(np.uint8)


def build_roi_cache(manifest: pd.DataFrame, landmarks: pd.DataFrame, root: str | os.PathLike, roi_size: int,
                    chest_size: int, source: str = "ground_truth", workers: int | None = None,
                    progress: bool = False) -> RoiCache:
    """Crop every case of ``manifest`` (with ``image_path``) at its ``landmarks`` (case_id + 32 columns).

    Reuses ``<root>/<key>`` when it verifies; otherwise builds it (each image decoded once).
    """
    key = cache_key(manifest, landmarks, source, roi_size, chest_size)
    root = Path(root)
    final = root / key
    cached = load_cache(final, key)
    if cached is not None:
        return cached
    coords = landmarks.set_index("case_id").loc[list(manifest["case_id"]), list(COORD_COLUMNS)]
    points = coords.to_numpy(dtype=float).reshape(-1, 16, 2)
    n = len(manifest)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        chest = np.lib.format.open_memmap(tmp / "chest.npy", "w+", np.uint8, (n, chest_size, chest_size))
        local = np.lib.format.open_memmap(tmp / "local.npy", "w+", np.uint8, (n, 6, roi_size, roi_size))
        tasks = [(i, p, points[i], roi_size, chest_size) for i, p in enumerate(manifest["image_path"])]
        n_workers = max(1, min(workers or os.cpu_count() or 1, n))
        pool = ProcessPoolExecutor(n_workers, mp_context=get_context("fork")) if n_workers > 1 else None
        results = pool.map(_crop_one, tasks, chunksize=16) if pool else map(_crop_one, tasks)
        try:
            if progress:
                from tqdm.auto import tqdm

                results = tqdm(results, total=n, desc="ROI cache", unit="img")
            for i, c, loc in results:
                chest[i], local[i] = c, loc
        finally:
            if pool:
                pool.shutdown(cancel_futures=True)
        chest.flush()
        local.flush()
        del chest, local
        (tmp / "case_ids.txt").write_text("\n".join(manifest["case_id"]))
        meta = {"key": key, "geometry": GEOMETRY_VERSION, "source": source, "chest_shape": [n, chest_size, chest_size],
                "local_shape": [n, 6, roi_size, roi_size],
                "sha256": {name: _sha(tmp / f"{name}.npy") for name in ("chest", "local")}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))  # written last: marks the build complete
        if final.exists():
            shutil.rmtree(final)  # an invalid cache of the same key
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    cached = load_cache(final, key)
    if cached is None:
        raise RuntimeError(f"{final}: the ROI cache just built does not verify")
    return cached
