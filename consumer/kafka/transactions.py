"""One transactional producer per owned input partition: Kafka's own fencing of zombies.

Partition ``p``'s producer has the transactional id ``<group_id>.<p>``. Starting it
(``InitProducerId``) bumps the id's epoch at the transaction coordinator, which

- fences every earlier producer with that id: a member that missed a rebalance (SIGSTOP, GC
  pause, a revoke that overran the session) gets ``ProducerFenced`` on its next write or
  commit, never a silent success;
- finishes the earlier producer's open transaction (aborts it, or completes a commit already
  prepared) before ``start`` returns, so the changelog, the result topics and the committed
  input offsets of ``p`` are stable when the new owner reads them.

Everything one commit writes for ``p`` (changelog records, result and failure records, the
input offsets of ``p`` on every input topic) is one transaction: all of it is visible to
``read_committed`` readers, or none of it.

aiokafka 0.14 sends ``TxnOffsetCommit`` with the group id only (no KIP-447 generation or member
id), so the group coordinator does not check who commits. The per-partition transactional id is
what fences (the pre-KIP-447 scheme of Kafka Streams' first exactly-once mode): it costs one
producer per owned partition, and it means an offset commit is fenced only once the new owner
has started its producer for that partition, which it does before it restores or reads anything.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    IllegalOperation,
    InvalidProducerEpoch,
    KafkaError,
    MessageSizeTooLargeError,
    ProducerFenced,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import OffsetAndMetadata

from consumer.errors import PartitionLost, RecordsTooLarge
from consumer.kafka.partitioning import hashes_to
from consumer.kafka.starting import start_client

log = structlog.get_logger(__name__)

_DENIALS = (
    TopicAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    ClusterAuthorizationFailedError,
)


#: Who wrote a topic partition's records from one offset to another: a description of a
#: writer other than this member, or None when every record there is this member's.
GapReader = Callable[[TopicPartition, int, int], Awaitable[str | None]]

#: The longest a commit waits to learn who wrote the offsets it did not expect: past it, the
#: commit goes on (every record's writer is checked again by the next restore).
GAP_READ_TIMEOUT_S = 10.0


def transactional_id(group_id: str, partition: int) -> str:
    """The transactional id of an input partition: ``<group_id>.<partition>``."""
    return f"{group_id}.{partition}"


class Producible(Protocol):
    """What a transaction writes: a record whose value may be made only when its batch takes
    it (a backlog's checkpoint writes every job's state, which need not all be held at once)."""

    @property
    def topic(self) -> str: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def partition(self) -> int | None: ...

    @property
    def headers(self) -> list[tuple[str, bytes | None]]: ...


#: Which of the topics named no longer exist (asked of the cluster).
TopicsGone = Callable[[set[str]], Awaitable[set[str]]]
#: How long adding the offsets to a transaction may take before their topics are checked.
OFFSETS_STUCK_S = 10.0


@dataclass(frozen=True, slots=True)
class CommitTrouble:
    """A partition's commit that has failed, or waited past ``slow_after_s`` without an
    answer: nothing of the partition is durable meanwhile (so nothing of it is posted). Set
    until the commit returns or raises; read by ``/readyz`` and ``/metrics``."""

    partition: int
    #: ``time.monotonic()`` of the commit's start (slow) or of its first failed attempt
    since: float
    failed_attempts: int
    #: the last attempt's error, or what a commit without an answer waits for
    detail: str

    def describe(self, now: float) -> str:
        seconds = now - self.since
        if self.failed_attempts == 0:
            return f"partition {self.partition}: a commit waiting {seconds:.0f}s for {self.detail}"
        return (
            f"partition {self.partition}: commits failing for {seconds:.0f}s "
            f"({self.failed_attempts} attempts), last: {self.detail}"
        )


@dataclass(frozen=True, slots=True)
class OutRecord:
    """A record to produce; ``partition`` None lets the key choose (result topics)."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)


