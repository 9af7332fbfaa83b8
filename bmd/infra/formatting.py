"""Numbers as tables and running text show them: three decimals, ``n/a`` where a value is missing."""

from __future__ import annotations

import numpy as np


def num(x: float | None, digits: int = 3) -> str:
    """A number for running text: ``n/a`` where it could not be computed (None or NaN)."""
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def fmt(x: float | None, ci: list | None = None, signed: bool = False) -> str:
    """A metric for a table cell, with its 95% CI in brackets when given; ``n/a`` where it is missing."""
    if x is None or not np.isfinite(x):
        return "n/a"
    f = "+.3f" if signed else ".3f"
    if ci is None or not all(c is not None and np.isfinite(c) for c in ci):
        return f"{x:{f}}"
    return f"{x:{f}} [{ci[0]:{f}}, {ci[1]:{f}}]"
