"""A trained BMD model as a self-describing folder: everything ``bmd predict`` needs, nothing else.

:func:`export_bundle` turns a training run folder (:mod:`bmd.model.train`) and the landmark detector whose
landmarks placed its ROIs into a bundle; :func:`load_bundle` reads one back, checked, with the network
in eval mode. Layout::

    bundle.json     what the model is and how to feed it (written last: its presence marks a complete
                    bundle): format, model kind/family/backbone/width/batch norm, chest and ROI input
                    sides, ROI geometry and its version, how crops were stored in the training cache,
                    the target scaler (per-vertebra mean and SD, g/cm²), the T-score reference table,
                    sex and threshold, provenance (the training config, best epoch, val/test metrics,
                    the detector's validation errors, versions) and the size and SHA-256 of every file
    weights.pt      the network's state dict (best validation epoch)
    landmarks/      a copy of the landmark detector folder (:mod:`bmd.landmarks.detector`)
    MODEL_CARD.md   what the model is for, what it was trained on, how well it did on its test split,
                    its calibration, its input requirements and known limits (:mod:`bmd.deploy.model_card`)

**Calibration.** A regression output shrinks toward the mean, so its T-scores under-call
osteoporosis (DESIGN §8). At export the run's validation-split predictions (``predictions.csv``) fit
:class:`bmd.evaluation.screening.Recalibration` per vertebra; ``bundle.json``'s ``calibration`` block stores it
(``method: validation-linear``, the fitted lines and the map ``calibrated = scale·raw + offset``), and
``bmd predict`` applies it unless ``--raw``. When it cannot be fitted (a model that did not learn) the
block says ``method: none`` and why; a bundle from before calibration existed has no block. Both
predict raw, with ``calibration = none``.

**No paths.** A bundle travels between sites, so it holds no absolute path: the training config's
run, cache and manifest are reduced to file names, the training data is identified by the manifest's
file name and SHA-256 (and, for the twin cohort, its spec version and hash from ``oracle.json``), and
every other string that is an absolute path (in ``bundle.json`` and the detector's ``config.json``)
is reduced to its last component.

Inputs must be cut exactly as for training, so the crop sides are read from the training ROI cache
(its ``meta.json``, or the array shapes of a bare cache folder), never from a profile. A bundle holds
no case or patient ids: the provenance is the run's configuration and aggregate metrics only.

**T-scores.** An image says nothing reliable about sex (headers are never read for it), so T-scores
use one reference table and sex per bundle, by default the Hologic female table: the ISCD's position
is a uniform white-female reference database for women and men. ``predict_images(sex=...)`` overrides
it per call.

**Safety.** A bundle may come from another site: its tensors are read with ``weights_only=True``
(no pickled code is executed), and every file is checked against its recorded SHA-256.

Writing is atomic: the bundle is built in a hidden temporary folder beside ``dest`` and renamed into
place, so ``dest`` is either the old bundle, absent, or the complete new one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from bmd import __version__
from bmd.columns import BMD_COLUMNS, PRED_COLUMNS, ROI_NAMES, VERTEBRAE
from bmd.deploy.model_card import render_model_card
from bmd.evaluation.metrics import patient_bootstrap_weights
from bmd.evaluation.screening import Recalibration
from bmd.infra.atomic import dir_mode
from bmd.infra.digests import sha256_file
from bmd.inputs.tscores import reference_ids
from bmd.landmarks.detector import LandmarkModel, load_landmark_model
from bmd.model.dataset import FAMILIES, TargetScaler
from bmd.model.networks import MULTI_ROI_KINDS, ROIModel, build_backbone, build_multi_roi
from bmd.model.pretrained import IMAGENET
from bmd.model.train import ALL_ROIS, RunScalerError, TrainConfig, run_scaler
from bmd.rois.geometry import GEOMETRY_VERSION, RoiGeometry

if TYPE_CHECKING:
    import pandas as pd


BUNDLE_FORMAT = "bmd-model/1"
BUNDLE_FILE = "bundle.json"
WEIGHTS_FILE = "weights.pt"
CARD_FILE = "MODEL_CARD.md"
LANDMARK_DIR = "landmarks"
CALIBRATED, UNCALIBRATED = "validation-linear", "none"
"""Values of the ``calibration`` column of ``bmd predict``: the bundle's validation recalibration, or raw."""
_LANDMARK_FILES = ("config.json", "weights.pt", "plausibility.pt")
KINDS = ("multi_roi", "attention", "roi")
STORAGE = ("uint8", "float16")
#: bundle.json's model.output: what the prediction is, per kind (a roi model: the mean over its crops)
_OUTPUT_TEXT = {"multi_roi": "joint head", "attention": "vertebra readout tokens of the attention over the 7 ROIs"}


