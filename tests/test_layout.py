"""The package's layout rules that import-linter does not check."""

from __future__ import annotations

import ast
from pathlib import Path

import bmd

PACKAGE = Path(bmd.__file__).resolve().parent


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def private_imports_across_packages(root: Path = PACKAGE) -> list[str]:
    """``from bmd.a.b import _x`` in a module outside package ``bmd.a``, as ``file:line: statement``.

    A module's private names are its package's own business: another package that needs one is asking for a
    public name. Within one package (``bmd.a.c`` importing ``bmd.a.b._x``) it is allowed.
    """
    found = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        is_package = path.name == "__init__.py"
        own_package = module if is_package else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level or not (node.module or "").startswith("bmd"):
                continue
            source_package = node.module.rpartition(".")[0] or node.module
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            if private and not (own_package + ".").startswith(source_package + "."):
                found.append(f"{path.relative_to(root.parent)}:{node.lineno}: from {node.module} import "
                             f"{', '.join(private)}")
    return found


def test_no_module_imports_a_private_name_of_another_package():
    assert private_imports_across_packages() == []


def test_the_check_finds_a_private_import_across_packages(tmp_path):
    root = tmp_path / "bmd"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for folder in (root, root / "a", root / "b"):
        (folder / "__init__.py").write_text("")
    (root / "a" / "one.py").write_text("from bmd.a.two import _mine\nfrom bmd.b.three import public\n")
    (root / "b" / "four.py").write_text("import bmd\nfrom bmd.a.one import _theirs, fine\n")
    assert private_imports_across_packages(root) == ["bmd/b/four.py:2: from bmd.a.one import _theirs"]
