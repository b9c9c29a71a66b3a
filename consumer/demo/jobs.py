"""Realistic job event streams with the exact basicSync body each must produce (pure, seeded).

No I/O: ``build_demo`` turns a ``DemoPlan`` into events (interleaved as from many field workers
at once) and each job's expected body; ``consumer.demo.sender`` puts them on Kafka. Tests,
the ``demo`` command, ``run --embedded`` and the benchmarks stream the events and compare what
the gateway received with the expected body. That body is written out here field by field,
independently of the reducer, so it checks the reducer rather than echoing it. Event ``time``
strictly increases within a job, so the body is what the events assemble into in any arrival
order (the reducer orders by event time).

Every value comes from one seeded ``random.Random`` drawn in a fixed order, so a plan always
gives the same events: tests compare documents across runs, keep the draw order when changing
this module.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.domain.events import EventType, JobEvent

SOURCE = "urn:workfloplus:demo"
_STEP_TYPES = ("ConfirmStep", "Text", "Number", "Photo", "Signature")
_WORKFLOWS = ("Site Inspection", "Boiler Service", "Pump Overhaul", "Fire Door Check")
_TEAMS = ("apiteam", "north", "south", "field-ops")
#: Gap between an event and one that follows it at once: event times strictly increase per job,
#: so the expected body (written in event order) is also the time-ordered assembly.
_TICK = timedelta(milliseconds=1)


@dataclass(frozen=True)
class DemoPlan:
    """How many jobs, how big, and which share aborts, exclusions and binary-mode events."""

    jobs: int = 200
    steps: int = 10
    abort_share: float = 0.05
    exclude_share: float = 0.05
    binary_share: float = 0.5
    seed: int = 7
    prefix: str = "demo"


@dataclass
class DemoJobs:
    """The events to send, in the order to send them, and each job's expected body."""

    events: list[JobEvent] = field(default_factory=list)
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)


def build_demo(plan: DemoPlan) -> DemoJobs:
    """Jobs whose events interleave as they would from many field workers at once."""
    rng = random.Random(plan.seed)
    demo = DemoJobs()
    streams: list[list[JobEvent]] = []
    for n in range(plan.jobs):
        job_id = f"{plan.prefix}-{plan.seed}-{n:06d}"
        events, body = demo_job(
            rng,
            job_id,
            steps=plan.steps,
            abort=rng.random() < plan.abort_share,
            exclude=rng.random() < plan.exclude_share,
        )
        streams.append(events)
        demo.expected[job_id] = body
    # Interleave: repeatedly take the next event of a random unfinished job.
    cursors = [0] * len(streams)
    live = list(range(len(streams)))
    while live:
        pick = rng.randrange(len(live))
        index = live[pick]
        demo.events.append(streams[index][cursors[index]])
        cursors[index] += 1
        if cursors[index] == len(streams[index]):
            live[pick] = live[-1]
            live.pop()
    return demo


def demo_job(
    rng: random.Random,
    client_job_id: str,
    *,
    steps: int = 10,
    abort: bool = False,
    exclude: bool = False,
) -> tuple[list[JobEvent], dict[str, Any]]:
    """Events of one job (upsert, in progress, steps, maybe a cancelled step, a metadata update,
    completion or abort, maybe an exclusion) and the exact basicSync body they assemble into."""
    job = _start(rng, client_job_id)
    completed, cancelled = _work_steps(job, steps=steps, abort=abort)
    _end(job, abort=abort)
    exclusions = _exclude(job) if exclude else []
    body = {
        "metadata": job.meta,
        "completedSteps": completed or None,
        "cancelledSteps": cancelled or None,
        "team": job.team,
        "hierarchyStack": None,
        "packetIds": None,
        "jobExclusion": exclusions,
        "excluded": bool(exclusions),
    }
    return job.events, body


@dataclass
class _JobStream:
    """One job being written: its events so far, the time of the last one, and ``meta``, the
    expected body's metadata as those events leave it."""

    rng: random.Random
    client_job_id: str
    user_id: str
    username: str
    team: str
    meta: dict[str, Any]
    at: datetime
    events: list[JobEvent] = field(default_factory=list)

    def emit(self, event_type: EventType, at: datetime, data: Any) -> None:
        self.events.append(_event(self.rng, self.client_job_id, event_type, at, data))


def _start(rng: random.Random, client_job_id: str) -> _JobStream:
    """The job's upsert (with every metadata field) and its move to ``InProgress``."""
    # In the past (up to mid-December 2025), as real events are: the consumer refuses events
    # timed more than kafka.max_event_time_ahead_s ahead of its clock.
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 30_000_000))
    user_id = f"{rng.getrandbits(96):024x}"
    username = f"user{rng.randint(1, 500)}@example.com"
    meta: dict[str, Any] = {
        "clientJobId": client_job_id,
        "workflowId": _uuid(rng),
        "workflowVersionId": _uuid(rng),
        "jobTitle": f"Job {client_job_id[:8]}",
        "metadata": {"ScheduledJobId": str(rng.randint(1000, 9999))},
        "created": _stamp(start),
        "updated": _stamp(start),
        "modified": _stamp(start),
        "status": "New",
        "userId": user_id,
        "currentStep": None,
        "abandonReason": None,
        "username": username,
        "workflowName": rng.choice(_WORKFLOWS),
    }
    team = rng.choice(_TEAMS)
    job = _JobStream(rng, client_job_id, user_id, username, team, meta, start)
    job.emit(EventType.upserted, start, {**meta, "team": team})
    job.at = start + timedelta(seconds=rng.randint(1, 60))
    job.emit(EventType.status_changed, job.at, {"status": "InProgress", "updated": _stamp(job.at)})
    meta.update(status="InProgress", updated=_stamp(job.at))
    return job


