"""A job's state as plain, typed, immutable data: what the reducer folds events into.

The reducer (``consumer.domain.job``) folds events into :class:`JobState`; the request body
(``consumer.domain.basicsync``) and the changelog value (``consumer.domain.state_codec``) are
composed from its parts. Each step is kept as its ordering key and its JSON text exactly as the
body carries it (:class:`Step`), made once when its event is decoded (:func:`kept_step`) and
never parsed or encoded again while it lives, only packed (``consumer.domain.step_packing``)
while it is held; ``currentStep`` is kept as text. pydantic
stays at the boundaries (events in, the published schema, the reader of older changelog
values).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import attrgetter
from typing import Any, NamedTuple, TypeVar

import orjson

from consumer.domain.document import StepWrapper, order_of, step_text
from consumer.domain.step_packing import pack_step_text, unpack_step_text

#: ``(time, arrival)`` of an event: UTC time as fixed-width text (``2026-01-01T10:00:00.000000Z``;
#: empty for an event without time before any with), then its arrival number within the job.
#: Tuple order is the order of assembly.
Clock = tuple[str, int]

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


class Step(NamedTuple):
    """An entry of completedSteps / cancelledSteps: its ordering key and its body JSON text,
    kept packed (``consumer.domain.step_packing``: a step's text is most of a job's memory).

    A named tuple, immutable like the frozen classes here but made in one step: a restore makes
    one for every step of every job, where a frozen dataclass would set each field through
    ``object.__setattr__``. The ordering key is its first five fields (:attr:`order`), kept
    flat rather than as a tuple of its own: a live job holds a dozen steps, and a nested key
    cost another 80-byte tuple each.
    """

    no_number: bool
    number: int
    no_time: bool
    time: float
    unique_step_id: str
    #: ``{"singleStep":{..every field..},"reportStep":..}`` exactly as posted, packed: read it
    #: with :attr:`json`.
    packed: bytes

    @property
    def order(self) -> StepOrder:
        """The step's place in its list (:data:`StepOrder`), made when asked for."""
        return self[:5]

    @property
    def json(self) -> str:
        """The step's body text, unpacked."""
        return unpack_step_text(self.packed)


@dataclass(frozen=True, slots=True)
class Exclusion:
    """An entry of ``jobExclusion``: who excluded (or re-included) the job and why."""

    user_id: str
    reason: str | None
    is_excluded: bool


class Metadata(NamedTuple):
    """The ``metadata`` object of the body, in the body's order. Every field may be unknown.

    A named tuple, as :class:`Step` is: made once per restored job and per event that writes
    metadata.
    """

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


class Document(NamedTuple):
    """The whole assembled job. Empty step lists are posted as ``null`` (see ``basicsync``).

    A named tuple, as :class:`Step` is: made once per restored job and per event.
    """

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
    #: The last ``SEEN_IDS_LIMIT`` applied events' ids, each with a tag of its source
    #: (``consumer.domain.job.seen_key``; bare ids in a state written before), oldest first.
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
    clocks: Mapping[str, Clock] = field(default_factory=dict)
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


_Data = TypeVar("_Data", Metadata, Document, JobState)
_STATE_FIELDS = tuple(f.name for f in fields(JobState))
_STATE_VALUES = attrgetter(*_STATE_FIELDS)


def changed(data: _Data, /, **changes: Any) -> _Data:
    """A copy of ``data`` with ``changes``; for a state, ``dataclasses.replace`` without its
    per-field bookkeeping (it has only plain init fields), as the reducer copies up to three of
    these per event."""
    if not isinstance(data, JobState):
        return data._replace(**changes)
    merged = dict(zip(_STATE_FIELDS, _STATE_VALUES(data), strict=True))
    merged.update(changes)
    return JobState(**merged)


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


def step_json(step: Step) -> str:
    """A step's body text (a function, for ``map``: the body and the changelog value read
    every step's)."""
    return unpack_step_text(step[5])


def kept_step(wrapper: StepWrapper) -> Step:
    """What a job state keeps of a step: its ordering key and its body text, packed."""
    return Step(*order_of(wrapper), pack_step_text(step_text(wrapper)))
