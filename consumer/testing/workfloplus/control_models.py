"""The wire shapes of the inspection API (``/_sandbox/...``), shared by server and client."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from consumer.testing.workfloplus.faults import OutageMode
from consumer.testing.workfloplus.state import Record


class RecordedRequest(BaseModel):
    """One WorkfloPlus API request the sandbox received.

    ``body`` is the parsed JSON body when it parsed, else its text; ``None`` for token and GET
    requests (token bodies carry the client secret). ``outcome`` is ``created``, ``updated``,
    ``aborted`` or ``refused`` for basicSync calls that reached the job rules, else ``None``.
    ``traceparent`` is the request's W3C trace context header, when it had one.
    """

    model_config = ConfigDict(frozen=True)

    time: float
    method: str
    path: str
    client_job_id: str | None
    status: int
    latency_ms: float
    outcome: str | None
    body: Any = None
    traceparent: str | None = None

    @classmethod
    def of(cls, record: Record) -> RecordedRequest:
        body: Any = None
        if record.body is not None and record.path.endswith("/basicSync"):
            text = record.body.decode(errors="replace")
            try:
                body = json.loads(text)
            except ValueError:
                body = text
        return cls(
            time=record.time,
            method=record.method,
            path=record.path,
            client_job_id=record.client_job_id,
            status=record.status,
            latency_ms=record.latency_ms,
            outcome=record.outcome,
            body=body,
            traceparent=record.traceparent,
        )


class Overlaps(BaseModel):
    """Overlapping in-flight basicSync requests: the most ever seen overall and per
    clientJobId since the last reset, and how many are in flight right now."""

    model_config = ConfigDict(frozen=True)

    max: int
    by_job: dict[str, int]
    in_flight: dict[str, int]


class OutageRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seconds: float = Field(gt=0)
    mode: OutageMode = "503"
