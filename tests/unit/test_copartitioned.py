"""The group's assignor (``consumer.kafka.copartitioned``): one member per partition number on
every topic, also while the members' topic lists differ."""

from __future__ import annotations

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from hypothesis import given
from hypothesis import strategies as st

from consumer.kafka.copartitioned import (
    CoPartitionedAssignor,
    copartitioned_assignment,
    number_owners,
)

MEMBERS = st.sets(st.from_regex(r"m-[a-f0-9]{4}", fullmatch=True), min_size=1, max_size=6)
TOPICS = st.sets(st.sampled_from(["a", "b", "c", "d"]), min_size=1)


class _Cluster(ClusterMetadata):  # type: ignore[misc]
    """Cluster metadata that knows each topic's partition numbers, nothing else."""

    def __init__(self, partitions: dict[str, int]) -> None:
        super().__init__()
        self._counts = partitions

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        count = self._counts.get(topic)
        return set(range(count)) if count is not None else None


def _assign(
    assignor: type[CoPartitionedAssignor] | type[RangePartitionAssignor],
    subscriptions: dict[str, set[str]],
    counts: dict[str, int],
) -> dict[str, dict[str, list[int]]]:
    members = {
        member: ConsumerProtocolMemberMetadata(0, sorted(topics), b"")
        for member, topics in subscriptions.items()
    }
    result = assignor.assign(_Cluster(counts), members)
    return {  # range names a topic with no partition for a member: the same as not naming it
        member: {topic: list(numbers) for topic, numbers in assignment.assignment if numbers}
        for member, assignment in result.items()
    }


class TestNumberOwners:
    def test_the_first_members_take_one_more(self) -> None:
        assert number_owners(["b", "a"], 5) == {0: "a", 1: "a", 2: "a", 3: "b", 4: "b"}

    def test_more_members_than_partitions_leave_some_idle(self) -> None:
        assert number_owners(["c", "a", "b"], 2) == {0: "a", 1: "b"}

    def test_no_member_owns_nothing(self) -> None:
        assert number_owners([], 4) == {}


class TestAssignment:
    @given(members=MEMBERS, topics=TOPICS, count=st.integers(1, 12))
    def test_with_the_same_subscriptions_it_is_the_range_assignors_layout(
        self, members: set[str], topics: set[str], count: int
    ) -> None:
        """A group that moves from range to this assignor keeps every partition where it is."""
        subscriptions = {member: set(topics) for member in members}
        counts = {topic: count for topic in topics}
        ours = _assign(CoPartitionedAssignor, subscriptions, counts)
        theirs = _assign(RangePartitionAssignor, subscriptions, counts)
        assert ours == theirs

    @given(
        subscriptions=st.dictionaries(
            st.from_regex(r"m-[a-f0-9]{4}", fullmatch=True), TOPICS, min_size=1, max_size=6
        ),
        count=st.integers(1, 12),
    )
    def test_a_partition_number_belongs_to_one_member_whatever_the_subscriptions(
        self, subscriptions: dict[str, set[str]], count: int
    ) -> None:
        """While members disagree on the topics (a new one seen by some), partition ``p`` of
        every topic is still read by one member at most, and only by a subscriber."""
        counts = {topic: count for topics in subscriptions.values() for topic in topics}
        assignment = _assign(CoPartitionedAssignor, subscriptions, counts)
        owner_of: dict[int, str] = {}
        for member, topics in assignment.items():
            for topic, numbers in topics.items():
                assert topic in subscriptions[member]
                for number in numbers:
                    assert owner_of.setdefault(number, member) == member

    def test_the_range_assignor_splits_a_topic_only_some_members_read(self) -> None:
        """Why this assignor exists: under range, B's partition 3 of the new topic goes to A."""
        subscriptions = {"m-a": {"old", "new"}, "m-b": {"old"}}
        counts = {"old": 4, "new": 4}
        theirs = _assign(RangePartitionAssignor, subscriptions, counts)
        assert theirs["m-a"] == {"new": [0, 1, 2, 3], "old": [0, 1]}
        ours = _assign(CoPartitionedAssignor, subscriptions, counts)
        assert ours == {"m-a": {"new": [0, 1], "old": [0, 1]}, "m-b": {"old": [2, 3]}}

    def test_a_topic_without_metadata_is_left_out(self) -> None:
        assignment = copartitioned_assignment({"m": {"a", "b"}}, {"a": range(2)})
        assert assignment == {"m": {"a": [0, 1]}}
