"""Patients, DXA truth and latent bone densities of the twin cohort (no images: cheap and vectorised).

Per patient: sex, age and L1–L4 BMD (multivariate normal, means rising from L1 to L4, the paper's
inter-vertebra correlations); a lumbar bone-health score ``g`` (the standardised mean BMD); and for
each chest bone a latent density ``d_k = g + shared + specific_k``. Per radiograph, each bone shows
its density through three noisy channels: cancellous opacity ``m_k``, cortical thickness ``c_k`` and
trabecular texture ``tau_k`` (each ``d_k + noise``). Per patient, a bone-size factor ``size`` (standard
normal) scales every bone's depth, which a frontal projection cannot see. Age is drawn given bone
health, so an age+sex model carries some, but limited, information.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bmd.columns import VERTEBRAE
from bmd.inputs.twin.spec import BONES, TwinSpec

SPLITS = ("train", "val", "test")


def _patients_per_split(n_cases: int, repeat_share: float) -> tuple[int, int]:
    """(patients, of which scanned twice) for a split of ``n_cases`` radiographs."""
    repeats = int(round(repeat_share * n_cases))
    return n_cases - repeats, repeats


def _bone_health(z: np.ndarray, male: np.ndarray, spec: TwinSpec) -> np.ndarray:
    """Standardised lumbar bone health: mean standardised BMD including the sex shift."""
    corr = np.asarray(spec.bmd_corr)
    delta = spec.bmd_mean_m_shift / np.mean(spec.bmd_sd)
    p = 1.0 - spec.female_share
    raw = z.mean(axis=1) + delta * (male - p)
    return raw / np.sqrt(corr.mean() + p * (1 - p) * delta**2)


def stratified_splits(values: np.ndarray, counts: list[int], rng: np.random.Generator) -> np.ndarray:
    """The split index of each patient: ``counts[j]`` patients in split ``j``, spread evenly over the ranks of
    ``values`` (the patients' mean BMD).

    In rank order, each patient goes to the split furthest below its share so far (so every stretch of the
    BMD range holds each split in proportion), then the labels are shuffled within blocks of about two
    patients per split's share, so that a split is random within its stratum. Drawn at random, the split
    means differ by chance: on the quick cohort (265 validation radiographs) the validation mean BMD lay
    0.017 g/cm² below the training mean on seed 0, and a model, shrunk towards the training mean like any
    regression, carries about a third of such a gap into its validation bias.
    """
    n = len(values)
    share = np.asarray(counts, dtype=float) / max(n, 1)
    if sum(counts) != n:
        raise ValueError(f"split counts {counts} do not add up to the {n} patients")
    labels = np.empty(n, dtype=int)
    given = np.zeros(len(counts))
    for i in range(n):
        j = int(np.argmax(share * (i + 1) - given))
        labels[i] = j
        given[j] += 1
    block = 2 * int(np.ceil(1.0 / share[share > 0].min())) if n else 1
    for start in range(0, n, block):
        labels[start:start + block] = rng.permutation(labels[start:start + block])
    out = np.empty(n, dtype=int)
    out[np.argsort(values, kind="stable")] = labels
    return out


def sample_population(sizes: dict[str, int], seed: int, spec: TwinSpec | None = None) -> pd.DataFrame:
    """One row per radiograph: ids, split, sex, age, ``bmd_l1..l4`` (NaN = excluded) and latents.

    ``sizes`` maps split → number of radiographs; a share ``spec.repeat_share`` of each split are
    second radiographs of a patient of the same split. Latent columns: ``g``, ``size`` (bone depth,
    standard normal), ``d_<bone>``, ``m_<bone>`` (cancellous opacity), ``c_<bone>`` (cortical
    thickness), ``tau_<bone>`` (trabecular texture).
    """
    spec = spec or TwinSpec()
    rng = np.random.default_rng([seed, 101])
    plan = [_patients_per_split(sizes[split], spec.repeat_share) for split in SPLITS]
    counts = [n_pat for n_pat, _ in plan]
    n_patients = sum(counts)

    # patient level
    male = (rng.random(n_patients) >= spec.female_share).astype(float)
    corr = np.asarray(spec.bmd_corr)
    z = rng.standard_normal((n_patients, 4)) @ np.linalg.cholesky(corr).T
    g = _bone_health(z, male, spec)
    age = spec.age_mean + spec.age_per_sd_bmd * g + spec.age_noise_sd * rng.standard_normal(n_patients)
    age = np.clip(age, *spec.age_range)
    means = np.asarray(spec.bmd_mean_f)[None, :] + spec.bmd_mean_m_shift * male[:, None]
    bmd = means + z * np.asarray(spec.bmd_sd)[None, :]
    shared = spec.shared_sd * rng.standard_normal(n_patients)
    density = {b: g + shared + spec.specific_sd[b] * rng.standard_normal(n_patients) for b in BONES}
    bone_size = rng.standard_normal(n_patients)

    # splits stratified by mean BMD; patients numbered split by split (train first)
    split_of = stratified_splits(bmd.mean(axis=1), counts, rng)
    order = np.concatenate([np.flatnonzero(split_of == j) for j in range(len(SPLITS))])
    male, z, g, age, bmd, shared, bone_size = (a[order] for a in (male, z, g, age, bmd, shared, bone_size))
    density = {b: d[order] for b, d in density.items()}
    rows_patient, rows_split, rows_repeat = [], [], []
    pid = 0
    for split, (n_pat, n_rep) in zip(SPLITS, plan, strict=True):
        ids = np.arange(pid, pid + n_pat)
        pid += n_pat
        twice = set(rng.choice(ids, size=n_rep, replace=False).tolist()) if n_rep else set()
        for p in ids:
            for scan in range(2 if p in twice else 1):
                rows_patient.append(p)
                rows_split.append(split)
                rows_repeat.append(scan)
    patient = np.asarray(rows_patient)
    scan = np.asarray(rows_repeat)

    # radiograph level
    n = len(patient)
    bmd_case = bmd[patient] + scan[:, None] * spec.repeat_bmd_change_sd * rng.standard_normal((n, 4))
    excluded = rng.random(n) < spec.excluded_vertebra_share
    which = rng.integers(0, 4, n)
    bmd_case[excluded, which[excluded]] = np.nan
    df = pd.DataFrame({
        "case_id": [f"C{i + 1:05d}" for i in range(n)],
        "patient_id": [f"P{p + 1:05d}" for p in patient],
        "split": rows_split,
        "sex": np.where(male[patient] == 1, "M", "F"),
        "age": np.round(age[patient] + scan, 0),
        **{f"bmd_{v.lower()}": np.round(bmd_case[:, i], 4) for i, v in enumerate(VERTEBRAE)},
        "g": g[patient],
        "size": bone_size[patient],
    })
    for b in BONES:
        d = density[b][patient]
        df[f"d_{b}"] = d
        df[f"m_{b}"] = d + spec.opacity_noise_sd * rng.standard_normal(n)
        df[f"c_{b}"] = d + spec.cortex_noise_sd * rng.standard_normal(n)
        df[f"tau_{b}"] = d + spec.texture_noise_sd * rng.standard_normal(n)
    return df
