"""Provenance of a build: parameters, seeds, package versions, hardware, commit, timings, artifacts.

The reproducibility chapter calls :func:`record`, which gathers everything into the ``provenance``
block of ``summary.json`` and returns it; the helpers below turn the summary into the chapter's tables.
Nothing here names a person, a patient or a host: a manifest is identified by its file name and a
checksum, a given landmark detector by its folder's name and the digest of its files, and paths are given
relative to the ``--out`` folder.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bmd.infra import paths
from bmd.landmarks.folder import detector_digest
from bmd.study import summary
from bmd.study.config import Profile

#: Distributions whose versions a build reports, in display order (name as installed).
PACKAGES: tuple[str, ...] = (
    "bmd-cxr", "torch", "torchvision", "numpy", "pandas", "scipy", "scikit-learn", "matplotlib", "pillow",
    "pydicom", "pylibjpeg", "pylibjpeg-openjpeg", "pylibjpeg-libjpeg", "pyyaml", "jupyter-book", "sphinx",
    "myst-nb", "papermill", "nbformat", "ipykernel",
)

#: Timing stages recorded by the chapters while they run; ``book`` and ``total`` are stamped after them.
EXECUTION_STAGES: tuple[str, ...] = ("twin", "landmarks", "rois", "training")

_STAGE_NOTES = {
    "twin": "generate (or reuse) the cohort and write its summary",
    "landmarks": "train (or reuse) the landmark detector, or check the given one",
    "rois": "detect landmarks on every case and cut the ROI cache",
    "training": "train (or reuse) every model of the tables",
    "book": "build the HTML with Jupyter Book",
    "total": "the whole bmd book run (cohort to HTML)",
}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution in ``names`` (None when it is not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment() -> dict[str, Any]:
    """Python, operating system and package versions, and how PyTorch was built and set up."""
    import torch

    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
        "packages": package_versions(),
        "torch": {
            "version": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "threads": torch.get_num_threads(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        },
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, OSError, ValueError):
        return None


def hardware() -> dict[str, Any]:
    """CPU model, logical and usable cores, memory (GiB) and CUDA GPUs seen by PyTorch."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                         "capability": f"{props.major}.{props.minor}"})
    return {
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "ram_gib": _ram_gib(),
        "gpus": gpus,
    }


def seeds(cfg: Profile) -> dict[str, Any]:
    """The seeds of a run: one study seed from which every random draw is derived."""
    return {
        "study": cfg.seed,
        "twin_cohort": cfg.seed,
        "split": cfg.seed,
        "landmark_detector": cfg.seed,
        "training": cfg.seed,
        "augmentation": f"per (seed {cfg.seed}, epoch, case): the same for any number of DDP processes",
        "bootstrap": cfg.seed,
    }


def manifest_identity(manifest: str | os.PathLike | None) -> dict[str, Any] | None:
    """A site manifest's file name and SHA-256 (never its folder); None for the twin cohort."""
    if manifest is None:
        return None
    path = Path(manifest)
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return {"name": path.name, "sha256": digest}


def detector_identity(detector: str | os.PathLike | None) -> dict[str, Any] | None:
    """A given landmark detector's folder name and content digest (never where it lies); None for none."""
    if detector is None:
        return None
    path = Path(detector)
    return {"name": path.name, "sha256": detector_digest(path) if path.is_dir() else None}


def parameters(cfg: Profile, manifest: str | os.PathLike | None = None,
               show_images: bool | None = None) -> dict[str, Any]:
    """The notebook parameters and the profile's fields the run used (the ``--out`` folder left out; a given
    landmark detector as :func:`detector_identity`)."""
    fields = cfg.as_dict()
    fields["landmark_model"] = detector_identity(cfg.landmark_model)
    return {
        "profile": cfg.profile,
        "seed": cfg.seed,
        "manifest": manifest_identity(manifest),
        "show_images": show_images,
        "profile_fields": fields,
    }


def record(cfg: Profile, manifest: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
           show_images: bool | None = None) -> dict[str, Any]:
    """Write the ``provenance`` block into the run's ``summary.json``; returns the whole summary."""
    block = {
        "parameters": parameters(cfg, manifest, show_images),
        "seeds": seeds(cfg),
        "environment": environment(),
        "hardware": hardware(),
        "commit": summary.git_commit(),
        "uncommitted_changes": uncommitted_changes(),
    }
    return summary.update(summary.summary_path(cfg.profile, out), provenance=block)


def uncommitted_changes() -> bool | None:
    """True when tracked files differ from the commit (the build is not exactly that commit); None outside git."""
    try:
        proc = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=paths.repo_root(),
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(proc.stdout.strip()) if proc.returncode == 0 else None


def timing_rows(data: dict) -> list[dict[str, Any]]:
    """One row per timing stage: stage, seconds, what it covers.

    The chapters record ``twin``, ``landmarks``, ``rois`` and ``training`` as they run (None when a
    stage has not run yet); ``book`` and ``total`` are stamped into ``summary.json`` only after every
    page has been executed, so a page never knows them and they are None here.
    """
    timings = data.get("timings_s", {})
    return [{"stage": stage, "seconds": timings.get(stage) if stage in EXECUTION_STAGES else None,
             "covers": _STAGE_NOTES[stage]} for stage in summary.TIMING_STAGES]


def artifact_rows(data: dict, out: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Where a build's outputs are, relative to the ``--out`` folder, and whether each exists yet."""
    root = paths.out_root(out)
    params = data.get("provenance", {}).get("parameters", {})
    profile = data.get("profile") or params.get("profile")
    run = paths.run_dir(profile, root) if profile else root / "runs"
    rows = [("run folder (caches, checkpoints, predictions)", run),
            ("results for scripts", run / "summary.json")]
    if profile is not None and params.get("seed") is not None and params.get("manifest") is None:
        rows.append(("twin cohort", paths.twin_dir(profile, params["seed"], root)))
    rows += [(f"{name.replace('_', ' ')} bundle", root / rel) for name, rel in sorted(data.get("artifacts", {}).items())]
    rows += [("executed notebooks", root / "_build" / "src"), ("HTML book", root / "_build" / "html")]
    return [{"what": what, "path": _relative(path, root), "exists": path.exists()} for what, path in rows]


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)
