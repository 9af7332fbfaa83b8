"""A small Sphinx extension for the book's HTML: each script once, and a default colour mode.

Sphinx 7 (required by Jupyter Book 1.x) can list an extension's inline script twice
(sphinx-doc/sphinx#13402, fixed in Sphinx 8.2); the second copy of sphinx-thebe's ``const``
declarations then fails in the browser. Dropping exact duplicates keeps every page free of console
errors.
"""

from __future__ import annotations


def _unique_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    unique = []
    for script in scripts:
        # the copies differ in bookkeeping only (filename None vs ""): compare what the page shows
        key = (str(getattr(script, "filename", script) or ""),
               tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app) -> dict:
    """Register the page hook (late, after other extensions added their scripts)."""
    app.connect("html-page-context", _unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
