"""The basicSync request body, composed from a job state (pure).

The body has every field of the documented request, in the documented order, camelCase, with
``null`` where unknown. Empty ``completedSteps`` / ``cancelledSteps`` are sent as ``null`` (as in
the documented example); ``jobExclusion`` is always a list and ``excluded`` a bool. The encoding
is strict, compact JSON (no NaN, UTF-8, key order fixed by the document and by the sorted
``metadata.metadata`` map), so equal states give equal bytes and an equal :func:`body_sha256`.

:func:`encode_body` is the one encoder: it composes the metadata's JSON with the step texts the
state keeps (each made once, when its event was decoded, by the same encoder). Whoever needs the
body as data parses these bytes.
"""

from __future__ import annotations

import hashlib
from typing import Any

from consumer.domain.state import METADATA_NAMES, JobState, Step, exclusion_json, json_text

#: The metadata fields before ``currentStep`` in the body, and those after it.
_BEFORE_CURRENT = METADATA_NAMES[: [n for n, _ in METADATA_NAMES].index("abandon_reason")]
_AFTER_CURRENT = METADATA_NAMES[len(_BEFORE_CURRENT) :]


def encode_json(body: Any) -> bytes:
    """Strict, compact UTF-8 JSON, keys in insertion order."""
    return json_text(body).encode()


def encode_body(state: JobState) -> bytes:
    """The request body of ``state`` as bytes."""
    document = state.document
    meta = document.metadata
    before = json_text({key: getattr(meta, name) for name, key in _BEFORE_CURRENT})
    after = json_text({key: getattr(meta, name) for name, key in _AFTER_CURRENT})
    rest = json_text(
        {
            "team": document.team,
            "hierarchyStack": document.hierarchy_stack,
            "packetIds": document.packet_ids,
            "jobExclusion": [exclusion_json(e) for e in document.job_exclusion],
            "excluded": document.excluded,
        }
    )
    return "".join(
        (
            '{"metadata":',
            before[:-1],
            ',"currentStep":',
            meta.current_step or "null",
            ",",
            after[1:],
            ',"completedSteps":',
            _steps_json(document.completed_steps),
            ',"cancelledSteps":',
            _steps_json(document.cancelled_steps),
            ",",
            rest[1:],
        )
    ).encode()


def _steps_json(steps: tuple[Step, ...]) -> str:
    """A step list: ``null`` when empty."""
    if not steps:
        return "null"
    return "[" + ",".join(step.json for step in steps) + "]"


def body_sha256(body: bytes) -> str:
    """Hex SHA-256 of an encoded body; equal to ``synced_sha256`` means nothing to post."""
    return hashlib.sha256(body).hexdigest()


def payload(state: JobState) -> tuple[bytes, str]:
    """``(body bytes, sha256)`` of ``state``, for a request and ``mark_synced``."""
    body = encode_body(state)
    return body, body_sha256(body)
