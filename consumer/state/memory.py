"""How much memory the process has and may use: the guard that stops a restore in time.

A member holds the state of every job of its partitions in memory, so a pod whose partitions
hold more than its memory limit would be killed by the kernel while restoring, restarted,
assigned the same partitions and killed again, saying nothing. The guard watches resident
memory while a restore reads and raises :class:`~consumer.errors.MemoryExhausted` once it passes
a share of the limit, which the pipeline reports (docs/operations.md "Memory").

The limit is the setting, else the cgroup's (v2 ``memory.max``, v1
``memory.limit_in_bytes``); without either nothing is checked.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from consumer.errors import MemoryExhausted

_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)
#: cgroup v1 writes "no limit" as a number near 2**63.
_UNLIMITED = 1 << 60


def memory_limit_bytes(
    configured_mb: int | None, files: tuple[Path, ...] = _CGROUP_LIMITS
) -> int | None:
    """The setting in bytes, else the cgroup's limit, else None (no limit known)."""
    if configured_mb is not None:
        return configured_mb * 2**20
    for path in files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < _UNLIMITED:
            return int(text)
        return None  # "max", or v1's "unlimited": the first file found decides
    return None


def resident_bytes() -> int | None:
    """Resident set size of this process (Linux ``/proc/self/statm``), None elsewhere."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


class MemoryGuard:
    """Raises :class:`MemoryExhausted` when resident memory passes ``share`` of ``limit``."""

    def __init__(
        self,
        limit_bytes: int | None,
        share: float,
        resident: Callable[[], int | None] = resident_bytes,
    ) -> None:
        self.limit_bytes = limit_bytes
        self.share = share
        self._resident = resident

    def check(self) -> None:
        if self.limit_bytes is None:
            return
        used = self._resident()
        if used is not None and used > self.limit_bytes * self.share:
            raise MemoryExhausted(used, self.limit_bytes, self.share)
