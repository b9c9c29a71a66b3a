"""What a changelog topic holds for a job (consumer.kafka.limits.changelog_room)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer.kafka.limits import (
    CHANGELOG_FRAMING_BYTES,
    ChangelogRoom,
    changelog_max_message_bytes,
    changelog_room,
)

MAX_JOB_BYTES = 16 << 20


class TestChangelogRoom:
    def test_a_changelog_this_service_sizes_limits_nothing(self) -> None:
        needed = changelog_max_message_bytes(MAX_JOB_BYTES)
        assert changelog_room(needed, MAX_JOB_BYTES, "g") is None
        assert changelog_room(needed * 2, MAX_JOB_BYTES, "g") is None

    def test_an_unknown_limit_limits_nothing(self) -> None:
        """No DescribeConfigs: the broker's refusal is then what tells (and holds)."""
        assert changelog_room(None, MAX_JOB_BYTES, "g") is None

    def test_a_smaller_changelog_holds_its_limit_less_the_framing_and_the_group_header(
        self,
    ) -> None:
        """The broker default (1,048,588 bytes): about 1 MB per job, not nothing."""
        room = changelog_room(1_048_588, MAX_JOB_BYTES, "group-7")
        assert room == 1_048_588 - CHANGELOG_FRAMING_BYTES - len("group-7")

    def test_a_changelog_too_small_for_the_framing_holds_no_job(self) -> None:
        assert changelog_room(100, MAX_JOB_BYTES, "g") == 0


class TestChangelogRoomLowered:
    def test_a_refusal_bounds_the_room_below_the_refused_size(self) -> None:
        room = ChangelogRoom(None)
        assert room.lower(10_000, None)
        assert room.bytes == 9_999

    def test_the_topics_configuration_decides_when_lower(self) -> None:
        room = ChangelogRoom(50_000)
        assert room.lower(10_000, 4_000)
        assert room.bytes == 4_000

    def test_a_refusal_at_or_above_the_room_changes_nothing(self) -> None:
        """A state held from before the topic was lowered: no event grew it."""
        room = ChangelogRoom(4_000)
        assert not room.lower(9_000, None)
        assert not room.lower(4_001, 5_000)
        assert room.bytes == 4_000

    @given(st.lists(st.tuples(st.integers(1, 10**7), st.none() | st.integers(0, 10**7))))
    def test_the_room_only_shrinks(self, refusals: list[tuple[int, int | None]]) -> None:
        room = ChangelogRoom(None)
        before: int | None = None
        for refused, described in refusals:
            shrank = room.lower(refused, described)
            assert room.bytes is not None
            assert room.bytes < refused
            if before is not None:
                assert room.bytes <= before
                assert shrank == (room.bytes < before)
            before = room.bytes
