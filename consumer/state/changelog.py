"""The compacted changelog: write-through of job state, and restore on assignment.

Partition ``p`` of the changelog holds the jobs of input partition ``p``; the owner of ``p``
is its only writer, which is what makes the in-memory store a faithful cache of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from consumer.domain.job import JobState

log = structlog.get_logger(__name__)


_NOTHING = (-1, -1)


class ChangelogWriter:
    """Writes job states to their explicit changelog partition and remembers the last offset."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self.topic = topic
        self.last_offsets: dict[int, int] = {}
        #: highest (version, synced version) the broker has acknowledged, per job
        self._durable: dict[str, tuple[int, int]] = {}

    async def write(self, partition: int, state: JobState) -> asyncio.Future[Any]:
        """Queue ``state``; the returned future resolves once the broker has it."""
        future = await self._send(partition, state.client_job_id, state.to_json_bytes())
        job, mark = state.client_job_id, (state.version, state.synced_version)

        def acknowledged(done: asyncio.Future[Any]) -> None:
            if not done.cancelled() and done.exception() is None:
                self._durable[job] = max(self._durable.get(job, _NOTHING), mark)

        future.add_done_callback(acknowledged)
        return future

    def is_durable(self, state: JobState) -> bool:
        """True when the changelog already holds this version (or a later one) of the job."""
        durable = self._durable.get(state.client_job_id, _NOTHING)
        return durable >= (state.version, state.synced_version)

    async def make_durable(self, partition: int, state: JobState) -> None:
        """Write ``state`` and wait for the broker, unless that version is already there."""
        if not self.is_durable(state):
            await (await self.write(partition, state))

    def forget(self, client_job_ids: Iterable[str]) -> None:
        """Jobs of a partition this member no longer owns."""
        for job in client_job_ids:
            self._durable.pop(job, None)

    async def tombstone(self, partition: int, client_job_id: str) -> asyncio.Future[Any]:
        self._durable.pop(client_job_id, None)
        return await self._send(partition, client_job_id, None)

    async def _send(self, partition: int, key: str, value: bytes | None) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self._producer.send(
            self.topic, value=value, key=key.encode(), partition=partition
        )
        future.add_done_callback(self._remember_offset)
        return future

    def _remember_offset(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        metadata = future.result()
        current = self.last_offsets.get(metadata.partition, -1)
        self.last_offsets[metadata.partition] = max(current, metadata.offset)


@dataclass(frozen=True)
class RestoreReport:
    partitions: tuple[int, ...]
    jobs: int
    records: int
    skipped: int
    seconds: float
    end_offsets: dict[int, int]


async def restore(
    consumer_factory: Callable[[], AIOKafkaConsumer],
    topic: str,
    partitions: Iterable[int],
) -> tuple[dict[int, dict[str, JobState]], RestoreReport]:
    """Read changelog partitions from the beginning to their current end.

    Only the last record of each key matters in a compacted topic, so values are kept as bytes
    and parsed once per surviving key: restore cost is one parse per job, not per write.
    """
    started = time.monotonic()
    wanted = sorted(set(partitions))
    raw: dict[int, dict[bytes, bytes]] = {p: {} for p in wanted}
    records = 0
    consumer = consumer_factory()
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in wanted]
        if tps:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            remaining = {tp for tp in tps if await consumer.position(tp) < end[tp]}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=10_000)
                for tp, messages in batch.items():
                    records += len(messages)
                    slot = raw[tp.partition]
                    for message in messages:
                        if message.key is None:
                            continue
                        if message.value is None:
                            slot.pop(message.key, None)
                        else:
                            slot[message.key] = message.value
                for tp in list(remaining):
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
        else:
            end = {}
    finally:
        await consumer.stop()
    states: dict[int, dict[str, JobState]] = {}
    skipped = 0
    for partition, values in raw.items():
        parsed: dict[str, JobState] = {}
        for key, value in values.items():
            try:
                state = JobState.from_json_bytes(value)
            except ValidationError as exc:
                skipped += 1
                log.error(
                    "changelog_record_unreadable",
                    topic=topic,
                    partition=partition,
                    key=key.decode(errors="replace"),
                    error=str(exc).splitlines()[0],
                )
                continue
            parsed[state.client_job_id] = state
        states[partition] = parsed
    report = RestoreReport(
        partitions=tuple(wanted),
        jobs=sum(len(s) for s in states.values()),
        records=records,
        skipped=skipped,
        seconds=time.monotonic() - started,
        end_offsets={tp.partition: offset for tp, offset in end.items()},
    )
    return states, report
