"""Time the ROI cache build of a cohort and print crops/s, seconds and MB on disk.

    python benchmarks/bench_rois.py [MANIFEST] [--workers 2] [--profile quick] [--dtype uint8]

Without MANIFEST the twin cohort of the profile (default quick: 1681 images of 512²) is generated
or reused. Landmarks are the manifest's ground-truth landmark files. The cache is built into a
temporary folder (removed afterwards) unless --cache-dir is given; the reuse of the finished cache
(key check plus checksum verification) is timed too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bmd.infra import paths
from bmd.inputs.manifest import load_manifest
from bmd.io import read_image
from bmd.landmarks.data import landmarks_for_manifest
from bmd.rois.cache import RoiCache, build_roi_cache
from bmd.study.config import load_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", nargs="?", type=Path, help="manifest CSV (default: the profile's twin cohort)")
    parser.add_argument("--profile", default="quick", help="profile giving the ROI and chest sizes (and the twin)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dtype", default="uint8", choices=("uint8", "float16"))
    parser.add_argument("--cache-dir", type=Path, default=None, help="keep the cache here (default: a temp folder)")
    args = parser.parse_args()
    profile = load_profile(args.profile)
    if args.manifest is None:
        from bmd.inputs.twin import generate_twin

        start = time.perf_counter()
        folder = generate_twin(paths.twin_dir(profile.profile, profile.seed), profile, progress=False)
        print(f"twin cohort {folder} ready in {time.perf_counter() - start:.1f} s")
        args.manifest = folder / "manifest.csv"
    manifest = load_manifest(args.manifest, check_files=False)
    landmarks = landmarks_for_manifest(manifest)

    with tempfile.TemporaryDirectory(prefix="bench_rois_") as tmp:
        root = args.cache_dir or Path(tmp)
        start = time.perf_counter()
        cache = build_roi_cache(manifest, landmarks, root, profile.roi_size, profile.chest_size, source="ground_truth",
                                dtype=args.dtype, workers=args.workers, force=True)
        seconds = time.perf_counter() - start
        mb = sum(p.stat().st_size for p in cache.path.iterdir()) / 1e6
        start = time.perf_counter()
        again = build_roi_cache(manifest, landmarks, root, profile.roi_size, profile.chest_size, source="ground_truth",
                                dtype=args.dtype, workers=args.workers)
        reuse = time.perf_counter() - start
        start = time.perf_counter()
        RoiCache.open(cache.path, verify="quick")
        quick = time.perf_counter() - start
        assert not again.built
    n = len(manifest)
    h, w = read_image(manifest["image_path"].iloc[0])[0].shape
    image = f"{n} images (first {h}×{w})"
    print(f"{image} → {7 * n} crops (chest {profile.chest_size}², 6 × {profile.roi_size}², {args.dtype}) "
          f"with {args.workers} worker(s): {seconds:.1f} s total, {7 * n / seconds:.0f} crops/s "
          f"({n / seconds:.1f} images/s), {mb:.0f} MB on disk")
    print(f"reuse: {reuse:.2f} s (key + checksums), open with quick verification {quick * 1000:.0f} ms")


if __name__ == "__main__":
    main()
