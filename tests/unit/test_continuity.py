"""The changelog's floor in the committed offsets' metadata, and the take's check of it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.errors import ChangelogReplaced, FatalError
from consumer.state.continuity import ChangelogFloor, broken_continuity, read_floor

#: Kafka's legal topic names: letters, digits, ``.``, ``_``, ``-``; at most 249 characters.
topic_names = st.text(alphabet=st.sampled_from("abcXYZ019._-"), min_size=1, max_size=249).filter(
    lambda name: name not in {".", ".."}
)


class TestFloorMetadata:
    @given(topic_names, st.integers(min_value=0, max_value=2**63 - 1))
    def test_a_floor_reads_back_as_written(self, changelog: str, end: int) -> None:
        floor = ChangelogFloor(changelog, end)
        assert read_floor(floor.metadata()) == floor

    @given(topic_names, st.integers(min_value=0, max_value=2**63 - 1))
    def test_the_metadata_fits_kafkas_default_limit(self, changelog: str, end: int) -> None:
        """``offset.metadata.max.bytes`` is 4,096 by default: a longer one is refused, and the
        transaction with it."""
        assert len(ChangelogFloor(changelog, end).metadata().encode()) <= 4_096

    @pytest.mark.parametrize(
        "metadata",
        [
            None,
            "",
            "checkpoint 7",
            "{not json",
            "[1, 2]",
            '{"changelog": "state", "end_at_least": 5}',  # no version: another program's
            '{"basicsync": 2, "changelog": "state", "end_at_least": 5}',
            '{"basicsync": 1, "changelog": 7, "end_at_least": 5}',
            '{"basicsync": 1, "changelog": "state", "end_at_least": "5"}',
            '{"basicsync": 1, "changelog": "state", "end_at_least": true}',
            '{"basicsync": 1, "changelog": "state"}',
        ],
    )
    def test_metadata_that_is_not_ours_carries_no_floor(self, metadata: str | None) -> None:
        """Offsets reset by ``kafka-consumer-groups.sh`` (no metadata), or committed by
        another program, are trusted as before: they say nothing of the changelog."""
        assert read_floor(metadata) is None

    def test_the_metadata_is_readable_json(self) -> None:
        """An operator reading the group's offsets sees what the floor says."""
        assert json.loads(ChangelogFloor("jobs-state", 1234).metadata()) == {
            "basicsync": 1,
            "changelog": "jobs-state",
            "end_at_least": 1234,
        }


class TestBrokenContinuity:
    def test_offsets_without_a_floor_are_trusted(self) -> None:
        assert broken_continuity("state", 0, [], 0) is None
        assert broken_continuity("state", 0, ["", None], 0) is None

    def test_an_end_at_or_above_the_floor_is_continuous(self) -> None:
        marked = ChangelogFloor("state", 100).metadata()
        assert broken_continuity("state", 3, [marked], 100) is None
        assert broken_continuity("state", 3, [marked], 5_000) is None

    def test_an_end_below_the_floor_is_a_replaced_changelog(self) -> None:
        """The end of a topic never decreases: below the floor, it is another topic (deleted
        and created again) or one that lost committed records."""
        marked = ChangelogFloor("state", 100).metadata()
        problem = broken_continuity("state", 3, [marked], 99)
        assert problem == (
            "changelog state partition 3 ends at offset 99, but the group's offsets were "
            "committed when it held at least 100: it was deleted and created again, or lost "
            "records"
        )

    def test_the_highest_floor_of_the_input_topics_counts(self) -> None:
        """Each input topic's offset of the partition carries a floor; one topic's offset may
        be older (no event on it since), so the highest is the one to meet."""
        older, newer = (ChangelogFloor("state", end).metadata() for end in (10, 80))
        assert broken_continuity("state", 0, [older, newer, ""], 50) is not None
        assert broken_continuity("state", 0, [older, newer, ""], 80) is None

    def test_offsets_committed_with_another_changelog_are_refused(self) -> None:
        """``BASICSYNC_TOPICS__STATE`` pointed at a new topic: even one that ends high enough
        does not hold the states those offsets account for."""
        marked = ChangelogFloor("old-state", 10).metadata()
        problem = broken_continuity("new-state", 2, [marked], 10_000)
        assert problem is not None
        assert "committed with the changelog old-state, not new-state" in problem


class TestChangelogReplaced:
    def test_it_stops_the_member_and_names_the_ways_out(self) -> None:
        error = ChangelogReplaced(["changelog state partition 0 ends at offset 0, but ..."])
        assert isinstance(error, FatalError)
        text = str(error)
        assert text.startswith("changelog state partition 0 ends at offset 0")
        assert "Nothing is restored or posted from it" in text
        assert "--reset-offsets --to-earliest" in text
        assert "docs/operations.md" in text
