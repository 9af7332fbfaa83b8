"""A landmark detector's folder without loading its network: checked, and named by its content.

The study may use a detector it did not train (``bmd book --landmark-model DIR``): the twin-trained one a
previous build left in its run folder, or one another site trained with ``bmd landmarks train``. Before any
work starts, :func:`read_detector_config` says in one line whether a folder is a usable detector, and
:func:`detector_digest` names it by what it holds, never by where it lies, for the keys of what is built from
it and for ``summary.json``. No torch here: the command line checks a folder before anything heavy is
imported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bmd.columns import LANDMARK_NAMES
from bmd.infra.digests import sha256_file, sha256_json

DETECTOR_FORMAT = "bmd-landmarks/1"
CONFIG_FILE, WEIGHTS_FILE, PLAUSIBILITY_FILE = "config.json", "weights.pt", "plausibility.pt"


class DetectorFolderError(ValueError):
    """A folder that is not a usable landmark detector (the message names it and says why)."""


def read_detector_config(detector: str | os.PathLike) -> dict:
    """The ``config.json`` of a detector folder, once it is known to be usable by this version.

    Refused in one line naming the folder: no ``config.json`` (FileNotFoundError: not a detector, or one
    whose training has not finished), a config that is not JSON, another format or other landmark names
    (:class:`DetectorFolderError`), a missing weights file (FileNotFoundError).
    """
    path = Path(detector)
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{path}: not a landmark detector (no {CONFIG_FILE})")
    try:
        info = json.loads(cfg_path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        raise DetectorFolderError(f"{cfg_path}: not valid JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(info, dict) or info.get("format") != DETECTOR_FORMAT:
        info = info if isinstance(info, dict) else {}
        raise DetectorFolderError(
            f"{path}: unsupported detector format {info.get('format')!r} (expected {DETECTOR_FORMAT})"
        )
    if tuple(info.get("landmark_names", ())) != LANDMARK_NAMES:
        raise DetectorFolderError(f"{path}: the detector's landmark names differ from this version's")
    files = info.get("files") if isinstance(info.get("files"), dict) else {}
    weights = path / str(files.get("weights", WEIGHTS_FILE))
    if not weights.is_file():
        raise FileNotFoundError(f"{path}: incomplete landmark detector (no {weights.name})")
    return info


def detector_files(detector: str | os.PathLike) -> dict[str, Path]:
    """The files that decide a detector's output (config, weights, plausibility model), those present."""
    path = Path(detector)
    return {name: path / name for name in (CONFIG_FILE, WEIGHTS_FILE, PLAUSIBILITY_FILE) if (path / name).is_file()}


def detector_digest(detector: str | os.PathLike) -> str:
    """SHA-256 (hex) of a detector's content: each of :func:`detector_files` by name and digest.

    The same files give the same digest wherever the folder lies, so a copied detector keeps its name and
    a retrained one (new weights, a new plausibility calibration, another architecture) gets another.
    """
    return sha256_json({name: sha256_file(p) for name, p in detector_files(detector).items()})