class BundleError(ValueError):
    """A model bundle (or a run to export) that cannot be used; the message is one line."""


@dataclass(frozen=True)
class Bundle:
    """A loaded model bundle: the network (eval mode), the landmark detector and how to use them."""

    path: Path
    model: nn.Module
    landmarks: LandmarkModel
    scaler: TargetScaler
    kind: str  # multi_roi | attention | roi
    family: str  # the ROI family of a roi model; "all" for the multi-ROI models
    backbone: str
    chest_size: int
    roi_size: int
    geometry: RoiGeometry
    storage: str  # how the training cache stored crops: uint8 (value × 255, rounded) or float16
    reference: str  # T-score reference table id
    sex: str  # F | M: the reference table's sex used for T-scores
    threshold: float  # T-score at or below which the WHO category is osteoporosis
    info: dict = field(repr=False, default_factory=dict)  # the whole bundle.json
    calibration: Recalibration | None = None  # the validation recalibration; None: predictions are raw

    @property
    def min_image_side(self) -> int:
        """Smallest image side accepted for prediction: the chest input side (a chest is never upsampled)."""
        return self.chest_size

    @property
    def calibration_name(self) -> str:
        """``validation-linear`` when the bundle carries a recalibration, else ``none``."""
        return CALIBRATED if self.calibration is not None else UNCALIBRATED


# ----------------------------------------------------------------------------------------------- export


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path.parent}: no {path.name} ({what})") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable {what} ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: {what} is not a JSON object")
    return data


def _cache_inputs(cache: Path) -> dict:
    """Crop sides, storage dtype and ROI geometry of a training cache (from its meta.json or arrays)."""
    meta_path = cache / "meta.json"
    if meta_path.is_file():
        meta = _read_json(meta_path, "ROI cache metadata")
        try:
            chest, local = meta["shapes"]["chest"], meta["shapes"]["local"]
            storage = meta["dtypes"]["chest"]
            inputs = meta.get("inputs", {})
            geometry = inputs.get("geometry") or RoiGeometry().as_dict()
            version = inputs.get("geometry_version", GEOMETRY_VERSION)
        except (KeyError, TypeError):
            raise BundleError(f"{meta_path}: incomplete ROI cache metadata") from None
        source = meta.get("landmark_source")
        key = meta.get("key")
    else:  # a bare cache folder (chest.npy, local.npy, case_ids.txt): default geometry
        try:
            chest_arr = np.load(cache / "chest.npy", mmap_mode="r")
            local_arr = np.load(cache / "local.npy", mmap_mode="r")
        except FileNotFoundError:
            raise BundleError(f"{cache}: the run's ROI cache is gone; its crop sizes cannot be read "
                              "(rebuild the cache, then export)") from None
        except (OSError, ValueError) as exc:
            raise BundleError(f"{cache}: unreadable ROI cache arrays ({exc.__class__.__name__})") from None
        chest, local, storage = list(chest_arr.shape), list(local_arr.shape), str(chest_arr.dtype)
        geometry, version, source, key = RoiGeometry().as_dict(), GEOMETRY_VERSION, None, None
    if len(chest) != 3 or len(local) != 4 or local[1] != len(ROI_NAMES) - 1:
        raise BundleError(f"{cache}: unexpected ROI cache shapes chest {chest}, local {local}")
    if chest[1] != chest[2] or local[2] != local[3]:
        raise BundleError(f"{cache}: the ROI cache holds non-square crops ({chest}, {local})")
    if storage not in STORAGE:
        raise BundleError(f"{cache}: unknown crop storage {storage!r} (expected {' or '.join(STORAGE)})")
    return {"chest_size": int(chest[1]), "roi_size": int(local[2]), "storage": storage,
            "geometry": RoiGeometry(**geometry).as_dict(), "geometry_version": version,
            "cache_key": key, "landmark_source": source}


