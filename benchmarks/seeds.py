"""Seed spread: the quick study on several twin seeds, mean ± SD of R, AUC, bias and MAE.

Usage: ``.venv/bin/python benchmarks/seeds.py [--seeds 0 1 2 | --n 3] [--profile quick] [--out DIR]
[--book SEED=DIR ...]``.

Builds (or reuses) each seed's cohort, detector, ROI cache, Table 2 models and baselines and Table 3
ensembles (finished runs are reused, so a second call only summarises), prints one line per seed and
the spread of the multi-ROI model, the ensembles, the whole-chest VGG-16 and the radiomics baseline,
and writes ``runs/<profile>/seed_spread.json`` under ``--out`` (the repository root by default), which
the reproducibility chapter shows when it is there. The profile's own seed reuses the book's folders;
other seeds go under ``<out>/seeds/seed-<N>``, unless ``--book N=DIR`` names the ``--out`` folder of a
book already built on that seed (``bmd book --seed N --out DIR``), whose runs are then reused. Each new seed of the quick profile costs about as much
as ``make book`` without the install (some 15 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bmd.study import seed_spread
from bmd.study.config import load_profile


def _book_arg(text: str) -> tuple[int, Path]:
    seed, sep, folder = text.partition("=")
    if not sep or not seed.strip().lstrip("-").isdigit() or not folder:
        raise argparse.ArgumentTypeError(f"{text!r}: expected SEED=DIR, e.g. 4242=other")
    if not Path(folder).is_dir():
        raise argparse.ArgumentTypeError(f"{folder}: no such book folder")
    return int(seed), Path(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", help="profile name or YAML path (default quick)")
    parser.add_argument("--seeds", type=int, nargs="+", help="twin seeds (default: the profile's seed and the next)")
    parser.add_argument("--n", type=int, default=3, help="number of seeds when --seeds is not given (default 3)")
    parser.add_argument("--out", default=None, help="the book's --out folder (default: the repository root)")
    parser.add_argument("--book", action="append", default=[], type=_book_arg, metavar="SEED=DIR",
                        help="a book already built on SEED with --out DIR: reuse its runs (repeatable)")
    args = parser.parse_args()
    cfg = load_profile(args.profile)
    books = dict(args.book)
    seeds = args.seeds or [cfg.seed + i for i in range(args.n)]
    seeds += [s for s in books if s not in seeds]
    result = seed_spread.run_seeds(args.profile, seeds, args.out, books=books)
    path = seed_spread.save(result, cfg.profile, args.out)
    print(seed_spread.spread_table(result).to_string())
    print(f"written to {path}")


if __name__ == "__main__":
    main()
