"""A job's state as plain, typed, frozen data, and its changelog value.

The reducer (``consumer.domain.job``) folds events into :class:`JobState`; the request body
(``consumer.domain.basicsync``) and the changelog value are composed from its parts. Each step
is kept as its ordering key and its JSON text exactly as the body carries it (:class:`Step`),
made once when its event is decoded (:func:`kept_step`) and never parsed or encoded again while
it lives; ``currentStep`` is kept as text too. pydantic stays at the boundaries (events in, the
published schema, the reader of older changelog values).

**The changelog value** (:meth:`JobState.to_json_bytes`) is JSON, laid out so that writing is
text composition and reading takes the step texts without parsing them::

    {"layout":{"currentStep":L,"completedSteps":[[L,number,time,uniqueStepId],..],
               "cancelledSteps":[..]},
     "client_job_id":..., <bookkeeping fields, those at their default left out>,
     "document":{<team, hierarchyStack, packetIds, jobExclusion, excluded when set>,
                 "metadata":{"clientJobId":..., <fields set>, "currentStep":<text>},
                 "completedSteps":[<text>,..],"cancelledSteps":[<text>,..]}}

``layout`` gives the length of each text at the end of the value (``currentStep``, then every
step) and each step's ordering key, so the reader parses only the head (the bookkeeping and the
metadata) and slices the texts: the text read back is the text written, so bodies hash alike
before and after a restore. Everything else reads like the value before this layout (snake_case
bookkeeping, the document in the body's camelCase names, which that reader accepts too), so a
consumer of the previous version reads it during a rolling upgrade. Values that do not start
with ``{"layout":`` (written before), or whose layout does not match their text, are read by the
slower, validating path (:func:`decode_validated`, with ``consumer.domain.state_schema``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import attrgetter
from typing import Any, TypeVar

import orjson

from consumer.domain.document import StepWrapper, order_of, step_text

#: ``Clock``: ``(time, arrival)`` of an event: UTC time as fixed-width text
#: (``2026-01-01T10:00:00.000000Z``; empty for an event without time before any with), then its
#: arrival number within the job. Tuple order is the order of assembly.
from consumer.domain.state_schema import Clock as Clock
from consumer.domain.state_schema import StoredJobState, group_clocks

#: The standard library's strict, compact UTF-8 JSON, for what orjson refuses.
_STDLIB = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def json_text(value: Json) -> str:
    """Compact UTF-8 JSON text, keys in insertion order: the one encoder of the texts the body
    and the changelog value are composed of, so equal values give equal text.

    orjson (an order of magnitude faster than the standard library here); integers beyond 64
    bits, which it refuses, are encoded by the standard library.
    """
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return _STDLIB.encode(value)


#: A write kept while a field may fall back: ``(time, arrival, value, retractable)``; the value
#: of a ``currentStep`` write is its JSON text.
Candidate = tuple[str, int, str | None, bool]
#: A step's place in its list: stepNumber (missing last), time as a POSIX timestamp (first of
#: completed/cancelled/updated/started; missing last), then uniqueStepId.
StepOrder = tuple[bool, int, bool, float, str]
#: Any JSON value, as ``json.loads`` gives it.
Json = Any


@dataclass(frozen=True, slots=True)
class Step:
    """An entry of completedSteps / cancelledSteps: its ordering key and its body JSON text."""

    order: StepOrder
    unique_step_id: str
    #: ``{"singleStep":{..every field..},"reportStep":..}`` exactly as posted.
    json: str


@dataclass(frozen=True, slots=True)
class Exclusion:
    """An entry of ``jobExclusion``: who excluded (or re-included) the job and why."""

    user_id: str
    reason: str | None
    is_excluded: bool


@dataclass(frozen=True, slots=True)
class Metadata:
    """The ``metadata`` object of the body, in the body's order. Every field may be unknown."""

    client_job_id: str | None = None
    workflow_id: str | None = None
    workflow_version_id: str | None = None
    job_title: str | None = None
    #: ``metadata.metadata``, kept sorted by key so equal states encode equally.
    metadata: dict[str, str] | None = None
    created: str | None = None
    updated: str | None = None
    modified: str | None = None
    status: str | None = None
    user_id: str | None = None
    #: The current step's body JSON text.
    current_step: str | None = None
    abandon_reason: str | None = None
    username: str | None = None
    workflow_name: str | None = None


