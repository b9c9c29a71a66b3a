"""EventSource's own move of a position Kafka no longer holds, around a stand-in consumer.

The moves themselves are shown against the real broker (tests/integration/test_event_source.py
and test_input_retention.py); these are the failures a broker makes hard to stage: its start
not answered, and an error fetched before a take's seek.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError, KafkaTimeoutError, OffsetOutOfRangeError
from structlog.testing import capture_logs

from consumer.kafka.source import EventSource

TP = TopicPartition("in", 0)


class _State:
    def __init__(self, position: int | None) -> None:
        self.position = position

    @property
    def has_valid_position(self) -> bool:
        return self.position is not None


class _Assignment:
    def __init__(self, states: dict[TopicPartition, _State]) -> None:
        self.states = states

    def state_value(self, tp: TopicPartition) -> _State:
        return self.states[tp]


class StandIn:
    """What EventSource uses of an AIOKafkaConsumer: ``getmany`` raises the queued errors."""

    def __init__(self, position: int) -> None:
        self.states = {TP: _State(position)}
        assignment = _Assignment(self.states)
        self._subscription = type("S", (), {"subscription": type("A", (), {})()})()
        self._subscription.subscription.assignment = assignment
        self.errors: list[Exception] = []
        self.start_answers: list[Exception | int] = []
        self.sought: list[tuple[TopicPartition, int]] = []
        self.assigned = {TP}
        #: runs while the start is asked: a rebalance that lands meanwhile
        self.while_asked: Callable[[], None] = lambda: None

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[Any]]:
        if self.errors:
            raise self.errors.pop(0)
        return {}

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        answer = self.start_answers.pop(0)
        self.while_asked()
        if isinstance(answer, Exception):
            raise answer
        return dict.fromkeys(tps, answer)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self.assigned:  # as aiokafka's
            raise IllegalStateError(f"No current assignment for partition {tp}")
        self.sought.append((tp, offset))
        self.states[tp].position = offset


def _source(stand_in: StandIn, lost: list[tuple[str, int]]) -> EventSource:
    return EventSource(lambda **_: stand_in, ["in"], lambda t, n: lost.append((t, n)))


class TestStartUnknown:
    async def test_a_start_not_answered_is_asked_again_at_the_next_fetch(self) -> None:
        """The broker does not answer for the partition's start: the fetch returns nothing,
        says so, moves nothing and reports no loss; the next fetch meets the same error and
        asks again."""
        stand_in, lost = StandIn(position=5), list[tuple[str, int]]()
        source = _source(stand_in, lost)
        gap = OffsetOutOfRangeError({TP: 5})
        stand_in.errors = [gap, gap]
        stand_in.start_answers = [KafkaTimeoutError(), 12]
        with capture_logs() as logs:
            assert await source.fetch(100) == []
            assert (stand_in.sought, lost) == ([], [])
            assert [line["event"] for line in logs] == ["input_start_unknown"]
            assert await source.fetch(100) == []
        assert stand_in.sought == [(TP, 12)]
        assert lost == [("in", 7)]
        assert source.take_moved() == {("in", 0): 12}
        assert source.take_moved() == {}


class TestStaleError:
    async def test_an_error_fetched_before_a_seek_moves_nothing(self) -> None:
        """The fetch failed at offset 5, then a take sought the committed offset 40: the
        error describes a position the partition no longer has, so nothing is lost."""
        stand_in, lost = StandIn(position=5), list[tuple[str, int]]()
        source = _source(stand_in, lost)
        stand_in.errors = [OffsetOutOfRangeError({TP: 5})]
        stand_in.states[TP].position = 40  # the take's seek, after the failed fetch
        assert await source.fetch(100) == []
        assert (stand_in.sought, lost, source.take_moved()) == ([], [], {})


class TestTheSameGapAgain:
    async def test_a_gap_met_again_is_reported_once_and_its_growth_alone_after(self) -> None:
        """A take seeks the partition back to its committed offset after the fetch moved it
        (the take runs while aiokafka already fetched from that offset): the gap is met
        again, moved past again, and not counted twice. Retention deleting more meanwhile
        adds only what is new."""
        stand_in, lost = StandIn(position=5), list[tuple[str, int]]()
        source = _source(stand_in, lost)
        stand_in.errors = [OffsetOutOfRangeError({TP: 5})]
        stand_in.start_answers = [12, 12, 15]
        with capture_logs() as logs:
            for _ in range(3):
                assert await source.fetch(100) == []
                stand_in.states[TP].position = 5  # the take's seek to the committed offset
                stand_in.errors = [OffsetOutOfRangeError({TP: 5})]
        assert stand_in.sought == [(TP, 12), (TP, 12), (TP, 15)]
        assert lost == [("in", 7), ("in", 3)]
        reported = [(line["position"], line["records"]) for line in logs]
        assert reported == [(5, 7), (12, 3)]

    async def test_a_position_past_the_end_met_again_is_reported_once(self) -> None:
        """The committed offset 129 lies past the end (the partition lost records): aiokafka's
        own fetch meets it, then the take seeks back to it and the fetch meets it again. One
        error line; the partition is read from its start both times."""
        stand_in, lost = StandIn(position=129), list[tuple[str, int]]()
        source = _source(stand_in, lost)
        stand_in.start_answers = [0, 0]
        with capture_logs() as logs:
            for _ in range(2):
                stand_in.errors = [OffsetOutOfRangeError({TP: 129})]
                assert await source.fetch(100) == []
                stand_in.states[TP].position = 129  # the take's seek to the committed offset
        assert stand_in.sought == [(TP, 0), (TP, 0)]
        assert lost == []
        assert [line["event"] for line in logs] == ["input_position_past_end"]


class TestARebalanceWhileTheStartIsAsked:
    async def test_a_partition_revoked_meanwhile_is_left_alone(self) -> None:
        """The partition is revoked while its start is asked: seeking it would raise
        aiokafka's IllegalStateError out of the fetch (a crash); it is left to its next
        owner, which meets the gap and reports it."""
        stand_in, lost = StandIn(position=5), list[tuple[str, int]]()
        source = _source(stand_in, lost)
        stand_in.errors = [OffsetOutOfRangeError({TP: 5})]
        stand_in.start_answers = [12]
        stand_in.while_asked = lambda: stand_in.assigned.clear()
        assert await source.fetch(100) == []
        assert (stand_in.sought, lost, source.take_moved()) == ([], [], {})

    async def test_a_partition_taken_again_meanwhile_keeps_the_takes_position(self) -> None:
        """Revoked and assigned again while its start is asked, the take sought the offset
        the group committed since (past the gap): moving it to the start would read again
        what the group already applied. The take's position stands."""
        stand_in, lost = StandIn(position=5), list[tuple[str, int]]()
        source = _source(stand_in, lost)
        stand_in.errors = [OffsetOutOfRangeError({TP: 5})]
        stand_in.start_answers = [12]

        def taken_again() -> None:
            stand_in.states[TP].position = 30

        stand_in.while_asked = taken_again
        assert await source.fetch(100) == []
        assert (stand_in.sought, lost, source.take_moved()) == ([], [], {})
        assert stand_in.states[TP].position == 30

    async def test_a_move_made_before_a_takes_seek_is_not_committed(self) -> None:
        """A fetch moved the partition to its start (12); before the consume loop took that
        move, a take sought the offset the group committed since (30). Committing 12 would
        move the group's offset back: the take's seek supersedes the move."""
        stand_in, lost = StandIn(position=5), list[tuple[str, int]]()
        source = _source(stand_in, lost)
        stand_in.errors = [OffsetOutOfRangeError({TP: 5})]
        stand_in.start_answers = [12]
        assert await source.fetch(100) == []
        source.seek({("in", 0): 30})
        assert source.take_moved() == {}
        assert stand_in.states[TP].position == 30


