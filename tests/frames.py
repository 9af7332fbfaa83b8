"""A synthetic test-split predictions frame, shared by the tests of the table code."""

from __future__ import annotations

import numpy as np
import pandas as pd


def predictions_frame(seed: int = 0, n: int = 30, noise: float = 0.08, scans_per_patient: int = 1) -> pd.DataFrame:
    """``n`` test cases: DXA truth and a prediction with Gaussian ``noise`` (g/cm²); each patient has
    ``scans_per_patient`` consecutive cases (repeat scans)."""
    rng = np.random.default_rng(seed)
    bmd = rng.normal(0.85, 0.15, (n, 4))
    frame = pd.DataFrame({"case_id": [f"C{i:03d}" for i in range(n)],
                          "patient_id": [f"P{i // scans_per_patient:03d}" for i in range(n)],
                          "split": ["test"] * n, "sex": ["F", "M"] * (n // 2), "reference": "hologic"})
    for k in range(4):
        frame[f"bmd_l{k + 1}"] = bmd[:, k]
        frame[f"pred_l{k + 1}"] = bmd[:, k] + rng.normal(0, noise, n)
    return frame
