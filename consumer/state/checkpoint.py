"""The checkpoint: the only writer of the changelog, the result topics and the input offsets.

Everything that must become durable is *staged* here (the consume loop stages absorbed
batches, the scheduler stages results and sync bookkeeping) and written by :meth:`commit`, per
input partition, in one Kafka transaction of that partition's producer, in this fixed order:

1. tombstones of the jobs forgotten since the partition's last commit;
2. the current state of every job of the partition changed since then, once each however many
   events it got, to changelog partition ``p`` (a job lives in one partition);
3. the result and failure records staged for the partition, in the order they were staged;
4. the next input offsets of the partition, on every input topic;
5. commit.

So a committed transaction is a consistent snapshot: the states hold the effect of every event
below the committed offsets, and every result it reports. A crash at any instant replays at most
the events after the last commit, whose effects were not visible to anyone.

:meth:`make_durable` is the scheduler's way to say "before I post, this must be in Kafka": it
commits the partition now. Calls that arrive while a commit of the partition is running wait
for it and then share the next one (group commit), so concurrent posts cost one transaction.

A partition whose producer was fenced (another member owns it now) or revoked raises
``PartitionLost`` from :meth:`make_durable` and is reported by :meth:`take_lost`; its staged
work is dropped, since the new owner replays it from the last committed offsets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog
from aiokafka import TopicPartition

from consumer.domain.results import FailureRecord, SuccessRecord
from consumer.errors import PartitionLost
from consumer.kafka.transactions import OutRecord, PartitionProducer
from consumer.state.store import JobStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CheckpointTopics:
    changelog: str
    succeeded: str
    failed: str


@dataclass
class _Pending:
    forgotten: list[str] = field(default_factory=list)
    jobs: set[str] = field(default_factory=set)
    results: list[OutRecord] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.forgotten or self.jobs or self.results or self.offsets)

    def merge_older(self, older: _Pending) -> None:
        """Put back what a failed commit took: ``older`` was staged before ``self``."""
        self.forgotten[:0] = older.forgotten
        self.jobs |= older.jobs
        self.results[:0] = older.results
        for tp, offset in older.offsets.items():
            self.offsets[tp] = max(offset, self.offsets.get(tp, offset))


class Checkpoint:
    """Stages the effects of each owned partition and commits them transactionally."""

    def __init__(
        self,
        store: JobStore,
        topics: CheckpointTopics,
        open_producer: Callable[[int], PartitionProducer],
    ) -> None:
        self._store = store
        self._topics = topics
        self._open_producer = open_producer
        self._producers: dict[int, PartitionProducer] = {}
        self._pending: dict[int, _Pending] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._lost: set[int] = set()
        #: transactions committed, per partition (for metrics and tests)
        self.commits = 0

    # -- ownership -------------------------------------------------------------------------------

    def owns(self, partition: int) -> bool:
        return partition in self._producers

    @property
    def partitions(self) -> set[int]:
        return set(self._producers)

    async def open(self, partition: int) -> None:
        """Start the partition's producer: from now on this member alone writes for it."""
        if partition in self._producers:
            return
        producer = self._open_producer(partition)
        await producer.start()
        self._producers[partition] = producer
        self._pending[partition] = _Pending()
        self._locks.setdefault(partition, asyncio.Lock())
        self._lost.discard(partition)

    async def close(self, partition: int) -> None:
        """Stop writing for ``partition``; what is staged and not committed is dropped."""
        producer = self._producers.pop(partition, None)
        self._pending.pop(partition, None)
        if producer is not None:
            await producer.stop()

    async def close_all(self) -> None:
        for partition in list(self._producers):
            await self.close(partition)

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

    def stage_forgotten(self, partition: int, client_job_id: str) -> None:
        pending = self._pending.get(partition)
        if pending is not None:
            pending.forgotten.append(client_job_id)
            pending.jobs.discard(client_job_id)

    def stage_result(
        self, partition: int, record: SuccessRecord | FailureRecord, raw_key: bytes | None = None
    ) -> None:
        """A result or failure record, keyed by clientJobId (or the raw input key)."""
        pending = self._pending.get(partition)
        if pending is None:
            return
        key: bytes | None
        if isinstance(record, SuccessRecord):
            topic, key = self._topics.succeeded, record.client_job_id.encode()
        else:
            topic = self._topics.failed
            key = record.client_job_id.encode() if record.client_job_id is not None else raw_key
        pending.results.append(OutRecord(topic=topic, key=key, value=record.to_json_bytes()))

    def stage_offsets(self, partition: int, next_offsets: dict[tuple[str, int], int]) -> None:
        pending = self._pending.get(partition)
        if pending is None:
            return
        for (topic, number), offset in next_offsets.items():
            if number == partition:
                pending.offsets[TopicPartition(topic, number)] = offset

    def has_pending(self, partition: int) -> bool:
        return bool(self._pending.get(partition))

    @property
    def pending_jobs(self) -> int:
        return sum(len(p.jobs) for p in self._pending.values())

    # -- committing ------------------------------------------------------------------------------

    async def commit(self, partitions: Iterable[int] | None = None) -> None:
        """Commit what is staged for ``partitions`` (default: every owned one), concurrently.

        A partition lost meanwhile is reported by :meth:`take_lost`, not raised.
        """
        wanted = set(self._producers) if partitions is None else set(partitions)
        todo = [p for p in wanted if self.has_pending(p)]
        if not todo:
            return
        results = await asyncio.gather(
            *(self.make_durable(p) for p in todo), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, PartitionLost):
                raise result

    async def make_durable(self, partition: int) -> None:
        """Return once everything staged for ``partition`` so far is committed.

        Raises ``PartitionLost`` when this member may no longer write for the partition.
        """
        lock = self._locks.setdefault(partition, asyncio.Lock())
        async with lock:
            producer = self._producers.get(partition)
            if producer is None:
                raise PartitionLost(partition, "not owned by this member")
            pending = self._pending.get(partition)
            if not pending:
                return
            self._pending[partition] = _Pending()
            records = self._records(partition, pending)
            try:
                await producer.commit(records, pending.offsets)
            except PartitionLost as exc:
                log.warning("partition_lost", partition=partition, reason=str(exc))
                self._lost.add(partition)
                if self._producers.get(partition) is producer:
                    await self.close(partition)
                raise
            except BaseException:
                # Cancelled (shutdown) or a bug: keep the work for the next commit.
                if partition in self._pending:
                    self._pending[partition].merge_older(pending)
                raise
            self.commits += 1

    def _records(self, partition: int, pending: _Pending) -> list[OutRecord]:
        changelog = self._topics.changelog
        records = [OutRecord(changelog, job.encode(), None, partition) for job in pending.forgotten]
        for job in pending.jobs:
            state = self._store.get(job)
            if state is not None and self._store.partition_of(job) == partition:
                records.append(OutRecord(changelog, job.encode(), state.to_json_bytes(), partition))
        records.extend(pending.results)
        return records
