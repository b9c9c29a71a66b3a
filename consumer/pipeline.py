"""The consume loop and partition ownership: the order of operations that loses nothing.

Each fetched batch is reduced into the store (``intake.absorb``, no I/O), its effects are staged
in the checkpoint and its changed jobs handed to the scheduler at once. Every
``checkpoint_interval`` (and before a revoke or a stop) the checkpoint commits what is staged,
one Kafka transaction per partition (see ``consumer.state.checkpoint`` for the order). The
scheduler never posts a state that is not committed: it asks the checkpoint first.

Ownership. On assignment, for each partition, in this order: its transactional producer starts
(fencing any member that still thinks it owns it), the changelog's end offset and the group's
committed offsets are read and checked against each other (a changelog replaced under the
offsets stops the member: ``consumer.state.continuity``), its state is restored from the
changelog (``read_committed``) unless the in-memory copy is provably current, the input
positions are set to the committed offsets, and only then are its events processed. A step that
fails is retried with backoff; if the partition still cannot be taken, the member asks the
group to rebalance, and ``stalled_for`` (read by ``/healthz``) grows until the platform
restarts the process. On revoke, its requests are finished or abandoned within the deadline,
its staged effects are committed, and its producer is closed. A partition whose producer is
fenced mid-run (another member took it while this one was paused) is dropped at once: state,
timers and requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog
from aiokafka import TopicPartition

from consumer.domain.results import MAX_FAILURE_VALUE_BYTES
from consumer.domain.retention import ForgottenJob, Retention, StoredJob, forget, retention_action
from consumer.domain.settled import SettledJob
from consumer.errors import (
    ChangelogReplaced,
    ChangelogShared,
    ChangelogWrittenElsewhere,
    FatalError,
    MemoryExhausted,
)
from consumer.intake import ArrivalClock, BatchEffect, SizeEstimate, absorb
from consumer.kafka.access import is_denial
from consumer.kafka.admin import changed_layout
from consumer.kafka.partitioning import hashes_to
from consumer.kafka.records import SourceRecord
from consumer.kafka.source import EventSource
from consumer.kafka.transaction_holds import TransactionHolds
from consumer.kafka.transactions import CommitTrouble
from consumer.state.checkpoint import Checkpoint
from consumer.state.continuity import ChangelogBounds
from consumer.state.recovery import RestoreReport, can_keep
from consumer.state.store import JobStore
from consumer.stopping import Stopped, holding_unless_stopped, set_within, unless_stopped
from consumer.sync.catch_up import CatchUpMode
from consumer.sync.scheduler import SyncScheduler

log = structlog.get_logger(__name__)

Restored = dict[int, dict[str, StoredJob | SettledJob]]
Restorer = Callable[[set[int]], Awaitable[tuple[Restored, RestoreReport]]]
ChangelogBoundsReader = Callable[[set[int]], Awaitable[dict[int, ChangelogBounds]]]


class PipelineObserver(Protocol):
    def batch_absorbed(self, effect: BatchEffect, records: int) -> None: ...

    def restored(self, report: RestoreReport) -> None: ...

    def ownership_changed(self, partitions: set[int], restoring: bool) -> None: ...

    def restore_refused(self, error: MemoryExhausted) -> None:
        """A restore stopped before the state outgrew the memory limit."""


#: Seconds after a fetch whose keys were off their murmur2 partition in which the next such
#: fetch is not checked again (``Pipeline._confirm_layout``): a producer with another
#: partitioner puts keys off theirs all the time, and each check asks Kafka for metadata.
LAYOUT_RECHECK_S = 10.0

#: Records absorbed between two turns of the event loop. Absorbing is CPU work of about a
#: hundred microseconds a record; a fetch of thousands absorbed in one go holds every response,
#: intent commit and request start waiting behind it, and the requests in flight hold their
#: slots meanwhile, so the posting rate falls exactly when traffic is high.
ABSORB_SLICE = 100


def next_checkpoint_at(
    last: float,
    *,
    catching_up: bool,
    drain_started: float | None,
    live_interval_s: float,
    catch_up_interval_s: float,
) -> float:
    """When the checkpoint after the one at ``last`` is due (monotonic seconds).

    While catching up: a catch-up interval after the last. While the jobs the catch-up held
    drain (``drain_started``, see ``SyncScheduler.draining``): a catch-up interval after the
    drain started. A checkpoint mid-drain writes every job still waiting for its request, and
    its intent writes it again a moment later; counted from the last checkpoint, a catch-up
    that ended just before a tick would pay that for most of the backlog. At most two
    intervals after the last checkpoint, though, so a catch-up that ends, starts and ends
    again cannot put the checkpoint off for good. Otherwise: the live interval.
    """
    if catching_up:
        return last + catch_up_interval_s
    if drain_started is not None:
        return min(max(last, drain_started) + catch_up_interval_s, last + 2 * catch_up_interval_s)
    return last + live_interval_s


@dataclass(frozen=True)
class PipelineLimits:
    partition_count: int
    max_event_bytes: int
    revoke_deadline_s: float
    retention_s: float
    #: a forgotten job's marker is kept this long (``sync.forgotten_retention_s``)
    forgotten_retention_s: float = 7 * 24 * 3600.0
    #: largest encoded job state (``kafka.max_job_bytes``); None: unbounded
    max_job_bytes: int | None = None
    max_failure_value_bytes: int = MAX_FAILURE_VALUE_BYTES
    #: an event further ahead of the wall clock is refused (``kafka.max_event_time_ahead_s``)
    max_event_time_ahead_s: float | None = None
    checkpoint_interval_s: float = 1.0
    checkpoint_max_jobs: int = 20_000
    #: records behind the end above which the consumer is catching up (see the scheduler)
    catch_up_lag: int = 10_000
    #: checkpoints while catching up: a backlog interleaves each job's events over the whole
    #: of it, so every checkpoint writes most jobs' states again
    catch_up_checkpoint_interval_s: float = 30.0
    fetch_timeout_ms: int = 500
    #: an input partition held this long by an open transaction is reported
    #: (``kafka.open_transaction_warn_s``, consumer.kafka.transaction_holds)
    open_transaction_warn_s: float = 60.0
    #: tries to take an assigned partition (fence, restore, seek) before asking to rebalance
    take_attempts: int = 5
    take_backoff_s: float = 0.5


#: What to do about an input partition an open transaction holds (``Pipeline``'s report).
OPEN_TRANSACTION_HINT = (
    "a producer began a transaction on this partition and has neither committed nor aborted "
    "it: read_committed readers, this one included, get nothing past its first record until "
    "it ends or the broker aborts it at the producer's transaction.timeout.ms; find it with "
    "kafka-transactions.sh describe-producers or find-hanging, and end it there (abort)"
)

#: the least a stop's final commit, and then the producers' close, get (``Pipeline.finish``)
STOP_STEP_AT_LEAST_S = 2.0


def _loop_time(monotonic: float) -> float:
    """``monotonic`` on the running loop's clock (``asyncio.timeout_at`` takes that)."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic - time.monotonic())


