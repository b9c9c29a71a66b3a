"""When and how jobs are posted (consumer.sync.scheduler.SyncScheduler).

Real asyncio time with small settings; fakes at the Gateway / Outcomes / observer seams; job
states built with the real reducer and kept in a real JobStore. Assertions are on counts,
orderings and generous bounds, never on tight timings.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from consumer.config import SyncSettings
from consumer.domain.basicsync import body_sha256, encode_body
from consumer.domain.events import JobEvent
from consumer.domain.job import JobState, SyncMode
from consumer.domain.results import FailureReason, SourceOffset
from consumer.domain.settled import settled_header, settled_job
from consumer.domain.state_codec import encode_state
from consumer.gateway.client import SEND_DEADLINE_PASSED, Accepted, Rejected, Retryable, Systemic
from consumer.state.store import JobStore
from consumer.sync.circuit import CircuitBreaker
from consumer.sync.diagnosis import GatewayEvidence
from consumer.sync.retry import RetryPolicy
from consumer.sync.scheduler import SyncScheduler
from tests.unit.fakes import (
    FakeCheckpoint,
    FakeGateway,
    RecordingObserver,
    accepted,
    fold,
    job_state,
    status_changed,
    upserted,
)

WAIT = 3.0  # seconds a condition may take before a test fails: far above any expected time


TOKEN_DOWN = Retryable(status=None, retry_after=None, reason="token_unavailable: 503")
FORBIDDEN = Systemic(status=403, reason="forbidden")


def retryable(status: int = 503, retry_after: float | None = None) -> Retryable:
    return Retryable(status=status, retry_after=retry_after, reason=f"http_{status}")


def title(body: bytes) -> str:
    return str(json.loads(body)["metadata"]["jobTitle"])


async def eventually(predicate: Callable[[], bool], within: float = WAIT) -> None:
    """Wait until ``predicate()`` holds; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


class Harness:
    """A scheduler wired to fakes, with helpers to change jobs the way the pipeline does."""

    def __init__(
        self,
        gateway: FakeGateway | None = None,
        *,
        circuit: CircuitBreaker | None = None,
        retry: RetryPolicy | None = None,
        evidence: GatewayEvidence | None = None,
        in_doubt_window: float = 90.0,
        **settings: Any,
    ) -> None:
        self.store = JobStore()
        self.gateway = gateway or FakeGateway()
        self.outcomes = FakeCheckpoint(self.store)
        self.observer = RecordingObserver()
        self.settings = SyncSettings(
            **{"debounce_ms": 20, "max_delay_ms": 200, "concurrency": 8, **settings}
        )
        self.scheduler = SyncScheduler(
            self.store,
            self.gateway,
            self.outcomes,
            self.settings,
            self.observer,
            circuit=circuit or CircuitBreaker(probe_initial=0.02, probe_max=0.1),
            retry=retry
            or RetryPolicy(initial=0.005, maximum=0.01, max_attempts=3, max_elapsed=30.0),
            evidence=evidence,
            send_within=in_doubt_window / 3,
            in_doubt_window=in_doubt_window,
        )

    def put(self, state: JobState, partition: int = 0) -> JobState:
        """Store ``state`` and tell the scheduler it is durable."""
        self.store.put(partition, state)
        self.scheduler.mark_dirty(state.client_job_id)
        return state

    def change(self, job: str, *events: JobEvent, partition: int = 0) -> JobState:
        """Apply ``events`` to the job's current state, store it and mark it dirty."""
        return self.put(fold(self.store.get(job), events), partition)

    def state(self, job: str) -> JobState:
        state = self.store.get(job)
        assert state is not None
        return state

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SyncScheduler]:
        task = asyncio.create_task(self.scheduler.run())
        try:
            yield self.scheduler
        finally:
            await self.scheduler.stop(1.0)
            await asyncio.wait_for(task, WAIT)


