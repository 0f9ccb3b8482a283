"""ARCHITECTURE.md's module table names every module of the package, and only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def table_modules(text: str) -> set[str]:
    """The names in backquotes in the first cell of each row of the module table (rows that
    start with a backquoted name)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([a-z_0-9]+)`", line.split("|")[1]))
    return names


def package_modules() -> set[str]:
    """``dreamtext``'s modules and subpackages, the entry points left out."""
    package = ROOT / "dreamtext"
    modules = {p.stem for p in package.glob("*.py")} - {"__init__", "__main__"}
    return modules | {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}


def test_the_module_table_names_every_module_and_no_other():
    named = table_modules((ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    modules = package_modules()
    assert {"trainer", "view", "imageto3d"} <= modules  # the listing finds modules and packages
    assert sorted(modules - named) == [], "modules ARCHITECTURE.md's table does not name"
    assert sorted(named - modules) == [], "names in the table that are no module"


@pytest.mark.parametrize(
    ("row", "names"),
    [
        ("| `cli` | argument parsing | `main` |", {"cli"}),
        ("| `mesh`, `export` | the solid | `extract_mesh` |", {"mesh", "export"}),
        ("| module | what | names |", set()),
        ("text with `trainer` in it", set()),
    ],
)
def test_the_table_reader_takes_the_first_cells_names_only(row, names):
    assert table_modules(row) == names
