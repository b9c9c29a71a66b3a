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

import gc
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from consumer.domain.retention import ForgottenJob, StoredJob, decode_stored
from consumer.domain.settled import SETTLED_HEADER, SettledJob, settled_job
from consumer.errors import ChangelogShared
from consumer.kafka.starting import start_client
from consumer.state.continuity import WRITER_HEADER, ChangelogBounds, ChangelogOwner

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
    #: jobs among ``jobs`` kept as their settled value, not read (``consumer.domain.settled``)
    settled: int = 0
    #: partition -> key -> bytes of its changelog value, as restored
    value_bytes: dict[int, dict[str, int]] = field(default_factory=dict)
    #: partition -> key -> why its value could not be read (``skipped`` of them in all); the
    #: store holds these jobs apart, refusing their events (``consumer.state.store``)
    unreadable: dict[int, dict[str, str]] = field(default_factory=dict)


async def restore(
    consumer_factory: Callable[..., AIOKafkaConsumer],
    topic: str,
    partitions: Iterable[int],
    check_memory: Callable[[], None] = lambda: None,
    *,
    keep_settled: bool = True,
    owner: ChangelogOwner | None = None,
) -> tuple[dict[int, dict[str, StoredJob | SettledJob]], RestoreReport]:
    """Read changelog partitions from the beginning to their current end.

    Only the last record of each key matters in a compacted topic, so values are kept as bytes
    while reading and each partition's surviving values are parsed once it is read to its end:
    restore cost is at most one parse per job, not per write. A value the checkpoint marked
    settled is not parsed at all: it is kept as a ``SettledJob``, read into a state when
    something first needs it (``consumer.domain.settled``). ``check_memory`` runs after every
    fetched batch and every :data:`_MEMORY_CHECK_EVERY` parsed jobs: it raises
    ``MemoryExhausted`` before the state outgrows the process. ``keep_settled`` False parses
    settled values too (a tool that shows or changes states reads a few jobs, and wants them
    read). With an ``owner``, a record another group wrote raises ``ChangelogShared``
    (``consumer.state.continuity``); a tool that only reads states passes none.
    """
    started = time.monotonic()
    wanted = sorted(set(partitions))
    restored = _Restored(topic, check_memory, keep_settled, owner)
    consumer = consumer_factory(isolation_level="read_committed", enable_auto_commit=False)
    try:
        await start_client(consumer.start())
        end = await _read(consumer, topic, wanted, restored)
    finally:
        await consumer.stop()  # after a failed start too, as in changelog_bounds
    kinds = Counter(type(state) for jobs in restored.states.values() for state in jobs.values())
    report = RestoreReport(
        partitions=tuple(wanted),
        jobs=kinds.total() - kinds[ForgottenJob],
        forgotten=kinds[ForgottenJob],
        settled=kinds[SettledJob],
        records=restored.records,
        skipped=restored.skipped,
        seconds=time.monotonic() - started,
        end_offsets=end,
        value_bytes=restored.value_bytes,
        unreadable=restored.unreadable,
    )
    return restored.states, report


async def changelog_bounds(
    consumer_factory: Callable[..., AIOKafkaConsumer], topic: str, partitions: Iterable[int]
) -> dict[int, ChangelogBounds]:
    """The start and end offsets of ``partitions`` of ``topic``, read by a consumer of its own:
    not the group member, whose connection has long-polled fetches outstanding during a
    rebalance callback (docs/design-notes.md §8, "Offsets are asked where no fetch waits")."""
    # read_committed, as the member asked: the last stable offset, which a transaction left
    # open would hold back (none is, once this member's producer has fenced the partition).
    reader = consumer_factory(isolation_level="read_committed", enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in partitions]
    try:
        await start_client(reader.start())
        ends = await reader.end_offsets(tps)
        starts = await reader.beginning_offsets(tps)
    finally:
        await reader.stop()  # after a failed start too: it may have connected (a take retries)
    return {tp.partition: ChangelogBounds(starts[tp], end) for tp, end in ends.items()}


async def writers_between(
    consumer_factory: Callable[..., AIOKafkaConsumer],
    topic: str,
    partition: int,
    first: int,
    end: int,
    ours: bytes,
) -> set[bytes | None]:
    """The writers other than ``ours`` (``consumer.state.continuity.WRITER_HEADER``, None
    when absent) of the records of ``topic`` ``partition`` from offset ``first`` to ``end``:
    whose records a commit found between its own writes (``PartitionProducer.count_from``).
    Records of aborted transactions are read too (``read_uncommitted``); transaction markers
    are not records and do not show. Reading stops at the first fetch that found another
    writer: a gap of millions of records is told in one fetch."""
    reader = consumer_factory(isolation_level="read_uncommitted", enable_auto_commit=False)
    tp = TopicPartition(topic, partition)
    others: set[bytes | None] = set()
    try:
        await start_client(reader.start())
        reader.assign([tp])
        reader.seek(tp, first)
        while not others and await reader.position(tp) < end:
            fetched = await reader.getmany(tp, timeout_ms=1_000)
            writers = {_marks(r.headers)[1] for r in fetched.get(tp, []) if r.offset < end}
            others = writers - {ours}
    finally:
        await reader.stop()
    return others


