"""Smoke tests: aiokafka 0.14 against the real broker (Apache Kafka 4.1 from deploy/kafka-local).

They pin what the consumer relies on from the client and the broker together: committed offsets
in a consumer group, log compaction of the state changelog, and transactions (including offsets
sent to a transaction and aborted records hidden from ``read_committed`` readers).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from tests.fixtures.kafka import MakeTopic

pytestmark = pytest.mark.integration

COMPACTION_TIMEOUT_S = 90.0


@asynccontextmanager
async def producer(bootstrap: str, **options: Any) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer, stopped on exit."""
    client = AIOKafkaProducer(bootstrap_servers=bootstrap, **options)
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


@asynccontextmanager
async def consumer(bootstrap: str, *topics: str, **options: Any) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer (subscribed to ``topics`` if any), stopped on exit."""
    options.setdefault("auto_offset_reset", "earliest")
    client = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, **options)
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


async def read_n(client: AIOKafkaConsumer, n: int, timeout_s: float = 30.0) -> list[Any]:
    """Exactly the next ``n`` records (fails on a timeout), without reading further."""
    records: list[Any] = []
    async with asyncio.timeout(timeout_s):
        while len(records) < n:
            batches = await client.getmany(timeout_ms=500, max_records=n - len(records))
            for batch in batches.values():
                records.extend(batch)
    return records


async def read_to_end(client: AIOKafkaConsumer, tp: TopicPartition) -> list[Any]:
    """Every record of ``tp`` from its beginning up to the end visible to ``client``."""
    await client.seek_to_beginning(tp)
    end = (await client.end_offsets([tp]))[tp]
    records: list[Any] = []
    async with asyncio.timeout(30):
        while await client.position(tp) < end:
            batches = await client.getmany(tp, timeout_ms=500)
            records.extend(batches.get(tp, []))
    return records


async def wait_until_stable(bootstrap: str, tp: TopicPartition, timeout_s: float = 10.0) -> None:
    """Wait until no transaction is open on ``tp``: its last stable offset reaches the high water.

    ``commit_transaction`` returns once the coordinator has logged the decision; the markers
    reach the data partitions asynchronously, and until then a ``read_committed`` reader's end
    (the LSO) stops before the transaction's records.
    """
    async with (
        consumer(bootstrap, isolation_level="read_committed") as committed,
        consumer(bootstrap, isolation_level="read_uncommitted") as uncommitted,
        asyncio.timeout(timeout_s),
    ):
        while True:
            last_stable = (await committed.end_offsets([tp]))[tp]
            if last_stable >= (await uncommitted.end_offsets([tp]))[tp]:
                return
            await asyncio.sleep(0.05)


async def wait_for_committed(
    client: AIOKafkaConsumer, tp: TopicPartition, expected: int, timeout_s: float = 10.0
) -> list[int | None]:
    """Poll the group's committed offset of ``tp`` until it is ``expected``; return what came first.

    aiokafka fetches offsets with OffsetFetch v0-v2, which cannot ask for stable offsets
    (``require_stable``, KIP-447): until the commit marker of a transaction reaches
    ``__consumer_offsets`` the broker answers with the offset committed before it.
    """
    seen: list[int | None] = []
    async with asyncio.timeout(timeout_s):
        while (offset := await client.committed(tp)) != expected:
            seen.append(offset)
            await asyncio.sleep(0.05)
    return seen


async def produce(bootstrap: str, topic: str, items: Sequence[tuple[bytes, bytes]]) -> None:
    """``(key, value)`` records, acknowledged by the broker, in order."""
    async with producer(bootstrap, acks="all") as client:
        for key, value in items:
            await client.send_and_wait(topic, value, key=key)


class TestConsumerGroupOffsets:
    """A consumer group with manual commits resumes where it committed."""

    async def test_restarted_consumer_resumes_after_committed_offset(
        self, kafka_bootstrap: str, make_topic: MakeTopic
    ) -> None:
        """Keyed records read by one member, committed at offset 4, are not re-read by the next."""
        topic = await make_topic("smoke-offsets")
        tp = TopicPartition(topic, 0)
        group = f"smoke-group-{uuid.uuid4().hex[:8]}"
        await produce(kafka_bootstrap, topic, [(b"job-%d" % i, b"v%d" % i) for i in range(10)])

        async with consumer(kafka_bootstrap, topic, group_id=group, enable_auto_commit=False) as c:
            first = await read_n(c, 4)
            assert [(r.key, r.value, r.offset) for r in first] == [
                (b"job-%d" % i, b"v%d" % i, i) for i in range(4)
            ]
            await c.commit({tp: OffsetAndMetadata(first[-1].offset + 1, "")})
            assert await c.committed(tp) == 4

        async with consumer(kafka_bootstrap, topic, group_id=group, enable_auto_commit=False) as c:
            rest = await read_n(c, 6)
            assert [(r.key, r.offset) for r in rest] == [(b"job-%d" % i, i) for i in range(4, 10)]


class TestCompaction:
    """A compacted topic (the state changelog's policy) keeps the last value per key."""

    async def test_compacted_topic_keeps_last_value_per_key(
        self, kafka_bootstrap: str, make_topic: MakeTopic
    ) -> None:
        """After the cleaner runs, each key has one record left: its latest value."""
        topic = await make_topic(
            "smoke-compact",
            cleanup_policy="compact",
            config={
                # Roll segments quickly: the cleaner never touches the active segment.
                "segment.ms": "100",
                "min.cleanable.dirty.ratio": "0.01",
                "min.compaction.lag.ms": "0",
                "delete.retention.ms": "100",
            },
        )
        tp = TopicPartition(topic, 0)
        updates = [(b"job-%d" % (i % 3), b"state-%d" % i) for i in range(12)]
        await produce(kafka_bootstrap, topic, updates)
        await asyncio.sleep(0.3)
        # A later record rolls the segment holding the updates, making them cleanable.
        await produce(kafka_bootstrap, topic, [(b"roll", b"x")])
        expected = {b"job-0": b"state-9", b"job-1": b"state-10", b"job-2": b"state-11"}

        loop = asyncio.get_running_loop()
        deadline = loop.time() + COMPACTION_TIMEOUT_S
        async with consumer(kafka_bootstrap) as c:
            c.assign([tp])
            while True:
                records = [r for r in await read_to_end(c, tp) if r.key != b"roll"]
                if len(records) == len(expected):
                    break
                assert loop.time() < deadline, f"not compacted: {[r.value for r in records]}"
                await asyncio.sleep(1)
        assert {r.key: r.value for r in records} == expected


class TestTransactions:
    """Transactions: consume-transform-produce with offsets, and aborts."""

    async def test_committed_transaction_publishes_records_and_group_offsets(
        self, kafka_bootstrap: str, make_topic: MakeTopic
    ) -> None:
        """Sends and ``send_offsets_to_transaction`` become visible together on commit."""
        source, sink = await make_topic("smoke-tx-in"), await make_topic("smoke-tx-out")
        source_tp = TopicPartition(source, 0)
        group = f"smoke-tx-group-{uuid.uuid4().hex[:8]}"
        await produce(kafka_bootstrap, source, [(b"job-%d" % i, b"e%d" % i) for i in range(3)])

        async with (
            consumer(
                kafka_bootstrap,
                source,
                group_id=group,
                enable_auto_commit=False,
                isolation_level="read_committed",
            ) as c,
            producer(kafka_bootstrap, transactional_id=f"smoke-tx-{uuid.uuid4().hex}") as p,
        ):
            inputs = await read_n(c, 3)
            await p.begin_transaction()
            for record in inputs:
                await p.send(sink, record.value.upper(), key=record.key)
            await p.send_offsets_to_transaction({source_tp: inputs[-1].offset + 1}, group)
            await p.commit_transaction()
            # Nothing was committed before: the group sees no offset, then exactly 3.
            assert set(await wait_for_committed(c, source_tp, 3)) <= {None}

        await wait_until_stable(kafka_bootstrap, TopicPartition(sink, 0))
        async with consumer(kafka_bootstrap, isolation_level="read_committed") as reader:
            reader.assign([TopicPartition(sink, 0)])
            out = await read_to_end(reader, TopicPartition(sink, 0))
        assert [(r.key, r.value) for r in out] == [(b"job-%d" % i, b"E%d" % i) for i in range(3)]

    async def test_aborted_transaction_is_invisible_to_read_committed(
        self, kafka_bootstrap: str, make_topic: MakeTopic
    ) -> None:
        """Records of an aborted transaction are written but a read_committed reader skips them."""
        topic = await make_topic("smoke-tx-abort")
        tp = TopicPartition(topic, 0)
        async with producer(kafka_bootstrap, transactional_id=f"smoke-{uuid.uuid4().hex}") as p:
            await p.begin_transaction()
            sent = [await p.send(topic, b"aborted-%d" % i, key=b"job") for i in range(2)]
            await asyncio.gather(*sent)  # on the broker before the abort
            await p.abort_transaction()
            async with p.transaction():
                await p.send(topic, b"committed", key=b"job")

        await wait_until_stable(kafka_bootstrap, tp)
        async with consumer(kafka_bootstrap, isolation_level="read_committed") as reader:
            reader.assign([tp])
            committed_view = [r.value for r in await read_to_end(reader, tp)]
        async with consumer(kafka_bootstrap, isolation_level="read_uncommitted") as reader:
            reader.assign([tp])
            uncommitted_view = [r.value for r in await read_to_end(reader, tp)]

        assert committed_view == [b"committed"]
        assert uncommitted_view == [b"aborted-0", b"aborted-1", b"committed"]