class TestSyncScheduler:
    async def test_a_cancel_that_meets_a_wake_ends_the_dispatch_loop(self) -> None:
        """The task group cancels the scheduler when the consume loop fails (a fatal error),
        and the loop must end even when a wake comes in the same turn. On Python 3.11,
        ``asyncio.wait_for`` returned instead of raising when the cancel met its finished
        awaitable; the loop then waited again for its next due job, and a member stopping on
        a changelog another group wrote never exited."""
        h = Harness(debounce_ms=60_000, max_delay_ms=120_000)
        h.put(job_state("a", title="v0"))  # due in a minute: the loop waits with a timeout
        task = asyncio.create_task(h.scheduler.run())
        await asyncio.sleep(0.05)
        h.scheduler.set_catching_up(True)
        h.scheduler.set_catching_up(False)  # wakes the loop ...
        task.cancel()  # ... in the same turn as the cancel
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(2):
                await task

    # -- timing --------------------------------------------------------------------------------

    async def test_burst_coalesces_into_one_request_with_latest_state(self) -> None:
        """Changes within the debounce become one request carrying the newest state."""
        h = Harness(debounce_ms=100, max_delay_ms=2_000)
        async with h.running():
            h.put(job_state("a", title="v0"))
            for n in range(1, 5):
                h.change("a", upserted("a", jobTitle=f"v{n}"))
            await eventually(lambda: len(h.outcomes.successes) == 1)
        assert [title(b) for b in h.gateway.bodies] == ["v4"]
        record = h.outcomes.successes[0]
        assert record.state_version == h.state("a").version
        assert record.payload_sha256 == body_sha256(h.gateway.bodies[0])
        assert record.job_id == "server-1"
        assert record.attempts == 1
        assert h.state("a").synced_version == record.state_version

    async def test_a_state_is_made_durable_before_it_is_posted(self) -> None:
        """Every posted version was first handed to ``make_durable`` (a crash cannot undo it)."""
        h = Harness(debounce_ms=0, max_delay_ms=0)
        async with h.running():
            h.put(job_state("a", title="v0"))
            await eventually(lambda: len(h.outcomes.successes) == 1)
        posted = h.outcomes.successes[0].state_version
        assert (0, posted) in h.outcomes.durable

    async def test_the_intent_commit_and_the_request_are_timed_apart(self) -> None:
        """``request_finished`` times the POST alone and ``intent_committed`` the wait for the
        intent before it: latency an operator sees is either the broker's or the gateway's."""
        h = Harness(FakeGateway(delay=0.05), debounce_ms=0, max_delay_ms=0)
        h.outcomes.commit_delay = 0.4
        async with h.running():
            h.put(job_state("a", title="v0"))
            await eventually(lambda: len(h.outcomes.successes) == 1)
        [intent] = h.observer.intent_seconds
        [request] = h.observer.request_seconds
        assert intent >= 0.4
        assert 0.05 <= request < 0.3, "the POST alone, not the intent's commit before it"

    async def test_slow_intent_commits_do_not_cap_requests_while_slots_are_free(self) -> None:
        """Intents that wait together share a transaction: while requests find slots free,
        more jobs than ``concurrency`` may be committing their intent at once, so the request
        rate is not ``concurrency`` / (a commit's time). Requests stay within ``concurrency``."""
        h = Harness(FakeGateway(), debounce_ms=0, max_delay_ms=0, concurrency=2)
        h.outcomes.commit_delay = 0.05
        async with h.running():
            for n in range(60):
                h.put(job_state(f"j{n}", status="InProgress"))
            await eventually(lambda: len(h.outcomes.successes) == 60)
        assert h.outcomes.max_committing >= 8, h.outcomes.max_committing
        assert h.gateway.max_in_flight <= 2

    async def test_the_intent_stage_grows_for_live_traffic_only(self) -> None:
        """A backlog's jobs are posted at the fixed stage's pace (posted sooner, a job whose
        last events are still on their way is posted twice): the stage is reset when a
        catch-up starts and does not grow while it lasts or while its held jobs drain."""
        h = Harness(FakeGateway(), debounce_ms=0, max_delay_ms=0, concurrency=2)
        async with h.running():
            for n in range(20):
                h.put(job_state(f"live{n}", status="InProgress"))
            await eventually(lambda: len(h.outcomes.successes) == 20)
            assert h.scheduler.intent_stage_limit > 2
            h.scheduler.set_catching_up(True)
            assert h.scheduler.intent_stage_limit == 2
            for n in range(40):
                h.put(job_state(f"held{n}", status="InProgress"))
            h.scheduler.set_catching_up(False)
            limits = []
            while h.scheduler.draining:
                limits.append(h.scheduler.intent_stage_limit)
                await asyncio.sleep(0.001)
            await eventually(lambda: len(h.outcomes.successes) == 60)
        assert limits, "the held jobs drained"
        assert max(limits) == 2

    async def test_a_slow_gateway_shrinks_the_intent_stage_back(self) -> None:
        """After the stage grew on a fast gateway, slow requests make the jobs behind them wait
        for a slot longer than their intent took: the stage halves back to ``concurrency`` and
        stays there while the gateway is slow, and no more intents than the grown stage ever
        wait in front of the slots (the rest wait in the heap, coalescing)."""
        h = Harness(FakeGateway(), debounce_ms=0, max_delay_ms=0, concurrency=2)
        async with h.running():
            for n in range(40):
                h.put(job_state(f"warm{n}", status="InProgress"))
            await eventually(lambda: len(h.outcomes.successes) == 40)
            grown = h.scheduler.intent_stage_limit
            assert grown > 2, "the stage grew while every request found a slot"
            h.gateway.delay = 0.1
            for n in range(60):
                h.put(job_state(f"j{n}", status="InProgress"))
            most_waiting = 0
            for _ in range(40):  # admitted: committing (at once here) or waiting for a slot
                most_waiting = max(most_waiting, h.scheduler._marks.held)
                await asyncio.sleep(0.02)
            assert 2 <= most_waiting <= grown, (most_waiting, grown)
            assert h.scheduler.intent_stage_limit == 2
            h.gateway.delay = 0.0
            await eventually(lambda: len(h.outcomes.successes) == 100)

    async def test_an_intent_that_waits_too_long_for_a_slot_steps_back_unsent(self) -> None:
        """A job whose intent is committed but finds every slot taken by hung requests gives up
        its place before its send deadline instead of holding its mark until the deadline
        refuses it: its intent is cleared (nothing in doubt), and it is posted once the slots
        clear."""
        h = Harness(
            FakeGateway(), debounce_ms=0, max_delay_ms=0, concurrency=1, in_doubt_window=0.6
        )  # fmt: skip  (send_within 0.2 s)
        gate = h.gateway.gate = asyncio.Event()
        with capture_logs() as logs:
            async with h.running():
                h.put(job_state("a", status="InProgress"))
                await eventually(lambda: h.gateway.in_flight == 1)
                h.put(job_state("b", status="InProgress"))
                await eventually(
                    lambda: any(e["event"] == "intent_expired_waiting_for_a_slot" for e in logs)
                )
                assert h.gateway.jobs == ["a"], "b was never sent while a hung"
                assert h.state("b").sending_since is None, "nothing of b is in doubt"
                await asyncio.sleep(0.3)
                gate.set()
                await eventually(lambda: len(h.outcomes.successes) == 2)
        assert h.gateway.jobs.count("b") == 1
        assert ("retryable", None) not in h.observer.requests, h.observer.requests
        assert not h.outcomes.failures

    async def test_catching_up_holds_non_terminal_jobs_until_caught_up(self) -> None:
        """While a backlog is read a changed job waits (terminal ones do not); once caught up
        it is posted after its normal debounce, once."""
        h = Harness(debounce_ms=0, max_delay_ms=0)
        async with h.running():
            h.scheduler.set_catching_up(True)
            h.put(job_state("a", status="InProgress"))
            h.put(job_state("b", status="InProgress"))
            h.change("b", status_changed("b", "Completed"))
            await eventually(lambda: len(h.outcomes.successes) == 1)
            await asyncio.sleep(0.2)
            assert [r.client_job_id for r in h.outcomes.successes] == ["b"]
            h.scheduler.set_catching_up(False)
            await eventually(lambda: len(h.outcomes.successes) == 2)
        assert h.outcomes.successes[1].client_job_id == "a"

    async def test_jobs_already_waiting_when_a_catch_up_starts_are_held_too(self) -> None:
        """A backlog's first fetches are read before the lag says it is one: the jobs they
        changed, still waiting out their debounce when the catch-up starts, are held with the
        rest instead of posted half-assembled (and again once caught up). A terminal one is
        still posted at once; each is posted once."""
        h = Harness(debounce_ms=100, max_delay_ms=1_000, catch_up_max_delay_ms=60_000)
        async with h.running():
            h.put(job_state("a", status="InProgress"))
            h.put(job_state("b", status="InProgress"))
            h.scheduler.set_catching_up(True)
            h.change("b", status_changed("b", "Completed"))
            await eventually(lambda: len(h.outcomes.successes) == 1)
            await asyncio.sleep(0.3)  # three debounces
            assert [r.client_job_id for r in h.outcomes.successes] == ["b"]
            h.scheduler.set_catching_up(False)
            await eventually(lambda: len(h.outcomes.successes) == 2)
            await asyncio.sleep(0.15)
        assert h.outcomes.successes[1].client_job_id == "a"
        assert h.gateway.posts_for("a") == h.gateway.posts_for("b") == 1

    async def test_jobs_released_by_a_catch_up_drain_before_the_live_interval(self) -> None:
        """The end of a catch-up releases every held job at once; until no due job waits for a
        request slot the scheduler reports ``draining`` (the pipeline keeps the long
        checkpoint interval meanwhile), and not a moment longer."""
        h = Harness(FakeGateway(), debounce_ms=0, max_delay_ms=0, concurrency=1)
        h.scheduler.set_catching_up(True)
        for n in range(4):
            h.put(job_state(f"j{n}", status="InProgress"))
        assert not h.scheduler.draining
        gate = h.gateway.gate = asyncio.Event()
        async with h.running():
            h.scheduler.set_catching_up(False)
            assert h.scheduler.draining
            await eventually(lambda: h.gateway.in_flight == 1)
            await asyncio.sleep(0.05)
            assert h.scheduler.draining, "three due jobs still wait for the one slot"
            # One job posting, one marked and waiting for the slot; the other two unmarked (the
            # intent stage does not grow while held jobs drain).
            assert len(h.outcomes.durable) == 2, h.outcomes.durable
            gate.set()
            await eventually(lambda: len(h.outcomes.successes) == 4)
            await eventually(lambda: not h.scheduler.draining)
            h.put(job_state("live", status="InProgress"))  # live changes never drain
            await eventually(lambda: len(h.outcomes.successes) == 5)
            assert not h.scheduler.draining

    async def test_an_open_circuit_ends_the_drain(self) -> None:
        """Nothing drains while the gateway is down: the live checkpoint interval applies."""
        gateway = FakeGateway([TOKEN_DOWN], probe_results=(None,))
        h = Harness(gateway, debounce_ms=0, max_delay_ms=0, concurrency=1)
        h.scheduler.set_catching_up(True)
        for n in range(3):
            h.put(job_state(f"j{n}", status="InProgress"))
        async with h.running():
            h.scheduler.set_catching_up(False)
            assert h.scheduler.draining
            await eventually(lambda: not h.scheduler.circuit.is_closed)
            assert not h.scheduler.draining

    async def test_a_catch_up_that_ends_with_nothing_held_does_not_drain(self) -> None:
        """Jobs that turned terminal while the backlog was read were posted at once; their
        catch-up timers stay in the heap, stale, for a minute. Ending the catch-up with no
        job held is no drain: the live checkpoint interval applies at once, not after them."""
        h = Harness(debounce_ms=0, max_delay_ms=0, catch_up_max_delay_ms=60_000)
        h.scheduler.set_catching_up(True)
        async with h.running():
            for n in range(3):
                h.put(job_state(f"j{n}", status="InProgress"))
                h.change(f"j{n}", status_changed(f"j{n}", "Completed"))
            await eventually(lambda: len(h.outcomes.successes) == 3)
            assert h.scheduler._heap, "the catch-up timers are still queued (stale)"
            h.scheduler.set_catching_up(False)
            assert not h.scheduler.draining

    async def test_a_backlog_keeps_one_timer_per_job(self) -> None:
        """While catching up a job's due time stays put: events that keep coming for it do not
        add a timer each (a backlog would hold a dozen per live job)."""
        h = Harness(debounce_ms=0, max_delay_ms=0, catch_up_max_delay_ms=60_000)
        h.scheduler.set_catching_up(True)
        h.put(job_state("a", status="InProgress"))
        for n in range(10):
            h.change("a", upserted("a", jobTitle=f"v{n}"))
        h.put(job_state("b", status="InProgress"))
        assert len(h.scheduler._heap) == 2
        async with h.running():
            h.scheduler.set_catching_up(False)  # a new due time: queued again, posted once
            await eventually(lambda: len(h.outcomes.successes) == 2)
            await asyncio.sleep(0.05)
        assert sorted(r.client_job_id for r in h.outcomes.successes) == ["a", "b"]
        assert h.gateway.posts_for("a") == 1

    async def test_changes_within_the_debounce_keep_one_timer_per_job(self) -> None:
        """Live, each change moves a job's due time later without adding a timer: the one
        queued fires, finds the due time moved and waits again. The job is posted once, a
        debounce after its last change."""
        h = Harness(debounce_ms=300, max_delay_ms=5_000)
        loop = asyncio.get_running_loop()
        async with h.running():
            h.put(job_state("a", title="v0"))
            h.put(job_state("b", title="v0"))
            for n in range(1, 10):  # 450 ms of changes: the first timer fires among them
                await asyncio.sleep(0.05)
                h.change("a", upserted("a", jobTitle=f"v{n}"))
                assert len(h.scheduler._heap) <= 2, h.scheduler._heap
            last = loop.time()
            await eventually(lambda: len(h.outcomes.successes) == 2)
            waited = loop.time() - last
        assert h.gateway.posts_for("a") == 1
        assert title(h.gateway.bodies[-1]) == "v9"
        assert waited >= 0.25, f"posted {waited:.2f}s after the last change, debounce 0.3s"

    async def test_the_success_record_reports_every_offset_since_the_last_one(self) -> None:
        """Offsets handed over with the changes are reported by the next success, in order,
        and only by it."""
        h = Harness(debounce_ms=0, max_delay_ms=0)
        first = [SourceOffset(topic="in", partition=0, offset=n) for n in (5, 9)]
        second = [SourceOffset(topic="in-b", partition=0, offset=1 << 40)]
        async with h.running():
            state = job_state("a", title="v0")
            h.store.put(0, state)
            h.scheduler.mark_dirty("a", first[:1])
            h.scheduler.mark_dirty("a", first[1:])
            await eventually(lambda: len(h.outcomes.successes) == 1)
            h.store.put(0, fold(h.store.get("a"), [upserted("a", jobTitle="v1")]))
            h.scheduler.mark_dirty("a", second)
            await eventually(lambda: len(h.outcomes.successes) == 2)
        assert [r.source_offsets for r in h.outcomes.successes] == [first, second]

    async def test_debounce_waits_for_quiet(self) -> None:
        """A non-terminal change is not posted before its debounce has passed."""
        h = Harness(debounce_ms=5_000, max_delay_ms=5_000)
        async with h.running():
            h.put(job_state("a"))
            await asyncio.sleep(0.2)
            assert h.gateway.bodies == []
            assert h.scheduler.dirty_jobs == 1

    async def test_terminal_status_is_posted_at_once(self) -> None:
        """A Completed job skips the debounce."""
        h = Harness(debounce_ms=5_000, max_delay_ms=5_000)
        async with h.running():
            h.put(job_state("a", status="InProgress"))
            h.change("a", status_changed("a", "Completed"))
            await eventually(lambda: len(h.outcomes.successes) == 1, within=2.0)
        assert h.outcomes.successes[0].job_status == "Completed"

    async def test_max_delay_caps_a_continuous_stream(self) -> None:
        """A job changing faster than its debounce is still posted within max_delay."""
        h = Harness(debounce_ms=100, max_delay_ms=150)
        async with h.running():
            h.put(job_state("a", title="v0"))
            for n in range(1, 50):  # up to ~1 s of changes, 20 ms apart: never 100 ms quiet
                await asyncio.sleep(0.02)
                h.change("a", upserted("a", jobTitle=f"v{n}"))
                if h.gateway.bodies:
                    break
            assert h.gateway.bodies, "nothing posted while events kept coming"

    async def test_a_change_during_a_request_is_quiet_from_the_change_not_the_response(
        self,
    ) -> None:
        """The debounce counts from a job's last change: a change that came during its request
        and has been quiet for the debounce since is posted as soon as the request ends, not a
        whole debounce after it (which added the debounce twice to the live latency)."""
        gateway = FakeGateway()
        gateway.gate = asyncio.Event()
        h = Harness(gateway, debounce_ms=1_000, max_delay_ms=10_000)
        loop = asyncio.get_running_loop()
        async with h.running():
            h.put(job_state("a", title="v0"))
            await eventually(lambda: gateway.in_flight == 1)
            h.change("a", upserted("a", jobTitle="v1"))
            await asyncio.sleep(1.1)  # the change's debounce passes while the request hangs
            released = loop.time()
            gateway.gate.set()
            await eventually(lambda: len(gateway.bodies) == 2)
            waited = loop.time() - released
        assert [title(b) for b in gateway.bodies] == ["v0", "v1"]
        assert waited < 0.6, f"posted {waited:.2f}s after the response, debounce 1s"

    async def test_a_change_just_before_the_response_still_gets_its_quiet_time(self) -> None:
        """The other side: a change made just before the request ends waits out the rest of
        its debounce, so a burst arriving then is still coalesced."""
        gateway = FakeGateway()
        gateway.gate = asyncio.Event()
        h = Harness(gateway, debounce_ms=800, max_delay_ms=10_000)
        async with h.running():
            h.put(job_state("a", title="v0"))
            await eventually(lambda: gateway.in_flight == 1)
            h.change("a", upserted("a", jobTitle="v1"))
            gateway.gate.set()
            await eventually(lambda: len(h.outcomes.successes) == 1)
            h.change("a", upserted("a", jobTitle="v2"))
            await asyncio.sleep(0.3)
            assert len(gateway.bodies) == 1, "posted inside the debounce of the last change"
            await eventually(lambda: len(gateway.bodies) == 2)
        assert [title(b) for b in gateway.bodies] == ["v0", "v2"]

    # -- ordering and concurrency ----------------------------------------------------------------

    async def test_one_request_in_flight_per_job(self) -> None:
        """A job changed during its request waits for it, then posts the newest state."""
        gateway = FakeGateway()
        gateway.gate = asyncio.Event()
        h = Harness(gateway, debounce_ms=0, max_delay_ms=0)
        async with h.running():
            h.put(job_state("a", title="v0"))
            await eventually(lambda: gateway.in_flight == 1)
            for n in range(1, 6):
                h.change("a", upserted("a", jobTitle=f"v{n}"))
                await asyncio.sleep(0.01)
            assert len(gateway.bodies) == 1
            gateway.gate.set()
            await eventually(lambda: h.state("a").synced_version == h.state("a").version)
        assert gateway.max_per_job["a"] == 1
        assert [title(b) for b in gateway.bodies] == ["v0", "v5"]
        versions = [r.state_version for r in h.outcomes.successes]
        assert versions == sorted(versions)

    async def test_concurrency_is_bounded_and_jobs_run_in_parallel(self) -> None:
        """At most ``concurrency`` requests run at once, and different jobs do overlap."""
        gateway = FakeGateway(delay=0.05)
        h = Harness(gateway, concurrency=2, debounce_ms=0, max_delay_ms=0)
        async with h.running():
            for n in range(6):
                h.put(job_state(f"job-{n}"))
            await eventually(lambda: len(h.outcomes.successes) == 6)
        assert gateway.max_in_flight == 2
        assert sorted(gateway.jobs) == [f"job-{n}" for n in range(6)]

    async def test_the_next_intent_is_committed_while_a_request_holds_the_only_slot(
        self,
    ) -> None:
        """Concurrency bounds requests, not intents: with one slot and that request stalled,
        the next job's intent is already durable, its request waits, and one request at a
        time reaches WorkfloPlus."""
        gateway = FakeGateway()
        gateway.gate = asyncio.Event()
        h = Harness(gateway, concurrency=1, debounce_ms=0, max_delay_ms=0)

        def marked() -> set[str]:
            return {s.client_job_id for _, s in h.outcomes.states if s.sending_since}

        async with h.running():
            h.put(job_state("job-a"))
            await eventually(lambda: gateway.jobs == ["job-a"])
            h.put(job_state("job-b"))
            await eventually(lambda: marked() == {"job-a", "job-b"})
            await asyncio.sleep(0.05)
            assert gateway.jobs == ["job-a"], "a second request left while the slot was taken"
            gateway.gate.set()
            await eventually(lambda: len(h.outcomes.successes) == 2)
        assert gateway.jobs == ["job-a", "job-b"]
        assert gateway.max_in_flight == 1

    async def test_rate_limit_spreads_requests(self) -> None:
        """With a rate limit, a backlog larger than the burst takes time to drain."""
        gateway = FakeGateway()
        h = Harness(gateway, rate_limit_per_s=20, debounce_ms=0, max_delay_ms=0)
        loop = asyncio.get_running_loop()
        async with h.running():
            started = loop.time()
            for n in range(30):
                h.put(job_state(f"job-{n}"))
            await eventually(lambda: len(h.outcomes.successes) == 30)
            elapsed = loop.time() - started
        # 20 may go at once, the other 10 at 20/s: about 0.5 s; unlimited would take ~0 s.
        assert elapsed >= 0.3

    # -- gateway outcomes ------------------------------------------------------------------------

    async def test_retry_after_is_honoured(self) -> None:
        """A 429 with Retry-After delays the next attempt at least that long."""
        gateway = FakeGateway([retryable(429, retry_after=0.3), Accepted(200, "j", "{}")])
        h = Harness(gateway, debounce_ms=0, max_delay_ms=0)
        async with h.running():
            h.put(job_state("a"))
            await eventually(lambda: len(h.outcomes.successes) == 1)
        assert len(gateway.times) == 2
        assert gateway.times[1] - gateway.times[0] >= 0.25
        assert h.outcomes.successes[0].attempts == 2
        assert h.outcomes.failures == []

    async def test_retries_exhausted_is_a_final_failure(self) -> None:
        """A lone job answered 503 while probes find the gateway up fails on its own budget:
        one retries_exhausted record after max_attempts failures judged its own, nobody paused.
        (Undecided failures in between, before a fresh probe, spend nothing.)"""
        gateway = FakeGateway([retryable(503)])
        h = Harness(gateway, debounce_ms=0, max_delay_ms=0)
        async with h.running():
            state = h.put(job_state("a"))
            await eventually(lambda: len(h.outcomes.failures) == 1)
            posted = len(gateway.bodies)
            await asyncio.sleep(0.1)  # nothing more is sent for this state
        assert len(gateway.bodies) == posted
        failure = h.outcomes.failures[0]
        assert failure.reason is FailureReason.retries_exhausted
        assert failure.attempts == posted >= 3
        assert failure.error.status == 503
        assert failure.state_version == state.version
        assert gateway.probes >= 1
        assert h.outcomes.successes == []
        assert h.state("a").synced_version == state.version
        assert h.observer.circuit == []

    async def test_a_request_not_sent_in_time_spends_nothing_and_fails_nothing(self) -> None:
        """A member late for its own send deadlines (paused, starved, a slow token) sends
        nothing: that is neither the gateway's failure nor the job's. While another job's
        success says the gateway is up, nine such turns in a row (three times the budget of
        three) end in a success, with no failure record, no probe, no circuit, and the job's
        intent cleared each time (nothing in doubt). Before, each was judged the job's own
        failure and the job ended in retries_exhausted."""
        late = Retryable(status=None, retry_after=None, reason=SEND_DEADLINE_PASSED)
        gateway = FakeGateway([accepted(), *[late] * 9, accepted()])
        h = Harness(gateway, debounce_ms=0, max_delay_ms=0)
        with capture_logs() as logs:
            async with h.running():
                h.put(job_state("b"))
                await eventually(lambda: len(h.outcomes.successes) == 1)
                h.put(job_state("a"))
                await eventually(lambda: len(h.outcomes.successes) == 2)
        assert h.outcomes.failures == []
        assert h.outcomes.successes[1].client_job_id == "a"
        assert h.outcomes.successes[1].attempts == 10
        not_sent = [line for line in logs if line["event"] == "sync_not_sent_in_time"]
        assert len(not_sent) == 9
        assert not any(line["event"] == "sync_retry_scheduled" for line in logs)
        assert gateway.probes == 0
        assert h.observer.circuit == []
        assert h.state("a").sending_since is None

    async def test_a_retry_after_of_a_day_is_honoured_up_to_its_bound(self) -> None:
        """A 429 asking for a day (or milliseconds sent as seconds) does not park the job for
        a day: it comes back after ``retry_after_max`` and is synced."""
        gateway = FakeGateway([retryable(429, retry_after=86_400.0), accepted()])
        h = Harness(
            gateway,
            retry=RetryPolicy(
                initial=0.005, maximum=0.01, max_attempts=3, max_elapsed=30.0,
                retry_after_max=0.05,
            ),
            debounce_ms=0,
            max_delay_ms=0,
        )  # fmt: skip
        async with h.running():
            h.put(job_state("a"))
            await eventually(lambda: len(h.outcomes.successes) == 1)
        assert len(gateway.bodies) == 2
        assert gateway.times[1] - gateway.times[0] >= 0.05

    async def test_no_retries_exhausted_while_circuit_open(self) -> None:
        """A failure judged systemic (the token endpoint down) opens the circuit and does not
        count against the job's budget, even a budget of one attempt."""
        gateway = FakeGateway([TOKEN_DOWN, Accepted(200, "j", "{}")])
        h = Harness(
            gateway,
            retry=RetryPolicy(initial=0.005, maximum=0.01, max_attempts=1, max_elapsed=30.0),
            debounce_ms=0,
            max_delay_ms=0,
        )
        async with h.running():
            h.put(job_state("a"))
            await eventually(lambda: len(h.outcomes.successes) == 1)
        assert h.outcomes.failures == []
        assert h.observer.circuit == [True, False]
        assert gateway.probes >= 1

    async def test_closing_the_circuit_restarts_retry_budgets(self) -> None:
        """Attempts judged the job's own before an outage do not count after it: the budget
        starts afresh once the circuit closes."""
        gateway = FakeGateway(
            [retryable(503), retryable(503), TOKEN_DOWN, retryable(503), Accepted(200, "j", "{}")]
        )
        h = Harness(
            gateway,
            retry=RetryPolicy(initial=0.005, maximum=0.01, max_attempts=2, max_elapsed=30.0),
            debounce_ms=0,
            max_delay_ms=0,
        )
        async with h.running():
            h.put(job_state("a"))
            await eventually(lambda: len(h.outcomes.successes) == 1)
        # 503 (undecided, probe: up), 503 (per-job: 1 of 2), token down (systemic: opens),
        # probe up (closes, budget reset), 503 (per-job: 1 of 2 again), 200.
        assert len(gateway.bodies) == 5
        assert h.outcomes.failures == []
        assert h.outcomes.successes[0].attempts == 2
        assert h.observer.circuit == [True, False]

    async def test_rejected_is_a_final_failure_with_body(self) -> None:
        """A final 4xx yields rejected_by_gateway with status and body; no retry."""
        gateway = FakeGateway([Rejected(status=422, body_truncated='{"error":"bad step"}')])
        h = Harness(gateway, debounce_ms=0, max_delay_ms=0)
        async with h.running():
            state = h.put(job_state("a"))
            await eventually(lambda: len(h.outcomes.failures) == 1)
            await asyncio.sleep(0.1)
        assert len(gateway.bodies) == 1
        failure = h.outcomes.failures[0]
        assert failure.reason is FailureReason.rejected_by_gateway
        assert failure.error.status == 422
        assert failure.error.body == '{"error":"bad step"}'
        assert failure.state_version == state.version
        assert failure.client_job_id == "a"
        assert h.observer.circuit == []
        assert h.observer.requests == [("rejected", 422)]
        assert h.state("a").synced_version == state.version

    async def test_systemic_opens_circuit_and_probe_success_resumes(self) -> None:
        """Credentials refused by the token endpoint open the circuit: nothing is sent while
        probes fail; a good probe resumes all."""
        gateway = FakeGateway(
            [Systemic(status=None, reason="token_rejected: invalid_client"), accepted()],
            probe_results=[None],
        )
        h = Harness(gateway, debounce_ms=0, max_delay_ms=0)
        async with h.running():
            h.put(job_state("a"))
            await eventually(lambda: h.observer.circuit == [True])
            assert not h.scheduler.circuit.is_closed
            h.put(job_state("b", status="Completed"))
            await eventually(lambda: gateway.probes >= 2)
            assert gateway.jobs == ["a"]
            assert h.outcomes.failures == []
            gateway.probe_results = deque([404])
            await eventually(lambda: len(h.outcomes.successes) == 2)
        assert h.observer.circuit == [True, False]
        assert gateway.jobs[0] == "a"
        assert sorted(gateway.jobs[1:]) == ["a", "b"]
        assert h.outcomes.failures == []

    async def test_unchanged_payload_is_not_posted_again(self) -> None:
        """A new version whose body equals the synced one is settled without a request."""
        h = Harness(debounce_ms=0, max_delay_ms=0)
        async with h.running():
            h.put(job_state("a", title="same"))
            await eventually(lambda: len(h.outcomes.successes) == 1)
            synced = h.state("a")
            again = h.change("a", upserted("a", jobTitle="same"))
            assert again.version > synced.version
            assert body_sha256(encode_body(again)) == synced.synced_sha256
            await eventually(lambda: h.state("a").synced_version == again.version)
        assert len(h.gateway.bodies) == 1
        assert len(h.outcomes.successes) == 1
        assert h.outcomes.states[-1][1].synced_version == again.version

    async def test_terminal_only_mode_posts_only_terminal_jobs(self) -> None:
        """In terminal_only mode, changes are not posted until the job is Completed."""
        h = Harness(mode=SyncMode.terminal_only, debounce_ms=0, max_delay_ms=0)
        async with h.running():
            h.put(job_state("a"))
            h.change("a", upserted("a", jobTitle="more"))
            await asyncio.sleep(0.15)
            assert h.gateway.bodies == []
            assert h.scheduler.dirty_jobs == 0
            h.change("a", status_changed("a", "Completed"))
            await eventually(lambda: len(h.outcomes.successes) == 1)
        assert h.outcomes.successes[0].job_status == "Completed"
        assert len(h.gateway.bodies) == 1

    async def test_job_without_workflow_is_held_and_reported_once(self) -> None:
        """No workflowId: nothing posted; after hold_timeout one missing_job_metadata record."""
        h = Harness(debounce_ms=0, max_delay_ms=0, hold_timeout_s=0.1)
        async with h.running():
            h.put(job_state("a", workflow=False))
            await eventually(lambda: len(h.outcomes.failures) == 1)
            h.change("a", upserted("a", jobTitle="still no workflow"))
            await asyncio.sleep(0.25)
            assert len(h.outcomes.failures) == 1
            assert h.gateway.bodies == []
            h.change("a", upserted("a", workflowId="wf"))
            await eventually(lambda: len(h.outcomes.successes) == 1)
        failure = h.outcomes.failures[0]
        assert failure.reason is FailureReason.missing_job_metadata
        assert failure.client_job_id == "a"
        assert failure.attempts == 0

    # -- lifecycle -------------------------------------------------------------------------------

    async def test_release_partitions_waits_for_in_flight_then_forgets(self) -> None:
        """A revoke lets the running request finish, then drops the partition's dirty jobs."""
        gateway = FakeGateway()
        gateway.gate = asyncio.Event()
        h = Harness(gateway, debounce_ms=0, max_delay_ms=0)
        async with h.running():
            h.put(job_state("a"), partition=1)
            await eventually(lambda: gateway.in_flight == 1)
            h.change("a", upserted("a", jobTitle="during"), partition=1)
            h.put(job_state("other", status="New"), partition=2)
            release = asyncio.create_task(h.scheduler.release_partitions({1}, deadline=WAIT))
            await asyncio.sleep(0.05)
            assert not release.done()
            gateway.gate.set()
            await asyncio.wait_for(release, WAIT)
            assert len(h.outcomes.successes) >= 1
            assert h.scheduler.in_flight == 0
            await eventually(lambda: "other" in gateway.jobs)
            await asyncio.sleep(0.05)
        assert gateway.jobs.count("a") == 1  # the newer state is left to the next owner

    async def test_release_partitions_cancels_after_deadline(self) -> None:
        """A request still running at the revoke deadline is abandoned; nothing recorded."""
        gateway = FakeGateway()
        gateway.gate = asyncio.Event()
        h = Harness(gateway, debounce_ms=0, max_delay_ms=0)
        async with h.running():
            h.put(job_state("a"), partition=1)
            await eventually(lambda: gateway.in_flight == 1)
            await asyncio.wait_for(h.scheduler.release_partitions({1}, deadline=0.05), WAIT)
            assert h.scheduler.in_flight == 0
            assert h.scheduler.dirty_jobs == 0
        assert h.outcomes.successes == []
        assert h.state("a").synced_version == 0

    async def test_stop_lets_in_flight_finish_and_dispatches_nothing_more(self) -> None:
        """stop(deadline) waits for running requests and sends nothing that was still due."""
        gateway = FakeGateway(delay=0.1)
        h = Harness(gateway, debounce_ms=200, max_delay_ms=200)
        task = asyncio.create_task(h.scheduler.run())
        h.put(job_state("a", status="Completed"))  # posted at once
        await eventually(lambda: gateway.in_flight == 1)
        h.put(job_state("b"))  # due in 200 ms
        await h.scheduler.stop(WAIT)
        await asyncio.wait_for(task, WAIT)
        assert [r.client_job_id for r in h.outcomes.successes] == ["a"]
        assert h.scheduler.in_flight == 0
        await asyncio.sleep(0.3)
        assert gateway.jobs == ["a"]

    async def test_stop_cancels_requests_past_the_deadline(self) -> None:
        """A request still running at the shutdown deadline is cancelled, no outcome recorded;
        its intent (``sending_since``) was committed before it left, so the job is in doubt."""
        gateway = FakeGateway()
        gateway.gate = asyncio.Event()
        h = Harness(gateway, debounce_ms=0, max_delay_ms=0)
        task = asyncio.create_task(h.scheduler.run())
        h.put(job_state("a"))
        await eventually(lambda: gateway.in_flight == 1)
        await asyncio.wait_for(h.scheduler.stop(0.05), WAIT)
        await asyncio.wait_for(task, WAIT)
        assert h.scheduler.in_flight == 0
        assert h.outcomes.successes == []
        assert [(p, s.synced_version) for p, s in h.outcomes.states] == [(0, 0)]
        assert h.outcomes.states[0][1].sending_since is not None
        assert h.outcomes.durable == [(0, h.state("a").version)]
        assert h.state("a").sending_since is not None

    async def test_reschedule_partition_reposts_lagging_jobs(self) -> None:
        """After a restore, every job whose synced version lags is posted again, but one
        whose previous owner's request is in doubt waits; one line says how many of each."""
        h = Harness(debounce_ms=0, max_delay_ms=0, in_doubt_window=30.0)
        async with h.running():
            h.store.put(3, job_state("a"))
            h.store.put(3, job_state("b"))
            h.store.put(3, replace(job_state("c"), sending_since=datetime.now(UTC)))
            with capture_logs() as logs:
                h.scheduler.reschedule_partition(3)
            await eventually(lambda: len(h.outcomes.successes) == 2)
            await asyncio.sleep(0.05)
        [line] = [line for line in logs if line["event"] == "jobs_rescheduled"]
        assert (line["partition"], line["jobs"], line["waiting_in_doubt"]) == (3, 3, 1)
        assert sorted(h.gateway.jobs) == ["a", "b"]
        assert {p for p, _ in h.outcomes.states} == {3}

    async def test_reschedule_partition_leaves_settled_jobs_unread(self) -> None:
        """A settled job a restore held as its value is neither read nor posted: it needs no
        sync. The lagging one beside it is posted."""
        h = Harness(debounce_ms=0, max_delay_ms=0)
        done = replace(job_state("done"), synced_version=2, synced_sha256="0" * 64)
        mark = settled_header(done)
        assert mark is not None
        h.store.replace_partition(
            3, {"done": settled_job("done", encode_state(done), mark), "b": job_state("b")}
        )
        async with h.running():
            h.scheduler.reschedule_partition(3)
            await eventually(lambda: len(h.outcomes.successes) == 1)
            await asyncio.sleep(0.05)
        assert h.gateway.jobs == ["b"]
        assert h.store.is_settled("done")
        assert h.scheduler.dirty_jobs == 0


