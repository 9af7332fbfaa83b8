"""The ROI cache: every crop of a manifest computed once, stored compactly, verified before use.

Layout: ``<cache_dir>/rois-<key16>/`` holds

* ``chest.npy`` (N, C, C) and ``local.npy`` (N, 6, R, R): the crops (the local axis in
  :data:`bmd.columns.LOCAL_NAMES` order), uint8 = round(value × 255) by default (8 bits, as a PNG
  radiograph; quantisation is far below radiographic noise) or float16 in [0, 1] (twice the size);
* ``landmarks.npy`` (N, 16, 2): the points the crops were cut at (so overlays show what was used);
* ``case_ids.txt``: one case id per line, the row order of the arrays;
* ``meta.json``: the key, what it was computed from, shapes, dtypes, and the size and SHA-256 of
  every file. It is written last.

**Key.** SHA-256 of: the manifest's cases in order (``case_id``, the image path as written, the image
file's size and modification time: a re-rendered or replaced image invalidates the cache without
re-reading every file on each check), the landmark source id and the landmark values (rounded to
1e-4 px; for a landmark *function* its source id stands for its values), the geometry version and
:class:`~bmd.rois.geometry.RoiGeometry` parameters, the crop sizes and the storage dtype. DXA values are not
part of it: the crops do not depend on them (training joins targets by case id).

**Verification.** :meth:`RoiCache.open` refuses (and :func:`build_roi_cache` rebuilds) a folder
whose ``meta.json`` is missing or unreadable, whose key differs from the one asked for, whose files
are missing or of the wrong size, whose arrays have the wrong shape or dtype, whose case ids differ
from the manifest's, or (``verify="full"``, the default) whose file checksums do not match.

**Atomic builds.** A build writes into a hidden temporary folder beside the final one, fsyncs it and
renames it into place with ``os.replace``; a killed build leaves only the hidden folder, which is
never opened as a cache and is removed by the next build of the same key. Builds of one key are
serialised with :func:`bmd.infra.locks.hold_lock`, so concurrent callers build once: a second caller
waits for the first (with progress lines) and reuses its cache.

**Work.** Each image is decoded once (:func:`bmd.io.read_image`); cases are processed in chunks
(one batched resampling per chunk, see :mod:`bmd.rois.geometry`) by worker processes (started from a
fork server, never forked from a process that has run torch) that write straight into the
memory-mapped output arrays. Workers end with the build that started them, even when it is killed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bmd.columns import COORD_COLUMNS, LOCAL_NAMES, N_LANDMARKS, ROI_NAMES
from bmd.infra.artifacts import inputs_key
from bmd.infra.atomic import dir_mode
from bmd.infra.digests import sha256_bytes, sha256_file
from bmd.infra.locks import hold_lock
from bmd.infra.processes import exit_with
from bmd.io import read_image
from bmd.landmarks.data import landmarks_for_manifest
from bmd.rois.crop import crop_rois_batch
from bmd.rois.geometry import DEFAULT_GEOMETRY, GEOMETRY_VERSION, RoiGeometry

CACHE_FORMAT = 2
"""Version of the folder layout (part of the key)."""
DTYPES = ("uint8", "float16")
_FILES = ("chest.npy", "local.npy", "landmarks.npy", "case_ids.txt")
_PREFIX = "rois-"

LandmarkFunction = Callable[[list[np.ndarray], list[str]], np.ndarray]
"""``fn(images, case_ids) -> (n, 16, 2)``: landmarks of decoded images (e.g. a detector), called per chunk."""
LandmarkSource = pd.DataFrame | np.ndarray | LandmarkFunction | None


class RoiCacheError(ValueError):
    """A cache folder that cannot be used, or a case that cannot be cropped; one-line reason."""


# ------------------------------------------------------------------------------------------ the cache


@dataclass(frozen=True)
class RoiCache:
    """A verified ROI cache: memory-mapped crop arrays and the case ids of their rows.

    ``local`` (N, 6, R, R) and ``chest`` (N, C, C) are read-only memory maps in the stored dtype
    (uint8 = value × 255, or float16 in [0, 1]); :meth:`crops` gives one case as float32 in [0, 1].
    """

    path: Path
    case_ids: list[str]
    chest: np.ndarray
    local: np.ndarray
    landmarks: np.ndarray  # (N, 16, 2) the points the crops were cut at
    meta: dict = field(repr=False)
    built: bool = False  # True when this call computed the crops, False when an existing cache was reused

    def __len__(self) -> int:
        return len(self.case_ids)

    @property
    def key(self) -> str:
        """The cache key (SHA-256 hex)."""
        return self.meta["key"]

    @property
    def roi_size(self) -> int:
        """Side of the local crops."""
        return int(self.local.shape[-1])

    @property
    def chest_size(self) -> int:
        """Side of the chest crop."""
        return int(self.chest.shape[-1])

    def index(self, case_id: str) -> int:
        """Row of a case id."""
        try:
            return self._rows[str(case_id)]
        except KeyError:
            raise KeyError(f"case {case_id!r} is not in the ROI cache {self.path}") from None

    @property
    def _rows(self) -> dict[str, int]:
        rows = self.__dict__.get("_row_index")
        if rows is None:
            rows = {c: i for i, c in enumerate(self.case_ids)}
            object.__setattr__(self, "_row_index", rows)
        return rows

    def crops(self, case: int | str) -> dict[str, np.ndarray]:
        """ROI name → float32 crop in [0, 1] of one case (row number or case id), ``ROI_NAMES`` order."""
        i = self.index(case) if isinstance(case, str) else int(case)
        scale = 1 / 255.0 if self.chest.dtype == np.uint8 else 1.0
        out = {"chest": np.asarray(self.chest[i], dtype=np.float32) * scale}
        for j, name in enumerate(LOCAL_NAMES):
            out[name] = np.asarray(self.local[i, j], dtype=np.float32) * scale
        return out

    @classmethod
    def open(cls, path: str | os.PathLike, key: str | None = None, case_ids: Sequence[str] | None = None,
             verify: str = "full") -> RoiCache:
        """Open and verify a cache folder; raises :class:`RoiCacheError` naming the first problem.

        ``key`` / ``case_ids``: what the caller expects (checked when given). ``verify``: ``"full"``
        also checks every file's SHA-256; ``"quick"`` checks meta, key, sizes, shapes, dtypes and ids.
        """
        if verify not in ("full", "quick"):
            raise ValueError(f"verify must be 'full' or 'quick', got {verify!r}")
        folder = Path(path)

        def bad(reason: str) -> RoiCacheError:
            return RoiCacheError(f"{folder}: {reason}")

        try:
            meta = json.loads((folder / "meta.json").read_text())
        except FileNotFoundError:
            raise bad("no meta.json (an unfinished or foreign folder)") from None
        except (OSError, ValueError) as exc:
            raise bad(f"unreadable meta.json ({exc.__class__.__name__})") from None
        if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
            raise bad(f"cache format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                      f"expected {CACHE_FORMAT}")
        if key is not None and meta.get("key") != key:
            raise bad("stale: built for other inputs (key mismatch)")
        try:
            files = meta["files"]
            for name in _FILES:
                p = folder / name
                if not p.is_file():
                    raise bad(f"{name} is missing")
                if p.stat().st_size != files[name]["size"]:
                    raise bad(f"{name} has {p.stat().st_size} bytes, expected {files[name]['size']} (truncated?)")
            arrays = {}
            for name in ("chest", "local", "landmarks"):
                try:
                    arr = np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                except (OSError, ValueError) as exc:
                    raise bad(f"{name}.npy is not a readable array ({exc})") from None
                if list(arr.shape) != meta["shapes"][name] or str(arr.dtype) != meta["dtypes"][name]:
                    raise bad(f"{name}.npy is {arr.dtype}{list(arr.shape)}, expected "
                              f"{meta['dtypes'][name]}{meta['shapes'][name]}")
                arrays[name] = arr
            ids = (folder / "case_ids.txt").read_text(encoding="utf-8").splitlines()
            n = meta["shapes"]["chest"][0]
            if len(ids) != n or len(set(ids)) != n:
                raise bad(f"case_ids.txt has {len(ids)} lines ({len(set(ids))} distinct), expected {n}")
            if case_ids is not None and ids != [str(c) for c in case_ids]:
                raise bad("its case ids differ from the manifest's")
            if verify == "full":
                for name in _FILES:
                    if sha256_file(folder / name) != files[name]["sha256"]:
                        raise bad(f"{name} does not match its checksum (corrupt)")
        except (KeyError, TypeError) as exc:
            raise bad(f"incomplete meta.json ({exc.__class__.__name__}: {exc})") from None
        return cls(folder, ids, arrays["chest"], arrays["local"], arrays["landmarks"], meta)


def load_cache(folder: str | os.PathLike, key: str | None = None, verify: str = "full") -> RoiCache | None:
    """The verified cache in ``folder`` (with ``key`` when given), or None when it cannot be used."""
    try:
        return RoiCache.open(folder, key=key, verify=verify)
    except RoiCacheError:
        return None


# ---------------------------------------------------------------------------------------------- key


def _image_paths(manifest: pd.DataFrame) -> list[str]:
    col = "image_path" if "image_path" in manifest.columns else "image"
    if col not in manifest.columns:
        raise ValueError("the manifest needs an image_path (or image) column")
    return [str(p) for p in manifest[col]]


def _case_ids(manifest: pd.DataFrame) -> list[str]:
    ids = [str(c) for c in manifest["case_id"]]
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise ValueError(f"duplicate case_id {dup!r} in the manifest")
    return ids


def landmark_array(manifest: pd.DataFrame, landmarks: pd.DataFrame | np.ndarray | None) -> np.ndarray:
    """(N, 16, 2) landmarks aligned with the manifest rows.

    ``landmarks``: a table with ``case_id`` (or ``image``) and the 32 ``x_/y_`` columns; an (N, 16, 2)
    or (N, 32) array already in manifest order; or None for the manifest's own landmark files
    (ground truth, column ``landmarks``). Raises ``ValueError`` naming cases without landmarks.
    """
    ids = _case_ids(manifest)
    if landmarks is None:

        pts = landmarks_for_manifest(manifest)
    elif isinstance(landmarks, pd.DataFrame):
        missing_cols = [c for c in COORD_COLUMNS if c not in landmarks.columns]
        if missing_cols:
            raise ValueError(f"landmark table lacks columns {', '.join(missing_cols[:4])}...")
        if "case_id" in landmarks.columns:
            table = landmarks.assign(case_id=landmarks["case_id"].astype(str)).drop_duplicates("case_id", keep="last")
            keys, index = ids, table.set_index("case_id")
        elif "image" in landmarks.columns and "image" in manifest.columns:
            table = landmarks.assign(image=landmarks["image"].astype(str)).drop_duplicates("image", keep="last")
            keys, index = [str(p) for p in manifest["image"]], table.set_index("image")
        else:
            raise ValueError("landmark table needs a case_id (or image) column")
        present = [k in index.index for k in keys]
        pts = np.full((len(ids), N_LANDMARKS, 2), np.nan)
        if any(present):
            sel = [k for k, ok in zip(keys, present, strict=True) if ok]
            pts[np.flatnonzero(present)] = index.loc[sel, list(COORD_COLUMNS)].to_numpy(dtype=np.float64).reshape(
                -1, N_LANDMARKS, 2)
    else:
        pts = np.asarray(landmarks, dtype=np.float64)
        if pts.ndim == 2 and pts.shape[1] == 2 * N_LANDMARKS:
            pts = pts.reshape(-1, N_LANDMARKS, 2)
        if pts.shape != (len(ids), N_LANDMARKS, 2):
            raise ValueError(f"landmark array has shape {pts.shape}, expected ({len(ids)}, 16, 2)")
    bad = [ids[i] for i in np.flatnonzero(~np.isfinite(pts).all(axis=(1, 2)))]
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ValueError(f"no complete landmarks for case(s) {', '.join(bad[:5])}{more}")
    return pts


def cache_key(manifest: pd.DataFrame, landmarks: LandmarkSource, roi_size: int, chest_size: int, *,
              source: str | None = None, geometry: RoiGeometry | None = None, dtype: str = "uint8") -> str:
    """The SHA-256 key of the cache these inputs give (see the module docstring)."""
    return _key_parts(manifest, landmarks, roi_size, chest_size, source, geometry, dtype)[0]


def _key_parts(manifest: pd.DataFrame, landmarks: LandmarkSource, roi_size: int, chest_size: int,
               source: str | None, geometry: RoiGeometry | None, dtype: str
               ) -> tuple[str, dict[str, Any], np.ndarray | None]:
    """(key, its readable parts, the landmark array or None for a function)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if int(roi_size) < 1 or int(chest_size) < 1:
        raise ValueError("roi_size and chest_size must be positive")
    ids = _case_ids(manifest)
    h = hashlib.sha256()
    images = [str(p) for p in manifest["image"]] if "image" in manifest.columns else _image_paths(manifest)
    for cid, shown, path in zip(ids, images, _image_paths(manifest), strict=True):
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"  # reported with the case id when the build reads it
        h.update(f"{cid}\x1f{shown}\x1f{stamp}\n".encode())
    manifest_digest = h.hexdigest()
    if callable(landmarks) and not isinstance(landmarks, (pd.DataFrame, np.ndarray)):
        if not source:
            raise ValueError("a landmark function needs a `source` id (e.g. the detector bundle's hash): it stands "
                             "for the landmark values in the cache key")
        points, landmark_digest = None, None
    else:
        points = landmark_array(manifest, landmarks)
        landmark_digest = sha256_bytes(np.ascontiguousarray(np.round(points, 4), dtype="<f8").tobytes())
    parts = {
        "format": CACHE_FORMAT, "geometry_version": GEOMETRY_VERSION,
        "geometry": (geometry or DEFAULT_GEOMETRY).as_dict(), "roi_size": int(roi_size),
        "chest_size": int(chest_size), "dtype": dtype, "n_cases": len(ids), "manifest_digest": manifest_digest,
        "landmark_source": source or ("manifest" if landmarks is None else "given"),
        "landmark_digest": landmark_digest,
    }
    return inputs_key(parts), parts, points


