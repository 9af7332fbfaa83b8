"""JSON that stays standard: non-finite numbers become null."""

from __future__ import annotations

import math


def finite_or_null(value):
    """NaN and ±inf (a metric that cannot be computed) become None (JSON null), recursively: the
    file stays standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_null(v) for v in value]
    return value
