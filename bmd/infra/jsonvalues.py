"""JSON that stays standard: non-finite numbers become null."""

from __future__ import annotations

import math
import numbers


def finite_or_null(value):
    """NaN and ±inf (a metric that cannot be computed) become None (JSON null), recursively through dicts,
    lists and tuples (tuples become lists, as JSON writes them); numpy numbers become Python ones. The file
    stays standard JSON."""
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else None
    return value