class Pipeline:
    """Owns the store's partitions and runs the consume loop."""

    def __init__(
        self,
        source: EventSource,
        store: JobStore,
        checkpoint: Checkpoint,
        scheduler: SyncScheduler,
        restore: Restorer,
        changelog_bounds: ChangelogBoundsReader,
        limits: PipelineLimits,
        observer: PipelineObserver,
        *,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        stop: asyncio.Event | None = None,
    ) -> None:
        self._source = source
        self._store = store
        self._checkpoint = checkpoint
        self._scheduler = scheduler
        self._restore = restore
        self._changelog_bounds = changelog_bounds
        self._limits = limits
        self._catch_up = CatchUpMode(limits.catch_up_lag)
        self._holds = TransactionHolds(limits.open_transaction_warn_s)
        self._observer = observer
        self._wall_clock = wall_clock
        self._lock = asyncio.Lock()
        #: when the stop began (``time.monotonic()``); its steps are bounded from then
        self._stopped_at: float | None = None
        #: whether the stop's last checkpoint committed
        self._stop_committed = True
        #: set to stop the member: :meth:`run` and :meth:`sweep_forever` end, a take in progress
        #: gives way to it (the group's first assignment may come before :meth:`run` starts)
        self._stop = stop if stop is not None else asyncio.Event()
        self._arrival_clock = ArrivalClock(wall_clock)
        ahead = limits.max_event_time_ahead_s
        self._max_time_ahead = None if ahead is None else timedelta(seconds=ahead)
        self._sizes = SizeEstimate()
        self._owned: set[int] = set()
        self._assigned: set[int] = set()
        self._restoring = False
        #: changelog end offset of each partition as this member's own writes left it
        self._known_end: dict[int, int] = {}
        #: since when some assigned partition is not processed (monotonic), None when all are
        self._stalled_since: float | None = None
        #: per input topic and partition, the next offset to absorb (see ``run``)
        self._next_offsets: dict[tuple[str, int], int] = {}
        #: until when (monotonic) the input topics' partition count is taken as confirmed
        self._layout_confirmed_until = 0.0

    @property
    def owned_partitions(self) -> set[int]:
        return set(self._owned)

    @property
    def unread_settled_jobs(self) -> int:
        """Jobs held as their settled changelog value (restored so, or ended since), not read
        since."""
        return self._store.unread_settled()

    @property
    def stored_bytes(self) -> int:
        """Bytes of the changelog values of the jobs held (their stored size)."""
        return self._checkpoint.stored_bytes

    @property
    def job_count(self) -> int:
        """Jobs held in memory (the owned partitions' share of the changelog)."""
        return len(self._store)

    @property
    def changelog_room(self) -> int | None:
        """What the changelog holds for a job's key and state, when less than
        ``max_job_bytes`` needs (None)."""
        return self._checkpoint.changelog_room

    @property
    def unwritten_job_count(self) -> int:
        """Jobs whose state the changelog refused and holds from before its limit was
        lowered: left unwritten while no event changes them."""
        return self._checkpoint.unwritten_jobs

    @property
    def unreadable_job_count(self) -> int:
        """Jobs whose changelog value could not be read, held apart (their events refused)."""
        return self._store.unreadable_count()

    @property
    def ready(self) -> bool:
        """Partitions assigned and restored."""
        return bool(self._owned) and not self._restoring

    def commit_trouble(self) -> CommitTrouble | None:
        """The owned partition whose checkpoint has failed for longest, if one is failing."""
        return self._checkpoint.commit_trouble()

    def stalled_for(self) -> float:
        """Seconds an assigned partition has gone unprocessed (0 when none): for liveness."""
        if self._stalled_since is None:
            return 0.0
        return time.monotonic() - self._stalled_since

    # -- rebalance -------------------------------------------------------------------------------

    async def partitions_revoked(self, partitions: set[int]) -> None:
        """Finish or abandon the partitions' requests, commit their effects, close them.

        Never raises: aiokafka would only log it, and leave this member's view half-updated.
        """
        async with self._lock:
            try:
                # A move past a gap fetched just before the revoke: committed with it, so the
                # next owner does not meet (and report) the gap again.
                self._skip_to_moved_positions()
                await self._scheduler.release_partitions(partitions, self._limits.revoke_deadline_s)
                await self._checkpoint.commit(partitions)
                self._handle_lost()
                for partition in partitions:
                    self._known_end.pop(partition, None)
                    known = self._checkpoint.known_end(partition)
                    if self._checkpoint.owns(partition) and known is not None:
                        self._known_end[partition] = known
            except Exception as exc:  # the state may not match the changelog: restore it
                log.error("revoke_failed", partitions=sorted(partitions), error=repr(exc))
                for partition in partitions:
                    self._known_end.pop(partition, None)
            finally:
                for partition in partitions:
                    await self._checkpoint.close(partition)
                self._owned -= partitions
                self._assigned -= partitions
                self._holds.forget(partitions)
            log.info("partitions_revoked", partitions=sorted(partitions))

    async def partitions_assigned(self, partitions: set[int]) -> None:
        """Take the partitions; raises ``TopicLayoutError`` (the next fetch raises it again,
        and the consumer stops) when the input topics gained partitions since the start."""
        self._stop_if_layout_changed(self._source.partition_counts(), partitions)
        async with self._lock:
            self._assigned = set(partitions)
            self._holds.keep(self._assigned)
            self._restoring = True
            self._observer.ownership_changed(partitions, restoring=True)
            try:
                # A take waits on Kafka (fencing, restoring, offsets) for as long as a broker
                # that does not answer lets it, holding the lock the stop needs: a stop ends it.
                await unless_stopped(self._stop, self._take(partitions))
            except Stopped:
                log.info("take_stopped", partitions=sorted(partitions))
            except Exception as exc:  # aiokafka would swallow it and leave us half-assigned
                self._mark_stalled()
                if is_denial(exc) or isinstance(exc, FatalError):
                    # The source raises it from the next fetch: a denial is reported and
                    # waited out, a fatal error stops the member.
                    raise
                log.error("assignment_failed", partitions=sorted(partitions), error=repr(exc))
                self._source.request_rejoin()
            finally:
                self._restoring = False
                self._update_stalled()
                self._observer.ownership_changed(partitions, restoring=False)
            self._source.reapply_pause()

    async def _take(self, partitions: set[int]) -> None:
        for partition in self._store.partitions() - partitions:
            self._drop(partition)
        pending = set(partitions)
        for attempt in range(1, self._limits.take_attempts + 1):
            try:
                await self._take_once(pending)
                return
            except MemoryExhausted as exc:
                # Trying again reads the same state into the same memory: give the partitions
                # back and say so, instead of being killed by the kernel (docs/operations.md).
                log.error(
                    "state_exceeds_memory",
                    partitions=sorted(pending),
                    error=str(exc),
                    action="raise the memory limit or spread the partitions over more members",
                )
                self._observer.restore_refused(exc)
                pending -= self._owned
                break
            except (ChangelogReplaced, ChangelogShared) as exc:
                # Trying again finds the same changelog: only an operator can choose what the
                # state should be (docs/operations.md, "Topics").
                event = (
                    "changelog_shared" if isinstance(exc, ChangelogShared) else "changelog_replaced"
                )
                log.error(event, partitions=sorted(pending), error=str(exc))
                for partition in pending:
                    await self._checkpoint.close(partition)
                    self._drop(partition)
                raise
            except Exception as exc:
                if is_denial(exc):
                    raise
                delay = self._limits.take_backoff_s * 2 ** (attempt - 1)
                log.warning(
                    "partition_take_failed",
                    partitions=sorted(pending),
                    attempt=attempt,
                    of=self._limits.take_attempts,
                    error=repr(exc),
                    retry_in_s=delay if attempt < self._limits.take_attempts else None,
                )
                pending -= self._owned
                if attempt < self._limits.take_attempts:
                    await asyncio.sleep(delay)
        for partition in pending:
            await self._checkpoint.close(partition)
            self._drop(partition)
        log.error("partitions_not_taken", partitions=sorted(pending), action="rejoining the group")
        self._mark_stalled()
        self._source.request_rejoin()

    async def _take_once(self, partitions: set[int]) -> None:
        for partition in sorted(partitions):
            await self._checkpoint.open(partition)  # fences every earlier writer
        bounds = await self._changelog_bounds(partitions)
        ends = {p: b.end for p, b in bounds.items()}
        committed = await self._source.committed(partitions)
        problems: list[str] = []
        for p in sorted(partitions & bounds.keys()):
            theirs = {TopicPartition(t, n): c for (t, n), c in committed.items() if n == p}
            problem = self._checkpoint.taken(p, bounds[p], theirs)
            if problem is not None:
                problems.append(problem)
        if problems:
            raise ChangelogReplaced(problems)
        kept = {p for p in partitions if can_keep(self._known_end, ends, p)}
        to_restore = partitions - kept
        if to_restore:
            restored, report = await self._restore(to_restore)
            for partition, states in restored.items():
                self._sizes.forget(self._store.jobs_in(partition))
                self._store.replace_partition(partition, states, report.unreadable.get(partition))
                self._checkpoint.track_sizes(partition, report.value_bytes.get(partition, {}))
            self._observer.restored(report)
            log.info(
                "state_restored",
                partitions=sorted(to_restore),
                jobs=report.jobs,
                settled_unread=report.settled,
                records=report.records,
                skipped=report.skipped,
                seconds=round(report.seconds, 3),
            )
        sought = {key: c.offset for key, c in committed.items()}
        self._source.seek(sought)
        for key in [k for k in self._next_offsets if k[1] in partitions]:
            del self._next_offsets[key]
        self._next_offsets.update(sought)
        for partition in partitions:
            self._known_end.pop(partition, None)  # valid again after our next revoke
            self._owned.add(partition)
            self._scheduler.reschedule_partition(partition)
        log.info("partitions_assigned", partitions=sorted(partitions), kept=sorted(kept))

    def _drop(self, partition: int) -> None:
        self._checkpoint.forget_sizes(partition)
        self._sizes.forget(self._store.jobs_in(partition))
        self._store.drop_partition(partition)
        self._known_end.pop(partition, None)

    def _handle_lost(self) -> None:
        """Partitions the checkpoint lost (fenced): stop everything for them at once."""
        lost = self._checkpoint.take_lost()
        if not lost:
            return
        self._owned -= lost
        self._scheduler.abandon_partitions(lost)
        for partition in lost:
            self._drop(partition)
        self._mark_stalled()
        log.warning("partitions_fenced", partitions=sorted(lost), action="rejoining the group")
        self._source.request_rejoin()

    def _mark_stalled(self) -> None:
        """Assigned partitions went unprocessed (a take gave up, a partition was lost): the
        clock of ``stalled_for`` runs until an assignment is fully taken, across rejoins."""
        if self._stalled_since is None:
            self._stalled_since = time.monotonic()

    def _update_stalled(self) -> None:
        if not self._assigned - self._owned:
            self._stalled_since = None

    async def _confirm_layout(self, records: Sequence[SourceRecord]) -> bool:
        """Raise ``TopicLayoutError`` before absorbing a key that is off its murmur2 partition
        when the input topics gained partitions since the start.

        A producer that learned of new partitions before this member did puts a job's event on
        the partition the new count picks, which may be one this member owns without holding
        the job: absorbed, the job would be posted from its later events alone. The
        rebalance that follows the change comes only at the member's next metadata refresh;
        an off-partition key asks for the refresh now (at most every ``LAYOUT_RECHECK_S``).

        Returns whether ``records`` may hold such keys: only then does the intake count them
        (``basicsync_misrouted_keys_total``), so a clean batch is hashed once, here.
        """
        count = self._limits.partition_count
        if time.monotonic() < self._layout_confirmed_until:
            return True
        if all(
            record.key is None or hashes_to(record.key, count) == record.partition
            for record in records
        ):
            return False
        self._stop_if_layout_changed(await self._source.refreshed_partition_counts(), ())
        self._layout_confirmed_until = time.monotonic() + LAYOUT_RECHECK_S
        return True

    def _report_transaction_holds(self) -> None:
        """Say which input partitions an open transaction holds: nothing past it can be read,
        and without a word the growing lag looks like this member's fault."""
        for report in self._holds.observe(self._source.ends(), time.monotonic()):
            topic, partition = report.partition
            if report.ended:
                log.info(
                    "input_transaction_hold_ended",
                    topic=topic,
                    partition=partition,
                    held_s=round(report.held_s, 1),
                )
            else:
                log.warning(
                    "input_held_by_open_transaction",
                    topic=topic,
                    partition=partition,
                    last_stable_offset=report.last_stable,
                    records_waiting=report.records_waiting,
                    held_s=round(report.held_s, 1),
                    hint=OPEN_TRANSACTION_HINT,
                )

    def held_by_transactions(self) -> dict[tuple[str, int], float]:
        """Seconds each input partition an open transaction holds has been held (metrics)."""
        return self._holds.held_for(time.monotonic())

    def _stop_if_layout_changed(
        self, counts: Mapping[str, int | None], assigned: Iterable[int]
    ) -> None:
        changed = changed_layout(counts, assigned, self._limits.partition_count)
        if changed is not None:
            log.error("topic_layout_changed", error=str(changed))
            raise changed

    # -- the consume loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Fetch and absorb continuously; checkpoint every ``checkpoint_interval_s``, until
        the stop is set. (The stop's own checkpoints are :meth:`last_checkpoint` and
        :meth:`finish`, each bounded in time.)"""
        stop = self._stop
        last_checkpoint = time.monotonic()
        drain_started: float | None = None
        while not stop.is_set():
            if self._checkpoint.replaced:
                raise ChangelogReplaced(
                    [why for _, why in sorted(self._checkpoint.replaced.items())]
                )
            if self._checkpoint.written_elsewhere:
                found = self._checkpoint.written_elsewhere
                raise ChangelogWrittenElsewhere([why for _, why in sorted(found.items())])
            self._handle_lost()
            self._scheduler.set_catching_up(
                self._catch_up.observe(self._source.behind(), time.monotonic())
            )
            if not self._scheduler.draining:
                drain_started = None
            elif drain_started is None:
                drain_started = time.monotonic()
            # From the mode now, not the mode at the last checkpoint: once caught up, results
            # and offsets are committed at the live interval, not when the catch-up one ends.
            next_checkpoint = next_checkpoint_at(
                last_checkpoint,
                catching_up=self._scheduler.catching_up,
                drain_started=drain_started,
                live_interval_s=self._limits.checkpoint_interval_s,
                catch_up_interval_s=self._limits.catch_up_checkpoint_interval_s,
            )
            wait_ms = max(int((next_checkpoint - time.monotonic()) * 1000), 0)
            records = await self._source.fetch(min(self._limits.fetch_timeout_ms, wait_ms))
            self._report_transaction_holds()
            misrouted = await self._confirm_layout(records)
            async with holding_unless_stopped(self._lock, stop) as held:
                if not held:
                    break  # a take holds the lock, waiting on Kafka: the stop goes first
                # A batch fetched before a rebalance may precede the committed offset the
                # partition was then sought to: those records come again, so skip them here.
                self._skip_to_moved_positions()
                expected = self._next_offsets
                owned = [
                    r
                    for r in records
                    if r.partition in self._owned
                    and r.offset >= expected.get((r.topic, r.partition), 0)
                ]
                for start in range(0, len(owned), ABSORB_SLICE):
                    if start:
                        await asyncio.sleep(0)  # see ABSORB_SLICE
                    self._absorb(owned[start : start + ABSORB_SLICE], misrouted)
                if (
                    time.monotonic() >= next_checkpoint
                    or self._checkpoint.pending_jobs >= self._limits.checkpoint_max_jobs
                ):
                    await self._live_checkpoint()
                    last_checkpoint = time.monotonic()

    async def _live_checkpoint(self) -> None:
        """The loop's checkpoint. Once the stop is set it has the last checkpoint's time (see
        :meth:`last_checkpoint`), then is cancelled; its work goes back to the checkpoint."""
        with suppress(Stopped):
            await unless_stopped(
                self._stop,
                self._checkpoint.commit(live=True),
                then_s=lambda: self._stop_by(1) - time.monotonic(),
            )

    def _stop_by(self, deadlines: int) -> float:
        """``deadlines`` shutdown deadlines after the stop began (now, if it had not)."""
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
        return self._stopped_at + deadlines * self._limits.revoke_deadline_s

    async def last_checkpoint(self) -> None:
        """Commit everything staged, so a clean stop replays nothing, within the shutdown
        deadline from the stop (``revoke_deadline_s``); stop waiting then.

        A commit that cannot succeed (the broker down, a changelog refusing a state) is
        otherwise retried for ever, and a stopping member would wait for the platform's
        SIGKILL without a word about why. What this leaves is not lost yet: :meth:`finish`
        commits it with what the requests in flight record, so only a warning says it is late
        (``last_checkpoint_late``); if that commit too runs out of time, it is given up.
        """
        self._stop_committed = await self._commit_by(self._stop_by(1), final=False)

    async def _commit_by(self, until: float, *, final: bool) -> bool:
        bound = asyncio.timeout_at(_loop_time(until))
        try:
            async with bound, self._lock:
                await self._checkpoint.commit()
            return True
        except TimeoutError:
            if not bound.expired():
                raise
            if not final:
                # A live checkpoint holding the lock up to the deadline, or a broker slow to
                # answer: once the requests in flight end, finish() commits all of it.
                log.warning(
                    "last_checkpoint_late",
                    partitions=sorted(self._owned),
                    jobs_uncommitted=self._checkpoint.pending_jobs,
                    action="committed with what the requests in flight record, once they end",
                )
                return False
            log.error(
                "last_checkpoint_abandoned",
                partitions=sorted(self._owned),
                jobs_uncommitted=self._checkpoint.pending_jobs,
                action="nothing is lost: the next owner reads the uncommitted events again "
                "and posts the jobs in doubt again after the in-doubt window",
            )
            return False

    async def finish(self) -> bool:
        """After the scheduler stopped: commit what is staged, the last checkpoint's work if
        it was late and what the last requests recorded, by twice the shutdown deadline from
        the stop (giving up then: ``last_checkpoint_abandoned``; after a last checkpoint that
        committed, for at least ``STOP_STEP_AT_LEAST_S``), and close every partition's
        producer. (aiokafka does not call the revoke callback when it stops.) Whether
        everything staged is committed: whether the stop left anything for the next owner to
        read again.

        Giving up loses nothing: the offsets stay where the last committed checkpoint left
        them, so the next owner reads those events again, and a job posted meanwhile is in
        doubt there and posted again after the in-doubt window.
        """
        until = self._stop_by(2)
        if self._stop_committed:
            until = max(until, time.monotonic() + STOP_STEP_AT_LEAST_S)
        try:
            return await self._commit_by(until, final=True)
        finally:
            # A producer whose transaction was abandoned may wait on the broker to close: it
            # gets what is left of the time, at least STOP_STEP_AT_LEAST_S, then is left behind.
            remaining = max(until - time.monotonic(), STOP_STEP_AT_LEAST_S)
            try:
                async with asyncio.timeout(remaining):
                    await self._checkpoint.close_all()
            except TimeoutError:
                log.error("producers_not_closed", partitions=sorted(self._owned))
            self._owned.clear()

    def _absorb(self, records: Sequence[SourceRecord], misrouted: bool = True) -> None:
        effect = absorb(
            self._store,
            records,
            clock=self._arrival_clock,
            partition_count=self._limits.partition_count,
            max_event_bytes=self._limits.max_event_bytes,
            max_job_bytes=self._limits.max_job_bytes,
            changelog_room=self._checkpoint.changelog_room,
            sizes=self._sizes,
            max_failure_value_bytes=self._limits.max_failure_value_bytes,
            count_misrouted=misrouted,
            max_time_ahead=self._max_time_ahead,
        )
        checkpoint = self._checkpoint
        for job, partition in effect.partitions.items():
            checkpoint.stage_applied(partition, job, effect.offsets_by_job.get(job, ()))
        for failure, raw_key in zip(effect.failures, effect.failure_keys, strict=True):
            source = failure.source
            if source is not None:
                checkpoint.stage_result(source.partition, failure, raw_key)
            log.warning(
                "event_rejected",
                reason=failure.reason.value,
                error=failure.error.message,
                client_job_id=failure.client_job_id,
                topic=source.topic if source else None,
                partition=source.partition if source else None,
                offset=source.offset if source else None,
            )
        if effect.too_large:
            log.warning("events_skipped_job_too_large", events=effect.too_large)
        for partition in {p for _, p in effect.next_offsets}:
            checkpoint.stage_offsets(partition, effect.next_offsets)
        self._next_offsets.update(effect.next_offsets)
        self._observer.batch_absorbed(effect, len(records))
        for job in effect.changed:
            self._scheduler.mark_dirty(
                job, effect.offsets_by_job.get(job, ()), effect.traces_by_job.get(job, ())
            )

    def _skip_to_moved_positions(self) -> None:
        """Commit the positions the source moved past records it could not read (deleted
        before this member read them, or none committed): no effect waits on them."""
        moved = self._source.take_moved()
        if not moved:
            return
        moved = {key: offset for key, offset in moved.items() if key[1] in self._owned}
        for partition in {p for _, p in moved}:
            self._checkpoint.stage_offsets(partition, moved)
        self._next_offsets.update(moved)

    # -- retention -------------------------------------------------------------------------------

    async def sweep_forever(self) -> None:
        """Forget terminal, synced jobs older than the retention; drop old markers.

        Sweeps every minute, or four times per (shorter) retention period when that is sooner.
        """
        shortest = min(self._limits.retention_s, self._limits.forgotten_retention_s)
        every_s = min(60.0, shortest / 4)
        stop = self._stop
        while not await set_within(stop, every_s):
            # Its only wait is for the lock, which a take may hold for as long as Kafka does
            # not answer: the stop must not wait on it.
            with suppress(Stopped):
                await unless_stopped(stop, self.sweep())

    async def sweep(self) -> int:
        """Apply retention to the owned partitions now (``retention_action`` decides per key).

        A job to forget is replaced by its marker (written to the changelog, kept in the store);
        a marker past its own retention is tombstoned and deleted. Both go with the next commit
        of their partition. Returns the number of keys changed.
        """
        now = self._wall_clock()
        rules = {
            "retention": timedelta(seconds=self._limits.retention_s),
            "forgotten_retention": timedelta(seconds=self._limits.forgotten_retention_s),
        }
        stored: list[tuple[int, StoredJob | SettledJob]] = [
            *self._store.items(),
            *self._store.forgotten_items(),
        ]
        async with self._lock:
            forgotten = dropped = 0
            for partition, value in stored:
                if partition not in self._owned:
                    continue
                action = retention_action(value, now, **rules)
                if action is Retention.forget and not isinstance(value, ForgottenJob):
                    if self._store.held(value.client_job_id) is not value:
                        continue  # changed since the list was taken
                    state = self._store.get(value.client_job_id)  # a settled job is read here
                    if state is None or (
                        state is not value  # decided from its mark: the state itself decides
                        and retention_action(state, now, **rules) is not Retention.forget
                    ):
                        continue
                    marker = forget(state, now)
                    self._store.put_forgotten(partition, marker)
                    self._sizes.forget([marker.client_job_id])
                    self._checkpoint.stage_marker(partition, marker)
                    forgotten += 1
                elif action is Retention.drop:
                    self._store.delete_forgotten(value.client_job_id)
                    self._checkpoint.stage_forgotten(partition, value.client_job_id)
                    dropped += 1
        if forgotten or dropped:
            log.info("retention_swept", forgotten=forgotten, markers_dropped=dropped)
        return forgotten + dropped