# -------------------------------------------------------------------------------------------- build

_STATE: dict[str, Any] = {}  # the build's inputs; handed to each worker by its initializer


def _init_worker(threads: int, state: dict | None = None, parent: int | None = None) -> None:
    if parent is not None:  # first: importing torch takes a while
        exit_with(parent)
    import torch

    # one thread per worker: the parallelism is over processes
    torch.set_num_threads(threads)
    if state is not None:
        _STATE.clear()
        _STATE.update(state)


def _process_chunk(rows: list[int]) -> tuple[list[int], np.ndarray]:
    """Decode, (detect,) crop and store the cases ``rows``; returns them with the landmarks used."""

    s = _STATE
    images, ids = [], []
    for i in rows:
        try:
            images.append(read_image(s["paths"][i])[0])
        except (OSError, ValueError) as exc:
            raise RoiCacheError(f"case {s['ids'][i]}: cannot read {s['paths'][i]}: {exc}") from None
        ids.append(s["ids"][i])
    if s["points"] is not None:
        pts = s["points"][rows]
    else:
        pts = np.asarray(s["function"](images, ids), dtype=np.float64).reshape(len(rows), N_LANDMARKS, 2)
    try:
        crops = crop_rois_batch(images, pts, s["roi_size"], s["chest_size"], s["geometry"])
    except ValueError:
        for cid, img, p in zip(ids, images, pts, strict=True):  # name the case that fails
            try:
                crop_rois_batch([img], p[None], s["roi_size"], s["chest_size"], s["geometry"])
            except ValueError as exc:
                raise RoiCacheError(f"case {cid}: {exc}") from None
        raise
    chest = np.load(s["dir"] / "chest.npy", mmap_mode="r+")
    local = np.load(s["dir"] / "local.npy", mmap_mode="r+")
    chest[rows] = encode(crops.chest, s["dtype"])
    local[rows] = encode(crops.local, s["dtype"])
    chest.flush()
    local.flush()
    return rows, pts


