"""Oracle ceilings: the best R and AUC any model could reach from what each ROI family shows.

For each family the predictors are the noise-free latent channels its regions show (texture and
mean attenuation of its bones; the whole chest at its low input resolution shows only the mean
attenuation of every bone; ``all`` shows every channel). The ceiling is the Bayes-optimal linear
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


def family_predictors(family: str) -> list[str]:
    """Latent columns visible to a ROI family."""
    bones = FAMILY_BONES[family]
    if family == "chest":
        return [f"m_{b}" for b in bones]
    return [f"{ch}_{b}" for b in bones for ch in ("m", "tau")]


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
        cols = family_predictors(family)
        rs, aucs = [], []
        for v in VERTEBRAE:
            target = f"bmd_{v.lower()}"
            f_ok, t_ok = fit[target].notna(), test[target].notna()
            x_fit = np.column_stack([np.ones(f_ok.sum()), fit.loc[f_ok, cols].to_numpy()])
            coef, *_ = np.linalg.lstsq(x_fit, fit.loc[f_ok, target].to_numpy(), rcond=None)
            x_test = np.column_stack([np.ones(t_ok.sum()), test.loc[t_ok, cols].to_numpy()])
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
