"""The checkpoint: the only writer of the changelog, the result topics and the input offsets.

Everything that must become durable is *staged* here (the consume loop stages absorbed
batches, the scheduler stages results and sync bookkeeping) and written by :meth:`commit`, per
input partition, in one Kafka transaction of that partition's producer, in this fixed order:

1. tombstones of the keys dropped since the partition's last commit, then the markers of the
   jobs forgotten since (``consumer.domain.retention``);
2. the current state of every job of the partition changed since then, once each however many
   events it got, to changelog partition ``p`` (a job lives in one partition);
3. the result and failure records staged for the partition, in the order they were staged;
4. the next input offsets of the partition, on every input topic, each with a floor of the
   changelog partition's end offset as its metadata (``consumer.state.continuity``);
5. commit.

So a full commit is a consistent snapshot: the states hold the effect of every event below the
committed offsets, and every result it reports. A crash at any instant replays at most the
events after the last full commit; the only effects of those anyone saw are the states that
intents wrote ahead (below).

The consume loop's checkpoint is *live* (``commit(live=True)``): a job changed by events and
about to be posted (the scheduler says so) is left to its request's intent, which writes it a
moment later anyway, and the offsets and failure records committed stop below its first event
not yet written (``consumer.state.deferral``). The snapshot is then that of those lower offsets,
with states written ahead of them as intents write them. A revoke and a stop commit everything.

:meth:`make_durable` is the scheduler's way to say "before I post, this must be in Kafka": it
commits the partition now. Calls that arrive while a commit of the partition is running wait
for it and then share the next one (group commit), so concurrent posts cost one transaction.
A call returns as soon as a transaction that took what it staged has committed: it does not
commit again for work staged after it (the consume loop stages every batch), which would make
each waiting post pay one transaction of its own, one after another on the partition.

An *intent* (``make_durable(partition, only=jobs)``, before a request) commits only the states
of the jobs about to be posted, not the partition's other changes, results and offsets: those
wait for the next full commit (the consume loop's checkpoint timer). Such a state is then ahead
of the committed offsets, so the snapshot is no longer the offsets' alone: a crash replays the
events after the offsets onto it, and every one of them that it holds comes back as a duplicate
by event id and returns the state unchanged. That is exact while the job's seen ids hold every
event it applied (``consumer.domain.job.replays_as_duplicates``); a job past that is committed
with everything, as is one with a marker or tombstone staged (which must keep its order).

Every result and failure record is fitted to :data:`~consumer.kafka.limits.RESULT_RECORD_BYTES`
when it is staged (``consumer.domain.record_size``; a reduced record is logged and counted). If
Kafka still refuses one as too large, the transaction is aborted, the refused records are
fitted again to half their size and the commit is repeated: a record never stalls a partition
and the offsets are committed only with the records that report their events. A job state
refused as too large means the changelog topic's ``max.message.bytes`` was lowered below what
``kafka.max_job_bytes`` needs after this member started (one smaller at its start lowers the
intake's job limit instead, ``consumer.kafka.limits.changelog_room``): the member lowers that
limit to what the topic holds and takes the partition again, so that a job past it gets its
``job_too_large`` (:meth:`Checkpoint._refused_states`).

A partition whose producer was fenced (another member owns it now) or revoked raises
``PartitionLost`` from :meth:`make_durable` and is reported by :meth:`take_lost`; its staged
work is dropped, since the new owner replays it from the last committed offsets.
"""

from __future__ import annotations

import asyncio
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import structlog
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from consumer.domain.job import replays_as_duplicates
from consumer.domain.record_size import MIN_LIMIT_BYTES, fit_record
from consumer.domain.results import FailureRecord, SuccessRecord
from consumer.domain.retention import ForgottenJob
from consumer.domain.settled import SETTLED_HEADER, SettledJob, is_ended, settled_header
from consumer.domain.state import JobState
from consumer.domain.state_codec import ValueParts, encode_state, value_parts
from consumer.domain.value_compression import compressed
from consumer.errors import PartitionLost, RecordsTooLarge
from consumer.kafka.limits import RESULT_RECORD_BYTES, ChangelogRoom
from consumer.kafka.records import Position
from consumer.kafka.transactions import (
    CommitTrouble,
    LogReplaced,
    LogWrittenElsewhere,
    OutRecord,
    PartitionProducer,
    Producible,
)
from consumer.observability.logging import unbound_record
from consumer.state.continuity import (
    ChangelogBounds,
    ChangelogFloor,
    ChangelogOwner,
    broken_continuity,
    replaced_while_written,
)
from consumer.state.deferral import capped_offsets, offset_caps, results_now
from consumer.state.store import JobStore

log = structlog.get_logger(__name__)

#: Live checkpoints in a row that may leave a job to its intent. A job keeps being about to be
#: posted while it waits behind a rate limit or a slow gateway; past this it is written, so its
#: first event no longer holds the offsets back: a crash never replays more than these
#: checkpoint intervals of events besides the last one's (and the requests' own).
LEFT_AT_MOST = 5