def encode(x: np.ndarray, dtype: str) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.round(x * 255).astype(np.uint8) if dtype == "uint8" else x.astype(np.float16)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories
    finally:
        os.close(fd)


def build_roi_cache(manifest: pd.DataFrame, landmarks: LandmarkSource, cache_dir: str | os.PathLike,
                    roi_size: int, chest_size: int, *, source: str | None = None,
                    geometry: RoiGeometry | None = None, dtype: str = "uint8", workers: int | None = None,
                    chunk_size: int = 16, progress: bool = False, force: bool = False, verify: str = "full",
                    wait: bool = True, timeout: float | None = None) -> RoiCache:
    """Crop every case of ``manifest`` once into ``<cache_dir>/rois-<key16>/``, or reuse a verified cache.

    ``manifest``: rows with ``case_id`` and ``image_path`` (absolute, as :func:`bmd.inputs.manifest.load_manifest`
    adds) or ``image``. ``landmarks``: a table (``case_id`` + the 32 columns), an (N, 16, 2) array in
    manifest order, None for the manifest's own landmark files, or a function ``fn(images, case_ids)
    -> (n, 16, 2)`` called on the decoded images (then ``source`` is required: it stands for the
    landmark values in the key). ``source``: a name for where the landmarks come from (e.g.
    ``"ground_truth"``, a detector's id). ``workers``: processes (default: the CPU count; 1 runs
    in-process). A landmark function always runs in this process (batched, with its own threads,
    e.g. a detector on a GPU), so it need not be picklable. ``force``: rebuild even when a valid cache exists. ``verify``: how an existing cache is
    checked (``"full"``: checksums too; ``"quick"``: sizes, shapes and ids). ``wait``/``timeout``: how a
    live build of the same key in another process is waited for (:func:`bmd.infra.locks.hold_lock`).

    Returns the :class:`RoiCache` (``built`` tells whether crops were computed). Raises
    :class:`RoiCacheError` naming the case when an image cannot be read or its landmarks are degenerate.
    """
    if len(manifest) == 0:
        raise ValueError("the manifest has no cases to crop")
    key, parts, points = _key_parts(manifest, landmarks, roi_size, chest_size, source, geometry, dtype)
    ids = _case_ids(manifest)
    root = Path(cache_dir)
    tag = key[:16]
    final = root / f"{_PREFIX}{tag}"
    if not force:
        cached = _reuse(final, key, ids, verify)
        if cached is not None:
            return cached
    root.mkdir(parents=True, exist_ok=True)
    # a live build of the same key is waited for (then its cache is reused); a dead one's lock is taken over
    with hold_lock(root / f".{_PREFIX}{tag}.lock", f"the ROI cache {final.name}", wait=wait, timeout=timeout):
        if not force:  # another process may have finished the same build while we waited
            cached = _reuse(final, key, ids, verify)
            if cached is not None:
                return cached
        for stale in [*root.glob(f".tmp-{_PREFIX}{tag}-*"), *root.glob(f".trash-{_PREFIX}{tag}-*")]:
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed build of this key (we hold its lock)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{_PREFIX}{tag}-", dir=root))
        try:
            start = time.perf_counter()
            used = _build_into(tmp, manifest, ids, points, landmarks if points is None else None, roi_size,
                               chest_size, geometry or DEFAULT_GEOMETRY, dtype, workers, chunk_size, progress)
            _finish(tmp, key, parts, ids, used, source, time.perf_counter() - start)
            if final.exists():  # an invalid cache of the same key: move it aside, then swap in the new one
                trash = Path(tempfile.mkdtemp(prefix=f".trash-{_PREFIX}{tag}-", dir=root))
                os.replace(final, trash / "old")
            else:
                trash = None
            os.chmod(tmp, dir_mode())  # mkdtemp made it 0o700
            os.replace(tmp, final)
            _fsync(root)
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    cache = RoiCache.open(final, key=key, case_ids=ids, verify="quick")  # checksums were just computed
    return RoiCache(cache.path, cache.case_ids, cache.chest, cache.local, cache.landmarks, cache.meta, built=True)


