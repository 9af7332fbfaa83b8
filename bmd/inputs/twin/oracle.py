"""Oracle ceilings: the best R and AUC any model could reach from what each ROI family shows.

For each family the predictors are what its regions show, with every confound the image cannot undo.
A local crop shows each of its bones' three channels — cancellous opacity ``m`` (read against the
bone's own cortex, so the unseen bone depth cancels), cortical thickness ``c`` and trabecular texture
``tau``. The whole chest, at its low input resolution, shows only each bone's total projected
attenuation, a mix of ``m`` and ``c`` multiplied by the person's bone depth (:func:`chest_weights`,
the linearised cross-section of the renderer's cortical tube). ``all`` shows both. Acquisition
confounds (beam, scatter, processing) are not in the oracle: the image holds the references (soft
tissue against air, the cortex) to undo them. The ceiling is the Bayes-optimal linear
prediction of each vertebra's BMD, fitted by least squares on one large simulated population and
scored on another (Monte-Carlo error ≈ 0.001). Age and sex are not predictors: the ceilings say
what the image carries. AUC: positives have a true T < −2.5 (the row's sex, ``hologic`` table), the
score is the predicted BMD (lower = more likely).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from bmd.columns import VERTEBRAE
from bmd.inputs.tscores import osteoporotic, t_score
from bmd.inputs.twin.population import sample_population
from bmd.inputs.twin.spec import FAMILY_BONES, TwinSpec

FAMILIES = ("cervi", "clavi", "lumbar", "ribcage", "chest", "all")
_ORACLE_SEED = 20210405  # fixed: the ceilings belong to the spec, not to a cohort seed


def chest_weights(spec: TwinSpec) -> dict[str, float]:
    """Weights of ``m``, ``c`` and ``size`` in a bone's total projected attenuation (linearised at the mean).

    The renderer's bone is a tube of cortical fraction ``t`` around a cancellous interior: its cross-section
    holds ``1 − (1 − t)²`` of cortex (attenuation ``cortex_mu``) and ``(1 − t)²`` of interior
    (``marrow_mu · (1 + marrow_per_sd · m)``), all times the depth ``1 + bone_size_sd · size``.
    """
    t0, mu0, muc = spec.cortex_frac, spec.marrow_mu, spec.cortex_mu
    total = muc * (1 - (1 - t0) ** 2) + mu0 * (1 - t0) ** 2
    return {"m": mu0 * spec.marrow_per_sd * (1 - t0) ** 2,
            "c": (muc - mu0) * 2 * (1 - t0) * t0 * spec.cortex_per_sd,
            "size": spec.bone_size_sd * total}


def family_observables(family: str, spec: TwinSpec) -> list[dict[str, float]]:
    """What a ROI family shows: a list of linear combinations ``{latent column: weight}``."""
    bones = FAMILY_BONES[family]
    w = chest_weights(spec)
    chest = [{f"m_{b}": w["m"], f"c_{b}": w["c"], "size": w["size"]} for b in bones]
    local = [{f"{ch}_{b}": 1.0} for b in bones for ch in ("m", "c", "tau")]
    if family == "chest":
        return chest
    return local + chest if family == "all" else local


def _design(df: pd.DataFrame, observables: list[dict[str, float]]) -> np.ndarray:
    return np.column_stack([np.ones(len(df))] + [sum(w * df[c].to_numpy() for c, w in obs.items())
                                                 for obs in observables])


def _positives(df: pd.DataFrame, vertebra: str) -> np.ndarray:

    bmd = df[f"bmd_{vertebra.lower()}"].to_numpy()
    t = np.where(df["sex"] == "M", t_score(bmd, vertebra, "M"), t_score(bmd, vertebra, "F"))
    return np.asarray(osteoporotic(t))


def ceilings(spec: TwinSpec | None = None, n: int = 100_000) -> list[dict]:
    """Ceiling rows ``{"roi", "vertebra", "r", "auc"}`` for every family and L1–L4 plus ``avg``."""
    spec = spec or TwinSpec()
    sizes = {"train": n, "val": 0, "test": 0}
    fit = sample_population(sizes, _ORACLE_SEED, spec)
    test = sample_population(sizes, _ORACLE_SEED + 1, spec)
    rows = []
    for family in FAMILIES:
        observables = family_observables(family, spec)
        rs, aucs = [], []
        for v in VERTEBRAE:
            target = f"bmd_{v.lower()}"
            f_ok, t_ok = fit[target].notna(), test[target].notna()
            x_fit = _design(fit.loc[f_ok], observables)
            coef, *_ = np.linalg.lstsq(x_fit, fit.loc[f_ok, target].to_numpy(), rcond=None)
            x_test = _design(test.loc[t_ok], observables)
            pred = x_test @ coef
            truth = test.loc[t_ok, target].to_numpy()
            r = float(np.corrcoef(pred, truth)[0, 1])
            auc = float(roc_auc_score(_positives(test.loc[t_ok], v), -pred))
            rows.append({"roi": family, "vertebra": v, "r": round(r, 4), "auc": round(auc, 4)})
            rs.append(r)
            aucs.append(auc)
        rows.append({"roi": family, "vertebra": "avg", "r": round(float(np.mean(rs)), 4),
                     "auc": round(float(np.mean(aucs)), 4)})
    return rows
