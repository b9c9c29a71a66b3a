"""The transactional writer of one partition (consumer.kafka.transactions.PartitionProducer):
how it reacts to what aiokafka raises when its producer was fenced between two calls.

A fake stands in for aiokafka's producer (its transaction manager's state is all that
matters here); the real one is exercised against the broker in tests/integration.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import OffsetAndMetadata
from structlog.testing import capture_logs

from consumer.errors import PartitionLost
from consumer.kafka import transactions
from consumer.kafka.transactions import (
    CommitTrouble,
    GapReader,
    LogReplaced,
    LogWrittenElsewhere,
    OutRecord,
    PartitionProducer,
)
from tests.unit.fake_aiokafka import FencedMidTransaction, LoggedBroker

RECORDS = [OutRecord("t", b"k", b"v", 0)]


STATE = TopicPartition("state", 0)


def state_records(count: int) -> list[OutRecord]:
    return [OutRecord("state", f"job-{i}".encode(), b"{}", 0) for i in range(count)]


class HungReader:
    """A gap reader whose first read never answers (a broker that stopped answering) until
    it is cancelled; the reads after it go to ``then``."""

    def __init__(self, then: GapReader | None = None) -> None:
        self.reading = asyncio.Event()
        self.cancelled = asyncio.Event()
        self._then = then

    async def __call__(self, tp: TopicPartition, first: int, end: int) -> str | None:
        if self.reading.is_set() and self._then is not None:
            return await self._then(tp, first, end)
        self.reading.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.cancelled.set()
        return None


class TestPartitionProducer:
    async def test_a_producer_whose_sender_died_is_reported_lost_not_raised(self) -> None:
        """aiokafka refuses a send with IllegalOperation once the producer was fenced between
        ``begin_transaction`` and ``send``: that is a lost partition, never an escaping error."""
        fake = FencedMidTransaction(fatal=True)
        producer = PartitionProducer(lambda **_: fake, "group", 0, retry_backoff_s=0.001)
        with pytest.raises(PartitionLost):
            await producer.commit(RECORDS, {})

    async def test_a_transaction_that_fails_after_sending_leaves_no_error_unread(self) -> None:
        """A broker restarting under a transaction: a batch was sent, then the sender died
        (the offsets' request failed, the batch's acknowledgement fails with it). The partition
        is lost, and the acknowledgement's error is read: asyncio logs none as "Future
        exception was never retrieved" when it is collected."""
        fake = FencedMidTransaction(fatal=False, fail_sends=0)
        acknowledgements: list[asyncio.Future[Any]] = []
        sent = fake.send_batch

        async def send_batch(*args: Any, **kwargs: Any) -> Any:
            future = asyncio.get_running_loop().create_future()
            acknowledgements.append(future)
            await sent(*args, **kwargs)
            return future

        async def sender_died(*_: Any) -> None:
            fake._txn_manager.fatal = True
            for future in acknowledgements:
                future.set_exception(KafkaError("Unexpected error during batch delivery"))
            raise KafkaError("Unexpected error during batch delivery")

        fake.send_batch = send_batch  # type: ignore[method-assign]
        fake.send_offsets_to_transaction = sender_died  # type: ignore[attr-defined]
        unread: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: unread.append(context))
        try:
            producer = PartitionProducer(lambda **_: fake, "group", 0, retry_backoff_s=0.001)
            lost = False
            try:
                await producer.commit(RECORDS, {TopicPartition("in", 0): 5})
            except PartitionLost:
                lost = True
            assert lost
            assert len(acknowledgements) == 1
            acknowledgements.clear()
            await asyncio.sleep(0)  # the done callbacks run
            gc.collect()
        finally:
            loop.set_exception_handler(None)
        assert unread == []

    async def test_a_transient_failure_is_retried_until_it_commits(self) -> None:
        """A send that times out (a hung broker) aborts the transaction and repeats it whole;
        the commit then returns the offsets written."""
        fake = FencedMidTransaction(fatal=False, fail_sends=2)
        producer = PartitionProducer(lambda **_: fake, "group", 0, retry_backoff_s=0.001)
        written = await producer.commit(RECORDS, {})
        assert fake.commits == 1
        assert list(written.values()) == [7]

    async def test_failing_attempts_are_commit_trouble_until_the_commit_returns(self) -> None:
        """While a commit is retried, ``trouble`` names the partition, the failed attempts and
        the last error, from the first failure on (what ``/readyz`` shows); it is cleared once
        the commit returns."""
        fake = FencedMidTransaction(fatal=False, fail_sends=3)
        producer = PartitionProducer(lambda **_: fake, "group", 4, retry_backoff_s=0.05)
        assert producer.trouble is None
        commit = asyncio.create_task(producer.commit(RECORDS, {}))
        seen: list[CommitTrouble] = []
        while not commit.done():
            if producer.trouble is not None:
                seen.append(producer.trouble)
            await asyncio.sleep(0.01)
        await commit
        assert producer.trouble is None
        assert [t.failed_attempts for t in seen][-1] == 3
        assert {t.partition for t in seen} == {4}
        assert len({t.since for t in seen}) == 1, "the first failure's time is kept"
        assert all("KafkaTimeoutError" in t.detail for t in seen)
        text = seen[-1].describe(seen[-1].since + 12.4)
        assert text.startswith("partition 4: commits failing for 12s (3 attempts), last: Kafka")

    async def test_a_commit_that_waits_without_an_error_is_logged_while_it_waits(self) -> None:
        """A commit that neither returns nor fails (an answer aiokafka never times out) logs
        ``checkpoint_slow`` with what it waits for, every ``slow_after_s``, and stops once it
        has committed."""
        fake = FencedMidTransaction(fatal=False, fail_sends=0)
        answered = asyncio.Event()
        committed = fake.commit_transaction

        async def hung_commit() -> None:
            await answered.wait()
            await committed()

        fake.commit_transaction = hung_commit  # type: ignore[method-assign]
        producer = PartitionProducer(lambda **_: fake, "group", 3, slow_after_s=0.05)
        with capture_logs() as logs:
            commit = asyncio.create_task(producer.commit(RECORDS, {}))
            await asyncio.sleep(0.18)
            slow = [line for line in logs if line["event"] == "checkpoint_slow"]
            trouble = producer.trouble
            answered.set()
            await commit
            await asyncio.sleep(0.12)
        assert len(slow) >= 2, slow
        assert {line["waiting_for"] for line in slow} == {"commit_transaction"}
        assert {line["partition"] for line in slow} == {3}
        assert slow[-1]["seconds"] >= 0.1
        after = [line for line in logs if line["event"] == "checkpoint_slow"][len(slow) :]
        assert len(after) <= 1, f"still logged after the commit: {after}"
        assert fake.commits == 1
        assert trouble is not None
        assert trouble.failed_attempts == 0
        assert trouble.describe(trouble.since + 3) == (
            "partition 3: a commit waiting 3s for commit_transaction"
        )
        assert producer.trouble is None

    async def test_a_prompt_commit_logs_nothing_slow(self) -> None:
        fake = FencedMidTransaction(fatal=False, fail_sends=0)
        producer = PartitionProducer(lambda **_: fake, "group", 0, slow_after_s=0.05)
        with capture_logs() as logs:
            await producer.commit(RECORDS, {})
            await asyncio.sleep(0.12)
        assert not [line for line in logs if line["event"] == "checkpoint_slow"]
        assert producer.trouble is None

    async def test_records_without_a_partition_go_where_the_java_partitioner_puts_their_key(
        self,
    ) -> None:
        """Result records carry no partition: each goes where aiokafka's default partitioner
        (the Java client's murmur2) puts its key, and the topic's partitions are looked up once
        per transaction, not once per record."""
        fake = FencedMidTransaction(fatal=False, fail_sends=0)
        lookups: list[str] = []
        sent: list[tuple[str, int]] = []

        async def partitions_for(topic: str) -> set[int]:
            lookups.append(topic)
            return set(range(6))

        async def send_batch(batch: Any, topic: str, *, partition: int) -> Any:
            sent.append((topic, partition))
            return await FencedMidTransaction.send_batch(fake, batch, topic, partition=partition)

        fake.partitions_for = partitions_for  # type: ignore[attr-defined]
        fake.send_batch = send_batch  # type: ignore[method-assign]
        keys = [f"job-{n}".encode() for n in range(40)]
        records = [OutRecord("results", key, b"v") for key in keys]
        producer = PartitionProducer(lambda **_: fake, "group", 0)
        await producer.commit(records, {})
        java = DefaultPartitioner()
        expected = {("results", java(key, list(range(6)), list(range(6)))) for key in keys}
        assert set(sent) == expected
        assert len(expected) > 1
        assert lookups == ["results"]

    async def test_a_commit_cancelled_midway_is_aborted_before_the_next_begins(self) -> None:
        """A stop's or a revoke's deadline cancels a commit waiting on the broker, its
        transaction open. The next commit aborts it first (aiokafka refuses to begin a
        transaction inside another): no failed attempt, no ``checkpoint_retry``."""
        fake = FencedMidTransaction(fatal=False, fail_sends=0)
        aborts = 0
        begin, abort, send = fake.begin_transaction, fake.abort_transaction, fake.send_batch
        hang = asyncio.Event()

        async def strict_begin() -> None:
            assert not fake._txn_manager.in_transaction, "IN_TRANSACTION -> IN_TRANSACTION"
            await begin()

        async def counted_abort() -> None:
            nonlocal aborts
            aborts += 1
            await abort()

        async def hanging_send(*args: Any, **kwargs: Any) -> Any:
            if not hang.is_set():
                hang.set()
                await asyncio.Event().wait()
            return await send(*args, **kwargs)

        fake.begin_transaction = strict_begin  # type: ignore[method-assign]
        fake.abort_transaction = counted_abort  # type: ignore[method-assign]
        fake.send_batch = hanging_send  # type: ignore[method-assign]
        producer = PartitionProducer(lambda **_: fake, "group", 0, retry_backoff_s=0.001)
        first = asyncio.create_task(producer.commit(RECORDS, {}))
        await hang.wait()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert fake._txn_manager.in_transaction
        with capture_logs() as logs:
            await producer.commit(RECORDS, {})
        assert aborts == 1
        assert fake.commits == 1
        assert not [line for line in logs if line["event"] == "checkpoint_retry"]


