"""Decides when each dirty job is posted, and keeps the ordering promises of
docs/contract.md §2 (promise 3) and §6.2.

- Debounce: a job is posted ``debounce`` after its last change, but never later than
  ``max_delay`` after its first unsynced change; a terminal status is posted at once.
- One request in flight per job: a job that changes while its request is in flight is
  queued again when the request ends, with the newest state.
- Bounded concurrency and an optional rate limit across all jobs.
- Retries are timers, not sleeping coroutines. Each failure is judged by evidence across jobs
  (:mod:`consumer.sync.diagnosis`): *systemic* opens the circuit (nothing is sent, partitions
  are paused, no budget is spent, a probe decides when to resume); *per-job* spends the job's
  own retry budget and then fails it with a failure record, pausing nobody; *undecided* spends
  nothing, pauses nobody, retries after a backoff and probes the gateway for evidence.

The scheduler reads state from the store at send time, so a burst of events becomes one
request carrying the latest state.

Requests in doubt. Before a request leaves, the job is marked ``sending_since`` and that mark is
committed through the checkpoint (which also proves this member still owns the partition: a
fenced member fails here and posts nothing). The request must start within ``send_within``
seconds of the mark. When its outcome is unknown (a timeout, the connection lost after
sending, a cancellation at a revoke or shutdown) it may still be applied by WorkfloPlus until
``in_doubt_window`` seconds after the mark, so the job is not posted again before then, by
this member or, reading the durable mark, by the partition's next owner. A newer state
posted after the window is therefore the last one to land.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

import structlog
from aiolimiter import AsyncLimiter

from consumer.config import SyncSettings
from consumer.domain.basicsync import body_sha256, encode_body
from consumer.domain.events import EventTrace
from consumer.domain.job import (
    JobState,
    clear_sending,
    is_postable,
    is_terminal,
    mark_sending,
    mark_synced,
    needs_sync,
)
from consumer.domain.results import FailureReason, FailureRecord, SuccessRecord
from consumer.errors import PartitionLost
from consumer.gateway.client import (
    SEND_DEADLINE_PASSED,
    Accepted,
    Rejected,
    Retryable,
    SyncOutcome,
    Systemic,
)
from consumer.kafka.records import Position
from consumer.observability.logging import bound_record
from consumer.observability.tracing import SyncTracer
from consumer.state.store import JobStore
from consumer.stopping import set_within
from consumer.sync.admission import (
    INTENT_STAGE_CEILING_FACTOR,
    SLOT_WAIT_NOISE_S,
    IntentAdmission,
)
from consumer.sync.circuit import CircuitBreaker
from consumer.sync.diagnosis import GatewayEvidence, ProbeResult, Verdict, kind_of, probe_result
from consumer.sync.offsets import PendingOffsets
from consumer.sync.retry import RetryPolicy

log = structlog.get_logger(__name__)


class Gateway(Protocol):
    async def post_basic_sync(self, body: bytes, send_by: float | None = None) -> SyncOutcome: ...

    async def probe(self) -> int | None:
        """The HTTP status of a cheap authorized call; ``None``: no token or no answer."""


class Durability(Protocol):
    """The checkpoint, as the scheduler uses it: the one writer of state and results."""

    def owns(self, partition: int) -> bool:
        """May this member still write (and so post) for ``partition``?"""

    def stage_changed(self, partition: int, client_job_id: str) -> None:
        """The job's state in the store changed; the partition's next commit writes it."""

    def stage_result(self, partition: int, record: SuccessRecord | FailureRecord) -> None:
        """A result record for the partition's next commit."""

    async def make_durable(self, partition: int, only: Collection[str] | None = None) -> None:
        """Commit what is staged for ``partition`` now (with ``only``: at least those jobs'
        states); raises ``PartitionLost``."""


class SchedulerObserver(Protocol):
    """Hooks for metrics and the circuit's effect on consumption."""

    def circuit_changed(self, is_open: bool) -> None: ...

    def intent_committed(self, seconds: float) -> None:
        """A request's intent is durable ``seconds`` after its attempt began."""

    def request_finished(self, outcome: str, status: int | None, seconds: float) -> None:
        """A request ended after ``seconds`` on the wire (token included)."""

    def job_synced(self, latency_ms: int | None) -> None:
        """A success was recorded; ``latency_ms`` from the first unsynced event."""