@dataclass(frozen=True, slots=True)
class Document:
    """The whole assembled job. Empty step lists are posted as ``null`` (see ``basicsync``)."""

    metadata: Metadata = Metadata()
    completed_steps: tuple[Step, ...] = ()
    cancelled_steps: tuple[Step, ...] = ()
    team: str | None = None
    hierarchy_stack: list[Json] | None = None
    packet_ids: list[str] | None = None
    job_exclusion: tuple[Exclusion, ...] = ()
    excluded: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class JobState:
    """One job as assembled so far, plus what has been synced of it (never mutated)."""

    client_job_id: str
    document: Document
    #: Number of events applied; the version a sync refers to.
    version: int = 0
    #: Ids of the last ``SEEN_IDS_LIMIT`` applied events, oldest first.
    seen_event_ids: tuple[str, ...] = ()
    #: Version last accepted by WorkfloPlus (0 = never synced).
    synced_version: int = 0
    synced_sha256: str | None = None
    #: WorkfloPlus's own ``jobId``, once a sync returned it.
    job_id: str | None = None
    #: When the first event not yet synced was applied (None when in sync); for latencyMs and
    #: for the hold timeout of jobs that cannot be posted yet.
    first_unsynced_at: datetime | None = None
    #: When the last event was applied (processing time); for retention.
    updated_at: datetime
    #: When the last successful sync was recorded.
    synced_at: datetime | None = None
    #: Arrival number of the last event applied (1 for the first): the second part of a clock.
    arrivals: int = 0
    #: The greatest event time applied so far (clock text); events without time take it.
    latest_time: str = ""
    #: Field path -> clock of the write holding it, for written fields (``consumer.domain.job``).
    clocks: dict[str, Clock] = field(default_factory=dict)
    #: Clock of the earliest terminal status; non-terminal status changes after it are ignored.
    terminal_clock: Clock | None = None
    #: Clocks of the ``jobExclusion`` entries, in the same (clock) order.
    exclusion_clocks: tuple[Clock, ...] = ()
    #: Field path -> the writes competing for it, newest first, while a retractable one (from
    #: a non-terminal status.changed) is among them.
    retractable: dict[str, tuple[Candidate, ...]] = field(default_factory=dict)
    #: When a request for this job was handed to WorkfloPlus whose outcome is not known (written
    #: durably before the request is sent): until this plus the in-doubt window the request may
    #: still be applied, so nobody posts the job before then. None when no request is in doubt.
    sending_since: datetime | None = None
    #: The job reached ``kafka.max_job_bytes``: it got its one ``job_too_large`` failure record
    #: and is frozen as it was then (later events are not applied; it is still synced).
    too_large: bool = False

    @property
    def status(self) -> str | None:
        return self.document.metadata.status

    def to_json_bytes(self) -> bytes:
        """The changelog value (see the module docstring)."""
        return encode_state(self)

    @classmethod
    def from_json_bytes(cls, data: bytes) -> JobState:
        """Read a changelog value of any version; raises ``ValueError`` when it is none."""
        return decode_state(data)


_Data = TypeVar("_Data", Metadata, Document, JobState)
#: Field names and a getter of all of them, per class (:func:`changed`).
_FIELDS = {
    cls: (names, attrgetter(*names))
    for cls in (Metadata, Document, JobState)
    for names in [tuple(f.name for f in fields(cls))]
}


def changed(data: _Data, /, **changes: Any) -> _Data:
    """A copy of ``data`` with ``changes``: ``dataclasses.replace`` without its per-field
    bookkeeping (these classes have only plain init fields), as the reducer copies up to three
    of them per event."""
    names, values = _FIELDS[type(data)]
    merged = dict(zip(names, values(data), strict=True))
    merged.update(changes)
    return type(data)(**merged)


#: Metadata attributes and their body names, in the body's order (``current_step`` apart).
METADATA_NAMES = (
    ("client_job_id", "clientJobId"),
    ("workflow_id", "workflowId"),
    ("workflow_version_id", "workflowVersionId"),
    ("job_title", "jobTitle"),
    ("metadata", "metadata"),
    ("created", "created"),
    ("updated", "updated"),
    ("modified", "modified"),
    ("status", "status"),
    ("user_id", "userId"),
    ("abandon_reason", "abandonReason"),
    ("username", "username"),
    ("workflow_name", "workflowName"),
)


def exclusion_json(exclusion: Exclusion) -> dict[str, Json]:
    """An exclusion as the body (and the changelog) carries it."""
    return {
        "userId": exclusion.user_id,
        "reason": exclusion.reason,
        "isExcluded": exclusion.is_excluded,
    }


def kept_step(wrapper: StepWrapper) -> Step:
    """What a job state keeps of a step: its ordering key and its body text."""
    return Step(order_of(wrapper), wrapper.single_step.unique_step_id or "", step_text(wrapper))


