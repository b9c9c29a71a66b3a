"""The documented basicSync example as a job: its body and the events that assemble into it.

The body itself is kept once, in the WorkfloPlus sandbox's package data
(``consumer/testing/workfloplus/docs_example.jsonc``, the documentation's text byte for byte).
The sandbox owns it because the example is WorkfloPlus's and the sandbox may import nothing of
the consumer; this module reads that file as data rather than importing the sandbox's code, so
the demo stays free of the test double's modules (and of aiohttp) while both sides share one
copy of the example.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from importlib import resources
from typing import Any

from consumer.demo.jobs import SOURCE
from consumer.domain.events import EventType, JobEvent

_DOCS_TEXT = (
    resources.files("consumer.testing").joinpath("workfloplus", "docs_example.jsonc").read_bytes()
)

#: The documented basicSync example body (strict JSON: the documentation's trailing commas
#: dropped).
EXAMPLE_BODY: dict[str, Any] = json.loads(re.sub(rb",(\s*[}\]])", rb"\1", _DOCS_TEXT))
EXAMPLE_CLIENT_JOB_ID: str = EXAMPLE_BODY["metadata"]["clientJobId"]


def example_job_events() -> list[JobEvent]:
    """Events (upsert, step completed, status Completed) assembling into :data:`EXAMPLE_BODY`."""
    meta = EXAMPLE_BODY["metadata"]
    upsert = {
        **{k: v for k, v in meta.items() if k not in ("updated", "modified", "status")},
        "status": "InProgress",
        "updated": meta["created"],
        "team": EXAMPLE_BODY["team"],
    }
    step = EXAMPLE_BODY["completedSteps"][0]
    completed = {"status": "Completed", "updated": meta["updated"], "modified": meta["modified"]}
    return [
        _event(1, EventType.upserted, meta["created"], upsert),
        _event(2, EventType.step_completed, step["singleStep"]["completed"], step),
        _event(3, EventType.status_changed, meta["modified"], completed),
    ]


def _event(n: int, event_type: EventType, at: str, data: Any) -> JobEvent:
    return JobEvent.build(
        {
            "id": f"example-{n}",
            "source": SOURCE,
            "type": event_type,
            "subject": EXAMPLE_CLIENT_JOB_ID,
            "time": datetime.fromisoformat(at),
            "data": data,
        }
    )
