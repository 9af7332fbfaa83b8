"""The ``bmd`` command line. Each verb is a thin wrapper over a function of the package.

Exit status is 0 only when everything asked for succeeded, 1 when work failed (a missing or unusable
file, an invalid manifest, bundle or profile, an image that could not be used), 2 for a usage error
(argparse: an unknown verb or option, a missing or malformed argument) and 130 when interrupted.
Failures print one clear line each on stderr, naming the file, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bmd.infra.errors import EXIT_USAGE, OneLineParser, describe_error, one_line

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "everything asked for succeeded",
    EXIT_FAILED: "failed work: a missing or unusable file, manifest, bundle or profile; an image that failed",
    EXIT_USAGE: "usage error: unknown verb or option, missing or malformed argument",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}
DISTRIBUTION = "bmd-cxr"


def version() -> str:
    """The installed ``bmd-cxr`` distribution's version, else the package's ``__version__``."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(DISTRIBUTION)
    except PackageNotFoundError:
        from bmd import __version__

        return __version__


def _profile_arg(value: str) -> str:
    """``--profile``: a profile name or an existing YAML file; anything else is a usage error."""
    from bmd.study.config import PROFILES

    if value in PROFILES or Path(value).is_file():
        return value
    raise argparse.ArgumentTypeError(f"unknown profile {value!r}: expected one of {', '.join(PROFILES)} "
                                     "or a profile YAML file")


def _prefix(verb: str) -> str:
    return f"bmd {verb}" if verb else "bmd"


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


def _print_manifest_errors(verb: str, manifest: str | Path | None, errors: Sequence[str]) -> None:
    """A manifest's errors on stderr.

    A file that cannot be used at all (missing, unreadable, not a CSV) is one line naming it; row and
    column errors are listed every one on its own line under a line naming the file.
    """
    if len(errors) == 1 and not errors[0].startswith(("row ", "rows ")):
        print(f"bmd {verb}: {one_line(errors[0])}", file=sys.stderr)
        return
    head = "" if verb == "validate-manifest" else f"bmd {verb}: "  # there, the list is the verb's report
    print(f"{head}{manifest}: invalid manifest ({len(errors)} error(s)):", file=sys.stderr)
    for line in errors:
        print(f"  {line}", file=sys.stderr)


def _require_file(path: Path, what: str) -> None:
    """Refuse a missing input file before any work (or any output folder) is started."""
    if not path.exists():
        raise FileNotFoundError(2, f"{what} not found", str(path))
    if not path.is_file():
        raise IsADirectoryError(21, f"{what} is not a file", str(path))


def _cmd_validate_manifest(args: argparse.Namespace) -> int:
    from bmd.inputs.manifest import ManifestError, load_manifest, summarize

    try:
        manifest = load_manifest(args.manifest, check_files=not args.no_file_check, within_folder=args.within_folder)
    except ManifestError as exc:
        _print_manifest_errors("validate-manifest", args.manifest, exc.errors)
        return 1
    print(summarize(manifest))
    return 0


def _cmd_twin(args: argparse.Namespace) -> int:
    from bmd.inputs.twin import generate_twin
    from bmd.study.config import load_profile

    profile = load_profile(args.profile, seed=args.seed)
    out = generate_twin(args.out, profile, seed=profile.seed, workers=args.workers, progress=not args.quiet)
    print(f"twin cohort ({profile.profile}, seed {profile.seed}): {out / 'manifest.csv'}")
    return 0


def _cmd_landmarks_train(args: argparse.Namespace) -> int:
    from bmd.landmarks.detector import recipe_for_profile
    from bmd.landmarks.fit import train_landmark_model
    from bmd.study.config import load_profile

    _require_file(args.manifest, "manifest")
    recipe = recipe_for_profile(load_profile(args.profile, seed=args.seed))
    if args.epochs is not None:
        recipe["epochs"] = args.epochs
    detector = train_landmark_model(args.manifest, args.out, progress=not args.quiet, **recipe)
    print(f"landmark model: {detector}")
    return 0


