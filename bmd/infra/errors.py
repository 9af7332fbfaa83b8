"""Errors at the command-line boundary: one line each, naming the file, never a traceback."""

from __future__ import annotations

import argparse

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print ``<prog>: <message> (see <prog> --help)`` and exit with status 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: {one_line(message)} (see {self.prog} --help)\n")


def describe_error(exc: BaseException) -> str:
    """One line for a failure at the command-line boundary, naming the file where there is one.

    An ``OSError`` with a file name reads ``<file>: <reason>``; the package's own errors (``bmd.*``
    classes: manifest, bundle, profile, image, book, run-folder errors) already carry a one-line message
    naming the file; anything else is ``<class>: <message>``.
    """
    if isinstance(exc, OSError) and exc.filename is not None:
        where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else f"{exc.filename}"
        return one_line(f"{where}: {exc.strerror or type(exc).__name__}")
    message = one_line(str(exc))
    if type(exc).__module__.split(".")[0] == "bmd" and message:
        return message
    if isinstance(exc, OSError) and message:
        return message
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def one_line(text: str) -> str:
    """``text`` on one line: line breaks and runs of white space become single spaces."""
    return " ".join(str(text).split())