class _Subscribing(StandIn):
    """A stand-in that records each subscription and lets a test play a rebalance."""

    def __init__(self) -> None:
        super().__init__(position=0)
        self.subscriptions: list[list[str]] = []
        self.listener: Any = None

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.subscriptions.append(list(topics))
        self.listener = listener

    async def start(self) -> None:
        pass


class _Owner:
    """A partition owner whose take waits until the test lets it end."""

    def __init__(self) -> None:
        self.taking = asyncio.Event()
        self.take_may_end = asyncio.Event()

    async def partitions_revoked(self, partitions: set[int]) -> None:
        pass

    async def partitions_assigned(self, partitions: set[int]) -> None:
        self.taking.set()
        await self.take_may_end.wait()


class TestSubscribe:
    async def test_topics_changed_during_a_take_are_subscribed_when_it_ends(self) -> None:
        """aiokafka drops the assignment when the subscription changes: under a take that
        reads its committed offsets it would find none. The change waits for the take, and
        the look at the topics that follows each take is signalled after it."""
        stand_in, owner = _Subscribing(), _Owner()
        source = EventSource(lambda **_: stand_in, ["in"], lambda t, n: None)
        await source.start(owner)
        take = asyncio.create_task(stand_in.listener.on_partitions_assigned({TP}))
        await owner.taking.wait()
        source.subscribe(["in", "new"])
        assert stand_in.subscriptions == [["in"]]
        assert source.topics == ("in", "new")
        signalled = asyncio.create_task(source.assignment_changed())
        await asyncio.sleep(0)
        assert not signalled.done()
        owner.take_may_end.set()
        await take
        await asyncio.wait_for(signalled, 1)
        assert stand_in.subscriptions == [["in"], ["in", "new"]]

    async def test_topics_changed_between_rebalances_are_subscribed_at_once(self) -> None:
        stand_in = _Subscribing()
        source = EventSource(lambda **_: stand_in, ["in"], lambda t, n: None)
        await source.start(_Owner())
        source.subscribe(["in", "new"])
        assert stand_in.subscriptions == [["in"], ["in", "new"]]
