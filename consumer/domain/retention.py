"""What stays of a job after retention: a small marker, so a forgotten job stays forgotten.

A terminal job that WorkfloPlus holds (synced) is dropped from memory and from the changelog
after ``sync.retention_s``. Tombstoning it outright would let a late event for it start a fresh
job: versions restarting at 1 (colliding with the old result records) and, once that stub has a
``workflowId``, a stub document posted over the full one. So the job's changelog value is
replaced by a :class:`ForgottenJob` marker (its last version, terminal status and WorkfloPlus
``jobId``, about 150 bytes), kept for ``sync.forgotten_retention_s`` more, and an event for a
forgotten job is rejected with ``job_forgotten`` (a failure record) instead of being applied.
Only once the marker is dropped too does the key start over as a new job.

The life of a changelog key, as :func:`retention_action` decides it at each sweep::

    JobState ──(terminal, synced, idle > retention)──▶ ForgottenJob ──(forgotten_retention)──▶ gone
     events apply                                    events get Rejection(job_forgotten)

Pure: time is passed in, nothing here performs I/O. The store and the changelog hold a
``JobState | ForgottenJob`` per key (:data:`StoredJob`); :func:`decode_stored` reads either
from a changelog value and :func:`apply_stored` is the reducer's entry for a stored value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import ConfigDict, TypeAdapter

from consumer.domain.events import JobEvent
from consumer.domain.job import JobState, Rejection, apply, is_terminal
from consumer.domain.results import FailureReason
from consumer.domain.settled import SettledJob
from consumer.domain.state_codec import decode_state, encode_state

#: Every marker's changelog value starts with this (its first field); no JobState's does.
MARKER_PREFIX = b'{"forgotten_at":'


@dataclass(frozen=True, slots=True, kw_only=True)
class ForgottenJob:
    """A job forgotten after retention: what must survive so that it stays forgotten.

    A plain slotted dataclass (pydantic only at the changelog boundary): markers outlive their
    jobs, so there are many of them in memory.
    """

    __pydantic_config__ = ConfigDict(strict=True, extra="ignore")

    #: When the job was forgotten; the marker is dropped ``forgotten_retention`` after this.
    forgotten_at: datetime
    client_job_id: str
    #: The job's last version (its last result records carry it); versions never go back.
    version: int
    #: The terminal status it ended with.
    status: str | None
    #: WorkfloPlus's ``jobId``, when known.
    job_id: str | None = None

    def to_json_bytes(self) -> bytes:
        """The changelog value (starts with :data:`MARKER_PREFIX`)."""
        return _MARKER.dump_json(self)

    @classmethod
    def from_json_bytes(cls, data: bytes) -> ForgottenJob:
        return _MARKER.validate_json(data)


_MARKER: TypeAdapter[ForgottenJob] = TypeAdapter(ForgottenJob)

#: What the store and the changelog hold for a key.
StoredJob = JobState | ForgottenJob


class Retention(StrEnum):
    """What a sweep does with a stored key."""

    keep = "keep"
    #: Replace the job by :func:`forget` (write the marker to the changelog, keep it in memory).
    forget = "forget"
    #: Tombstone the key in the changelog and delete it from memory.
    drop = "drop"


def forget(state: JobState, now: datetime) -> ForgottenJob:
    """The marker that replaces ``state`` once retention has passed."""
    return ForgottenJob(
        forgotten_at=now,
        client_job_id=state.client_job_id,
        version=state.version,
        status=state.status,
        job_id=state.job_id,
    )


def retention_action(
    stored: StoredJob | SettledJob,
    now: datetime,
    *,
    retention: timedelta,
    forgotten_retention: timedelta,
) -> Retention:
    """The sweep's decision for one key.

    - a job that is terminal, settled (``synced_version >= version``) and had no event for
      longer than ``retention`` is forgotten;
    - a marker older than ``forgotten_retention`` is dropped;
    - anything else is kept.
    """
    if isinstance(stored, ForgottenJob):
        return (
            Retention.drop if now - stored.forgotten_at >= forgotten_retention else Retention.keep
        )
    if isinstance(stored, SettledJob):  # settled: synced_version >= version by its mark
        return (
            Retention.forget
            if stored.terminal and stored.updated_at < now - retention
            else Retention.keep
        )
    if (
        is_terminal(stored)
        and stored.synced_version >= stored.version
        and stored.updated_at < now - retention
    ):
        return Retention.forget
    return Retention.keep


def forgotten_rejection(marker: ForgottenJob, event: JobEvent) -> Rejection:
    """Why ``event`` is not applied to the forgotten job: a ``job_forgotten`` failure."""
    return Rejection(
        f"job {marker.client_job_id!r} ended {marker.status} at version {marker.version} and "
        f"was forgotten at {marker.forgotten_at.isoformat()}; the late {event.type.value} event "
        f"{event.id!r} is not applied (it would post a partial document over the full one)",
        FailureReason.job_forgotten,
    )


def apply_stored(stored: StoredJob | None, event: JobEvent, now: datetime) -> JobState | Rejection:
    """:func:`consumer.domain.job.apply` for whatever the store holds for the event's key.

    A forgotten job rejects every event, so a key's versions never restart while its marker
    lives.
    """
    if isinstance(stored, ForgottenJob):
        return forgotten_rejection(stored, event)
    return apply(stored, event, now)


def decode_stored(data: bytes) -> StoredJob:
    """A changelog value: a job state or a marker. Raises ``ValueError`` (a pydantic
    ``ValidationError`` among them) when it is neither."""
    if data.startswith(MARKER_PREFIX):
        return ForgottenJob.from_json_bytes(data)
    try:
        return decode_state(data)
    except ValueError:
        if b'"forgotten_at"' not in data:
            raise
        return ForgottenJob.from_json_bytes(data)  # a marker written with other spacing


def encode_stored(stored: StoredJob) -> bytes:
    """The changelog value of a job state or a marker."""
    return stored.to_json_bytes() if isinstance(stored, ForgottenJob) else encode_state(stored)