def _build_network(kind: str, backbone: str, width: float, batch_norm: bool) -> nn.Module:

    net = build_backbone(backbone, width, batch_norm)  # weights come from the bundle, never a download
    return build_multi_roi(kind, net) if kind in MULTI_ROI_KINDS else ROIModel(net)


def _check_settings(reference: str, sex: str, threshold: float) -> tuple[str, str, float]:

    ref = str(reference).strip().lower()
    if ref not in reference_ids():
        raise BundleError(f"unknown T-score reference table {reference!r} (known: {', '.join(reference_ids())})")
    sx = str(sex).strip().upper()
    if sx not in ("F", "M"):
        raise BundleError(f"sex must be F or M, got {sex!r}")
    try:
        thr = float(threshold)
    except (TypeError, ValueError):
        raise BundleError(f"threshold must be a number, got {threshold!r}") from None
    if not math.isfinite(thr):
        raise BundleError(f"threshold must be finite, got {threshold!r}")
    return ref, sx, thr


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Rename the finished folder ``tmp`` onto ``dest`` (an existing bundle there is moved aside first)."""
    trash = None
    if dest.exists():
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        elif dest.is_dir() and (dest / BUNDLE_FILE).is_file():
            trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, trash / "old")
        else:
            raise BundleError(f"{dest}: exists and is not a model bundle; not overwriting it")
    os.chmod(tmp, dir_mode())  # mkdtemp made it 0o700; a bundle is meant to be handed on
    os.replace(tmp, dest)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


_WINDOWS_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")


def is_absolute_path(text: str) -> bool:
    """Whether a string is an absolute path (POSIX, home-relative or Windows), which a bundle must not hold."""
    return text.startswith(("/", "~")) or bool(_WINDOWS_ABSOLUTE.match(text))


def strip_paths(obj: Any) -> Any:
    """A copy of a JSON-like object with every absolute-path string reduced to its last component."""
    if isinstance(obj, dict):
        return {k: strip_paths(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strip_paths(v) for v in obj]
    if isinstance(obj, str) and is_absolute_path(obj):
        return (PureWindowsPath(obj) if _WINDOWS_ABSOLUTE.match(obj) else Path(obj)).name
    return obj


def _portable_config(cfg) -> dict:
    """The training config with its run folder, cache, manifest, weights file and warm-start source reduced
    to names."""

    out = dataclasses.asdict(cfg)
    for key in ("run_dir", "cache", "manifest"):
        out[key] = Path(str(out[key])).name
    if out.get("pretrained") and str(out["pretrained"]).strip().lower() != IMAGENET:
        out["pretrained"] = Path(str(out["pretrained"])).name
    if out.get("init_from"):  # a warm start: the source run's folder name and file (its SHA-256 stays)
        source = Path(str(out["init_from"]))
        out["init_from"] = f"{source.parent.name}/{source.name}"
    return out


def _training_data(manifest: str | os.PathLike) -> dict:
    """Which data trained the model, without a path: the manifest's name and SHA-256, and the twin spec.

    A manifest with the twin generator's ``oracle.json`` beside it is the twin cohort: its spec
    version, spec hash, seed and profile are recorded.
    """
    path = Path(manifest)
    out: dict = {"source": "site", "manifest": path.name,
                 "manifest_sha256": sha256_file(path) if path.is_file() else None}
    try:
        oracle = json.loads((path.parent / "oracle.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        oracle = None
    if isinstance(oracle, dict) and oracle.get("spec_hash"):
        out["source"] = "twin"
        out["twin"] = {k: oracle.get(k) for k in ("spec_version", "spec_hash", "seed", "profile")}
    return out


def _run_predictions(run: Path) -> pd.DataFrame | None:
    """The run's val/test predictions (``predictions.csv``), or None when it has none."""
    import pandas as pd

    try:
        return pd.read_csv(run / "predictions.csv", dtype={"case_id": str, "patient_id": str})
    except (OSError, ValueError):
        return None


