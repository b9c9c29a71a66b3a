"""Are the input topics' keys where the Java default partitioner puts them? A sample says.

Partition counts can be compared from metadata, but not the partitioner producers use: a topic
written with another one (librdkafka's default, a custom partitioner) puts a job's events on a
different partition number than the other topics do, and two members then each hold part of the
job. ``basicsync check`` reads the newest records of every input partition and counts the keys
that murmur2 would have put elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from consumer.errors import TopicLayoutError
from consumer.kafka.partitioning import hashes_to
from consumer.kafka.starting import start_client
from consumer.state.continuity import WRITER_HEADER

#: Changelog records sampled per partition at start: after partitions were added, about half
#: of all keys (or more) sit where the new count would not put them, so a few dozen show it.
CHANGELOG_SAMPLE = 20


@dataclass(frozen=True)
class Placement:
    """Sampled keys of one input topic, and how many are not on their murmur2 partition."""

    topic: str
    sampled: int
    misplaced: int
    #: the groups the sampled records name as their writer (changelog records name one:
    #: ``consumer.state.continuity``); empty for other topics
    writers: frozenset[str] = frozenset()


async def sample_placement(
    consumer_factory: Callable[..., AIOKafkaConsumer],
    topic_partitions: dict[str, int],
    *,
    per_partition: int = 50,
    timeout_ms: int = 2_000,
) -> list[Placement]:
    """Read the newest ``per_partition`` records of each partition of each topic."""
    consumer = consumer_factory(enable_auto_commit=False, group_id=None)
    try:
        # Inside: a start cancelled by a stop must close the consumer too.
        await start_client(consumer.start())
        tps = [TopicPartition(t, p) for t, count in topic_partitions.items() for p in range(count)]
        # Before the assignment, which long-polls a partition read to its end (design notes §8).
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        consumer.assign(tps)
        wanted = {}
        for tp in tps:
            start = max(ends[tp] - per_partition, starts[tp])
            if start < ends[tp]:
                consumer.seek(tp, start)
                wanted[tp] = ends[tp]
        sampled = {topic: 0 for topic in topic_partitions}
        misplaced = {topic: 0 for topic in topic_partitions}
        writers: dict[str, set[str]] = {topic: set() for topic in topic_partitions}
        while wanted:
            batch = await consumer.getmany(*wanted, timeout_ms=timeout_ms)
            if not batch:
                break
            for tp, messages in batch.items():
                for message in messages:
                    if message.key is None:
                        continue
                    sampled[tp.topic] += 1
                    writers[tp.topic].update(
                        value.decode(errors="replace")
                        for name, value in message.headers
                        if name == WRITER_HEADER and value is not None
                    )
                    count = topic_partitions[tp.topic]
                    if hashes_to(message.key, count) != tp.partition:
                        misplaced[tp.topic] += 1
                if await consumer.position(tp) >= wanted[tp]:
                    del wanted[tp]
        return [
            Placement(t, sampled[t], misplaced[t], frozenset(writers[t])) for t in topic_partitions
        ]
    finally:
        await consumer.stop()


async def check_changelog_placement(
    consumer_factory: Callable[..., AIOKafkaConsumer], changelog: str, partitions: int
) -> None:
    """Raise ``TopicLayoutError`` when the changelog's newest keys are not on the partitions
    the inputs' ``partitions`` put them on now.

    The start compares partition counts only: grown together while the consumer was stopped,
    input and changelog agree again, but the state already written sits on the partitions the
    old count chose. A member would then read a job's next events on a partition that does
    not hold its state, and post the job from those events alone over what WorkfloPlus holds.
    """
    [placement] = await sample_placement(
        consumer_factory, {changelog: partitions}, per_partition=CHANGELOG_SAMPLE
    )
    misplaced = misplaced_state(placement, partitions)
    if misplaced is not None:
        raise TopicLayoutError(misplaced)


def misplaced_state(placement: Placement, partitions: int) -> str | None:
    """What is wrong with a changelog sample whose keys are not where the inputs'
    ``partitions`` put them, or None when every key is (``run`` and ``check`` say it alike)."""
    if not placement.misplaced:
        return None
    return (
        f"the changelog {placement.topic} holds jobs on partitions its {partitions} partitions "
        f"would not put them on ({placement.misplaced} of {placement.sampled} keys sampled): "
        "partitions were added after the state was written, so a job's events would land "
        'where its state is not; see docs/operations.md, "Changing the partition count"'
    )