def _reuse(folder: Path, key: str, case_ids: Sequence[str], verify: str) -> RoiCache | None:
    """The cache in ``folder`` if it verifies for ``key`` and ``case_ids``, else None."""
    if not folder.exists():
        return None
    try:
        return RoiCache.open(folder, key=key, case_ids=case_ids, verify=verify)
    except RoiCacheError:
        return None


def _build_into(tmp: Path, manifest: pd.DataFrame, ids: list[str], points: np.ndarray | None,
                function: LandmarkFunction | None, roi_size: int, chest_size: int, geometry: RoiGeometry,
                dtype: str, workers: int | None, chunk_size: int, progress: bool) -> np.ndarray:
    """Fill ``tmp`` with the crop arrays; returns the landmarks used (N, 16, 2)."""
    n = len(ids)
    np.lib.format.open_memmap(tmp / "chest.npy", "w+", dtype, (n, chest_size, chest_size)).flush()
    np.lib.format.open_memmap(tmp / "local.npy", "w+", dtype, (n, len(LOCAL_NAMES), roi_size, roi_size)).flush()
    _STATE.clear()
    _STATE.update(paths=_image_paths(manifest), ids=ids, points=points, function=function, roi_size=int(roi_size),
                  chest_size=int(chest_size), geometry=geometry, dtype=dtype, dir=tmp)
    chunk_size = max(1, int(chunk_size))
    chunks = [list(range(i, min(i + chunk_size, n))) for i in range(0, n, chunk_size)]
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(chunks)))
    if function is not None:
        n_workers = 1  # a detector runs in this process (batched); it need not be picklable
    used = np.full((n, N_LANDMARKS, 2), np.nan)
    pool = None
    try:
        if n_workers > 1:
            # forkserver, not fork: a process that has run torch (a notebook kernel after training) can
            # deadlock its forked children in the OpenMP runtime; the state travels pickled instead
            pool = ProcessPoolExecutor(n_workers, mp_context=get_context("forkserver"), initializer=_init_worker,
                                       initargs=(1, dict(_STATE), os.getpid()))
            results = pool.map(_process_chunk, chunks)
        else:
            results = map(_process_chunk, chunks)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="ROI cache", unit="img")
        for rows, pts in results:
            used[rows] = pts
            if bar is not None:
                bar.update(len(rows))
        if bar is not None:
            bar.close()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        _STATE.clear()
    return used


