"""The test doubles stay independent of the consumer they check."""

from __future__ import annotations

import ast
from pathlib import Path

import consumer.testing

DOUBLES = Path(consumer.testing.__file__).parent


def _imported_modules(path: Path) -> list[str]:
    """Every module a file imports (absolute; relative imports resolved to ``consumer.*``)."""
    package = ".".join(path.relative_to(DOUBLES.parent.parent).with_suffix("").parts[:-1])
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.append(f"{base}.{node.module}" if node.module else base)
            elif node.module is not None:
                names.append(node.module)
    return names


class TestDoublesImportNothingOfTheConsumer:
    def test_each_double_imports_only_its_own_package_of_consumer(self) -> None:
        """A double imports no ``consumer.*`` module outside its own package, so it checks the
        consumer rather than sharing (and agreeing with) its models."""
        doubles = [p for p in DOUBLES.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
        assert doubles, "no test double packages found"
        offending = []
        for double in doubles:
            own = f"consumer.testing.{double.name}"
            for path in sorted(double.rglob("*.py")):
                for name in _imported_modules(path):
                    inside = name == own or name.startswith(own + ".")
                    if (name == "consumer" or name.startswith("consumer.")) and not inside:
                        offending.append(f"{path.relative_to(DOUBLES)}: {name}")
        assert offending == []

    def test_the_check_sees_consumer_imports(self) -> None:
        """The import collector finds absolute and relative imports (so the test above can
        fail)."""
        probe = DOUBLES / "workfloplus" / "server.py"
        names = _imported_modules(probe)
        assert "consumer.testing.workfloplus.api_routes" in names
