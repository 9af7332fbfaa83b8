"""Build the book: execute the chapter notebooks with papermill, then build HTML with Jupyter Book.

The sources in ``book/`` stay output-free. Executed copies go to ``<out>/_build/src`` and the HTML to
``<out>/_build/html``; Jupyter Book never re-executes them (``execute_notebooks: off``) and any
Sphinx warning fails the build (``-W``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import yaml

from bmd.infra import paths, progress
from bmd.infra.locks import hold_lock
from bmd.inputs.manifest import load_manifest
from bmd.landmarks.folder import read_detector_config
from bmd.study import summary
from bmd.study.cohort import LandmarkSourceError, check_landmark_source, load_cohort
from bmd.study.config import Profile, load_profile


class BookError(RuntimeError):
    """The book could not be built."""


def chapter_notebooks(source: Path | None = None) -> list[Path]:
    """The notebooks named in ``_toc.yml``, in table-of-contents order (paths relative to ``source``)."""
    source = source or paths.book_source_dir()
    toc = yaml.safe_load((source / "_toc.yml").read_text())
    files: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(str(node["file"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return [Path(f).with_suffix(".ipynb") for f in files if (source / f).with_suffix(".ipynb").is_file()]


def _hide_injected_parameters(path: Path) -> None:
    """Tag papermill's injected cell so the built page does not show it."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell["metadata"]["tags"] = [*tags, "remove-cell"]
    nbformat.write(nb, path)


def _kernel_manager_class() -> type:
    """A kernel manager whose shutdown does not interrupt the kernel first.

    jupyter_client's ``shutdown_kernel`` sends SIGINT before its shutdown request; ipykernel, idle in
    its message loop, then logs ``[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.`` after every
    chapter, which reads like a failure. The shutdown request alone stops an idle kernel (one that does
    not stop is still killed after the manager's wait), and every other interrupt is left as it is.
    """
    from jupyter_client import AsyncKernelManager

    class CleanShutdownKernelManager(AsyncKernelManager):
        async def _async_interrupt_kernel(self) -> None:
            if self.shutting_down:  # set by shutdown_kernel; a shutdown request follows
                return
            await super()._async_interrupt_kernel()

    return CleanShutdownKernelManager


class _ProfileFieldsAreKnown:
    """Drop papermill's "Passed unknown parameter" warning for profile fields: every chapter reads them
    all (:func:`bmd.study.config.from_parameters`) although its parameters cell names only ``profile``."""

    def filter(self, record) -> bool:
        import dataclasses


        message = record.getMessage()
        prefix = "Passed unknown parameter: "
        return not (message.startswith(prefix)
                    and message[len(prefix):] in {f.name for f in dataclasses.fields(Profile)})


def execute_chapters(parameters: dict, build_src: Path, source: Path | None = None,
                     console: progress.Console | None = None) -> dict[str, float]:
    """Execute every chapter notebook into ``build_src`` with papermill; returns seconds per chapter.

    With a ``console``, each chapter is a step of it and the lines that the chapter's code writes with
    :func:`bmd.infra.progress.note` (stages, training epochs) are printed under the chapter's name.
    """
    import papermill
    from traitlets.config import Config

    source = source or paths.book_source_dir()
    # Kernels talk over local sockets (IPC), not unencrypted TCP ports that any local user could reach.
    kernel_config = Config()
    kernel_config.KernelManager.transport = "ipc"
    timings: dict[str, float] = {}
    progress_file = build_src.parent / "progress.log"
    import logging

    quiet_fields = _ProfileFieldsAreKnown()
    logging.getLogger("papermill").addFilter(quiet_fields)
    previous = os.environ.get(progress.ENV)
    os.environ[progress.ENV] = str(progress_file)  # the kernels (and their subprocesses) inherit it
    try:
        for rel in chapter_notebooks(source):
            target = build_src / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if console is not None:
                console.begin(rel.with_suffix("").as_posix())
            start = time.perf_counter()
            try:
                with progress.Follower(progress_file, console.line if console else lambda line: None):
                    papermill.execute_notebook(
                        str(source / rel), str(target), parameters=parameters, kernel_name="python3",
                        progress_bar=False, cwd=str(target.parent), config=kernel_config,
                        kernel_manager_class=_kernel_manager_class(),
                    )
            except papermill.PapermillExecutionError as exc:
                if console is not None:
                    console.line(f"failed: {exc.ename}: {exc.evalue}")
                raise BookError(f"chapter {rel} failed: {exc.ename}: {exc.evalue}") from None
            _hide_injected_parameters(target)
            timings[str(rel)] = time.perf_counter() - start
            if console is not None:
                console.end()
    finally:
        logging.getLogger("papermill").removeFilter(quiet_fields)
        if previous is None:
            os.environ.pop(progress.ENV, None)
        else:
            os.environ[progress.ENV] = previous
    return timings


def book_config(repository: str | None = None) -> dict:
    """The Jupyter Book configuration; with ``repository`` (``owner/name`` on GitHub) it adds the
    repository button and Binder launch buttons (Binder builds ``environment.yml``).

    ``repository`` defaults to ``$GITHUB_REPOSITORY``, which GitHub Actions sets: the published book
    gets the buttons, a local build (no repository known) does not.
    """
    import os

    config = yaml.safe_load(paths.book_config_file().read_text())
    repository = repository or os.environ.get("GITHUB_REPOSITORY")
    if repository:
        config["repository"] = {"url": f"https://github.com/{repository}", "branch": "main", "path_to_book": "book"}
        config["launch_buttons"] = {"binderhub_url": "https://mybinder.org", "notebook_interface": "jupyterlab"}
        config.setdefault("html", {})["use_repository_button"] = True
    return config


