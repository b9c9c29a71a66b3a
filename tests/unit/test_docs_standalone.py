"""The repository's docs and code point only into the repository.

Users of this repository have the README, ``docs/`` and the code; a reference to a design brief
or a note kept elsewhere is a dead end for them. The contract lives in ``docs/contract.md``,
and the decisions behind the code in ``docs/design-notes.md``: cite those instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEXT_SUFFIXES = {".md", ".py", ".json", ".yaml", ".yml", ".txt", ".toml"}

#: Phrases that point outside the repository, each with what to cite instead.
OUTSIDE = {
    re.compile(r"shared/"): "a path outside the repository",
    re.compile(r"DESIGN\.md"): "a design brief users do not have",
    re.compile(r"(?i)\bdesign(?:'s)? (?:section|promise|brief)"): "the design brief",
    re.compile(r"(?i)\bdesign \d"): "a section of the design brief",
    re.compile(r"(?i)\bthe design(?:'s)?\b(?![- ](?:notes|decisions))"): "the design brief",
    re.compile(r"(?i)\bissue notes?\b"): "notes kept in an issue tracker",
}


def _files() -> list[str]:
    found = [ROOT / "README.md"]
    for folder in ("docs", "consumer"):
        found.extend(
            path
            for path in (ROOT / folder).rglob("*")
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts
        )
    return sorted(path.relative_to(ROOT).as_posix() for path in found)


def outside_references(text: str) -> list[str]:
    """``line: phrase (what it points to)`` for each reference outside the repository."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for pattern, what in OUTSIDE.items():
            match = pattern.search(line)
            if match:
                found.append(f"{number}: {match.group(0)!r} ({what})")
    return found


class TestOutsideReferences:
    def test_the_patterns_catch_what_they_are_for(self) -> None:
        """Each form of citing the brief is caught; citing docs/ in the repository is not."""
        cited = [
            "the contract is in the design brief (`shared/DESIGN.md`)",
            "Classify a gateway response per DESIGN section 5",
            "consumption pauses (DESIGN promise 6)",
            "becomes a failure record (design 1.4)",
            "keeps the design's ordering promises",
            "see the issue notes for the profile",
        ]
        for line in cited:
            assert outside_references(line), line
        fine = [
            "the outcome table of docs/contract.md §7",
            "see [design-notes.md](design-notes.md) for the design decisions",
            "the design notes record why",
        ]
        for line in fine:
            assert not outside_references(line), line

    def test_there_are_files_to_check(self) -> None:
        """The scan covers README.md, docs/ and consumer/, and the contract exists."""
        files = _files()
        assert "README.md" in files
        assert "docs/contract.md" in files
        assert any(name.startswith("consumer/") for name in files)

    @pytest.mark.parametrize("name", _files())
    def test_points_only_into_the_repository(self, name: str) -> None:
        """README.md, docs/ and consumer/ cite nothing outside the repository (a design brief,
        a shared folder, notes in an issue): what users need is in docs/contract.md."""
        text = (ROOT / name).read_text(encoding="utf-8", errors="replace")
        assert outside_references(text) == [], f"{name} points outside the repository"
