"""The changelog value of a job state: how it is written and read back.

The value is JSON, laid out so that writing is text composition and reading takes the texts
it holds without parsing them::

    {"layout":{"version":2,"currentStep":L,"clocks":L,
               "completedSteps":[[L,number,time,uniqueStepId],..],"cancelledSteps":[..]},
     "client_job_id":...,"clocks":<text>,
     <the other bookkeeping fields, those at their default left out>,
     "document":{<team, hierarchyStack, packetIds, jobExclusion, excluded when set>,
                 "metadata":{"clientJobId":..., <fields set>, "currentStep":<text>},
                 "completedSteps":[<text>,..],"cancelledSteps":[<text>,..]}}

``layout`` gives the length of each text (``L``, in characters): the field clocks right after
``client_job_id`` (0: none), the texts at the end of the value (``currentStep``, then every
step), and each step's ordering key. So the reader parses only the rest of the head (the
bookkeeping and the metadata) and slices the texts (packing each step's for the state to
hold): the text read back is the text written, so
bodies hash alike before and after a restore, and the value of a job restored and written again
is the value read. The field clocks stay text (:class:`StoredClocks`) until the reducer reads
them at the job's next event: most restored jobs have ended and never do.

Everything else reads like the values before this layout (snake_case bookkeeping, the document
in the body's camelCase names, which that reader accepts too), so a consumer of the previous
version reads it during a rolling upgrade: layout 1 (no ``version``, no clocks length, the clocks
among the bookkeeping) is this layout without what it adds, and its reader ignores both.
Values of layout 1 are read here too, with their clocks parsed. Values that do not start with
``{"layout":`` (written before any layout), or whose layout does not match their text, are read
by the slower, validating path (:func:`decode_validated`, with ``consumer.domain.state_schema``,
which also describes every field for the published JSON Schema).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel

from consumer.domain.document import StepWrapper, step_text
from consumer.domain.state import (
    METADATA_NAMES,
    Candidate,
    Clock,
    Document,
    Exclusion,
    JobState,
    Json,
    Metadata,
    Step,
    exclusion_json,
    json_text,
    kept_step,
    step_json,
)
from consumer.domain.state_schema import StoredDocument, StoredJobState, group_clocks
from consumer.domain.step_packing import pack_step_text
from consumer.domain.value_compression import decompressed

#: The layout this module writes; it reads this one and layout 1.
LAYOUT_VERSION = 2
_LAYOUT_PREFIX = '{"layout":'
#: What follows the layout: ``client_job_id`` is always written, first after it. A JSON string
#: cannot hold it unescaped, so its first place in the value is the end of the layout.
_AFTER_LAYOUT = ',"client_job_id":'
#: What follows ``client_job_id`` (a string, which cannot hold it unescaped either) when the
#: state holds field clocks.
_CLOCKS = ',"clocks":'
_CURRENT = ',"currentStep":'
_COMPLETED = '},"completedSteps":['
_CANCELLED = '],"cancelledSteps":['
_END = "]}}"
#: Makes a named tuple from its values without the Python-level ``__new__`` (one per step).
_new_tuple = tuple.__new__


# --- writing -------------------------------------------------------------------------------


def encode_state(state: JobState, parts: ValueParts | None = None) -> bytes:
    """The changelog value of ``state``: its head and document (:class:`ValueParts`, taken
    from ``parts`` when they fit the state, made otherwise) around its bookkeeping.

    The head and the document are most of the cost (every step's text is unpacked, the field
    clocks grouped); between a job's intent and its settled state only the bookkeeping
    changes, so the checkpoint hands the intent's parts to the settled write.
    """
    if parts is None or not parts.fits(state):
        parts = value_parts(state)
    return b"".join((parts.head, orjson.dumps(_bookkeeping(state))[1:-1], parts.tail))


@dataclass(frozen=True, slots=True)
class ValueParts:
    """The text of a changelog value before its bookkeeping (``head``, through the field
    clocks and a comma) and after it (``tail``, the document and the closing brace), with what
    they were made from: a state that holds the same objects has the same parts.

    Made with orjson from the same dicts one encoding of the whole value would use, in the
    same order, so the value is byte for byte that encoding.
    """

    client_job_id: str
    document: Document
    clocks: Mapping[str, Clock]
    retractable: Mapping[str, tuple[Candidate, ...]]
    head: bytes
    tail: bytes

    def fits(self, state: JobState) -> bool:
        return (
            state.document is self.document
            and state.clocks is self.clocks
            and state.retractable is self.retractable
            and state.client_job_id == self.client_job_id
        )


def value_parts(state: JobState) -> ValueParts:
    """The head and tail of ``state``'s value.

    The fast reader parses the layout and the head with orjson, which reads an integer beyond
    64 bits as a float. A state with one there (in ``hierarchyStack``, a step number, or a
    retractable ``currentStep``, all unlikely) is written without the layout, so that it is
    read by the validating reader, which keeps such integers exact.
    """
    texts = (
        list(map(step_json, state.document.completed_steps)),
        list(map(step_json, state.document.cancelled_steps)),
    )
    try:
        head = _head(state, texts, laid_out=True)
        document = _document(state.document, texts, laid_out=True)
    except _NotExact:
        head = _head(state, texts, laid_out=False)
        document = _document(state.document, texts, laid_out=False)
    return ValueParts(
        state.client_job_id,
        state.document,
        state.clocks,
        state.retractable,
        orjson.dumps(head)[:-1] + b",",
        b',"document":' + orjson.dumps(document) + b"}",
    )


class _NotExact(ValueError):
    """A part of the head that orjson would not read back exactly."""


def _head(state: JobState, texts: tuple[list[str], list[str]], *, laid_out: bool) -> dict[str, Any]:
    """The value's fields before the bookkeeping: the layout (with the lengths of the step
    ``texts``, completed then cancelled), the key and the field clocks."""
    document = state.document
    current = document.metadata.current_step or "null"
    value: dict[str, Any] = {}
    clocks, clocks_length = _clocks_text(state.clocks)
    if laid_out:
        completed, cancelled = document.completed_steps, document.cancelled_steps
        value["layout"] = {
            "version": LAYOUT_VERSION,
            "currentStep": len(current),
            "clocks": clocks_length,
            "completedSteps": list(map(_step_layout, completed, texts[0])),
            "cancelledSteps": list(map(_step_layout, cancelled, texts[1])),
        }
        if state.retractable and not all(
            v is None or _exact(v) for _, _, v, _ in state.retractable.get("currentStep", ())
        ):
            raise _NotExact("a retractable currentStep")
    value["client_job_id"] = state.client_job_id
    if clocks is not None:
        value["clocks"] = clocks
    return value


def _document(
    document: Document, texts: tuple[list[str], list[str]], *, laid_out: bool
) -> dict[str, Any]:
    """The value's ``document``: the step ``texts`` (and ``currentStep``) as they are held."""
    meta = document.metadata
    stored = _document_fields(document, laid_out=laid_out)
    metadata: dict[str, Any] = {"clientJobId": meta.client_job_id}
    for name, key in METADATA_NAMES[1:]:
        field_value = getattr(meta, name)
        if field_value is not None:
            metadata[key] = field_value
    metadata["currentStep"] = orjson.Fragment(meta.current_step or "null")
    stored["metadata"] = metadata
    stored["completedSteps"] = list(map(orjson.Fragment, texts[0]))
    stored["cancelledSteps"] = list(map(orjson.Fragment, texts[1]))
    return stored