def build_html(build_src: Path, out_root: Path) -> Path:
    """Build HTML from executed sources with Jupyter Book (warnings are errors); returns the html folder."""
    config_file = build_src / "_config.yml"
    config_file.write_text(yaml.safe_dump(book_config(), sort_keys=False))
    cmd = [
        str(Path(sys.executable).with_name("jupyter-book")), "build", str(build_src),
        "--config", str(config_file), "--path-output", str(out_root),
        "-W", "-n", "--keep-going",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        problems = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "WARNING" in ln or "ERROR" in ln]
        detail = "; ".join(problems[:5]) or proc.stdout[-500:]
        raise BookError(f"jupyter-book build failed: {detail}")
    return out_root / "_build" / "html"


BOOK_LOCK = ".book.lock"
"""The lock file (in ``<out>/_build``) a book build holds while it runs."""


def book_lock(root: Path, wait: bool = False, timeout: float | None = None):
    """The lock of the book build in ``root`` (:func:`bmd.infra.locks.hold_lock`).

    A second build on the same folder would delete the first one's working folder, so by default it is
    refused at once with :class:`BookError` ("another book build (pid N) is running in ROOT"), before
    anything is touched; with ``wait`` it waits for the first to finish.
    """
    return hold_lock(root / "_build" / BOOK_LOCK, f"the book in {root}", wait=wait, timeout=timeout,
                     error=BookError, busy=lambda pid: f"another book build (pid {pid or '?'}) is running in {root}")


def build_book(profile: str | Path = "quick", manifest: str | Path | None = None, seed: int | None = None,
               out: str | Path | None = None, quiet: bool = False,
               landmark_model: str | Path | None = None) -> Path:
    """Execute the chapters for a profile and build the book; returns the HTML folder.

    ``profile`` is a packaged name or the path of a profile YAML; every field of it is passed to every
    chapter, and the run folder is named by its ``profile`` field. ``manifest`` runs the study on a
    site's own data instead of the twin cohort; ``out`` is where the run folder, executed notebooks and
    HTML go (default: the repository root). ``landmark_model``: a landmark detector folder to use instead
    of training one (the profile's ``landmark_model`` field, passed to the chapters as an absolute path).
    Progress goes to stdout, one line per step and per stage (a bar as well on a terminal), and to
    ``<out>/_build/book.log``; ``quiet`` keeps only the log. A second build on the same ``out`` while one
    runs is refused at once (:func:`book_lock`, one line).

    Refused in one line before anything is written (:class:`BookError`, or the manifest's ManifestError): a
    bad manifest, a ``landmark_model`` that is not a usable detector, and a manifest without ground-truth
    landmarks for its train and val cases when no detector is given (nothing could place the regions).
    """

    start = time.perf_counter()
    given = None if landmark_model is None else str(landmark_model)
    cfg = _with_absolute_detector(load_profile(profile, seed=seed, landmark_model=given))
    if manifest is not None:

        load_manifest(manifest)  # a bad manifest is refused (ManifestError) before anything is written
        if cfg.landmark_model is None:  # the twin always has ground truth; a site's manifest may not
            try:
                check_landmark_source(cfg, load_cohort(cfg, manifest=manifest))
            except LandmarkSourceError as exc:
                raise BookError(str(exc)) from None
    root = paths.out_root(out)
    with book_lock(root):  # before anything in root is deleted or rewritten
        return _build_book(cfg, manifest, root, quiet, start)


def _with_absolute_detector(cfg: Profile) -> Profile:
    """``cfg`` with its ``landmark_model`` as an absolute path (the chapters run in another folder), once that
    folder is known to be a usable detector (else :class:`BookError`, one line naming it)."""
    if cfg.landmark_model is None:
        return cfg
    detector = Path(cfg.landmark_model).expanduser().resolve()
    try:
        read_detector_config(detector)
    except (OSError, ValueError) as exc:
        raise BookError(str(exc)) from None
    return dataclasses.replace(cfg, landmark_model=str(detector))


def _build_book(cfg: Profile, manifest: str | Path | None, root: Path, quiet: bool, start: float) -> Path:
    """:func:`build_book` once the folder's lock is held."""
    summary_file = summary.summary_path(cfg.profile, root)
    summary_file.unlink(missing_ok=True)  # every build writes its own summary from scratch
    build_src = root / "_build" / "src"
    if build_src.exists():
        shutil.rmtree(build_src)
    # Markdown pages, the toc and the bibliography travel with the executed notebooks.
    shutil.copytree(paths.book_source_dir(), build_src, ignore=shutil.ignore_patterns("*.ipynb", "_build"))
    parameters = {
        **cfg.as_dict(),  # every field, so that an edited profile YAML runs as edited
        "manifest": str(Path(manifest).resolve()) if manifest else None,
        "out": str(root),
    }
    log_file = root / "_build" / "book.log"
    log_file.unlink(missing_ok=True)
    steps = len(chapter_notebooks()) + 1
    console = progress.Console(steps, log_file, stream=open(os.devnull, "w") if quiet else None)  # noqa: SIM115
    try:
        chapters = execute_chapters(parameters, build_src, console=console)
        book_start = time.perf_counter()
        console.begin("html")
        html = build_html(build_src, root)
        console.end()
    except BaseException:
        console.close()
        raise
    summary.stamp(summary_file, cfg.profile, total_seconds=time.perf_counter() - start,
                  book_seconds=time.perf_counter() - book_start, chapter_seconds=chapters)
    console.close("finished")
    return html
