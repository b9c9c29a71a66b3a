"""A job's state as plain, typed, frozen data, and its changelog value.

The reducer (``consumer.domain.job``) folds events into :class:`JobState`; the request body
(``consumer.domain.basicsync``) and the changelog value (:meth:`JobState.to_json_bytes`) are
composed from its parts. Each step is kept as its ordering key and its JSON text exactly as the
body carries it (:class:`Step`), made once when its event is decoded and never parsed or
encoded again while it lives; ``currentStep`` is kept as text too. pydantic stays at the
boundaries (events in, the published schema, the slow reader of older changelog values).

**The changelog value** is JSON, laid out so that writing is text composition and reading takes
the step texts without parsing them::

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
slower, validating path of ``consumer.domain.state_schema``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: Strict, compact UTF-8 JSON, keys in insertion order: the one encoder of the body's texts.
JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
json_text = JSON_ENCODER.encode
_DECODER = json.JSONDecoder()

#: ``(time, arrival)`` of an event: UTC time as fixed-width text (``2026-01-01T10:00:00.000000Z``;
#: empty for an event without time before any with), then its arrival number within the job.
#: Tuple order is the order of assembly.
Clock = tuple[str, int]
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


# --- the changelog value ----------------------------------------------------------------------

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
_LAYOUT_PREFIX = '{"layout":'
_CURRENT = ',"currentStep":'
_COMPLETED = '},"completedSteps":['
_CANCELLED = '],"cancelledSteps":['
_END = "]}}"


def encode_state(state: JobState) -> bytes:
    """The changelog value of ``state``: the kept texts composed with the encoded head."""
    document = state.document
    meta = document.metadata
    current = meta.current_step or "null"
    completed, cancelled = document.completed_steps, document.cancelled_steps
    layout = {
        "currentStep": len(current),
        "completedSteps": [_step_layout(s) for s in completed],
        "cancelledSteps": [_step_layout(s) for s in cancelled],
    }
    head = json_text(_bookkeeping(state))[:-1]
    if state.retractable:
        head += ',"retractable":' + _retractable_json(state.retractable)
    fields = json_text(_document_fields(document))[:-1]
    metadata: dict[str, Any] = {"clientJobId": meta.client_job_id}
    for name, key in METADATA_NAMES[1:]:
        value = getattr(meta, name)
        if value is not None:
            metadata[key] = value
    return "".join(
        (
            _LAYOUT_PREFIX,
            json_text(layout),
            ",",
            head[1:],
            ',"document":',
            fields,
            "," if len(fields) > 1 else "",
            '"metadata":',
            json_text(metadata)[:-1],
            _CURRENT,
            current,
            _COMPLETED,
            ",".join(s.json for s in completed),
            _CANCELLED,
            ",".join(s.json for s in cancelled),
            _END,
        )
    ).encode()


def _step_layout(step: Step) -> list[Json]:
    no_number, number, no_time, time, uid = step.order
    return [len(step.json), None if no_number else number, None if no_time else time, uid]


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


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
    if state.sending_since is not None:
        out["sending_since"] = state.sending_since.isoformat()
    if state.too_large:
        out["too_large"] = True
    return out


def group_clocks(clocks: dict[str, Clock]) -> dict[str, list[str]]:
    """Stored form of :attr:`JobState.clocks`: ``"<time> <arrival>"`` -> the paths it holds.

    One event usually writes many fields (a first upsert about 15), so this is about a third
    smaller than one ``[time, arrival]`` per path. Ordered by clock, paths sorted: equal states
    give equal bytes.
    """
    by_clock: dict[Clock, list[str]] = {}
    for path, clock in clocks.items():  # group first: sorting ~13 clocks beats ~40 paths
        by_clock.setdefault(clock, []).append(path)
    return {f"{clock[0]} {clock[1]}": sorted(by_clock[clock]) for clock in sorted(by_clock)}


def _retractable_json(retractable: dict[str, tuple[Candidate, ...]]) -> str:
    """``{path: [[time, arrival, value, retractable], ..]}``; a ``currentStep`` value is written
    as its JSON object (the text itself), as the previous version reads it."""
    parts = []
    for path in sorted(retractable):
        writes = []
        for time, arrival, value, flag in retractable[path]:
            text = (value or "null") if path == "currentStep" else json_text(value)
            writes.append(f"[{json_text(time)},{arrival},{text},{json_text(flag)}]")
        parts.append(f"{json_text(path)}:[{','.join(writes)}]")
    return "{" + ",".join(parts) + "}"


def _document_fields(document: Document) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if document.team is not None:
        out["team"] = document.team
    if document.hierarchy_stack is not None:
        out["hierarchyStack"] = document.hierarchy_stack
    if document.packet_ids is not None:
        out["packetIds"] = document.packet_ids
    if document.job_exclusion:
        out["jobExclusion"] = [exclusion_json(e) for e in document.job_exclusion]
    if document.excluded:
        out["excluded"] = True
    return out


def exclusion_json(exclusion: Exclusion) -> dict[str, Json]:
    """An exclusion as the body (and the changelog) carries it."""
    return {
        "userId": exclusion.user_id,
        "reason": exclusion.reason,
        "isExcluded": exclusion.is_excluded,
    }


def decode_state(data: bytes) -> JobState:
    """A changelog value of this layout, or (slower, validated) of any earlier one."""
    if data.startswith(b'{"layout":'):
        try:
            return _decode_laid_out(data.decode())
        except (ValueError, TypeError, KeyError, IndexError):
            pass  # a layout that does not match its text: the validating reader decides
    from consumer.domain.state_schema import decode_validated

    return decode_validated(data)


def _decode_laid_out(text: str) -> JobState:
    layout, end = _DECODER.raw_decode(text, len(_LAYOUT_PREFIX))
    if text[end] != ",":
        raise ValueError("no head after the layout")
    current_length: int = layout["currentStep"]
    completed_layout: list[list[Any]] = layout["completedSteps"]
    cancelled_layout: list[list[Any]] = layout["cancelledSteps"]
    texts = (
        len(_CURRENT)
        + current_length
        + len(_COMPLETED)
        + _list_length(completed_layout)
        + len(_CANCELLED)
        + _list_length(cancelled_layout)
        + len(_END)
    )
    start = len(text) - texts
    if start <= end or not text.startswith(_CURRENT, start):
        raise ValueError("the layout does not match the text")
    at = start + len(_CURRENT)
    current = text[at : at + current_length]
    at = _expect(text, at + current_length, _COMPLETED)
    completed, at = _steps(text, at, completed_layout)
    at = _expect(text, at, _CANCELLED)
    cancelled, at = _steps(text, at, cancelled_layout)
    if at != len(text) - len(_END) or not (current == "null" or current[:1] == "{"):
        raise ValueError("the layout does not match the text")
    head = json.loads("{" + text[end + 1 : start] + "}}}")
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
    return state_from_head(head, document)


def _list_length(layout: list[list[Any]]) -> int:
    """Characters of a step list's texts with their commas."""
    lengths: list[int] = [entry[0] for entry in layout]
    return sum(lengths) + max(len(layout) - 1, 0)


