"""The group's partition assignor: each partition number belongs to one member on every topic.

A member keeps the state of partition ``p``'s jobs, so it must read partition ``p`` of every
input topic and nobody else any of them (docs/contract.md §3). Kafka's range assignor gives
that only while every member subscribes to the same topics: it lays out each topic over the
members subscribed to *it*. While the members' lists differ (a rolling deploy that adds an
input topic, or a topic pattern a member has matched before the others), a topic only some
subscribe to is split among those alone, and its partition ``p`` lands on a member that does
not own ``p`` on the other topics: two members would each assemble and post part of a job.

This assignor lays out the partition numbers once, over all members in the range assignor's
order, and gives each member those numbers on the topics it subscribes to. A topic partition
whose number's member does not subscribe to its topic is left unassigned until that member
does (it rejoins when it sees the topic). With the same subscriptions everywhere the result
is the range assignor's, so a group moving from one to the other keeps its layout. Members
offer this one alone (``consumer.kafka.source``; aiokafka 0.14 sends one JoinGroup per
offered assignor, which keeps two members joining together rebalancing): a group whose
members offer no common assignor refuses the newcomer, so members of a version that offered
only range must all be stopped before this one starts (docs/operations.md, "Upgrading").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)


def number_owners(members: Iterable[str], partition_count: int) -> dict[int, str]:
    """Which member owns each partition number: the range assignor's layout of one topic
    (members sorted, the first ``count % members`` take one more)."""
    ordered = sorted(members)
    if not ordered:
        return {}
    each, extra = divmod(partition_count, len(ordered))
    owners: dict[int, str] = {}
    start = 0
    for index, member in enumerate(ordered):
        length = each + (1 if index < extra else 0)
        owners.update({number: member for number in range(start, start + length)})
        start += length
    return owners


def copartitioned_assignment(
    subscriptions: Mapping[str, Iterable[str]], partitions: Mapping[str, Iterable[int]]
) -> dict[str, dict[str, list[int]]]:
    """``member -> topic -> partition numbers`` for the members' ``subscriptions`` and each
    known topic's ``partitions`` (a topic without metadata is left out)."""
    subscribed = {member: set(topics) for member, topics in subscriptions.items()}
    count = max((len(list(p)) for p in partitions.values()), default=0)
    owners = number_owners(subscribed, count)
    assignment: dict[str, dict[str, list[int]]] = {member: {} for member in subscribed}
    for topic, numbers in sorted(partitions.items()):
        for number in sorted(numbers):
            member = owners.get(number)
            if member is not None and topic in subscribed[member]:
                assignment[member].setdefault(topic, []).append(number)
    return assignment


class CoPartitionedAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """aiokafka's assignor interface over :func:`copartitioned_assignment`."""

    name = "basicsync-copartitioned"
    version = 0

    @classmethod
    def assign(
        cls,
        cluster: ClusterMetadata,
        members: Mapping[str, ConsumerProtocolMemberMetadata],
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        topics = {topic for metadata in members.values() for topic in metadata.subscription}
        partitions = {
            topic: found
            for topic in topics
            if (found := cluster.partitions_for_topic(topic)) is not None
        }
        assignment = copartitioned_assignment(
            {member: metadata.subscription for member, metadata in members.items()}, partitions
        )
        return {
            member: ConsumerProtocolMemberAssignment(
                cls.version, sorted(assignment[member].items()), b""
            )
            for member in members
        }

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(cls.version, list(topics), b"")

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        pass
