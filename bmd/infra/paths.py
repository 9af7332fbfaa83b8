"""One place that resolves every path the project uses.

Nothing else in the package builds a path from a literal folder name: code asks this module,
so a user can move the data or the run folder by passing ``--out`` (or setting ``BMD_ROOT``).
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # bmd/, above this infra/ package


def package_dir() -> Path:
    """The installed ``bmd`` package folder."""
    return _PACKAGE_DIR


def repo_root() -> Path:
    """The project checkout: ``$BMD_ROOT`` if set, else the folder holding the package's pyproject."""
    env = os.environ.get("BMD_ROOT")
    if env:
        return Path(env).resolve()
    candidate = _PACKAGE_DIR.parent
    if (candidate / "pyproject.toml").is_file():
        return candidate
    return Path.cwd().resolve()


def resources_dir() -> Path:
    """The data files the package reads at run time (``bmd/resources/``, shipped in the wheel)."""
    return _PACKAGE_DIR / "resources"


def manifest_schema_file() -> Path:
    """The manifest schema (JSON): columns, types, ranges, empty-cell rules."""
    return resources_dir() / "manifest_schema.json"


def reference_tables_file() -> Path:
    """The T-score reference tables (CSV, one row per table id, sex and vertebra)."""
    return resources_dir() / "reference_tables.csv"


def paper_results_file() -> Path:
    """The paper's Tables 1-3 (CSV)."""
    return resources_dir() / "paper_results.csv"


def data_manifest_dir() -> Path:
    """The manifest documentation and the example manifest (``data_manifest/`` of the checkout; not installed)."""
    return repo_root() / "data_manifest"


def profiles_dir() -> Path:
    """The profile parameter files (``smoke.yaml``, ``quick.yaml``, ``paper.yaml``)."""
    return _PACKAGE_DIR / "profiles"


def profile_file(name: str) -> Path:
    """The YAML file of a named profile."""
    return profiles_dir() / f"{name}.yaml"


def out_root(out: str | os.PathLike | None = None) -> Path:
    """Where generated things go: ``out`` if given, else the repository root."""
    return Path(out).resolve() if out is not None else repo_root()


def twin_dir(profile: str, seed: int, out: str | os.PathLike | None = None) -> Path:
    """Default folder of the twin cohort of a profile and seed (``data/twin/<profile>-seed<seed>``)."""
    return out_root(out) / "data" / "twin" / f"{profile}-seed{seed}"


def run_dir(profile: str, out: str | os.PathLike | None = None) -> Path:
    """The run folder of a profile (``runs/<profile>``): caches, checkpoints, predictions, summary.json."""
    return out_root(out) / "runs" / profile


def book_source_dir() -> Path:
    """The book's sources (``book/``)."""
    return repo_root() / "book"


def book_config_file() -> Path:
    """The Jupyter Book configuration (``_config.yml`` at the repository root)."""
    return repo_root() / "_config.yml"


def realdata_dir() -> Path | None:
    """Real test radiographs: ``$BMD_REALDATA``, else ``shared/realdata`` beside the checkout; None if absent."""
    env = os.environ.get("BMD_REALDATA")
    folder = Path(env) if env else repo_root().parent / "shared" / "realdata"
    return folder if folder.is_dir() else None
