"""A job state's changelog value: composed from the kept texts, read without parsing them.

The changelog value is JSON, laid out so that writing is text composition and reading takes
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

from datetime import datetime
from typing import Any

import orjson

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
)

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
    from consumer.domain.state_schema import decode_validated

    return decode_validated(data)


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
