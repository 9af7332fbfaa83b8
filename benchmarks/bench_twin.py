"""Time the generation of a twin cohort (default: the quick profile, 2 workers) and print figures.

    python benchmarks/bench_twin.py [--profile quick] [--workers 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from bmd.inputs.twin import generate_twin
from bmd.study.config import load_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="keep the cohort here (default: a temp folder)")
    args = parser.parse_args()
    profile = load_profile(args.profile, seed=args.seed)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_twin_"))
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    generate_twin(out, profile, workers=args.workers, progress=False)
    seconds = time.perf_counter() - start
    n = profile.twin_n_cases
    mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    print(f"profile {profile.profile}: {n} images of {profile.twin_image_size}^2 with {args.workers} workers")
    print(f"total {seconds:.1f} s, {n / seconds:.1f} images/s, {1000 * seconds / n * args.workers:.0f} ms per image "
          f"per worker, {mb:.0f} MB on disk (load average before: {load_before:.2f})")
    start = time.perf_counter()
    generate_twin(out, profile, workers=args.workers, progress=False)
    print(f"second call (reuse): {time.perf_counter() - start:.2f} s")
    if args.out is None:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
