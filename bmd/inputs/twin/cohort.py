"""Generate (or reuse) a twin cohort folder: DICOMs, manifest, landmarks, latents and oracle.json.

Layout of ``out``::

    images/<case_id>.dcm   one radiograph per case
    manifest.csv           the project's manifest format (reference ``hologic``, device ``twin``)
    landmarks.csv          case_id + x_/y_ pixel coordinates of the 16 landmarks
    latents.csv            case_id + the hidden variables (bone health, per-bone densities, channels)
    oracle.json            spec, spec hash, seed, sizes, ceilings and the cohort's realised statistics

``manifest.csv`` and ``oracle.json`` are written last (atomically), so a killed run is never taken
as complete; a second call with the same spec hash and seed reuses the folder (its key, from the spec
hash, seed and drawing code, is stamped beside the folder: :mod:`bmd.infra.artifacts`). One generation at a time
writes into a folder (``.twin.lock``, holding its pid): a second one waits for it and then reuses its
cohort (``wait=False``: refuses at once), and a killed one's lock is taken over. Render workers end
with the generation, even when it is killed.
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

from bmd.columns import COORD_COLUMNS, VERTEBRAE
from bmd.infra.artifacts import Artifact, inputs_key
from bmd.infra.atomic import write_text
from bmd.infra.digests import sha256_files
from bmd.infra.locks import hold_lock
from bmd.infra.processes import exit_with
from bmd.inputs.manifest import write_manifest
from bmd.inputs.tscores import osteoporotic, t_scores_for_manifest
from bmd.inputs.twin import acquisition, anatomy, dicom, population, render
from bmd.inputs.twin.dicom import write_dicom
from bmd.inputs.twin.oracle import ceilings
from bmd.inputs.twin.population import sample_population
from bmd.inputs.twin.render import render_case
from bmd.inputs.twin.spec import BONES, TwinSpec, spec_hash

LATENT_COLUMNS = ("g", "size", *(f"{kind}_{b}" for b in BONES for kind in ("d", "m", "c", "tau")))


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


LOCK_NAME = ".twin.lock"
"""The lock file inside the output folder that one generation at a time holds."""


def twin_lock(out: Path, wait: bool = True, timeout: float | None = None):
    """The lock of a twin folder (:func:`bmd.infra.locks.hold_lock`): a live generation is waited for,
    or refused at once (``wait=False``) with :class:`TwinError` naming its pid."""
    return hold_lock(out / LOCK_NAME, f"the twin cohort in {out}", wait=wait, timeout=timeout, error=TwinError,
                     busy=lambda pid: f"{out}: another twin generation (pid {pid or '?'}) is writing here")


def render_code_digest() -> str:
    """SHA-256 of the modules that draw the cohort (population, anatomy, acquisition, render, DICOM)."""
    return sha256_files([module.__file__ for module in (population, anatomy, acquisition, render, dicom)])


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
                  progress: bool = True, spec: TwinSpec | None = None, wait: bool = True,
                  timeout: float | None = None) -> Path:
    """Generate the twin cohort of ``profile`` and ``seed`` into ``out`` (or reuse it); returns ``out``.

    A killed generation leaves no ``oracle.json`` (written last), so its folder is regenerated by the
    next call. Another live generation writing into ``out`` is waited for (up to ``timeout`` seconds) and
    its cohort reused; with ``wait=False``, or after the timeout, :class:`TwinError` is raised.
    """
    spec = spec or TwinSpec()
    seed = profile.seed if seed is None else int(seed)
    out = Path(out).resolve()
    sizes = _sizes(profile)
    digest = spec_hash(spec, sizes)
    # the drawing code is an input too: a changed renderer must not reuse images drawn by the old one
    inputs = {"spec_hash": digest, "seed": seed, "code": render_code_digest()}
    cohort = Artifact(out, "the twin cohort")
    out.mkdir(parents=True, exist_ok=True)
    cohort.build(inputs_key(inputs), lambda: _generate(out, profile, spec, seed, sizes, digest, workers, progress),
                 inputs=inputs, valid=lambda: is_complete(out, digest, seed),
                 legacy=lambda: is_complete(out, digest, seed),
                 lock=lambda: twin_lock(out, wait=wait, timeout=timeout))
    return out


def _generate(out: Path, profile: TwinSettings, spec: TwinSpec, seed: int, sizes: dict, digest: str,
              workers: int | None, progress: bool) -> None:
    """Write the cohort into ``out`` (we hold its lock)."""
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
