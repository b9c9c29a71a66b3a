"""Result records: one per finished sync attempt or unusable event (docs/contract.md §8).

Records are JSON, camelCase, keyed by ``clientJobId`` (or the raw Kafka key for input that never
decoded). ``(clientJobId, stateVersion)`` identifies a duplicate after a crash. Python attributes
are snake_case; serialize with ``to_json_bytes()`` (always by alias, nullable fields written
as ``null``).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

#: Longest gateway response body kept in a failure record, in characters. A longer body is cut
#: to this many characters and :data:`TRUNCATION_SUFFIX` is appended.
MAX_ERROR_BODY_CHARS = 4096
TRUNCATION_SUFFIX = "...[truncated]"
#: Default of ``kafka.max_failure_value_bytes``: input bytes a failure record carries at most.
MAX_FAILURE_VALUE_BYTES = 64 * 1024
#: Kafka key and header bytes (keys plus values) a failure record carries at most.
MAX_SOURCE_KEY_BYTES = 1024
MAX_SOURCE_HEADER_BYTES = 16 * 1024


class FailureReason(StrEnum):
    """Why a record landed on the failure topic. A public contract: never rename a value.

    - ``invalid_event``: the input is not a usable CloudEvent (bad JSON, missing or ill-typed
      attribute or data field, wrong ``specversion``, empty value, a ``time`` beyond the years 1
      to 9999 in UTC, or further ahead of the consumer's clock than
      ``kafka.max_event_time_ahead_s``, a ``source`` and ``id`` the job applied before for
      another event), or the reducer failed on it (a defect, said in the message: the event is
      not applied, later ones are). ``source`` carries the bytes.
    - ``key_mismatch``: the Kafka key (UTF-8) is missing or differs from the event ``subject``.
    - ``unknown_event_type``: ``type`` is not one of the six ``com.workfloplus.job.*`` types.
    - ``oversized_event``: the value is larger than the configured maximum event size.
    - ``rejected_by_gateway``: WorkfloPlus answered a final 4xx (not 401/403/404/405/408/429),
      or refused this job alone (403, 401 after a fresh token, 404, 405, 3xx, a 2xx web page)
      while accepting others, until its budget was spent; ``error`` carries the status and
      (truncated) response body.
    - ``retries_exhausted``: retriable failures (5xx, timeout, 429, ...) that only this job got,
      while other jobs succeeded, used up its retry budget.
    - ``invalid_transition``: the event is valid but breaks an assembly rule, e.g. aborting a
      ``Completed`` job or moving a job between the terminal statuses.
    - ``missing_job_metadata``: the job was held too long without the fields needed to post it
      (``workflowId``).
    - ``misrouted``: the event arrived on another partition than its key's murmur2 partition
      (the Java default partitioner), or than the one holding its job's state; applying it
      here would let two members assemble one job. Its producer uses another partitioner;
      ``source`` says where the event is and carries its bytes.
    - ``job_forgotten``: the event is for a job that ended and was forgotten after retention;
      it is not applied (it would post a partial document over the full one). ``source``
      carries the bytes; ``stateVersion`` is the job's last version.
    - ``job_too_large``: applying the event would make the job's state larger than the
      configured maximum job size; the job keeps (and syncs) its state as it was, and neither
      this event nor any later one of the job is applied. Reported once per job; ``source``
      locates the first event not applied.
    - ``job_state_unreadable``: the job's state in the changelog cannot be read (a damaged
      value, or one written by a version whose form this one does not read); the event is not
      applied (applied alone, it would post a partial document over the full one). ``source``
      carries the bytes: re-send it once a version that reads the state runs, or after the
      job's changelog key was deleted to start the job afresh.
    """

    invalid_event = "invalid_event"
    key_mismatch = "key_mismatch"
    unknown_event_type = "unknown_event_type"
    oversized_event = "oversized_event"
    rejected_by_gateway = "rejected_by_gateway"
    retries_exhausted = "retries_exhausted"
    invalid_transition = "invalid_transition"
    missing_job_metadata = "missing_job_metadata"
    misrouted = "misrouted"
    job_forgotten = "job_forgotten"
    job_too_large = "job_too_large"
    job_state_unreadable = "job_state_unreadable"


class _Record(BaseModel):
    model_config = ConfigDict(
        frozen=True, alias_generator=to_camel, populate_by_name=True, extra="forbid"
    )

    def to_json_bytes(self) -> bytes:
        """Strict, compact JSON with camelCase keys."""
        return self.model_dump_json(by_alias=True).encode()


class SourceOffset(_Record):
    """One input position whose event is covered by a synced state."""

    topic: str
    partition: int
    offset: int


class SentState(Protocol):
    """What a result record says of the job state a request carried (``JobState`` is one)."""

    @property
    def client_job_id(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def status(self) -> str | None: ...

    @property
    def job_id(self) -> str | None: ...

    @property
    def first_unsynced_at(self) -> datetime | None: ...


class SuccessRecord(_Record):
    """A job state accepted by WorkfloPlus (2xx)."""

    client_job_id: str
    job_id: str | None
    outcome: Literal["synced"] = "synced"
    http_status: int
    state_version: int
    job_status: str | None
    attempts: int
    synced_at: datetime
    #: Milliseconds from the first event not yet synced to this success; None when unknown.
    latency_ms: int | None
    source_offsets: list[SourceOffset]
    payload_sha256: str
    #: True when ``sourceOffsets`` was cut to the last offset of each topic partition to keep
    #: the record within the producer's size limit.
    source_offsets_truncated: bool = False
    #: The trace id (32 hex digits) of the sync's span; None when tracing is off.
    trace_id: str | None = None

    @classmethod
    def for_sync(
        cls,
        sent: SentState,
        *,
        job_id: str | None,
        http_status: int,
        attempts: int,
        synced_at: datetime,
        payload_sha256: str,
        source_offsets: Sequence[SourceOffset] = (),
        trace_id: str | None = None,
    ) -> SuccessRecord:
        """The record of ``sent`` accepted at ``synced_at``: its version and status, the
        WorkfloPlus ``job_id`` (else the one ``sent`` already had) and the latency from its
        first unsynced change."""
        first = sent.first_unsynced_at
        return cls(
            client_job_id=sent.client_job_id,
            job_id=job_id or sent.job_id,
            http_status=http_status,
            state_version=sent.version,
            job_status=sent.status,
            attempts=attempts,
            synced_at=synced_at,
            latency_ms=None if first is None else int((synced_at - first).total_seconds() * 1000),
            source_offsets=list(source_offsets),
            payload_sha256=payload_sha256,
            trace_id=trace_id,
        )


class ErrorInfo(_Record):
    """What went wrong: a message, and for gateway failures the HTTP status and body."""

    message: str
    status: int | None = None
    body: str | None = None


class SourceHeader(_Record):
    """A Kafka header; ``value`` is base64 (None for a null header value)."""

    key: str
    value: str | None


class SourceInfo(_Record):
    """The original input message of an unusable event, bytes as base64 (None for null).

    ``topic``, ``partition`` and ``offset`` always locate the original exactly. ``value``
    carries at most ``kafka.max_failure_value_bytes`` of it (the first ones), and
    ``valueSize`` and ``valueSha256`` always describe the whole value. When ``truncated`` is
    true the key, the headers or the value here are not the whole of the original (a header
    list is cut between headers, a key is then null): ``basicsync redrive`` re-reads the
    original from its coordinates. Records written before these fields existed have them at
    ``null``/``false`` and always carry everything.
    """

    topic: str
    partition: int
    offset: int
    key: str | None
    headers: list[SourceHeader]
    value: str | None
    value_size: int | None = None
    value_sha256: str | None = None
    truncated: bool = False

    @classmethod
    def from_message(
        cls,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]],
        max_value_bytes: int = MAX_FAILURE_VALUE_BYTES,
        max_key_bytes: int = MAX_SOURCE_KEY_BYTES,
        max_header_bytes: int = MAX_SOURCE_HEADER_BYTES,
    ) -> SourceInfo:
        """Capture a raw Kafka message, bytes as base64, each part within its bound."""
        truncated = False
        kept_headers: list[SourceHeader] = []
        budget = max_header_bytes
        for name, raw in headers:
            size = len(name.encode()) + len(raw or b"")
            if size > budget:
                truncated = True
                break
            budget -= size
            kept_headers.append(SourceHeader(key=name, value=_b64(raw)))
        if key is not None and len(key) > max_key_bytes:
            key, truncated = None, True
        kept_value = value
        if value is not None and len(value) > max_value_bytes:
            kept_value, truncated = value[:max_value_bytes], True
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            key=_b64(key),
            headers=kept_headers,
            value=_b64(kept_value),
            value_size=None if value is None else len(value),
            value_sha256=None if value is None else hashlib.sha256(value).hexdigest(),
            truncated=truncated,
        )


class FailureRecord(_Record):
    """A final failure: unusable input, a rejected transition or a failed sync."""

    client_job_id: str | None
    outcome: Literal["failed"] = "failed"
    reason: FailureReason
    error: ErrorInfo
    attempts: int
    state_version: int | None
    failed_at: datetime
    source: SourceInfo | None = None
    #: For a failed sync, the trace id (32 hex digits) of its last attempt's span; None when
    #: tracing is off and for unusable input.
    trace_id: str | None = None

    @classmethod
    def for_input(
        cls,
        *,
        reason: FailureReason,
        message: str,
        source: SourceInfo,
        failed_at: datetime,
        client_job_id: str | None = None,
        state_version: int | None = None,
    ) -> FailureRecord:
        """A record for an event that could not be used (invalid, or rejected by the reducer)."""
        return cls(
            client_job_id=client_job_id,
            reason=reason,
            error=ErrorInfo(message=message),
            attempts=0,
            state_version=state_version,
            failed_at=failed_at,
            source=source,
        )

    @classmethod
    def for_sync(
        cls,
        *,
        client_job_id: str,
        reason: FailureReason,
        message: str,
        attempts: int,
        state_version: int,
        failed_at: datetime,
        status: int | None = None,
        body: str | bytes | None = None,
        trace_id: str | None = None,
    ) -> FailureRecord:
        """A record for a sync that ended in failure; ``body`` is truncated."""
        return cls(
            client_job_id=client_job_id,
            reason=reason,
            error=ErrorInfo(message=message, status=status, body=truncate_body(body)),
            attempts=attempts,
            state_version=state_version,
            failed_at=failed_at,
            trace_id=trace_id,
        )


def truncate_body(body: str | bytes | None, limit: int = MAX_ERROR_BODY_CHARS) -> str | None:
    """Decode (UTF-8, invalid bytes replaced) and cut to ``limit`` characters plus a marker."""
    if body is None:
        return None
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    if len(text) <= limit:
        return text
    return text[:limit] + TRUNCATION_SUFFIX


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")