def _exact(text: str) -> bool:
    """orjson reads ``text`` back as values that encode to ``text`` again."""
    return json_text(orjson.loads(text)) == text


def _step_layout(step: Step, text: str) -> list[Json]:
    no_number, number, no_time, time, uid, _ = step
    if not -(2**63) <= number < 2**63:
        raise _NotExact("a step number beyond 64 bits")
    return [len(text), None if no_number else number, None if no_time else time, uid]


def _clocks_text(clocks: Mapping[str, Clock]) -> tuple[orjson.Fragment | None, int]:
    """The stored form of the field clocks as encoded text (None when there are none; a
    restored state's own text), and its length in characters."""
    if type(clocks) is StoredClocks:  # not isinstance: an ABC's check costs a lookup per write
        return orjson.Fragment(clocks.text), len(clocks.text)
    if not clocks:
        return None, 0
    text = orjson.dumps(group_clocks(clocks))
    return orjson.Fragment(text), len(text) if text.isascii() else len(text.decode())


def _bookkeeping(state: JobState) -> dict[str, Any]:
    """The head fields after the clocks, those at their default left out (as the value before
    this layout)."""
    out: dict[str, Any] = {}
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


# --- reading -------------------------------------------------------------------------------


def decode_state(data: bytes) -> JobState:
    """A changelog value of this layout, or (slower, validated) of any earlier one.

    A value compressed alone (``consumer.domain.value_compression``) is decompressed first.
    Raises ``ValueError`` (a ``pydantic.ValidationError`` among them) when it is no job state.
    """
    data = decompressed(data)
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
    """Parse the layout, slice the texts from the end (cancelled steps, completed steps, then
    currentStep) and the clocks after ``client_job_id``, and parse what is left of the head."""
    end = text.index(_AFTER_LAYOUT, len(_LAYOUT_PREFIX))
    layout = orjson.loads(text[len(_LAYOUT_PREFIX) : end])
    if layout.get("version", 1) not in (1, LAYOUT_VERSION):
        raise ValueError("a layout this version does not know")
    if not text.endswith(_END):
        raise ValueError("the value does not end as laid out")
    cancelled, at = _steps(text, len(text) - len(_END), layout["cancelledSteps"], _CANCELLED)
    completed, at = _steps(text, at, layout["completedSteps"], _COMPLETED)
    length = layout["currentStep"]
    current = text[at - length : at]
    at -= length + len(_CURRENT)
    if not text.startswith(_CURRENT, at) or not (current == "null" or current[:1] == "{"):
        raise ValueError("the layout does not match the text")
    head_text, clocks = _head_and_clocks(text, end + 1, at, layout.get("clocks", 0))
    head = orjson.loads("{" + head_text + "}}}")
    stored = head["document"]
    document = Document(
        _metadata(stored["metadata"], None if current == "null" else current),
        completed,
        cancelled,
        stored.get("team"),
        stored.get("hierarchyStack"),
        stored.get("packetIds"),
        _exclusions(stored["jobExclusion"]) if "jobExclusion" in stored else (),
        stored.get("excluded", False),
    )
    return _state_from_head(head, document, clocks)