def _finish(tmp: Path, key: str, parts: dict, ids: list[str], used: np.ndarray, source: str | None,
            seconds: float) -> None:
    """Write landmarks, case ids and (last) meta.json with sizes and checksums; fsync everything."""
    with open(tmp / "landmarks.npy", "wb") as fh:
        np.save(fh, used)
    (tmp / "case_ids.txt").write_text("".join(f"{c}\n" for c in ids), encoding="utf-8")
    arrays = {name: np.load(tmp / f"{name}.npy", mmap_mode="r") for name in ("chest", "local", "landmarks")}
    for name in _FILES:
        _fsync(tmp / name)
    import torch

    meta = {
        "format": CACHE_FORMAT, "key": key, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 2), "roi_names": list(ROI_NAMES), "local_names": list(LOCAL_NAMES),
        "landmark_source": source, "inputs": parts,
        "shapes": {k: list(a.shape) for k, a in arrays.items()},
        "dtypes": {k: str(a.dtype) for k, a in arrays.items()},
        "files": {name: {"size": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)} for name in _FILES},
        "versions": {"numpy": np.__version__, "torch": torch.__version__},
    }
    del arrays
    with open(tmp / "meta.json", "w", encoding="utf-8") as fh:  # last: its presence marks a complete build
        json.dump(meta, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync(tmp)