class TestCountedEnd:
    async def test_a_record_acknowledged_below_the_known_end_aborts_the_transaction(
        self,
    ) -> None:
        """The fake's broker puts every batch at offset 7: a topic partition counted from an
        end of 10 was replaced since. Nothing of the transaction is committed (it is aborted,
        not retried) and ``LogReplaced`` names it."""
        fake = FencedMidTransaction(fatal=False, fail_sends=0)
        producer = PartitionProducer(lambda **_: fake, "group", 0, retry_backoff_s=0.001)
        producer.count_from(TopicPartition("t", 0), 10, None)
        with pytest.raises(LogReplaced, match="t partition 0 took a record at offset 7, below"):
            await producer.commit(RECORDS, {})
        assert fake.commits == 0
        assert not fake._txn_manager.in_transaction
        assert producer.known_end(TopicPartition("t", 0)) == 10

    async def test_records_at_or_past_the_known_end_commit(self) -> None:
        fake = FencedMidTransaction(fatal=False, fail_sends=0)
        producer = PartitionProducer(lambda **_: fake, "group", 0, retry_backoff_s=0.001)
        producer.count_from(TopicPartition("t", 0), 7, None)
        written = await producer.commit(RECORDS, {})
        assert written == {TopicPartition("t", 0): 7}
        assert fake.commits == 1

    async def test_the_end_is_counted_past_each_commit_marker_and_only_where_counted(
        self,
    ) -> None:
        """Not counted: no end known. Counted from 40 (the take): past the last record of
        each commit and its marker; a commit without records there leaves it; a transaction
        that failed leaves it where it was, a floor (its records and abort marker took
        offsets uncounted) until a commit wrote there again."""
        broker = LoggedBroker()
        broker.ends[("state", 0)] = 40
        producer = PartitionProducer(lambda **_: broker, "group", 0, retry_backoff_s=0.001)
        assert producer.known_end(STATE) is None
        producer.count_from(STATE, 40, None)
        assert producer.known_end(STATE) == 40
        await producer.commit(state_records(2), {})
        assert producer.known_end(STATE) == 43  # records at 40 and 41, the marker at 42
        await producer.commit([OutRecord("results", b"k", b"r", 0)], {})
        assert producer.known_end(STATE) == 43
        assert producer.known_end(TopicPartition("results", 0)) is None
        broker.fail_next_ack = True
        await producer.commit(state_records(1), {})  # 43 and a marker lost, then 45, 46
        assert (broker.aborts, producer.known_end(STATE)) == (1, 47)
        assert broker.ends[("state", 0)] == 47

    async def test_the_offsets_carry_the_metadata(self) -> None:
        fake = FencedMidTransaction(fatal=False, fail_sends=0)
        sent: list[tuple[dict[TopicPartition, Any], str]] = []

        async def send_offsets(offsets: dict[TopicPartition, Any], group: str) -> None:
            sent.append((offsets, group))

        fake.send_offsets_to_transaction = send_offsets  # type: ignore[attr-defined]
        producer = PartitionProducer(lambda **_: fake, "group", 0, retry_backoff_s=0.001)
        await producer.commit(RECORDS, {TopicPartition("in", 0): 5}, "the floor")
        assert sent == [({TopicPartition("in", 0): OffsetAndMetadata(5, "the floor")}, "group")]

    async def test_a_batch_acknowledged_without_an_offset_is_not_taken_for_a_replaced_topic(
        self,
    ) -> None:
        """A retried batch the broker found already written, too long ago to have kept its
        offset (``DuplicateSequenceNumber``), is acknowledged with offset -1: that says nothing
        of the topic, and the transaction commits."""
        fake = FencedMidTransaction(fatal=False, fail_sends=0)

        async def send_batch(*args: Any, **kwargs: Any) -> Any:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

            class _Unknown:
                topic, partition, offset = "t", 0, -1

            future.set_result(_Unknown())
            return future

        fake.send_batch = send_batch  # type: ignore[method-assign]
        producer = PartitionProducer(lambda **_: fake, "group", 0, retry_backoff_s=0.001)
        producer.count_from(TopicPartition("t", 0), 10, None)
        await producer.commit(RECORDS, {})
        assert fake.commits == 1
        assert producer.known_end(TopicPartition("t", 0)) == 10


