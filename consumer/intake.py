"""One fetched batch in, its effect out: decode, validate, reduce. No I/O.

The caller makes the effect durable (changelog writes and failure records acknowledged by
the broker) and only then commits ``next_offsets``: that order is what makes a crash at
any instant lose nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache

from aiokafka.partitioner import murmur2

from consumer.domain.events import EventTrace, InvalidEvent, decode_event
from consumer.domain.job import JobState, Rejection, apply
from consumer.domain.results import FailureReason, FailureRecord, SourceInfo, SourceOffset
from consumer.state.store import JobStore


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """An input message as fetched, independent of the Kafka client's types."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


@dataclass
class BatchEffect:
    """What a batch changed, coalesced: one changelog write per job however many events."""

    changed: dict[str, JobState] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)
    offsets_by_job: dict[str, list[SourceOffset]] = field(default_factory=dict)
    #: the trace contexts of the applied events that carry one (docs/operations.md "Tracing")
    traces_by_job: dict[str, list[EventTrace]] = field(default_factory=dict)
    failures: list[FailureRecord] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    misrouted: int = 0
    applied: int = 0
    duplicates: int = 0


@lru_cache(maxsize=1 << 16)
def hashes_to(key: bytes, partitions: int) -> int:
    """The partition the Java default partitioner picks for ``key``.

    Cached: aiokafka's murmur2 is pure Python and a job's events share its key.
    """
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


class ArrivalClock:
    """Processing times that strictly increase, even within one batch.

    The reducer orders events that carry no CloudEvents ``time`` by the processing time it is
    given; a strictly increasing clock keeps such events in arrival order.
    """

    def __init__(self, wall_clock: Callable[[], datetime]) -> None:
        self._wall_clock = wall_clock
        self._last: datetime | None = None

    def __call__(self) -> datetime:
        now = self._wall_clock()
        if self._last is not None and now <= self._last:
            now = self._last + _ONE_MICROSECOND
        self._last = now
        return now


_ONE_MICROSECOND = timedelta(microseconds=1)


def absorb(
    store: JobStore,
    records: Iterable[SourceRecord],
    *,
    clock: ArrivalClock,
    partition_count: int,
    max_event_bytes: int,
) -> BatchEffect:
    """Apply ``records`` in order to ``store`` and describe what must become durable."""
    effect = BatchEffect()
    for record in records:
        now = clock()
        effect.next_offsets[(record.topic, record.partition)] = record.offset + 1
        if record.key is not None and hashes_to(record.key, partition_count) != record.partition:
            effect.misrouted += 1
        try:
            event = decode_event(
                record.key, record.value, record.headers, max_bytes=max_event_bytes
            )
        except InvalidEvent as exc:
            effect.failures.append(
                _input_failure(record, exc.reason, exc.message, now, _subject_of(record))
            )
            continue
        job = event.subject
        home = store.partition_of(job)
        if home is not None and home != record.partition:
            effect.failures.append(
                _input_failure(
                    record,
                    FailureReason.misrouted,
                    f"job {job} lives in partition {home}, this event came on partition "
                    f"{record.partition} of {record.topic}: the input topics are not "
                    "co-partitioned (same partition count and partitioner)",
                    now,
                    job,
                )
            )
            continue
        state = store.get(job)
        result = apply(state, event, now)
        if isinstance(result, Rejection):
            effect.failures.append(
                _input_failure(
                    record,
                    result.reason,
                    result.message,
                    now,
                    job,
                    state.version if state else None,
                )
            )
            continue
        if result is state:
            effect.duplicates += 1
            continue
        effect.applied += 1
        store.put(record.partition, result)
        effect.changed[job] = result
        effect.partitions[job] = record.partition
        effect.offsets_by_job.setdefault(job, []).append(
            SourceOffset(topic=record.topic, partition=record.partition, offset=record.offset)
        )
        if event.traceparent is not None:
            effect.traces_by_job.setdefault(job, []).append(
                EventTrace(
                    event.traceparent,
                    event.tracestate,
                    event.id,
                    record.topic,
                    record.partition,
                    record.offset,
                )
            )
    return effect


def _subject_of(record: SourceRecord) -> str | None:
    if record.key is None:
        return None
    try:
        return record.key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _input_failure(
    record: SourceRecord,
    reason: FailureReason,
    message: str,
    now: datetime,
    client_job_id: str | None,
    state_version: int | None = None,
) -> FailureRecord:
    return FailureRecord.for_input(
        reason=reason,
        message=message,
        source=SourceInfo.from_message(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=record.headers,
        ),
        failed_at=now,
        client_job_id=client_job_id,
        state_version=state_version,
    )