class PartitionProducer:
    """The transactional writer of one input partition's effects."""

    def __init__(
        self,
        producer_factory: Callable[..., AIOKafkaProducer],
        group_id: str,
        partition: int,
        *,
        max_record_bytes: int = 1 << 20,
        retry_backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        slow_after_s: float = 10.0,
        uncompressed_topics: frozenset[str] = frozenset(),
        max_batch_bytes: int = 1 << 20,
        topics_gone: TopicsGone | None = None,
        offsets_stuck_s: float = OFFSETS_STUCK_S,
    ) -> None:
        self.partition = partition
        #: topics whose values are compressed alone (``consumer.domain.value_compression``):
        #: their batches are sent as they are, not compressed again
        self._uncompressed_topics = uncompressed_topics
        self._max_batch_bytes = max_batch_bytes
        #: per topic, the batch size learned from the broker refusing a larger batch as too
        #: large (a topic whose ``max.message.bytes`` is below ``max_batch_bytes``)
        self._batch_bytes: dict[str, int] = {}
        self.transactional_id = transactional_id(group_id, partition)
        self._group_id = group_id
        self._producer = producer_factory(transactional_id=self.transactional_id)
        self._max_record_bytes = max_record_bytes
        self._retry_backoff_s = retry_backoff_s
        self._max_backoff_s = max_backoff_s
        self._closed = False
        self._slow_after_s = slow_after_s
        self._topics_gone = topics_gone
        self._offsets_stuck_s = offsets_stuck_s
        #: what the commit in progress waits for, named in ``checkpoint_slow``
        self._stage = "idle"
        self._slow_watch: asyncio.TimerHandle | None = None
        #: the commit in progress once it failed or waited past ``slow_after_s``; None again
        #: when it returns or raises
        self.trouble: CommitTrouble | None = None
        #: per topic partition counted (:meth:`count_from`), the end offset this producer's own
        #: writes explain: always at most the real end, exactly it while in ``_exact``
        self._ends: dict[TopicPartition, int] = {}
        #: the counted partitions whose end nothing uncounted (a failed transaction's records
        #: and abort marker, an offset not acknowledged) has moved since it was counted
        self._exact: set[TopicPartition] = set()
        #: the counted partitions only this producer writes to: who wrote their gaps
        self._whose_gap: dict[TopicPartition, GapReader] = {}

    def count_from(self, tp: TopicPartition, end: int, whose_gap: GapReader | None) -> None:
        """``tp`` ends at ``end`` now (read after :meth:`start` fenced every earlier producer):
        from here on this producer counts where its own writes leave it (:meth:`known_end`).

        A record acknowledged below that count means the topic was deleted and created again
        (or lost records) since: the transaction is aborted and ``LogReplaced`` raised, before
        anything of it counts.

        With ``whose_gap``, only this producer writes to ``tp`` from here on, and each commit
        checks that its first record there lands right where the count says (past its last
        record and that transaction's commit marker). One acknowledged further on is asked
        about (``whose_gap``, from the offset its own commit marker was to take: another's
        record appended before that marker pushed it on): the offsets between may hold
        another producer's records (then the transaction is aborted and
        ``LogWrittenElsewhere`` raised), or only markers and records of this producer's own
        that it could not count (a broker restarted under a transaction leaves such a
        marker). A transaction that fails leaves records and an abort marker nobody counted:
        the count is then only a floor, and the check off, until a commit of this producer
        wrote to ``tp`` again.
        """
        self._ends[tp] = end
        self._exact.add(tp)
        if whose_gap is None:
            self._whose_gap.pop(tp, None)
        else:
            self._whose_gap[tp] = whose_gap

    def known_end(self, tp: TopicPartition) -> int | None:
        """The end of ``tp`` this producer's own writes explain: the end it was counted from,
        or past the commit marker of its last committed record (None: not counted). Counted,
        never read back: a member that took over meanwhile may have written, and its writes
        must show when this one's count is compared with the end."""
        return self._ends.get(tp)

    async def start(self) -> None:
        """Fence every earlier producer of this partition; raises ``PartitionLost`` if refused."""
        try:
            await start_client(self._producer.start())
        except BaseException:
            await self._producer.stop()
            raise

    async def stop(self) -> None:
        self._closed = True
        try:
            await self._producer.stop()
        finally:
            self._read_leftover_errors()

    def _read_leftover_errors(self) -> None:
        """Mark as seen the errors aiokafka leaves in futures nobody awaits once its sender
        died (fenced): the transaction's end, and each unsent batch's drain. The failure was
        the commit's, raised and reported there; unread, asyncio logs each of these as "Future
        exception was never retrieved", with a traceback, when it is collected (six such
        errors at the shutdown of a member fenced once). aiokafka has no public accessor for
        either, hence the guarded reads."""
        producer = self._producer
        transaction_end = getattr(self._manager, "wait_for_transaction_end", None)
        waiters: list[Any] = [None if transaction_end is None else transaction_end()]
        accumulator = getattr(producer, "_message_accumulator", None)
        for batch in [
            *(b for queued in getattr(accumulator, "_batches", {}).values() for b in queued),
            *getattr(accumulator, "_pending_batches", ()),
        ]:
            waiters.append(getattr(batch, "_drain_waiter", None))
        for waiter in waiters:
            if isinstance(waiter, asyncio.Future) and waiter.done():
                _read_outcome(waiter)

    async def commit(
        self,
        records: Sequence[Producible],
        offsets: Mapping[TopicPartition, int],
        metadata: str = "",
    ) -> dict[TopicPartition, int]:
        """Write ``records`` and commit ``offsets`` (next offsets to read), each with
        ``metadata`` (``consumer.state.continuity``), in one transaction.

        Returns the offset of the last record written to each topic partition.

        Raises ``LogReplaced`` and ``LogWrittenElsewhere`` as :meth:`count_from` says.

        Transient failures (a broker that does not answer, a leader moving, a coordinator
        loading) abort the transaction and repeat it whole: writing the same states and records
        again is harmless, and nothing counts until the commit. It returns once the commit is
        acknowledged, and raises ``PartitionLost`` when Kafka says another producer owns the
        partition now, or when :meth:`stop` was called meanwhile (the partition was revoked).
        """
        self._watch_slow(time.monotonic(), first=True)
        try:
            marked = {tp: OffsetAndMetadata(offset, metadata) for tp, offset in offsets.items()}
            return await self._commit(records, marked)
        finally:
            if self._slow_watch is not None:
                self._slow_watch.cancel()
            self._stage = "idle"
            self.trouble = None

    def _watch_slow(self, started: float, *, first: bool = False) -> None:
        """Log ``checkpoint_slow`` every ``slow_after_s`` while a commit has not returned.

        A commit that fails is retried and logged (``checkpoint_retry``); one that waits
        without an error, on an answer aiokafka never times out, would otherwise hold every
        intent, result and offset of the partition without a trace of where.
        """
        if not first:
            log.warning(
                "checkpoint_slow",
                partition=self.partition,
                waiting_for=self._stage,
                seconds=round(time.monotonic() - started, 1),
            )
            if self.trouble is None or self.trouble.failed_attempts == 0:
                self.trouble = CommitTrouble(self.partition, started, 0, self._stage)
        loop = asyncio.get_running_loop()
        self._slow_watch = loop.call_later(
            # Not the context of the caller: an intent's names one job of the group commit.
            self._slow_after_s,
            self._watch_slow,
            started,
            context=contextvars.Context(),
        )

    async def _commit(
        self,
        records: Sequence[Producible],
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
    ) -> dict[TopicPartition, int]:
        attempt = 0
        # A commit cancelled midway (a stop's or a revoke's deadline) left its transaction open.
        await self._abort()
        while True:
            if self._closed:
                raise PartitionLost(self.partition, "revoked while committing")
            attempt += 1
            try:
                written = await self._transaction(records, offsets)
                if attempt > 1:
                    log.info("checkpoint_recovered", partition=self.partition, attempts=attempt)
                return written
            except (ProducerFenced, InvalidProducerEpoch) as exc:
                raise PartitionLost(self.partition, f"fenced by a newer owner ({exc})") from None
            except (*_DENIALS, LogReplaced, LogWrittenElsewhere):
                # A missing ACL, or a topic replaced: no retry in place helps; the caller
                # reports it (and waits, or stops).
                await self._abort()
                raise
            except RecordsTooLarge:
                if self._fatal():
                    raise PartitionLost(self.partition, "producer failed") from None
                await self._abort()
                raise
            except _BatchesSplit as split:
                # Smaller batches from now on; the records themselves may all fit.
                log.warning(
                    "record_batch_refused_too_large",
                    partition=self.partition,
                    topics=split.topics,
                    action="sending smaller batches; raise the topics' max.message.bytes",
                )
                if self._fatal():
                    raise PartitionLost(self.partition, "producer failed") from None
                await self._abort()
            except (KafkaError, AssertionError, IllegalOperation) as exc:
                # AssertionError, IllegalOperation: aiokafka's transaction state machine refusing
                # a transition or a send after its sender died (fenced meanwhile); the producer
                # is unusable then.
                if self._fatal():
                    raise PartitionLost(self.partition, _describe(exc)) from None
                delay = min(self._retry_backoff_s * 2 ** min(attempt - 1, 10), self._max_backoff_s)
                since = self.trouble.since if self.trouble is not None else time.monotonic()
                self.trouble = CommitTrouble(self.partition, since, attempt, _describe(exc))
                log.warning(
                    "checkpoint_retry",
                    partition=self.partition,
                    attempt=attempt,
                    error=_describe(exc),
                    retry_in_s=round(delay, 2),
                )
                await self._abort()
                self._stage = "retry backoff"
                await asyncio.sleep(delay)

    async def _transaction(
        self,
        records: Sequence[Producible],
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
    ) -> dict[TopicPartition, int]:
        batches: list[_Sent] = []
        try:
            return await self._write(records, offsets, batches)
        except BaseException:
            self._exact.clear()  # its records and its abort marker took offsets nobody counted
            # A transaction that failed midway (a broker restarting under it, say) leaves the
            # acknowledgements of the batches it sent unawaited. Their errors are this
            # failure's, handled by the caller; unread, asyncio logs each as "Future exception
            # was never retrieved", with a traceback, when it is collected.
            for sent in batches:
                sent.acknowledged.add_done_callback(_read_outcome)
            raise

    async def _write(
        self,
        records: Sequence[Producible],
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
        batches: list[_Sent],
    ) -> dict[TopicPartition, int]:
        """One transaction: ``records`` and ``offsets`` written and committed. Each batch sent
        is added to ``batches`` with its acknowledgement as soon as it is sent."""
        producer = self._producer
        self._stage = "begin_transaction"
        await producer.begin_transaction()
        too_large: dict[int, str] = {}
        self._stage = "result topic metadata"
        for tp, indexed in (await self._by_partition(records)).items():
            sequence = self._sequence_number(tp)
            for indices, batch in self._batches(indexed, too_large):
                self._stage = f"send to {tp.topic}-{tp.partition}"
                size = batch.size()
                sent = await producer.send_batch(batch, tp.topic, partition=tp.partition)
                batches.append(_Sent(tp, indices, size, sequence, sent))
                # Each batch's values are made (encoded) as it fills: a checkpoint of thousands
                # of states made without a turn of the event loop would hold every response and
                # every other partition's commit until the last one.
                await asyncio.sleep(0)
        if offsets and not too_large:
            self._stage = "send_offsets_to_transaction"
            await self._send_offsets(producer, offsets)
        self._stage = "acknowledgements"
        # Every batch acknowledged before the commit: one the broker refused (too large, not
        # authorized) fails the transaction instead of leaving a silent gap in it.
        outcomes = await asyncio.gather(
            *(sent.acknowledged for sent in batches), return_exceptions=True
        )
        split = self._refused_as_too_large(batches, outcomes, too_large)
        if too_large:
            raise RecordsTooLarge(self.partition, set(too_large), next(iter(too_large.values())))
        if split:
            raise _BatchesSplit(split)
        written: dict[TopicPartition, int] = {}
        unknown: set[TopicPartition] = set()
        for sent, acknowledged in zip(batches, outcomes, strict=True):
            if isinstance(acknowledged, BaseException):
                raise acknowledged
            floor = self._ends.get(sent.tp)
            # The batch's first record; -1 when unknown: a retried batch the broker found
            # already written, too long ago to have kept its offset (DuplicateSequenceNumber).
            if floor is not None and 0 <= acknowledged.offset < floor:
                raise LogReplaced(sent.tp, acknowledged.offset, floor)
            if acknowledged.offset < 0:
                unknown.add(sent.tp)
            elif sent.tp in self._exact and sent.tp not in unknown:
                await self._check_landing(sent.tp, acknowledged.offset, written.get(sent.tp))
            last = acknowledged.offset + len(sent.indices) - 1  # a batch's offsets are consecutive
            written[sent.tp] = max(last, written.get(sent.tp, -1))
        self._stage = "commit_transaction"
        await producer.commit_transaction()
        self._count_ends(written, unknown)
        return written

    async def _check_landing(self, tp: TopicPartition, offset: int, before: int | None) -> None:
        """A batch of a watched ``tp`` landed at ``offset``: right after ``before``, the last
        record of this transaction's batches before it, or at the end the previous commits
        left. Raise ``LogWrittenElsewhere`` if the offsets it skipped hold another's records.
        The first batch's are read from where the last commit's marker was to be: another's
        record appended after that commit's last record and before its marker took the
        marker's place."""
        if before is not None:
            expected = first = before + 1
        else:
            expected = self._ends[tp]
            first = max(expected - 1, 0)
        whose_gap = self._whose_gap.get(tp)
        if offset <= expected or whose_gap is None:
            return
        self._stage = f"reading {tp.topic}-{tp.partition} from offset {first}"
        try:
            async with asyncio.timeout(GAP_READ_TIMEOUT_S):
                writer = await whose_gap(tp, first, offset)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning(
                "changelog_gap_unread",
                partition=tp.partition,
                expected=expected,
                end=offset,
                error=_describe(exc),
                action="going on; the next restore checks the writer of every record",
            )
            return
        if writer is not None:
            raise LogWrittenElsewhere(tp, offset, expected, writer)
        log.info(
            "changelog_gap_explained",
            partition=tp.partition,
            expected=expected,
            end=offset,
            held="transaction markers and records of this member's own",
        )

    def _count_ends(
        self, written: Mapping[TopicPartition, int], unknown: set[TopicPartition]
    ) -> None:
        """The ends a committed transaction left its counted partitions at: past its last
        record and the commit marker after it (only a floor where a batch's offset was not
        acknowledged: those offsets are not known)."""
        for tp, last in written.items():
            if tp not in self._ends:
                continue
            if tp in unknown:
                self._exact.discard(tp)
            else:
                self._ends[tp] = max(self._ends[tp], last + 2)
                self._exact.add(tp)

    def _refused_as_too_large(
        self, batches: list[_Sent], outcomes: list[Any], too_large: dict[int, str]
    ) -> list[str]:
        """Sort out the batches the broker refused as too large (``max.message.bytes`` is a
        limit on a whole batch): a batch of one record names that record in ``too_large``; a
        batch of several halves its topic's batch size, and the topics so reduced are
        returned. The refused partitions' sequence numbers are wound back either way."""
        split: list[str] = []
        refused: set[TopicPartition] = set()
        for sent, outcome in zip(batches, outcomes, strict=True):
            if not isinstance(outcome, _TOO_LARGE):
                continue
            refused.add(sent.tp)
            if len(sent.indices) == 1:
                too_large.update(dict.fromkeys(sent.indices, _describe(outcome)))
            else:
                self._batch_bytes[sent.tp.topic] = max(sent.size // 2, 1)
                split.append(sent.tp.topic)
        for tp in refused:
            appended = sum(
                len(sent.indices)
                for sent, outcome in zip(batches, outcomes, strict=True)
                if sent.tp == tp and not isinstance(outcome, BaseException)
            )
            first = next(sent.sequence for sent in batches if sent.tp == tp)
            self._wind_back_sequence(tp, first + appended)
        return sorted(set(split))

    def _sequence_number(self, tp: TopicPartition) -> int:
        """The producer's next sequence number for ``tp`` (see :meth:`_wind_back_sequence`)."""
        number = getattr(self._manager, "sequence_number", None)
        return 0 if number is None else int(number(tp))

    def _wind_back_sequence(self, tp: TopicPartition, sequence: int) -> None:
        """The producer's next sequence number for ``tp`` is ``sequence`` again.

        A batch the broker refuses (too large) is not appended, but aiokafka 0.14 has already
        counted its records in the partition's sequence and never takes them back: every
        later batch of the partition is then refused as out of order (``OutOfOrderSequence
        Number``), whatever is retried, until the producer is replaced. The Java client
        resets the sequence; aiokafka has no accessor for it, hence the guarded write.
        """
        numbers = getattr(self._manager, "_sequence_numbers", None)
        if isinstance(numbers, dict):
            numbers[tp] = sequence

    async def _by_partition(
        self, records: Sequence[Producible]
    ) -> dict[TopicPartition, list[tuple[int, Producible]]]:
        """The records by the partition they go to, in order; a record without a partition
        goes where the Java client's default partitioner would put its key."""
        grouped: dict[TopicPartition, list[tuple[int, Producible]]] = {}
        # Each topic's partitions once per transaction, not once per record: a checkpoint
        # after live traffic carries a result record for each request.
        partitions: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            partition = record.partition
            if partition is None:
                available = partitions.get(record.topic)
                if available is None:
                    available = sorted(await self._partitions_of(record.topic))
                    partitions[record.topic] = available
                if record.key is None:
                    partition = DefaultPartitioner()(None, available, available)
                else:
                    partition = available[hashes_to(record.key, len(available))]
            grouped.setdefault(TopicPartition(record.topic, partition), []).append((index, record))
        return grouped

    async def _partitions_of(self, topic: str) -> set[int]:
        """A result topic's partitions, as aiokafka waits for them: without end, while the
        topic does not exist. A result topic deleted under a running member holds every
        commit of the partition, and with it every request; the commit's ``checkpoint_slow``
        alone would not say why. So a wait past ``offsets_stuck_s`` asks whether the topic
        exists, and one gone is an error naming it and the way out (once per wait)."""
        asking = asyncio.ensure_future(self._producer.partitions_for(topic))
        try:
            done, _ = await asyncio.wait({asking}, timeout=self._offsets_stuck_s)
            if not done and await self._gone({topic}):
                log.error(
                    "result_topic_missing",
                    partition=self.partition,
                    topic=topic,
                    consequence="nothing of the partition is committed or posted until it "
                    "exists again; nothing is lost",
                    action="create it again (as before: its partitions, retention and ACLs), "
                    "or restart the member, which creates it when "
                    "BASICSYNC_KAFKA__CREATE_TOPICS is true",
                )
            found: set[int] = await asking
            return found
        finally:
            if not asking.done():
                asking.cancel()

    def _batches(
        self, indexed: list[tuple[int, Producible]], too_large: dict[int, str]
    ) -> Iterator[tuple[list[int], BatchBuilder]]:
        """Record batches of one partition, each as full as ``max_batch_size`` allows.

        One batch per send instead of one future and callback per record: a checkpoint of a
        backlog writes hundreds of records. A record above ``max_request_size`` is not sent but
        noted in ``too_large``, as ``send`` would refuse it. Each value is taken once, as its
        batch is filled, and the caller sends a batch before the next is made, so a
        transaction holds about one batch of made values at a time.
        """
        topic = indexed[0][1].topic if indexed else ""
        batch = self._new_batch(topic)
        indices: list[int] = []
        for index, record in indexed:
            key, value, headers = record.key, record.value, record.headers
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
            if size > self._max_record_bytes:
                too_large[index] = (
                    f"MessageSizeTooLargeError: the record is {size} bytes, above the "
                    f"producer's max_request_size ({self._max_record_bytes})"
                )
                continue
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                yield indices, batch  # full (append closed it)
                batch, indices = self._new_batch(topic), []
                batch.append(key=key, value=value, timestamp=None, headers=headers)  # fits
            indices.append(index)
        if indices:
            batch.close()
            yield indices, batch

    def _new_batch(self, topic: str) -> BatchBuilder:
        """An empty batch for ``topic``: compressed as the producer compresses, unless the
        topic's values are compressed alone (compressing them again saves about 3 %) or the
        topic refused a batch as too large (then as small as it was told, uncompressed: its
        size is then what the broker checks)."""
        learned = self._batch_bytes.get(topic)
        if learned is not None:
            return BatchBuilder(learned, 0, is_transactional=True)
        if topic in self._uncompressed_topics:
            return BatchBuilder(self._max_batch_bytes, 0, is_transactional=True)
        return self._producer.create_batch()

    async def _send_offsets(
        self, producer: AIOKafkaProducer, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None:
        """Add ``offsets`` to the transaction; raise ``PartitionLost`` when one of their topics
        was deleted meanwhile.

        Kafka answers an offset of a topic it does not know with UNKNOWN_TOPIC_OR_PARTITION,
        which aiokafka retries without end: an input topic deleted (by an operator, or under
        an input pattern) while its records' offsets wait for this commit would hold the
        partition's commits, and with them everything of the partition, for good. So a wait
        past ``offsets_stuck_s`` asks whether the topics still exist. A broker that is merely
        slow or hung is waited out, as everywhere; a topic gone gives the partition up, and
        the member takes it again (``PartitionLost``) without the deleted topic, whose events
        not yet committed went with it.
        """
        sending = asyncio.ensure_future(
            producer.send_offsets_to_transaction(dict(offsets), self._group_id)
        )
        try:
            while True:
                done, _ = await asyncio.wait({sending}, timeout=self._offsets_stuck_s)
                if done:
                    sending.result()
                    return
                gone = await self._gone({tp.topic for tp in offsets})
                if gone:
                    log.error(
                        "offsets_of_deleted_topic",
                        partition=self.partition,
                        topics=sorted(gone),
                        action="the partition is taken again without the deleted topic; its "
                        "events not yet committed were deleted with it",
                    )
                    raise PartitionLost(
                        self.partition, f"input topic {', '.join(sorted(gone))} was deleted"
                    )
        finally:
            if not sending.done():
                sending.cancel()
            sending.add_done_callback(_read_outcome)

    async def _gone(self, topics: set[str]) -> set[str]:
        """Which of ``topics`` no longer exist; none when that cannot be told now."""
        if self._topics_gone is None:
            return set()
        try:
            async with asyncio.timeout(self._offsets_stuck_s):
                return await self._topics_gone(topics)
        except Exception as exc:  # not known now: the commit goes on waiting, as before
            log.info("topics_unchecked", partition=self.partition, error=repr(exc))
            return set()

    async def _abort(self) -> None:
        """Abort the open transaction, if any; a producer that cannot is dropped by ``_fatal``."""
        self._stage = "abort_transaction"
        manager = self._manager
        if manager is None or not (
            manager.is_in_transaction() or manager.state.name == "ABORTABLE_ERROR"
        ):
            return
        # The abort replaces a transaction end that holds the error without reading it.
        self._read_leftover_errors()
        try:
            await self._producer.abort_transaction()
        except (KafkaError, AssertionError, IllegalOperation) as exc:
            log.warning("checkpoint_abort_failed", partition=self.partition, error=_describe(exc))

    @property
    def _manager(self) -> Any:
        """aiokafka's transaction manager (None without transactions): the producer's state
        that aiokafka exposes no other way."""
        return getattr(self._producer, "_txn_manager", None)

    def _fatal(self) -> bool:
        """The producer cannot be used again (its sender stopped): only a new owner can go on.

        aiokafka keeps this in its transaction manager; there is no public accessor.
        """
        manager = self._manager
        return manager is not None and bool(manager.is_fatal_error())


_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


@dataclass(frozen=True, slots=True)
class _Sent:
    """A batch sent in a transaction: where, which records, its size, the partition's
    sequence number when the transaction's first batch for it was sent, its acknowledgement."""

    tp: TopicPartition
    indices: list[int]
    size: int
    sequence: int
    acknowledged: asyncio.Future[Any]


class LogReplaced(Exception):
    """A transaction's record was acknowledged below the end its topic partition had before
    (``PartitionProducer.count_from``): the topic is not the one written before.
    The transaction was aborted."""

    def __init__(self, tp: TopicPartition, offset: int, floor: int) -> None:
        super().__init__(
            f"{tp.topic} partition {tp.partition} took a record at offset {offset}, below the "
            f"end offset {floor} it had before"
        )
        self.tp = tp


class LogWrittenElsewhere(Exception):
    """A transaction's first record on a topic partition was acknowledged past the end this
    producer's own writes had left it at (``PartitionProducer.count_from``): another producer
    wrote to it since. The transaction was aborted."""

    def __init__(self, tp: TopicPartition, offset: int, expected: int, writer: str) -> None:
        super().__init__(
            f"{tp.topic} partition {tp.partition} took this member's record at offset {offset}, "
            f"where this member's own writes had left it ending at {expected}: {writer} "
            "wrote to it since"
        )
        self.tp = tp


class _BatchesSplit(Exception):
    """The broker refused batches of several records as too large: smaller batches of the
    same records are sent in a new transaction."""

    def __init__(self, topics: list[str]) -> None:
        super().__init__(", ".join(topics))
        self.topics = topics


def _read_outcome(future: asyncio.Future[Any]) -> None:
    """Mark a finished acknowledgement's error as seen (see ``PartitionProducer._transaction``)."""
    if not future.cancelled():
        future.exception()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text and text != name else name