def _split_sizes(cfg, predictions: pd.DataFrame | None) -> dict:
    """Cases per split that the run used: the manifest's splits over the cache's cases (else the predictions)."""
    import pandas as pd

    try:
        case_ids = set((Path(cfg.cache) / "case_ids.txt").read_text().split())
        manifest = pd.read_csv(cfg.manifest, dtype={"case_id": str})
        counts = manifest[manifest["case_id"].isin(case_ids)]["split"].value_counts()
        return {s: int(counts.get(s, 0)) for s in ("train", "val", "test")}
    except (OSError, ValueError, KeyError):
        pass
    if predictions is None or "split" not in predictions:
        return {"train": None, "val": None, "test": None}
    counts = predictions["split"].value_counts()
    return {"train": None, "val": int(counts.get("val", 0)), "test": int(counts.get("test", 0))}


def _fit_calibration(predictions: pd.DataFrame | None) -> tuple[Recalibration | None, dict]:
    """The validation recalibration of a run (:class:`bmd.evaluation.screening.Recalibration`) and its bundle.json block."""

    if predictions is None:
        return None, {"method": UNCALIBRATED, "reason": "the run has no predictions.csv"}
    try:
        recal = Recalibration.fit(predictions, "val")
    except (ValueError, KeyError) as exc:
        return None, {"method": UNCALIBRATED, "reason": str(exc).splitlines()[0] if str(exc) else repr(exc)}
    n = int((predictions["split"] == "val").sum())
    return recal, {"method": CALIBRATED, "split": "val", "n_cases": n,
                   "applied": "by bmd predict and bmd evaluate unless --raw", **recal.to_dict()}


def _bias_mae(pred: np.ndarray, truth: np.ndarray, patients: np.ndarray, n_boot: int, seed: int) -> list[dict]:
    """Bias (mean prediction − truth) and MAE per vertebra and averaged, with patient-bootstrap 95% CIs."""

    weights = patient_bootstrap_weights(patients, n_boot, seed) if len(patients) else np.zeros((n_boot, 0))
    rows, boots = [], []
    for j, v in enumerate(VERTEBRAE):
        ok = np.isfinite(pred[:, j]) & np.isfinite(truth[:, j])
        d, w = pred[ok, j] - truth[ok, j], weights[:, ok]
        total = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = np.stack([(w * d).sum(axis=1) / total, (w * np.abs(d)).sum(axis=1) / total], axis=1)
        boots.append(boot)
        rows.append({"vertebra": v, "n": int(ok.sum()), **_with_ci("bias", d.mean() if d.size else np.nan,
                                                                    boot[:, 0]),
                     **_with_ci("mae", np.abs(d).mean() if d.size else np.nan, boot[:, 1])})
    avg = np.nanmean(np.stack(boots), axis=0) if n_boot else np.zeros((0, 2))
    rows.append({"vertebra": "avg", "n": int(sum(r["n"] for r in rows)),
                 **_with_ci("bias", float(np.nanmean([r["bias"] for r in rows])), avg[:, 0]),
                 **_with_ci("mae", float(np.nanmean([r["mae"] for r in rows])), avg[:, 1])})
    return rows


def _with_ci(name: str, point: float, boot: np.ndarray) -> dict:
    boot = boot[np.isfinite(boot)]
    lo, hi = np.quantile(boot, [0.025, 0.975]).tolist() if boot.size else (float("nan"), float("nan"))
    return {name: float(point), f"{name}_lo": float(lo), f"{name}_hi": float(hi)}


