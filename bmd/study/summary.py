"""``runs/<profile>/summary.json``: every number the book shows, for scripts and checks.

Chapters add their blocks with :func:`update` as they run; the book build stamps the profile, commit,
creation time and total timing with :func:`stamp`. Layout (keys kept stable, more may be added)::

    profile, commit, created, timings_s {twin, landmarks, rois, training, book, total},
    oracle [{roi, vertebra, r, auc}], cohort {...},
    landmarks {source (trained|external), detector_sha256 (a given detector's content digest, else null),
               mean_error_pct, p95_error_pct (null when unmeasured), accuracy, plausibility {split: counts}, ...},
    tables {table1, table2, table3},
    artifacts {landmark_model (only when trained in the run folder),
               multi_roi_model (the exported model's bundle: multi-ROI or attention)},
    exported_model {model, val_r, rule}, attention {mean_weights, weights, roi_ablation}
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from bmd.infra import paths
from bmd.infra.atomic import write_text
from bmd.infra.jsonvalues import finite_or_null
from bmd.infra.locks import hold_lock

TIMING_STAGES = ("twin", "landmarks", "rois", "training", "book", "total")


def summary_path(profile: str, out: str | os.PathLike | None = None) -> Path:
    """The summary file of a profile's run folder."""
    return paths.run_dir(profile, out) / "summary.json"


def read(path: str | os.PathLike) -> dict:
    """The summary so far ({} when absent)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def _merge(base: dict, new: dict) -> dict:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _locked(path: str | os.PathLike):
    """The summary's lock: chapters run side by side (papermill batches) must not lose each other's blocks."""
    path = Path(path)
    return hold_lock(path.with_name(f".{path.name}.lock"), str(path), timeout=600)


def update(path: str | os.PathLike, **blocks) -> dict:
    """Merge ``blocks`` into the summary (nested dicts merge, other values replace); written atomically."""
    with _locked(path):
        data = _merge(read(path), finite_or_null(json.loads(json.dumps(blocks, default=_jsonable))))
        data.setdefault("timings_s", {})
        write_text(path, json.dumps(data, indent=1, sort_keys=True, allow_nan=False))
    return data


def record_timing(path: str | os.PathLike, stage: str, seconds: float) -> dict:
    """Add ``seconds`` to a stage's timing (a stage may run in several chapters)."""
    with _locked(path):
        timings = read(path).get("timings_s", {})
        return update(path, timings_s={stage: round(timings.get(stage, 0.0) + float(seconds), 2)})


def git_commit() -> str:
    """The repository's current commit, or ``unknown`` outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.repo_root(), capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def stamp(path: str | os.PathLike, profile: str, total_seconds: float, book_seconds: float,
          chapter_seconds: dict[str, float] | None = None) -> dict:
    """Record profile, commit, creation time and the book/total timings.

    ``chapter_seconds`` (notebook → seconds of its papermill run, stages included) lands in
    ``timings_s`` as ``chapter:<notebook>`` keys beside the stages.
    """
    timings = {"book": round(book_seconds, 2), "total": round(total_seconds, 2)}
    timings.update({f"chapter:{name}": round(sec, 2) for name, sec in (chapter_seconds or {}).items()})
    return update(path, profile=profile, commit=git_commit(), created=datetime.now(UTC).isoformat(timespec="seconds"),
                  timings_s=timings)


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in summary.json")