def _cmd_landmarks_predict(args: argparse.Namespace) -> int:
    from bmd.infra.atomic import write_text
    from bmd.landmarks.annotations import labelme_paths
    from bmd.landmarks.detector import predict_landmarks

    # Labelme files live beside the images they annotate: a folder's .json files are not inputs
    images = _expand_images(args.images, skip_suffixes=(".json",))
    targets = None
    if args.labelme is not None:
        # refuse a clash or a file that may hold a site's corrections before any detection is run
        targets = labelme_paths(images, args.labelme)
        existing = [t for t in targets if t.exists()]
        if existing and not args.overwrite:
            raise FileExistsError(17, f"already exists and may hold corrections ({len(existing)} of "
                                      f"{len(targets)} Labelme file(s)); --overwrite replaces them",
                                  str(existing[0]))
    pred = predict_landmarks(args.model, [str(p) for p in images])
    frame = pred.to_frame()
    counts = ", ".join(f"{k} {v}" for k, v in sorted(frame["status"].value_counts().to_dict().items()))
    csv_to_stdout = str(args.out) == "-" or (args.out is None and targets is None)
    if csv_to_stdout:
        sys.stdout.write(frame.to_csv(index=False, float_format="%.2f"))
    elif args.out is not None:
        write_text(args.out, frame.to_csv(index=False, float_format="%.2f"))
        print(f"{len(frame)} image(s) → {args.out}: {counts}")
    if targets is not None:
        written = pred.write_labelme(targets)
        report = sys.stderr if csv_to_stdout else sys.stdout  # never mixed into a CSV on stdout
        n = sum(w is not None for w in written)
        print(f"{n} Labelme file(s) → {args.labelme}: {counts}", file=report)
        if args.out is None:  # no CSV tells why an image failed: say it here
            for image, status, reason in zip(pred.images, pred.status, pred.reason, strict=True):
                if status == "failed":
                    print(f"bmd landmarks predict: {image}: no Labelme file: {reason}", file=sys.stderr)
    return 1 if (frame["status"] == "failed").any() else 0


def _expand_images(items: Sequence[str], skip_suffixes: tuple[str, ...] = ()) -> list[Path]:
    """Files as given; folders expanded to the files they hold (sorted, hidden files and files with one of
    ``skip_suffixes`` skipped)."""
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                              and p.suffix.lower() not in skip_suffixes))
        else:
            out.append(path)
    return out


def _cmd_predict(args: argparse.Namespace) -> int:
    from bmd.deploy.bundle import load_bundle
    from bmd.deploy.predict import predict_images, to_csv
    from bmd.infra.atomic import write_text

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


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from bmd.deploy.external import evaluate_bundle
    from bmd.inputs.manifest import ManifestError

    try:
        result = evaluate_bundle(args.model, args.manifest, args.out, split=args.split, n_boot=args.n_boot,
                                 batch_size=args.batch_size, raw=args.raw, progress=not args.quiet)
    except ManifestError as exc:
        _print_manifest_errors("evaluate", args.manifest, exc.errors)
        return 1
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
    from bmd.inputs.manifest import ManifestError
    from bmd.study.book import BookError, build_book

    try:
        html = build_book(profile=args.profile, manifest=args.manifest, seed=args.seed, out=args.out,
                          quiet=args.quiet, landmark_model=args.landmark_model)
    except ManifestError as exc:  # refused before anything is written
        _print_manifest_errors("book", args.manifest, exc.errors)
        return 1
    except BookError as exc:
        print(f"bmd book: {exc}", file=sys.stderr)
        return 1
    print(f"book built: {html / 'index.html'}")
    return 0


