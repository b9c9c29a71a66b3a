"""Job state and the pure reducer that assembles events into it (design section 3).

:class:`JobState` is what the compacted changelog stores (JSON, see :meth:`JobState.to_json_bytes`).
:func:`apply` folds one event into a state; it never reads the clock (``now`` is passed in) and
never performs I/O.

Assembly rules, including the choices the design leaves open:

- **Idempotent by event id.** An id among the last :data:`SEEN_IDS_LIMIT` applied ids returns
  the very same state object. Ids older than that window would apply again (the reducer is
  idempotent for upserts, steps and status anyway; only ``jobExclusion`` would grow).
- **upserted**: every field *present* overwrites (a present ``null`` clears); ``metadata.metadata``
  merges by key (a ``null`` map changes nothing) and is kept sorted by key, so equal states
  serialize equally. ``clientJobId`` is always the subject.
- **step.completed / step.cancelled**: replace-or-insert by ``uniqueStepId`` into
  ``completedSteps`` / ``cancelledSteps`` (the lists are independent). Kept ordered by
  ``stepNumber`` (missing last), then time (first of completed/cancelled/updated/started,
  missing last), then ``uniqueStepId``. Steps still apply after a terminal status: late step
  events must not be lost.
- **status.changed**: sets ``status`` and those of ``abandonReason``, ``currentStep``,
  ``updated``, ``modified`` present. On a terminal job (``Completed``/``Aborted``) a
  non-terminal status is ignored *together with its companion fields* (they describe the
  ignored transition); the event still counts as applied. The same terminal status again
  applies normally.
- **excluded**: appends ``{userId, reason, isExcluded}`` to ``jobExclusion``; ``excluded``
  takes ``isExcluded``.
- **aborted**: status ``Aborted``; ``reason``, when given, becomes ``abandonReason``. The
  ``userId`` of the abort is not part of the document and is dropped.
- **Rejections** (:class:`Rejection`, reason ``invalid_transition``): moving between the two
  terminal statuses by any event (aborting a ``Completed`` job, completing an ``Aborted`` one).
  A rejected event leaves the state as it was (and is not remembered as seen).
- Unknown status strings pass through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from consumer.domain.document import (
    TERMINAL_STATUSES,
    JobDocument,
    JobExclusion,
    JobMetadata,
    StepWrapper,
    parse_timestamp,
)
from consumer.domain.events import (
    AbortedData,
    EventType,
    JobEvent,
    StatusChangedData,
    UpsertedData,
)
from consumer.domain.results import FailureReason

#: How many applied event ids a state remembers for duplicate detection. Redeliveries come from
#: a crash or rebalance replaying recent offsets, so a window this size covers them with room.
SEEN_IDS_LIMIT = 256

_DOCUMENT_FIELDS = frozenset({"team", "hierarchy_stack", "packet_ids"})


class SyncMode(StrEnum):
    """When a job is posted: after every change, or only once it is Completed/Aborted."""

    every_change = "every_change"
    terminal_only = "terminal_only"


class JobState(BaseModel):
    """One job as assembled so far, plus what has been synced of it.

    Unknown fields in a stored state are ignored, so an older consumer can read the changelog
    written by a newer one during a rolling upgrade.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    client_job_id: str
    document: JobDocument
    #: Number of events applied; the version a sync refers to.
    version: int = 0
    #: Ids of the last :data:`SEEN_IDS_LIMIT` applied events, oldest first.
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

    @property
    def status(self) -> str | None:
        return self.document.metadata.status

    def to_json_bytes(self) -> bytes:
        """Compact changelog value (fields at their default are left out)."""
        return self.model_dump_json(exclude_defaults=True).encode()

    @classmethod
    def from_json_bytes(cls, data: bytes) -> JobState:
        return cls.model_validate_json(data)


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event the rules refuse; report it as a failure record and leave the state alone."""

    message: str
    reason: FailureReason = FailureReason.invalid_transition


def new_state(client_job_id: str, now: datetime) -> JobState:
    """The state of a job no event has touched yet."""
    return JobState(
        client_job_id=client_job_id,
        document=JobDocument(metadata=JobMetadata(client_job_id=client_job_id)),
        updated_at=now,
    )


def apply(state: JobState | None, event: JobEvent, now: datetime) -> JobState | Rejection:
    """Fold ``event`` into ``state`` (None for a new job); see the module docstring for rules."""
    if state is None:
        state = new_state(event.subject, now)
    elif event.id in state.seen_event_ids:
        return state
    document = _reduce(state.document, event)
    if isinstance(document, Rejection):
        return document
    seen = (*state.seen_event_ids, event.id)[-SEEN_IDS_LIMIT:]
    return state.model_copy(
        update={
            "document": document,
            "version": state.version + 1,
            "seen_event_ids": seen,
            "first_unsynced_at": state.first_unsynced_at or now,
            "updated_at": now,
        }
    )


def _reduce(document: JobDocument, event: JobEvent) -> JobDocument | Rejection:
    data = event.data
    match event.type:
        case EventType.upserted:
            assert isinstance(data, UpsertedData)
            return _upsert(document, data)
        case EventType.step_completed:
            assert isinstance(data, StepWrapper)
            return document.model_copy(
                update={"completed_steps": _upsert_step(document.completed_steps, data)}
            )
        case EventType.step_cancelled:
            assert isinstance(data, StepWrapper)
            return document.model_copy(
                update={"cancelled_steps": _upsert_step(document.cancelled_steps, data)}
            )
        case EventType.status_changed:
            assert isinstance(data, StatusChangedData)
            return _change_status(document, data)
        case EventType.excluded:
            assert isinstance(data, JobExclusion)
            entry = JobExclusion(
                user_id=data.user_id, reason=data.reason, is_excluded=data.is_excluded
            )
            return document.model_copy(
                update={
                    "job_exclusion": (*document.job_exclusion, entry),
                    "excluded": data.is_excluded,
                }
            )
        case EventType.aborted:
            assert isinstance(data, AbortedData)
            changes: dict[str, Any] = {"status": "Aborted"}
            if data.reason is not None:
                changes["abandon_reason"] = data.reason
            return _set_status(document, "Aborted", changes)


def _upsert(document: JobDocument, data: UpsertedData) -> JobDocument | Rejection:
    meta: dict[str, Any] = {}
    top: dict[str, Any] = {}
    for name in data.model_fields_set:
        value = getattr(data, name)
        if name in _DOCUMENT_FIELDS:
            top[name] = value
        elif name == "metadata":
            if value is not None:
                merged = {**(document.metadata.metadata or {}), **value}
                meta[name] = dict(sorted(merged.items()))
        elif name != "client_job_id":
            meta[name] = value
    if "status" in meta:
        status = meta.pop("status")
        if status is not None:
            result = _set_status(document, status, {"status": status})
            if isinstance(result, Rejection):
                return result
            document = result
        elif not is_terminal_status(document.metadata.status):
            meta["status"] = None
    return document.model_copy(
        update={**top, "metadata": document.metadata.model_copy(update=meta)}
    )


def _change_status(document: JobDocument, data: StatusChangedData) -> JobDocument | Rejection:
    changes = {name: getattr(data, name) for name in data.model_fields_set}
    return _set_status(document, data.status, changes)


def _set_status(
    document: JobDocument, status: str, changes: dict[str, Any]
) -> JobDocument | Rejection:
    """Apply ``changes`` (metadata fields, including ``status``) under the terminal rules."""
    current = document.metadata.status
    if is_terminal_status(current) and current != status:
        if is_terminal_status(status):
            return Rejection(f"cannot move a {current} job to {status}")
        return document  # a late non-terminal status never reverts a terminal one
    return document.model_copy(update={"metadata": document.metadata.model_copy(update=changes)})


def _upsert_step(steps: tuple[StepWrapper, ...], step: StepWrapper) -> tuple[StepWrapper, ...]:
    uid = step.single_step.unique_step_id
    kept = [s for s in steps if s.single_step.unique_step_id != uid]
    kept.append(step)
    return tuple(sorted(kept, key=step_order))


def step_order(wrapper: StepWrapper) -> tuple[Any, ...]:
    """Sort key: stepNumber, then time, then uniqueStepId; missing values sort last."""
    step = wrapper.single_step
    stamp = step.completed or step.cancelled or step.updated or step.started
    when = parse_timestamp(stamp) if stamp else None
    return (
        step.step_number is None,
        step.step_number or 0,
        when is None,
        when.timestamp() if when else 0.0,
        step.unique_step_id or "",
    )


def is_terminal_status(status: str | None) -> bool:
    return status in TERMINAL_STATUSES


def is_terminal(state: JobState) -> bool:
    """Completed or Aborted."""
    return is_terminal_status(state.status)


def is_postable(state: JobState) -> bool:
    """WorkfloPlus can take the job: it has a clientJobId and a workflowId."""
    meta = state.document.metadata
    return bool(meta.client_job_id) and bool(meta.workflow_id)


def needs_sync(state: JobState, mode: SyncMode) -> bool:
    """Postable, changed since the last sync, and (in terminal_only mode) terminal.

    The caller still skips the request when the body hash equals ``synced_sha256``.
    """
    if state.version <= state.synced_version or not is_postable(state):
        return False
    return mode is SyncMode.every_change or is_terminal(state)


def hold_expired(state: JobState, now: datetime, timeout: timedelta) -> bool:
    """A job that cannot be posted has waited longer than ``timeout`` (missing_job_metadata)."""
    return (
        not is_postable(state)
        and state.first_unsynced_at is not None
        and now - state.first_unsynced_at >= timeout
    )


def mark_synced(
    state: JobState, version: int, sha256: str, job_id: str | None, now: datetime
) -> JobState:
    """Record that ``version`` (body hash ``sha256``) was accepted by WorkfloPlus.

    Returns ``state`` itself when there is nothing to record: ``version`` is older than the
    synced one, or newer than the state (the state was replaced meanwhile, e.g. tombstoned and
    recreated, so the sync does not describe it). When events arrived during the request
    (``version < state.version``), ``first_unsynced_at`` is kept: the exact time of the first
    later event is not known, so latency is over- rather than under-reported.
    """
    if version > state.version or version < state.synced_version:
        return state
    return state.model_copy(
        update={
            "synced_version": version,
            "synced_sha256": sha256,
            "job_id": job_id or state.job_id,
            "first_unsynced_at": None if version == state.version else state.first_unsynced_at,
            "synced_at": now,
        }
    )
