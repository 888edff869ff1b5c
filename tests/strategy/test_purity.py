"""The strategy engine is pure (DESIGN.md, STYLE.md): it imports only the standard library,
`rollwise.model` and itself, never reads the clock, sleeps, prints or opens files, and every module
opens with a docstring. Checked on the source, so it holds for code paths no test reaches."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import rollwise.strategy

PACKAGE = Path(rollwise.strategy.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "monotonic", "sleep", "open", "print", "input", "perf_counter"}
FORBIDDEN_STDLIB = {"asyncio", "os", "io", "subprocess", "socket", "time", "threading", "random", "pathlib", "shutil"}


def _imports(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_module_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree), f"{path.name} has no module docstring"
    for name in _imports(tree):
        top = name.split(".")[0]
        if name.startswith(("rollwise.model", "rollwise.strategy")) or top == "__future__":
            continue
        assert top in sys.stdlib_module_names, f"{path.name} imports {name}"
        assert top not in FORBIDDEN_STDLIB, f"{path.name} imports {name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            called = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            assert called not in FORBIDDEN_CALLS, f"{path.name}:{node.lineno} calls {called}()"