def _verb(sub: argparse._SubParsersAction, name: str, help: str, **kwargs) -> argparse.ArgumentParser:
    """A verb's parser; its ``--help`` opens with the one-line ``help`` unless a longer description is given."""
    kwargs.setdefault("description", help[:1].upper() + help[1:] + ".")
    return sub.add_parser(name, help=help, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bmd`` command."""
    parser = OneLineParser(prog="bmd", description=__doc__.splitlines()[0],
                     epilog="Exit status: 0 success, 1 failed work (a file that is missing or unusable, "
                            "an image that failed), 2 a usage error, 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)

    p = _verb(sub, "inspect", help="one line per image: size, spacing, value range, photometric")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=_cmd_inspect)

    p = _verb(sub, "validate-manifest", help="check a manifest CSV and print its summary")
    p.add_argument("manifest", metavar="MANIFEST")
    p.add_argument("--no-file-check", action="store_true", help="do not open the image files")
    p.add_argument("--within-folder", action="store_true",
                   help="refuse image and landmark paths that lead outside the manifest's folder")
    p.set_defaults(func=_cmd_validate_manifest)

    p = _verb(sub, "twin", help="generate (or reuse) the synthetic twin cohort")
    p.add_argument("--profile", default="quick", type=_profile_arg, help="smoke, quick or paper (default quick)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--seed", type=int, default=None, help="cohort seed (default: the profile's)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_twin)

    p = _verb(sub, "landmarks", help="train the landmark detector or detect landmarks on images")
    lsub = p.add_subparsers(dest="landmarks_command", required=True, metavar="ACTION", parser_class=OneLineParser)
    q = _verb(lsub, "train", help="train the landmark detector on a manifest's train split (val selects and calibrates)")
    q.add_argument("--manifest", required=True, type=Path, help="manifest CSV with train and val rows")
    q.add_argument("--out", required=True, type=Path, help="detector folder")
    q.add_argument("--profile", default="quick", type=_profile_arg, help="recipe: input size and epochs (default quick)")
    q.add_argument("--epochs", type=int, default=None, help="epochs (default: the profile's)")
    q.add_argument("--seed", type=int, default=None, help="seed (default: the profile's)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_landmarks_train)
    q = _verb(lsub,
        "predict", help="detect the 16 landmarks, with a plausibility score, per image (CSV, Labelme files)",
        description="One CSV row per input image: image, status (ok|flagged|failed), reason, plausibility, "
                    "then x_<name>, y_<name> for the 16 landmarks (pixels of the original image, pixel "
                    "centres at integers). With --labelme DIR, also one Labelme file per image, DIR/<stem>.json, "
                    "holding the 16 points for a site to correct in Labelme and import back "
                    "(bmd.landmarks.annotations.import_annotations); a flagged image has its 'flagged' flag "
                    "ticked. The CSV goes to --out, or to standard output when neither --out nor --labelme "
                    "is given (--out - sends it there with --labelme too). Exit status 1 when any image "
                    "failed.")
    q.add_argument("--model", required=True, type=Path, help="landmark detector folder")
    q.add_argument("images", nargs="+", metavar="IMAGE",
                   help="files or folders (searched recursively; a folder's .json files are skipped)")
    q.add_argument("--out", type=Path, default=None, metavar="CSV",
                   help="CSV file, or - for standard output (default: standard output, none with --labelme)")
    q.add_argument("--labelme", type=Path, default=None, metavar="DIR",
                   help="write one Labelme JSON per image into DIR, named after the image (<stem>.json); "
                        "its imagePath is the image's file name, so Labelme finds the image when DIR is the "
                        "images' folder (Labelme opens PNG/JPEG, not DICOM)")
    q.add_argument("--overwrite", action="store_true",
                   help="replace existing Labelme files in DIR (default: refuse, they may hold corrections)")
    q.set_defaults(func=_cmd_landmarks_predict)

    _verb(sub, "train", help="train a model from a config JSON (the torchrun entry point; bmd train --help)")

    p = _verb(sub,
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

    p = _verb(sub,
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

    p = _verb(sub, "book", help="run the study's notebooks and build the book")
    p.add_argument("--profile", default="quick", type=_profile_arg,
                   help="smoke, quick or paper, or the path of a profile YAML (default quick)")
    p.add_argument("--manifest", type=Path, default=None, help="your own manifest instead of the twin")
    p.add_argument("--seed", type=int, default=None, help="seed (default: the profile's)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the repository root)")
    p.add_argument("--landmark-model", type=Path, default=None, metavar="DIR",
                   help="use this landmark detector folder instead of training one (a previous build's "
                        "runs/<profile>/landmark_model, or one from bmd landmarks train); every case's ROIs then "
                        "come from its points. Needed when the manifest has no landmarks column")
    p.add_argument("--quiet", action="store_true", help="no progress lines (they still go to _build/book.log)")
    p.set_defaults(func=_cmd_book)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bmd`` console script; returns the exit status (see :data:`EXIT_CODES`).

    Every verb runs inside one boundary: a missing or unusable file, a bad bundle, manifest or
    profile prints one line naming it and gives 1; argparse's usage errors give 2; an interrupt
    gives 130; anything unexpected still prints one line (its class and message), never a traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = " ".join(argv[:2]) if argv[:1] == ["landmarks"] and len(argv) > 1 else (argv[0] if argv else "")
    verb = verb if verb and not verb.startswith("-") else ""
    try:
        if argv[:1] == ["train"]:  # its own parser: every argument goes to the training entry point
            from bmd.model.train import main as train_main

            return train_main(argv[1:])
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{_prefix(verb)}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit:
        raise
    except Exception as exc:  # the command-line boundary: one line, never a traceback
        print(f"{_prefix(verb)}: {describe_error(exc)}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