# --- the changelog value -------------------------------------------------------------------


_LAYOUT_PREFIX = '{"layout":'
#: What follows the layout: ``client_job_id`` is always written, first after it. A JSON string
#: cannot hold it unescaped, so its first place in the value is the end of the layout.
_AFTER_LAYOUT = ',"client_job_id":'
_CURRENT = ',"currentStep":'
_COMPLETED = '},"completedSteps":['
_CANCELLED = '],"cancelledSteps":['
_END = "]}}"


def encode_state(state: JobState) -> bytes:
    """The changelog value of ``state``: one encoding of the head with the kept texts as they
    are (``orjson.Fragment``).

    The fast reader parses the layout and the head with orjson, which reads an integer beyond
    64 bits as a float. A state with one there (in ``hierarchyStack``, a step number, or a
    retractable ``currentStep``, all unlikely) is written without the layout, so that it is
    read by the validating reader, which keeps such integers exact.
    """
    try:
        return orjson.dumps(_value(state, laid_out=True))
    except _NotExact:
        return orjson.dumps(_value(state, laid_out=False))


class _NotExact(ValueError):
    """A part of the head that orjson would not read back exactly."""


def _value(state: JobState, *, laid_out: bool) -> dict[str, Any]:
    document = state.document
    meta = document.metadata
    current = meta.current_step or "null"
    completed, cancelled = document.completed_steps, document.cancelled_steps
    value: dict[str, Any] = {}
    if laid_out:
        value["layout"] = {
            "currentStep": len(current),
            "completedSteps": [_step_layout(s) for s in completed],
            "cancelledSteps": [_step_layout(s) for s in cancelled],
        }
        if state.retractable and not all(
            v is None or _exact(v) for _, _, v, _ in state.retractable.get("currentStep", ())
        ):
            raise _NotExact("a retractable currentStep")
    value.update(_bookkeeping(state))
    stored = _document_fields(document, laid_out=laid_out)
    metadata: dict[str, Any] = {"clientJobId": meta.client_job_id}
    for name, key in METADATA_NAMES[1:]:
        field_value = getattr(meta, name)
        if field_value is not None:
            metadata[key] = field_value
    metadata["currentStep"] = orjson.Fragment(current)
    stored["metadata"] = metadata
    stored["completedSteps"] = [orjson.Fragment(s.json) for s in completed]
    stored["cancelledSteps"] = [orjson.Fragment(s.json) for s in cancelled]
    value["document"] = stored
    return value


def _exact(text: str) -> bool:
    """orjson reads ``text`` back as values that encode to ``text`` again."""
    return json_text(orjson.loads(text)) == text


def _step_layout(step: Step) -> list[Json]:
    no_number, number, no_time, time, uid = step.order
    if not -(2**63) <= number < 2**63:
        raise _NotExact("a step number beyond 64 bits")
    return [len(step.json), None if no_number else number, None if no_time else time, uid]


def _bookkeeping(state: JobState) -> dict[str, Any]:
    """The head fields, those at their default left out (as the value before this layout)."""
    out: dict[str, Any] = {"client_job_id": state.client_job_id}
    if state.version:
        out["version"] = state.version
    if state.seen_event_ids:
        out["seen_event_ids"] = state.seen_event_ids
    if state.synced_version:
        out["synced_version"] = state.synced_version
    if state.synced_sha256 is not None:
        out["synced_sha256"] = state.synced_sha256
    if state.job_id is not None:
        out["job_id"] = state.job_id
    if state.first_unsynced_at is not None:
        out["first_unsynced_at"] = state.first_unsynced_at.isoformat()
    out["updated_at"] = state.updated_at.isoformat()
    if state.synced_at is not None:
        out["synced_at"] = state.synced_at.isoformat()
    if state.arrivals:
        out["arrivals"] = state.arrivals
    if state.latest_time:
        out["latest_time"] = state.latest_time
    if state.clocks:
        out["clocks"] = group_clocks(state.clocks)
    if state.terminal_clock is not None:
        out["terminal_clock"] = state.terminal_clock
    if state.exclusion_clocks:
        out["exclusion_clocks"] = state.exclusion_clocks
    if state.retractable:
        # ``[time, arrival, value, retractable]``; a currentStep value is written as its object
        # (the text itself), as the previous version reads it.
        out["retractable"] = {
            path: [
                [t, a, orjson.Fragment(v or "null") if path == "currentStep" else v, f]
                for t, a, v, f in state.retractable[path]
            ]
            for path in sorted(state.retractable)
        }
    if state.sending_since is not None:
        out["sending_since"] = state.sending_since.isoformat()
    if state.too_large:
        out["too_large"] = True
    return out


