"""Small fakes at the scheduler's Protocol seams, and builders of real job states.

No mocks: each fake implements the Protocol the production code depends on (``Gateway``,
``Outcomes``, ``SchedulerObserver``) and records what it was asked, so tests assert on
behaviour rather than on calls to a stand-in.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter, deque
from collections.abc import Collection, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.domain.events import EventType, JobEvent
from consumer.domain.job import JobState, Rejection, apply
from consumer.domain.results import FailureRecord, SuccessRecord
from consumer.errors import PartitionLost
from consumer.gateway.client import Accepted, SyncOutcome
from consumer.state.store import JobStore

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
_ids = itertools.count()


def event(job: str, event_type: EventType, data: dict[str, Any]) -> JobEvent:
    """A valid event for ``job`` with a fresh id, timed after every event made before it.

    The reducer orders a job's events by time (then id), so creation order must show in both.
    """
    n = next(_ids)
    return JobEvent.build(
        {
            "id": f"ev-{n:09d}",
            "source": "urn:test",
            "type": event_type,
            "subject": job,
            "time": NOW + timedelta(microseconds=n),
            "data": data,
        }
    )


def upserted(job: str, **data: Any) -> JobEvent:
    return event(job, EventType.upserted, data)


def status_changed(job: str, status: str) -> JobEvent:
    return event(job, EventType.status_changed, {"status": status})


def fold(state: JobState | None, events: Iterable[JobEvent]) -> JobState:
    """Apply ``events`` with the real reducer; every one must be accepted."""
    for item in events:
        result = apply(state, item, NOW)
        assert not isinstance(result, Rejection), result
        state = result
    assert state is not None
    return state


def job_state(
    job: str, *, status: str = "InProgress", workflow: bool = True, title: str = "t"
) -> JobState:
    """A job assembled from an upsert (with or without workflowId) and a status change."""
    fields: dict[str, Any] = {"jobTitle": title}
    if workflow:
        fields["workflowId"] = f"wf-{job}"
    return fold(None, [upserted(job, **fields), status_changed(job, status)])


def accepted(job_id: str = "server-1") -> Accepted:
    return Accepted(status=200, job_id=job_id, body="{}")


class FakeGateway:
    """A scripted ``Gateway``: outcomes are taken in order (the last one repeats).

    Records each posted body, the highest number of concurrent calls overall and per job,
    and answers probes with the HTTP statuses in ``probe_results`` (``None``: no answer; the
    last one repeats). A job listed in ``answers`` always gets its own outcome instead.
    """

    def __init__(
        self,
        outcomes: Iterable[SyncOutcome] = (),
        *,
        delay: float = 0.0,
        probe_results: Iterable[int | None] = (404,),
    ) -> None:
        self.outcomes: deque[SyncOutcome] = deque(outcomes)
        self.default: SyncOutcome = accepted()
        self.answers: dict[str, SyncOutcome] = {}
        self.delay = delay
        self.bodies: list[bytes] = []
        self.jobs: list[str] = []
        self.probes = 0
        self.probe_results: deque[int | None] = deque(probe_results)
        self.in_flight = 0
        self.max_in_flight = 0
        self._per_job: Counter[str] = Counter()
        self.max_per_job: Counter[str] = Counter()
        self.times: list[float] = []
        #: While set to an unset event, requests wait for it: tests decide when they end.
        self.gate: asyncio.Event | None = None

    def script(self, *outcomes: SyncOutcome) -> None:
        self.outcomes.extend(outcomes)

    async def post_basic_sync(self, body: bytes, send_by: float | None = None) -> SyncOutcome:
        job = _client_job_id(body)
        self.bodies.append(body)
        self.jobs.append(job)
        self.in_flight += 1
        self._per_job[job] += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.max_per_job[job] = max(self.max_per_job[job], self._per_job[job])
        self.times.append(asyncio.get_running_loop().time())
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            if job in self.answers:
                return self.answers[job]
            if len(self.outcomes) > 1:
                return self.outcomes.popleft()
            return self.outcomes[0] if self.outcomes else self.default
        finally:
            self.in_flight -= 1
            self._per_job[job] -= 1

    async def probe(self) -> int | None:
        self.probes += 1
        if len(self.probe_results) > 1:
            return self.probe_results.popleft()
        return self.probe_results[0] if self.probe_results else 404

    def posts_for(self, job: str) -> int:
        return self.jobs.count(job)


def _client_job_id(body: bytes) -> str:
    return str(json.loads(body)["metadata"]["clientJobId"])


def _done() -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


class FakeCheckpoint:
    """A ``Durability`` that commits at once and keeps every record and commit in order.

    ``states`` holds each (partition, state) the scheduler staged, as the store had it;
    ``durable`` each (partition, version) the store held for a staged job when the scheduler
    asked for a commit. ``lost`` partitions refuse commits, as a fenced member's would.
    """

    def __init__(self, store: JobStore) -> None:
        self._store = store
        self.successes: list[SuccessRecord] = []
        self.failures: list[FailureRecord] = []
        self.states: list[tuple[int, JobState]] = []
        self.durable: list[tuple[int, int]] = []
        self.lost: set[int] = set()
        #: seconds each commit takes (a transaction's round trips), and how many overlapped
        self.commit_delay = 0.0
        self.committing = 0
        self.max_committing = 0
        self._staged: dict[int, set[str]] = {}

    def owns(self, partition: int) -> bool:
        return partition not in self.lost

    def stage_changed(self, partition: int, client_job_id: str) -> None:
        state = self._store.get(client_job_id)
        if state is not None:
            self.states.append((partition, state))
        self._staged.setdefault(partition, set()).add(client_job_id)

    def stage_result(self, partition: int, record: SuccessRecord | FailureRecord) -> None:
        if isinstance(record, SuccessRecord):
            self.successes.append(record)
        else:
            self.failures.append(record)

    async def make_durable(self, partition: int, only: Collection[str] | None = None) -> None:
        if self.commit_delay:
            self.committing += 1
            self.max_committing = max(self.max_committing, self.committing)
            try:
                await asyncio.sleep(self.commit_delay)
            finally:
                self.committing -= 1
        if partition in self.lost:
            raise PartitionLost(partition, "fenced (fake)")
        for job in self._staged.pop(partition, set()):
            state = self._store.get(job)
            if state is not None:
                self.durable.append((partition, state.version))


class RecordingObserver:
    """A ``SchedulerObserver`` that remembers circuit changes and finished requests."""

    def __init__(self) -> None:
        self.circuit: list[bool] = []
        self.requests: list[tuple[str, int | None]] = []
        self.request_seconds: list[float] = []
        self.intent_seconds: list[float] = []
        self.synced: list[int | None] = []

    def circuit_changed(self, is_open: bool) -> None:
        self.circuit.append(is_open)

    def intent_committed(self, seconds: float) -> None:
        self.intent_seconds.append(seconds)

    def request_finished(self, outcome: str, status: int | None, seconds: float) -> None:
        self.requests.append((outcome, status))
        self.request_seconds.append(seconds)

    def job_synced(self, latency_ms: int | None) -> None:
        self.synced.append(latency_ms)
