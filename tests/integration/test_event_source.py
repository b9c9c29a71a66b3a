"""The input side (consumer.kafka.source.EventSource) against the real broker: how far behind.

``behind`` drives catch-up mode. It must never report a backlog smaller than it is: a partition
assigned but not fetched yet, or sought and not read since, is unknown, not zero.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from structlog.testing import capture_logs

from consumer.kafka.source import EventSource
from tests.fixtures.kafka import MakeTopic
from tests.integration.harness import delete_records

pytestmark = pytest.mark.integration

PER_PARTITION = (400, 30, 0)


class Owner:
    def __init__(self) -> None:
        self.assigned: asyncio.Event = asyncio.Event()

    async def partitions_revoked(self, partitions: set[int]) -> None:
        pass

    async def partitions_assigned(self, partitions: set[int]) -> None:
        self.assigned.set()


async def _backlog(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for partition, count in enumerate(PER_PARTITION):
            for n in range(count):
                await producer.send(topic, b"x" * 100, key=b"%d" % n, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


def _source(
    bootstrap: str, topic: str, group: str, lost: list[tuple[str, int]] | None = None
) -> EventSource:
    def factory(**extra: Any) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, max_poll_records=50, **extra
        )

    def records_lost(topic: str, records: int) -> None:
        (lost if lost is not None else []).append((topic, records))

    return EventSource(factory, [topic], records_lost)


class TestBehind:
    async def test_never_reports_less_than_the_backlog_left(
        self, kafka_bootstrap: str, make_topic: MakeTopic
    ) -> None:
        """Fetching a backlog 50 records at a time from a fresh group: each reading is either
        unknown or exactly what is left, down to zero (an empty partition included)."""
        topic = await make_topic("behind", partitions=len(PER_PARTITION))
        await _backlog(kafka_bootstrap, topic)
        source = _source(kafka_bootstrap, topic, f"behind-{uuid.uuid4().hex[:8]}")
        owner = Owner()
        await source.start(owner)
        try:
            await asyncio.wait_for(owner.assigned.wait(), 30)
            assert source.behind() is None  # nothing fetched yet
            left, readings = sum(PER_PARTITION), []
            async with asyncio.timeout(30):
                while left or source.behind() != 0:
                    left -= len(await source.fetch(200))
                    reading = source.behind()
                    readings.append(reading)
                    assert reading is None or reading == left, (reading, left)
            assert sum(r is not None for r in readings) >= 5, readings
        finally:
            await source.stop()

    async def test_a_seek_to_the_committed_offset_is_a_known_position(
        self, kafka_bootstrap: str, make_topic: MakeTopic
    ) -> None:
        """After a rebalance the member seeks to the committed offsets: what is behind is
        counted from them at once, once the partitions' ends are known. The committed offsets
        come with their metadata (what the take checks the changelog against)."""
        topic = await make_topic("behind-seek", partitions=len(PER_PARTITION))
        await _backlog(kafka_bootstrap, topic)
        group = f"behind-seek-{uuid.uuid4().hex[:8]}"
        # No auto-commit: at its stop it would commit its positions again, without metadata.
        committer = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
        )
        await committer.start()
        try:
            committer.assign([TopicPartition(topic, p) for p in range(2)])
            await committer.commit(
                {TopicPartition(topic, p): OffsetAndMetadata(10 * p, f"mark-{p}") for p in range(2)}
            )
        finally:
            await committer.stop()
        source = _source(kafka_bootstrap, topic, group)
        owner = Owner()
        await source.start(owner)
        try:
            await asyncio.wait_for(owner.assigned.wait(), 30)
            fetched = len(await source.fetch(2_000))
            committed = await source.committed({0, 1, 2})
            assert committed == {
                (topic, 0): OffsetAndMetadata(0, "mark-0"),
                (topic, 1): OffsetAndMetadata(10, "mark-1"),
            }
            source.seek({key: c.offset for key, c in committed.items()})
            # Partition 2 has no committed offset (earliest, position known once reset);
            # 0 and 1 are read again from the committed offsets.
            reading = source.behind()
            assert reading is None or reading == sum(PER_PARTITION) - 10, (reading, fetched)
            async with asyncio.timeout(30):
                while source.behind() is None:
                    await source.fetch(50)
            assert source.behind() is not None
        finally:
            await source.stop()


async def _send(bootstrap: str, topic: str, partition: int, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send(topic, value, key=b"k", partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


async def _read(source: EventSource, count: int) -> list[bytes]:
    values: list[bytes] = []
    async with asyncio.timeout(30):
        while len(values) < count:
            values.extend(bytes(record.value or b"") for record in await source.fetch(500))
    return values


class TestRecordsDeletedUnread:
    async def test_records_deleted_below_a_paused_position_are_reported_and_skipped(
        self, kafka_bootstrap: str, make_topic: MakeTopic
    ) -> None:
        """A member paused (the circuit open through a gateway outage) while the input's
        retention deletes records it has not read: when it resumes, it goes on from the
        partition's start, and reports how many records it never saw, by topic, with an
        error line naming the offsets. aiokafka's ``earliest`` made the same move silently."""
        topic = await make_topic("deleted-unread", partitions=1)
        await _send(kafka_bootstrap, topic, 0, [b"read-%d" % n for n in range(5)])
        lost: list[tuple[str, int]] = []
        source = _source(kafka_bootstrap, topic, f"unread-{uuid.uuid4().hex[:8]}", lost)
        owner = Owner()
        await source.start(owner)
        try:
            await asyncio.wait_for(owner.assigned.wait(), 30)
            assert await _read(source, 5) == [b"read-%d" % n for n in range(5)]
            source.pause_all()
            await _send(kafka_bootstrap, topic, 0, [b"gone-%d" % n for n in range(7)])
            await delete_records(kafka_bootstrap, topic, 0, below=12)
            await _send(kafka_bootstrap, topic, 0, [b"after"])
            source.resume_all()
            with capture_logs() as logs:
                assert await _read(source, 1) == [b"after"]
            assert lost == [(topic, 7)]
            [line] = [line for line in logs if line["event"] == "input_records_lost"]
            assert (line["topic"], line["partition"], line["position"]) == (topic, 0, 5)
            assert (line["start"], line["records"], line["log_level"]) == (12, 7, "error")
        finally:
            await source.stop()

    async def test_a_committed_offset_below_the_start_is_reported_at_the_take(
        self, kafka_bootstrap: str, make_topic: MakeTopic
    ) -> None:
        """A member stopped for longer than the input's retention: the group's committed
        offset is below the partition's start. The seek to it reports the gap at the first
        fetch; a partition with no committed offset is read from its start, and loses
        nothing."""
        topic = await make_topic("deleted-stopped", partitions=2)
        await _send(kafka_bootstrap, topic, 0, [b"gone-%d" % n for n in range(4)])
        await _send(kafka_bootstrap, topic, 0, [b"kept-%d" % n for n in range(3)])
        await _send(kafka_bootstrap, topic, 1, [b"new-%d" % n for n in range(2)])
        await delete_records(kafka_bootstrap, topic, 0, below=4)
        lost: list[tuple[str, int]] = []
        source = _source(kafka_bootstrap, topic, f"stopped-{uuid.uuid4().hex[:8]}", lost)
        owner = Owner()
        await source.start(owner)
        try:
            await asyncio.wait_for(owner.assigned.wait(), 30)
            source.seek({(topic, 0): 1})  # committed before it stopped, deleted since
            with capture_logs() as logs:
                values = await _read(source, 5)
            assert sorted(values) == [b"kept-0", b"kept-1", b"kept-2", b"new-0", b"new-1"]
            assert lost == [(topic, 3)]
            events = [(line["event"], line["partition"]) for line in logs]
            assert ("input_records_lost", 0) in events
            assert ("input_read_from_start", 1) in events
        finally:
            await source.stop()

    async def test_a_new_group_on_a_partition_whose_start_was_deleted_is_warned(
        self, kafka_bootstrap: str, make_topic: MakeTopic
    ) -> None:
        """A group that never committed (new, or its id changed by mistake) reads each
        partition from its start. Where retention deleted records before it read any, the
        jobs that began there are assembled without them: a warning names the partition and
        its start. A partition that lost nothing is an info line, as before; nothing is
        counted lost (this group never had a position there)."""
        topic = await make_topic("new-group", partitions=2)
        await _send(kafka_bootstrap, topic, 0, [b"gone-%d" % n for n in range(4)])
        await _send(kafka_bootstrap, topic, 0, [b"kept"])
        await _send(kafka_bootstrap, topic, 1, [b"whole"])
        await delete_records(kafka_bootstrap, topic, 0, below=4)
        lost: list[tuple[str, int]] = []
        source = _source(kafka_bootstrap, topic, f"new-{uuid.uuid4().hex[:8]}", lost)
        owner = Owner()
        await source.start(owner)
        try:
            await asyncio.wait_for(owner.assigned.wait(), 30)
            with capture_logs() as logs:
                assert sorted(await _read(source, 2)) == [b"kept", b"whole"]
        finally:
            await source.stop()
        read = {
            line["partition"]: (line["start"], line["log_level"])
            for line in logs
            if line["event"] == "input_read_from_start"
        }
        assert read == {0: (4, "warning"), 1: (0, "info")}
        assert lost == []
