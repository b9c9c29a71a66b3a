"""Topic layouts that would lose job state (consumer.kafka.admin): input partitions added under
a running member, and a changelog that deletes states by age."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.errors import TopicLayoutError
from consumer.kafka.admin import changed_layout, changelog_policy_problem, input_policy_problem


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


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"cleanup.policy": "compact"}, None),
        ({"cleanup.policy": "compact", "retention.ms": "1000"}, None),  # compaction keeps all
        ({"cleanup.policy": "compact,delete", "retention.ms": "-1"}, None),
        ({"cleanup.policy": "delete,compact", "retention.ms": "-1"}, None),
        ({}, "cleanup.policy is 'delete'"),  # the broker's default
        ({"cleanup.policy": "delete", "retention.ms": "-1"}, "cleanup.policy is 'delete'"),
        ({"cleanup.policy": "compact,delete"}, "with retention.ms 604800000"),
        ({"cleanup.policy": "compact, delete", "retention.ms": "1"}, "with retention.ms 1"),
        ({"cleanup.policy": "compact,delete", "retention.ms": "-2"}, None),  # negative: none
        # retention by size deletes a partition's oldest segments, states and all
        (
            {"cleanup.policy": "compact,delete", "retention.ms": "-1", "retention.bytes": "1024"},
            "with retention.bytes 1024",
        ),
        ({"cleanup.policy": "compact", "retention.bytes": "1024"}, None),  # not applied
        ({"cleanup.policy": "compact,delete", "retention.ms": "-1", "retention.bytes": "-1"}, None),
    ],
)
def test_changelog_policy_problem(config: dict[str, str], problem: str | None) -> None:
    found = changelog_policy_problem(config)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found
        assert "set cleanup.policy=compact" in found


@pytest.mark.parametrize(
    ("config", "compacted"),
    [
        ({}, False),  # the broker's default: delete
        ({"cleanup.policy": "delete", "retention.ms": "-1"}, False),
        ({"cleanup.policy": "compact"}, True),
        ({"cleanup.policy": "compact,delete"}, True),
        ({"cleanup.policy": "delete, compact"}, True),
    ],
)
def test_input_policy_problem(config: dict[str, str], compacted: bool) -> None:
    """Any compaction of an input loses a job's earlier events unseen; deletion by age is
    noticed (``input_records_lost``) and allowed."""
    found = input_policy_problem(config)
    if not compacted:
        assert found is None
    else:
        assert found is not None
        assert f"cleanup.policy is {config['cleanup.policy']!r}" in found
        assert found.endswith("set cleanup.policy=delete")
