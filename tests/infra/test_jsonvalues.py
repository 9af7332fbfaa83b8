"""finite_or_null: the one NaN-to-null conversion for JSON files."""

from __future__ import annotations

import json
import math

import numpy as np

from bmd.infra.jsonvalues import finite_or_null


def test_non_finite_numbers_become_null_at_any_depth():
    data = {"r": float("nan"), "ci": (np.float32(0.5), np.float64(np.inf)), "n": np.int64(3),
            "rows": [{"auc": -math.inf, "ok": True, "name": "x", "none": None}]}
    out = finite_or_null(data)
    assert out == {"r": None, "ci": [0.5, None], "n": 3,
                   "rows": [{"auc": None, "ok": True, "name": "x", "none": None}]}
    assert type(out["n"]) is int and type(out["ci"][0]) is float and out["rows"][0]["ok"] is True
    json.loads(json.dumps(out, allow_nan=False))  # standard JSON: no NaN/Infinity tokens