class TestSystemicOrPerJob:
    """The scheduler acts on the diagnosis' verdicts (consumer.sync.diagnosis)."""

    @pytest.mark.parametrize(
        "refusal",
        [
            FORBIDDEN,
            Systemic(404, "no_basicsync_404", body_truncated='{"message":"no workflow"}'),
            Systemic(200, "no_basicsync_web_page_200", body_truncated="<html>Rejected</html>"),
        ],
        ids=["403", "404-with-body", "web-page"],
    )
    async def test_a_refused_job_among_succeeding_jobs_is_failed_alone(
        self, refusal: Systemic
    ) -> None:
        """One job answered 403 (or a 404 of its own, say its workflow unknown, or a firewall's
        block page for its content) while others succeed: a per-job failure. It spends its own
        budget and gets rejected_by_gateway with the status (and a 404's body, or the page);
        the circuit never opens and every other job is synced."""
        gateway = FakeGateway()
        gateway.answers["bad"] = refusal
        h = Harness(gateway, debounce_ms=0, max_delay_ms=0)
        async with h.running():
            h.put(job_state("bad"))
            others = 0
            while not h.outcomes.failures:
                assert others < 200, "the refused job was never failed"
                h.put(job_state(f"ok{others}"))
                others += 1
                await asyncio.sleep(0.01)
            await eventually(lambda: len(h.outcomes.successes) == others)
        [failure] = h.outcomes.failures
        assert failure.client_job_id == "bad"
        assert failure.reason is FailureReason.rejected_by_gateway
        assert (failure.error.status, failure.error.body) == (
            refusal.status,
            refusal.body_truncated,
        )
        web_page = refusal.status == 200
        assert ("a web page came back" in failure.error.message) is web_page
        assert h.observer.circuit == []
        assert {s.client_job_id for s in h.outcomes.successes} == {f"ok{i}" for i in range(others)}

    async def test_a_lone_forbidden_job_is_neither_failed_nor_pausing_anyone(self) -> None:
        """A lone job's 403 while the probe is answered 403 too cannot be told from a revoked
        scope: undecided, so it is retried, never failed, and nobody is paused."""
        gateway = FakeGateway([FORBIDDEN], probe_results=[403])
        h = Harness(gateway, debounce_ms=0, max_delay_ms=0)
        async with h.running():
            h.put(job_state("a"))
            await eventually(lambda: len(gateway.bodies) > 10)  # budget: 3 attempts
        assert h.outcomes.failures == []
        assert h.observer.circuit == []
        assert gateway.probes >= 1

    async def test_a_lone_job_during_an_outage_waits_for_it(self) -> None:
        """A lone job answered 503 while the probe finds the gateway down: systemic, so the
        circuit opens, no budget is spent (one attempt allowed here) and the job is synced
        once a probe finds the gateway up."""
        gateway = FakeGateway([retryable(503)], probe_results=[None])
        h = Harness(
            gateway,
            retry=RetryPolicy(initial=0.005, maximum=0.01, max_attempts=1, max_elapsed=30.0),
            debounce_ms=0,
            max_delay_ms=0,
        )
        async with h.running():
            h.put(job_state("a"))
            await eventually(lambda: h.observer.circuit == [True])
            await eventually(lambda: gateway.probes >= 3)
            assert h.outcomes.failures == []
            gateway.outcomes = deque([accepted()])
            gateway.probe_results = deque([404])
            await eventually(lambda: len(h.outcomes.successes) == 1)
        assert h.outcomes.failures == []
        assert h.observer.circuit == [True, False]

    async def test_a_request_in_doubt_is_evidence_but_the_job_still_waits(self) -> None:
        """Timeouts count as failures for the diagnosis (the second opens the circuit once a
        probe found the gateway down), yet after the circuit closes the job is posted again
        only once its last request can no longer land."""
        in_doubt = Retryable(status=None, retry_after=None, reason="timeout", in_doubt=True)
        gateway = FakeGateway([in_doubt, in_doubt, accepted()], probe_results=[None, 404])
        h = Harness(gateway, debounce_ms=0, max_delay_ms=0, in_doubt_window=0.6)
        async with h.running():
            h.put(job_state("a"))
            await eventually(lambda: len(h.outcomes.successes) == 1)
        assert h.observer.circuit == [True, False]
        assert len(gateway.times) == 3
        assert gateway.times[1] - gateway.times[0] >= 0.5
        assert gateway.times[2] - gateway.times[1] >= 0.5
        assert h.outcomes.failures == []