def _expect(text: str, at: int, literal: str) -> int:
    if not text.startswith(literal, at):
        raise ValueError("the layout does not match the text")
    return at + len(literal)


def _steps(text: str, at: int, layout: list[list[Any]]) -> tuple[tuple[Step, ...], int]:
    steps = []
    for n, (length, number, time, uid) in enumerate(layout):
        if n:
            at = _expect(text, at, ",")
        step = text[at : at + length]
        if step[:1] != "{" or step[-1:] != "}" or not isinstance(uid, str):
            raise ValueError("the layout does not match the text")
        order = (number is None, number or 0, time is None, time or 0.0, uid)
        steps.append(Step(order, uid, step))
        at += length
    return tuple(steps), at


def state_from_head(head: dict[str, Any], document: Document) -> JobState:
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
        clocks=ungroup_clocks(head.get("clocks", {})),
        terminal_clock=_clock(head.get("terminal_clock")),
        exclusion_clocks=tuple(_clock(c) for c in head.get("exclusion_clocks", ())),
        retractable={
            path: tuple(
                (
                    time,
                    arrival,
                    json_text(value) if path == "currentStep" and value is not None else value,
                    flag,
                )
                for time, arrival, value, flag in writes
            )
            for path, writes in head.get("retractable", {}).items()
        },
        sending_since=_datetime(head.get("sending_since")),
        too_large=head.get("too_large", False),
    )


def ungroup_clocks(grouped: dict[str, list[str]]) -> dict[str, Clock]:
    """:attr:`JobState.clocks` from its stored form (see :func:`group_clocks`)."""
    clocks: dict[str, Clock] = {}
    for key, paths in grouped.items():
        time, _, arrival = key.rpartition(" ")
        clock = (time, int(arrival))  # one tuple per event, shared by its paths
        for path in paths:
            clocks[_PATHS.get(path, path)] = clock
    return clocks


def _clock(value: Any) -> Any:
    return None if value is None else (value[0], value[1])


def _datetime(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


#: The paths of metadata and document fields: one string shared by every restored state.
_PATHS = {
    path: path
    for path in (
        *(key for _, key in METADATA_NAMES),
        "currentStep",
        "team",
        "hierarchyStack",
        "packetIds",
    )
}
