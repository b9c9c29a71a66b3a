"""The basicSync request body, built from a job state (pure).

The body has every field of the documented request, in the documented order, camelCase, with
``null`` where unknown. Empty ``completedSteps`` / ``cancelledSteps`` are sent as ``null`` (as in
the documented example); ``jobExclusion`` is always a list and ``excluded`` a bool. The encoding
is strict, compact JSON (no NaN, UTF-8, key order fixed by the document and by the sorted
``metadata.metadata`` map), so equal states give equal bytes and an equal :func:`body_sha256`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from consumer.domain.document import JobDocument, StepWrapper, TextCache
from consumer.domain.job import JobState


def build_body(state: JobState) -> dict[str, Any]:
    """The basicSync request body of ``state`` as plain JSON data."""
    return document_body(state.document)


def document_body(document: JobDocument) -> dict[str, Any]:
    """The basicSync request body of a job document."""
    # One dump of the nested models rather than one per step: each dump call has a fixed cost
    # that a job's many small steps would pay again and again. The plain fields are taken as
    # they are, so the values are exactly what per-part dumps give.
    dumped = document.model_dump(mode="json", by_alias=True, include=_DUMPED)
    return {
        "metadata": dumped["metadata"],
        "completedSteps": dumped["completedSteps"] or None,
        "cancelledSteps": dumped["cancelledSteps"] or None,
        "team": document.team,
        "hierarchyStack": document.hierarchy_stack,
        "packetIds": document.packet_ids,
        "jobExclusion": dumped["jobExclusion"],
        "excluded": document.excluded,
    }


_DUMPED = {"metadata", "completed_steps", "cancelled_steps", "job_exclusion"}
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_json(body: Any) -> bytes:
    """Strict, compact UTF-8 JSON, keys in insertion order."""
    return _ENCODER.encode(body).encode()


def encode_body(state: JobState) -> bytes:
    """The request body of ``state`` as bytes: ``encode_json(build_body(state))``, assembled
    from parts. JSON text composes, so the bytes are the same; each step is encoded once while
    it lives (see :func:`_step_json`), as a job's states share their step objects."""
    document = state.document
    encode = _ENCODER.encode
    head = document.model_dump(mode="json", by_alias=True, include=_HEAD)
    return (
        f'{{"metadata":{encode(head["metadata"])}'
        f',"completedSteps":{_steps_json(document.completed_steps)}'
        f',"cancelledSteps":{_steps_json(document.cancelled_steps)}'
        f',"team":{encode(document.team)}'
        f',"hierarchyStack":{encode(document.hierarchy_stack)}'
        f',"packetIds":{encode(document.packet_ids)}'
        f',"jobExclusion":{encode(head["jobExclusion"])}'
        f',"excluded":{encode(document.excluded)}}}'
    ).encode()


_HEAD = {"metadata", "job_exclusion"}

#: The JSON text of a step wrapper in the body.
_step_json: TextCache[StepWrapper] = TextCache(
    lambda step: _ENCODER.encode(step.model_dump(mode="json", by_alias=True))
)


def _steps_json(steps: Sequence[StepWrapper]) -> str:
    """A step list as in :func:`build_body`: ``null`` when empty."""
    if not steps:
        return "null"
    return "[" + ",".join(_step_json(step) for step in steps) + "]"


def body_sha256(body: bytes) -> str:
    """Hex SHA-256 of an encoded body; equal to ``synced_sha256`` means nothing to post."""
    return hashlib.sha256(body).hexdigest()


def payload(state: JobState) -> tuple[bytes, str]:
    """``(body bytes, sha256)`` of ``state``, for a request and ``mark_synced``."""
    body = encode_body(state)
    return body, body_sha256(body)