class TestRequestsInDoubt:
    async def test_a_request_in_doubt_is_followed_by_the_newest_state_after_the_window(
        self,
    ) -> None:
        """A timed-out request may still land: the job is not posted again until the window
        since its intent has passed, and then with the newest state."""
        in_doubt = Retryable(status=None, retry_after=None, reason="timeout", in_doubt=True)
        gateway = FakeGateway([in_doubt, Accepted(200, "j", "{}")])
        h = Harness(gateway, debounce_ms=0, max_delay_ms=0, in_doubt_window=0.6)
        loop = asyncio.get_running_loop()
        async with h.running():
            h.put(job_state("a", title="old"))
            await eventually(lambda: len(gateway.jobs) == 1)
            first = loop.time()
            h.change("a", upserted("a", jobTitle="new"))
            await eventually(lambda: len(h.outcomes.successes) == 1)
            second = loop.time()
        assert second - first >= 0.5
        assert [title(b) for b in gateway.bodies] == ["old", "new"]
        assert h.state("a").sending_since is None
        assert h.state("a").synced_version == h.state("a").version

    async def test_a_restored_mark_makes_the_new_owner_wait(self) -> None:
        """A state restored with ``sending_since`` (the previous owner's request in doubt) is
        posted only once the window since that mark has passed."""
        h = Harness(debounce_ms=0, max_delay_ms=0, in_doubt_window=0.8)
        loop = asyncio.get_running_loop()
        marked = replace(job_state("a"), sending_since=datetime.now(UTC) - timedelta(seconds=0.3))
        async with h.running():
            started = loop.time()
            h.put(marked)
            await eventually(lambda: len(h.outcomes.successes) == 1)
            waited = loop.time() - started
        assert 0.4 <= waited < 2.0

    async def test_a_mark_from_a_clock_ahead_waits_the_window_not_the_clocks_lead(
        self,
    ) -> None:
        """A mark a day ahead of this member's clock (the previous owner's clock was wrong):
        the request it marks left at most now, so the job waits the window from now, as for
        a mark made this instant. Counted from the mark, it would wait the day."""
        h = Harness(debounce_ms=0, max_delay_ms=0, in_doubt_window=0.5)
        loop = asyncio.get_running_loop()
        marked = replace(job_state("a"), sending_since=datetime.now(UTC) + timedelta(days=1))
        async with h.running():
            started = loop.time()
            h.put(marked)
            await eventually(lambda: len(h.outcomes.successes) == 1)
            waited = loop.time() - started
        assert 0.4 <= waited < 2.0

    async def test_a_response_clears_the_mark(self) -> None:
        """A 503 is an answer: the request will not land later, so the mark is cleared and
        the retry follows the normal backoff, not the window."""
        gateway = FakeGateway([retryable(503), Accepted(200, "j", "{}")])
        h = Harness(gateway, debounce_ms=0, max_delay_ms=0, in_doubt_window=30.0)
        async with h.running():
            h.put(job_state("a"))
            await eventually(lambda: len(h.outcomes.successes) == 1)
        marks = [s.sending_since is not None for _, s in h.outcomes.states]
        assert marks[:2] == [True, False]

    async def test_a_partition_this_member_lost_posts_nothing(self) -> None:
        """After the checkpoint says the partition is lost (fenced), none of its jobs is
        posted: the intent cannot be committed, so the request never leaves."""
        h = Harness(debounce_ms=0, max_delay_ms=0)
        h.outcomes.lost.add(0)
        async with h.running():
            h.put(job_state("a"), partition=0)
            h.put(job_state("b"), partition=1)
            await eventually(lambda: len(h.outcomes.successes) == 1)
            await asyncio.sleep(0.1)
        assert h.gateway.jobs == ["b"]


