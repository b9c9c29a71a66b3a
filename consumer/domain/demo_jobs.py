"""Realistic job event streams with the exact basicSync body each must produce (pure, seeded).

Used by the demo command, benchmarks and integration tests: stream ``demo_job`` events, then
compare what the gateway received with the expected body. The expected body is written out here
field by field, independently of the reducer, so it checks the reducer rather than echoing it.
Event ``time`` strictly increases within a job, so the body is what the events assemble into in
any arrival order (the reducer orders by event time).
"""

from __future__ import annotations

import random
import uuid
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


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _event(
    rng: random.Random, client_job_id: str, event_type: EventType, at: datetime, data: Any
) -> JobEvent:
    return JobEvent.model_validate(
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
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 30_000_000))
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
    events = [_event(rng, client_job_id, EventType.upserted, start, {**meta, "team": team})]
    at = start + timedelta(seconds=rng.randint(1, 60))
    events.append(
        _event(
            rng,
            client_job_id,
            EventType.status_changed,
            at,
            {"status": "InProgress", "updated": _stamp(at)},
        )
    )
    meta.update(status="InProgress", updated=_stamp(at))

    done_count = rng.randint(1, max(1, steps - 1)) if abort else steps
    cancelled_at = rng.randint(1, done_count) if done_count > 1 and rng.random() < 0.3 else None
    metadata_at = rng.randint(1, done_count) if rng.random() < 0.5 else None
    completed: list[dict[str, Any]] = []
    cancelled: list[dict[str, Any]] = []
    previous = ""
    for number in range(1, done_count + 1):
        if number == cancelled_at:
            step = _single_step(rng, number, previous, user_id, username, at)
            step.update(completed=None, cancelled=step["updated"])
            # 2 ticks: the previous event may be the metadata upsert at at + _TICK.
            cancel_at = at + 2 * _TICK
            events.append(
                _event(
                    rng, client_job_id, EventType.step_cancelled, cancel_at, {"singleStep": step}
                )
            )
            cancelled.append({"singleStep": step, "reportStep": None})
            at = at + timedelta(seconds=rng.randint(1, 30))
        step = _single_step(rng, number, previous, user_id, username, at)
        at = datetime.fromisoformat(step["completed"]) + timedelta(seconds=rng.randint(1, 30))
        events.append(
            _event(rng, client_job_id, EventType.step_completed, at, {"singleStep": step})
        )
        completed.append({"singleStep": step, "reportStep": None})
        previous = step["uniqueStepId"]
        if number == metadata_at:
            extra = {"Priority": rng.choice(["Low", "High"])}
            events.append(
                _event(rng, client_job_id, EventType.upserted, at + _TICK, {"metadata": extra})
            )
            meta["metadata"] = dict(sorted({**meta["metadata"], **extra}.items()))

    at = at + timedelta(seconds=rng.randint(1, 60))
    if abort:
        reason = rng.choice(["Customer cancelled", "Site closed", "Duplicate job"])
        events.append(
            _event(rng, client_job_id, EventType.aborted, at, {"reason": reason, "userId": user_id})
        )
        meta.update(status="Aborted", abandonReason=reason)
    else:
        data = {"status": "Completed", "updated": _stamp(at), "modified": _stamp(at)}
        events.append(_event(rng, client_job_id, EventType.status_changed, at, data))
        meta.update(status="Completed", updated=_stamp(at), modified=_stamp(at))

    exclusions: list[dict[str, Any]] = []
    if exclude:
        at = at + timedelta(seconds=rng.randint(1, 60))
        entry = {"userId": user_id, "reason": "Test job", "isExcluded": True}
        events.append(_event(rng, client_job_id, EventType.excluded, at, entry))
        exclusions.append(entry)

    body = {
        "metadata": meta,
        "completedSteps": completed or None,
        "cancelledSteps": cancelled or None,
        "team": team,
        "hierarchyStack": None,
        "packetIds": None,
        "jobExclusion": exclusions,
        "excluded": bool(exclusions),
    }
    return events, body


EXAMPLE_CLIENT_JOB_ID = "cb3dc8dc-4162-47c4-af05-3575034f99e5"

#: The documented basicSync example body (strict JSON: the trailing comma of the docs removed).
EXAMPLE_BODY: dict[str, Any] = {
    "metadata": {
        "clientJobId": EXAMPLE_CLIENT_JOB_ID,
        "workflowId": "b62f2507-b4e7-4248-83d3-29c03a158fbe",
        "workflowVersionId": "2831f333-af02-4d89-875d-0bceadeb16ed",
        "jobTitle": "Api Test 2",
        "metadata": {"Key1": "V1"},
        "created": "2021-10-01T12:48:12.215Z",
        "updated": "2021-10-01T12:48:13.824Z",
        "modified": "2021-10-01T12:48:14Z",
        "status": "Completed",
        "userId": "5d8cac54860b8103316b1987",
        "currentStep": None,
        "abandonReason": None,
        "username": "api.user1@example.com",
        "workflowName": "Example Workflow",
    },
    "completedSteps": [
        {
            "singleStep": {
                "values": [],
                "valueResourceIds": [],
                "uniqueStepId": "c025f569-8148-4a75-a2e8-a9bc19da911d",
                "previousUniqueStepId": "",
                "userId": "5d8cac54860b8103316b1987",
                "userName": "api.user1@example.com",
                "deviceId": None,
                "stepId": "ec7eee0d-5115-4141-847a-64c28694dde2",
                "stepNumber": 1,
                "stepTitle": "Instruction",
                "stepDescription": "",
                "stepType": "ConfirmStep",
                "connectionType": None,
                "started": "2021-10-01T12:48:12.265Z",
                "completed": "2021-10-01T12:48:13.8Z",
                "updated": "2021-10-01T12:48:13.8Z",
                "cancelled": None,
                "timeEvents": None,
                "note": None,
                "noteResourceFilenames": None,
                "coordinates": None,
                "parentStepId": None,
                "parentUniqueStepId": None,
                "parentStepTitle": None,
                "parentStepDescription": None,
                "metadata": {"tags": ""},
            },
            "reportStep": None,
        }
    ],
    "cancelledSteps": None,
    "team": "apiteam",
    "hierarchyStack": None,
    "packetIds": None,
    "jobExclusion": [],
    "excluded": False,
}


def example_job_events() -> list[JobEvent]:
    """Events (upsert, step completed, status Completed) assembling into :data:`EXAMPLE_BODY`."""
    meta = EXAMPLE_BODY["metadata"]
    job = EXAMPLE_CLIENT_JOB_ID
    upsert = {
        **{k: v for k, v in meta.items() if k not in ("updated", "modified", "status")},
        "status": "InProgress",
        "updated": meta["created"],
        "team": EXAMPLE_BODY["team"],
    }
    step = EXAMPLE_BODY["completedSteps"][0]

    def event(n: int, event_type: EventType, at: str, data: Any) -> JobEvent:
        return JobEvent.model_validate(
            {
                "id": f"example-{n}",
                "source": SOURCE,
                "type": event_type,
                "subject": job,
                "time": datetime.fromisoformat(at),
                "data": data,
            }
        )

    completed = {"status": "Completed", "updated": meta["updated"], "modified": meta["modified"]}
    return [
        event(1, EventType.upserted, meta["created"], upsert),
        event(2, EventType.step_completed, step["singleStep"]["completed"], step),
        event(3, EventType.status_changed, meta["modified"], completed),
    ]