def _test_performance(metrics: dict, predictions: pd.DataFrame | None, recal: Recalibration | None,
                      seed: int, n_boot: int = 2000) -> dict:
    """Test-split R and AUC (from the run's metrics.json) with bias and MAE (from predictions.csv), CIs.

    Bias and MAE are given for the raw output and, when there is a recalibration, for the calibrated
    one (R and AUC do not change under an increasing linear map).
    """
    import warnings


    test_metrics = metrics.get("splits", {}).get("test") or []
    rows = {r.get("vertebra"): r for r in test_metrics if isinstance(r, dict)}
    out: dict = {"split": "test", "n_boot": n_boot, "ci": "95% patient-level bootstrap", "rows": []}
    part = None
    if predictions is not None and {"split", "patient_id", *BMD_COLUMNS, *PRED_COLUMNS} <= set(predictions):
        part = predictions[predictions["split"] == "test"]
    agreement: dict[str, list[dict]] = {}
    if part is not None and len(part):
        truth, raw = part[BMD_COLUMNS].to_numpy(float), part[PRED_COLUMNS].to_numpy(float)
        patients = part["patient_id"].to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            agreement["raw"] = _bias_mae(raw, truth, patients, n_boot, seed)
            if recal is not None:
                agreement["calibrated"] = _bias_mae(recal.apply_array(raw), truth, patients, n_boot, seed)
    for v in (*VERTEBRAE, "avg"):
        m = rows.get(v, {})
        row: dict = {"vertebra": v, "n": m.get("n")}
        for key in ("r", "r_lo", "r_hi", "auc", "auc_lo", "auc_hi"):
            row[key] = m.get(key)
        for which, table in agreement.items():
            a = next(r for r in table if r["vertebra"] == v)
            row["n"] = row["n"] if row["n"] is not None else a["n"]
            prefix = "" if which == "raw" else "calibrated_"
            row.update({f"{prefix}{k}": a[k] for k in ("bias", "bias_lo", "bias_hi", "mae", "mae_lo", "mae_hi")})
        if "raw" not in agreement:  # no predictions.csv: the metrics' point values, without CIs
            row.update({k: m.get(k) for k in ("bias", "mae")})
        out["rows"].append(row)
    return out


