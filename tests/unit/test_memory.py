"""The memory guard of the restore (consumer.state.memory): which limit it checks, and when it
refuses. The restore that calls it runs against the broker in tests/integration/test_memory.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.errors import MemoryExhausted
from consumer.state.memory import MemoryGuard, memory_limit_bytes, resident_bytes


class TestLimit:
    def test_the_setting_wins_over_the_cgroup(self, tmp_path: Path) -> None:
        cgroup = tmp_path / "memory.max"
        cgroup.write_text("536870912\n")
        assert memory_limit_bytes(256, (cgroup,)) == 256 * 2**20

    def test_cgroup_v2_limit_is_read(self, tmp_path: Path) -> None:
        cgroup = tmp_path / "memory.max"
        cgroup.write_text("536870912\n")
        assert memory_limit_bytes(None, (cgroup,)) == 536_870_912

    @pytest.mark.parametrize("text", ["max\n", "9223372036854771712\n"])
    def test_no_limit_in_the_cgroup_means_none(self, tmp_path: Path, text: str) -> None:
        """cgroup v2 writes ``max``, v1 a number near 2**63: neither is a limit."""
        cgroup = tmp_path / "memory.max"
        cgroup.write_text(text)
        assert memory_limit_bytes(None, (cgroup,)) is None

    def test_the_first_cgroup_file_found_decides(self, tmp_path: Path) -> None:
        v2, v1 = tmp_path / "memory.max", tmp_path / "limit_in_bytes"
        v2.write_text("max\n")
        v1.write_text("1048576\n")
        assert memory_limit_bytes(None, (tmp_path / "absent", v2, v1)) is None
        assert memory_limit_bytes(None, (tmp_path / "absent", v1, v2)) == 1_048_576

    def test_outside_a_container_nothing_is_known(self, tmp_path: Path) -> None:
        assert memory_limit_bytes(None, (tmp_path / "absent",)) is None

    def test_resident_memory_is_read_on_linux(self) -> None:
        used = resident_bytes()
        assert used is not None
        assert used > 10 * 2**20


class TestGuard:
    def test_refuses_past_the_share_of_the_limit_and_names_both(self) -> None:
        guard = MemoryGuard(1000 * 2**20, 0.85, resident=lambda: 851 * 2**20)
        with pytest.raises(MemoryExhausted) as raised:
            guard.check()
        assert "851 MiB" in str(raised.value)
        assert "85%" in str(raised.value)
        assert "1000 MiB" in str(raised.value)
        assert not raised.value.retriable

    def test_below_the_share_passes(self) -> None:
        MemoryGuard(1000 * 2**20, 0.85, resident=lambda: 849 * 2**20).check()

    def test_without_a_limit_or_a_reading_nothing_is_checked(self) -> None:
        MemoryGuard(None, 0.85, resident=lambda: 1 << 40).check()
        MemoryGuard(1 << 20, 0.85, resident=lambda: None).check()
