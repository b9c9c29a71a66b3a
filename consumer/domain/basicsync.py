"""The basicSync request body, composed from a job state (pure).

The body has every field of the documented request, in the documented order, camelCase, with
``null`` where unknown. Empty ``completedSteps`` / ``cancelledSteps`` are sent as ``null`` (as in
the documented example); ``jobExclusion`` is always a list and ``excluded`` a bool. The encoding
is compact UTF-8 JSON (key order fixed by the document and by the sorted ``metadata.metadata``
map), so equal states give equal bytes and an equal :func:`body_sha256`.

:func:`encode_body` is the one encoder: it composes the metadata's JSON with the step texts the
state keeps (each made once, when its event was decoded, by the same encoder). Whoever needs the
body as data parses these bytes.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from consumer.domain.state import (
    METADATA_NAMES,
    JobState,
    Step,
    exclusion_json,
    json_text,
    step_json,
)


def encode_json(body: Any) -> bytes:
    """Compact UTF-8 JSON, keys in insertion order, as the body's parts are encoded."""
    return json_text(body).encode()


def encode_body(state: JobState) -> bytes:
    """The request body of ``state`` as bytes: one encoding with the kept texts as they are."""
    document = state.document
    meta = document.metadata
    metadata: dict[str, Any] = {key: getattr(meta, name) for name, key in _BEFORE_CURRENT}
    metadata["currentStep"] = orjson.Fragment(meta.current_step or "null")
    for name, key in _AFTER_CURRENT:
        metadata[key] = getattr(meta, name)
    hierarchy = document.hierarchy_stack
    return orjson.dumps(
        {
            "metadata": metadata,
            "completedSteps": _steps(document.completed_steps),
            "cancelledSteps": _steps(document.cancelled_steps),
            "team": document.team,
            # json_text: integers beyond 64 bits, which orjson refuses, are valid JSON too
            "hierarchyStack": None if hierarchy is None else orjson.Fragment(json_text(hierarchy)),
            "packetIds": document.packet_ids,
            "jobExclusion": [exclusion_json(e) for e in document.job_exclusion],
            "excluded": document.excluded,
        }
    )


#: The metadata fields before ``currentStep`` in the body, and those after it.
_BEFORE_CURRENT = METADATA_NAMES[: [name for name, _ in METADATA_NAMES].index("abandon_reason")]
_AFTER_CURRENT = METADATA_NAMES[len(_BEFORE_CURRENT) :]


def _steps(steps: tuple[Step, ...]) -> list[orjson.Fragment] | None:
    """A step list: its texts, ``null`` when empty."""
    return list(map(orjson.Fragment, map(step_json, steps))) or None


def body_sha256(body: bytes) -> str:
    """Hex SHA-256 of an encoded body; equal to ``synced_sha256`` means nothing to post."""
    return hashlib.sha256(body).hexdigest()


def payload(state: JobState) -> tuple[bytes, str]:
    """``(body bytes, sha256)`` of ``state``, for a request and ``mark_synced``."""
    body = encode_body(state)
    return body, body_sha256(body)
