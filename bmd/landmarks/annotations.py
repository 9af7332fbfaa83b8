"""Import ground-truth landmarks from annotation tools into the project's landmark CSV layout.

Supported inputs (:func:`import_annotations` picks by file type):

* the **project CSV**: a ``case_id`` or ``image`` column and the 32 ``x_<name>, y_<name>`` columns;
* **Labelme** JSON (one file per image, or a folder of them): ``point`` shapes whose ``label`` is a
  landmark name;
* **CVAT** XML ("CVAT for images 1.1"): per ``<image>``, ``<points label="<name>" points="x,y"/>``.

Every importer returns a DataFrame with ``case_id``, ``image`` and the 32 coordinate columns in
:data:`~bmd.columns.COORD_COLUMNS` order. Coordinates follow the project convention (pixel
centres at integers). Labelme and CVAT draw on a canvas whose pixel *corners* sit at integers, so 0.5 is
subtracted from their coordinates (``corner_origin=False`` keeps them as they are).
Problems raise :class:`AnnotationError` with a one-line message naming the file and listing the points
that are missing or unknown.

The other way, :func:`write_labelme` writes detected points as a Labelme file (the inverse 0.5 shift,
so :func:`read_labelme` gives the same coordinates back) for a site to correct rather than place from
scratch; :func:`labelme_paths` names those files after the images and refuses two images that would
share one.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bmd.columns import COORD_COLUMNS, LANDMARK_NAMES, N_LANDMARKS
from bmd.infra.atomic import write_text
from bmd.infra.jsonvalues import finite_or_null

LABELME_VERSION = "5.5.0"
"""The Labelme format version written files claim (Labelme warns only when the major version differs)."""

LABELME_DETECTION_KEY = "bmd_detection"
"""Top-level key of a written Labelme file holding the detector's verdict (Labelme keeps unknown keys
when it saves)."""

#: suffixes :func:`bmd.io.read_image` reads; other suffixes (``1.2.840.…`` DICOM file names) are kept
IMAGE_SUFFIXES = frozenset({".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif"})


class AnnotationError(ValueError):
    """An annotation file that cannot be imported; the message is one line and names the file."""


def _frame(records: list[tuple[str, str, np.ndarray]]) -> pd.DataFrame:
    coords = np.array([r[2] for r in records], dtype=np.float64).reshape(len(records), 2 * N_LANDMARKS)
    df = pd.DataFrame(coords, columns=list(COORD_COLUMNS))
    df.insert(0, "image", [r[1] for r in records])
    df.insert(0, "case_id", [r[0] for r in records])
    return df


def _name_problems(path: Path, where: str, names: set[str]) -> None:
    """Raise one error listing unknown names and missing landmarks together (a renamed point is both)."""
    unknown = sorted(n for n in names if n not in LANDMARK_NAMES)
    missing = [n for n in LANDMARK_NAMES if n not in names]
    parts = []
    if unknown:
        parts.append(f"unknown point name(s): {', '.join(unknown)}")
    if missing:
        parts.append(f"missing point(s): {', '.join(missing)}")
    if parts:
        raise AnnotationError(f"{path}: {where}{'; '.join(parts)}")


def _check_names(path: Path, where: str, found: dict[str, list[tuple[float, float]]]) -> np.ndarray:
    """(16, 2) points from a name → positions map; errors list unknown, missing and repeated names."""
    _name_problems(path, where, set(found))
    repeated = [n for n in LANDMARK_NAMES if len(found[n]) > 1]
    if repeated:
        raise AnnotationError(f"{path}: {where}point(s) given more than once: {', '.join(repeated)}")
    pts = np.array([found[n][0] for n in LANDMARK_NAMES], dtype=np.float64)
    if not np.isfinite(pts).all():
        raise AnnotationError(f"{path}: {where}non-finite coordinates")
    return pts


def read_landmark_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a project landmark CSV; keeps ``case_id``/``image`` and returns the 32 columns as floats."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise AnnotationError(f"{path}: cannot read landmark CSV: {exc}".splitlines()[0]) from None
    df.columns = [str(c).strip() for c in df.columns]
    if "case_id" not in df.columns and "image" not in df.columns:
        raise AnnotationError(f"{path}: needs a case_id or image column")
    coord_cols = [c for c in df.columns if c[:2] in ("x_", "y_")]
    # a point counts as present only with both its x_ and y_ columns
    present = {n for n in {c[2:] for c in coord_cols} if f"x_{n}" in df.columns and f"y_{n}" in df.columns}
    _name_problems(path, "", present | ({c[2:] for c in coord_cols} - set(LANDMARK_NAMES)))
    out = df[[c for c in ("case_id", "image") if c in df.columns]].copy()
    values = df[list(COORD_COLUMNS)].apply(lambda s: pd.to_numeric(s.str.strip(), errors="coerce"))
    bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=np.float64))
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        n_bad = int(bad.to_numpy().any(axis=1).sum())
        raise AnnotationError(
            f"{path}: row {row + 2}, column {COORD_COLUMNS[col]}: missing or non-numeric "
            f"coordinate {df.iat[row, df.columns.get_loc(COORD_COLUMNS[col])]!r} "
            f"({n_bad} row(s) affected)"
        )
    for c in COORD_COLUMNS:
        out[c] = values[c].astype(np.float64)
    return out.reset_index(drop=True)


def manifest_landmarks(manifest: pd.DataFrame) -> pd.DataFrame | None:
    """The ground-truth landmarks of a manifest's cases: ``case_id`` + the 32 columns, in manifest order.

    The one reader of a manifest's landmark files (column ``landmarks_path``, as
    :func:`bmd.inputs.manifest.load_manifest` resolves it). A file is matched by ``case_id`` when it has
    that column, else by ``image`` (the path as written in the manifest, or failing that the file name).
    Cases without a landmark file or a matching row are left out; None when no case has a file.
    """
    if "landmarks_path" not in manifest.columns:
        return None
    files = [p for p in dict.fromkeys(manifest["landmarks_path"]) if isinstance(p, str) and p]
    if not files:
        return None
    rows: dict[str, np.ndarray] = {}
    for path in files:
        table = read_landmark_csv(path)
        coords = table[list(COORD_COLUMNS)].to_numpy(dtype=np.float64)
        cases = manifest[manifest["landmarks_path"] == path]
        if "case_id" in table.columns:
            index: dict[str, int] = {}
            for i, c in enumerate(table["case_id"]):
                index.setdefault(str(c), i)  # a repeated case: its first row
            keys = [str(c) for c in cases["case_id"]]
        else:
            index = {}
            for i, name in enumerate(table["image"].astype(str)):
                index.setdefault(name, i)
                index.setdefault(Path(name).name, i)
            images = [str(p) for p in cases["image"]] if "image" in cases.columns else []
            keys = [p if p in index else Path(p).name for p in images]
        for case_id, key in zip(cases["case_id"], keys, strict=False):
            if key in index:
                rows.setdefault(str(case_id), coords[index[key]])
    present = [str(c) for c in manifest["case_id"] if str(c) in rows]
    out = pd.DataFrame([rows[c] for c in present], columns=list(COORD_COLUMNS), dtype=np.float64)
    out.insert(0, "case_id", present)
    return out


def read_labelme(path: str | os.PathLike, corner_origin: bool = True) -> pd.DataFrame:
    """Read one Labelme JSON file or a folder of them (one image per file, ``case_id`` = file stem)."""
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise AnnotationError(f"{path}: no Labelme .json files in this folder")
    shift = 0.5 if corner_origin else 0.0
    records = []
    for f in files:
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AnnotationError(f"{f}: not a readable Labelme JSON file: {exc}".splitlines()[0]) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
            raise AnnotationError(f"{f}: not a Labelme file (no 'shapes' list)")
        found: dict[str, list[tuple[float, float]]] = {}
        for shape in doc["shapes"]:
            if shape.get("shape_type", "point") != "point":
                continue  # polygons, boxes etc. are other annotations, not landmarks
            label = str(shape.get("label", "")).strip()
            pts = shape.get("points") or []
            if len(pts) != 1 or len(pts[0]) != 2:
                raise AnnotationError(f"{f}: point {label!r} must have exactly one (x, y) pair")
            found.setdefault(label, []).append((float(pts[0][0]) - shift, float(pts[0][1]) - shift))
        pts = _check_names(f, "", found)
        records.append((f.stem, str(doc.get("imagePath") or f.stem), pts))
    return _frame(records)


def read_cvat_xml(path: str | os.PathLike, corner_origin: bool = True) -> pd.DataFrame:
    """Read a CVAT-for-images XML export (``case_id`` = image file stem, ``image`` = the name as exported)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise AnnotationError(f"{path}: not a readable CVAT XML file: {exc}".splitlines()[0]) from None
    images = root.findall(".//image")
    if not images:
        raise AnnotationError(f"{path}: no <image> elements (expected a 'CVAT for images' export)")
    shift = 0.5 if corner_origin else 0.0
    records = []
    for im in images:
        name = im.get("name") or im.get("id") or "?"
        found: dict[str, list[tuple[float, float]]] = {}
        for el in im.findall("points"):
            label = (el.get("label") or "").strip()
            pairs = [p for p in (el.get("points") or "").split(";") if p.strip()]
            if len(pairs) != 1:
                raise AnnotationError(
                    f"{path}: image {name}: point {label!r} must have exactly one x,y pair, got {len(pairs)}"
                )
            try:
                x, y = (float(v) for v in pairs[0].split(","))
            except ValueError:
                raise AnnotationError(
                    f"{path}: image {name}: point {label!r} has unreadable coordinates {pairs[0]!r}"
                ) from None
            found.setdefault(label, []).append((x - shift, y - shift))
        pts = _check_names(path, f"image {name}: ", found)
        records.append((Path(name).stem, name, pts))
    return _frame(records)


