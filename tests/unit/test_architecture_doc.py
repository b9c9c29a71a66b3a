"""docs/architecture.md stays true to the code: every file it names exists, and so does every
``name`` it gives as a step of a file."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
#: ``pipeline.py`` or ``state/checkpoint.py``, as the page names files (relative to consumer/)
_FILE = re.compile(r"\b((?:[a-z_]+/)?[a-z_]+\.py)\b")
#: "`file.py` (`Name.method`, `other`)": the names given for a file's step
_STEP = re.compile(r"`?((?:[a-z_]+/)?[a-z_]+\.py)`? \(([^)]*)\)")


def _defined(path: Path) -> set[str]:
    """Every class, function and method name in a module, and ``Class.method`` for methods."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            names.add(node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    names |= {item.name, f"{node.name}.{item.name}"}
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
    return names


class TestArchitectureDoc:
    def test_it_is_linked_from_the_readme(self) -> None:
        """A newcomer finds the page from the README."""
        assert "(docs/architecture.md)" in (ROOT / "README.md").read_text()

    def test_every_file_it_names_exists(self) -> None:
        """Each ``*.py`` named is a file of ``consumer/`` or ``tests/`` (the tree names files
        by their folder's line, so a name may be just the file's)."""
        files = {
            path.relative_to(ROOT).as_posix()
            for folder in ("consumer", "tests")
            for path in (ROOT / folder).rglob("*.py")
        }
        missing = sorted(
            name
            for name in set(_FILE.findall(DOC.read_text()))
            if not any(file == name or file.endswith(f"/{name}") for file in files)
        )
        assert not missing, f"docs/architecture.md names files that do not exist: {missing}"

    def test_every_step_it_names_is_defined_in_its_file(self) -> None:
        """``file.py (`name`, ...)``: each backticked code name is defined in that file."""
        wrong = []
        for file, inside in _STEP.findall(DOC.read_text()):
            path = ROOT / "consumer" / file
            if not path.exists():
                continue
            defined = _defined(path)
            for name in re.findall(r"`([A-Za-z_][A-Za-z_.]*)`", inside):
                if name not in defined and not name.startswith("BASICSYNC_"):
                    wrong.append(f"{file}: {name}")
        assert not wrong, f"docs/architecture.md names steps the code does not have: {wrong}"
