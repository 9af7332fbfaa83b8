"""The project as a package: run-time data shipped in the wheel, one copy of it, setup files that agree.

The wheel check builds the wheel offline (no build isolation, no index), installs it into a fresh
virtual environment that borrows this one's dependencies (torch is not installed again) and runs the
command from a folder outside the checkout. It is a test (marked ``slow``) rather than a CI step so that
``make test`` — what CI runs and what a contributor runs — catches a data file left out of the package.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from bmd import __version__
from bmd.infra import paths

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
RESOURCES = ("manifest_schema.json", "reference_tables.csv", "paper_results.csv")
DOCS_TOOLCHAIN = ("jupyter-book", "sphinx", "myst-nb", "myst-parser", "sphinx-book-theme", "pydata-sphinx-theme",
                  "jupyter-cache", "nbclient", "nbformat", "papermill", "ipykernel", "docutils")


def _package_data_globs() -> list[str]:
    return [f"bmd/{g}" for g in PYPROJECT["tool"]["setuptools"]["package-data"]["bmd"]]


def test_run_time_data_is_package_data_in_one_copy():
    for name in RESOURCES:
        assert (paths.resources_dir() / name).is_file(), name
        assert not (ROOT / "data_manifest" / name).exists(), f"a second copy of {name} would drift"
    assert paths.reference_tables_file().parent == paths.manifest_schema_file().parent == paths.resources_dir()
    assert paths.resources_dir().is_relative_to(paths.package_dir())
    globs = _package_data_globs()
    for folder in (paths.resources_dir(), paths.profiles_dir()):
        for file in folder.iterdir():
            rel = file.relative_to(ROOT).as_posix()
            if file.is_file() and not file.name.endswith(".py"):
                assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not package data"


def test_environment_yml_installs_this_package_with_pyprojects_dependencies():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    minimum = re.fullmatch(r">=(\d+\.\d+)", PYPROJECT["project"]["requires-python"]).group(1)
    assert python == f"python={minimum}"
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    project = PYPROJECT["project"]
    assert pip == [*project["dependencies"], *project["optional-dependencies"]["dev"], "-c constraints/docs.txt",
                   "-e ."]


def test_docs_toolchain_is_pinned_and_used_by_make():
    pins = {}
    for line in (ROOT / "constraints" / "docs.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    assert set(DOCS_TOOLCHAIN) <= set(pins) and all(pins.values()), pins
    makefile = (ROOT / "Makefile").read_text()
    assert "CONSTRAINTS := constraints/docs.txt" in makefile and "-c $(CONSTRAINTS)" in makefile


def test_license_and_citation_agree_with_pyproject():
    assert PYPROJECT["project"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["version"] == PYPROJECT["project"]["version"] == __version__
    assert citation["license"] == "MIT"
    seed = citation["references"][0]
    assert any(i["value"] == "arXiv:2104.01734" for i in seed["identifiers"])
    bib = (ROOT / "book" / "references.bib").read_text()
    entry = bib[bib.index("@article{wang2021opportunistic"):]
    authors = re.search(r"author\s*=\s*\{(.*?)\},", entry).group(1).split(" and ")
    assert [f"{a['family-names']}, {a['given-names']}" for a in seed["authors"]] == authors


@pytest.mark.slow
def test_wheel_installs_and_runs_from_another_folder(tmp_path):
    pytest.importorskip("setuptools", minversion="77", reason="the offline wheel build needs setuptools >= 77")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BMD_ROOT")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")  # nothing is downloaded
    src = tmp_path / "src"  # built from a copy: no build/ or egg-info left in the checkout
    shutil.copytree(ROOT / "bmd", src / "bmd", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)

    def run(*cmd, cwd: Path = tmp_path) -> str:
        done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{cmd}: {done.stdout}{done.stderr}"
        return done.stdout

    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", src, "-w", tmp_path / "dist")
    wheel = next((tmp_path / "dist").glob("bmd_cxr-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"bmd/resources/{n}" for n in RESOURCES} <= names
    assert {f"bmd/profiles/{p}.yaml" for p in ("smoke", "quick", "paper")} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    # this environment's packages (torch ...) after the new one's own: like --system-site-packages for a venv
    (site / "_borrowed.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel)

    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(ROOT / "data_manifest" / "example", elsewhere / "example")
    bmd = venv / "bin" / "bmd"
    assert run(bmd, "--version", cwd=elsewhere).strip() == f"bmd {__version__}"
    where = run(python, "-c", "import bmd; print(bmd.__file__)", cwd=elsewhere).strip()
    assert Path(where).is_relative_to(venv), where  # the installed package, not the checkout
    assert "4 cases" in run(bmd, "validate-manifest", "example/manifest.csv", cwd=elsewhere)
    run(python, "-c", "from bmd.inputs import paper, tscores; assert len(paper.results()) and "
        "tscores.reference_ids()", cwd=elsewhere)
    run(bmd, "twin", "--profile", "smoke", "--out", "twin", "--workers", "1", "--quiet", cwd=elsewhere)
    assert "cases" in run(bmd, "validate-manifest", "twin/manifest.csv", cwd=elsewhere)