@dataclass(slots=True)
class _Entry:
    first_dirty: float
    #: when the job last changed (clock seconds): the debounce counts from it
    last_change: float
    due: float = 0.0
    not_before: float = 0.0
    #: requests sent for the current changes (in the result record; the backoff grows with it)
    attempts: int = 0
    #: attempts whose failure was judged the job's own: the retry budget spent
    charged: int = 0
    #: budget time counts from the first per-job verdict after the last systemic one
    per_job_since: float | None = None
    first_attempt: float | None = None
    in_flight: bool = False
    #: holds a place among the jobs whose intent is being committed (see ``_take_request_slot``)
    holds_mark: bool = False
    #: holds one of the ``concurrency`` request slots
    holds_slot: bool = False
    held_reported: bool = False
    #: when the job's one timer in the heap fires (None: none queued); see ``_queue``
    timer: float | None = None
    #: positions of the events applied since the last success, for its record (packed)
    offsets: PendingOffsets = field(default_factory=PendingOffsets)
    #: trace contexts of those events (only while tracing is on), and the last attempt's trace
    traces: list[EventTrace] = field(default_factory=list)
    trace_id: str | None = None
    #: a request of this job may still land until then (clock seconds); see the module doc
    in_doubt_until: float | None = None

    def fresh_budget(self) -> None:
        """No attempts counted: the changes got their record, or an outage ended."""
        self.attempts = 0
        self.charged = 0
        self.per_job_since = None
        self.first_attempt = None


@dataclass(frozen=True, slots=True)
class _Request:
    """One request of a job: the state it carries and its body's hash, whose outcome settles."""

    job: str
    partition: int
    entry: _Entry
    sent: JobState
    sha: str


