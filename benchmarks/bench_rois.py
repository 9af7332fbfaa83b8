"""Time the ROI cache build for a cohort (default: the quick twin, ground-truth landmarks) and print figures.

    python benchmarks/bench_rois.py [--cohort DIR] [--workers 2] [--roi 64] [--chest 128]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from bmd import paths
from bmd.config import load_profile
from bmd.manifest import load_manifest
from bmd.roi_cache import build_roi_cache
from bmd.twin import generate_twin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=Path, default=None, help="cohort folder (default: the quick twin)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--roi", type=int, default=64)
    parser.add_argument("--chest", type=int, default=128)
    args = parser.parse_args()
    folder = args.cohort or generate_twin(paths.twin_dir("quick", 0), load_profile("quick"), progress=False)
    manifest = load_manifest(folder / "manifest.csv", check_files=False)
    marks = pd.read_csv(folder / "landmarks.csv")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cache = build_roi_cache(manifest, marks, tmp, args.roi, args.chest, workers=args.workers)
        seconds = time.perf_counter() - start
        mb = sum(p.stat().st_size for p in cache.path.iterdir()) / 2**20
        start = time.perf_counter()
        build_roi_cache(manifest, marks, tmp, args.roi, args.chest, workers=args.workers)
        reuse = time.perf_counter() - start
    n = len(manifest)
    print(f"{n} images → {7 * n} crops (chest {args.chest}², 6 × {args.roi}²) with {args.workers} workers: "
          f"{seconds:.1f} s, {7 * n / seconds:.0f} crops/s, {n / seconds:.1f} images/s, {mb:.0f} MB; "
          f"reuse (verify checksums) {reuse:.2f} s")


if __name__ == "__main__":
    main()
