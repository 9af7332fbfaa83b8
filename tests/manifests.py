"""A small valid manifest (header, three rows, two tiny images), shared by the manifest tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

HEADER = "case_id,patient_id,image,bmd_l1,bmd_l2,bmd_l3,bmd_l4,sex,age,reference,split"
ROWS = [
    "c1,p1,img/a.png,0.80,0.85,0.90,0.95,F,66,hologic,train",
    "c2,p1,img/b.png,0.70,,0.80,0.82,F,67,hologic,train",
    "c3,p2,img/a.png,1.00,1.05,1.10,1.12,M,71,lunar,test",
]


def image_folder(root: Path) -> Path:
    """``root`` with the two 8×8 PNGs the rows point to (``img/a.png``, ``img/b.png``)."""
    (root / "img").mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(root / "img" / name)
    return root


def write_csv(folder: Path, rows, header: str = HEADER, name: str = "m.csv", encoding: str = "utf-8") -> Path:
    """Write ``header`` and ``rows`` as a CSV file in ``folder``; returns its path."""
    path = folder / name
    path.write_bytes(("\n".join([header, *rows]) + "\n").encode(encoding))
    return path