def _head_and_clocks(
    text: str, start: int, stop: int, length: int
) -> tuple[str, StoredClocks | None]:
    """The head's text between ``start`` and ``stop`` without the field clocks, and the clocks
    as text (None when the layout gives no length: none, or layout 1, whose head holds them)."""
    if not length:
        return text[start:stop], None
    begin = text.index(_CLOCKS, start, stop) + len(_CLOCKS)
    finish = begin + length
    if text[begin] != "{" or text[finish - 1] != "}" or text[finish] != ",":
        raise ValueError("the layout does not match the text")
    return text[start : begin - len(_CLOCKS)] + text[finish:stop], StoredClocks(text[begin:finish])


def _steps(
    text: str, end: int, layout: list[list[Any]], opening: str
) -> tuple[tuple[Step, ...], int]:
    """The texts of one step list ending at ``end``, and where its ``opening`` starts.

    The lengths add up to the texts between the literals around them; the texts themselves were
    written by this layout's writer, so each is where its length says.
    """
    steps = []
    for length, number, time, uid in reversed(layout):
        begin = end - length
        packed = pack_step_text(text[begin:end])
        fields = (number is None, number or 0, time is None, time or 0.0, uid, packed)
        steps.append(_new_tuple(Step, fields))
        end = begin - 1
    start = end + (1 if steps else 0) - len(opening)
    if not text.startswith(opening, start):
        raise ValueError("the layout does not match the text")
    steps.reverse()
    return tuple(steps), start


def _metadata(meta: dict[str, Any], current: str | None) -> Metadata:
    get = meta.get
    return Metadata(
        get("clientJobId"),
        get("workflowId"),
        get("workflowVersionId"),
        get("jobTitle"),
        get("metadata"),
        get("created"),
        get("updated"),
        get("modified"),
        get("status"),
        get("userId"),
        current,
        get("abandonReason"),
        get("username"),
        get("workflowName"),
    )


