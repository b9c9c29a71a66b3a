"""Job events: CloudEvents 1.0 over Kafka, decoded and validated (docs/contract.md §4).

Both modes of the Kafka protocol binding are accepted:

- structured: the value is the JSON envelope; chosen when the ``content-type`` header is
  ``application/cloudevents+json`` (other ``application/cloudevents*`` types, such as batches,
  are invalid) or, with no ``ce_specversion`` header, whatever the value is (it must then be a
  JSON object carrying ``specversion``).
- binary: attributes in ``ce_*`` headers (``ce_specversion``, ``ce_id``, ``ce_source``,
  ``ce_type``, ``ce_subject``, ``ce_time``; names case-insensitive), the value is ``data`` as
  JSON; chosen when a ``ce_specversion`` header is present. ``content-type``, when given, must
  be ``application/json`` or ``*+json``.

Required: ``specversion == "1.0"``, ``id``, ``source``, ``type``, ``subject`` (the clientJobId)
and ``data``; ``time`` is optional (RFC 3339 with offset, within the years 1 to 9999 in UTC).
Validation is strict: a wrong type never passes (no coercion), nor do ``NaN`` and ``Infinity``,
which pydantic's parser reads but are not JSON. Unknown envelope attributes (extensions,
``dataschema``) and unknown ``data`` fields are ignored for forward compatibility, and are not
forwarded.

The Distributed Tracing extension (``traceparent``, ``tracestate``: the ``ce_traceparent`` and
``ce_tracestate`` headers in binary mode, envelope attributes in structured mode) is kept on the
event as plain text for the sync span's links (docs/operations.md "Tracing"). It never makes an
event unusable: a value that is not a string (or not UTF-8) is dropped, and one that is not a
valid W3C ``traceparent`` is skipped when the span is made.

Errors are :class:`InvalidEvent`, never retriable, carrying a :class:`FailureReason`: oversized
value -> ``oversized_event``; unparsable or ill-typed input -> ``invalid_event``; a type outside
:class:`EventType` -> ``unknown_event_type``; Kafka key (UTF-8) not equal to ``subject`` ->
``key_mismatch``. Checks run in that order.

Hot path: the structured envelope is one discriminated union validated straight from bytes
(``validate_json``): one pass instead of ``json.loads`` plus validation, on every event.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, cast

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from consumer.domain.document import (
    DomainModel,
    FiniteJson,
    JobExclusion,
    JobMetadata,
    StepWrapper,
    Timestamp,
)
from consumer.domain.results import FailureReason
from consumer.domain.state import Step, kept_step
from consumer.errors import BasicSyncError

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
DEFAULT_MAX_BYTES = 1_000_000


class EventType(StrEnum):
    """The six event types of the contract."""

    upserted = "com.workfloplus.job.upserted"
    step_completed = "com.workfloplus.job.step.completed"
    step_cancelled = "com.workfloplus.job.step.cancelled"
    status_changed = "com.workfloplus.job.status.changed"
    excluded = "com.workfloplus.job.excluded"
    aborted = "com.workfloplus.job.aborted"


class UpsertedData(JobMetadata):
    """Any subset of the job's metadata fields plus team, hierarchyStack, packetIds.

    Which fields were present matters (present ``null`` overwrites, absent leaves alone): the
    reducer reads ``model_fields_set``. Build it with only the fields you mean to set.
    """

    team: str | None = None
    hierarchy_stack: list[FiniteJson] | None = None
    packet_ids: list[str] | None = None


class StatusChangedData(DomainModel):
    """A status change; the optional fields present are set along with it."""

    status: str = Field(min_length=1)
    abandon_reason: str | None = None
    current_step: StepWrapper | None = None
    updated: Timestamp | None = None
    modified: Timestamp | None = None


class AbortedData(DomainModel):
    """An abort: status ``Aborted``, ``reason`` becomes ``abandonReason`` when given."""

    reason: str | None = None
    user_id: str | None = None


#: ``com.workfloplus.job.excluded`` data: ``{userId, reason, isExcluded}``.
ExcludedData = JobExclusion
#: Step events carry a step wrapper; ``singleStep.uniqueStepId`` is required for them.
StepData = StepWrapper

EventData = UpsertedData | StepWrapper | StatusChangedData | JobExclusion | AbortedData

DATA_MODELS: dict[EventType, type[DomainModel]] = {
    EventType.upserted: UpsertedData,
    EventType.step_completed: StepWrapper,
    EventType.step_cancelled: StepWrapper,
    EventType.status_changed: StatusChangedData,
    EventType.excluded: JobExclusion,
    EventType.aborted: AbortedData,
}


@dataclass(frozen=True, slots=True)
class EventTrace:
    """An applied event's trace context and where it was read: what a sync span links to.

    Kept in memory only, from the event's intake until the sync that covers it.
    """

    traceparent: str
    tracestate: str | None
    event_id: str
    topic: str
    partition: int
    offset: int


class InvalidEvent(BasicSyncError):
    """An input event that cannot be used; goes to the failure topic, never retried."""

    retriable: ClassVar[bool] = False

    def __init__(self, reason: FailureReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class JobEvent:
    """A decoded, validated job event. ``subject`` is the clientJobId.

    Plain data: the decoders validate the bytes and build it directly, once per event (as a
    pydantic model, building it was about a tenth of decoding). :meth:`build` validates a
    mapping of its fields, for events made in code (the demo, tests).
    """

    id: str
    source: str
    type: EventType
    subject: str
    time: datetime | None
    data: EventData
    #: CloudEvents Distributed Tracing extension, as received (W3C Trace Context text)
    traceparent: str | None = None
    tracestate: str | None = None
    #: A step event's step as the job state keeps it, made once from ``data`` when the event
    #: is built (a copy with other ``data`` is built again: :meth:`replaced`).
    step: Step | None = field(default=None, repr=False)

    @classmethod
    def build(cls, values: Mapping[str, Any]) -> JobEvent:
        """The event of ``values`` (``data`` a model or a dict of the type's fields), validated
        as the decoders validate; raises ``pydantic.ValidationError``."""
        fields = _EventFields.model_validate(values)
        return cls(
            fields.id,
            fields.source,
            fields.type,
            fields.subject,
            fields.time,
            fields.data,
            fields.traceparent,
            fields.tracestate,
            _step_of(fields.type, fields.data),
        )

    def replaced(self, **changes: Any) -> JobEvent:
        """This event with ``changes``, validated and built again (its ``step`` with it)."""
        values = {name: getattr(self, name) for name in _EVENT_FIELDS}
        return JobEvent.build({**values, **changes})


class _EventFields(BaseModel):
    """What :meth:`JobEvent.build` validates: the fields of an event made in code."""

    model_config = ConfigDict(frozen=True, strict=True)

    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: EventType = Field(strict=False)  # accept the type string from dicts too
    subject: str = Field(min_length=1)
    time: datetime | None = None
    data: EventData
    traceparent: str | None = None
    tracestate: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _data_by_type(cls, values: Any) -> Any:
        # A dict ``data`` is validated with the model of its type (an untagged union would
        # pick the wrong one: every UpsertedData field is optional).
        if not isinstance(values, dict):
            return values
        try:
            event_type = EventType(str(values.get("type")))
        except ValueError:
            return values
        data = values.get("data")
        if isinstance(data, dict):
            values = {**values, "data": DATA_MODELS[event_type].model_validate(data)}
        return values

    @model_validator(mode="after")
    def _check_data(self) -> _EventFields:
        _check_data(self.type, self.subject, self.data)
        return self


_EVENT_FIELDS = tuple(_EventFields.model_fields)

_STEP_TYPES = frozenset({EventType.step_completed, EventType.step_cancelled})


def _step_of(event_type: EventType, data: object) -> Step | None:
    """What the job state keeps of a step event's data (None for other events, and for data
    ``_check_data`` rejects)."""
    if event_type in _STEP_TYPES and isinstance(data, StepWrapper):
        return kept_step(data) if data.single_step.unique_step_id else None
    return None


def _check_data(event_type: EventType, subject: str, data: DomainModel) -> None:
    expected = DATA_MODELS[event_type]
    if type(data) is not expected:
        raise ValueError(f"data of {event_type} must be {expected.__name__}")
    if isinstance(data, StepWrapper) and not data.single_step.unique_step_id:
        raise ValueError("singleStep.uniqueStepId is required")
    if (
        isinstance(data, UpsertedData)
        and data.client_job_id is not None
        and data.client_job_id != subject
    ):
        raise ValueError("data.clientJobId differs from subject")


# --- structured mode: one discriminated union, validated straight from bytes -------------


def _text_or_none(value: Any) -> Any:
    return value if isinstance(value, str) else None


#: A tracing attribute: text, or dropped (a wrong type never makes the event unusable).
_TraceText = Annotated[str | None, BeforeValidator(_text_or_none)]


class _Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    specversion: Literal["1.0"]
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    subject: str = Field(min_length=1)
    time: AwareDatetime | None = None
    traceparent: _TraceText = Field(
        default=None,
        description="CloudEvents Distributed Tracing extension: the W3C traceparent of the "
        "span that produced the event; linked from the span of the sync that carries it",
    )
    tracestate: _TraceText = Field(
        default=None, description="CloudEvents Distributed Tracing extension: W3C tracestate"
    )


class _UpsertedEnvelope(_Envelope):
    type: Literal["com.workfloplus.job.upserted"]
    data: UpsertedData


class _StepCompletedEnvelope(_Envelope):
    type: Literal["com.workfloplus.job.step.completed"]
    data: StepWrapper


class _StepCancelledEnvelope(_Envelope):
    type: Literal["com.workfloplus.job.step.cancelled"]
    data: StepWrapper


class _StatusChangedEnvelope(_Envelope):
    type: Literal["com.workfloplus.job.status.changed"]
    data: StatusChangedData


class _ExcludedEnvelope(_Envelope):
    type: Literal["com.workfloplus.job.excluded"]
    data: JobExclusion


class _AbortedEnvelope(_Envelope):
    type: Literal["com.workfloplus.job.aborted"]
    data: AbortedData


_AnyEnvelope = (
    _UpsertedEnvelope
    | _StepCompletedEnvelope
    | _StepCancelledEnvelope
    | _StatusChangedEnvelope
    | _ExcludedEnvelope
    | _AbortedEnvelope
)
_STRUCTURED: TypeAdapter[_AnyEnvelope] = TypeAdapter(
    Annotated[_AnyEnvelope, Field(discriminator="type")]
)
_TIME: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)


#: the UTF-8 encoding of U+FEFF, which some JSON writers put before the text
_UTF8_BOM = b"\xef\xbb\xbf"


def decode_event(
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> JobEvent:
    """Decode one Kafka message into a :class:`JobEvent` or raise :class:`InvalidEvent`."""
    if value is not None and len(value) > max_bytes:
        raise InvalidEvent(
            FailureReason.oversized_event, f"value is {len(value)} bytes, limit {max_bytes}"
        )
    if value is not None and value.startswith(_UTF8_BOM):
        # RFC 8259 §8.1: a parser may ignore it. Some writers (.NET's UTF8Encoding(true),
        # PowerShell, Notepad) put it first; refused, every event of such a producer would be.
        value = value[len(_UTF8_BOM) :]
    if not value:
        raise InvalidEvent(FailureReason.invalid_event, "empty value")
    # First: the model would call an infinity out of range, not by name.
    numbers_checked = _check_numbers(value)
    media = _media_type(headers)
    attributes = _ce_headers(headers)
    if media is not None and media.startswith("application/cloudevents"):
        if media != STRUCTURED_CONTENT_TYPE:
            raise InvalidEvent(FailureReason.invalid_event, f"unsupported content-type {media!r}")
        event = _decode_structured(value)
    elif "specversion" in attributes:
        if media is not None and media != "application/json" and not media.endswith("+json"):
            raise InvalidEvent(
                FailureReason.invalid_event, f"binary mode data must be JSON, not {media!r}"
            )
        event = _decode_binary(attributes, value)
    else:
        event = _decode_structured(value)
    if not numbers_checked:
        raise InvalidEvent(
            FailureReason.invalid_event,
            "holds NaN or Infinity, and is not JSON the standard parser reads",
        )
    _check_key(key, event.subject)
    return event


def _ce_headers(headers: Sequence[tuple[str, bytes | None]]) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for name, raw in headers:
        lowered = name.lower()
        if lowered.startswith("ce_"):
            found[lowered[3:]] = raw
    return found


def _media_type(headers: Sequence[tuple[str, bytes | None]]) -> str | None:
    for name, raw in headers:
        if name.lower() == "content-type" and raw is not None:
            return raw.decode("utf-8", errors="replace").split(";")[0].strip().lower()
    return None


def _decode_structured(value: bytes) -> JobEvent:
    try:
        envelope = _STRUCTURED.validate_json(value)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            if error["type"] == "union_tag_invalid":
                tag = (error.get("ctx") or {}).get("tag")
                raise InvalidEvent(
                    FailureReason.unknown_event_type, f"unknown event type {tag!r}"
                ) from None
        raise InvalidEvent(FailureReason.invalid_event, _describe(exc)) from None
    event_type = EventType(envelope.type)
    _check(event_type, envelope.subject, envelope.data)
    _check_time(envelope.time)
    return JobEvent(
        envelope.id,
        envelope.source,
        event_type,
        envelope.subject,
        envelope.time,
        envelope.data,
        envelope.traceparent,
        envelope.tracestate,
        _step_of(event_type, envelope.data),
    )


def _decode_binary(attributes: dict[str, bytes | None], value: bytes) -> JobEvent:
    text: dict[str, str] = {}
    for name in ("specversion", "id", "source", "type", "subject", "time"):
        raw = attributes.get(name)
        if raw is None:
            continue
        try:
            text[name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent(
                FailureReason.invalid_event, f"header ce_{name} is not UTF-8"
            ) from None
    if text.get("specversion") != "1.0":
        raise InvalidEvent(
            FailureReason.invalid_event,
            f"ce_specversion must be 1.0, got {text.get('specversion')!r}",
        )
    missing = [n for n in ("id", "source", "type", "subject") if not text.get(n)]
    if missing:
        raise InvalidEvent(
            FailureReason.invalid_event, "missing header " + ", ".join(f"ce_{n}" for n in missing)
        )
    try:
        event_type = EventType(text["type"])
    except ValueError:
        raise InvalidEvent(
            FailureReason.unknown_event_type, f"unknown event type {text['type']!r}"
        ) from None
    try:
        time = _TIME.validate_python(text["time"]) if "time" in text else None
        data = cast(EventData, DATA_MODELS[event_type].model_validate_json(value))
    except ValidationError as exc:
        raise InvalidEvent(FailureReason.invalid_event, _describe(exc)) from None
    _check(event_type, text["subject"], data)
    _check_time(time)
    return JobEvent(
        text["id"],
        text["source"],
        event_type,
        text["subject"],
        time,
        data,
        _header_text(attributes.get("traceparent")),
        _header_text(attributes.get("tracestate")),
        _step_of(event_type, data),
    )


def _header_text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _check(event_type: EventType, subject: str, data: DomainModel) -> None:
    try:
        _check_data(event_type, subject, data)
    except ValueError as exc:
        raise InvalidEvent(FailureReason.invalid_event, str(exc)) from None


def _check_time(time: datetime | None) -> None:
    """The event's time orders it as UTC text (``consumer.domain.job``): it must be an instant
    of the years 1 to 9999 once in UTC (``0001-01-01T00:00:00+01:00`` is not)."""
    if time is None or 1 < time.year < 9999:
        return
    try:
        time.astimezone(UTC)
    except OverflowError:
        raise InvalidEvent(
            FailureReason.invalid_event,
            f"time {time.isoformat()} is outside the years 1 to 9999 once in UTC",
        ) from None


class _NotJson(Exception):
    pass


def _not_json(constant: str) -> None:
    raise _NotJson(constant)


def _check_numbers(value: bytes) -> bool:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON, though pydantic's parser reads
    them; WorkfloPlus would get ``null`` in their place. Only a value holding one of the words
    (in a string, mostly) is parsed again, by a parser that says where it meets them. False
    when the words are there and that parser cannot read the value at all (the decode then
    says why, or the value is refused all the same)."""
    if b"NaN" not in value and b"Infinity" not in value:
        return True
    try:
        json.loads(value, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return False
    except _NotJson as exc:
        raise InvalidEvent(
            FailureReason.invalid_event, f"{exc} is not JSON (not a number JSON can hold)"
        ) from None
    return True


def _check_key(key: bytes | None, subject: str) -> None:
    if key is None:
        raise InvalidEvent(FailureReason.key_mismatch, "no Kafka key; it must equal the subject")
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent(FailureReason.key_mismatch, "Kafka key is not UTF-8") from None
    if text != subject:
        raise InvalidEvent(
            FailureReason.key_mismatch, f"Kafka key {text!r} differs from subject {subject!r}"
        )


def _describe(exc: ValidationError, limit: int = 3) -> str:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in errors[:limit]
    ]
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more")
    return "; ".join(parts)