def export_bundle(run_dir: str | os.PathLike, detector: str | os.PathLike, dest: str | os.PathLike, *,
                  reference: str = "hologic", threshold: float = -2.5, sex: str = "F") -> Path:
    """Write the model bundle of a finished training run to ``dest`` (atomically); returns ``dest``.

    ``run_dir``: a :mod:`bmd.model.train` run folder (``config.json``, ``best.pt``; the target scaler training
    stored there, :func:`bmd.model.train.run_scaler`). ``detector``: the landmark detector folder
    whose landmarks cut the run's validation/test crops (copied into ``dest/landmarks``).
    ``reference``/``sex``/``threshold``: the T-score table, its sex and the osteoporosis threshold that
    ``bmd predict`` reports with. Crop sides, storage and geometry are read from the run's ROI cache.
    The validation recalibration is fitted from the run's ``predictions.csv`` (stored as ``method:
    none`` with the reason when it cannot be), and ``MODEL_CARD.md`` is written from the description;
    no absolute path is written (see the module docstring).
    Raises :class:`BundleError` with a one-line reason when something is missing or inconsistent.
    """

    run, dest = Path(run_dir), Path(dest)
    ref, sx, thr = _check_settings(reference, sex, threshold)
    raw = _read_json(run / "config.json", "training run config")
    try:
        cfg = TrainConfig(**raw)
    except TypeError as exc:
        raise BundleError(f"{run / 'config.json'}: not a training config ({exc})") from None
    if cfg.model not in KINDS:
        raise BundleError(f"{run}: unknown model kind {cfg.model!r}")
    if cfg.model == "roi" and cfg.family not in FAMILIES:
        raise BundleError(f"{run}: unknown ROI family {cfg.family!r}")
    best_path = run / "best.pt"
    if not best_path.is_file():
        raise BundleError(f"{run}: no best.pt (the run has not finished an epoch)")
    try:
        best = torch.load(best_path, map_location="cpu", weights_only=False)  # the run's own file
        state = best["model"]
    except Exception as exc:  # whatever torch raises for a damaged file, one line
        raise BundleError(f"{best_path}: unreadable checkpoint ({exc.__class__.__name__})") from None
    inputs = _cache_inputs(Path(cfg.cache))
    if inputs["geometry_version"] != GEOMETRY_VERSION:
        raise BundleError(f"{cfg.cache}: ROI geometry {inputs['geometry_version']!r}, this version cuts "
                          f"{GEOMETRY_VERSION!r}: retrain on a rebuilt cache")
    try:
        scaler = run_scaler(run)  # fitted once, by the training run
    except RunScalerError as exc:
        raise BundleError(str(exc)) from None
    family = cfg.family
    net = _build_network(cfg.model, cfg.backbone, cfg.width, cfg.batch_norm)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise BundleError(f"{best_path}: weights do not match the run's config ({first})") from None
    try:
        landmarks = load_landmark_model(detector)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise BundleError(f"{detector}: unusable landmark detector "
                          f"({str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__})") from None
    metrics = {}
    if (run / "metrics.json").is_file():
        metrics = _read_json(run / "metrics.json", "training metrics")
    predictions = _run_predictions(run)
    recal, calibration = _fit_calibration(predictions)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        torch.save(net.state_dict(), tmp / WEIGHTS_FILE)
        (tmp / LANDMARK_DIR).mkdir()
        src = Path(detector)
        for name in _LANDMARK_FILES:
            if name == "config.json":  # the detector's description, without the paths it was trained from
                lm_config = strip_paths(_read_json(src / name, "landmark detector config"))
                (tmp / LANDMARK_DIR / name).write_text(json.dumps(lm_config, indent=1), encoding="utf-8")
            elif (src / name).is_file():
                shutil.copyfile(src / name, tmp / LANDMARK_DIR / name)
        lm_info = landmarks.info
        info = {
            "format": BUNDLE_FORMAT,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": {"kind": cfg.model, "family": family, "backbone": cfg.backbone, "width": cfg.width,
                      "batch_norm": cfg.batch_norm, "outputs": list(VERTEBRAE), "unit": "g/cm²",
                      "output": _OUTPUT_TEXT.get(cfg.model, "mean over the family's crops")},
            "inputs": {"chest_size": inputs["chest_size"], "roi_size": inputs["roi_size"],
                       "roi_names": list(ROI_NAMES), "geometry": inputs["geometry"],
                       "geometry_version": inputs["geometry_version"], "storage": inputs["storage"],
                       "image": "bmd.io.read_image: float in [0, 1], bone bright, original geometry"},
            "target_scaler": {"mean": [float(x) for x in scaler.mean], "std": [float(x) for x in scaler.std],
                              "vertebrae": list(VERTEBRAE), "unit": "g/cm²"},
            "t_scores": {"reference": ref, "sex": sx, "threshold": thr,
                         "category": "WHO category of the lowest vertebra T-score (osteoporosis: T <= threshold)"},
            "landmarks": {"folder": LANDMARK_DIR, "format": lm_info.get("format"),
                          "input_size": landmarks.input_size, "val_errors": lm_info.get("val_errors"),
                          "plausibility": landmarks.plausibility is not None},
            "calibration": calibration,
            "training_data": {**_training_data(cfg.manifest), "split_sizes": _split_sizes(cfg, predictions)},
            "performance": {"test": _test_performance(metrics, predictions, recal, cfg.seed)},
            "provenance": {"training_config": _portable_config(cfg), "best_epoch": metrics.get("best_epoch"),
                           "metrics": metrics.get("splits", {}), "cache_key": inputs["cache_key"],
                           "cache_landmark_source": inputs["landmark_source"],
                           "versions": {"bmd": __version__, "torch": torch.__version__, "numpy": np.__version__}},
        }
        info = json.loads(json.dumps(strip_paths(info), default=float))  # plain JSON (NaN kept as NaN)

        (tmp / CARD_FILE).write_text(render_model_card(info), encoding="utf-8")
        info["files"] = {p.relative_to(tmp).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
                         for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / BUNDLE_FILE).write_text(json.dumps(info, indent=1, default=float), encoding="utf-8")
        _replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


# ------------------------------------------------------------------------------------------------- load