@dataclass(frozen=True)
class CheckpointTopics:
    changelog: str
    succeeded: str
    failed: str


@dataclass(frozen=True, slots=True)
class _Result:
    """A staged result or failure record, as fitted to ``limit`` bytes: its bytes alone.

    The jobs a catch-up released are all posted before the checkpoint that reports them, so
    at that moment a success record per job waits here, each with a dozen source offsets: as
    models about 4 kB each, as JSON about a quarter of that. The record is read back from its
    bytes only when Kafka refuses it as too large and it is fitted again.
    """

    kind: type[SuccessRecord] | type[FailureRecord]
    raw_key: bytes | None
    limit: int
    out: OutRecord
    #: the input position of the event a failure record reports (None: not an event's)
    source: tuple[TopicPartition, int] | None = None

    def record(self) -> SuccessRecord | FailureRecord:
        return self.kind.model_validate_json(self.out.value or b"")


@dataclass(frozen=True, slots=True)
class _StateRecord:
    """A job's changelog record, encoded only when its batch takes it.

    A checkpoint after a backlog writes every job's state; encoded up front, those values
    would be held all at once next to the states themselves (about doubling the memory at
    that moment). The state is the one staged (a reference the store holds anyway), and the
    encoded size is noted for ``basicsync_state_bytes`` as it is made.
    """

    topic: str
    key: bytes
    partition: int
    state: JobState
    sizes: dict[str, int]
    #: the value compressed alone (``consumer.domain.value_compression``)
    compress: bool
    #: the value parts of the intents written (see :class:`_IntentParts`)
    parts: _IntentParts
    #: the values of the ended states written, by job (see :meth:`Checkpoint._hold_ended`)
    ended: dict[str, tuple[JobState, bytes]]
    #: the header naming the group that writes it, if any (``consumer.state.continuity``)
    writer: list[tuple[str, bytes | None]]

    @property
    def value(self) -> bytes:
        state = self.state
        value = self.parts.encode(state)
        if self.compress:
            value = compressed(value)
        self.sizes[state.client_job_id] = len(value)
        if is_ended(state):
            self.ended[state.client_job_id] = (state, value)
        return value

    @property
    def headers(self) -> list[tuple[str, bytes | None]]:
        """The writer's group, and a settled state's mark (``consumer.domain.settled``), so a
        restore need not read it."""
        settled = settled_header(self.state)
        return self.writer if settled is None else [*self.writer, (SETTLED_HEADER, settled)]


class _IntentParts:
    """The value parts (``consumer.domain.state_codec.ValueParts``) of each job's last intent
    written, until its settled state is.

    Every request writes the job's state twice, its intent and then its settled state, and
    between the two only the bookkeeping changes: the settled value is the intent's head and
    document around new bookkeeping, a fifth of the encoding's cost (the step texts unpacked
    and the clocks grouped once per request instead of twice). Parts are kept for at most
    :data:`_INTENT_PARTS_KEPT` jobs, the oldest let go first (a job whose request never
    settles here, revoked or failing, is encoded whole again if it comes back), and they only
    serve a state holding the very objects they were made from.
    """

    def __init__(self) -> None:
        self._kept: dict[str, ValueParts] = {}

    def encode(self, state: JobState) -> bytes:
        job = state.client_job_id
        parts = self._kept.pop(job, None)
        if parts is None or not parts.fits(state):
            parts = value_parts(state)
        if state.sending_since is not None:
            self._kept[job] = parts
            if len(self._kept) > _INTENT_PARTS_KEPT:
                del self._kept[next(iter(self._kept))]
        return encode_state(state, parts)

    def __len__(self) -> int:
        return len(self._kept)


#: Jobs whose intent's value parts are kept: more than sync.concurrency plus the intent stage
#: (``consumer.sync.admission``, at most 16 times it) at the default concurrency of 32; each
#: holds about a job state's JSON (11 kB for a demo job).
_INTENT_PARTS_KEPT = 1024