# --- producers (demo, tests) ------------------------------------------------------------


def _data_json(event: JobEvent) -> Any:
    # exclude_unset keeps "which fields were present", which the reducer relies on.
    return event.data.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _time_text(time: datetime) -> str:
    return TypeAdapter(datetime).dump_python(time, mode="json")  # type: ignore[no-any-return]


def encode_structured(event: JobEvent) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """Structured mode: ``(key, value, headers)`` with the JSON envelope as value."""
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": event.id,
        "source": event.source,
        "type": event.type.value,
        "subject": event.subject,
    }
    if event.time is not None:
        envelope["time"] = _time_text(event.time)
    if event.traceparent is not None:
        envelope["traceparent"] = event.traceparent
    if event.tracestate is not None:
        envelope["tracestate"] = event.tracestate
    envelope["datacontenttype"] = "application/json"
    envelope["data"] = _data_json(event)
    value = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
    return event.subject.encode(), value, [("content-type", STRUCTURED_CONTENT_TYPE.encode())]


def encode_binary(event: JobEvent) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """Binary mode: ``(key, value, headers)`` with ``ce_*`` headers and ``data`` as value."""
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", event.id.encode()),
        ("ce_source", event.source.encode()),
        ("ce_type", event.type.value.encode()),
        ("ce_subject", event.subject.encode()),
    ]
    if event.time is not None:
        headers.append(("ce_time", _time_text(event.time).encode()))
    if event.traceparent is not None:
        headers.append(("ce_traceparent", event.traceparent.encode()))
    if event.tracestate is not None:
        headers.append(("ce_tracestate", event.tracestate.encode()))
    headers.append(("content-type", b"application/json"))
    value = json.dumps(_data_json(event), separators=(",", ":"), ensure_ascii=False).encode()
    return event.subject.encode(), value, headers
