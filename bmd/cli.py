"""The ``bmd`` command line. Each verb is a thin wrapper over a function of the package.

Exit status is 0 only when everything asked for succeeded. Expected failures (bad input files,
invalid manifests, bad profiles) print one clear line each, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _cmd_inspect(args: argparse.Namespace) -> int:
    from bmd.io import ImageReadError, describe

    failed = 0
    for path in args.images:
        try:
            print(f"{path}: {describe(path)}")
        except ImageReadError as exc:
            failed += 1
            print(f"{path}: cannot use: {exc}")
    return 1 if failed else 0


def _cmd_validate_manifest(args: argparse.Namespace) -> int:
    from bmd.manifest import ManifestError, load_manifest, summarize

    try:
        manifest = load_manifest(args.manifest, check_files=not args.no_file_check, within_folder=args.within_folder)
    except ManifestError as exc:
        print(f"{args.manifest}: invalid manifest ({len(exc.errors)} error(s)):", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(summarize(manifest))
    return 0


def _cmd_twin(args: argparse.Namespace) -> int:
    from bmd.config import load_profile
    from bmd.twin import generate_twin

    profile = load_profile(args.profile, seed=args.seed)
    out = generate_twin(args.out, profile, seed=profile.seed, workers=args.workers, progress=not args.quiet)
    print(f"twin cohort ({profile.profile}, seed {profile.seed}): {out / 'manifest.csv'}")
    return 0


def _cmd_landmarks_train(args: argparse.Namespace) -> int:
    from bmd.config import load_profile
    from bmd.landmarks.train import recipe_for_profile, train_landmark_model

    recipe = recipe_for_profile(load_profile(args.profile, seed=args.seed))
    if args.epochs is not None:
        recipe["epochs"] = args.epochs
    bundle = train_landmark_model(args.manifest, args.out, progress=not args.quiet, **recipe)
    print(f"landmark model: {bundle}")
    return 0


def _cmd_landmarks_predict(args: argparse.Namespace) -> int:
    from bmd.atomic import write_text
    from bmd.landmarks.train import predict_landmarks

    images = _expand_images(args.images)
    frame = predict_landmarks(args.model, [str(p) for p in images]).to_frame()
    text = frame.to_csv(index=False, float_format="%.2f")
    if args.out:
        write_text(args.out, text)
        counts = frame["status"].value_counts().to_dict()
        print(f"{len(frame)} image(s) → {args.out}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    else:
        sys.stdout.write(text)
    return 1 if (frame["status"] == "failed").any() else 0


def _expand_images(items: Sequence[str]) -> list[Path]:
    """Files as given; folders expanded to the files they hold (sorted, hidden files skipped)."""
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")))
        else:
            out.append(path)
    return out


def _one_line_errors(verb: str):
    """Run a verb's body; a bad bundle or an unwritable output is one line on stderr and exit status 2."""

    def wrap(body):
        def run(args: argparse.Namespace) -> int:
            from bmd.bundle import BundleError

            try:
                return body(args)
            except BundleError as exc:
                print(f"bmd {verb}: {exc}", file=sys.stderr)
            except OSError as exc:  # an output that cannot be written, a folder that cannot be listed
                where = f"{exc.filename}: " if exc.filename else ""
                print(f"bmd {verb}: {where}{exc.strerror or exc.__class__.__name__}", file=sys.stderr)
            return 2

        return run

    return wrap


@_one_line_errors("predict")
def _cmd_predict(args: argparse.Namespace) -> int:
    from bmd.atomic import write_text
    from bmd.bundle import load_bundle
    from bmd.predict import predict_images, to_csv

    bundle = load_bundle(args.model)
    images = _expand_images(args.images)
    if not images:
        print("bmd predict: no image files found in the given folders", file=sys.stderr)
        return 1
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    frame = predict_images([str(p) for p in images], bundle, overlay_dir=args.overlay, name=args.name,
                           batch_size=args.batch_size, sex=args.sex, raw=args.raw,
                           progress=args.out is not None and not args.quiet)
    text = to_csv(frame)
    counts = frame["status"].value_counts().to_dict()
    line = f"{len(frame)} image(s): " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    line += f"; calibration {'none (--raw)' if args.raw else bundle.calibration_name}"
    if args.out:
        write_text(args.out, text)
        print(f"{line} → {args.out}" + (f"; overlays in {args.overlay}" if args.overlay else ""))
    else:
        sys.stdout.write(text)
        print(line, file=sys.stderr)
    return 1 if (frame["status"] == "failed").any() else 0