def _work_steps(
    job: _JobStream, *, steps: int, abort: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Completed steps (all of them, or some before an abort), maybe one cancelled step and
    maybe a metadata update in between; returns the completed and cancelled step wrappers."""
    rng = job.rng
    done_count = rng.randint(1, max(1, steps - 1)) if abort else steps
    cancelled_at = rng.randint(1, done_count) if done_count > 1 and rng.random() < 0.3 else None
    metadata_at = rng.randint(1, done_count) if rng.random() < 0.5 else None
    completed: list[dict[str, Any]] = []
    cancelled: list[dict[str, Any]] = []
    previous = ""
    for number in range(1, done_count + 1):
        if number == cancelled_at:
            step = _cancel_step(job, number, previous)
            cancelled.append({"singleStep": step, "reportStep": None})
        step = _complete_step(job, number, previous)
        completed.append({"singleStep": step, "reportStep": None})
        previous = step["uniqueStepId"]
        if number == metadata_at:
            _update_metadata(job)
    return completed, cancelled


def _cancel_step(job: _JobStream, number: int, previous: str) -> dict[str, Any]:
    step = _single_step(job.rng, number, previous, job.user_id, job.username, job.at)
    step.update(completed=None, cancelled=step["updated"])
    # 2 ticks: the previous event may be the metadata upsert at at + _TICK.
    job.emit(EventType.step_cancelled, job.at + 2 * _TICK, {"singleStep": step})
    job.at = job.at + timedelta(seconds=job.rng.randint(1, 30))
    return step


def _complete_step(job: _JobStream, number: int, previous: str) -> dict[str, Any]:
    step = _single_step(job.rng, number, previous, job.user_id, job.username, job.at)
    job.at = datetime.fromisoformat(step["completed"]) + timedelta(seconds=job.rng.randint(1, 30))
    job.emit(EventType.step_completed, job.at, {"singleStep": step})
    return step


def _update_metadata(job: _JobStream) -> None:
    extra = {"Priority": job.rng.choice(["Low", "High"])}
    job.emit(EventType.upserted, job.at + _TICK, {"metadata": extra})
    job.meta["metadata"] = dict(sorted({**job.meta["metadata"], **extra}.items()))


def _end(job: _JobStream, *, abort: bool) -> None:
    """The job's terminal event: an abort with a reason, or ``Completed``."""
    rng, meta = job.rng, job.meta
    job.at = job.at + timedelta(seconds=rng.randint(1, 60))
    if abort:
        reason = rng.choice(["Customer cancelled", "Site closed", "Duplicate job"])
        job.emit(EventType.aborted, job.at, {"reason": reason, "userId": job.user_id})
        meta.update(status="Aborted", abandonReason=reason)
    else:
        stamp = _stamp(job.at)
        data = {"status": "Completed", "updated": stamp, "modified": stamp}
        job.emit(EventType.status_changed, job.at, data)
        meta.update(status="Completed", updated=stamp, modified=stamp)


def _exclude(job: _JobStream) -> list[dict[str, Any]]:
    """An exclusion after the end; returns the body's ``jobExclusion``."""
    job.at = job.at + timedelta(seconds=job.rng.randint(1, 60))
    entry = {"userId": job.user_id, "reason": "Test job", "isExcluded": True}
    job.emit(EventType.excluded, job.at, entry)
    return [entry]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _event(
    rng: random.Random, client_job_id: str, event_type: EventType, at: datetime, data: Any
) -> JobEvent:
    return JobEvent.build(
        {
            "id": _uuid(rng),
            "source": SOURCE,
            "type": event_type,
            "subject": client_job_id,
            "time": at,
            "data": data,
        }
    )


def _single_step(
    rng: random.Random, number: int, previous: str, user_id: str, username: str, at: datetime
) -> dict[str, Any]:
    step_type = rng.choice(_STEP_TYPES)
    values: list[Any] = {
        "ConfirmStep": [],
        "Text": [f"reading {rng.randint(1, 999)}"],
        "Number": [str(rng.randint(0, 100))],
        "Photo": [],
        "Signature": [],
    }[step_type]
    done = at + timedelta(seconds=rng.randint(5, 90), milliseconds=rng.randint(0, 999))
    return {
        "values": values,
        "valueResourceIds": [_uuid(rng)] if step_type in ("Photo", "Signature") else [],
        "uniqueStepId": _uuid(rng),
        "previousUniqueStepId": previous,
        "userId": user_id,
        "userName": username,
        "deviceId": rng.choice([None, f"device-{rng.randint(1, 50)}"]),
        "stepId": _uuid(rng),
        "stepNumber": number,
        "stepTitle": f"Step {number}: {step_type}",
        "stepDescription": "",
        "stepType": step_type,
        "connectionType": None,
        "started": _stamp(at),
        "completed": _stamp(done),
        "updated": _stamp(done),
        "cancelled": None,
        "timeEvents": None,
        "note": rng.choice([None, "checked twice"]),
        "noteResourceFilenames": None,
        "coordinates": None,
        "parentStepId": None,
        "parentUniqueStepId": None,
        "parentStepTitle": None,
        "parentStepDescription": None,
        "metadata": {"tags": rng.choice(["", "safety", "quality"])},
    }
