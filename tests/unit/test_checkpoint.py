"""The checkpoint (consumer.state.checkpoint.Checkpoint): what one commit writes, in what order.

A fake partition producer records each transaction; the store and the records are real.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import OffsetAndMetadata
from structlog.testing import capture_logs

from consumer.domain.job import SEEN_IDS_LIMIT, JobState, mark_sending, mark_synced
from consumer.domain.results import (
    FailureReason,
    FailureRecord,
    SourceInfo,
    SourceOffset,
    SuccessRecord,
)
from consumer.domain.retention import forget
from consumer.domain.settled import SETTLED_HEADER, SettledJob, settled_header
from consumer.domain.state_codec import ValueParts, decode_state, encode_state, value_parts
from consumer.domain.value_compression import decompressed, is_compressed
from consumer.errors import PartitionLost, RecordsTooLarge
from consumer.kafka.limits import ChangelogRoom
from consumer.kafka.transactions import (
    GapReader,
    LogReplaced,
    LogWrittenElsewhere,
    PartitionProducer,
    Producible,
)
from consumer.observability.logging import bound_record
from consumer.state import checkpoint as checkpoint_module
from consumer.state.checkpoint import (
    _INTENT_PARTS_KEPT,
    LEFT_AT_MOST,
    Checkpoint,
    CheckpointTopics,
    WriterReader,
    _IntentParts,
)
from consumer.state.continuity import (
    ChangelogBounds,
    ChangelogFloor,
    ChangelogOwner,
    broken_continuity,
    read_floor,
)
from consumer.state.store import JobStore
from tests.unit.fake_aiokafka import LoggedBroker
from tests.unit.fakes import job_state

TOPICS = CheckpointTopics(changelog="state", succeeded="ok", failed="failed")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeProducer:
    """A ``PartitionProducer`` that keeps each committed transaction; can fail or be fenced."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.transactions: list[tuple[list[Producible], dict[TopicPartition, int]]] = []
        #: each committed transaction's offset metadata
        self.metadata: list[str] = []
        #: each committed transaction's record values, as made when it was written
        self.values: list[list[bytes | None]] = []
        self.fail_next: BaseException | None = None
        self.gate: asyncio.Event | None = None
        self.started = False
        self.stopped = False
        self.next_offset = 0
        #: the ends it was told to count from (``PartitionProducer.count_from``); its commits
        #: do not move them
        self.counted: dict[TopicPartition, int] = {}
        #: the partitions it was told only it writes to, with the reader of their gaps
        self.watched: dict[TopicPartition, GapReader] = {}

    def count_from(self, tp: TopicPartition, end: int, whose_gap: GapReader | None) -> None:
        self.counted[tp] = end
        if whose_gap is not None:
            self.watched[tp] = whose_gap

    def known_end(self, tp: TopicPartition) -> int | None:
        return self.counted.get(tp)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def commit(
        self,
        records: Sequence[Producible],
        offsets: Mapping[TopicPartition, int],
        metadata: str = "",
    ) -> dict[TopicPartition, int]:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        # Each value made once, as its batch is filled, as the real producer does.
        self.values.append([record.value for record in records])
        self.transactions.append((list(records), dict(offsets)))
        self.metadata.append(metadata)
        self.next_offset += len(records)
        return {
            TopicPartition(r.topic, r.partition or 0): self.next_offset - len(records) + n
            for n, r in enumerate(records)
        }


class Rig:
    def __init__(
        self,
        *,
        compress_values: bool = False,
        owner: ChangelogOwner | None = None,
        read_writers: WriterReader | None = None,
    ) -> None:
        self.store = JobStore()
        self.producers: dict[int, FakeProducer] = {}

        def open_producer(partition: int) -> FakeProducer:
            self.producers[partition] = FakeProducer(partition)
            return self.producers[partition]

        self.checkpoint = Checkpoint(
            self.store,
            TOPICS,
            open_producer,  # type: ignore[arg-type]
            compress_values=compress_values,
            owner=owner,
            read_writers=read_writers,
        )

    def put(self, partition: int, state: JobState) -> None:
        self.store.put(partition, state)
        self.checkpoint.stage_changed(partition, state.client_job_id)


def success(job: str) -> SuccessRecord:
    return SuccessRecord(
        client_job_id=job,
        job_id="j",
        http_status=200,
        state_version=1,
        job_status="InProgress",
        attempts=1,
        synced_at=NOW,
        latency_ms=1,
        source_offsets=[],
        payload_sha256="0" * 64,
    )


def failure(job: str) -> FailureRecord:
    return FailureRecord.for_sync(
        client_job_id=job,
        reason=FailureReason.rejected_by_gateway,
        message="no",
        attempts=1,
        state_version=1,
        failed_at=NOW,
    )


async def _ten_posts_behind_a_commit(
    rig: Rig,
) -> tuple[asyncio.Task[None], list[asyncio.Task[None]]]:
    """A commit of job ``first`` started (held by the producer's gate), then ten jobs staged
    and made durable while it runs: the commit's task and the ten waiting ones."""
    rig.put(0, job_state("first"))
    first = asyncio.create_task(rig.checkpoint.make_durable(0))
    await asyncio.sleep(0)
    waiters = []
    for n in range(10):
        rig.put(0, job_state(f"job-{n}"))
        waiters.append(asyncio.create_task(rig.checkpoint.make_durable(0)))
    await asyncio.sleep(0.01)
    return first, waiters


