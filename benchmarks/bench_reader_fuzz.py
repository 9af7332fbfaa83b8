"""Hostile-image benchmark of ``bmd.io.read_image``: mutants of valid files, read under limits.

Generates deterministic mutants (``tests/mutants.py``: truncations, byte flips, wrong sizes, bits,
samples, frames, absurd windows/rescales/LUTs/spacings/transfer syntaxes, codestream sizes,
deflate bombs, huge sequences) of pydicom's test files, a twin DICOM, small PNG/JPEG/TIFF/BMP files
and the real radiographs when present, reads each in worker processes with a per-file time limit and
an address-space limit, and prints the outcomes by mutation kind, the refusal reasons and the time per
file. Exits with status 1 when any file broke the reader's contract (another exception, a hang, a
crash, a read that needed more than half the memory allowance, or an image outside float32 / 2-D /
finite / [0, 1]).

    .venv/bin/python benchmarks/bench_reader_fuzz.py [--count 600] [--seed 20240611] [--workers 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the generator is shared with tests/test_io_mutants.py

import mutants  # noqa: E402

from bmd.infra import paths  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=600, help="mutants to generate (default 600)")
    parser.add_argument("--seed", type=int, default=20240611, help="generator seed")
    parser.add_argument("--workers", type=int, default=2, help="reading processes (default 2)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed per file (default 60)")
    parser.add_argument("--memory-mb", type=int, default=2048, help="address space per worker above its imports")
    parser.add_argument("--no-real", action="store_true", help="leave the real radiographs out")
    args = parser.parse_args(argv)

    realdata = None if args.no_real else paths.realdata_dir()
    start = time.perf_counter()
    seeds = mutants.default_seeds(realdata)
    generated = mutants.generate(seeds, args.count, seed=args.seed)
    made = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="bmd-fuzz-") as tmp:
        files = mutants.write_mutants(Path(tmp), generated)
        start = time.perf_counter()
        outcomes = mutants.run_mutants(files, timeout_s=args.timeout, memory_mb=args.memory_mb,
                                       workers=args.workers)
        wall = time.perf_counter() - start

    real = sum(s.name.startswith("real/") for s in seeds)
    print(f"seeds: {len(seeds)} ({real} real radiographs{'' if realdata else ', real folder absent'}); "
          f"mutants tried: {len(generated)} (seed {args.seed}, generated in {made:.1f} s)")
    print(f"read in {wall:.1f} s with {args.workers} worker(s), limits {args.timeout:g} s and "
          f"{args.memory_mb} MiB per file\n")

    statuses = ("read", "refused", "error", "bad-image", "memory", "hang", "crash")
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for m, o in zip(generated, outcomes, strict=True):
        by_kind[m.kind][o.status] += 1
    width = max(len(k) for k in by_kind)
    print(f"{'kind':<{width}}  " + "  ".join(f"{s:>9}" for s in statuses))
    for kind in mutants.KINDS:
        if kind in by_kind:
            print(f"{kind:<{width}}  " + "  ".join(f"{by_kind[kind][s]:>9}" for s in statuses))
    total = Counter(o.status for o in outcomes)
    print(f"{'all':<{width}}  " + "  ".join(f"{total[s]:>9}" for s in statuses))

    print("\nrefusals by reason (mutation kinds):")
    reasons: dict[str, Counter] = defaultdict(Counter)
    for m, o in zip(generated, outcomes, strict=True):
        if o.status == "refused":
            reasons[mutants.reason_class(o.reason)][m.kind] += 1
    for reason, kinds in sorted(reasons.items(), key=lambda kv: -sum(kv[1].values())):
        detail = ", ".join(f"{k} {n}" for k, n in kinds.most_common())
        print(f"  {sum(kinds.values()):>4}  {reason}  ({detail})")

    seconds = [o.seconds for o in outcomes]
    slowest = max(zip(seconds, generated, strict=True), key=lambda t: t[0])
    print(f"\ntime per file: median {1000 * statistics.median(seconds):.1f} ms, "
          f"90th percentile {1000 * statistics.quantiles(seconds, n=10)[-1]:.1f} ms, "
          f"max {slowest[0]:.2f} s ({slowest[1].filename}: {slowest[1].detail})")
    for status in ("read", "refused"):
        times = [o.seconds for o in outcomes if o.status == status]
        if times:
            print(f"  {status}: median {1000 * statistics.median(times):.1f} ms, max {max(times):.2f} s")
    peak = max(zip((o.peak_mb for o in outcomes), generated, strict=True), key=lambda t: t[0])
    print(f"largest peak memory of one read (above the worker's resident size): {peak[0]:.0f} MiB "
          f"({peak[1].filename}: {peak[1].detail})")

    broken = [(m, o) for m, o in zip(generated, outcomes, strict=True) if o.status not in ("read", "refused")]
    if broken:
        print(f"\n{len(broken)} file(s) broke the contract:")
        for m, o in broken:
            print(f"  {o.status}: {m.filename} ({m.detail}): {o.reason}")
        return 1
    print("\nno other exception, hang, crash or out-of-contract image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
