"""The scheduler's packed source offsets (consumer.sync.offsets.PendingOffsets)."""

from __future__ import annotations

import sys

import pytest

from consumer.domain.results import SourceOffset
from consumer.sync.offsets import PendingOffsets


def offsets(*places: tuple[str, int, int]) -> list[SourceOffset]:
    return [SourceOffset(topic=t, partition=p, offset=o) for t, p, o in places]


class TestPendingOffsets:
    def test_kept_in_order_across_topics_and_partitions(self) -> None:
        given = offsets(("in-a", 0, 7), ("in-b", 2, 3), ("in-a", 0, 8), ("in-a", 1, 2**62))
        pending = PendingOffsets()
        pending.extend(given[:2])
        pending.extend(given[2:])
        assert len(pending) == 4
        assert pending[:] == given
        assert pending[1:3] == given[1:3]
        assert pending == given

    def test_a_reported_head_is_deleted_and_later_ones_stay(self) -> None:
        given = offsets(("in", 0, 1), ("in", 0, 2), ("in", 0, 3))
        pending = PendingOffsets(given)
        reported = len(pending) - 1
        head = pending[:reported]
        del pending[:reported]
        assert head == given[:2]
        assert pending[:] == given[2:]
        pending.clear()
        assert len(pending) == 0
        assert pending[:] == []

    def test_only_contiguous_slices_are_deleted(self) -> None:
        pending = PendingOffsets(offsets(("in", 0, 1), ("in", 0, 2)))
        with pytest.raises(ValueError, match="contiguous"):
            del pending[::2]

    def test_much_smaller_than_the_models(self) -> None:
        """What it is for: a dozen offsets per live job through a backlog."""
        given = offsets(*(("in", 0, 1000 + n) for n in range(13)))
        pending = PendingOffsets(given)
        assert sys.getsizeof(pending) + sys.getsizeof(pending._pairs) < 400