def watched(broker: LoggedBroker, end: int = 0) -> PartitionProducer:
    broker.ends[("state", 0)] = end
    producer = PartitionProducer(lambda **_: broker, "group", 0, retry_backoff_s=0.001)
    producer.count_from(STATE, end, broker.whose_gap)
    return producer


class TestAnotherWriter:
    async def test_back_to_back_commits_of_its_own_are_never_taken_for_another_writer(
        self,
    ) -> None:
        """Intents and checkpoints, with and without changelog records, each commit marker
        counted: no false alarm over many commits."""
        broker = LoggedBroker()
        producer = watched(broker, end=40)
        for count in [1, 3, 0, 2, 5, 0, 0, 1]:
            results = [OutRecord("results", b"k", b"r", 0)]
            await producer.commit([*state_records(count), *results], {})
        assert broker.commits == 8

    async def test_a_record_written_by_another_producer_aborts_the_next_commit(self) -> None:
        """Another producer appends one record to the changelog partition between two of
        this producer's commits: the next commit's first record lands one offset further on
        than its own writes explain. That transaction is aborted, never retried or committed,
        and ``LogWrittenElsewhere`` names the partition, both offsets and the count."""
        broker = LoggedBroker()
        producer = watched(broker, end=10)
        await producer.commit(state_records(2), {})  # 10, 11, marker 12
        broker.intrude("state", 0, 1)  # 13
        with pytest.raises(LogWrittenElsewhere) as raised:
            await producer.commit(state_records(1), {TopicPartition("in", 0): 3})
        assert str(raised.value) == (
            "state partition 0 took this member's record at offset 14, where this member's "
            "own writes had left it ending at 13: consumer group 'other' wrote to it since"
        )
        assert (broker.commits, broker.aborts) == (1, 1)
        assert not broker._txn_manager.in_transaction

    async def test_offsets_holding_only_markers_and_its_own_records_are_no_alarm(
        self,
    ) -> None:
        """A broker restarted under a transaction leaves a marker this producer did not
        count, and an attempt it repeated may land twice: the records there are read back,
        none is another's, the commit goes on (``changelog_gap_explained``) and the count is
        right again after it."""
        broker = LoggedBroker()
        producer = watched(broker, end=0)
        await producer.commit(state_records(2), {})
        broker.marker("state", 0)
        broker.intrude("state", 0, 1, writer="us")
        with capture_logs() as logs:
            await producer.commit(state_records(1), {})
        explained = [line for line in logs if line["event"] == "changelog_gap_explained"]
        assert [(line["expected"], line["end"]) for line in explained] == [(3, 5)]
        assert broker.gaps_read == [(2, 5)]
        assert broker.commits == 2
        broker.intrude("state", 0, 1)
        with pytest.raises(LogWrittenElsewhere):
            await producer.commit(state_records(1), {})

    async def test_a_gap_that_cannot_be_read_is_no_alarm(self) -> None:
        """The reader fails (the broker is going away again): the commit goes on, with a
        warning; the next restore checks every record's writer anyway."""
        broker = LoggedBroker()
        producer = PartitionProducer(lambda **_: broker, "group", 0, retry_backoff_s=0.001)

        async def unreadable(tp: TopicPartition, first: int, end: int) -> str | None:
            raise KafkaTimeoutError()

        producer.count_from(STATE, 0, unreadable)
        broker.intrude("state", 0, 2)
        with capture_logs() as logs:
            await producer.commit(state_records(1), {})
        assert broker.commits == 1
        assert [line["event"] for line in logs if line["log_level"] == "warning"] == [
            "changelog_gap_unread"
        ]

    async def test_a_gap_read_that_hangs_is_given_up_in_time_and_the_commit_goes_on(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A broker that stops answering the reader (not failing it): the read is bounded
        (``GAP_READ_TIMEOUT_S``), the commit goes on after it with a warning, and the reader
        was cancelled, not left running."""
        monkeypatch.setattr(transactions, "GAP_READ_TIMEOUT_S", 0.05)
        broker = LoggedBroker()
        producer = PartitionProducer(lambda **_: broker, "group", 0, retry_backoff_s=0.001)
        hung = HungReader()
        producer.count_from(STATE, 0, hung)
        broker.intrude("state", 0, 2)
        with capture_logs() as logs:
            await asyncio.wait_for(producer.commit(state_records(1), {}), 5)
        assert broker.commits == 1
        assert hung.cancelled.is_set()
        [unread] = [line for line in logs if line["event"] == "changelog_gap_unread"]
        assert (unread["expected"], unread["end"]) == (0, 2)
        assert "TimeoutError" in unread["error"]

    async def test_a_record_appended_before_its_own_commit_marker_is_found(self) -> None:
        """Two transactions open at once: another producer's record lands after this one's
        last record and before its commit marker, which it pushes on. The next commit lands
        one offset late; the offsets read back start where the marker was to be, so the
        record is found (it would hide before the expected end otherwise)."""
        broker = LoggedBroker()
        producer = watched(broker, end=0)
        broker.before_marker = lambda: broker.intrude("state", 0, 1)
        await producer.commit(state_records(2), {})  # 0, 1, the other's 2, marker 3
        with pytest.raises(LogWrittenElsewhere):
            await producer.commit(state_records(1), {})
        assert broker.gaps_read == [(2, 4)]

    async def test_a_record_between_two_batches_of_one_transaction_is_found(self) -> None:
        broker = LoggedBroker()
        producer = watched(broker, end=0)
        broker.batch_capacity = 2
        broker.after_batch = lambda: broker.intrude("state", 0, 1)
        with pytest.raises(LogWrittenElsewhere, match=r"at offset 3, where .* ending at 2"):
            await producer.commit(state_records(4), {})  # 0, 1, the other's 2, then 3, 4
        assert broker.gaps_read == [(2, 3)]

    async def test_a_write_before_its_first_commit_is_found_too(self) -> None:
        """Two groups started on one empty changelog: the other wrote first."""
        broker = LoggedBroker()
        producer = watched(broker, end=0)
        broker.intrude("state", 0, 3)
        with pytest.raises(LogWrittenElsewhere, match=r"at offset 3, where .* ending at 0"):
            await producer.commit(state_records(1), {})

    async def test_its_own_failed_attempts_are_no_alarm_and_the_check_comes_back(
        self,
    ) -> None:
        """An attempt whose records were appended but not acknowledged in time is aborted
        and repeated: its records and abort marker took offsets that nobody counted, so the
        repeat is not checked, and neither is the next commit; a commit that wrote to the
        partition sets the count right again, and the next intruder is found."""
        broker = LoggedBroker()
        producer = watched(broker, end=5)
        broker.fail_next_ack = True
        await producer.commit(state_records(2), {})
        assert (broker.commits, broker.aborts) == (1, 1)
        await producer.commit(state_records(1), {})
        broker.intrude("state", 0, 2)
        with pytest.raises(LogWrittenElsewhere):
            await producer.commit(state_records(1), {})

    async def test_a_commit_cancelled_midway_is_no_alarm(self) -> None:
        """A stop's deadline cancels a commit after its records were appended; the next
        commit aborts that transaction first, and is not checked against a count it broke."""
        broker = LoggedBroker()
        producer = watched(broker, end=0)
        appended = asyncio.Event()

        async def hang(*_: Any) -> None:
            appended.set()
            await asyncio.Event().wait()

        setattr(broker, "send_offsets_to_transaction", hang)  # noqa: B010 (shadows the method)
        first = asyncio.create_task(producer.commit(state_records(2), {TopicPartition("in", 0): 1}))
        await appended.wait()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        delattr(broker, "send_offsets_to_transaction")
        await producer.commit(state_records(1), {})
        assert (broker.commits, broker.aborts) == (1, 1)

    async def test_a_commit_cancelled_while_it_reads_a_gap_leaves_nothing_behind(self) -> None:
        """A stop's deadline cancels a commit while it reads offsets it did not count back:
        the read is cancelled with it, nothing of the transaction is committed, and the next
        commit aborts it first. The uncounted offsets turn the check off until a commit of
        its own wrote there; the other writer's next record is found after that."""
        broker = LoggedBroker()
        producer = PartitionProducer(lambda **_: broker, "group", 0, retry_backoff_s=0.001)
        hung_once = HungReader(then=broker.whose_gap)
        producer.count_from(STATE, 0, hung_once)
        broker.marker("state", 0)  # a marker it did not count: the offsets are read back
        first = asyncio.create_task(producer.commit(state_records(1), {TopicPartition("in", 0): 1}))
        await hung_once.reading.wait()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert hung_once.cancelled.is_set()
        assert broker.commits == 0
        await producer.commit(state_records(1), {})
        assert (broker.commits, broker.aborts) == (1, 1)
        broker.intrude("state", 0, 1)
        with pytest.raises(LogWrittenElsewhere):
            await producer.commit(state_records(1), {})

    async def test_a_partition_counted_without_a_reader_leaves_the_others_checked(
        self,
    ) -> None:
        """Each counted partition keeps its own reader: counting a second one as shared (no
        reader) does not switch the first one's check off."""
        broker = LoggedBroker()
        producer = watched(broker, end=0)
        producer.count_from(TopicPartition("state", 1), 0, None)
        await producer.commit(state_records(1), {})
        broker.intrude("state", 0, 1)
        with pytest.raises(LogWrittenElsewhere):
            await producer.commit(state_records(1), {})

    async def test_unwatched_partitions_are_shared_by_design(self) -> None:
        """Result topics take every partition producer's records: never checked."""
        broker = LoggedBroker()
        producer = watched(broker, end=0)
        result = OutRecord("results", b"k", b"r", 0)
        await producer.commit([result], {})
        broker.intrude("results", 0, 5)
        await producer.commit([result, *state_records(1)], {})
        assert broker.commits == 2

    async def test_an_acknowledgement_without_an_offset_turns_the_check_off(self) -> None:
        """``DuplicateSequenceNumber`` acknowledges a batch with offset -1: where the
        partition ends is not known, so the next commit is not checked (no false alarm)."""
        broker = LoggedBroker()
        producer = watched(broker, end=0)
        send = broker.send_batch

        async def unknown_offset(batch: Any, topic: str, partition: int | None = None) -> Any:
            future = await send(batch, topic, partition)
            future.result().offset = -1
            return future

        broker.send_batch = unknown_offset  # type: ignore[method-assign]
        await producer.commit(state_records(1), {})
        broker.send_batch = send  # type: ignore[method-assign]
        broker.intrude("state", 0, 1)
        await producer.commit(state_records(1), {})
        assert broker.commits == 2