@dataclass
class _Pending:
    forgotten: list[str] = field(default_factory=list)
    markers: dict[str, ForgottenJob] = field(default_factory=dict)
    jobs: set[str] = field(default_factory=set)
    results: list[_Result] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    #: jobs the scheduler changed (a request's mark or outcome): never left to an intent
    own: set[str] = field(default_factory=set)
    #: per job changed by events since its state was last taken to be written: the offset of
    #: the first such event, per input topic partition (see ``consumer.state.deferral``)
    firsts: dict[str, dict[TopicPartition, int]] = field(default_factory=dict)
    #: jobs a live checkpoint left to their intents: still to write, not in ``pending_jobs``
    left: set[str] = field(default_factory=set)
    #: live checkpoints in a row that left each job still unwritten (see ``LEFT_AT_MOST``)
    times_left: dict[str, int] = field(default_factory=dict)
    #: set once a transaction holding all of this has committed
    committed: bool = False
    #: a live checkpoint left part of this to a later commit: it never becomes ``committed``
    partial: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.forgotten or self.markers or self.jobs or self.left or self.results or self.offsets
        )

    def drop(self, jobs: Iterable[str]) -> None:
        """Nothing of ``jobs`` waits here any more (written by an intent, or forgotten)."""
        for job in jobs:
            self.jobs.discard(job)
            self.left.discard(job)
            self.own.discard(job)
            self.firsts.pop(job, None)
            self.times_left.pop(job, None)

    def merge_older(self, older: _Pending) -> None:
        """Put back what a failed commit took: ``older`` was staged before ``self``."""
        self.forgotten[:0] = older.forgotten
        self.markers = {**older.markers, **self.markers}
        self.jobs |= older.jobs
        self.left |= older.left - self.jobs
        self.own |= older.own
        for job in older.jobs:
            if job not in older.firsts:
                self.firsts.pop(job, None)  # its first change names no offset: never left
        self.times_left = {**older.times_left, **self.times_left}
        for job, firsts in older.firsts.items():
            mine = self.firsts.setdefault(job, {})
            for tp, offset in firsts.items():
                mine[tp] = min(offset, mine.get(tp, offset))
        self.results[:0] = older.results
        for tp, offset in older.offsets.items():
            self.offsets[tp] = max(offset, self.offsets.get(tp, offset))


#: The writer header of each changelog record from one offset to another of a partition:
#: ``(topic, partition, first, end, ours)``, those other than ``ours``
#: (``consumer.state.recovery.writers_between``).
WriterReader = Callable[[str, int, int, int, bytes], Awaitable[set[bytes | None]]]
#: The changelog's room for a job read from its configuration now (None: unread).
RoomReader = Callable[[], Awaitable[int | None]]
#: The longest a refused state waits for the changelog's configuration (a hung broker).
ROOM_READ_WITHIN_S = 10.0