def import_annotations(path: str | os.PathLike, corner_origin: bool = True) -> pd.DataFrame:
    """Import landmarks from a project CSV, a Labelme JSON file/folder or a CVAT XML file."""
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".json":
        return read_labelme(path, corner_origin=corner_origin)
    if suffix == ".xml":
        return read_cvat_xml(path, corner_origin=corner_origin)
    if suffix == ".csv":
        return read_landmark_csv(path)
    raise AnnotationError(f"{path}: unknown annotation format (expected .csv, Labelme .json or CVAT .xml)")


def write_landmark_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write landmarks in the project CSV layout (``case_id``/``image`` then the 32 coordinates)."""
    path = Path(path)
    cols = [c for c in ("case_id", "image") if c in df.columns] + list(COORD_COLUMNS)
    path.parent.mkdir(parents=True, exist_ok=True)
    df[cols].to_csv(path, index=False, float_format="%.2f")
    return path


def labelme_stem(image: str | os.PathLike) -> str:
    """The name of an image's Labelme file, without ``.json``: the file name less its image suffix.

    ``chest_01.dcm`` → ``chest_01``, as Labelme itself names the file of ``chest_01.png``. A suffix that
    is not an image type stays: DICOM files are often named by their UID (``1.2.840.113619.2.1.7``), and
    dropping ``.7`` would make distinct images collide.
    """
    path = Path(image)
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES else path.name


def labelme_paths(images: Sequence[str | os.PathLike], folder: str | os.PathLike) -> list[Path]:
    """``folder/<stem>.json`` for each image (see :func:`labelme_stem`), in input order.

    Raises :class:`AnnotationError` naming both images when two would write the same file (compared
    without case: on macOS and Windows ``A.json`` and ``a.json`` are one file), instead of letting
    the second silently replace the first.
    """
    folder = Path(folder)
    seen: dict[str, tuple[str, Path]] = {}
    out = []
    for image in images:
        path = folder / f"{labelme_stem(image)}.json"
        key = path.name.casefold()
        if key in seen:
            first, target = seen[key]
            raise AnnotationError(
                f"{first} and {image}: both would be written to {target}; "
                "rename one or write them into separate folders"
            )
        seen[key] = (str(image), path)
        out.append(path)
    return out


def labelme_document(
    points: np.ndarray,
    names: Sequence[str],
    image_size: tuple[int, int],
    image_path: str,
    *,
    status: str | None = None,
    reason: str = "",
    plausibility: float | None = None,
    score: float | None = None,
    corner_origin: bool = True,
    where: str = "labelme",
) -> dict:
    """A Labelme document (a JSON-ready dict) holding ``points`` as one ``point`` shape per name.

    ``points`` are (N, 2) project coordinates (pixel centres at integers) of the landmarks ``names``
    (the 16 :data:`~bmd.columns.LANDMARK_NAMES`, any order); ``image_size`` is (height, width) and
    ``image_path`` the image's file name, which Labelme looks for beside the JSON file. With
    ``corner_origin`` (the default) 0.5 is added, the inverse of :func:`read_labelme`'s shift, so the
    round trip gives the same coordinates. ``status`` (``ok``/``flagged``), ``reason``,
    ``plausibility`` and ``score`` of a detection go into the image-level flag ``flagged`` (a ticked
    box in Labelme's Flags panel) and the top-level :data:`LABELME_DETECTION_KEY`. ``where`` names
    the file in error messages.
    """
    names = [str(n) for n in names]
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (len(names), 2):
        raise AnnotationError(
            f"{where}: expected {len(names)} points (x, y) for {len(names)} names, got shape {pts.shape}"
        )
    _name_problems(Path(where), "", set(names))
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise AnnotationError(f"{where}: point(s) given more than once: {', '.join(repeated)}")
    if not np.isfinite(pts).all():
        bad = [n for n, p in zip(names, pts, strict=True) if not np.isfinite(p).all()]
        raise AnnotationError(f"{where}: non-finite coordinates for {', '.join(bad)}")
    height, width = (int(v) for v in image_size)
    if height <= 0 or width <= 0:
        raise AnnotationError(f"{where}: image size must be positive, got {height}x{width}")
    if Path(image_path).name != image_path or not image_path:
        # a folder could name the patient or the site; Labelme resolves the name beside the JSON anyway
        raise AnnotationError(f"{where}: imagePath must be a bare file name, got {image_path!r}")
    shift = 0.5 if corner_origin else 0.0
    by_name = dict(zip(names, pts, strict=True))
    shapes = [
        {
            "label": n,
            "points": [[float(by_name[n][0]) + shift, float(by_name[n][1]) + shift]],
            "group_id": None,
            "description": "",
            "shape_type": "point",
            "flags": {},
        }
        for n in LANDMARK_NAMES  # the project's order, whatever order the caller gave
    ]
    doc: dict = {
        "version": LABELME_VERSION,
        "flags": {} if status is None else {"flagged": status == "flagged"},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": height,
        "imageWidth": width,
    }
    if status is not None:
        doc[LABELME_DETECTION_KEY] = finite_or_null(
            {"status": status, "reason": reason, "plausibility": plausibility, "score": score}
        )
    return doc


def write_labelme(
    points: np.ndarray,
    names: Sequence[str],
    image_size: tuple[int, int],
    path: str | os.PathLike,
    *,
    image_path: str,
    status: str | None = None,
    reason: str = "",
    plausibility: float | None = None,
    score: float | None = None,
    corner_origin: bool = True,
) -> Path:
    """Write landmarks as one Labelme JSON file, atomically (see :func:`labelme_document`); returns the path.

    The file holds the points, the image's size and file name and the detection's verdict, nothing
    from the image's header. :func:`read_labelme` reads it back to the same coordinates, with
    ``case_id`` = the JSON file's stem.
    """
    path = Path(path)
    doc = labelme_document(
        points, names, image_size, image_path, status=status, reason=reason, plausibility=plausibility,
        score=score, corner_origin=corner_origin, where=str(path),
    )
    # repr-exact floats: the round trip through the file loses nothing
    return write_text(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