def _document_fields(document: Document, *, laid_out: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if document.team is not None:
        out["team"] = document.team
    if document.hierarchy_stack is not None:
        text = json_text(document.hierarchy_stack)
        if laid_out and not _exact(text):
            raise _NotExact("hierarchyStack")
        out["hierarchyStack"] = orjson.Fragment(text)
    if document.packet_ids is not None:
        out["packetIds"] = document.packet_ids
    if document.job_exclusion:
        out["jobExclusion"] = [exclusion_json(e) for e in document.job_exclusion]
    if document.excluded:
        out["excluded"] = True
    return out


def decode_state(data: bytes) -> JobState:
    """A changelog value of this layout, or (slower, validated) of any earlier one."""
    if data.startswith(b'{"layout":'):
        try:
            return _decode_laid_out(data.decode())
        except (ValueError, TypeError, KeyError, IndexError):
            pass  # a layout that does not match its text: the validating reader decides
    return decode_validated(data)


def decode_validated(data: bytes) -> JobState:
    """Validate a changelog value of any form and make the plain state of it (the slow path).

    Raises ``pydantic.ValidationError`` (a ``ValueError``) when it is not a job state.
    """
    return _from_stored(StoredJobState.model_validate_json(data))


def _decode_laid_out(text: str) -> JobState:
    end = text.index(_AFTER_LAYOUT, len(_LAYOUT_PREFIX))
    layout = orjson.loads(text[len(_LAYOUT_PREFIX) : end])
    if not text.endswith(_END):
        raise ValueError("the value does not end as laid out")
    # The texts, from the end: cancelled steps, completed steps, currentStep.
    at = len(text) - len(_END)
    cancelled, at = _steps(text, at, layout["cancelledSteps"], _CANCELLED)
    completed, at = _steps(text, at, layout["completedSteps"], _COMPLETED)
    current = text[at - layout["currentStep"] : at]
    at -= len(current) + len(_CURRENT)
    if not text.startswith(_CURRENT, at) or not (current == "null" or current[:1] == "{"):
        raise ValueError("the layout does not match the text")
    # The head alone is parsed: the bookkeeping, the document's fields and its metadata.
    head = orjson.loads("{" + text[end + 1 : at] + "}}}")
    stored = head["document"]
    meta = stored["metadata"]
    metadata = Metadata(
        client_job_id=meta.get("clientJobId"),
        workflow_id=meta.get("workflowId"),
        workflow_version_id=meta.get("workflowVersionId"),
        job_title=meta.get("jobTitle"),
        metadata=meta.get("metadata"),
        created=meta.get("created"),
        updated=meta.get("updated"),
        modified=meta.get("modified"),
        status=meta.get("status"),
        user_id=meta.get("userId"),
        current_step=None if current == "null" else current,
        abandon_reason=meta.get("abandonReason"),
        username=meta.get("username"),
        workflow_name=meta.get("workflowName"),
    )
    document = Document(
        metadata=metadata,
        completed_steps=completed,
        cancelled_steps=cancelled,
        team=stored.get("team"),
        hierarchy_stack=stored.get("hierarchyStack"),
        packet_ids=stored.get("packetIds"),
        job_exclusion=tuple(
            Exclusion(e["userId"], e["reason"], e["isExcluded"])
            for e in stored.get("jobExclusion", ())
        ),
        excluded=stored.get("excluded", False),
    )
    return _state_from_head(head, document)


def _steps(
    text: str, end: int, layout: list[list[Any]], opening: str
) -> tuple[tuple[Step, ...], int]:
    """The texts of one step list ending at ``end``, and where its ``opening`` starts."""
    steps = []
    for length, number, time, uid in reversed(layout):
        begin = end - length
        order = (number is None, number or 0, time is None, time or 0.0, uid)
        steps.append(Step(order, uid, text[begin:end]))
        end = begin - 1
    start = end + (1 if steps else 0) - len(opening)
    # The lengths add up to the texts between the literals around them; the texts themselves
    # were written by this layout's writer, so each is where its length says.
    if not text.startswith(opening, start):
        raise ValueError("the layout does not match the text")
    steps.reverse()
    return tuple(steps), start


def _state_from_head(head: dict[str, Any], document: Document) -> JobState:
    """The state of a parsed head of this layout around ``document``.

    A ``currentStep`` candidate is stored as its JSON object; encoding it again gives its text
    back, as every step text was made by the same encoder (:func:`json_text`).
    """
    return JobState(
        client_job_id=head["client_job_id"],
        document=document,
        version=head.get("version", 0),
        seen_event_ids=tuple(head.get("seen_event_ids", ())),
        synced_version=head.get("synced_version", 0),
        synced_sha256=head.get("synced_sha256"),
        job_id=head.get("job_id"),
        first_unsynced_at=_datetime(head.get("first_unsynced_at")),
        updated_at=datetime.fromisoformat(head["updated_at"]),
        synced_at=_datetime(head.get("synced_at")),
        arrivals=head.get("arrivals", 0),
        latest_time=head.get("latest_time", ""),
        clocks=ungroup_clocks(head["clocks"]) if "clocks" in head else {},
        terminal_clock=_clock(head.get("terminal_clock")),
        exclusion_clocks=tuple(map(_clock, head["exclusion_clocks"]))
        if "exclusion_clocks" in head
        else (),
        retractable=_retractable(head["retractable"]) if "retractable" in head else {},
        sending_since=_datetime(head.get("sending_since")),
        too_large=head.get("too_large", False),
    )


def _retractable(stored: dict[str, list[list[Any]]]) -> dict[str, tuple[Candidate, ...]]:
    return {
        path: tuple(
            (
                time,
                arrival,
                json_text(value) if path == "currentStep" and value is not None else value,
                flag,
            )
            for time, arrival, value, flag in writes
        )
        for path, writes in stored.items()
    }


def ungroup_clocks(grouped: dict[str, list[str]]) -> dict[str, Clock]:
    """:attr:`JobState.clocks` from its stored form (see :func:`group_clocks`)."""
    clocks: dict[str, Clock] = {}
    for key, paths in grouped.items():
        time, _, arrival = key.rpartition(" ")
        clocks.update(dict.fromkeys(paths, (time, int(arrival))))  # one tuple per event
    return clocks


def _clock(value: Any) -> Any:
    return None if value is None else (value[0], value[1])


def _datetime(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _from_stored(stored: StoredJobState) -> JobState:
    """The plain state of a validated changelog value of any form."""
    document = stored.document
    meta = document.metadata
    metadata = Metadata(
        client_job_id=meta.client_job_id,
        workflow_id=meta.workflow_id,
        workflow_version_id=meta.workflow_version_id,
        job_title=meta.job_title,
        metadata=None if meta.metadata is None else dict(sorted(meta.metadata.items())),
        created=meta.created,
        updated=meta.updated,
        modified=meta.modified,
        status=meta.status,
        user_id=meta.user_id,
        current_step=None if meta.current_step is None else step_text(meta.current_step),
        abandon_reason=meta.abandon_reason,
        username=meta.username,
        workflow_name=meta.workflow_name,
    )
    return JobState(
        client_job_id=stored.client_job_id,
        document=Document(
            metadata=metadata,
            completed_steps=tuple(kept_step(s) for s in document.completed_steps),
            cancelled_steps=tuple(kept_step(s) for s in document.cancelled_steps),
            team=document.team,
            hierarchy_stack=document.hierarchy_stack,
            packet_ids=document.packet_ids,
            job_exclusion=tuple(
                Exclusion(e.user_id, e.reason, e.is_excluded) for e in document.job_exclusion
            ),
            excluded=document.excluded,
        ),
        version=stored.version,
        seen_event_ids=stored.seen_event_ids,
        synced_version=stored.synced_version,
        synced_sha256=stored.synced_sha256,
        job_id=stored.job_id,
        first_unsynced_at=stored.first_unsynced_at,
        updated_at=stored.updated_at,
        synced_at=stored.synced_at,
        arrivals=stored.arrivals,
        latest_time=stored.latest_time,
        clocks=dict(stored.clocks),
        terminal_clock=stored.terminal_clock,
        exclusion_clocks=stored.exclusion_clocks,
        retractable={
            path: tuple(_candidate(path, write) for write in writes)
            for path, writes in stored.retractable.items()
        },
        sending_since=stored.sending_since,
        too_large=stored.too_large,
    )


def _candidate(path: str, write: tuple[str, int, Any, bool]) -> Candidate:
    time, arrival, value, flag = write
    if value is None:
        return (time, arrival, None, flag)
    if path == "currentStep":
        return (time, arrival, step_text(StepWrapper.model_validate(value)), flag)
    if not isinstance(value, str):
        raise ValueError(f"retractable write of {path} is not text: {value!r}")
    return (time, arrival, value, flag)