class Checkpoint:
    """Stages the effects of each owned partition and commits them transactionally."""

    def __init__(
        self,
        store: JobStore,
        topics: CheckpointTopics,
        open_producer: Callable[[int], PartitionProducer],
        *,
        result_limit: int = RESULT_RECORD_BYTES,
        compress_values: bool = True,
        owner: ChangelogOwner | None = None,
        read_writers: WriterReader | None = None,
        room: ChangelogRoom | None = None,
        read_room: RoomReader | None = None,
    ) -> None:
        self._store = store
        #: what the changelog holds for a job, lowered when it refuses a state within it
        self._room = room or ChangelogRoom()
        self._read_room = read_room
        #: times the room was lowered, and per partition how often it had been when taken
        self._room_lowered = 0
        self._taken_under: dict[int, int] = {}
        #: per partition, jobs whose state the changelog refused although its room did not
        #: shrink, with the version refused: a state held from before a lower limit, not
        #: written again while no event changes it (see :meth:`_refused_states`)
        self._unwritable: dict[int, dict[str, int]] = {}
        #: who wrote a changelog partition's offsets that a commit did not expect (see
        #: ``PartitionProducer.count_from``); None: not asked, nor checked
        self._read_writers = read_writers
        self._compress_values = compress_values
        #: on every changelog record: the group that wrote it (``consumer.state.continuity``)
        self._writer: list[tuple[str, bytes | None]] = [] if owner is None else [owner.header()]
        self._result_limit = result_limit
        #: result and failure records reduced to fit (for metrics and tests)
        self.reduced_records = 0
        self._topics = topics
        self._open_producer = open_producer
        self._producers: dict[int, PartitionProducer] = {}
        self._pending: dict[int, _Pending] = {}
        #: jobs whose states intents wait for (see :meth:`make_durable`)
        self._intents: dict[int, _Pending] = {}
        #: per partition, the end of the commit in progress (see :meth:`_committing`)
        self._commits: dict[int, asyncio.Future[None]] = {}
        self._lost: set[int] = set()
        #: partition -> why its changelog is not the one it wrote before (found at a commit)
        self.replaced: dict[int, str] = {}
        #: partitions whose changelog another producer wrote to while this member owned them,
        #: and how it showed (``consumer.errors.ChangelogWrittenElsewhere``)
        self.written_elsewhere: dict[int, str] = {}
        #: the changelog start offset of each partition when this member took it
        self._taken_start: dict[int, int] = {}
        #: partition -> key -> bytes of its latest changelog value (the state's stored size)
        self._value_bytes: dict[int, dict[str, int]] = {}
        #: transactions committed, per partition (for metrics and tests)
        self.commits = 0
        #: the input offsets last committed, per partition, from the take on (a live
        #: checkpoint that would only commit these again commits nothing)
        self._committed_offsets: dict[int, dict[TopicPartition, int]] = {}
        self._posts_soon: Callable[[str], bool] | None = None
        self._intent_parts = _IntentParts()

    # -- ownership -------------------------------------------------------------------------------

    def owns(self, partition: int) -> bool:
        return partition in self._producers

    @property
    def unwritten_jobs(self) -> int:
        """Jobs left unwritten by :meth:`_refused_states`, over the owned partitions."""
        return sum(len(jobs) for jobs in self._unwritable.values())

    @property
    def changelog_room(self) -> int | None:
        """What the changelog holds for a job's key and state (None: what ``max_job_bytes``
        needs): the intake's job limit (``consumer.kafka.limits.ChangelogRoom``)."""
        return self._room.bytes

    def leave_to_intents_when(self, posts_soon: Callable[[str], bool]) -> None:
        """A live checkpoint leaves a job changed by events to its intent when ``posts_soon``
        says its request is about to be made (``consumer.state.deferral``)."""
        self._posts_soon = posts_soon

    @property
    def partitions(self) -> set[int]:
        return set(self._producers)

    async def open(self, partition: int) -> None:
        """Start the partition's producer: from now on this member alone writes for it."""
        if partition in self._producers:
            return
        producer = self._open_producer(partition)
        try:
            await producer.start()
        except BaseException:
            # A start that fails or is cancelled (a shutdown during a rebalance) may have
            # started the producer's sender: stopped here, as nothing else holds it.
            await _stop_quietly(producer, partition)
            raise
        self._producers[partition] = producer
        self._taken_under[partition] = self._room_lowered
        self._taken_start.pop(partition, None)
        self._committed_offsets.pop(partition, None)
        self._pending[partition] = _Pending()
        self._intents[partition] = _Pending()
        self._lost.discard(partition)

    async def close(self, partition: int) -> None:
        """Stop writing for ``partition``; what is staged and not committed is dropped."""
        producer = self._producers.pop(partition, None)
        self._unwritable.pop(partition, None)
        self._pending.pop(partition, None)
        self._intents.pop(partition, None)
        if producer is not None:
            await producer.stop()

    async def close_all(self) -> None:
        """Close every partition's producer, together: one that waits on the broker (its
        transaction abandoned) must not keep the others from closing."""
        await asyncio.gather(*(self.close(partition) for partition in list(self._producers)))

    def taken(
        self,
        partition: int,
        changelog: ChangelogBounds,
        committed: Mapping[TopicPartition, OffsetAndMetadata],
    ) -> str | None:
        """Note the changelog partition's offsets and the group's committed input offsets of
        ``partition`` as this member takes it (both read after :meth:`open` fenced every
        other writer). Returns why that changelog is not the one those offsets were committed
        with, if it is not (``consumer.state.continuity``)."""
        self._taken_start[partition] = changelog.start
        producer = self._producers.get(partition)
        if producer is not None:
            # From here on, only it writes the changelog partition.
            watched = self._read_writers is not None and bool(self._writer)
            tp = TopicPartition(self._topics.changelog, partition)
            producer.count_from(tp, changelog.end, self._whose_gap if watched else None)
        self._committed_offsets[partition] = {tp: c.offset for tp, c in committed.items()}
        metadata = [c.metadata for c in committed.values()]
        return broken_continuity(self._topics.changelog, partition, metadata, changelog)

    async def _whose_gap(self, tp: TopicPartition, first: int, end: int) -> str | None:
        """Another writer of ``tp``'s offsets ``first`` to ``end``, described; None when every
        record there names this member's group (its own, uncounted: a transaction it repeated
        after a broker restart, say) or there is none (transaction markers only)."""
        ours = self._writer[0][1]
        assert self._read_writers is not None
        assert ours is not None
        found = await self._read_writers(tp.topic, tp.partition, first, end, ours)
        others = sorted(found, key=lambda writer: writer or b"")
        if not others:
            return None
        named = [repr(w.decode(errors="replace")) for w in others if w is not None]
        described = [f"consumer group {', '.join(named)}"] if named else []
        if None in others:
            described.append("a producer naming no group (by hand, or another tool)")
        return " and ".join(described)

    def known_end(self, partition: int) -> int | None:
        """The changelog end this member's own writes explain (None: not taken since it was
        opened): its producer's count (``PartitionProducer.known_end``)."""
        producer = self._producers.get(partition)
        tp = TopicPartition(self._topics.changelog, partition)
        return None if producer is None else producer.known_end(tp)

    def track_sizes(self, partition: int, value_bytes: dict[str, int]) -> None:
        """The partition's stored sizes, as a restore read them."""
        self._value_bytes[partition] = dict(value_bytes)

    def forget_sizes(self, partition: int) -> None:
        self._value_bytes.pop(partition, None)

    @property
    def stored_bytes(self) -> int:
        """Bytes of the latest changelog value of every job held (the ``state_bytes`` metric)."""
        return sum(sum(sizes.values()) for sizes in self._value_bytes.values())

    def commit_trouble(self) -> CommitTrouble | None:
        """The owned partition whose commit has failed for longest, if one is failing now."""
        failing = [p.trouble for p in self._producers.values() if p.trouble is not None]
        return min(failing, key=lambda trouble: trouble.since, default=None)

    def take_lost(self) -> set[int]:
        """Partitions lost since the last call (fenced, or broken beyond retrying)."""
        lost, self._lost = self._lost, set()
        return lost

    # -- staging ---------------------------------------------------------------------------------

    def stage_changed(self, partition: int, client_job_id: str) -> None:
        """The job's state in the store changed; the next commit of its partition writes it."""
        pending = self._pending.get(partition)
        if pending is not None:
            pending.jobs.add(client_job_id)
            pending.own.add(client_job_id)
            pending.left.discard(client_job_id)

    def stage_applied(
        self, partition: int, client_job_id: str, offsets: Iterable[Position]
    ) -> None:
        """Events at ``offsets`` (in order) changed the job: the next commit writes it, or a
        live one leaves it to its intent and commits the offsets only up to the first."""
        pending = self._pending.get(partition)
        if pending is None:
            return
        firsts = pending.firsts.get(client_job_id)
        if firsts is None and (client_job_id in pending.jobs or client_job_id in pending.left):
            return  # changed before by what no offset names: written by the next commit
        pending.jobs.add(client_job_id)
        pending.left.discard(client_job_id)
        # The first of each topic partition: a plain tuple finds a TopicPartition key (a named
        # tuple), so one is made per topic partition, not per event.
        for offset in offsets:
            if firsts is None:
                firsts = pending.firsts[client_job_id] = {}
            place = (offset.topic, offset.partition)
            if place not in firsts:
                firsts[TopicPartition(*place)] = offset.offset

    def stage_forgotten(self, partition: int, client_job_id: str) -> None:
        """Tombstone the key (a job or a marker dropped after retention)."""
        pending = self._pending.get(partition)
        if pending is not None:
            pending.forgotten.append(client_job_id)
            pending.drop((client_job_id,))
            pending.markers.pop(client_job_id, None)
        self._unwritable.get(partition, {}).pop(client_job_id, None)

    def stage_marker(self, partition: int, marker: ForgottenJob) -> None:
        """Write ``marker`` as the value of its key: the job is forgotten, not gone."""
        pending = self._pending.get(partition)
        if pending is not None:
            pending.markers[marker.client_job_id] = marker
            pending.drop((marker.client_job_id,))
        self._unwritable.get(partition, {}).pop(marker.client_job_id, None)

    def stage_result(
        self, partition: int, record: SuccessRecord | FailureRecord, raw_key: bytes | None = None
    ) -> None:
        """A result or failure record, keyed by clientJobId (or the raw input key), fitted
        to the result record limit."""
        pending = self._pending.get(partition)
        if pending is None:
            return
        pending.results.append(self._fit(partition, record, raw_key, self._result_limit))

    def _fit(
        self,
        partition: int,
        record: SuccessRecord | FailureRecord,
        raw_key: bytes | None,
        limit: int,
    ) -> _Result:
        fitted = fit_record(record, limit, raw_key)
        if fitted.reduced:
            self.reduced_records += 1
            log.warning(
                "result_record_reduced",
                partition=partition,
                client_job_id=record.client_job_id,
                outcome=record.outcome,
                limit_bytes=limit,
                size_bytes=len(record.to_json_bytes()),
                reduced_to_bytes=len(fitted.value),
            )
        topic = self._topics.succeeded if isinstance(record, SuccessRecord) else self._topics.failed
        out = OutRecord(topic=topic, key=fitted.key, value=fitted.value)
        event = record.source if isinstance(record, FailureRecord) else None
        if event is None:
            return _Result(type(record), raw_key, limit, out)
        source = (TopicPartition(event.topic, event.partition), event.offset)
        return _Result(type(record), raw_key, limit, out, source)

    def stage_offsets(self, partition: int, next_offsets: dict[tuple[str, int], int]) -> None:
        pending = self._pending.get(partition)
        if pending is None:
            return
        for (topic, number), offset in next_offsets.items():
            if number == partition:
                pending.offsets[TopicPartition(topic, number)] = offset

    def has_pending(self, partition: int) -> bool:
        return bool(self._pending.get(partition) or self._intents.get(partition))

    @property
    def pending_jobs(self) -> int:
        return sum(len(p.jobs) for p in self._pending.values())

    # -- committing ------------------------------------------------------------------------------

    async def commit(self, partitions: Iterable[int] | None = None, *, live: bool = False) -> None:
        """Commit what is staged for ``partitions`` (default: every owned one), concurrently.

        ``live``: the consume loop's checkpoint, which may leave jobs about to be posted to
        their intents (``consumer.state.deferral``); every other commit (a revoke, a stop)
        writes everything. A partition lost meanwhile is reported by :meth:`take_lost`.
        """
        wanted = set(self._producers) if partitions is None else set(partitions)
        todo = [p for p in wanted if self.has_pending(p)]
        if not todo:
            return
        results = await asyncio.gather(
            *(self.make_durable(p, live=live) for p in todo), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, PartitionLost):
                raise result

    async def make_durable(
        self, partition: int, only: Collection[str] | None = None, *, live: bool = False
    ) -> None:
        """Return once everything staged for ``partition`` so far is committed; with ``only``
        (an intent before a request), once the current states of those jobs are.

        An intent commits its jobs' states alone, in one transaction with the other intents
        waiting: not the partition's other changed jobs, results and offsets, which wait for
        the next full commit. During a backlog every job changes between two checkpoints, so a
        full commit per request would write every job again for each one posted. A state
        written ahead of its offsets is replayed onto after a crash; that is exact only while
        its events all come back as duplicates (``replays_as_duplicates``), so a job past that,
        or with a marker or tombstone staged, is committed with everything instead.

        Raises ``PartitionLost`` when this member may no longer write for the partition.
        """
        # What the caller staged is in these; a commit that takes it marks it committed.
        staged = self._pending.get(partition)
        alone = None if only is None else self._stage_alone(partition, only)
        async with self._committing(partition):
            producer = self._producers.get(partition)
            if producer is None:
                raise PartitionLost(partition, "not owned by this member")
            if (staged is not None and staged.committed) or (alone is not None and alone.committed):
                return  # a commit that ran while this call waited wrote it (group commit)
            pending, intents = self._pending.get(partition), self._intents.get(partition)
            if alone is None or not intents:
                if not pending and not intents:
                    return
                self._pending[partition] = _Pending()
                taken = pending or _Pending()
                if live:
                    self._leave_to_intents(partition, taken, intents or _Pending())
            else:
                taken = None
            self._intents[partition] = _Pending()
            with unbound_record():  # the partition's commit, whichever job's task runs it
                await self._commit_taken(partition, producer, taken, intents or _Pending())

    @asynccontextmanager
    async def _committing(self, partition: int) -> AsyncIterator[None]:
        """The partition's commits one at a time, every caller waiting for the commit in
        progress to end together.

        A lock queue wakes its waiters one by one, each once the one before it released the
        lock, a turn of the event loop each. The hundreds of intents one transaction commits
        under live load each found their intent committed only when their turn came: half a
        second in the lock's queue (median, 960 events/s on a 2-core machine) after a
        transaction of 80 ms. Here every waiter wakes in the same turn; the first to run
        commits what is staged by then, the others wait for that commit.
        """
        while (running := self._commits.get(partition)) is not None:
            # Shielded: a waiter cancelled (shutdown, a revoke) must not cancel the others'.
            await asyncio.shield(running)
        ended = asyncio.get_running_loop().create_future()
        self._commits[partition] = ended
        try:
            yield
        finally:
            del self._commits[partition]
            ended.set_result(None)

    def _leave_to_intents(self, partition: int, taken: _Pending, intents: _Pending) -> None:
        """Move the jobs of ``taken`` about to be posted to the partition's next commit, with
        the offsets and results that must wait for them (``consumer.state.deferral``).

        Only jobs changed by events alone (not by the scheduler, whose marks and outcomes
        are written at once), and only when every job of the commit replays its events as
        duplicates: the states written go ahead of the offsets, and so do the ones left,
        which a member that keeps its state across a rebalance replays onto.
        """
        posts_soon = self._posts_soon
        if posts_soon is None or taken.forgotten or taken.markers:
            return
        candidates = taken.jobs | taken.left
        times_left = taken.times_left
        left = {
            job
            for job in candidates
            if job in taken.firsts
            and job not in taken.own
            and job not in intents.jobs
            and times_left.get(job, 0) < LEFT_AT_MOST
            and posts_soon(job)
        }
        if not left:
            return
        for job in candidates:
            state = self._store.get(job)
            if state is not None and not replays_as_duplicates(state):
                return
        caps = offset_caps(taken.firsts[job] for job in left)
        offsets, later = capped_offsets(taken.offsets, caps)
        written_results = results_now([result.source for result in taken.results], caps)
        after = self._pending[partition]
        after.merge_older(
            _Pending(
                left=left,
                firsts={job: taken.firsts.pop(job) for job in left},
                times_left={job: times_left.get(job, 0) + 1 for job in left},
                results=taken.results[written_results:],
                offsets=later,
            )
        )
        del taken.results[written_results:]
        taken.jobs = candidates - left
        taken.left = set()
        taken.offsets = offsets
        taken.partial = True

    def _stage_alone(self, partition: int, jobs: Collection[str]) -> _Pending | None:
        """Add ``jobs`` to the partition's waiting intents, or None when one of them must be
        committed with everything (see :meth:`make_durable`)."""
        pending = self._pending.get(partition)
        if pending is None:
            return None
        for job in jobs:
            state = self._store.get(job)
            if (
                state is None
                or not replays_as_duplicates(state)
                or job in pending.markers
                or job in pending.forgotten
            ):
                return None
        intents = self._intents.setdefault(partition, _Pending())
        intents.jobs.update(jobs)
        return intents

    async def _commit_taken(
        self,
        partition: int,
        producer: PartitionProducer,
        pending: _Pending | None,
        intents: _Pending,
    ) -> None:
        """Commit ``pending`` with the ``intents`` (None: the intents alone)."""
        if pending is None:
            # The intents' states are written now: the next full commit need not again.
            self._pending[partition].drop(intents.jobs)
            work = _Pending(jobs=set(intents.jobs))
        else:
            pending.jobs |= intents.jobs | pending.left
            pending.left = set()
            work = pending
            if not pending.jobs and self._only_committed_offsets(partition, pending):
                return  # a live checkpoint left everything to the intents
        try:
            await self._commit_fitting(partition, producer, work)
        except PartitionLost as exc:
            log.warning("partition_lost", partition=partition, reason=str(exc))
            self._lost.add(partition)
            if self._producers.get(partition) is producer:
                await self.close(partition)
            raise
        except BaseException:
            # Cancelled (shutdown) or a bug: keep the work for the next commit. An intent's
            # jobs wait among the intents again, which no live commit leaves: the intent took
            # their first events' offsets with it.
            if partition in self._pending:
                self._pending[partition].merge_older(work)
                self._intents.setdefault(partition, _Pending()).jobs |= intents.jobs
            raise
        work.committed = not work.partial
        intents.committed = True
        self._committed_offsets.setdefault(partition, {}).update(work.offsets)
        self.commits += 1

    def _only_committed_offsets(self, partition: int, pending: _Pending) -> bool:
        """``pending`` holds no records, and only offsets already committed."""
        if pending.forgotten or pending.markers or pending.results:
            return False
        committed = self._committed_offsets.get(partition, {})
        return all(committed.get(tp) == offset for tp, offset in pending.offsets.items())

    async def _commit_fitting(
        self, partition: int, producer: PartitionProducer, pending: _Pending
    ) -> None:
        """Commit ``pending``; records Kafka refuses as too large are reduced and sent again."""
        while True:
            records, first_result, ended = self._records(partition, pending)
            changelog = TopicPartition(self._topics.changelog, partition)
            known = self.known_end(partition)
            # The end before this transaction: a floor of the end after it.
            floor = ChangelogFloor(
                changelog.topic, known or 0, start_at_most=self._taken_start.get(partition)
            )
            try:
                await producer.commit(records, pending.offsets, floor.metadata())
            except LogReplaced as exc:
                await self._mark_replaced(partition, producer, floor, str(exc))
                raise PartitionLost(partition, "its changelog was replaced") from None
            except LogWrittenElsewhere as exc:
                raise self._written_elsewhere(partition, exc) from None
            except RecordsTooLarge as exc:
                states = sorted(i for i in exc.indices if i < first_result)
                for index in sorted(i for i in exc.indices if i >= first_result):
                    held = pending.results[index - first_result]
                    limit = max(min(held.limit, len(held.out.value or b"")) // 2, MIN_LIMIT_BYTES)
                    if limit == held.limit:
                        states.append(index)  # cannot get smaller: nothing but waiting helps
                        continue
                    record = held.record()
                    pending.results[index - first_result] = self._fit(
                        partition, record, held.raw_key, limit
                    )
                    log.warning(
                        "result_record_refused_too_large",
                        partition=partition,
                        client_job_id=record.client_job_id,
                        error=str(exc),
                        retry_with_bytes=limit,
                    )
                if states:
                    await self._refused_states(partition, pending, [records[i] for i in states])
            else:
                self._hold_ended(partition, ended)
                return

    async def _refused_states(
        self, partition: int, pending: _Pending, refused: Sequence[Producible]
    ) -> None:
        """The changelog refused job states as too large: its ``max.message.bytes`` is below
        what the member took it to hold (lowered under it, or unread).

        If that shrinks the room, the jobs of the partition may hold events applied under the
        larger one: the partition is given up (``PartitionLost``) and taken again, restored
        from its last commit, and the events after it are applied under the new room, so a
        job that outgrows it gets its ``job_too_large`` there. If the room did not shrink,
        the refused states are above it without any event having grown them (the intake
        keeps a job under the room it was taken with): states held from before the topic
        was lowered, whose flags and request marks only are lost by not writing them
        (``job_state_not_written``). A partition taken before the room last shrank is
        taken again instead: its states may have been grown under the older room.
        """
        sizes = [len(record.key or b"") + len(record.value or b"") for record in refused]
        keys = [(record.key or b"").decode(errors="replace") for record in refused]
        described = await self._described_room()
        lowered = self._room.lower(min(sizes), described)
        log.error(
            "changelog_record_too_large",
            partition=partition,
            keys=keys,
            sizes=sizes,
            room=self._room.bytes,
            action=f"jobs whose key and state pass {self._room.bytes} bytes get job_too_large; "
            "raise the changelog topic's max.message.bytes to hold more (basicsync check)",
        )
        if lowered:
            self._room_lowered += 1
        if lowered or self._taken_under.get(partition) != self._room_lowered:
            raise PartitionLost(partition, "its changelog holds less: read again under its limit")
        unwritable = self._unwritable.setdefault(partition, {})
        for key in keys:
            state = self._store.get(key)
            if state is not None:
                unwritable[key] = state.version
            pending.jobs.discard(key)
            pending.left.discard(key)
            log.error(
                "job_state_not_written",
                partition=partition,
                client_job_id=key,
                room=self._room.bytes,
                consequence="the job keeps its last written state in the changelog; what "
                "changed since without an event (its too-large flag, a request's mark) is "
                "not kept across a restart",
            )

    async def _described_room(self) -> int | None:
        """The changelog's room read from its configuration now (None: unread)."""
        if self._read_room is None:
            return None
        try:
            async with asyncio.timeout(ROOM_READ_WITHIN_S):
                return await self._read_room()
        except Exception as exc:  # the refused size still bounds it
            log.warning("changelog_limit_unread", error=repr(exc))
            return None

    def _written_elsewhere(self, partition: int, found: LogWrittenElsewhere) -> PartitionLost:
        """Note another producer found writing the partition's changelog (the consume loop
        stops on it: ``ChangelogWrittenElsewhere``); the partition is lost to this member."""
        self.written_elsewhere[partition] = str(found)
        log.error("changelog_written_elsewhere", partition=partition, error=str(found))
        return PartitionLost(partition, "another producer writes its changelog")

    def _hold_ended(self, partition: int, ended: Mapping[str, tuple[JobState, bytes]]) -> None:
        """Keep each ended job just committed as the value written, as a restore would
        (``consumer.domain.settled``): compressed (the default), about a fifth of its state's
        memory, and one object for the garbage collector to walk instead of about fifteen.
        Not a job that changed since: the store holds another state then."""
        for job, (state, value) in ended.items():
            if self._store.held(job) is state:
                self._store.put(partition, SettledJob(job, value, state.updated_at, terminal=True))

    async def _mark_replaced(
        self, partition: int, producer: PartitionProducer, floor: ChangelogFloor, why: str
    ) -> None:
        """Note a changelog found replaced by a commit, and commit the partition's offsets
        again marked so: the next take refuses the partition whatever the changelog's end is
        by then (``consumer.state.continuity``). No offset moves: only those committed with
        their effects are committed again."""
        self.replaced[partition] = f"{replaced_while_written(floor.changelog, partition)} ({why})"
        log.error("changelog_replaced", partitions=[partition], error=self.replaced[partition])
        committed = self._committed_offsets.get(partition)
        if not committed:
            return  # the group has none: a take starts the partition from the earliest
        try:
            marked = replace(floor, replaced=True).metadata()
            await producer.commit([], committed, marked)
        except Exception as exc:  # the member stops either way; the take's check remains
            log.warning("changelog_replaced_mark_failed", partition=partition, error=repr(exc))

    def _records(
        self, partition: int, pending: _Pending
    ) -> tuple[list[Producible], int, dict[str, tuple[JobState, bytes]]]:
        """The transaction's records, the index of its first result record, and where the
        values of the ended states among them are put as they are made."""
        changelog = self._topics.changelog
        sizes = self._value_bytes.setdefault(partition, {})
        ended: dict[str, tuple[JobState, bytes]] = {}
        writer = self._writer
        records: list[Producible] = [
            OutRecord(changelog, job.encode(), None, partition, writer) for job in pending.forgotten
        ]
        for job in pending.forgotten:
            sizes.pop(job, None)
        for job, marker in pending.markers.items():
            value = marker.to_json_bytes()
            sizes[job] = len(value)
            records.append(OutRecord(changelog, job.encode(), value, partition, writer))
        unwritable = self._unwritable.get(partition, {})
        for job in pending.jobs:
            state = self._store.get(job)
            if state is not None and unwritable.get(job) == state.version:
                continue  # refused, and changed by no event since (see _refused_states)
            if state is not None and self._store.partition_of(job) == partition:
                records.append(
                    _StateRecord(
                        changelog,
                        job.encode(),
                        partition,
                        state,
                        sizes,
                        self._compress_values,
                        self._intent_parts,
                        ended,
                        writer,
                    )
                )
        first_result = len(records)
        records.extend(result.out for result in pending.results)
        return records, first_result, ended


async def _stop_quietly(producer: PartitionProducer, partition: int) -> None:
    try:
        await producer.stop()
    except Exception as exc:  # the start's own error is the one raised
        log.warning("producer_stop_failed", partition=partition, error=type(exc).__name__)