class TestPostsWithin:
    """``posts_within``: which jobs a live checkpoint may leave to their intents."""

    async def test_a_job_due_within_the_horizon_posts_within_it(self) -> None:
        h = Harness(debounce_ms=3_000, max_delay_ms=3_000)
        h.put(job_state("a"))
        assert not h.scheduler.posts_within("a", 1.0)
        assert h.scheduler.posts_within("a", 5.0)
        assert not h.scheduler.posts_within("unknown", 5.0)

    async def test_a_job_whose_request_is_in_flight_posts_when_it_ends(self) -> None:
        h = Harness(FakeGateway(delay=0.5), debounce_ms=0, max_delay_ms=0)
        async with h.running():
            h.put(job_state("a"))
            await eventually(lambda: h.scheduler.in_flight == 1)
            h.change("a", upserted("a", jobTitle="during"))
            assert h.scheduler.posts_within("a", 0.0)

    async def test_nothing_posts_soon_while_the_circuit_is_open(self) -> None:
        """The outage may be long: the checkpoint writes the jobs and commits their events."""
        circuit = CircuitBreaker(probe_initial=60, probe_max=60)
        h = Harness(circuit=circuit, debounce_ms=0, max_delay_ms=0)
        h.put(job_state("a"))
        assert h.scheduler.posts_within("a", 1.0)
        circuit.record_failure(0.0, systemic=True)
        assert not h.scheduler.posts_within("a", 1.0)

    async def test_a_job_waiting_out_a_backoff_does_not_post_soon(self) -> None:
        # Retry-After 30 s: the backoff is at least that (full jitter alone could draw below
        # the second asked about, one run in 30).
        retry = RetryPolicy(initial=30.0, maximum=30.0, max_attempts=3, max_elapsed=300.0)
        gateway = FakeGateway([retryable(retry_after=30.0)])
        h = Harness(gateway, retry=retry, debounce_ms=0, max_delay_ms=0)
        async with h.running():
            h.put(job_state("a"))
            await eventually(lambda: h.scheduler.in_flight == 0 and bool(h.gateway.bodies))
            assert not h.scheduler.posts_within("a", 1.0)
