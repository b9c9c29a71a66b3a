"""One fetched batch in, its effect out: decode, validate, reduce. No I/O.

The caller makes the effect durable (changelog writes and failure records acknowledged by
the broker) and only then commits ``next_offsets``: that order is what makes a crash at
any instant lose nothing.

An event off its key's murmur2 partition is refused as ``misrouted`` first, even for a job
never seen here: the member owning the key's partition may hold the job, and one assembling
the event alone would post part of it over the whole (docs/contract.md §3).

Two kinds of key refuse events before the reducer sees them:

- a forgotten job (its marker is in the store): every event gets a ``job_forgotten`` failure
  record whose ``stateVersion`` is the marker's version, so a key's versions never restart;
- a job at its size limit: a job's state is one changelog record, so it may not grow past
  ``kafka.max_job_bytes``. The event that would take it past gets the job's one
  ``job_too_large`` failure record and the state is kept as it was, flagged ``too_large``
  (still synced); later events of the job are counted (``BatchEffect.too_large``), not applied
  and not reported again. Encoding a state on every event would cost a big job quadratic time,
  so the exact size is measured only once a cheap upper estimate (:class:`SizeEstimate`) says
  the limit may be near.

An event whose ``time`` is further ahead of this consumer's clock than ``max_time_ahead`` is
refused as ``invalid_event`` before either: events are ordered by their time, so a producer
with a clock or time zone gone wrong would otherwise win every later write of the job until
that time comes (a year ahead: a year of updates ignored). Kafka 4 refuses records timestamped
more than an hour ahead by default (``message.timestamp.after.max.ms``) for the same reason,
hence the same default. Only the refusal depends on the clock, never the order: a refused event
re-sent once its time has come applies as it would have. On a topic the broker stamps
(LogAppendTime) the later of this member's clock and the broker's counts, so a member whose
clock is behind does not refuse that topic's events.

A job whose changelog value cannot be read (``JobStore.unreadable``) refuses its events too:
each gets a ``job_state_unreadable`` failure record. Applied to no state, an event would start
the job afresh and post that stub over the whole document WorkfloPlus holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from consumer.domain.events import EventTrace, InvalidEvent, JobEvent, decode_event
from consumer.domain.job import JobState, Rejection, apply
from consumer.domain.results import (
    MAX_FAILURE_VALUE_BYTES,
    FailureReason,
    FailureRecord,
    SourceInfo,
)
from consumer.domain.retention import forgotten_rejection
from consumer.domain.state_codec import encode_state
from consumer.kafka.partitioning import hashes_to
from consumer.kafka.records import LOG_APPEND_TIME, InputPosition, SourceRecord
from consumer.state.store import JobStore


@dataclass
class BatchEffect:
    """What a batch changed, coalesced: one changelog write per job however many events."""

    changed: dict[str, JobState] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)
    offsets_by_job: dict[str, list[InputPosition]] = field(default_factory=dict)
    #: the trace contexts of the applied events that carry one (docs/operations.md "Tracing")
    traces_by_job: dict[str, list[EventTrace]] = field(default_factory=dict)
    failures: list[FailureRecord] = field(default_factory=list)
    #: the Kafka key of each failure's input, as received, in step with ``failures``: the
    #: failure record's key when it has no clientJobId (a key that is not UTF-8)
    failure_keys: list[bytes | None] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    misrouted: int = 0
    applied: int = 0
    duplicates: int = 0
    #: events of jobs already at their size limit, not applied (reported once, earlier)
    too_large: int = 0


class ArrivalClock:
    """Processing times that strictly increase, even within one batch.

    Bookkeeping only (``updated_at`` for retention, ``first_unsynced_at`` for latency): the
    reducer orders events by ``(time, arrival)``, never by this clock.
    """

    def __init__(self, wall_clock: Callable[[], datetime]) -> None:
        self._wall_clock = wall_clock
        self._last: datetime | None = None

    def __call__(self) -> datetime:
        now = self._wall_clock()
        if self._last is not None and now <= self._last:
            now = self._last + _ONE_MICROSECOND
        self._last = now
        return now


_ONE_MICROSECOND = timedelta(microseconds=1)


class SizeEstimate:
    """An upper estimate of each job's encoded state, so that few states are ever encoded.

    A job's estimate is its last measured size plus :data:`GROWTH_FACTOR` times the bytes of
    every event applied since, plus :data:`GROWTH_PER_EVENT`; only when that passes the limit
    is the state encoded and measured. Near the limit a growing job is measured every few
    events (the gap shrinks geometrically), far from it never.
    """

    #: A state grows by an event's data plus clocks and ids: well below this times its value.
    GROWTH_FACTOR = 4
    GROWTH_PER_EVENT = 512

    def __init__(self) -> None:
        self._bytes: dict[str, int] = {}

    def may_exceed(self, job: str, held: bool, event_bytes: int, limit: int) -> bool:
        """Count an event of ``event_bytes`` applied; True when the state must be measured.

        A ``held`` job (it had a state before this event) not measured yet is measured once.
        """
        known = self._bytes.get(job)
        if known is None and held:
            return True
        estimate = (known or 0) + self.GROWTH_FACTOR * event_bytes + self.GROWTH_PER_EVENT
        self._bytes[job] = estimate
        return estimate > limit

    def measured(self, job: str, size: int) -> None:
        self._bytes[job] = size

    def forget(self, jobs: Iterable[str]) -> None:
        """Sizes no longer known (the jobs were dropped or restored from the changelog)."""
        for job in jobs:
            self._bytes.pop(job, None)


def absorb(
    store: JobStore,
    records: Iterable[SourceRecord],
    *,
    clock: ArrivalClock,
    partition_count: int,
    max_event_bytes: int,
    max_job_bytes: int | None = None,
    sizes: SizeEstimate | None = None,
    max_failure_value_bytes: int = MAX_FAILURE_VALUE_BYTES,
    count_misrouted: bool = True,
    max_time_ahead: timedelta | None = None,
    changelog_room: int | None = None,
) -> BatchEffect:
    """Apply ``records`` in order to ``store`` and describe what must become durable.

    ``max_job_bytes`` (with ``sizes``, kept across batches) bounds a job's encoded state;
    ``max_failure_value_bytes`` bounds the input bytes a failure record carries.
    ``count_misrouted`` False: the caller found every key on its murmur2 partition already
    (else a record off it is counted and refused as ``misrouted``).
    ``max_time_ahead``: an event whose time is further ahead of ``clock`` is refused.
    ``changelog_room``: what the changelog topic holds for a job's key and state together,
    when that is less than ``max_job_bytes`` needs (``consumer.kafka.limits.changelog_room``):
    a job is refused past it as past ``max_job_bytes``.
    """
    intake = _Intake(
        store,
        partition_count=partition_count,
        max_event_bytes=max_event_bytes,
        max_job_bytes=max_job_bytes,
        sizes=sizes if sizes is not None else SizeEstimate(),
        max_failure_value_bytes=max_failure_value_bytes,
        count_misrouted=count_misrouted,
        max_time_ahead=max_time_ahead,
        changelog_room=changelog_room,
    )
    for record in records:
        intake.take(record, clock())
    return intake.effect


@dataclass(slots=True)
class _Intake:
    """One batch being absorbed: the store, the limits, and the effect so far."""

    store: JobStore
    partition_count: int
    max_event_bytes: int
    max_job_bytes: int | None
    sizes: SizeEstimate
    max_failure_value_bytes: int
    count_misrouted: bool = True
    max_time_ahead: timedelta | None = None
    changelog_room: int | None = None
    effect: BatchEffect = field(default_factory=BatchEffect)

    def take(self, record: SourceRecord, now: datetime) -> None:
        """One record through the checks in order; the first that refuses it ends its way."""
        home = self._arrived(record)
        event = self._decoded(record, now)
        if (
            event is None
            or self._off_its_partition(record, event, home, now)
            or self._from_the_future(record, event, now)
            or self._refused_by_key(record, event, now)
        ):
            return
        job = event.subject
        state = self.store.get(job)
        if state is None and self._refused_unreadable(record, job, now):
            return
        if state is not None and state.too_large:
            self.effect.too_large += 1
            return
        try:
            result = apply(state, event, now)
        except MemoryError:
            raise
        except Exception as exc:  # a defect of the reducer must not stop the partition
            self._fail(record, FailureReason.invalid_event, _not_applied(exc), now, job)
            return
        if isinstance(result, Rejection):
            self._fail(record, result.reason, result.message, now, job, _version(state))
            return
        if result is state:
            self.effect.duplicates += 1
            return
        if self._outgrown(record, job, state, result, now):
            return
        self._applied(record, event, result)

    def _arrived(self, record: SourceRecord) -> int | None:
        """The record is read whatever becomes of it: its offset is passed, its key checked.
        Returns the partition its key belongs on when that is another one."""
        self.effect.next_offsets[(record.topic, record.partition)] = record.offset + 1
        key = record.key
        if not self.count_misrouted or key is None:
            return None
        home = hashes_to(key, self.partition_count)
        if home == record.partition:
            return None
        self.effect.misrouted += 1
        return home

    def _off_its_partition(
        self, record: SourceRecord, event: JobEvent, home: int | None, now: datetime
    ) -> bool:
        """An event off its key's murmur2 partition takes no effect, even for a job new here.

        The partition is the job's owner: another member may hold the job from events that
        came where they belong, and one that assembled this event alone would post part of
        the job over it. Every member decides alike from the key, with no directory of jobs.
        """
        if home is None:
            return False
        self._fail(
            record,
            FailureReason.misrouted,
            f"job {event.subject} belongs on partition {home} of {self.partition_count} (the "
            "murmur2 hash of its key, the Java client's default partitioner), but this event "
            f"came on partition {record.partition} of {record.topic}: its producer uses another "
            "partitioner. It is not applied here, where a second member would assemble part of "
            "the job. Make the producer use the default partitioner; basicsync redrive re-sends "
            "the event to the job's partition",
            now,
            event.subject,
        )
        return True

    def _decoded(self, record: SourceRecord, now: datetime) -> JobEvent | None:
        """The record's event, or None after a failure record saying why it is unusable."""
        try:
            return decode_event(
                record.key, record.value, record.headers, max_bytes=self.max_event_bytes
            )
        except InvalidEvent as exc:
            self._fail(record, exc.reason, exc.message, now, _subject_of(record))
            return None

    def _from_the_future(self, record: SourceRecord, event: JobEvent, now: datetime) -> bool:
        """An event timed further ahead than ``max_time_ahead`` takes no effect: ahead of
        ``now``, or of the broker's clock when that is later and the topic stamps records with
        it (LogAppendTime), so a member whose own clock is behind refuses nothing there."""
        limit, time = self.max_time_ahead, event.time
        if limit is None or time is None:
            return False
        at = time if time.tzinfo is not None else time.replace(tzinfo=UTC)
        if at - now <= limit:
            return False  # the common case: the record's timestamp is not even read
        reference, whose = now, "this consumer's clock"
        stamped = _stamped(record)
        if record.timestamp_type == LOG_APPEND_TIME:
            if stamped is not None and stamped > now:
                reference, whose = stamped, "the broker's clock (the record's LogAppendTime)"
            stamped = None  # judged by the broker's clock already: the producer's is wrong
        ahead = at - reference
        if ahead <= limit:
            return False
        self._fail(
            record,
            FailureReason.invalid_event,
            f"the event's time {time.isoformat()} is {_duration(ahead)} ahead of {whose} "
            f"({reference.isoformat()}), more than the {_duration(limit)} allowed "
            f"(BASICSYNC_KAFKA__MAX_EVENT_TIME_AHEAD_S): {_whose_clock(stamped, now, limit)}",
            now,
            event.subject,
        )
        return True

    def _refused_by_key(self, record: SourceRecord, event: JobEvent, now: datetime) -> bool:
        """A forgotten job, or one that lives on another partition, takes no events."""
        job = event.subject
        marker = self.store.forgotten_marker(job)
        if marker is not None:
            rejection = forgotten_rejection(marker, event)
            self._fail(record, rejection.reason, rejection.message, now, job, marker.version)
            return True
        home = self.store.partition_of(job)
        if home is not None and home != record.partition:
            self._fail(
                record,
                FailureReason.misrouted,
                f"job {job} lives in partition {home}, this event came on partition "
                f"{record.partition} of {record.topic}: the input topics are not "
                "co-partitioned (same partition count and partitioner)",
                now,
                job,
            )
            return True
        return False

    def _refused_unreadable(self, record: SourceRecord, job: str, now: datetime) -> bool:
        """A job whose changelog value cannot be read takes no events (read as a settled job
        by the ``get`` just before, too)."""
        why = self.store.unreadable(job)
        if why is None:
            return False
        self._fail(
            record,
            FailureReason.job_state_unreadable,
            f"the state of job {job!r} in the changelog cannot be read ({why}); the event is "
            "not applied, so that no partial document is posted over the whole one: run a "
            "version that reads it, or delete the job's changelog key to start it afresh, then "
            "re-send this event",
            now,
            job,
        )
        return True

    def _outgrown(
        self,
        record: SourceRecord,
        job: str,
        state: JobState | None,
        result: JobState,
        now: datetime,
    ) -> bool:
        """Would ``result`` pass its limit? Then the job keeps ``state``, flagged."""
        limit, set_by_changelog = self._job_limit(job)
        if limit is None or not self.sizes.may_exceed(
            job, state is not None, len(record.value or b""), limit
        ):
            return False
        size = len(encode_state(result))
        if size <= limit:
            self.sizes.measured(job, size)
            return False
        self._fail(
            record,
            FailureReason.job_too_large,
            _too_large(job, size, limit, set_by_changelog),
            now,
            job,
            _version(state),
        )
        if state is not None:
            self._changed(record, job, replace(state, too_large=True))
        return True

    def _job_limit(self, job: str) -> tuple[int | None, bool]:
        """The largest encoded state ``job`` may reach, and whether the changelog topic (not
        ``max_job_bytes``) sets it. Per event: no work unless the changelog holds less."""
        limit = self.max_job_bytes
        if self.changelog_room is not None:
            room = self.changelog_room - len(job.encode())
            if limit is None or room < limit:
                return room, True
        return limit, False

    def _applied(self, record: SourceRecord, event: JobEvent, result: JobState) -> None:
        """The new state is kept, with the offset and trace context of the event behind it."""
        job = event.subject
        self.effect.applied += 1
        self._changed(record, job, result)
        self.effect.offsets_by_job.setdefault(job, []).append(
            InputPosition(record.topic, record.partition, record.offset)
        )
        if event.traceparent is not None:
            self.effect.traces_by_job.setdefault(job, []).append(
                EventTrace(
                    event.traceparent,
                    event.tracestate,
                    event.id,
                    record.topic,
                    record.partition,
                    record.offset,
                )
            )

    def _changed(self, record: SourceRecord, job: str, state: JobState) -> None:
        self.store.put(record.partition, state)
        self.effect.changed[job] = state
        self.effect.partitions[job] = record.partition

    def _fail(
        self,
        record: SourceRecord,
        reason: FailureReason,
        message: str,
        now: datetime,
        client_job_id: str | None,
        state_version: int | None = None,
    ) -> None:
        """The record is not applied: a failure record carrying its input bytes says why."""
        source = SourceInfo.from_message(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=record.headers,
            max_value_bytes=self.max_failure_value_bytes,
        )
        self.effect.failure_keys.append(record.key)
        self.effect.failures.append(
            FailureRecord.for_input(
                reason=reason,
                message=message,
                source=source,
                failed_at=now,
                client_job_id=client_job_id,
                state_version=state_version,
            )
        )


