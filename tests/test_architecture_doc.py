"""docs/architecture.md, "Where things are", lists every module of src/rollwise once, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "rollwise"


def table_entries() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    return [m.group(1) for m in re.finditer(r"^\| \**`([^`]+)`\**", section, re.MULTILINE)]


def tree_entries() -> set[str]:
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("store/migrations/"):
            found.add("store/migrations/")  # Alembic's environment and scripts: one line
        elif rel == "__init__.py":
            continue  # the root package holds only the version
        elif rel.endswith("/__init__.py"):
            found.add(rel.removesuffix("__init__.py"))  # a package's line
        else:
            found.add(rel)
    return found


def test_every_module_has_one_line_and_every_line_a_module() -> None:
    entries = table_entries()
    assert len(entries) == len(set(entries)), "a module is listed twice"
    assert set(entries) == tree_entries()
