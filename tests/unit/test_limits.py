"""What a changelog topic holds for a job (consumer.kafka.limits.changelog_room)."""

from __future__ import annotations

from consumer.kafka.limits import (
    CHANGELOG_FRAMING_BYTES,
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