async def _read(
    consumer: AIOKafkaConsumer, topic: str, wanted: list[int], restored: _Restored
) -> dict[int, int]:
    """Read ``wanted`` from the beginning to their end offsets (returned), handing each
    partition to ``restored`` once it is read to its end."""
    tps = [TopicPartition(topic, p) for p in wanted]
    if not tps:
        return {}
    # Before the assignment, which long-polls a partition read to its end (design notes §8).
    end = await consumer.end_offsets(tps)
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    remaining = set(tps)
    while remaining:
        for tp in list(remaining):
            if await consumer.position(tp) >= end[tp]:
                remaining.discard(tp)
                restored.parse(tp.partition)
        if remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=10_000)
            restored.check_memory()
            for tp, messages in batch.items():
                restored.keep(tp.partition, messages)
    return {tp.partition: offset for tp, offset in end.items()}


class _Restored:
    """What a restore has read so far: the last value of each key of the partitions still being
    read, and the jobs of those read to their end."""

    def __init__(
        self,
        topic: str,
        check_memory: Callable[[], None],
        keep_settled: bool,
        owner: ChangelogOwner | None,
    ) -> None:
        self.topic = topic
        self.check_memory = check_memory
        self.keep_settled = keep_settled
        self.owner = owner
        #: partition -> key -> (last value, its settled mark or None)
        self.values: dict[int, dict[bytes, tuple[bytes, bytes | None]]] = {}
        self.states: dict[int, dict[str, StoredJob | SettledJob]] = {}
        self.value_bytes: dict[int, dict[str, int]] = {}
        self.records = 0
        self.skipped = 0
        self.unreadable: dict[int, dict[str, str]] = {}

    def keep(self, partition: int, messages: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Keep the last value of each key, with its settled mark if it has one; a tombstone
        drops the key. A record of another group than the owner's stops the restore."""
        self.records += len(messages)
        slot = self.values.setdefault(partition, {})
        owner = self.owner
        ours = None if owner is None else owner.header()[1]
        for message in messages:
            if message.key is None:
                continue
            settled, writer = _marks(message.headers)
            if (
                writer != ours
                and owner is not None
                and writer is not None
                and not (owner.accepts(writer))
            ):
                name = writer.decode(errors="replace")
                raise ChangelogShared(self.topic, partition, message.offset, name, owner.group)
            if message.value is None:
                slot.pop(message.key, None)
            else:
                slot[message.key] = (message.value, settled if self.keep_settled else None)

    def parse(self, partition: int) -> None:
        """Make the jobs of a partition read to its end, and let go of its bytes."""
        values = self.values.pop(partition, {})
        self.value_bytes[partition] = {
            key.decode(errors="replace"): len(value) for key, (value, _) in values.items()
        }
        parsed: dict[str, StoredJob | SettledJob] = {}
        with _collector_paused():
            for number, (key, (value, settled)) in enumerate(values.items(), 1):
                if number % _MEMORY_CHECK_EVERY == 0:
                    self.check_memory()
                try:
                    state = (
                        decode_stored(value)
                        if settled is None
                        else settled_job(key.decode(), value, settled)
                    )
                except ValueError as exc:
                    self.skipped += 1
                    job, why = key.decode(errors="replace"), str(exc).splitlines()[0]
                    self.unreadable.setdefault(partition, {})[job] = why
                    log.error(
                        "changelog_record_unreadable",
                        topic=self.topic,
                        partition=partition,
                        key=job,
                        error=why,
                    )
                    continue
                parsed[state.client_job_id] = state
        self.states[partition] = parsed


def _marks(headers: Sequence[tuple[str, bytes]] | None) -> tuple[bytes | None, bytes | None]:
    """The record's settled mark (``consumer.domain.settled``) and the group that wrote it
    (``consumer.state.continuity``), each None when the record has none."""
    settled = writer = None
    for name, value in headers or ():
        if name == SETTLED_HEADER:
            settled = value
        elif name == WRITER_HEADER:
            writer = value
    return settled, writer


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a partition's jobs are made.

    A parse makes dozens of containers per job, all kept, and none in a cycle; each collection
    the allocations trigger would walk the growing store again for garbage that cannot exist.
    Nothing else runs meanwhile (the parse does not await), and reference counting still frees
    what a parse drops.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def can_keep(known_end: Mapping[int, int], ends: Mapping[int, int], partition: int) -> bool:
    """Is the in-memory state of ``partition`` still exact?

    ``known_end`` is the changelog end offset this member's own writes explain (see
    ``Checkpoint.known_end``); ``ends`` the end offset now, read after this member's producer
    fenced every other writer. Any write by anyone else in between moved the end.
    """
    return partition in known_end and ends.get(partition) == known_end[partition]