class TestCheckpoint:
    async def test_one_transaction_holds_tombstones_then_states_then_results_then_offsets(
        self,
    ) -> None:
        """A commit writes forgotten jobs' tombstones first (so a job recreated since wins),
        then each changed job once with its current state, then results in staging order,
        with the partition's offsets of every input topic, and nothing of other partitions."""
        rig = Rig()
        await rig.checkpoint.open(0)
        await rig.checkpoint.open(1)
        rig.put(0, job_state("a", title="one"))
        rig.put(0, job_state("a", title="two"))
        rig.put(1, job_state("b"))
        rig.checkpoint.stage_forgotten(0, "gone")
        rig.checkpoint.stage_result(0, success("a"))
        rig.checkpoint.stage_result(0, failure("a"))
        rig.checkpoint.stage_offsets(0, {("in1", 0): 5, ("in2", 0): 7, ("in1", 1): 9})
        await rig.checkpoint.make_durable(0)
        [(records, offsets)] = rig.producers[0].transactions
        assert [(r.topic, r.key) for r in records] == [
            ("state", b"gone"),
            ("state", b"a"),
            ("ok", b"a"),
            ("failed", b"a"),
        ]
        assert records[0].value is None
        assert all(r.partition == 0 for r in records[:2])
        state = rig.store.get("a")
        assert state is not None
        assert records[1].value == encode_state(state)
        assert offsets == {TopicPartition("in1", 0): 5, TopicPartition("in2", 0): 7}
        assert rig.producers[1].transactions == []

    async def test_a_settled_state_is_written_with_its_mark(self) -> None:
        """A settled state's record carries the settled mark (a restore keeps it unread); a
        state with a version to post, or a request in doubt, carries none; nor do results."""
        rig = Rig()
        await rig.checkpoint.open(0)
        done = replace(job_state("done"), synced_version=2, synced_sha256="0" * 64)
        rig.put(0, done)
        rig.put(0, job_state("open"))
        rig.put(0, replace(done, client_job_id="doubt", sending_since=NOW))
        rig.checkpoint.stage_result(0, success("done"))
        await rig.checkpoint.make_durable(0)
        [(records, _)] = rig.producers[0].transactions
        marks = {r.key: r.headers for r in records if r.topic == "state"}
        assert marks[b"done"] == [(SETTLED_HEADER, settled_header(done))]
        assert marks[b"open"] == marks[b"doubt"] == []
        assert [r.headers for r in records if r.topic == "ok"] == [[]]

    async def test_every_changelog_record_names_the_group_that_wrote_it(self) -> None:
        """States (settled or not), markers and tombstones carry the writer's group, so a
        restore can tell another group's records (``ChangelogShared``); results do not."""
        group = ("basicsync-group", b"prod")
        rig = Rig(owner=ChangelogOwner("prod"))
        await rig.checkpoint.open(0)
        done = replace(job_state("done"), synced_version=2, synced_sha256="0" * 64)
        rig.put(0, done)
        rig.put(0, job_state("open"))
        marker = forget(job_state("old"), NOW)
        rig.store.put_forgotten(0, marker)
        rig.checkpoint.stage_marker(0, marker)
        rig.checkpoint.stage_forgotten(0, "gone")
        rig.checkpoint.stage_result(0, success("done"))
        await rig.checkpoint.make_durable(0)
        [(records, _)] = rig.producers[0].transactions
        marks = {r.key: r.headers for r in records if r.topic == "state"}
        assert set(marks) == {b"done", b"open", b"old", b"gone"}
        assert marks[b"done"] == [group, (SETTLED_HEADER, settled_header(done))]
        assert marks[b"open"] == marks[b"old"] == marks[b"gone"] == [group]
        assert [r.headers for r in records if r.topic == "ok"] == [[]]

    async def test_values_compressed_alone_read_back_as_the_states(self) -> None:
        """With ``compress_changelog_values`` each state's value is a zstd frame of its JSON
        (a marker and the results are not: they are not kept unread by a restore); the stored
        size counted is the frame's."""
        rig = Rig(compress_values=True)
        await rig.checkpoint.open(0)
        done = replace(job_state("done"), synced_version=2, synced_sha256="0" * 64)
        rig.put(0, done)
        rig.put(0, job_state("open"))
        rig.checkpoint.stage_forgotten(0, "gone")
        rig.checkpoint.stage_result(0, success("done"))
        await rig.checkpoint.make_durable(0)
        [(records, _)] = rig.producers[0].transactions
        values = {r.key: r.value for r in records if r.topic == "state" and r.value}
        assert set(values) == {b"done", b"open"}
        assert all(is_compressed(v) for v in values.values())
        assert decompressed(values[b"done"]) == encode_state(done)
        assert decode_state(values[b"open"]) == rig.store.get("open")
        assert not is_compressed(next(r for r in records if r.topic == "ok").value or b"")
        assert rig.checkpoint.stored_bytes == sum(map(len, values.values()))

    async def test_a_settled_state_is_written_from_its_intents_parts(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A request writes its job twice, intent then settled state; the settled value is
        made from the intent's head and document (made once), and is the settled state's
        value all the same. A state changed by an event in between is made afresh."""
        made: list[str] = []

        def counted(state: JobState) -> ValueParts:
            made.append(state.client_job_id)
            return value_parts(state)

        monkeypatch.setattr(checkpoint_module, "value_parts", counted)
        rig = Rig(compress_values=True)
        await rig.checkpoint.open(0)

        async def written(state: JobState) -> bytes:
            """``state`` committed, its value as the producer sends it (made there)."""
            rig.put(0, state)
            await rig.checkpoint.make_durable(0)
            producer = rig.producers[0]
            records, values = producer.transactions[-1][0], producer.values[-1]
            return decompressed(
                next(v or b"" for r, v in zip(records, values, strict=True) if r.topic == "state")
            )

        intent = mark_sending(job_state("a"), NOW)
        assert await written(intent) == encode_state(intent)
        settled = mark_synced(intent, intent.version, "ab" * 32, "wfp-a", NOW)
        assert await written(settled) == encode_state(settled)
        assert made == ["a"]
        changed = mark_sending(job_state("a", title="changed"), NOW)
        assert await written(changed) == encode_state(changed)
        assert made == ["a", "a"]

    def test_intent_parts_are_let_go_at_settling_and_kept_for_a_bounded_number_of_jobs(
        self,
    ) -> None:
        kept = _IntentParts()
        intents = [mark_sending(job_state(f"j{n}"), NOW) for n in range(_INTENT_PARTS_KEPT + 1)]
        for intent in intents:
            assert kept.encode(intent) == encode_state(intent)
        assert len(kept) == _INTENT_PARTS_KEPT  # the oldest (j0) let go
        last = intents[-1]
        kept.encode(mark_synced(last, last.version, "ab" * 32, None, NOW))
        assert len(kept) == _INTENT_PARTS_KEPT - 1

    @pytest.mark.parametrize("failure", [KafkaTimeoutError(), asyncio.CancelledError()])
    async def test_a_producer_whose_start_fails_or_is_cancelled_is_stopped(
        self, failure: BaseException
    ) -> None:
        """A start that fails, or is cancelled by a shutdown mid-rebalance, leaves no producer
        running unowned (its sender would outlive the member, and nothing would stop it)."""
        rig = Rig()
        failing = FakeProducer(0)

        async def start() -> None:
            raise failure

        failing.start = start  # type: ignore[method-assign]
        rig.checkpoint._open_producer = lambda partition: failing  # type: ignore[assignment,return-value]
        with pytest.raises(type(failure)):
            await rig.checkpoint.open(0)
        assert failing.stopped
        assert not rig.checkpoint.owns(0)

    async def test_a_failed_commit_keeps_its_work_for_the_next(self) -> None:
        """A commit that fails (not fenced) loses nothing: the next commit carries it, merged
        with what was staged since, offsets at their highest."""
        rig = Rig()
        await rig.checkpoint.open(0)
        rig.put(0, job_state("a"))
        rig.checkpoint.stage_result(0, success("a"))
        rig.checkpoint.stage_offsets(0, {("in", 0): 3})
        rig.producers[0].fail_next = KafkaTimeoutError()
        with pytest.raises(KafkaTimeoutError):
            await rig.checkpoint.make_durable(0)
        rig.put(0, job_state("b"))
        rig.checkpoint.stage_offsets(0, {("in", 0): 4})
        await rig.checkpoint.make_durable(0)
        [(records, offsets)] = rig.producers[0].transactions
        assert sorted(r.key or b"" for r in records if r.topic == "state") == [b"a", b"b"]
        assert [r.topic for r in records if r.topic != "state"] == ["ok"]
        assert offsets == {TopicPartition("in", 0): 4}

    async def test_a_fenced_partition_is_closed_reported_and_refuses_more(self) -> None:
        """When Kafka fences the partition's producer, its staged work is dropped, the
        partition is reported lost once, and every later ``make_durable`` raises."""
        rig = Rig()
        await rig.checkpoint.open(0)
        rig.put(0, job_state("a"))
        rig.producers[0].fail_next = PartitionLost(0, "fenced")
        with pytest.raises(PartitionLost):
            await rig.checkpoint.make_durable(0)
        assert rig.checkpoint.take_lost() == {0}
        assert rig.checkpoint.take_lost() == set()
        assert not rig.checkpoint.owns(0)
        assert rig.producers[0].stopped
        with pytest.raises(PartitionLost):
            await rig.checkpoint.make_durable(0)
        await rig.checkpoint.commit()  # lost partitions are not an error for the loop

    async def test_concurrent_make_durable_calls_share_commits(self) -> None:
        """Ten posts asking for durability while a commit runs cost one more commit, not ten;
        each returns only once what it staged is committed."""
        rig = Rig()
        await rig.checkpoint.open(0)
        producer = rig.producers[0]
        producer.gate = asyncio.Event()
        first, waiters = await _ten_posts_behind_a_commit(rig)
        assert not any(w.done() for w in waiters)
        producer.gate.set()
        await asyncio.gather(first, *waiters)
        assert len(producer.transactions) == 2
        second = {r.key for r in producer.transactions[1][0]}
        assert second == {f"job-{n}".encode() for n in range(10)}

    async def test_waiters_do_not_commit_again_for_work_staged_after_them(self) -> None:
        """The consume loop stages a batch while each commit runs. Posts that waited for one
        commit return once the next one (which took what they staged) is committed: two
        transactions in all, not one more per post queued on the partition lock, each
        carrying only what the loop staged meanwhile."""
        rig = Rig()
        await rig.checkpoint.open(0)
        producer = rig.producers[0]
        producer.gate = asyncio.Event()
        commit = producer.commit
        batches = 0

        async def commit_while_the_loop_stages(
            records: Sequence[Producible],
            offsets: Mapping[TopicPartition, int],
            metadata: str = "",
        ) -> dict[TopicPartition, int]:
            nonlocal batches
            batches += 1
            rig.put(0, job_state(f"loop-{batches}"))  # absorbed while the transaction runs
            return await commit(records, offsets, metadata)

        producer.commit = commit_while_the_loop_stages  # type: ignore[method-assign]
        first, waiters = await _ten_posts_behind_a_commit(rig)
        producer.gate.set()
        await asyncio.wait_for(asyncio.gather(first, *waiters), 1)
        assert len(producer.transactions) == 2
        second = {r.key for r in producer.transactions[1][0]}
        assert {f"job-{n}".encode() for n in range(10)} <= second
        assert rig.checkpoint.has_pending(0)  # the loop's last batch waits for the next commit

    async def test_staging_for_a_partition_not_owned_is_ignored(self) -> None:
        """Effects of a partition this member does not own are never written by it."""
        rig = Rig()
        rig.put(3, job_state("a"))
        rig.checkpoint.stage_result(3, success("a"))
        assert not rig.checkpoint.has_pending(3)
        with pytest.raises(PartitionLost):
            await rig.checkpoint.make_durable(3)


def keys(transaction: tuple[list[Producible], dict[TopicPartition, int]]) -> set[bytes]:
    return {r.key or b"" for r in transaction[0]}


async def intent_held_in_its_commit(
    rig: Rig,
) -> tuple[FakeProducer, asyncio.Event, asyncio.Task[None]]:
    """Job ``first``'s intent, its transaction held until the returned gate is set."""
    await rig.checkpoint.open(0)
    producer = rig.producers[0]
    gate = producer.gate = asyncio.Event()
    rig.put(0, job_state("first"))
    first = asyncio.create_task(rig.checkpoint.make_durable(0, only=("first",)))
    await asyncio.sleep(0)
    return producer, gate, first


class TestIntents:
    """``make_durable(partition, only=jobs)``: the states of the jobs about to be posted."""

    async def test_an_intent_commits_its_jobs_states_alone(self) -> None:
        """Not the partition's other changed jobs, its results or its offsets: they wait for
        the next full commit, which does not write the intent's unchanged job again."""
        rig = Rig()
        await rig.checkpoint.open(0)
        for job in ("posted", "other"):
            rig.put(0, job_state(job))
        rig.checkpoint.stage_result(0, success("earlier"))
        rig.checkpoint.stage_offsets(0, {("in", 0): 7})
        await rig.checkpoint.make_durable(0, only=("posted",))
        producer = rig.producers[0]
        assert len(producer.transactions) == 1
        records, offsets = producer.transactions[0]
        assert [(r.topic, r.key) for r in records] == [("state", b"posted")]
        assert records[0].value == encode_state(rig.store.get("posted"))  # type: ignore[arg-type]
        assert offsets == {}
        assert rig.checkpoint.has_pending(0)
        await rig.checkpoint.commit()
        records, offsets = producer.transactions[1]
        assert [(r.topic, r.key) for r in records] == [("state", b"other"), ("ok", b"earlier")]
        assert offsets == {TopicPartition("in", 0): 7}

    async def test_a_job_changed_after_its_intent_is_written_by_the_next_commit(self) -> None:
        rig = Rig()
        await rig.checkpoint.open(0)
        rig.put(0, job_state("a", title="one"))
        await rig.checkpoint.make_durable(0, only=("a",))
        two = job_state("a", title="two")
        rig.put(0, two)
        await rig.checkpoint.commit()
        written = rig.producers[0].transactions[1][0]
        assert [r.value for r in written] == [encode_state(two)]

    async def test_concurrent_intents_share_one_transaction_of_their_jobs(self) -> None:
        rig = Rig()
        await rig.checkpoint.open(0)
        producer = rig.producers[0]
        producer.gate = asyncio.Event()
        rig.put(0, job_state("first"))
        rig.put(0, job_state("bystander"))
        first = asyncio.create_task(rig.checkpoint.make_durable(0, only=("first",)))
        await asyncio.sleep(0)
        waiters = []
        for n in range(10):
            rig.put(0, job_state(f"job-{n}"))
            waiters.append(asyncio.create_task(rig.checkpoint.make_durable(0, only=(f"job-{n}",))))
        await asyncio.sleep(0.01)
        assert not any(w.done() for w in waiters)
        producer.gate.set()
        await asyncio.wait_for(asyncio.gather(first, *waiters), 1)
        assert [keys(t) for t in producer.transactions] == [
            {b"first"},
            {f"job-{n}".encode() for n in range(10)},
        ]
        assert all(offsets == {} for _, offsets in producer.transactions)

    async def test_the_waiters_of_a_commit_all_learn_its_end_in_a_few_turns(self) -> None:
        """Hundreds of intents committed by one transaction return within a few turns of the
        event loop after it, not one turn each (a lock's queue hands itself on one waiter per
        turn: under load, half a second of waiting for intents long committed)."""
        rig = Rig()
        producer, gate, first = await intent_held_in_its_commit(rig)
        waiters = []
        for n in range(300):
            rig.put(0, job_state(f"job-{n}"))
            waiters.append(asyncio.create_task(rig.checkpoint.make_durable(0, only=(f"job-{n}",))))
        await asyncio.sleep(0)
        gate.set()
        await first
        turns = 0
        while not all(w.done() for w in waiters):
            await asyncio.sleep(0)
            turns += 1
            assert turns < 20, f"{sum(w.done() for w in waiters)} of 300 done after 20 turns"
        await asyncio.gather(*waiters)
        assert [len(keys(t)) for t in producer.transactions] == [1, 300]

    async def test_a_waiter_cancelled_leaves_the_others_waiting_and_committed(self) -> None:
        """A caller cancelled while a commit is in progress (a revoke, a shutdown) neither
        cancels that commit nor the other callers' wait; its job is still committed with
        theirs (it was staged)."""
        rig = Rig()
        producer, gate, first = await intent_held_in_its_commit(rig)
        rig.put(0, job_state("gone"))
        rig.put(0, job_state("kept"))
        gone = asyncio.create_task(rig.checkpoint.make_durable(0, only=("gone",)))
        kept = asyncio.create_task(rig.checkpoint.make_durable(0, only=("kept",)))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        assert not first.done()
        assert not kept.done()
        gate.set()
        await asyncio.wait_for(asyncio.gather(first, kept), 1)
        assert gone.cancelled()
        assert [keys(t) for t in producer.transactions] == [{b"first"}, {b"gone", b"kept"}]

    async def test_a_failed_commit_is_retried_by_one_of_its_waiters(self) -> None:
        """The commit in progress fails (not fenced): its caller gets the error, and one of
        the callers that waited for it commits the work again, with theirs."""
        rig = Rig()
        await rig.checkpoint.open(0)
        producer = rig.producers[0]
        producer.gate = asyncio.Event()
        producer.fail_next = KafkaTimeoutError()
        rig.put(0, job_state("first"))
        first = asyncio.create_task(rig.checkpoint.make_durable(0, only=("first",)))
        await asyncio.sleep(0)
        rig.put(0, job_state("second"))
        second = asyncio.create_task(rig.checkpoint.make_durable(0, only=("second",)))
        await asyncio.sleep(0)
        producer.gate.set()
        with pytest.raises(KafkaTimeoutError):
            await first
        await asyncio.wait_for(second, 1)
        assert [keys(t) for t in producer.transactions] == [{b"first", b"second"}]

    async def test_a_job_past_its_seen_ids_is_committed_with_everything(self) -> None:
        """Its state could not be replayed onto exactly, so it goes with its offsets."""
        rig = Rig()
        await rig.checkpoint.open(0)
        rig.put(0, replace(job_state("long"), arrivals=SEEN_IDS_LIMIT + 1))
        rig.put(0, job_state("other"))
        rig.checkpoint.stage_offsets(0, {("in", 0): 3})
        await rig.checkpoint.make_durable(0, only=("long",))
        [(records, offsets)] = rig.producers[0].transactions
        assert {r.key for r in records} == {b"long", b"other"}
        assert offsets == {TopicPartition("in", 0): 3}

    async def test_a_job_with_a_marker_staged_is_committed_with_everything(self) -> None:
        """A marker or tombstone of the key waits in the full commit; the state must follow
        it there, not overtake it."""
        rig = Rig()
        await rig.checkpoint.open(0)
        rig.checkpoint.stage_marker(0, forget(job_state("back"), NOW))
        back = job_state("back")
        rig.put(0, back)
        await rig.checkpoint.make_durable(0, only=("back",))
        [(records, _)] = rig.producers[0].transactions
        assert [r.key for r in records] == [b"back", b"back"]
        assert records[-1].value == encode_state(back)

    async def test_a_failed_intent_keeps_its_job_for_the_next_commit(self) -> None:
        rig = Rig()
        await rig.checkpoint.open(0)
        rig.put(0, job_state("a"))
        rig.producers[0].fail_next = KafkaTimeoutError()
        with pytest.raises(KafkaTimeoutError):
            await rig.checkpoint.make_durable(0, only=("a",))
        assert rig.checkpoint.has_pending(0)
        await rig.checkpoint.commit()
        assert [keys(t) for t in rig.producers[0].transactions] == [{b"a"}]

    async def test_an_intent_behind_a_full_commit_writes_its_newer_state(self) -> None:
        rig = Rig()
        await rig.checkpoint.open(0)
        producer = rig.producers[0]
        producer.gate = asyncio.Event()
        rig.put(0, job_state("a"))
        rig.checkpoint.stage_offsets(0, {("in", 0): 1})
        full = asyncio.create_task(rig.checkpoint.commit())
        await asyncio.sleep(0)
        sending = job_state("a", title="sending")  # what the scheduler stages for its intent
        rig.put(0, sending)
        intent = asyncio.create_task(rig.checkpoint.make_durable(0, only=("a",)))
        await asyncio.sleep(0.01)
        assert not intent.done()
        producer.gate.set()
        await asyncio.wait_for(asyncio.gather(full, intent), 1)
        assert [keys(t) for t in producer.transactions] == [{b"a"}, {b"a"}]
        records, offsets = producer.transactions[1]
        assert (records[0].value, offsets) == (encode_state(sending), {})


class TooLargeOnce(FakeProducer):
    """Refuses, once, every record whose value is larger than ``refuse_above`` bytes (of
    ``refused_topics`` only, when set)."""

    refuse_above = 3_000
    refused_topics: frozenset[str] | None = None
    #: transactions refused so far
    refusals = 0

    async def commit(
        self,
        records: Sequence[Producible],
        offsets: Mapping[TopicPartition, int],
        metadata: str = "",
    ) -> dict[TopicPartition, int]:
        big = {
            i
            for i, r in enumerate(records)
            if len(r.value or b"") > self.refuse_above
            and (self.refused_topics is None or r.topic in self.refused_topics)
        }
        if big:
            self.refusals += 1
            raise RecordsTooLarge(self.partition, big, "MessageSizeTooLargeError")
        return await super().commit(records, offsets, metadata)


def input_failure(job: str, value: bytes) -> FailureRecord:
    return FailureRecord.for_input(
        reason=FailureReason.invalid_event,
        message="not JSON",
        source=SourceInfo.from_message(
            topic="in", partition=0, offset=7, key=job.encode(), value=value, headers=[]
        ),
        failed_at=NOW,
        client_job_id=job,
    )


class TestRecordSizes:
    async def test_result_records_are_fitted_when_staged(self) -> None:
        """A failure record larger than the result limit is reduced when staged: its value
        dropped, size and sha256 kept; the reduction is counted."""
        store = JobStore()
        producers: dict[int, FakeProducer] = {}

        def open_producer(partition: int) -> FakeProducer:
            producers[partition] = FakeProducer(partition)
            return producers[partition]

        checkpoint = Checkpoint(store, TOPICS, open_producer, result_limit=4_096)  # type: ignore[arg-type]
        await checkpoint.open(0)
        checkpoint.stage_result(0, input_failure("a", b"\xff" * 20_000))
        await checkpoint.make_durable(0)
        [(records, _)] = producers[0].transactions
        assert len(records[0].value or b"") <= 4_096
        record = json.loads(records[0].value or b"")
        assert record["source"]["value"] is None
        assert record["source"]["valueSize"] == 20_000
        assert checkpoint.reduced_records == 1

    async def test_records_refused_as_too_large_are_shrunk_and_committed_with_the_offsets(
        self,
    ) -> None:
        """When Kafka refuses result records as too large, the checkpoint fits them to half
        their size and commits again: one transaction with the smaller records and the offsets,
        never a stall."""
        store = JobStore()
        producers: dict[int, FakeProducer] = {}

        def open_producer(partition: int) -> FakeProducer:
            producers[partition] = TooLargeOnce(partition)
            return producers[partition]

        checkpoint = Checkpoint(store, TOPICS, open_producer)  # type: ignore[arg-type]
        await checkpoint.open(0)
        checkpoint.stage_result(0, input_failure("a", b"\xff" * 5_000))
        checkpoint.stage_result(0, success("b"))
        many = [SourceOffset(topic="in", partition=0, offset=n) for n in range(200)]
        checkpoint.stage_result(0, success("c").model_copy(update={"source_offsets": many}))
        checkpoint.stage_offsets(0, {("in", 0): 8})
        await asyncio.wait_for(checkpoint.make_durable(0), 5)
        [(records, offsets)] = producers[0].transactions
        assert [(r.topic, r.key) for r in records] == [
            (TOPICS.failed, b"a"), (TOPICS.succeeded, b"b"), (TOPICS.succeeded, b"c")
        ]  # fmt: skip
        assert all(len(r.value or b"") <= TooLargeOnce.refuse_above for r in records)
        refitted = SuccessRecord.model_validate_json(records[2].value or b"")
        assert refitted.source_offsets_truncated
        assert refitted.source_offsets == many[-1:]
        assert FailureRecord.model_validate_json(records[0].value or b"").source.truncated  # type: ignore[union-attr]
        assert offsets == {TopicPartition("in", 0): 8}

    async def test_a_marker_is_written_as_the_keys_value(self) -> None:
        """stage_marker writes the forgotten-job marker to the changelog (not the state)."""
        rig = Rig()
        await rig.checkpoint.open(0)
        state = job_state("done", status="Completed")
        rig.put(0, state)
        marker = forget(state, NOW)
        rig.store.put_forgotten(0, marker)
        rig.checkpoint.stage_marker(0, marker)
        await rig.checkpoint.make_durable(0)
        [(records, _)] = rig.producers[0].transactions
        assert [(r.topic, r.key, r.value) for r in records] == [
            ("state", b"done", marker.to_json_bytes())
        ]


class TestKnownEnd:
    async def test_the_end_its_own_writes_explain_is_its_producers_count(self) -> None:
        """A take has the partition's producer count from the end found (the producer counts
        its own writes on: tests/unit/test_partition_producer.py); the checkpoint's known end
        is that count, for the changelog partition; a reopen starts a producer counting
        nothing yet, and a closed partition has no known end."""
        rig = Rig()
        await rig.checkpoint.open(0)
        assert rig.checkpoint.known_end(0) is None
        assert rig.checkpoint.taken(0, ChangelogBounds(0, 12), {}) is None
        assert rig.producers[0].counted == {TopicPartition("state", 0): 12}
        rig.producers[0].counted[TopicPartition("state", 0)] = 15
        assert rig.checkpoint.known_end(0) == 15
        await rig.checkpoint.close(0)
        assert rig.checkpoint.known_end(0) is None
        await rig.checkpoint.open(0)
        assert rig.checkpoint.known_end(0) is None


class TestChangelogFloor:
    async def test_every_commit_marks_its_offsets_with_the_end_before_it(self) -> None:
        """Each transaction's offsets carry the changelog's name and the end the member knew
        before it: the end the partition was taken at, then past its own last commit."""
        rig = Rig()
        await rig.checkpoint.open(0)
        rig.checkpoint.taken(0, ChangelogBounds(0, 40), {})
        for job in ("a", "b"):
            rig.put(0, job_state(job))
            rig.checkpoint.stage_offsets(0, {("in", 0): 5})
            await rig.checkpoint.make_durable(0)
        floors = [read_floor(text) for text in rig.producers[0].metadata]
        assert floors == [ChangelogFloor("state", 40, start_at_most=0)] * 2
        rig.producers[0].counted[TopicPartition("state", 0)] = 43  # as its writes count
        rig.put(0, job_state("c"))
        await rig.checkpoint.make_durable(0)
        assert read_floor(rig.producers[0].metadata[-1]) == ChangelogFloor("state", 43, False, 0)

    async def test_every_commit_marks_its_offsets_with_the_start_it_took_with(self) -> None:
        """The start found at the take, in every commit after it, whatever the member writes
        meanwhile: a deletion while it runs shows at the next take, which finds the start
        above the one its commits carry. A new take carries the start it finds."""
        rig = Rig()
        await rig.checkpoint.open(0)
        rig.checkpoint.taken(0, ChangelogBounds(7, 40), {})
        for job in ("a", "b"):
            rig.put(0, job_state(job))
            await rig.checkpoint.make_durable(0)
        starts = [read_floor(text) for text in rig.producers[0].metadata]
        assert [floor.start_at_most if floor else None for floor in starts] == [7, 7]
        rig.checkpoint.taken(0, ChangelogBounds(30, 44), {})
        rig.put(0, job_state("c"))
        await rig.checkpoint.make_durable(0)
        assert read_floor(rig.producers[0].metadata[-1]) == ChangelogFloor("state", 44, False, 30)

    async def test_a_take_reports_a_changelog_whose_records_were_deleted(self) -> None:
        """Deleted records leave the end where it was: the start found above the one the
        offsets were committed with is what the take reports."""
        rig = Rig()
        await rig.checkpoint.open(1)
        floor = ChangelogFloor("state", 500, start_at_most=0).metadata()
        committed = {TopicPartition("in", 1): OffsetAndMetadata(70, floor)}
        assert rig.checkpoint.taken(1, ChangelogBounds(0, 500), committed) is None
        problem = rig.checkpoint.taken(1, ChangelogBounds(120, 500), committed)
        assert problem is not None
        assert "its records below 120 were deleted" in problem

    async def test_a_take_reports_a_changelog_that_ends_below_the_floor(self) -> None:
        """The take compares the committed offsets' floor with the end it found."""
        rig = Rig()
        await rig.checkpoint.open(1)
        committed = {
            TopicPartition("in", 1): OffsetAndMetadata(70, ChangelogFloor("state", 500).metadata()),
            TopicPartition("other-in", 1): OffsetAndMetadata(3, ""),
        }
        assert rig.checkpoint.taken(1, ChangelogBounds(0, 500), committed) is None
        problem = rig.checkpoint.taken(1, ChangelogBounds(0, 0), committed)
        assert problem is not None
        assert "changelog state partition 1 ends at offset 0" in problem
        assert "at least 500" in problem


class TestChangelogWrittenElsewhere:
    async def test_a_take_tells_the_producer_the_end_only_it_writes_from(self) -> None:
        rig = Rig(owner=ChangelogOwner("g"), read_writers=self.reader([]))
        await rig.checkpoint.open(0)
        rig.checkpoint.taken(0, ChangelogBounds(3, 40), {})
        assert rig.producers[0].counted == {TopicPartition("state", 0): 40}
        assert set(rig.producers[0].watched) == {TopicPartition("state", 0)}

    @pytest.mark.parametrize("owned", [True, False])
    async def test_without_a_reader_of_writers_or_an_owner_nothing_is_checked(
        self, owned: bool
    ) -> None:
        """Still counted: the count is what a rebalance and a replaced changelog check."""
        owner = ChangelogOwner("g") if owned else None
        rig = Rig(owner=owner, read_writers=None if owned else self.reader([]))
        await rig.checkpoint.open(0)
        rig.checkpoint.taken(0, ChangelogBounds(3, 40), {})
        assert rig.producers[0].counted == {TopicPartition("state", 0): 40}
        assert rig.producers[0].watched == {}

    @staticmethod
    def reader(writers: list[bytes | None]) -> WriterReader:
        """What ``writers_between`` returns when the offsets hold records of ``writers``."""

        async def read(
            topic: str, partition: int, first: int, end: int, ours: bytes
        ) -> set[bytes | None]:
            assert (topic, partition, first, end, ours) == ("state", 0, 40, 44, b"g")
            return set(writers) - {ours}

        return read

    @pytest.mark.parametrize(
        ("writers", "described"),
        [
            ([], None),
            ([b"g", b"g"], None),
            ([b"g", b"other"], "consumer group 'other'"),
            ([b"b", None, b"a"], "consumer group 'a', 'b' and a producer naming no group"),
            ([None], "a producer naming no group (by hand, or another tool)"),
            ([b"adopted"], "consumer group 'adopted'"),
        ],
    )
    async def test_the_gap_a_commit_found_is_described_by_its_writers(
        self, writers: list[bytes | None], described: str | None
    ) -> None:
        """Records of this member's group (its own, uncounted) and transaction markers
        (no record) are no other writer; a group it adopted writing now is one."""
        owner = ChangelogOwner("g", frozenset({"adopted"}))
        rig = Rig(owner=owner, read_writers=self.reader(writers))
        await rig.checkpoint.open(0)
        rig.checkpoint.taken(0, ChangelogBounds(0, 40), {})
        whose_gap = rig.producers[0].watched[TopicPartition("state", 0)]
        found = await whose_gap(TopicPartition("state", 0), 40, 44)
        if described is None:
            assert found is None
        else:
            assert found is not None
            assert found.startswith(described)

    async def test_another_writer_found_by_a_commit_loses_the_partition_and_says_why(
        self,
    ) -> None:
        """The producer found another producer's records in the changelog partition
        (``LogWrittenElsewhere``; its transaction aborted): the partition is lost to this
        member, nothing of the commit counts, and the checkpoint keeps why, for the consume
        loop to stop on (``ChangelogWrittenElsewhere``)."""
        rig = Rig()
        await rig.checkpoint.open(0)
        rig.checkpoint.taken(0, ChangelogBounds(0, 0), {})
        producer = rig.producers[0]
        producer.fail_next = LogWrittenElsewhere(
            TopicPartition("state", 0), 4, 0, "consumer group 'other'"
        )
        rig.put(0, job_state("a"))
        rig.checkpoint.stage_offsets(0, {("in", 0): 9})
        lost = pytest.raises(PartitionLost, match="another producer writes its changelog")
        with capture_logs() as logs, lost:
            await rig.checkpoint.make_durable(0)
        assert (
            "at offset 4, where this member's own writes had left it ending at 0: "
            "consumer group 'other' wrote to it since" in rig.checkpoint.written_elsewhere[0]
        )
        assert rig.checkpoint.take_lost() == {0}
        assert producer.transactions == []
        assert [line["event"] for line in logs if line["log_level"] == "error"] == [
            "changelog_written_elsewhere"
        ]
        assert not rig.checkpoint.replaced


class TestChangelogReplacedUnderTheMember:
    async def test_a_write_below_the_known_end_marks_the_committed_offsets_replaced(
        self,
    ) -> None:
        """The producer found a changelog record acknowledged below the end the partition
        was known to have (``LogReplaced``; the transaction aborted). The partition is lost
        to this member, the checkpoint says why, and the offsets committed last are committed
        again, unmoved, marked ``replaced``: the next take refuses the partition even if the
        new topic's end has passed the floor by then."""
        rig = Rig()
        await rig.checkpoint.open(0)
        rig.checkpoint.taken(
            0, ChangelogBounds(0, 40), {TopicPartition("in", 0): OffsetAndMetadata(2, "")}
        )
        rig.put(0, job_state("a"))
        rig.checkpoint.stage_offsets(0, {("in", 0): 5})
        await rig.checkpoint.make_durable(0)
        producer = rig.producers[0]
        producer.fail_next = LogReplaced(TopicPartition("state", 0), 0, 42)
        rig.put(0, job_state("b"))
        rig.checkpoint.stage_offsets(0, {("in", 0): 9})
        with pytest.raises(PartitionLost):
            await rig.checkpoint.make_durable(0)
        assert (
            "changelog state partition 0 was deleted and created again"
            in (rig.checkpoint.replaced[0])
        )
        assert rig.checkpoint.take_lost() == {0}
        records, offsets = producer.transactions[-1]
        assert (records, offsets) == ([], {TopicPartition("in", 0): 5})
        assert read_floor(producer.metadata[-1]) == ChangelogFloor(
            "state", 40, replaced=True, start_at_most=0
        )
        assert broken_continuity("state", 0, [producer.metadata[-1]], ChangelogBounds(0, 10**9))

    async def test_the_offsets_found_at_the_take_are_marked_when_none_was_committed_since(
        self,
    ) -> None:
        """Replaced before this member's first commit: the offsets the group had when it took
        the partition are committed again, marked."""
        rig = Rig()
        await rig.checkpoint.open(0)
        found = {TopicPartition("in", 0): OffsetAndMetadata(2, "")}
        rig.checkpoint.taken(0, ChangelogBounds(0, 40), found)
        producer = rig.producers[0]
        producer.fail_next = LogReplaced(TopicPartition("state", 0), 0, 40)
        rig.put(0, job_state("a"))
        with pytest.raises(PartitionLost):
            await rig.checkpoint.make_durable(0)
        [(records, offsets)] = producer.transactions
        assert (records, offsets) == ([], {TopicPartition("in", 0): 2})
        assert read_floor(producer.metadata[-1]) == ChangelogFloor(
            "state", 40, replaced=True, start_at_most=0
        )

    async def test_the_lines_of_a_commit_an_intent_ran_name_no_job(self) -> None:
        """The commit that finds the changelog replaced is the partition's, whichever job's
        intent happened to run it: its lines keep the partition but do not name that job, and the
        job's own lines after it still do."""
        rig = Rig()
        await rig.checkpoint.open(0)
        rig.checkpoint.taken(
            0, ChangelogBounds(0, 40), {TopicPartition("in", 0): OffsetAndMetadata(2, "")}
        )
        rig.put(0, job_state("a"))
        rig.put(0, job_state("b"))
        rig.producers[0].fail_next = LogReplaced(TopicPartition("state", 0), 0, 40)
        merged = [structlog.contextvars.merge_contextvars]
        with capture_logs(processors=merged) as logs, bound_record(partition=0, client_job_id="a"):
            with pytest.raises(PartitionLost):
                await rig.checkpoint.make_durable(0, only=["a"])
            structlog.get_logger().info("after_the_commit")
        by_event = {line["event"]: line for line in logs}
        assert {"changelog_replaced", "partition_lost", "after_the_commit"} <= set(by_event)
        for event in ("changelog_replaced", "partition_lost"):
            assert "client_job_id" not in by_event[event], by_event[event]
            assert by_event[event]["partition"] == 0
        assert by_event["after_the_commit"]["client_job_id"] == "a"


class _SmallBatches(LoggedBroker):
    """aiokafka's producer with batches of ``capacity`` records; each ``send_batch`` notes how
    many job states' bytes the checkpoint had encoded by then."""

    def __init__(self, checkpoint: Checkpoint, capacity: int) -> None:
        super().__init__()
        self._checkpoint = checkpoint
        self.batch_capacity = capacity
        self.stored_bytes_at_send: list[int] = []

    async def send_batch(self, batch: Any, topic: str, partition: int | None = None) -> Any:
        self.stored_bytes_at_send.append(self._checkpoint.stored_bytes)
        return await super().send_batch(batch, topic, partition)


def ended_state(job: str, status: str = "Completed") -> JobState:
    """A terminal job WorkfloPlus accepted (settled, nothing in doubt)."""
    state = job_state(job, status=status)
    return replace(state, synced_version=state.version, synced_sha256="0" * 64)


class TestEndedJobs:
    async def test_an_ended_job_is_held_as_the_value_written_once_committed(self) -> None:
        """Once its settled state is committed, a job that ended is held as the changelog
        value written (as a restore holds it): not read, needing no sync, and read back into
        the same state when asked for. Completed and Aborted both end a job."""
        rig = Rig(compress_values=True)
        await rig.checkpoint.open(0)
        done, aborted = ended_state("done"), ended_state("aborted", "Aborted")
        rig.put(0, done)
        rig.put(0, aborted)
        await rig.checkpoint.make_durable(0)
        [(records, _)] = rig.producers[0].transactions
        written = {r.key: v for r, v in zip(records, rig.producers[0].values[0], strict=True)}
        for state in (done, aborted):
            job = state.client_job_id
            held = rig.store.held(job)
            assert isinstance(held, SettledJob), held
            assert (held.value, held.updated_at, held.terminal) == (
                written[job.encode()],
                state.updated_at,
                True,
            )
            assert rig.store.is_settled(job)
            assert rig.store.get(job) == state
            assert isinstance(rig.store.held(job), JobState)  # read once, kept read
        assert rig.store.partition_of("done") == 0

    async def test_a_job_not_ended_stays_a_state(self) -> None:
        """Settled but still in progress, ended but with a version to post, or with a request
        in doubt: the job keeps its state as it was."""
        rig = Rig(compress_values=True)
        await rig.checkpoint.open(0)
        live = ended_state("live", "InProgress")
        unposted = replace(ended_state("unposted"), synced_version=0)
        in_doubt = replace(ended_state("in-doubt"), sending_since=NOW)
        for state in (live, unposted, in_doubt):
            rig.put(0, state)
        await rig.checkpoint.make_durable(0)
        for state in (live, unposted, in_doubt):
            assert rig.store.held(state.client_job_id) is state

    async def test_a_job_changed_while_its_ended_state_was_committed_keeps_the_change(
        self,
    ) -> None:
        """An event applied while the commit writing the ended state was under way: the store
        keeps the newer state, never the value of the older one."""
        rig = Rig(compress_values=True)
        await rig.checkpoint.open(0)
        rig.put(0, ended_state("done"))
        producer = rig.producers[0]
        producer.gate = asyncio.Event()
        commit = asyncio.create_task(rig.checkpoint.make_durable(0))
        await asyncio.sleep(0.01)
        newer = replace(ended_state("done"), version=9)
        rig.store.put(0, newer)
        producer.gate.set()
        await commit
        assert rig.store.held("done") is newer

    async def test_an_ended_state_not_committed_stays_a_state(self) -> None:
        """A commit that fails keeps the job's state: the value it made is not durable."""
        rig = Rig(compress_values=True)
        await rig.checkpoint.open(0)
        done = ended_state("done")
        rig.put(0, done)
        rig.producers[0].fail_next = PartitionLost(0, "fenced")
        with pytest.raises(PartitionLost):
            await rig.checkpoint.make_durable(0)
        assert rig.store.held("done") is done


class TestMemoryOfABigCheckpoint:
    async def test_job_states_are_encoded_as_their_batch_is_filled_not_all_at_once(
        self,
    ) -> None:
        """A checkpoint after a backlog writes thousands of states: encoding them all before
        the first batch is sent would hold every value at once, next to the states. When the
        first of ten batches leaves, at most its own states (and the one that did not fit)
        have been encoded; by the end every state has been, and counted once."""
        store = JobStore()
        fakes: list[_SmallBatches] = []

        def open_producer(partition: int) -> PartitionProducer:
            def aiokafka_producer(**_: object) -> _SmallBatches:
                fakes.append(_SmallBatches(checkpoint, capacity=10))
                return fakes[-1]

            return PartitionProducer(aiokafka_producer, "group", partition)

        # Uncompressed, so the sizes noted are the encodings' own.
        checkpoint = Checkpoint(store, TOPICS, open_producer, compress_values=False)
        await checkpoint.open(0)
        states = [job_state(f"job-{n:03d}") for n in range(100)]
        for state in states:
            store.put(0, state)
            checkpoint.stage_changed(0, state.client_job_id)
        await checkpoint.make_durable(0)
        [fake] = fakes
        total = sum(len(encode_state(state)) for state in states)
        largest = max(len(encode_state(state)) for state in states)
        assert len(fake.stored_bytes_at_send) == 10
        assert fake.stored_bytes_at_send[0] <= 11 * largest < total / 5
        assert fake.stored_bytes_at_send == sorted(fake.stored_bytes_at_send)
        assert checkpoint.stored_bytes == total


def failure_at(job: str, offset: int) -> FailureRecord:
    """The failure record of an unusable event of ``job`` at ``offset`` of ``in`` 0."""
    return FailureRecord.for_input(
        reason=FailureReason.invalid_event,
        message="not JSON",
        source=SourceInfo.from_message(
            topic="in", partition=0, offset=offset, key=job.encode(), value=b"{", headers=[]
        ),
        failed_at=NOW,
        client_job_id=job,
    )


class LiveRig(Rig):
    """A rig whose scheduler says ``soon`` jobs are about to be posted."""

    def __init__(self) -> None:
        super().__init__()
        self.soon: set[str] = set()
        self.checkpoint.leave_to_intents_when(lambda job: job in self.soon)

    def apply(self, state: JobState, *offsets: int) -> None:
        """Events of ``in`` 0 at ``offsets`` made ``state``; the loop read up to the last."""
        self.store.put(0, state)
        self.checkpoint.stage_applied(
            0,
            state.client_job_id,
            [SourceOffset(topic="in", partition=0, offset=o) for o in offsets],
        )
        self.checkpoint.stage_offsets(0, {("in", 0): max(offsets) + 1})


IN0 = TopicPartition("in", 0)


class TestLiveCheckpoint:
    """``commit(live=True)``: jobs about to be posted are left to their intents, and the
    offsets committed stop below their first events (consumer.state.deferral)."""

    async def test_a_job_about_to_be_posted_is_left_and_its_events_not_committed(self) -> None:
        rig = LiveRig()
        await rig.checkpoint.open(0)
        rig.apply(job_state("quiet"), 3)
        rig.apply(job_state("posting"), 5, 6)
        rig.apply(job_state("quiet", title="again"), 8)
        rig.soon.add("posting")
        await rig.checkpoint.commit(live=True)
        producer = rig.producers[0]
        assert [keys(t) for t in producer.transactions] == [{b"quiet"}]
        assert producer.transactions[0][1] == {IN0: 5}  # below the left job's first event
        assert rig.checkpoint.pending_jobs == 0  # a left job does not count towards a checkpoint
        # Its intent writes it; the next live checkpoint commits the offsets it held back.
        await rig.checkpoint.make_durable(0, only=("posting",))
        await rig.checkpoint.commit(live=True)
        assert [keys(t) for t in producer.transactions] == [{b"quiet"}, {b"posting"}, set()]
        assert producer.transactions[2][1] == {IN0: 9}

    async def test_a_left_job_changed_again_keeps_its_first_event(self) -> None:
        rig = LiveRig()
        await rig.checkpoint.open(0)
        rig.soon.add("a")
        rig.apply(job_state("a"), 4)
        await rig.checkpoint.commit(live=True)
        rig.apply(job_state("a", title="two"), 9)
        await rig.checkpoint.commit(live=True)
        assert [offsets for _, offsets in rig.producers[0].transactions] == [{IN0: 4}]
        rig.soon.clear()  # no longer due soon (a backoff, the circuit): written, all committed
        await rig.checkpoint.commit(live=True)
        records, offsets = rig.producers[0].transactions[-1]
        assert ([r.key for r in records], offsets) == ([b"a"], {IN0: 10})

    async def test_a_job_always_about_to_be_posted_is_written_after_a_few_checkpoints(
        self,
    ) -> None:
        """(Behind a rate limit, a slow gateway.) Its first event does not hold the offsets
        back for long: a crash replays at most a few intervals more."""
        rig = LiveRig()
        await rig.checkpoint.open(0)
        rig.soon.add("a")
        for n in range(LEFT_AT_MOST + 1):
            rig.apply(job_state("a", title=f"v{n}"), 10 + n)
            await rig.checkpoint.commit(live=True)
        producer = rig.producers[0]
        assert [keys(t) for t in producer.transactions] == [set(), {b"a"}]
        assert [offsets for _, offsets in producer.transactions] == [{IN0: 10}, {IN0: 16}]
        rig.apply(job_state("a", title="later"), 20)  # written since: it may be left again
        await rig.checkpoint.commit(live=True)
        assert producer.transactions[2] == ([], {IN0: 20})

    async def test_nothing_to_write_and_no_offset_to_move_makes_no_transaction(self) -> None:
        rig = LiveRig()
        await rig.checkpoint.open(0)
        rig.soon.add("a")
        rig.apply(job_state("a"), 4)
        await rig.checkpoint.commit(live=True)
        await rig.checkpoint.commit(live=True)
        await rig.checkpoint.commit(live=True)
        assert len(rig.producers[0].transactions) == 1
        assert rig.checkpoint.has_pending(0)

    async def test_a_commit_that_is_not_live_writes_the_left_jobs_and_every_offset(self) -> None:
        """A revoke or a stop: the next owner or the next start replays nothing."""
        rig = LiveRig()
        await rig.checkpoint.open(0)
        rig.soon.add("a")
        rig.apply(job_state("a"), 4)
        await rig.checkpoint.commit(live=True)
        await rig.checkpoint.commit()
        records, offsets = rig.producers[0].transactions[-1]
        assert ([r.key for r in records], offsets) == ([b"a"], {IN0: 5})
        assert not rig.checkpoint.has_pending(0)

    async def test_a_job_the_scheduler_changed_is_never_left(self) -> None:
        """A request's mark or outcome is written by the next commit, due or not."""
        rig = LiveRig()
        await rig.checkpoint.open(0)
        rig.soon.add("a")
        rig.apply(job_state("a"), 4)
        rig.put(0, job_state("a", title="synced"))  # the scheduler's stage_changed
        await rig.checkpoint.commit(live=True)
        [(records, offsets)] = rig.producers[0].transactions
        assert ([r.key for r in records], offsets) == ([b"a"], {IN0: 5})

    async def test_a_job_changed_by_no_named_event_is_never_left(self) -> None:
        """(A job marked too large by an event it did not apply.) Without an offset there
        is nothing to hold the committed offsets below."""
        rig = LiveRig()
        await rig.checkpoint.open(0)
        rig.soon.add("a")
        rig.store.put(0, job_state("a"))
        rig.checkpoint.stage_applied(0, "a", [])
        rig.checkpoint.stage_offsets(0, {("in", 0): 5})
        await rig.checkpoint.commit(live=True)
        [(records, offsets)] = rig.producers[0].transactions
        assert ([r.key for r in records], offsets) == ([b"a"], {IN0: 5})

    async def test_a_job_changed_first_by_no_named_event_is_not_left_for_later_ones(
        self,
    ) -> None:
        """Its first unwritten change is below any offset its later events name."""
        rig = LiveRig()
        await rig.checkpoint.open(0)
        rig.soon.add("a")
        rig.store.put(0, job_state("a"))
        rig.checkpoint.stage_applied(0, "a", [])
        rig.apply(job_state("a", title="two"), 9)
        await rig.checkpoint.commit(live=True)
        [(records, offsets)] = rig.producers[0].transactions
        assert ([r.key for r in records], offsets) == ([b"a"], {IN0: 10})

    async def test_a_failed_commit_of_such_a_job_keeps_it_from_being_left(self) -> None:
        """Events that came while the failed commit ran name later offsets only."""
        rig = LiveRig()
        await rig.checkpoint.open(0)
        producer = rig.producers[0]
        rig.store.put(0, job_state("a"))
        rig.checkpoint.stage_applied(0, "a", [])
        rig.checkpoint.stage_offsets(0, {("in", 0): 5})
        producer.gate = asyncio.Event()
        failing = asyncio.create_task(rig.checkpoint.commit(live=True))
        await asyncio.sleep(0.01)  # the commit took "a" and waits for the producer
        rig.apply(job_state("a", title="two"), 9)
        producer.fail_next = KafkaTimeoutError()
        producer.gate.set()
        with pytest.raises(KafkaTimeoutError):
            await failing
        rig.soon.add("a")
        await rig.checkpoint.commit(live=True)
        [(records, offsets)] = producer.transactions
        assert ([r.key for r in records], offsets) == ([b"a"], {IN0: 10})

    async def test_a_job_whose_intent_failed_is_never_left_after(self) -> None:
        """The intent took the job's first event with it: a later live checkpoint could not
        know how far below to stop, so the job is written with its offsets."""
        rig = LiveRig()
        await rig.checkpoint.open(0)
        rig.apply(job_state("a"), 4)
        rig.producers[0].fail_next = KafkaTimeoutError()
        with pytest.raises(KafkaTimeoutError):
            await rig.checkpoint.make_durable(0, only=("a",))
        rig.apply(job_state("a", title="two"), 9)
        rig.soon.add("a")
        await rig.checkpoint.commit(live=True)
        [(records, offsets)] = rig.producers[0].transactions
        assert ([r.key for r in records], offsets) == ([b"a"], {IN0: 10})

    async def test_the_failure_of_an_event_above_the_offsets_waits_with_all_after_it(
        self,
    ) -> None:
        """A replay would report that event again; the records keep their staging order."""
        rig = LiveRig()
        await rig.checkpoint.open(0)
        rig.soon.add("a")
        rig.checkpoint.stage_result(0, failure_at("x", 2))
        rig.apply(job_state("a"), 4)
        rig.checkpoint.stage_result(0, failure_at("y", 6))
        rig.checkpoint.stage_result(0, success("z"))
        await rig.checkpoint.commit(live=True)
        records, offsets = rig.producers[0].transactions[0]
        assert ([(r.topic, r.key) for r in records], offsets) == ([("failed", b"x")], {IN0: 4})
        rig.soon.clear()
        await rig.checkpoint.commit(live=True)
        records, offsets = rig.producers[0].transactions[1]
        assert [(r.topic, r.key) for r in records] == [
            ("state", b"a"),
            ("failed", b"y"),
            ("ok", b"z"),
        ]
        assert offsets == {IN0: 5}

    async def test_nothing_is_left_when_a_state_written_could_not_be_replayed_onto(
        self,
    ) -> None:
        """States written go ahead of the offsets a left job holds back: a replay must
        find their events duplicates."""
        rig = LiveRig()
        await rig.checkpoint.open(0)
        rig.soon.add("a")
        rig.apply(job_state("a"), 4)
        rig.apply(replace(job_state("long"), arrivals=SEEN_IDS_LIMIT + 1), 6)
        await rig.checkpoint.commit(live=True)
        [(records, offsets)] = rig.producers[0].transactions
        assert ({r.key for r in records}, offsets) == ({b"a", b"long"}, {IN0: 7})

    async def test_nothing_is_left_with_a_marker_or_tombstone_staged(self) -> None:
        rig = LiveRig()
        await rig.checkpoint.open(0)
        rig.soon.add("a")
        rig.apply(job_state("a"), 4)
        rig.checkpoint.stage_marker(0, forget(job_state("old"), NOW))
        await rig.checkpoint.commit(live=True)
        [(records, offsets)] = rig.producers[0].transactions
        assert ({r.key for r in records}, offsets) == ({b"a", b"old"}, {IN0: 5})

    async def test_an_intent_waiting_in_the_commit_is_not_left(self) -> None:
        """Its request waits for this very transaction."""
        rig = LiveRig()
        await rig.checkpoint.open(0)
        producer = rig.producers[0]
        producer.gate = asyncio.Event()
        rig.apply(job_state("first"), 1)
        busy = asyncio.create_task(rig.checkpoint.make_durable(0, only=("first",)))
        await asyncio.sleep(0)
        rig.soon.add("a")
        rig.apply(job_state("a"), 4)
        live = asyncio.create_task(rig.checkpoint.commit(live=True))
        await asyncio.sleep(0)
        intent = asyncio.create_task(rig.checkpoint.make_durable(0, only=("a",)))
        await asyncio.sleep(0)
        producer.gate.set()
        await asyncio.wait_for(asyncio.gather(busy, live, intent), 1)
        assert [(keys(t), offsets) for t in producer.transactions[1:] for offsets in [t[1]]] == [
            ({b"a"}, {IN0: 5})
        ]


class RefusesLargeStates(TooLargeOnce):
    """A changelog whose ``max.message.bytes`` refuses every state over 2,000 bytes."""

    refuse_above = 2_000
    refused_topics = frozenset([TOPICS.changelog])


class TestChangelogHoldsLess:
    """The changelog's ``max.message.bytes`` lowered under the member: the room shrinks and the
    partition is read again, or a state held from before is left as it was; never a stall."""

    def rig(
        self, described: int | None, room: int | None = None
    ) -> tuple[Checkpoint, JobStore, dict[int, RefusesLargeStates]]:
        store = JobStore()
        producers: dict[int, RefusesLargeStates] = {}

        def open_producer(partition: int) -> RefusesLargeStates:
            producers[partition] = RefusesLargeStates(partition)
            return producers[partition]

        async def read_room() -> int | None:
            return described

        checkpoint = Checkpoint(
            store,
            TOPICS,
            open_producer,  # type: ignore[arg-type]
            compress_values=False,
            room=ChangelogRoom(room),
            read_room=read_room,
        )
        return checkpoint, store, producers

    async def test_a_refused_state_lowers_the_room_and_gives_the_partition_up(self) -> None:
        """Without the topic's configuration the refused size bounds the room; with it, the
        configuration decides when lower. Nothing of the transaction is committed."""
        for described, expected in ((None, None), (50, 50)):
            checkpoint, store, producers = self.rig(described)
            await checkpoint.open(0)
            big = job_state("big", title="x" * 4_000)
            store.put(0, big)
            checkpoint.stage_changed(0, "big")
            checkpoint.stage_offsets(0, {("in", 0): 5})
            with pytest.raises(PartitionLost, match="changelog holds less"):
                await asyncio.wait_for(checkpoint.make_durable(0), 5)
            refused = len(b"big") + len(encode_state(big))
            assert checkpoint.changelog_room == (expected or refused - 1)
            assert checkpoint.take_lost() == {0}
            assert producers[0].transactions == []

    async def test_a_state_above_the_room_it_was_taken_under_is_left_as_it_was(self) -> None:
        """Taken again under the lowered room, a state restored from before (above the room,
        grown by no event since) is refused once more: it is not written again, while the
        other jobs, the results and the offsets commit, now and at every later commit."""
        checkpoint, store, producers = self.rig(None, room=1_500)  # lowered before this take
        await checkpoint.open(0)
        store.put(0, job_state("big", title="x" * 4_000))
        store.put(0, job_state("small"))
        for job in ("big", "small"):
            checkpoint.stage_changed(0, job)
        checkpoint.stage_result(0, success("small"))
        checkpoint.stage_offsets(0, {("in", 0): 5})
        await asyncio.wait_for(checkpoint.make_durable(0), 5)
        checkpoint.stage_changed(0, "big")
        checkpoint.stage_offsets(0, {("in", 0): 6})
        await asyncio.wait_for(checkpoint.make_durable(0), 5)
        assert [
            (sorted(r.key or b"" for r in records), offsets)
            for records, offsets in producers[0].transactions
        ] == [
            ([b"small", b"small"], {TopicPartition("in", 0): 5}),  # its state, its result
            ([], {TopicPartition("in", 0): 6}),
        ]
        assert checkpoint.take_lost() == set()
        assert checkpoint.changelog_room == 1_500
        assert producers[0].refusals == 1  # the second commit did not try it again
        # Changed by an event (a job started again under the key, say): it is tried again.
        changed = store.get("big")
        assert changed is not None
        store.put(0, dataclasses.replace(changed, version=changed.version + 1))
        checkpoint.stage_changed(0, "big")
        await asyncio.wait_for(checkpoint.make_durable(0), 5)
        assert producers[0].refusals == 2

    async def test_a_partition_taken_before_the_room_shrank_is_read_again(self) -> None:
        """Its states may have grown under the larger room: the one refused is not simply
        left out, the partition is taken again."""
        checkpoint, store, _ = self.rig(None)
        await checkpoint.open(0)
        await checkpoint.open(1)
        store.put(0, job_state("big0", title="x" * 4_000))
        checkpoint.stage_changed(0, "big0")
        with pytest.raises(PartitionLost):
            await asyncio.wait_for(checkpoint.make_durable(0), 5)
        store.put(1, job_state("big1", title="x" * 9_000))
        checkpoint.stage_changed(1, "big1")
        with pytest.raises(PartitionLost, match="changelog holds less"):
            await asyncio.wait_for(checkpoint.make_durable(1), 5)
        assert checkpoint.take_lost() == {0, 1}
