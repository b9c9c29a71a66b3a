"""Fakes of aiokafka's producer as ``PartitionProducer`` uses it (batches, transactions,
acknowledgements): its transaction manager's state, and a broker's log offsets, are all that
matter to the tests that use them; the real one is exercised against the broker in
tests/integration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import IllegalOperation, KafkaTimeoutError


class CappedBatch:
    """A record batch that takes ``capacity`` records, then refuses (``append`` -> None)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records = 0

    def append(self, **_: Any) -> object | None:
        if self.records == self.capacity:
            return None
        self.records += 1
        return object()

    def close(self) -> None:
        pass

    def size(self) -> int:
        return self.records


class _Manager:
    def __init__(self) -> None:
        self.fatal = False
        self.in_transaction = False

    def is_fatal_error(self) -> bool:
        return self.fatal

    def sequence_number(self, tp: TopicPartition) -> int:
        return 0

    def is_in_transaction(self) -> bool:
        return self.in_transaction

    @property
    def state(self) -> Any:
        class _State:
            name = "READY"

        return _State()


class FencedMidTransaction:
    """Begins a transaction, then refuses every send as aiokafka does after its sender died."""

    def __init__(self, *, fatal: bool, fail_sends: int = 1_000) -> None:
        self._txn_manager = _Manager()
        self._txn_manager.fatal = fatal
        self.fail_sends = fail_sends
        self.commits = 0

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def begin_transaction(self) -> None:
        self._txn_manager.in_transaction = True

    def create_batch(self) -> CappedBatch:
        return CappedBatch(1_000)

    async def send_batch(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail_sends:
            self.fail_sends -= 1
            if self._txn_manager.fatal:
                raise IllegalOperation("Can't send messages while not in transaction")
            raise KafkaTimeoutError()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        class _Metadata:
            topic, partition, offset = "t", 0, 7

        future.set_result(_Metadata())
        return future

    async def commit_transaction(self) -> None:
        self._txn_manager.in_transaction = False
        self.commits += 1

    async def abort_transaction(self) -> None:
        self._txn_manager.in_transaction = False


class LoggedBroker(FencedMidTransaction):
    """Offsets as a broker's log gives them: each batch at its partition's end, and one more
    offset for the commit or abort marker of every partition a transaction wrote to.
    ``intrude`` is another producer appending records, ``marker`` a transaction marker
    nobody counted (a broker restarted under a transaction); ``fail_next_ack`` fails the next
    batch's acknowledgement after the batch was appended (a broker that answered too late).
    ``whose_gap`` reads the writers back, as the checkpoint's reader does."""

    def __init__(self) -> None:
        super().__init__(fatal=False, fail_sends=0)
        self.ends: dict[tuple[str, int], int] = {}
        #: the writer of each record, by offset (markers are not records)
        self.writers: dict[tuple[str, int, int], str] = {}
        self._touched: set[tuple[str, int]] = set()
        self.fail_next_ack = False
        self.aborts = 0
        #: run just before the next commit marker (another producer appending meanwhile)
        self.before_marker: Callable[[], None] | None = None
        self.gaps_read: list[tuple[int, int]] = []
        #: records a batch holds at most (a transaction of more sends several)
        self.batch_capacity = 1_000
        #: run just after the next batch is appended
        self.after_batch: Callable[[], None] | None = None

    def intrude(self, topic: str, partition: int, records: int, writer: str = "other") -> None:
        end = self.ends.get((topic, partition), 0)
        for offset in range(end, end + records):
            self.writers[(topic, partition, offset)] = writer
        self.ends[(topic, partition)] = end + records

    def marker(self, topic: str, partition: int) -> None:
        self.ends[(topic, partition)] = self.ends.get((topic, partition), 0) + 1

    async def whose_gap(self, tp: TopicPartition, first: int, end: int) -> str | None:
        self.gaps_read.append((first, end))
        writers = {self.writers.get((tp.topic, tp.partition, o)) for o in range(first, end)}
        others = sorted(w for w in writers if w not in (None, "us"))
        return f"consumer group {others[0]!r}" if others else None

    def create_batch(self) -> CappedBatch:
        return CappedBatch(self.batch_capacity)

    async def send_batch(self, batch: Any, topic: str, partition: int | None = None) -> Any:
        assert partition is not None
        where = (topic, partition)
        offset = self.ends.get(where, 0)
        self.ends[where] = offset + batch.records
        for number in range(offset, offset + batch.records):
            self.writers[(topic, partition, number)] = "us"
        if self.after_batch is not None:
            self.after_batch()
            self.after_batch = None
        self._touched.add(where)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail_next_ack:
            self.fail_next_ack = False
            future.set_exception(KafkaTimeoutError())
            return future

        class _Metadata:
            pass

        acknowledged = _Metadata()
        acknowledged.topic, acknowledged.partition, acknowledged.offset = topic, partition, offset  # type: ignore[attr-defined]
        future.set_result(acknowledged)
        return future

    async def send_offsets_to_transaction(self, offsets: Any, group: str) -> None:
        pass

    def _marker(self) -> None:
        if self.before_marker is not None:
            self.before_marker()
            self.before_marker = None
        for where in self._touched:
            self.ends[where] += 1
        self._touched.clear()
        self._txn_manager.in_transaction = False

    async def commit_transaction(self) -> None:
        self._marker()
        self.commits += 1

    async def abort_transaction(self) -> None:
        self._marker()
        self.aborts += 1
