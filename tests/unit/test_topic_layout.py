"""The input topics' partition count changed under a running member (consumer.kafka.admin)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer.errors import TopicLayoutError
from consumer.kafka.admin import changed_layout


class TestChangedLayout:
    def test_the_counts_it_started_with_are_no_change(self) -> None:
        assert changed_layout({"a": 4, "b": 4}, {0, 3}, 4) is None

    def test_a_count_not_known_yet_is_no_change(self) -> None:
        assert changed_layout({"a": None, "b": 4}, {1}, 4) is None

    def test_an_input_grown_is_named_with_its_count(self) -> None:
        changed = changed_layout({"a": 4, "b": 6}, {0, 1}, 4)
        assert isinstance(changed, TopicLayoutError)
        assert "b=6" in str(changed)
        assert "a=" not in str(changed)
        assert "had 4 partitions" in str(changed)

    def test_a_partition_beyond_the_start_count_is_a_change_the_metadata_has_not_seen(
        self,
    ) -> None:
        """The group leader's metadata may be newer than this member's."""
        changed = changed_layout({"a": 4}, {2, 4, 5}, 4)
        assert changed is not None
        assert "partition 4 assigned" in str(changed)

    @given(
        started=st.integers(1, 64),
        now=st.integers(1, 64),
        assigned=st.sets(st.integers(0, 63), max_size=8),
    )
    def test_no_change_exactly_when_counts_match_and_every_partition_is_below(
        self, started: int, now: int, assigned: set[int]
    ) -> None:
        unchanged = now == started and all(p < started for p in assigned)
        assert (changed_layout({"in": now}, assigned, started) is None) is unchanged
