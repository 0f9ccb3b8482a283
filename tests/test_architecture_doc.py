"""ARCHITECTURE.md's module table names every module of the package, and only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def table_rows(text: str) -> list[tuple[list[str], list[str]]]:
    """Each row of the module table (a line that starts with a backquoted name): the modules of
    its first cell, the names of its last."""
    rows = []
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = line.split("|")
            rows.append(
                (re.findall(r"`([a-z_0-9]+)`", cells[1]), re.findall(r"`([\w.]+)`", cells[-2]))
            )
    return rows


def table_modules(text: str) -> set[str]:
    """Every module the table's first cells name."""
    return {module for modules, _ in table_rows(text) for module in modules}


def defines(source: str, name: str) -> bool:
    """``source`` defines ``name``: a function, a class or an assignment (at any indent)."""
    word = re.escape(name)
    return (
        re.search(rf"^\s*(?:def {word}\(|class {word}\b|{word}\s*[:=])", source, re.M) is not None
    )


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


def test_the_tables_key_names_are_defined_in_their_rows_modules():
    """A name in a row's last cell is a function, class or constant of one of the row's modules
    (a subpackage: of one of its files), so a renamed or moved function does not stay in the
    table."""
    package = ROOT / "dreamtext"
    rows = table_rows((ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    assert len(rows) > 30
    stale = []
    for modules, names in rows:
        files = [package / f"{m}.py" for m in modules]
        files += [f for m in modules for f in sorted((package / m).glob("*.py"))]
        source = "\n".join(f.read_text(encoding="utf-8") for f in files if f.is_file())
        stale += [(modules, n) for n in names if not defines(source, n.split(".")[-1])]
    assert stale == []


def test_defines_finds_functions_classes_and_assignments_only():
    source = "def load(x):\n    pass\nclass Grid:\n    size: int = 3\nLIMIT = 4\nuse(load_all)\n"
    assert all(defines(source, n) for n in ("load", "Grid", "size", "LIMIT"))
    assert not any(defines(source, n) for n in ("load_all", "use", "Gri"))


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
