"""One fetched batch in, its effect out (consumer.intake): decode, validate, reduce, coalesce."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from unittest.mock import patch

import pytest
from aiokafka.structs import ConsumerRecord
from hypothesis import given
from hypothesis import strategies as st

from consumer.demo import DemoPlan, build_demo
from consumer.domain.events import EventType, JobEvent, encode_binary, encode_structured
from consumer.domain.job import JobState, apply
from consumer.domain.results import FailureReason
from consumer.domain.retention import forget
from consumer.domain.settled import SettledJob
from consumer.domain.state_codec import encode_state
from consumer.domain.value_compression import compressed
from consumer.intake import ArrivalClock, BatchEffect, SizeEstimate, absorb
from consumer.kafka.partitioning import hashes_to
from consumer.kafka.records import (
    CREATE_TIME,
    LOG_APPEND_TIME,
    InputPosition,
    PlainRecord,
    SourceRecord,
)
from consumer.state.store import JobStore
from tests.unit.fakes import NOW, event, fold, status_changed, upserted

TOPIC = "workfloplus.job-events"
PARTITIONS = 12
MAX_BYTES = 10_000


class Batch:
    """Builds records of one topic, each job on the partition its key hashes to."""

    def __init__(self) -> None:
        self.records: list[SourceRecord] = []
        self._offsets: dict[int, int] = {}

    def _next(self, partition: int) -> int:
        offset = self._offsets.get(partition, 100)
        self._offsets[partition] = offset + 1
        return offset

    def raw(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: tuple[tuple[str, bytes], ...] = (),
        *,
        partition: int | None = None,
        stamped: tuple[int, int] = (-1, CREATE_TIME),
    ) -> SourceRecord:
        if partition is None:
            partition = hashes_to(key, PARTITIONS) if key is not None else 0
        offset = self._next(partition)
        record = PlainRecord(TOPIC, partition, offset, key, value, headers, *stamped)
        self.records.append(record)
        return record

    def add(
        self,
        item: JobEvent,
        *,
        binary: bool = False,
        partition: int | None = None,
        stamped: tuple[int, int] = (-1, CREATE_TIME),
    ) -> SourceRecord:
        key, value, headers = (encode_binary if binary else encode_structured)(item)
        return self.raw(key, value, tuple(headers), partition=partition, stamped=stamped)


def run(
    batch: Batch,
    store: JobStore | None = None,
    *,
    count_misrouted: bool = True,
    max_time_ahead: timedelta | None = None,
    now: datetime = NOW,
) -> BatchEffect:
    return absorb(
        store if store is not None else JobStore(),
        batch.records,
        clock=ArrivalClock(lambda: now),
        partition_count=PARTITIONS,
        max_event_bytes=MAX_BYTES,
        count_misrouted=count_misrouted,
        max_time_ahead=max_time_ahead,
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class TestAbsorb:
    def test_burst_of_one_job_coalesces(self) -> None:
        """Many events of one job become one changed state carrying all of them."""
        batch = Batch()
        events = [
            upserted("job-a", workflowId="wf", jobTitle="first"),
            status_changed("job-a", "InProgress"),
            upserted("job-a", jobTitle="second"),
        ]
        records = [batch.add(e) for e in events]
        store = JobStore()
        effect = run(batch, store)
        assert list(effect.changed) == ["job-a"]
        state = effect.changed["job-a"]
        assert state.version == 3
        assert state.document.metadata.job_title == "second"
        assert state.status == "InProgress"
        assert store.get("job-a") is state
        assert effect.partitions["job-a"] == records[0].partition
        assert effect.offsets_by_job["job-a"] == [
            InputPosition(TOPIC, r.partition, r.offset) for r in records
        ]
        assert effect.applied == 3
        assert effect.failures == []

    def test_several_jobs_and_next_offsets(self) -> None:
        """Each job gets its own state; next_offsets is last offset + 1 per topic-partition."""
        batch = Batch()
        records = [batch.add(upserted(job, workflowId="wf")) for job in ("job-a", "job-b", "job-a")]
        effect = run(batch)
        assert set(effect.changed) == {"job-a", "job-b"}
        expected: dict[tuple[str, int], int] = {}
        for record in records:
            expected[(record.topic, record.partition)] = record.offset + 1
        assert effect.next_offsets == expected

    def test_binary_mode_events(self) -> None:
        """Binary-mode CloudEvents (ce_* headers) are applied like structured ones."""
        batch = Batch()
        batch.add(upserted("job-b", workflowId="wf"), binary=True)
        assert run(batch).changed["job-b"].document.metadata.workflow_id == "wf"

    def test_duplicates_counted_not_changed(self) -> None:
        """A redelivered event (same id) is counted as duplicate and changes nothing."""
        first = upserted("job-a", workflowId="wf")
        batch = Batch()
        batch.add(first)
        store = JobStore()
        run(batch, store)
        before = store.get("job-a")
        again = Batch()
        again.add(first)
        effect = run(again, store)
        assert effect.duplicates == 1
        assert effect.applied == 0
        assert effect.changed == {}
        assert effect.failures == []
        assert store.get("job-a") is before
        assert effect.next_offsets  # its offset is still committed

    def test_duplicate_within_a_batch(self) -> None:
        """The same event twice in one batch applies once."""
        item = upserted("job-a", workflowId="wf")
        batch = Batch()
        batch.add(item)
        batch.add(item)
        effect = run(batch)
        assert effect.applied == 1
        assert effect.duplicates == 1
        assert effect.changed["job-a"].version == 1
        assert len(effect.offsets_by_job["job-a"]) == 1

    def test_rejection_is_an_invalid_transition_failure(self) -> None:
        """Aborting a Completed job yields an invalid_transition failure; state unchanged."""
        batch = Batch()
        batch.add(upserted("job-a", workflowId="wf"))
        batch.add(status_changed("job-a", "Completed"))
        abort = batch.add(event("job-a", EventType.aborted, {"reason": "late"}))
        store = JobStore()
        effect = run(batch, store)
        assert effect.applied == 2
        assert [f.reason for f in effect.failures] == [FailureReason.invalid_transition]
        failure = effect.failures[0]
        assert failure.client_job_id == "job-a"
        assert failure.state_version == 2
        assert failure.source is not None
        assert failure.source.offset == abort.offset
        assert abort.value is not None
        assert failure.source.value == b64(abort.value)
        state = store.get("job-a")
        assert state is not None
        assert state.status == "Completed"
        assert state.version == 2
        assert effect.next_offsets[(TOPIC, abort.partition)] == abort.offset + 1

    @pytest.mark.parametrize(
        ("key", "value", "reason"),
        [
            (b"job-x", b"{not json", FailureReason.invalid_event),
            (b"job-x", b"", FailureReason.invalid_event),
            (b"job-x", b"x" * (MAX_BYTES + 1), FailureReason.oversized_event),
            (
                b"job-x",
                json.dumps(
                    {
                        "specversion": "1.0",
                        "id": "1",
                        "source": "s",
                        "type": "com.workfloplus.job.teleported",
                        "subject": "job-x",
                        "data": {},
                    }
                ).encode(),
                FailureReason.unknown_event_type,
            ),
            (
                b"other-key",
                json.dumps(
                    {
                        "specversion": "1.0",
                        "id": "1",
                        "source": "s",
                        "type": "com.workfloplus.job.aborted",
                        "subject": "job-x",
                        "data": {},
                    }
                ).encode(),
                FailureReason.key_mismatch,
            ),
        ],
        ids=["bad-json", "empty", "oversized", "unknown-type", "key-mismatch"],
    )
    def test_invalid_event_carries_original_bytes(
        self, key: bytes, value: bytes, reason: FailureReason
    ) -> None:
        """Each kind of unusable input is a failure with its reason and base64 source bytes."""
        batch = Batch()
        headers = (("trace", b"\x00\xff"),)
        record = batch.raw(key, value, headers)
        store = JobStore()
        effect = run(batch, store)
        assert [f.reason for f in effect.failures] == [reason]
        failure = effect.failures[0]
        assert failure.client_job_id == key.decode()
        assert failure.attempts == 0
        source = failure.source
        assert source is not None
        assert (source.topic, source.partition, source.offset) == (
            TOPIC,
            record.partition,
            record.offset,
        )
        assert source.key == b64(key)
        assert source.value == b64(value)
        assert [(h.key, h.value) for h in source.headers] == [("trace", b64(b"\x00\xff"))]
        assert effect.changed == {}
        assert len(store) == 0
        assert effect.next_offsets == {(TOPIC, record.partition): record.offset + 1}

    def test_invalid_event_without_key(self) -> None:
        """A keyless message is a key_mismatch failure with a null key and no clientJobId."""
        item = upserted("job-a", workflowId="wf")
        _, value, headers = encode_structured(item)
        batch = Batch()
        batch.raw(None, value, tuple(headers))
        effect = run(batch)
        failure = effect.failures[0]
        assert failure.reason is FailureReason.key_mismatch
        assert failure.client_job_id is None
        assert failure.source is not None
        assert failure.source.key is None
        assert failure.source.value == b64(value)
        assert effect.misrouted == 0

    def test_non_utf8_key(self) -> None:
        """A key that is not UTF-8 fails as key_mismatch; clientJobId stays unknown."""
        batch = Batch()
        batch.raw(b"\xff\xfe", b"{}")
        effect = run(batch)
        failure = effect.failures[0]
        assert failure.client_job_id is None
        assert failure.source is not None
        assert failure.source.key == b64(b"\xff\xfe")
        assert effect.failure_keys == [b"\xff\xfe"]  # the failure record's Kafka key

    def test_each_failure_keeps_its_inputs_key_in_step(self) -> None:
        """The raw keys go with their failures, one each, in order, a missing one as None."""
        batch = Batch()
        batch.raw(b"job-a", b"garbage")
        batch.add(upserted("job-b", workflowId="wf"))
        batch.raw(None, b"{}")
        batch.raw(b"\xc3", b"{}")
        effect = run(batch)
        assert [f.client_job_id for f in effect.failures] == ["job-a", None, None]
        assert effect.failure_keys == [b"job-a", None, b"\xc3"]

    def test_invalid_events_do_not_block_valid_ones(self) -> None:
        """Bad input between good events is reported and the good events still apply."""
        batch = Batch()
        batch.add(upserted("job-a", workflowId="wf"))
        batch.raw(b"job-a", b"garbage")
        batch.add(status_changed("job-a", "InProgress"))
        effect = run(batch)
        assert len(effect.failures) == 1
        assert effect.changed["job-a"].version == 2

    def test_an_event_the_reducer_fails_on_is_reported_and_the_rest_apply(self) -> None:
        """A defect of the reducer on one event (here made to raise for it) becomes that event's
        invalid_event failure with its bytes; the events before and after it, of its job and of
        others, still apply: one event never stops a partition."""
        batch = Batch()
        batch.add(upserted("job-a", workflowId="wf"))
        poison = batch.add(status_changed("job-a", "Poison"))
        batch.add(status_changed("job-a", "InProgress"))
        batch.add(upserted("job-b", workflowId="wf"))

        def failing_apply(state: JobState | None, item: JobEvent, now: datetime) -> object:
            if item.type is EventType.status_changed and item.data.status == "Poison":  # type: ignore[union-attr]
                raise KeyError("a defect")
            return apply(state, item, now)

        with patch("consumer.intake.apply", failing_apply):
            effect = run(batch)
        [failure] = effect.failures
        assert failure.reason is FailureReason.invalid_event
        assert "could not be applied (KeyError: 'a defect')" in failure.error.message
        assert failure.client_job_id == "job-a"
        assert failure.source is not None
        assert failure.source.offset == poison.offset
        assert failure.source.value == b64(poison.value or b"")
        assert effect.changed["job-a"].version == 2
        assert effect.changed["job-a"].status == "InProgress"
        assert effect.changed["job-b"].version == 1

    def test_aiokafka_records_are_taken_as_they_are(self) -> None:
        """The group member hands over aiokafka's own records (no copy): they are applied, and
        a bad one's failure carries its bytes and headers, a null header value included."""
        key, value, headers = encode_binary(upserted("job-a", workflowId="wf"))
        partition = hashes_to(key, PARTITIONS)

        def fetched(
            offset: int, value: bytes, headers: Sequence[tuple[str, bytes]]
        ) -> ConsumerRecord[bytes, bytes]:
            return ConsumerRecord(
                TOPIC, partition, offset, 0, 0, key, value, None, len(key), len(value), headers
            )

        records: list[SourceRecord] = [
            fetched(7, value, tuple(headers)),
            # aiokafka annotates header values as bytes; Kafka allows a null one
            fetched(8, b"garbage", [("trace", None)]),  # type: ignore[list-item]
        ]
        effect = absorb(
            JobStore(),
            records,
            clock=ArrivalClock(lambda: NOW),
            partition_count=PARTITIONS,
            max_event_bytes=MAX_BYTES,
        )
        assert effect.changed["job-a"].document.metadata.workflow_id == "wf"
        assert effect.offsets_by_job["job-a"] == [InputPosition(TOPIC, partition, 7)]
        assert effect.next_offsets == {(TOPIC, partition): 9}
        [failure] = effect.failures
        assert failure.source is not None
        assert (failure.source.offset, failure.source.value) == (8, b64(b"garbage"))
        assert [(h.key, h.value) for h in failure.source.headers] == [("trace", None)]

    def test_an_event_off_its_keys_partition_is_refused_even_for_a_new_job(self) -> None:
        """A key placed by another partitioner is counted and its event refused as
        ``misrouted``, with its bytes, even when the job is new here: the member owning the
        key's partition may hold the job, and one assembling this event alone would post
        part of it. The job's event on its own partition applies, and the job lives there."""
        right = hashes_to(b"job-a", PARTITIONS)
        wrong = (right + 1) % PARTITIONS
        batch = Batch()
        off = batch.add(upserted("job-a", workflowId="wf", jobTitle="off"), partition=wrong)
        batch.add(status_changed("job-a", "InProgress"), partition=right)
        store = JobStore()
        effect = run(batch, store)
        assert effect.misrouted == 1
        assert effect.applied == 1
        [failure] = effect.failures
        assert failure.reason is FailureReason.misrouted
        assert failure.client_job_id == "job-a"
        assert failure.source is not None
        assert (failure.source.partition, failure.source.offset) == (wrong, off.offset)
        assert failure.source.value == b64(off.value or b"")
        assert f"belongs on partition {right} of {PARTITIONS}" in failure.error.message
        assert store.partition_of("job-a") == right
        state = store.get("job-a")
        assert isinstance(state, JobState)
        assert state.status == "InProgress"
        assert state.document.metadata.job_title is None

    def test_a_known_job_keeps_its_partition_for_events_on_their_keys_partition(self) -> None:
        """A job held on a partition its key does not hash to (written so by a version that
        placed a job where its first event came) refuses its events on the key's partition
        too: its state is elsewhere."""
        right = hashes_to(b"job-a", PARTITIONS)
        elsewhere = (right + 1) % PARTITIONS
        first = Batch()
        first.add(upserted("job-a", workflowId="wf"), partition=elsewhere)
        store = JobStore()
        run(first, store, count_misrouted=False)
        assert store.partition_of("job-a") == elsewhere
        later = Batch()
        later.add(status_changed("job-a", "InProgress"), partition=right)
        effect = run(later, store)
        assert effect.misrouted == 0
        [failure] = effect.failures
        assert failure.reason is FailureReason.misrouted
        assert f"lives in partition {elsewhere}" in failure.error.message

    @given(seed=st.integers(0, 10_000), moved=st.sets(st.integers(0, 400), max_size=60))
    def test_events_off_their_partition_change_nothing(self, seed: int, moved: set[int]) -> None:
        """Whichever events a producer puts off their key's partition, the jobs end exactly
        as the events on their partitions alone make them, and each moved event is one
        ``misrouted`` failure: no member assembles a job from what it should not have got."""
        events = build_demo(DemoPlan(jobs=4, steps=3, seed=seed)).events
        moved = {n for n in moved if n < len(events)}
        placed, mixed = Batch(), Batch()
        for n, item in enumerate(events):
            right = hashes_to(item.subject.encode(), PARTITIONS)
            if n not in moved:
                placed.add(item, partition=right)
            mixed.add(item, partition=(right + 1 + n % 3) % PARTITIONS if n in moved else right)
        expected, got = JobStore(), JobStore()
        run(placed, expected)
        effect = run(mixed, got)
        assert effect.misrouted == len(moved)
        assert [f.reason for f in effect.failures].count(FailureReason.misrouted) == len(moved)
        for item in events:  # (the arrival clock ticks for the moved ones too)
            ours, theirs = got.get(item.subject), expected.get(item.subject)
            assert (ours is None) == (theirs is None)
            if isinstance(ours, JobState) and isinstance(theirs, JobState):
                assert (ours.document, ours.version) == (theirs.document, theirs.version)
            assert got.partition_of(item.subject) == expected.partition_of(item.subject)

    def test_keys_the_caller_found_placed_are_not_hashed_again(self) -> None:
        """``count_misrouted=False`` (the pipeline hashed every key of the fetch already and
        found each on its partition) counts nothing; a job's event on another partition than
        its home is still refused."""
        right = hashes_to(b"job-a", PARTITIONS)
        batch = Batch()
        batch.add(upserted("job-a", workflowId="wf"), partition=(right + 1) % PARTITIONS)
        batch.add(status_changed("job-a", "InProgress"), partition=right)
        effect = run(batch, count_misrouted=False)
        assert effect.misrouted == 0
        assert [f.reason for f in effect.failures] == [FailureReason.misrouted]


