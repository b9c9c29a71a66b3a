"""The changelog's floor in the committed offsets' metadata, and the take's check of it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.errors import ChangelogReplaced, FatalError
from consumer.state.continuity import (
    ChangelogBounds,
    ChangelogFloor,
    broken_continuity,
    read_floor,
)

#: Kafka's legal topic names: letters, digits, ``.``, ``_``, ``-``; at most 249 characters.
topic_names = st.text(alphabet=st.sampled_from("abcXYZ019._-"), min_size=1, max_size=249).filter(
    lambda name: name not in {".", ".."}
)


#: Kafka offsets: 0 to the largest signed 64-bit integer.
offsets = st.integers(min_value=0, max_value=2**63 - 1)


class TestFloorMetadata:
    @given(
        topic_names,
        offsets,
        st.booleans(),
        st.none() | offsets,
    )
    def test_a_floor_reads_back_as_written(
        self, changelog: str, end: int, replaced: bool, start: int | None
    ) -> None:
        floor = ChangelogFloor(changelog, end, replaced, start)
        assert read_floor(floor.metadata()) == floor

    def test_the_metadata_fits_kafkas_default_limit(self) -> None:
        """``offset.metadata.max.bytes`` is 4,096 by default: a longer one is refused, and the
        transaction with it. The longest: a 249-character name, every field at its widest
        (docs/operations.md quotes this figure)."""
        widest = ChangelogFloor("x" * 249, 2**63 - 1, True, 2**63 - 1).metadata()
        assert len(widest.encode()) == 366

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
        assert json.loads(ChangelogFloor("s", 9, start_at_most=4).metadata())["start_at_most"] == 4

    @pytest.mark.parametrize("start", ['"4"', "true", "null", "4.5"])
    def test_a_start_that_is_not_an_offset_is_not_known(self, start: str) -> None:
        """The floor still counts; only the start is unknown, so no deletion is inferred."""
        metadata = (
            f'{{"basicsync": 1, "changelog": "s", "end_at_least": 9, "start_at_most": {start}}}'
        )
        assert read_floor(metadata) == ChangelogFloor("s", 9)


class TestBrokenContinuity:
    def test_offsets_without_a_floor_are_trusted(self) -> None:
        assert broken_continuity("state", 0, [], ChangelogBounds(0, 0)) is None
        assert broken_continuity("state", 0, ["", None], ChangelogBounds(0, 0)) is None

    def test_an_end_at_or_above_the_floor_is_continuous(self) -> None:
        marked = ChangelogFloor("state", 100).metadata()
        assert broken_continuity("state", 3, [marked], ChangelogBounds(0, 100)) is None
        assert broken_continuity("state", 3, [marked], ChangelogBounds(0, 5_000)) is None

    def test_an_end_below_the_floor_is_a_replaced_changelog(self) -> None:
        """The end of a topic never decreases: below the floor, it is another topic (deleted
        and created again) or one that lost committed records."""
        marked = ChangelogFloor("state", 100).metadata()
        problem = broken_continuity("state", 3, [marked], ChangelogBounds(0, 99))
        assert problem == (
            "changelog state partition 3 ends at offset 99, but the group's offsets were "
            "committed when it held at least 100: it was deleted and created again, or lost "
            "records"
        )

    def test_the_highest_floor_of_the_input_topics_counts(self) -> None:
        """Each input topic's offset of the partition carries a floor; one topic's offset may
        be older (no event on it since), so the highest is the one to meet."""
        older, newer = (ChangelogFloor("state", end).metadata() for end in (10, 80))
        assert broken_continuity("state", 0, [older, newer, ""], ChangelogBounds(0, 50)) is not None
        assert broken_continuity("state", 0, [older, newer, ""], ChangelogBounds(0, 80)) is None

    def test_offsets_committed_with_another_changelog_are_refused(self) -> None:
        """``BASICSYNC_TOPICS__STATE`` pointed at a new topic: even one that ends high enough
        does not hold the states those offsets account for."""
        marked = ChangelogFloor("old-state", 10).metadata()
        problem = broken_continuity("new-state", 2, [marked], ChangelogBounds(0, 10_000))
        assert problem is not None
        assert "committed with the changelog old-state, not new-state" in problem


class TestRecordsDeleted:
    def test_a_start_above_the_one_the_offsets_were_committed_with_is_refused(self) -> None:
        """Records deleted from the changelog's head leave the end as it was; only the start
        says that the states below it are gone."""
        marked = ChangelogFloor("state", 100, start_at_most=0).metadata()
        problem = broken_continuity("state", 1, [marked], ChangelogBounds(40, 100))
        assert problem == (
            "changelog state partition 1 starts at offset 40, but the group's offsets were "
            "committed when it started at 0: its records below 40 were deleted (by "
            "kafka-delete-records.sh, the Admin API's deleteRecords or retention; compaction "
            "never moves the start), and the states they held are gone"
        )

    def test_a_start_at_or_below_it_is_continuous(self) -> None:
        """A changelog whose records were deleted before the member took it: the start it
        took with is the one to keep."""
        marked = ChangelogFloor("state", 100, start_at_most=40).metadata()
        assert broken_continuity("state", 1, [marked], ChangelogBounds(40, 100)) is None
        assert broken_continuity("state", 1, [marked], ChangelogBounds(0, 100)) is None

    def test_the_highest_start_of_the_input_topics_counts(self) -> None:
        """One input topic's offset may have been committed before the operator accepted a
        deletion (and the member took again at the new start): the latest start known wins."""
        older = ChangelogFloor("state", 10, start_at_most=0).metadata()
        newer = ChangelogFloor("state", 80, start_at_most=40).metadata()
        assert broken_continuity("state", 0, [older, newer], ChangelogBounds(40, 80)) is None
        assert broken_continuity("state", 0, [older, newer], ChangelogBounds(41, 80)) is not None

    def test_offsets_that_carry_no_start_say_nothing_of_one(self) -> None:
        """Offsets committed by an older version, or reset: trusted as before."""
        marked = ChangelogFloor("state", 100).metadata()
        assert broken_continuity("state", 0, [marked, ""], ChangelogBounds(90, 100)) is None


class TestChangelogReplaced:
    def test_it_stops_the_member_and_names_the_ways_out(self) -> None:
        error = ChangelogReplaced(["changelog state partition 0 ends at offset 0, but ..."])
        assert isinstance(error, FatalError)
        text = str(error)
        assert text.startswith("changelog state partition 0 ends at offset 0")
        assert "Nothing is restored or posted from it" in text
        assert "--reset-offsets --to-earliest" in text
        assert "docs/operations.md" in text