class SyncScheduler:
    """Owns the timers of dirty jobs and the requests in flight."""

    def __init__(
        self,
        store: JobStore,
        gateway: Gateway,
        durability: Durability,
        settings: SyncSettings,
        observer: SchedulerObserver,
        *,
        circuit: CircuitBreaker,
        retry: RetryPolicy,
        evidence: GatewayEvidence | None = None,
        send_within: float = 30.0,
        in_doubt_window: float = 90.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        tracer: SyncTracer | None = None,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._durability = durability
        self._send_within = send_within
        self._in_doubt_window = in_doubt_window
        self._settings = settings
        self._observer = observer
        self._circuit = circuit
        self._retry = retry
        self._evidence = evidence or GatewayEvidence(window=60.0)
        #: when the last probe started (clock seconds): undecided failures probe at most once
        #: per ``circuit.probe_initial``
        self._last_probe_at = float("-inf")
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()
        self._tracer = tracer or SyncTracer()
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, str]] = []
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._marks = IntentAdmission(
            settings.concurrency, INTENT_STAGE_CEILING_FACTOR * settings.concurrency
        )
        self._limiter = (
            AsyncLimiter(settings.rate_limit_per_s, 1.0) if settings.rate_limit_per_s else None
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self._catching_up = False
        #: jobs released when a catch-up ended still wait for a request slot (see ``draining``)
        self._draining = False
        self._paused_partitions: set[int] = set()

    # -- what the pipeline tells the scheduler -------------------------------------------------

    @property
    def catching_up(self) -> bool:
        return self._catching_up

    @property
    def draining(self) -> bool:
        """The jobs a catch-up held are being posted and some are still due, waiting for a
        request slot (the circuit closed).

        Until they are, the checkpoint keeps the catch-up interval, counted from the drain's
        start (``next_checkpoint_at`` in the pipeline): a full commit now would
        write every job not yet posted, whose intent writes it again moments later, so a
        backlog would cost three changelog values per job instead of two (the intent, then
        the synced state). Their offsets and results are committed once the due jobs drain.
        Not while the circuit is open: nothing drains then, and the live interval applies.
        """
        return self._draining and self._circuit.is_closed

    def set_catching_up(self, catching_up: bool) -> None:
        """A backlog is being read: hold non-terminal jobs until it is (or ``catch_up_max_delay``).

        Posting every job each ``max_delay`` while its later events still wait in the backlog
        would multiply requests; once caught up, held jobs get their normal debounce. The
        jobs already waiting out their debounce when a catch-up starts are held too: the first
        fetches of a backlog are read before the lag says it is one, and their jobs are as
        half-assembled as the rest (posted, each would cost a second request once caught up).
        """
        if catching_up == self._catching_up:
            return
        self._catching_up = catching_up
        log.info("catch_up_mode", catching_up=catching_up, dirty_jobs=len(self._entries))
        if catching_up:
            self._marks.reset()
        retimed = self._retime_waiting()
        if not catching_up:
            # Not ``bool(self._heap)``: the catch-up timers of jobs posted meanwhile (terminal
            # ones) stay in the heap, stale, until they fire; with nothing released the
            # dispatch loop would not wake to end a drain of nothing before the first of them.
            self._draining = retimed > 0
            self._wake.set()

    def _retime_waiting(self) -> int:
        """Give every changed job not in flight its due time in the current mode; how many."""
        now = self._clock()
        retimed = 0
        for job, entry in self._entries.items():
            state = self._store.get(job)
            if state is not None and not entry.in_flight:
                self._queue(job, entry, self._due(state, entry, now))
                retimed += 1
        return retimed

    def posts_within(self, client_job_id: str, seconds: float) -> bool:
        """Will the job be posted within ``seconds``, or once its request in flight ends?

        The checkpoint leaves such a job's state to the intent of that request rather than
        write it now and again a moment later (``consumer.state.deferral``). Not while the
        circuit is open, the job waits out a backoff or a request in doubt, or its partition
        is being released: it could wait long, and its events' offsets with it.
        """
        entry = self._entries.get(client_job_id)
        if entry is None or self._stopping or not self._circuit.is_closed:
            return False
        if self._paused_partitions and self._store.partition_of(client_job_id) in (
            self._paused_partitions
        ):
            return False
        return entry.in_flight or entry.due <= self._clock() + seconds

    @property
    def dirty_jobs(self) -> int:
        return len(self._entries)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def intent_stage_limit(self) -> int:
        """Jobs allowed between their intent and their request now (``sync/admission.py``)."""
        return self._marks.limit

    @property
    def circuit(self) -> CircuitBreaker:
        return self._circuit

    def mark_dirty(
        self,
        client_job_id: str,
        offsets: Iterable[Position] = (),
        traces: Iterable[EventTrace] = (),
    ) -> None:
        """The job changed (its new state is in the store): schedule its sync. Nothing is
        posted before the state is durable: the request's intent commit writes it first."""
        state = self._store.get(client_job_id)
        if state is None:
            return
        now = self._clock()
        entry = self._entries.get(client_job_id)
        if not self._wanted(state):
            if entry is not None and not entry.in_flight:
                del self._entries[client_job_id]
                self._evidence.forget_job(client_job_id)
            return
        if entry is None:
            entry = self._entries[client_job_id] = _Entry(first_dirty=now, last_change=now)
            if state.sending_since is not None:  # restored: a request may be on its way
                # A mark ahead of this clock was made by a clock ahead of it: its request left
                # at most now, so the window from now bounds it (not the clocks' difference).
                in_doubt = self._in_doubt_window - max(self._age(state.sending_since), 0.0)
                if in_doubt > 0:
                    entry.in_doubt_until = now + in_doubt
                    entry.not_before = max(entry.not_before, now + in_doubt)
        entry.last_change = now
        entry.offsets.extend(offsets)
        if self._tracer.enabled:
            entry.traces.extend(traces)
        if entry.in_flight:
            return  # re-queued when the request ends
        self._queue(client_job_id, entry, self._due(state, entry, now))

    def _age(self, moment: datetime) -> float:
        return (self._wall_clock() - moment).total_seconds()

    def reschedule_partition(self, partition: int) -> None:
        """After a restore: every job whose synced version lags is scheduled again (a settled
        job held unread is not: it needs no sync, and reading it would undo its saving)."""
        store = self._store
        now = self._clock()
        scheduled = in_doubt = 0
        for job in store.jobs_in(partition):
            if not store.is_settled(job):
                self.mark_dirty(job)
                entry = self._entries.get(job)
                if entry is not None:
                    scheduled += 1
                    in_doubt += entry.in_doubt_until is not None and entry.in_doubt_until > now
        # What a take left to post, and how much of it waits out requests in doubt: a member
        # that posts nothing after a take says here whether that is why.
        log.info("jobs_rescheduled", partition=partition, jobs=scheduled, waiting_in_doubt=in_doubt)

    async def release_partitions(self, partitions: set[int], deadline: float) -> None:
        """A revoke: stop dispatching these jobs, let their requests finish, then forget them.

        Requests still running after ``deadline`` seconds are cancelled; their jobs' synced
        version lags in the changelog and their ``sending_since`` mark is there, so the
        partition's next owner posts them again once the old request can no longer land.
        """
        self._paused_partitions |= partitions
        jobs = {job for p in partitions for job in self._store.jobs_in(p)}
        running = [task for job, task in self._tasks.items() if job in jobs]
        if running:
            _, pending = await asyncio.wait(running, timeout=deadline)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
                log.warning("revoke_abandoned_requests", count=len(pending))
        for job in jobs:
            self._entries.pop(job, None)
            self._evidence.forget_job(job)
        self._paused_partitions -= partitions

    def abandon_partitions(self, partitions: set[int]) -> None:
        """This member lost ``partitions`` (fenced): cancel their requests, drop their timers.

        Nothing is recorded for them: the new owner holds their state now.
        """
        jobs = {job for p in partitions for job in self._store.jobs_in(p)}
        for job in jobs:
            task = self._tasks.get(job)
            if task is not None:
                task.cancel()
            self._entries.pop(job, None)
            self._evidence.forget_job(job)

    async def stop(self, deadline: float) -> None:
        """Shutdown: dispatch nothing more; requests in flight get ``deadline`` seconds."""
        self._stopping = True
        self._wake.set()
        running = list(self._tasks.values())
        if running:
            _, pending = await asyncio.wait(running, timeout=deadline)
            for task in pending:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    # -- the dispatch loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Dispatch due jobs until ``stop``; probe while the circuit is open."""
        while not self._stopping:
            if not self._circuit.is_closed:
                await self._wait_for_gateway()
                continue
            now = self._clock()
            while self._heap and self._heap[0][0] <= now and self._circuit.is_closed:
                fired, job = heapq.heappop(self._heap)
                entry = self._entries.get(job)
                if entry is None or entry.timer != fired:
                    continue  # stale timer: the job finished, or an earlier timer replaced it
                entry.timer = None
                if entry.in_flight:
                    continue  # queued again when its request ends
                if entry.due > now:
                    self._queue(job, entry, entry.due)  # changed since: its quiet time moved
                    continue
                partition = self._store.partition_of(job)
                if (
                    partition is None
                    or partition in self._paused_partitions
                    or not self._durability.owns(partition)
                ):
                    continue
                await self._marks.acquire()
                if self._stopping:
                    self._marks.release()
                    return
                entry.in_flight = True
                entry.holds_mark = True
                self._tasks[job] = asyncio.create_task(self._sync(job, entry), name=f"sync {job}")
                now = self._clock()
            if self._draining and not (self._heap and self._heap[0][0] <= now):
                self._draining = False  # nothing due waits for a slot: the released jobs went
            timeout = max(self._heap[0][0] - self._clock(), 0.0) if self._heap else None
            self._wake.clear()
            await set_within(self._wake, timeout)

    async def _wait_for_gateway(self) -> None:
        now = self._clock()
        next_probe = self._circuit.next_probe_at
        if next_probe is not None and next_probe > now:
            self._wake.clear()
            await set_within(self._wake, next_probe - now)
            return
        if self._circuit.probe_due(now):
            self._circuit.begin_probe(now)
            if await self._probe() is not ProbeResult.DOWN:
                self._circuit.record_success(self._clock())
                log.info("circuit_closed")
                self._observer.circuit_changed(False)
                self._requeue_waiting()
            else:
                self._circuit.record_failure(self._clock(), systemic=False)
        else:
            await asyncio.sleep(0.05)

    async def _probe(self) -> ProbeResult:
        """Ask the gateway whether it is up, and keep the answer as evidence."""
        self._last_probe_at = self._clock()
        found = probe_result(await self._gateway.probe())
        self._evidence.probed(found, self._clock())
        return found

    def _requeue_waiting(self) -> None:
        """The outage is over: every waiting job is posted again with a fresh budget."""
        now = self._clock()
        for job, entry in self._entries.items():
            if not entry.in_flight:
                entry.fresh_budget()
                self._queue(job, entry, max(now, entry.not_before))

    # -- one request -----------------------------------------------------------------------------

    async def _sync(self, job: str, entry: _Entry) -> None:
        try:
            with bound_record(client_job_id=job):  # every line of the attempt names the job
                await self._attempt(job, entry)
        except asyncio.CancelledError:
            raise
        except PartitionLost:
            pass  # not ours any more: the next owner posts it
        except Exception:
            log.exception("sync_attempt_crashed", client_job_id=job)
            entry.not_before = self._clock() + self._retry.maximum
        finally:
            self._release_slot(entry)
            self._tasks.pop(job, None)
            entry.in_flight = False
            self._after_attempt(job, entry)

    async def _attempt(self, job: str, entry: _Entry) -> None:
        state = self._store.get(job)
        partition = self._store.partition_of(job)
        if state is None or partition is None:
            return
        if not is_postable(state):
            await self._hold(job, entry, state)
            return
        body = encode_body(state)
        request = _Request(job, partition, entry, state, body_sha256(body))
        if request.sha == state.synced_sha256:
            await self._settle(request, state.job_id)
            return
        started = self._clock()
        await self._mark_sending(request)
        intent_seconds = self._clock() - started
        self._observer.intent_committed(intent_seconds)
        if not await self._take_request_slot(entry, intent_seconds, started):
            # Its request could no longer leave in time: nothing was sent, nothing is in doubt,
            # and WorkfloPlus did nothing wrong. Back to the heap, to be announced afresh once
            # the slots had a while to clear (not at once: every turn writes an intent).
            now = self._clock()
            log.info("intent_expired_waiting_for_a_slot", waited_s=round(now - started, 3))
            self._outcome_known(job, partition)
            entry.not_before = max(entry.not_before, now + self._send_within / 4)
            return
        sent_offsets = len(entry.offsets)
        posted = self._clock()
        outcome = await self._post(request, body, started, sent_offsets)
        # The slot bounds requests to WorkfloPlus; recording the outcome needs none.
        self._release_slot(entry)
        finished = self._clock()
        if isinstance(outcome, Retryable) and outcome.reason == SEND_DEADLINE_PASSED:
            self._not_sent_in_time(request, finished - started)
            return
        self._request_ended(request, outcome, started, finished)
        self._observer.request_finished(
            type(outcome).__name__.lower(), getattr(outcome, "status", None), finished - posted
        )
        if isinstance(outcome, Accepted):
            self._evidence.succeeded(job, finished)
            self._record_success(finished)
            await self._succeed(request, outcome, sent_offsets)
        elif isinstance(outcome, Rejected):
            self._evidence.succeeded(job, finished)  # the gateway is up; this job is wrong
            self._record_success(finished)
            await self._fail(
                request, FailureReason.rejected_by_gateway,
                f"WorkfloPlus rejected the job with HTTP {outcome.status}",
                status=outcome.status, body=outcome.body_truncated,
            )  # fmt: skip
        else:
            await self._failed(request, outcome, finished)

    def _not_sent_in_time(self, request: _Request, since_mark_s: float) -> None:
        """The request could not leave within ``send_within`` of its mark: this member was late
        (paused or starved, a slow token or connection), so it was not sent. WorkfloPlus said
        nothing and the job did nothing wrong: no evidence, no budget spent, nothing in doubt.
        It is marked afresh after a backoff that grows with the tries, as any retry."""
        job, entry = request.job, request.entry
        self._outcome_known(job, request.partition)
        delay = self._retry.delay(entry.attempts, None, self._rng)
        entry.not_before = max(entry.not_before, self._clock() + delay)
        log.info(
            "sync_not_sent_in_time",
            client_job_id=job,
            since_mark_s=round(since_mark_s, 3),
            delay_s=round(delay, 3),
        )

    async def _mark_sending(self, request: _Request) -> None:
        """Commit the intent before the request leaves.

        A crash cannot take back a state that was posted (the restored state contains it), a
        request whose outcome we never learn is known to the next owner, and a fenced member
        fails here and posts nothing.
        """
        partition = request.partition
        self._store.put(partition, mark_sending(request.sent, self._wall_clock()))
        self._durability.stage_changed(partition, request.job)
        await self._durability.make_durable(partition, only=(request.job,))

    async def _post(
        self, request: _Request, body: bytes, started: float, sent_offsets: int
    ) -> SyncOutcome:
        """The POST, in the sync's span; it must start within ``send_within`` of the mark."""
        entry = request.entry
        entry.attempts += 1
        if entry.first_attempt is None:
            entry.first_attempt = started
        sent_traces = len(entry.traces)
        with self._tracer.sync(
            request.job, request.sent.version, entry.attempts, sent_offsets, entry.traces
        ) as span:  # docs/operations.md "Tracing"
            outcome = await self._gateway.post_basic_sync(
                body,
                send_by=time.monotonic() + max(self._send_within - (self._clock() - started), 0),
            )
            span.finished(outcome)
        entry.trace_id = span.trace_id
        if isinstance(outcome, Accepted):
            del entry.traces[:sent_traces]
        return outcome

    def _request_ended(
        self, request: _Request, outcome: SyncOutcome, started: float, finished: float
    ) -> None:
        """Whether the request may still land (in doubt) or is known, and its metrics."""
        if isinstance(outcome, Retryable) and outcome.in_doubt:
            request.entry.in_doubt_until = started + self._in_doubt_window
            log.warning(
                "sync_in_doubt",
                client_job_id=request.job,
                reason=getattr(outcome, "reason", None),
                next_post_in_s=round(self._in_doubt_window - (finished - started), 1),
            )
        elif not isinstance(outcome, Accepted):
            self._outcome_known(request.job, request.partition)

    async def _failed(
        self, request: _Request, outcome: Retryable | Systemic, finished: float
    ) -> None:
        """A failed request, judged by evidence across jobs (consumer.sync.diagnosis).

        A request in doubt is a failure like any other here, but the job's next post still
        waits until it can no longer land.
        """
        job, entry = request.job, request.entry
        verdict = self._evidence.failed(job, kind_of(outcome), finished)
        if entry.in_doubt_until is not None:
            entry.not_before = max(entry.not_before, entry.in_doubt_until)
        if verdict is Verdict.SYSTEMIC:
            entry.per_job_since = None  # an outage never uses up a job's budget time
            self._open_circuit(finished, outcome)
        elif verdict is Verdict.PER_JOB:
            entry.charged += 1
            if entry.per_job_since is None:
                entry.per_job_since = finished
            if self._retry.exhausted(entry.charged, finished - entry.per_job_since):
                await self._give_up(request, outcome)
                return
        elif finished - self._last_probe_at >= self._circuit.probe_initial:
            await self._probe()  # undecided: ask the gateway, the next failure is judged on it
        retry_after = outcome.retry_after if isinstance(outcome, Retryable) else None
        delay = self._retry.delay(entry.attempts, retry_after, self._rng)
        entry.not_before = max(entry.not_before, finished + delay)
        log.info(
            "sync_retry_scheduled",
            client_job_id=job,
            attempt=entry.attempts,
            verdict=verdict.value,
            budget_spent=entry.charged,
            delay_s=round(delay, 3),
            reason=outcome.reason,
            status=outcome.status,
        )

    async def _give_up(self, request: _Request, outcome: Retryable | Systemic) -> None:
        """The job's budget is spent on failures that were its own: a final failure record."""
        entry = request.entry
        if isinstance(outcome, Retryable):
            reason = FailureReason.retries_exhausted
            message = f"gave up after {entry.attempts} attempts: {outcome.reason}"
        else:  # refused while others got through
            reason = FailureReason.rejected_by_gateway
            message = _refused_alone(outcome, entry.attempts)
        body = outcome.body_truncated if isinstance(outcome, Systemic) else None
        log.warning("sync_failed_per_job", client_job_id=request.job, reason=reason.value)
        await self._fail(request, reason, message, status=outcome.status, body=body)

    def _outcome_known(self, job: str, partition: int) -> None:
        """A response came (or the request never left): nothing of this job is in doubt."""
        current = self._store.get(job)
        if current is not None and current.sending_since is not None:
            self._store.put(partition, clear_sending(current))
            self._durability.stage_changed(partition, job)

    def _record_success(self, now: float) -> None:
        was_open = not self._circuit.is_closed
        self._circuit.record_success(now)
        if was_open:
            self._observer.circuit_changed(False)
            self._requeue_waiting()

    def _open_circuit(self, now: float, outcome: Retryable | Systemic) -> None:
        """A failure judged systemic: WorkfloPlus fails for every job; pause all, probe."""
        was_closed = self._circuit.is_closed
        self._circuit.record_failure(now, systemic=True)
        if was_closed and not self._circuit.is_closed:
            log.warning("circuit_opened", reason=outcome.reason, status=outcome.status)
            self._observer.circuit_changed(True)
            self._wake.set()

    async def _succeed(self, request: _Request, outcome: Accepted, sent_offsets: int) -> None:
        entry = request.entry
        record = SuccessRecord.for_sync(
            request.sent,
            job_id=outcome.job_id,
            http_status=outcome.status,
            attempts=entry.attempts,
            synced_at=self._wall_clock(),
            payload_sha256=request.sha,
            source_offsets=entry.offsets[:sent_offsets],
            trace_id=entry.trace_id,
        )
        self._observer.job_synced(record.latency_ms)
        entry.fresh_budget()
        del entry.offsets[:sent_offsets]
        entry.in_doubt_until = None
        await self._conclude(request, record, outcome.job_id or request.sent.job_id)

    async def _fail(
        self,
        request: _Request,
        reason: FailureReason,
        message: str,
        *,
        status: int | None,
        body: str | None,
    ) -> None:
        entry = request.entry
        record = FailureRecord.for_sync(
            client_job_id=request.job,
            reason=reason,
            message=message,
            attempts=entry.attempts,
            state_version=request.sent.version,
            failed_at=self._wall_clock(),
            status=status,
            body=body,
            trace_id=entry.trace_id,
        )
        entry.fresh_budget()
        entry.offsets.clear()
        entry.traces.clear()
        await self._conclude(request, record, request.sent.job_id, write_now=True)

    async def _conclude(
        self,
        request: _Request,
        record: SuccessRecord | FailureRecord,
        job_id: str | None,
        *,
        write_now: bool = False,
    ) -> None:
        """The outcome's record, then the settled state, in the partition's next commit."""
        self._durability.stage_result(request.partition, record)
        await self._settle(request, job_id, write_now=write_now)

    async def _take_request_slot(
        self, entry: _Entry, intent_seconds: float, started: float
    ) -> bool:
        """Trade the job's place in the intent stage for a request slot.

        Committing an intent waits for the partition's transaction in progress and then its
        own; a job holding a request slot through that would leave WorkfloPlus idle for those
        round trips. So two stages are bounded apart: jobs whose intent is being committed or
        waits for a slot (``consumer.sync.admission``: ``concurrency`` or more, while slots are
        free), and requests in flight (``concurrency``; the rate limit counts requests only). A
        job that waits here past ``send_within`` is not sent (the gateway client refuses a late
        start) and is retried under a new intent.

        The place is kept until the slot is taken: jobs whose intent is committed wait for a
        slot holding it, and a wait for the slot (and the rate limit) longer than the intent's
        own commit halves the stage: then WorkfloPlus, not the transactions, is what jobs
        wait for, and jobs past the stage wait in the heap (where their later changes still
        coalesce), not as tasks each with an intent that may go stale. A shorter wait is the
        burst of intents one transaction releases together.

        A job that finds every slot taken and would wait past half its ``send_within`` (a grown
        stage in front of a gateway that just slowed down) gives up its place instead: False.
        Posting it later would fail as a late start, counted against the gateway and the job's
        budget for our own queue.
        """
        arrived = self._clock()
        if self._slots.locked():
            # At least a quarter of it, so that a slow commit alone never turns a job back.
            patience = max(started + self._send_within / 2 - arrived, self._send_within / 4)
            try:
                async with asyncio.timeout(patience):
                    await self._slots.acquire()
            except TimeoutError:
                self._marks.slot_busy()
                return False
        else:
            await self._slots.acquire()
        entry.holds_slot = True
        if self._limiter is not None:
            await self._limiter.acquire()
        if self._clock() - arrived > max(intent_seconds, SLOT_WAIT_NOISE_S):
            self._marks.slot_busy()
        elif not (self._catching_up or self._draining):
            # A backlog's jobs are posted at the pace the fixed stage set, which lets a job's
            # last events reach it before its post (about one request per job): sooner posts
            # the jobs whose events are still on their way twice. Live traffic has no such.
            self._marks.sent_at_once()
        self._release_mark(entry)
        return True

    def _release_mark(self, entry: _Entry) -> None:
        if entry.holds_mark:
            entry.holds_mark = False
            self._marks.release()

    def _release_slot(self, entry: _Entry) -> None:
        self._release_mark(entry)
        if entry.holds_slot:
            entry.holds_slot = False
            self._slots.release()

    async def _settle(
        self, request: _Request, job_id: str | None, *, write_now: bool = False
    ) -> None:
        """Record that ``request.sent.version`` has a final outcome, on the newest state.

        The marker and the result record staged just before it commit in one transaction.
        After a success that is the partition's next commit: losing it in a crash costs one
        duplicate post, never an outcome. After a final failure it is committed at once, so an
        operator who sees the failure record finds the job settled (``redrive`` relies on it).
        A request still in doubt keeps its ``sending_since`` mark: a newer state must not be
        posted before it can no longer land.
        """
        job, partition = request.job, request.partition
        self._evidence.forget_job(job)
        current = self._store.get(job)
        if current is None:
            return
        settled = mark_synced(
            current, request.sent.version, request.sha, job_id, self._wall_clock()
        )
        entry = self._entries.get(job)
        if entry is not None and entry.in_doubt_until is not None and settled is not current:
            settled = replace(settled, sending_since=current.sending_since)
        self._store.put(partition, settled)
        self._durability.stage_changed(partition, job)
        if write_now:
            await self._durability.make_durable(partition)

    async def _hold(self, job: str, entry: _Entry, state: JobState) -> None:
        """A job without workflowId cannot be posted; report it once after the hold timeout."""
        waited = self._clock() - entry.first_dirty
        if entry.held_reported or waited < self._settings.hold_timeout_s:
            return
        entry.held_reported = True
        record = FailureRecord.for_sync(
            client_job_id=job,
            reason=FailureReason.missing_job_metadata,
            message=f"held {waited:.0f}s without metadata.workflowId; posted once it arrives",
            attempts=0,
            state_version=state.version,
            failed_at=self._wall_clock(),
        )
        partition = self._store.partition_of(job)
        if partition is not None:
            self._durability.stage_result(partition, record)

    def _after_attempt(self, job: str, entry: _Entry) -> None:
        state = self._store.get(job)
        if state is None or self._entries.get(job) is not entry:
            return
        if not self._wanted(state):
            del self._entries[job]
            self._evidence.forget_job(job)
            return
        if not is_postable(state) and entry.held_reported:
            return  # wait for the next event
        now = self._clock()
        if entry.in_doubt_until is not None and entry.in_doubt_until <= now:
            entry.in_doubt_until = None
        if entry.first_attempt is None and entry.not_before <= now:
            entry.first_dirty = now  # a fresh round of changes
        self._queue(job, entry, self._due(state, entry, now))

    def _wanted(self, state: JobState) -> bool:
        """Needs a sync, or is held: changed but not postable yet (reported after the timeout).

        ``needs_sync`` alone is False for a job without workflowId, which would never be held.
        """
        held = state.version > state.synced_version and not is_postable(state)
        return held or needs_sync(state, self._settings.mode)

    # -- timing ----------------------------------------------------------------------------------

    def _due(self, state: JobState, entry: _Entry, now: float) -> float:
        if not is_postable(state):
            return entry.first_dirty + self._settings.hold_timeout_s
        if is_terminal(state):
            due = now
        elif self._catching_up:
            due = entry.first_dirty + self._settings.catch_up_max_delay_ms / 1000
        else:
            # From the last change, not from now: a change that came while the job's request
            # was in flight has waited out (part of) its quiet time by the time it ends.
            debounce = entry.last_change + self._settings.debounce_ms / 1000
            due = min(debounce, entry.first_dirty + self._settings.max_delay_ms / 1000)
        return max(due, entry.not_before)

    def _queue(self, job: str, entry: _Entry, due: float) -> None:
        """Time the job's next dispatch at ``due``.

        A job has one timer in the heap. A change that moves its due time later (the debounce
        of every event, a backlog's event per batch) pushes none: the timer queued fires first
        and queues the job again at its due time then. A timer per change would hold one heap
        entry per event received within the debounce (a dozen per live job while a backlog is
        read in live mode). Only a due time earlier than the timer (a terminal status, the end
        of catching up) pushes a new one; the later one is then stale and skipped.
        """
        entry.due = due
        if entry.timer is not None and entry.timer <= due:
            return
        entry.timer = due
        heapq.heappush(self._heap, (due, job))
        if self._heap[0][1] == job:
            self._wake.set()


def _refused_alone(outcome: Systemic, attempts: int) -> str:
    """A refusal (403, 401 after a fresh token, 404, 405, 3xx, a 2xx web page) that only this
    job got, worded for its failure record."""
    if outcome.status is not None and 200 <= outcome.status < 300:
        refused = (
            f"a web page came back for the job with HTTP {outcome.status} instead of "
            "basicSync's answer (a firewall or proxy in front of WorkfloPlus refusing it?), "
            "while others were accepted"
        )
    else:
        refused = f"WorkfloPlus refused the job with HTTP {outcome.status} while accepting others"
    return f"{refused} ({attempts} attempts): {outcome.reason}"
