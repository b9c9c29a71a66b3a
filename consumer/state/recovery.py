"""Recovery: the state of newly assigned partitions, read back from the compacted changelog.

Partition ``p`` of the changelog holds the jobs of input partition ``p``; the owner of ``p``
writes it, in transactions, through the checkpoint (``consumer.state.checkpoint``), which is
what makes the in-memory store a faithful cache of it. Restore reads ``read_committed``, so a
transaction a fenced member left open or aborted is never restored.

The rule for keeping state across a rebalance (:func:`can_keep`): aiokafka rebalances eagerly,
so a member gives up every partition and usually gets most of them back. If nobody wrote a
partition's changelog since this member's last commit, its in-memory state is still exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from consumer.domain.retention import ForgottenJob, StoredJob, decode_stored

log = structlog.get_logger(__name__)

#: Parsed jobs between two memory checks (a check reads /proc; a job parses in microseconds).
_MEMORY_CHECK_EVERY = 2_000


@dataclass(frozen=True)
class RestoreReport:
    partitions: tuple[int, ...]
    jobs: int
    records: int
    skipped: int
    seconds: float
    end_offsets: dict[int, int]
    #: forgotten-job markers restored (not counted in ``jobs``)
    forgotten: int = 0
    #: partition -> key -> bytes of its changelog value, as restored
    value_bytes: dict[int, dict[str, int]] = field(default_factory=dict)


async def restore(
    consumer_factory: Callable[..., AIOKafkaConsumer],
    topic: str,
    partitions: Iterable[int],
    check_memory: Callable[[], None] = lambda: None,
) -> tuple[dict[int, dict[str, StoredJob]], RestoreReport]:
    """Read changelog partitions from the beginning to their current end.

    Only the last record of each key matters in a compacted topic, so values are kept as bytes
    and parsed once per surviving key: restore cost is one parse per job, not per write.
    ``check_memory`` runs after every fetched batch and every :data:`_MEMORY_CHECK_EVERY`
    parsed jobs: it raises ``MemoryExhausted`` before the state outgrows the process.
    """
    started = time.monotonic()
    wanted = sorted(set(partitions))
    raw: dict[int, dict[bytes, bytes]] = {p: {} for p in wanted}
    records = 0
    consumer = consumer_factory(isolation_level="read_committed", enable_auto_commit=False)
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
                check_memory()
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
    states: dict[int, dict[str, StoredJob]] = {}
    skipped = forgotten = 0
    for partition, values in raw.items():
        parsed: dict[str, StoredJob] = {}
        for number, (key, value) in enumerate(values.items(), 1):
            if number % _MEMORY_CHECK_EVERY == 0:
                check_memory()
            try:
                state = decode_stored(value)
            except ValueError as exc:
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
            forgotten += isinstance(state, ForgottenJob)
        states[partition] = parsed
    report = RestoreReport(
        partitions=tuple(wanted),
        jobs=sum(len(s) for s in states.values()) - forgotten,
        forgotten=forgotten,
        records=records,
        skipped=skipped,
        seconds=time.monotonic() - started,
        end_offsets={tp.partition: offset for tp, offset in end.items()},
        value_bytes={
            partition: {key.decode(errors="replace"): len(value) for key, value in values.items()}
            for partition, values in raw.items()
        },
    )
    return states, report


def can_keep(known_end: Mapping[int, int], ends: Mapping[int, int], partition: int) -> bool:
    """Is the in-memory state of ``partition`` still exact?

    ``known_end`` is the changelog end offset this member's own writes explain (see
    ``Pipeline._expected_end``); ``ends`` the end offset now, read after this member's producer
    fenced every other writer. Any write by anyone else in between moved the end.
    """
    return partition in known_end and ends.get(partition) == known_end[partition]