class TestArrivalClock:
    def test_times_strictly_increase_when_the_wall_clock_stands_still(self) -> None:
        """Events without ``time`` keep arrival order, so equal wall-clock readings are bumped."""
        clock = ArrivalClock(lambda: NOW)
        readings = [clock() for _ in range(5)]
        assert readings == sorted(set(readings))
        assert readings[0] == NOW


def step(job: str, n: int, payload: str = "x" * 900) -> JobEvent:
    wrapper = {"singleStep": {"uniqueStepId": f"s-{n}", "stepNumber": n, "note": payload}}
    return event(job, EventType.step_completed, wrapper)


class TestForgottenAndTooLarge:
    def test_event_of_a_forgotten_job_is_rejected_with_the_markers_version(self) -> None:
        """An event for a key whose marker is in the store is a job_forgotten failure whose
        stateVersion is the marker's version; no state is created (versions never restart)."""
        store = JobStore()
        state = fold(None, [upserted("old", workflowId="wf"), status_changed("old", "Completed")])
        store.put_forgotten(hashes_to(b"old", PARTITIONS), forget(state, NOW))
        batch = Batch()
        batch.add(upserted("old", workflowId="wf", jobTitle="late"))
        effect = run(batch, store)
        [failure] = effect.failures
        assert failure.reason is FailureReason.job_forgotten
        assert failure.state_version == state.version
        assert effect.changed == {}
        assert store.get("old") is None

    def test_events_of_a_job_whose_state_cannot_be_read_are_refused_each(self) -> None:
        """A job restored as unreadable takes no event: each gets a job_state_unreadable
        failure carrying its bytes (to re-send later), no state is made, nothing is marked
        changed (so nothing is posted or written over its value), its offsets still pass, and
        other jobs of the batch are applied."""
        store = JobStore()
        home = hashes_to(b"lost", PARTITIONS)
        store.replace_partition(home, {}, {"lost": "a damaged zstd frame: cut"})
        batch = Batch()
        first = batch.add(upserted("lost", workflowId="wf", jobTitle="partial"))
        batch.add(upserted("fine", workflowId="wf"))
        second = batch.add(status_changed("lost", "Completed"))
        effect = run(batch, store)
        assert [f.reason for f in effect.failures] == [FailureReason.job_state_unreadable] * 2
        assert [f.source.offset for f in effect.failures if f.source] == [
            first.offset,
            second.offset,
        ]
        assert all(
            f.source and f.source.value == b64(first.value or b"") for f in effect.failures[:1]
        )
        assert "a damaged zstd frame" in effect.failures[0].error.message
        assert set(effect.changed) == {"fine"}
        assert store.get("lost") is None
        assert store.unreadable("lost") is not None
        assert effect.next_offsets[(TOPIC, home)] == second.offset + 1

    def test_a_settled_job_found_unreadable_at_its_next_event_refuses_it(self) -> None:
        """A settled job is read only at its next event: a value that cannot be read then
        refuses that event and the later ones, as a restore's unreadable value does; the job is
        never started afresh from the event alone."""
        state = fold(None, [upserted("cut", workflowId="wf")])
        value = compressed(encode_state(state))[:-8]
        store = JobStore()
        store.replace_partition(
            hashes_to(b"cut", PARTITIONS), {"cut": SettledJob("cut", value, NOW, False)}
        )
        for title in ("one", "two"):
            batch = Batch()
            batch.add(upserted("cut", workflowId="wf", jobTitle=title))
            effect = run(batch, store)
            assert [f.reason for f in effect.failures] == [FailureReason.job_state_unreadable]
            assert effect.changed == {}
        assert store.get("cut") is None

    def test_a_job_growing_past_max_job_bytes_is_frozen_with_one_failure(self) -> None:
        """The event that would take a job past max_job_bytes is not applied and gets the one
        job_too_large record; the state stays as it was (flagged), and later events are
        counted, not applied and not reported again, also across batches."""
        store = JobStore()
        sizes = SizeEstimate()
        batch = Batch()
        batch.add(upserted("big", workflowId="wf"))
        for n in range(60):
            batch.add(step("big", n))
        limit = 20_000

        def absorb_limited(records: list[SourceRecord]) -> BatchEffect:
            return absorb(
                store,
                records,
                clock=ArrivalClock(lambda: NOW),
                partition_count=PARTITIONS,
                max_event_bytes=MAX_BYTES,
                max_job_bytes=limit,
                sizes=sizes,
            )

        effect = absorb_limited(batch.records)
        [failure] = effect.failures
        assert failure.reason is FailureReason.job_too_large
        state = store.get("big")
        assert state is not None
        assert state.too_large
        assert len(encode_state(state)) <= limit
        assert failure.state_version == state.version
        assert effect.too_large == 60 - (state.version - 1) - 1
        later = Batch()
        later.add(step("big", 99))
        again = absorb_limited(later.records)
        assert again.failures == []
        assert again.too_large == 1
        assert store.get("big") == state

    @pytest.mark.parametrize("key", ["big", "big-" + "k" * 4_000])
    def test_a_changelog_smaller_than_max_job_bytes_needs_limits_the_job_with_its_key(
        self, key: str
    ) -> None:
        """A changelog topic that holds less than max_job_bytes needs (created by hand):
        the job is frozen with its one job_too_large once its key and state together would
        pass what the topic holds, and the record says that the changelog set the limit."""
        store = JobStore()
        batch = Batch()
        batch.add(upserted(key, workflowId="wf"))
        for n in range(60):
            batch.add(step(key, n))
        room = 20_000
        effect = absorb(
            store,
            batch.records,
            clock=ArrivalClock(lambda: NOW),
            partition_count=PARTITIONS,
            max_event_bytes=MAX_BYTES,
            max_job_bytes=1 << 20,
            sizes=SizeEstimate(),
            changelog_room=room,
        )
        [failure] = effect.failures
        assert failure.reason is FailureReason.job_too_large
        assert "changelog topic's max.message.bytes" in failure.error.message
        state = store.get(key)
        assert state is not None
        assert state.too_large
        assert len(encode_state(state)) + len(key.encode()) <= room
        assert len(encode_state(state)) + len(key.encode()) > room - 2_000  # about one step

    def test_failure_records_carry_the_value_up_to_the_setting(self) -> None:
        """An undecodable value is carried only up to max_failure_value_bytes, with its full
        size and sha256 and its coordinates."""
        batch = Batch()
        value = b"\xff" * 5_000
        record = batch.raw(b"job-x", value)
        effect = absorb(
            JobStore(),
            batch.records,
            clock=ArrivalClock(lambda: NOW),
            partition_count=PARTITIONS,
            max_event_bytes=MAX_BYTES,
            max_failure_value_bytes=100,
        )
        [failure] = effect.failures
        source = failure.source
        assert source is not None
        assert base64.b64decode(source.value or "") == value[:100]
        assert source.value_size == 5_000
        assert source.truncated
        assert source.value_sha256 == hashlib.sha256(value).hexdigest()
        assert (source.partition, source.offset) == (record.partition, record.offset)