@_one_line_errors("evaluate")
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from bmd.bundle import BundleError
    from bmd.external import evaluate_bundle
    from bmd.manifest import ManifestError

    try:
        result = evaluate_bundle(args.model, args.manifest, args.out, split=args.split, n_boot=args.n_boot,
                                 batch_size=args.batch_size, raw=args.raw, progress=not args.quiet)
    except ManifestError as exc:
        print(f"{args.manifest}: invalid manifest ({len(exc.errors)} error(s)):", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return 1
    except BundleError:
        raise
    except ValueError as exc:  # e.g. --split test on a manifest without test rows
        print(f"bmd evaluate: {exc}", file=sys.stderr)
        return 2
    avg = next((r for r in result["metrics"] if r["vertebra"] == "avg"), None)

    def fmt(x) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    print(f"{result['n_cases']} case(s) ({result['rows']} rows): ok {result['n_ok']}, flagged {result['n_flagged']}, "
          f"failed {result['n_failed']} → {args.out}; calibration {result['calibration']}")
    if avg is not None:
        print(f"avg R {fmt(avg['r'])} [{fmt(avg['r_lo'])}, {fmt(avg['r_hi'])}], AUC {fmt(avg['auc'])} "
              f"[{fmt(avg['auc_lo'])}, {fmt(avg['auc_hi'])}], MAE {fmt(avg['mae'])} g/cm²")
    for item in result["failed"][:20]:
        print(f"  failed: {item['case_id']}: {item['reason']}")
    if result["n_failed"] > 20:
        print(f"  ... and {result['n_failed'] - 20} more (see predictions.csv)")
    return 1 if result["n_failed"] else 0


def _cmd_book(args: argparse.Namespace) -> int:
    from bmd.book import BookError, build_book
    from bmd.manifest import ManifestError

    try:
        html = build_book(profile=args.profile, manifest=args.manifest, seed=args.seed, out=args.out,
                          quiet=args.quiet)
    except ManifestError as exc:  # refused before anything is written
        for line in exc.errors:
            print(f"bmd book: {args.manifest}: {line}", file=sys.stderr)
        return 1
    except BookError as exc:
        print(f"bmd book: {exc}", file=sys.stderr)
        return 1
    print(f"book built: {html / 'index.html'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bmd`` command."""
    parser = argparse.ArgumentParser(prog="bmd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", help="one line per image: size, spacing, value range, photometric")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("validate-manifest", help="check a manifest CSV and print its summary")
    p.add_argument("manifest", metavar="MANIFEST")
    p.add_argument("--no-file-check", action="store_true", help="do not open the image files")
    p.add_argument("--within-folder", action="store_true",
                   help="refuse image and landmark paths that lead outside the manifest's folder")
    p.set_defaults(func=_cmd_validate_manifest)

    p = sub.add_parser("twin", help="generate (or reuse) the synthetic twin cohort")
    p.add_argument("--profile", default="quick", help="smoke, quick or paper (default quick)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--seed", type=int, default=None, help="cohort seed (default: the profile's)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_twin)

    p = sub.add_parser("landmarks", help="train the landmark detector or detect landmarks on images")
    lsub = p.add_subparsers(dest="landmarks_command", required=True, metavar="ACTION")
    q = lsub.add_parser("train", help="train on a manifest's train split (val selects and calibrates)")
    q.add_argument("--manifest", required=True, type=Path)
    q.add_argument("--out", required=True, type=Path, help="model bundle folder")
    q.add_argument("--profile", default="quick", help="recipe: input size and epochs (default quick)")
    q.add_argument("--epochs", type=int, default=None)
    q.add_argument("--seed", type=int, default=None)
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=_cmd_landmarks_train)
    q = lsub.add_parser("predict", help="16 landmarks + plausibility per image (CSV)")
    q.add_argument("--model", required=True, type=Path, help="landmark model bundle folder")
    q.add_argument("images", nargs="+", metavar="IMAGE", help="files or folders")
    q.add_argument("--out", type=Path, default=None, help="CSV file (default: standard output)")
    q.set_defaults(func=_cmd_landmarks_predict)

    sub.add_parser("train", help="train a model from a config JSON (the torchrun entry point; bmd train --help)")

    p = sub.add_parser(
        "predict", help="BMD L1-L4, T-scores and WHO category per image, with a model bundle (CSV)",
        description="One CSV row per input image: image, status (ok|flagged|failed), reason, bmd_l1..bmd_l4 "
                    "(g/cm2), t_l1..t_l4, category (WHO category of the lowest vertebra T-score), calibration "
                    "(validation-linear or none), plausibility. The bundle's validation recalibration is applied "
                    "unless --raw; its MODEL_CARD.md says what the model is for. Exit status 1 when any image "
                    "failed.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="DICOM/PNG/JPEG files or folders (searched recursively)")
    p.add_argument("--model", required=True, type=Path, help="model bundle folder")
    p.add_argument("--out", type=Path, default=None, help="CSV file (default: standard output)")
    p.add_argument("--overlay", type=Path, default=None, metavar="DIR",
                   help="write one PNG per image with landmarks and ROI boxes into DIR")
    p.add_argument("--name", choices=("file", "hash"), default="file",
                   help="image column: the path as given (file) or a SHA-256 of the file's bytes (hash)")
    p.add_argument("--sex", choices=("F", "M"), default=None,
                   help="sex of the T-score reference (default: the bundle's, female)")
    p.add_argument("--raw", action="store_true",
                   help="the network's uncalibrated output (default: the bundle's validation recalibration, "
                        "when it has one)")
    p.add_argument("--batch-size", type=int, default=8, help="images decoded and run together (default 8)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser(
        "evaluate", help="external validation of a model bundle on a manifest (no retraining)",
        description="Predict a manifest's cases (its test split when it has one, else every row) and write "
                    "predictions.csv, metrics.json (R, AUC, MAE/RMSE, Bland-Altman with patient-bootstrap CIs) "
                    "and predicted_vs_dxa.png into --out. Exit status 1 when any image failed.")
    p.add_argument("--model", required=True, type=Path, help="model bundle folder")
    p.add_argument("--manifest", required=True, type=Path, help="the site's manifest CSV")
    p.add_argument("--out", type=Path, default=Path("evaluation"), help="output folder (default ./evaluation)")
    p.add_argument("--split", choices=("auto", "test", "all"), default="auto",
                   help="rows to evaluate: auto = the test split when there is one, else all (default)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for the CIs (default 2000)")
    p.add_argument("--raw", action="store_true",
                   help="score the uncalibrated output (default: the bundle's validation recalibration)")
    p.add_argument("--batch-size", type=int, default=8, help="images decoded and run together (default 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("book", help="run the study's notebooks and build the book")
    p.add_argument("--profile", default="quick",
                   help="smoke, quick or paper, or the path of a profile YAML (default quick)")
    p.add_argument("--manifest", type=Path, default=None, help="your own manifest instead of the twin")
    p.add_argument("--seed", type=int, default=None, help="seed (default: the profile's)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the repository root)")
    p.add_argument("--quiet", action="store_true", help="no progress lines (they still go to _build/book.log)")
    p.set_defaults(func=_cmd_book)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bmd`` console script."""
    from bmd.config import ProfileError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # its own parser: every argument goes to the training entry point
        from bmd.train import main as train_main

        return train_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ProfileError as exc:
        print(f"bmd {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bmd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