def _exclusions(stored: list[dict[str, Any]]) -> tuple[Exclusion, ...]:
    return tuple(Exclusion(e["userId"], e["reason"], e["isExcluded"]) for e in stored)


def _state_from_head(
    head: dict[str, Any], document: Document, clocks: StoredClocks | None
) -> JobState:
    """The state of a parsed head around ``document``, with ``clocks`` when they were cut out
    of the head."""
    get = head.get
    held: Mapping[str, Clock] = clocks if clocks is not None else {}
    if clocks is None and "clocks" in head:
        held = ungroup_clocks(head["clocks"])
    return JobState(
        client_job_id=head["client_job_id"],
        document=document,
        version=get("version", 0),
        seen_event_ids=tuple(head["seen_event_ids"]) if "seen_event_ids" in head else (),
        synced_version=get("synced_version", 0),
        synced_sha256=get("synced_sha256"),
        job_id=get("job_id"),
        first_unsynced_at=_datetime(get("first_unsynced_at")),
        updated_at=datetime.fromisoformat(head["updated_at"]),
        synced_at=_datetime(get("synced_at")),
        arrivals=get("arrivals", 0),
        latest_time=get("latest_time", ""),
        clocks=held,
        terminal_clock=_clock(get("terminal_clock")),
        exclusion_clocks=tuple(map(tuple, head["exclusion_clocks"]))
        if "exclusion_clocks" in head
        else (),
        retractable=_retractable(head["retractable"]) if "retractable" in head else {},
        sending_since=_datetime(get("sending_since")),
        too_large=get("too_large", False),
    )


class StoredClocks(Mapping[str, Clock]):
    """:attr:`JobState.clocks` of a restored job: the text its changelog value holds, grouped by
    event (see ``group_clocks``), read on first use.

    Only the reducer reads the clocks, at the job's next event; a restored job that has ended
    gets none, so most never pay for the parse nor hold a dict and a tuple per event. The state
    holding them never changes, so neither do they: the text is what a write of it stores.
    """

    __slots__ = ("_clocks", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._clocks: dict[str, Clock] | None = None

    def _read(self) -> dict[str, Clock]:
        if self._clocks is None:
            self._clocks = ungroup_clocks(orjson.loads(self.text))
        return self._clocks

    def __getitem__(self, path: str) -> Clock:
        return self._read()[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())

    def __repr__(self) -> str:
        return f"StoredClocks({self._read()!r})"


def ungroup_clocks(grouped: dict[str, list[str]]) -> dict[str, Clock]:
    """:attr:`JobState.clocks` from its stored form (see ``group_clocks``): the paths an
    event wrote share its one clock tuple."""
    clocks: dict[str, Clock] = {}
    for key, paths in grouped.items():
        time, _, arrival = key.rpartition(" ")
        clock = (time, int(arrival))
        for path in paths:
            clocks[path] = clock
    return clocks


def _retractable(stored: dict[str, list[list[Any]]]) -> dict[str, tuple[Candidate, ...]]:
    """A ``currentStep`` candidate is stored as its JSON object; encoding it again gives its
    text back, as every step text was made by the same encoder (``json_text``)."""
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


def _clock(value: list[Any] | None) -> Any:
    return None if value is None else (value[0], value[1])


def _datetime(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _from_stored(stored: BaseModel) -> JobState:
    """The plain state of a validated changelog value of any form: every field as validated
    but the document, the clocks and the retractable writes."""
    values = dict(stored)
    del values["layout"]
    document: StoredDocument = values.pop("document")
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
    values["document"] = Document(
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
    )
    values["clocks"] = dict(values["clocks"])
    values["retractable"] = {
        path: tuple(_candidate(path, write) for write in writes)
        for path, writes in values["retractable"].items()
    }
    return JobState(**values)


def _candidate(path: str, write: tuple[str, int, Any, bool]) -> Candidate:
    time, arrival, value, flag = write
    if value is None:
        return (time, arrival, None, flag)
    if path == "currentStep":
        return (time, arrival, step_text(StepWrapper.model_validate(value)), flag)
    if not isinstance(value, str):
        raise ValueError(f"retractable write of {path} is not text: {value!r}")
    return (time, arrival, value, flag)
