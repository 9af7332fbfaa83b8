"""Generate (or reuse) a twin cohort folder: DICOMs, manifest, landmarks, latents and oracle.json.

Layout of ``out``::

    images/<case_id>.dcm   one radiograph per case
    manifest.csv           the project's manifest format (reference ``hologic``, device ``twin``)
    landmarks.csv          case_id + x_/y_ pixel coordinates of the 16 landmarks
    latents.csv            case_id + the hidden variables (bone health, per-bone densities, channels)
    oracle.json            spec, spec hash, seed, sizes, ceilings and the cohort's realised statistics

``manifest.csv`` and ``oracle.json`` are written last (atomically), so a killed run is never taken
as complete; a second call with the same spec hash and seed reuses the folder. One generation at a
time writes into a folder (``.twin.lock``, holding its pid): a second one refuses at once, and a
killed one's lock is taken over. Render workers end with the generation, even when it is killed.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from bmd.columns import VERTEBRAE
from bmd.infra.atomic import write_text
from bmd.columns import COORD_COLUMNS
from bmd.infra.processes import exit_with
from bmd.data.twin.dicom import write_dicom
from bmd.data.twin.oracle import ceilings
from bmd.data.twin.population import sample_population
from bmd.data.twin.render import render_case
from bmd.data.twin.spec import BONES, TwinSpec, spec_hash
from bmd.data.manifest import write_manifest
from bmd.data.tscores import osteoporotic, t_scores_for_manifest

LATENT_COLUMNS = ("g", *(f"{kind}_{b}" for b in BONES for kind in ("d", "m", "tau")))


class TwinError(RuntimeError):
    """The twin cohort could not be generated."""


class TwinSettings(Protocol):
    """What the twin needs from a study profile (:class:`bmd.study.config.Profile` is one)."""

    profile: str
    seed: int
    twin_n_train: int
    twin_n_val: int
    twin_n_test: int
    twin_image_size: int


def _sizes(profile: TwinSettings) -> dict:
    return {"train": profile.twin_n_train, "val": profile.twin_n_val, "test": profile.twin_n_test,
            "image_size": profile.twin_image_size}


def is_complete(out: Path, expected_hash: str, seed: int) -> bool:
    """True when ``out`` holds a finished cohort of this spec hash and seed (all images present)."""
    try:
        oracle = json.loads((out / "oracle.json").read_text())
        if oracle.get("spec_hash") != expected_hash or oracle.get("seed") != seed:
            return False
        manifest = pd.read_csv(out / "manifest.csv", usecols=["image"])
    except (OSError, ValueError, KeyError):
        return False
    return (out / "landmarks.csv").is_file() and all((out / p).is_file() for p in manifest["image"])


class _Lock:
    """An exclusive lock on ``.twin.lock`` in the output folder, holding the owner's pid.

    ``flock`` decides who holds it (the kernel releases it when its holder dies, so a killed
    generation's lock is taken over and two starters can never both win); a live pid left in the file
    by a writer without ``flock`` is respected too. A second generation refuses at once, naming the pid.
    """

    def __init__(self, folder: Path):
        self.path = folder / ".twin.lock"
        self.fd: int | None = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # not on POSIX: the pid in the file is the only guard
            fcntl = None
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if fcntl is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        raise TwinError(self._busy(self._owner(fd, wait=True))) from None
                    except OSError:
                        pass  # a file system without locks: the pid check below still applies
                try:
                    current = os.stat(self.path)
                except FileNotFoundError:
                    current = None
                here = os.fstat(fd)
                if current is None or (current.st_ino, current.st_dev) != (here.st_ino, here.st_dev):
                    os.close(fd)  # the holder removed the file as we locked it: lock the new one
                    continue
                owner = self._owner(fd)
                if owner is not None:
                    raise TwinError(self._busy(owner))
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except BaseException:
                os.close(fd)
                raise
            self.fd = fd
            return self
        raise TwinError(f"{self.path.parent}: cannot take the lock {self.path.name}")

    def _busy(self, owner: int | None) -> str:
        return f"{self.path.parent}: another twin generation (pid {owner or '?'}) is writing here"

    @staticmethod
    def _owner(fd: int, wait: bool = False) -> int | None:
        """The pid written in the lock file if that process is alive, else None.

        ``wait``: the file is locked by another process, which writes its pid just after locking.
        """
        for _ in range(20 if wait else 1):
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            if text or not wait:
                break
            time.sleep(0.05)
        try:
            pid = int(text or 0)
            if pid <= 0:
                return None
            os.kill(pid, 0)
        except PermissionError:
            return pid  # alive, owned by someone else
        except (ValueError, ProcessLookupError, OverflowError):
            return None
        return pid

    def __exit__(self, *exc):
        # removed while still locked, so a waiter that opened the old file re-checks (see __enter__)
        self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None


def _render_one(task: tuple) -> tuple[int, np.ndarray, int, bool]:
    index, latents, sex, age, case_id, patient_id, seed, size, spacing, out = task
    stored, points, params = render_case(latents, sex, [seed, 7, index], size)
    write_dicom(Path(out) / "images" / f"{case_id}.dcm", stored, bits=params.bits,
                monochrome1=params.monochrome1, spacing_mm=spacing, case_id=case_id, patient_id=patient_id,
                sex=sex, age=age, seed=seed)
    return index, points, params.bits, params.monochrome1


def _realised(df: pd.DataFrame) -> dict:

    bmd = df[[f"bmd_{v.lower()}" for v in VERTEBRAE]]
    corr = bmd.corr()
    t = t_scores_for_manifest(df)
    return {
        "cases": len(df), "patients": int(df["patient_id"].nunique()),
        "split_cases": {s: int((df["split"] == s).sum()) for s in ("train", "val", "test")},
        "female_share": round(float((df["sex"] == "F").mean()), 4),
        "age_mean": round(float(df["age"].mean()), 2),
        "bmd_mean": {v: round(float(bmd.iloc[:, i].mean()), 4) for i, v in enumerate(VERTEBRAE)},
        "bmd_sd": {v: round(float(bmd.iloc[:, i].std()), 4) for i, v in enumerate(VERTEBRAE)},
        "bmd_corr": {f"{a}-{b}": round(float(corr.iloc[i, j]), 4) for i, a in enumerate(VERTEBRAE)
                     for j, b in enumerate(VERTEBRAE) if j > i},
        "prevalence_t_below_-2.5": {
            v: round(float(np.mean(osteoporotic(t[f"t_{v.lower()}"].dropna().to_numpy()))), 4) for v in VERTEBRAE},
    }


def generate_twin(out: str | os.PathLike, profile: TwinSettings, seed: int | None = None, workers: int | None = None,
                  progress: bool = True, spec: TwinSpec | None = None) -> Path:
    """Generate the twin cohort of ``profile`` and ``seed`` into ``out`` (or reuse it); returns ``out``.

    A killed generation leaves no ``oracle.json`` (written last), so its folder is regenerated by the
    next call. Raises :class:`TwinError` when another live generation is writing into ``out``.
    """
    spec = spec or TwinSpec()
    seed = profile.seed if seed is None else int(seed)
    out = Path(out).resolve()
    sizes = _sizes(profile)
    digest = spec_hash(spec, sizes)
    if is_complete(out, digest, seed):
        return out
    out.mkdir(parents=True, exist_ok=True)
    with _Lock(out):
        if is_complete(out, digest, seed):  # finished by another generation between the check and the lock
            return out
        for name in ("oracle.json", "manifest.csv"):  # whatever was there is no longer a finished cohort
            (out / name).unlink(missing_ok=True)
        for tmp in [*out.glob(".*.tmp"), *out.glob("images/.*.tmp")]:  # a killed writer's (we hold the lock)
            tmp.unlink(missing_ok=True)
        start = time.perf_counter()
        df = sample_population({k: sizes[k] for k in ("train", "val", "test")}, seed, spec)
        size = profile.twin_image_size
        spacing = spec.field_width_mm / size
        tasks = [(i, {c: float(df.at[i, c]) for c in LATENT_COLUMNS}, df.at[i, "sex"], int(df.at[i, "age"]),
                  df.at[i, "case_id"], df.at[i, "patient_id"], seed, size, spacing, str(out)) for i in range(len(df))]
        points = np.zeros((len(df), 16, 2))
        n_workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
        if n_workers == 1:
            results = map(_render_one, tasks)
            pool = None
        else:
            # forkserver: forking a process that already ran torch can deadlock the children
            pool = ProcessPoolExecutor(n_workers, mp_context=get_context("forkserver"), initializer=exit_with,
                                       initargs=(os.getpid(),))
            results = pool.map(_render_one, tasks, chunksize=8)
        try:
            if progress:
                from tqdm.auto import tqdm

                results = tqdm(results, total=len(tasks), desc="twin", unit="img")
            for index, pts, _bits, _mono1 in results:
                points[index] = pts
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)

        marks = pd.DataFrame(points.reshape(len(df), 32).round(2), columns=list(COORD_COLUMNS))
        marks.insert(0, "case_id", df["case_id"])
        write_text(out / "landmarks.csv", marks.to_csv(index=False))
        write_text(out / "latents.csv", df[["case_id", *LATENT_COLUMNS]].round(5).to_csv(index=False))

        rng = np.random.default_rng([seed, 202])
        manifest = df[["case_id", "patient_id"]].copy()
        manifest["image"] = [f"images/{c}.dcm" for c in df["case_id"]]
        for v in VERTEBRAE:
            manifest[f"bmd_{v.lower()}"] = df[f"bmd_{v.lower()}"]
        manifest["sex"] = df["sex"]
        manifest["age"] = df["age"].astype(int)
        manifest["reference"] = "hologic"
        manifest["split"] = df["split"]
        manifest["landmarks"] = "landmarks.csv"
        manifest["dxa_interval_days"] = rng.integers(-90, 91, len(df))
        manifest["device"] = "twin"

        write_manifest(manifest, out / "manifest.csv")
        oracle = {
            "spec_version": spec.version, "spec_hash": digest, "seed": seed, "profile": profile.profile,
            "sizes": sizes, "spec": spec.as_dict(), "ceilings": ceilings(spec),
            "realised": _realised(manifest), "generation_seconds": round(time.perf_counter() - start, 2),
        }
        write_text(out / "oracle.json", json.dumps(oracle, indent=1))
    return out