HOUR = timedelta(hours=1)


def timed(job: str, at: datetime | None, **data: object) -> JobEvent:
    """An upsert of ``job`` at ``at`` (None: without ``time``)."""
    return upserted(job, workflowId="wf", **data).replaced(time=at)


class TestEventsAheadOfTheClock:
    @pytest.mark.parametrize(
        ("stamped_at", "blamed"),
        [
            (NOW, "the producer's clock or time zone is probably wrong"),
            (None, "the producer's clock or time zone is probably wrong"),
            (NOW + 2 * HOUR, "this member's clock may be behind, or the producer's ahead"),
        ],
        ids=["record-now", "no-timestamp", "client-ahead-too"],
    )
    def test_the_records_create_time_says_whose_clock_to_check(
        self, stamped_at: datetime | None, blamed: str
    ) -> None:
        """A member whose own clock is behind refuses every event of a CreateTime topic: its
        failure records say so when the record's timestamp (the producer client's) is as far
        ahead, not only that the producer's clock is wrong."""
        batch = Batch()
        ms = -1 if stamped_at is None else int(stamped_at.timestamp() * 1000)
        batch.add(timed("job-a", NOW + 2 * HOUR), stamped=(ms, CREATE_TIME))
        (failure,) = run(batch, max_time_ahead=HOUR).failures
        assert failure.reason is FailureReason.invalid_event
        assert "ahead of this consumer's clock" in failure.error.message
        assert blamed in failure.error.message, failure.error.message
        if stamped_at is not None and stamped_at > NOW:
            assert "2:00:00 ahead of this consumer's clock too" in failure.error.message

    def test_a_log_append_time_topic_is_judged_by_the_brokers_clock_when_later(self) -> None:
        """On a topic stamped by the broker (LogAppendTime), a member whose clock is two hours
        behind the broker refuses nothing the broker's clock allows: the event an hour and a
        half past the member's clock applies. One three hours past the broker's is refused,
        measured from the broker's clock, and blamed on the producer."""
        batch = Batch()
        broker_now = int((NOW + 2 * HOUR).timestamp() * 1000)
        batch.add(
            timed("job-a", NOW + 2.5 * HOUR, jobTitle="fine"), stamped=(broker_now, LOG_APPEND_TIME)
        )
        batch.add(timed("job-b", NOW + 5 * HOUR), stamped=(broker_now, LOG_APPEND_TIME))
        effect = run(batch, max_time_ahead=HOUR)
        assert list(effect.changed) == ["job-a"]
        (failure,) = effect.failures
        assert failure.client_job_id == "job-b"
        message = failure.error.message
        assert "is 3:00:00 ahead of the broker's clock (the record's LogAppendTime)" in message
        assert "the producer's clock or time zone is probably wrong" in message

    def test_an_event_hours_ahead_is_refused_with_its_bytes_and_the_batch_goes_on(self) -> None:
        """A producer two hours ahead: its event gets an ``invalid_event`` failure record
        naming how far ahead and the setting, with its original bytes; it changes nothing,
        its offset is passed, and the other jobs of the batch apply."""
        batch = Batch()
        ahead = batch.add(timed("job-a", NOW + 2 * HOUR, jobTitle="from the future"))
        batch.add(timed("job-b", NOW))
        effect = run(batch, max_time_ahead=HOUR)
        assert list(effect.changed) == ["job-b"]
        (failure,) = effect.failures
        assert failure.reason is FailureReason.invalid_event
        assert failure.client_job_id == "job-a"
        assert "is 2:00:00 ahead of this consumer's clock" in failure.error.message
        assert "more than the 1:00:00 allowed" in failure.error.message
        assert "BASICSYNC_KAFKA__MAX_EVENT_TIME_AHEAD_S" in failure.error.message
        assert failure.source is not None
        assert failure.source.value == b64(ahead.value or b"")
        assert effect.next_offsets[(TOPIC, ahead.partition)] >= ahead.offset + 1

    def test_the_limit_is_between_instants_whatever_the_offset_written(self) -> None:
        """Up to the limit applies; a second past it does not; a local time written with its
        own offset is compared as the instant it is."""
        cases = {
            NOW + HOUR: True,
            NOW + HOUR + timedelta(seconds=1): False,
            (NOW + 10 * HOUR).astimezone(timezone(timedelta(hours=14))): False,
            datetime(2026, 1, 2, 1, 30, tzinfo=timezone(timedelta(hours=14))): True,
            (NOW + 2 * HOUR).replace(tzinfo=None): False,  # naive: UTC
            None: True,
        }
        for at, applies in cases.items():
            batch = Batch()
            batch.add(timed("job-a", at))
            effect = run(batch, max_time_ahead=HOUR)
            assert (list(effect.changed) == ["job-a"]) is applies, at
            assert (effect.failures == []) is applies, at

    def test_without_a_limit_any_time_applies(self) -> None:
        batch = Batch()
        batch.add(timed("job-a", datetime(9999, 1, 1, tzinfo=UTC)))
        assert list(run(batch).changed) == ["job-a"]

    def test_re_sent_once_its_time_has_come_it_applies_as_it_would_have(self) -> None:
        """The clock decides only the refusal: the same event later gives the state it
        would have given with no limit."""
        early, late = JobStore(), JobStore()
        for store in (early, late):
            first = Batch()
            first.add(timed("job-a", NOW, jobTitle="now"))
            run(first, store)
        refused = Batch()
        refused.add(timed("job-a", NOW + 3 * HOUR, jobTitle="later"))
        assert run(refused, early, max_time_ahead=HOUR).failures
        effect = run(refused, early, max_time_ahead=HOUR, now=NOW + 2.5 * HOUR)
        unlimited = run(refused, late, now=NOW + 2.5 * HOUR)
        assert effect.failures == []
        assert effect.changed["job-a"].document == unlimited.changed["job-a"].document

    @given(ahead_s=st.integers(-10 * 86_400, 10 * 86_400), limit_s=st.integers(1, 86_400))
    def test_refused_exactly_when_further_ahead_than_the_limit(
        self, ahead_s: int, limit_s: int
    ) -> None:
        batch = Batch()
        batch.add(timed("job-a", NOW + timedelta(seconds=ahead_s)))
        effect = run(batch, max_time_ahead=timedelta(seconds=limit_s))
        assert bool(effect.failures) == (ahead_s > limit_s)
        assert bool(effect.changed) == (ahead_s <= limit_s)
