"""Functions in ``consumer/`` are short enough to read as a table of contents.

A function longer than :data:`MAX_LINES` either gets split into named steps or says why it is
long in a comment starting ``# long:`` on its first body line (a declarative list, say).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 60

#: Long functions still in the code, by ``path:name``, with who shortens them. An entry whose
#: function got short (or moved) fails the test, so the list stays true.
ALLOWED: dict[str, str] = {}


def long_functions(source: str) -> list[tuple[str, int]]:
    """``(name, lines)`` of each function over the limit without a ``# long:`` comment."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        first_body = node.body[0].lineno
        header = lines[node.lineno - 1 : first_body]
        if length > MAX_LINES and not any("# long:" in line for line in header):
            found.append((node.name, length))
    return found


def _all_long() -> dict[str, int]:
    return {
        f"{path.relative_to(ROOT).as_posix()}:{name}": length
        for path in sorted((ROOT / "consumer").rglob("*.py"))
        for name, length in long_functions(path.read_text())
    }


class TestFunctionLength:
    def test_long_functions_are_found_unless_they_say_why(self) -> None:
        """A long function is reported; one whose first line says ``# long:`` is not."""
        body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES))
        assert long_functions(f"def f():\n{body}") == [("f", MAX_LINES + 1)]
        assert long_functions(f"def f():\n    # long: a table\n{body}") == []

    def test_no_function_in_consumer_is_too_long(self) -> None:
        """Every function over the limit is split, says why, or is allowed with an owner."""
        unexpected = {name: n for name, n in _all_long().items() if name not in ALLOWED}
        assert not unexpected, f"functions over {MAX_LINES} lines: {unexpected}"

    def test_every_allowed_function_is_still_long(self) -> None:
        """An allowed function that got short is removed from ALLOWED."""
        stale = sorted(set(ALLOWED) - set(_all_long()))
        assert not stale, f"no longer long, remove from ALLOWED: {stale}"
