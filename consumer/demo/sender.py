"""Putting demo events on Kafka: the one table of which input topic each event kind goes to,
the encoding (binary or structured CloudEvents), unusable records for the failure path, and
the send loop.

With three input topics, job upserts go to the first, step events to the second, status,
abort and exclusion events to the third, as separate upstream systems would send them; with
fewer topics the kinds share. A job's events are keyed by its clientJobId, so the
Java-compatible default partitioner puts them on the same partition number of whichever input
topic each goes to. Encoding is pure and seeded (the same seed gives the same records);
only ``send_records`` talks to a producer.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from consumer.demo.jobs import DemoPlan, build_demo
from consumer.domain.events import EventType, JobEvent, encode_binary, encode_structured

#: Which input topic an event kind goes to (modulo the number of input topics).
TOPIC_OF_KIND = {
    EventType.upserted: 0,
    EventType.step_completed: 1,
    EventType.step_cancelled: 1,
    EventType.status_changed: 2,
    EventType.excluded: 2,
    EventType.aborted: 2,
}
INVALID_KINDS = ("bad_json", "unknown_type", "key_mismatch")

Headers = list[tuple[str, bytes]]
#: ``(topic, key, value, headers)`` of one record to send.
Record = tuple[str, bytes, bytes, Headers]


class Producer(Protocol):
    """What the sender needs of a producer (``AIOKafkaProducer``, or a wrapper in benchmarks)."""

    async def send(
        self, topic: str, *, value: bytes, key: bytes, headers: Headers
    ) -> asyncio.Future[Any]: ...


def encode_events(
    events: Sequence[JobEvent], topics: Sequence[str], *, binary_share: float, rng: random.Random
) -> list[Record]:
    """Each event encoded (binary mode for a share ``binary_share``) and routed by kind."""
    records: list[Record] = []
    for event in events:
        encode = encode_binary if rng.random() < binary_share else encode_structured
        key, value, headers = encode(event)
        records.append((topics[TOPIC_OF_KIND[event.type] % len(topics)], key, value, headers))
    return records


def demo_records(
    plan: DemoPlan, topics: Sequence[str], invalid_share: float
) -> tuple[list[Record], int]:
    """Every record of ``plan``'s demo with *extra* invalid ones mixed in (``invalid_share`` of
    the valid ones), and how many are invalid. The valid ones still assemble into the jobs'
    expected documents."""
    demo = build_demo(plan)
    rng = random.Random(plan.seed)
    records = encode_events(demo.events, topics, binary_share=plan.binary_share, rng=rng)
    invalid = round(len(demo.events) * invalid_share)
    for n in range(invalid):
        event = demo.events[rng.randrange(len(demo.events))]
        bad = invalid_record(event, INVALID_KINDS[n % len(INVALID_KINDS)], n)
        records.insert(rng.randrange(len(records) + 1), (topics[0], *bad))
    return records, invalid


def invalid_record(event: JobEvent, kind: str, n: int) -> tuple[bytes, bytes, Headers]:
    """An unusable event of ``kind`` (one of ``INVALID_KINDS``) about ``event``'s job, keyed
    like it: bad JSON, an unknown ``type``, or a key that differs from the subject."""
    key, value, headers = encode_structured(event)
    if kind == "bad_json":
        return key, value[: len(value) // 2], headers
    envelope: dict[str, Any] = json.loads(value)
    envelope["id"] = f"{event.id}-invalid-{n}"
    if kind == "unknown_type":
        envelope["type"] = "com.workfloplus.job.teleported"
        return key, json.dumps(envelope).encode(), headers
    return key + b"-mismatch", json.dumps(envelope).encode(), headers  # key_mismatch


async def send_records(
    producer: Producer,
    records: Sequence[Record],
    *,
    rate: float = 0.0,
    on_sent: Callable[[int], None] | None = None,
) -> int:
    """Send ``records`` in order, at ``rate`` records per second (0: as fast as possible),
    calling ``on_sent(count)`` after each; returns the count acknowledged."""
    acks: list[asyncio.Future[Any]] = []
    started = time.monotonic()
    for sent, (topic, key, value, headers) in enumerate(records, 1):
        if rate > 0:  # pace against the start, so slow sends do not lower the rate
            ahead = started + sent / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
        acks.append(await producer.send(topic, value=value, key=key, headers=headers))
        if on_sent is not None:
            on_sent(sent)
    await asyncio.gather(*acks)
    return len(acks)


async def send_events(
    producer: Producer,
    topics: Sequence[str],
    events: Sequence[JobEvent],
    *,
    binary_share: float = 0.5,
    seed: int = 7,
    on_sent: Callable[[int], None] | None = None,
) -> int:
    """Send ``events`` to ``topics`` by kind, encoded as ``encode_events`` does with ``seed``;
    returns the count acknowledged."""
    records = encode_events(events, topics, binary_share=binary_share, rng=random.Random(seed))
    return await send_records(producer, records, on_sent=on_sent)
