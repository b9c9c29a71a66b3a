"""The consume loop and partition ownership: the order of operations that loses nothing.

Each fetched batch is reduced into the store (``intake.absorb``, no I/O) and its changed jobs
are handed to the scheduler at once. Every ``checkpoint_interval`` (and before a revoke or a
stop), under one lock shared with the rebalance callbacks:

1. the jobs changed since the last checkpoint are written to their changelog partitions (once
   each, however many events they got) and the unusable events to the failure topic;
2. once the broker has acknowledged all of them, the input offsets are committed.

The scheduler never posts a state that is not durable: before each request it writes the
state to the changelog unless that version is already there. So a crash at any instant
replays at most one checkpoint interval of events, the reducer ignores the event ids it has
already applied, and every state restored after a crash contains every state ever posted.

On assignment a partition's state is restored from its changelog partition before any of its
events is processed (the callback runs before the first fetch); on revoke the pending effects
are checkpointed, its requests are finished or abandoned, and its state dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog
from aiokafka.errors import CommitFailedError, IllegalStateError

from consumer.domain.job import JobState, is_terminal
from consumer.domain.results import FailureRecord
from consumer.intake import ArrivalClock, BatchEffect, SourceRecord, absorb
from consumer.kafka.publisher import Ack, ResultPublisher
from consumer.kafka.source import EventSource
from consumer.state.changelog import ChangelogWriter, RestoreReport
from consumer.state.store import JobStore
from consumer.sync.scheduler import SyncScheduler

log = structlog.get_logger(__name__)

Restorer = Callable[[set[int]], Awaitable[tuple[dict[int, dict[str, JobState]], RestoreReport]]]
EndOffsets = Callable[[set[int]], Awaitable[dict[int, int]]]


class PipelineObserver(Protocol):
    def batch_absorbed(self, effect: BatchEffect, records: int) -> None: ...

    def restored(self, report: RestoreReport) -> None: ...

    def ownership_changed(self, partitions: set[int], restoring: bool) -> None: ...


@dataclass(frozen=True)
class PipelineLimits:
    partition_count: int
    max_event_bytes: int
    revoke_deadline_s: float
    retention_s: float
    checkpoint_interval_s: float = 1.0
    checkpoint_max_jobs: int = 20_000
    #: records behind the end above which the consumer is catching up (see the scheduler)
    catch_up_lag: int = 10_000
    #: checkpoints are this many times rarer while catching up: fewer writes per job
    catch_up_checkpoint_factor: int = 5
    fetch_timeout_ms: int = 500


class Pipeline:
    """Owns the store's partitions and runs the consume loop."""

    def __init__(
        self,
        source: EventSource,
        store: JobStore,
        changelog: ChangelogWriter,
        publisher: ResultPublisher,
        scheduler: SyncScheduler,
        restore: Restorer,
        changelog_end_offsets: EndOffsets,
        flush: Callable[[], Awaitable[None]],
        limits: PipelineLimits,
        observer: PipelineObserver,
        *,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._source = source
        self._store = store
        self._changelog = changelog
        self._publisher = publisher
        self._scheduler = scheduler
        self._restore = restore
        self._changelog_end_offsets = changelog_end_offsets
        self._flush = flush
        self._limits = limits
        self._observer = observer
        self._wall_clock = wall_clock
        self._lock = asyncio.Lock()
        self._arrival_clock = ArrivalClock(wall_clock)
        # What was absorbed since the last checkpoint.
        self._pending_jobs: dict[str, int] = {}
        self._pending_failures: list[FailureRecord] = []
        self._pending_offsets: dict[tuple[str, int], int] = {}
        self._owned: set[int] = set()
        self._restoring = False
        #: changelog end offset each owned partition had when we last knew it to be ours alone
        self._known_end: dict[int, int] = {}

    @property
    def owned_partitions(self) -> set[int]:
        return set(self._owned)

    @property
    def job_count(self) -> int:
        """Jobs held in memory (the owned partitions' share of the changelog)."""
        return len(self._store)

    @property
    def ready(self) -> bool:
        """Partitions assigned and restored."""
        return bool(self._owned) and not self._restoring

    # -- rebalance -------------------------------------------------------------------------------

    async def partitions_revoked(self, partitions: set[int]) -> None:
        async with self._lock:
            await self._checkpoint()
            await self._scheduler.release_partitions(partitions, self._limits.revoke_deadline_s)
            await self._flush()
            for partition in partitions:
                written = self._changelog.last_offsets.get(partition)
                if written is not None:
                    self._known_end[partition] = max(self._known_end.get(partition, 0), written + 1)
            self._owned -= partitions
            log.info("partitions_revoked", partitions=sorted(partitions))

    async def partitions_assigned(self, partitions: set[int]) -> None:
        async with self._lock:
            self._restoring = True
            self._observer.ownership_changed(partitions, restoring=True)
            try:
                await self._take(partitions)
            finally:
                self._restoring = False
                self._observer.ownership_changed(partitions, restoring=False)
            self._source.reapply_pause()

    async def _take(self, partitions: set[int]) -> None:
        for partition in self._store.partitions() - partitions:
            self._changelog.forget(self._store.jobs_in(partition))
            self._store.drop_partition(partition)
            self._known_end.pop(partition, None)
        ends = await self._changelog_end_offsets(partitions)
        # After an eager rebalance we usually get our partitions back. If nobody wrote to
        # their changelog since we last did, our in-memory state is still exact.
        kept = {p for p in partitions if p in self._known_end and ends.get(p) == self._known_end[p]}
        to_restore = partitions - kept
        if to_restore:
            restored, report = await self._restore(to_restore)
            for partition, states in restored.items():
                self._changelog.forget(self._store.jobs_in(partition))
                self._store.replace_partition(partition, states)
                self._known_end[partition] = report.end_offsets.get(partition, 0)
            self._observer.restored(report)
            log.info(
                "state_restored",
                partitions=sorted(to_restore),
                jobs=report.jobs,
                records=report.records,
                skipped=report.skipped,
                seconds=round(report.seconds, 3),
            )
        self._owned = set(partitions)
        for partition in partitions:
            self._scheduler.reschedule_partition(partition)
        log.info("partitions_assigned", partitions=sorted(partitions), kept=sorted(kept))

    # -- the consume loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch and absorb continuously; checkpoint every ``checkpoint_interval_s``.

        Ends with a last checkpoint once ``stop`` is set, so a clean stop replays nothing.
        """
        next_checkpoint = time.monotonic() + self._limits.checkpoint_interval_s
        while not stop.is_set():
            self._scheduler.set_catching_up(self._source.behind() > self._limits.catch_up_lag)
            wait_ms = max(int((next_checkpoint - time.monotonic()) * 1000), 0)
            records = await self._source.fetch(min(self._limits.fetch_timeout_ms, wait_ms))
            async with self._lock:
                owned = [r for r in records if r.partition in self._owned]
                if owned:
                    self._absorb(owned)
                if (
                    time.monotonic() >= next_checkpoint
                    or len(self._pending_jobs) >= self._limits.checkpoint_max_jobs
                ):
                    await self._checkpoint()
                    interval = self._limits.checkpoint_interval_s
                    if self._scheduler.catching_up:
                        interval *= self._limits.catch_up_checkpoint_factor
                    next_checkpoint = time.monotonic() + interval
        async with self._lock:
            await self._checkpoint()

    def note_changed(self, client_job_id: str, partition: int) -> None:
        """A state changed outside the consume loop (sync bookkeeping): checkpoint it."""
        self._pending_jobs[client_job_id] = partition

    def _absorb(self, records: list[SourceRecord]) -> None:
        effect = absorb(
            self._store,
            records,
            clock=self._arrival_clock,
            partition_count=self._limits.partition_count,
            max_event_bytes=self._limits.max_event_bytes,
        )
        self._pending_jobs.update(effect.partitions)
        self._pending_failures.extend(effect.failures)
        self._pending_offsets.update(effect.next_offsets)
        self._observer.batch_absorbed(effect, len(records))
        for failure in effect.failures:
            source = failure.source
            log.warning(
                "event_rejected",
                reason=failure.reason.value,
                error=failure.error.message,
                client_job_id=failure.client_job_id,
                topic=source.topic if source else None,
                partition=source.partition if source else None,
                offset=source.offset if source else None,
            )
        for job in effect.changed:
            self._scheduler.mark_dirty(job, effect.offsets_by_job.get(job, ()))

    async def _checkpoint(self) -> None:
        """Make every absorbed event's effect durable, then commit the offsets below them.

        Changed jobs are written once per checkpoint however many events they got (unless
        the scheduler already wrote that version before posting it).
        """
        if not self._pending_offsets and not self._pending_jobs:
            return
        # Taken first: the scheduler notes changes while the writes below are awaited.
        jobs, self._pending_jobs = self._pending_jobs, {}
        failures, self._pending_failures = self._pending_failures, []
        offsets, self._pending_offsets = self._pending_offsets, {}
        acks: list[Ack] = []
        for job, partition in jobs.items():
            state = self._store.get(job)
            if state is not None and not self._changelog.is_durable(state):
                acks.append(await self._changelog.write(partition, state))
        for failure in failures:
            acks.append(await self._publisher.failed(failure))
        if acks:
            await asyncio.gather(*acks)
        if not offsets:
            return
        try:
            await self._source.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on; the new owner replays these events and the reducer
            # recognises every one of them, so nothing is lost or doubled.
            log.warning("commit_skipped_after_rebalance", error=type(exc).__name__)

    # -- retention -------------------------------------------------------------------------------

    async def sweep_forever(self, stop: asyncio.Event) -> None:
        """Forget terminal, synced jobs older than the retention (tombstones in the changelog).

        Sweeps every minute, or four times per retention period when that is shorter.
        """
        every_s = min(60.0, self._limits.retention_s / 4)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), every_s)
            except TimeoutError:
                await self.sweep()

    async def sweep(self) -> int:
        cutoff = self._wall_clock() - timedelta(seconds=self._limits.retention_s)
        started = time.monotonic()
        async with self._lock:
            expired = [
                (partition, state.client_job_id)
                for partition, state in self._store.items()
                if is_terminal(state)
                and state.synced_version >= state.version
                and state.updated_at is not None
                and state.updated_at < cutoff
            ]
            acks = [await self._changelog.tombstone(p, job) for p, job in expired]
            if acks:
                await asyncio.gather(*acks)
            for _, job in expired:
                self._store.delete(job)
        if expired:
            log.info("retention_swept", jobs=len(expired), seconds=time.monotonic() - started)
        return len(expired)