def load_bundle(path: str | os.PathLike, *, verify: bool = True) -> Bundle:
    """Read and check a model bundle folder; the network comes back in eval mode on the CPU.

    ``verify``: check every file's size and SHA-256 against ``bundle.json``. Raises
    :class:`BundleError` with a one-line reason for a missing, corrupt or incompatible bundle.
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: no such model bundle folder")
    if not (root / BUNDLE_FILE).is_file():
        if (root / "config.json").is_file() and (root / "weights.pt").is_file():
            raise BundleError(f"{root}: a landmark detector (or training run), not a model bundle; "
                              "export one with bmd.deploy.bundle.export_bundle")
        raise BundleError(f"{root}: not a model bundle (no {BUNDLE_FILE})")
    info = _read_json(root / BUNDLE_FILE, "model bundle description")
    if info.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{root}: bundle format {info.get('format')!r}; this version reads {BUNDLE_FORMAT}")
    try:
        model_info, inputs, ts = info["model"], info["inputs"], info["t_scores"]
        files = info["files"]
        kind, family = model_info["kind"], model_info["family"]
        if kind in MULTI_ROI_KINDS:
            family = ALL_ROIS  # one name for the multi-ROI family, whatever an older bundle wrote
        geometry = RoiGeometry(**inputs["geometry"])
        chest_size, roi_size = int(inputs["chest_size"]), int(inputs["roi_size"])
        storage, version = inputs["storage"], inputs["geometry_version"]
        scaler = TargetScaler.from_dict(info["target_scaler"])
        ref, sx, thr = ts["reference"], ts["sex"], ts["threshold"]
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{root}: incomplete {BUNDLE_FILE} ({exc.__class__.__name__}: {exc})") from None
    if kind not in KINDS or (kind == "roi" and family not in FAMILIES):
        raise BundleError(f"{root}: unknown model kind {kind!r} / family {family!r}")
    if version != GEOMETRY_VERSION:
        raise BundleError(f"{root}: cut with ROI geometry {version!r}, this version cuts {GEOMETRY_VERSION!r} "
                          "(incompatible: export the bundle again from a matching version)")
    if storage not in STORAGE:
        raise BundleError(f"{root}: unknown crop storage {storage!r}")
    if scaler.mean.shape != (len(VERTEBRAE),) or scaler.std.shape != (len(VERTEBRAE),):
        raise BundleError(f"{root}: the target scaler needs {len(VERTEBRAE)} means and SDs")
    ref, sx, thr = _check_settings(ref, sx, thr)
    calibration = _read_calibration(root, info.get("calibration"))
    if verify:
        for name, rec in files.items():
            p = root / name
            if not p.is_file():
                raise BundleError(f"{root}: {name} is missing")
            if p.stat().st_size != rec.get("size") or sha256_file(p) != rec.get("sha256"):
                raise BundleError(f"{root}: {name} does not match its recorded checksum (corrupt or edited)")
    try:
        net = _build_network(kind, model_info["backbone"], float(model_info["width"]), bool(model_info["batch_norm"]))
        state = torch.load(root / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except FileNotFoundError:
        raise BundleError(f"{root}: {WEIGHTS_FILE} is missing") from None
    except Exception as exc:  # a damaged file raises pickle, zip or size errors alike: one line
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise BundleError(f"{root}: weights do not load into the described model ({first})") from None
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    try:
        landmarks = load_landmark_model(root / info.get("landmarks", {}).get("folder", LANDMARK_DIR))
    except Exception as exc:  # missing, damaged or foreign detector files: one line
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise BundleError(f"{root}: unusable landmark detector ({first})") from None
    landmarks.net.eval()
    return Bundle(path=root, model=net, landmarks=landmarks, scaler=scaler, kind=kind, family=family,
                  backbone=model_info["backbone"], chest_size=chest_size, roi_size=roi_size, geometry=geometry,
                  storage=storage, reference=ref, sex=sx, threshold=thr, info=info, calibration=calibration)


def _read_calibration(root: Path, block: Any) -> Recalibration | None:
    """The recalibration a bundle.json ``calibration`` block describes (None: absent or ``method: none``)."""
    if block is None or (isinstance(block, dict) and block.get("method") == UNCALIBRATED):
        return None
    if not isinstance(block, dict) or block.get("method") != CALIBRATED:
        method = block.get("method") if isinstance(block, dict) else block
        raise BundleError(f"{root}: unknown calibration method {method!r} in {BUNDLE_FILE}")

    try:
        return Recalibration.from_dict(block)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{root}: unusable calibration in {BUNDLE_FILE} ({exc.__class__.__name__}: {exc})") from None