def _too_large(job: str, size: int, limit: int, set_by_changelog: bool) -> str:
    bound = (
        f"the {limit} bytes the changelog topic's max.message.bytes holds for its state (below "
        "BASICSYNC_KAFKA__MAX_JOB_BYTES)"
        if set_by_changelog
        else f"BASICSYNC_KAFKA__MAX_JOB_BYTES ({limit})"
    )
    return (
        f"applying this event would make job {job!r} {size} bytes, more than {bound}; the job "
        "keeps its state as it was (and is still synced), and neither this event nor any later "
        "one of the job is applied"
    )


def _stamped(record: SourceRecord) -> datetime | None:
    """The record's Kafka timestamp as an instant (None: it has none)."""
    return datetime.fromtimestamp(record.timestamp / 1000, UTC) if record.timestamp >= 0 else None


def _whose_clock(stamped: datetime | None, now: datetime, limit: timedelta) -> str:
    """Which clock is probably wrong for an event timed ahead. The record's own timestamp
    (its producer client's, a LogAppendTime topic being judged by the broker's clock) as far
    ahead points at this member's clock too, which would refuse every event until set right."""
    if stamped is None or stamped - now <= limit:
        return (
            "the producer's clock or time zone is probably wrong. The event is not applied; "
            "re-send it with the right time (or once its time has come)"
        )
    return (
        f"the record's Kafka timestamp, from the producer's client, is {stamped.isoformat()}, "
        f"{_duration(stamped - now)} ahead of this consumer's clock too: this member's clock "
        "may be behind, or the producer's ahead; check both against a clock you trust (NTP). "
        "The event is not applied; re-send it once they agree (basicsync redrive)"
    )


def _duration(span: timedelta) -> str:
    """``3 days 4:05:06`` rounded to the second: what an operator reads in a failure record."""
    return str(timedelta(seconds=round(span.total_seconds())))


def _not_applied(exc: Exception) -> str:
    """An event the reducer failed on: reported with its bytes, as an unusable event is, so
    that one event never stops its partition (a crash would meet it again at every restart)."""
    return (
        f"the event could not be applied ({type(exc).__name__}: {exc}); this is a defect of "
        "basicsync, please report it with this record: the event is not applied, later events "
        "are, and it can be sent again with `basicsync redrive` once a fixed version runs"
    )


def _version(state: JobState | None) -> int | None:
    return state.version if state is not None else None


def _subject_of(record: SourceRecord) -> str | None:
    if record.key is None:
        return None
    try:
        return record.key.decode("utf-8")
    except UnicodeDecodeError:
        return None
