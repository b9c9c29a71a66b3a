"""The input side: a consumer-group member that fetches batches, pauses, resumes and commits.

Partition ``p`` of every input topic must belong to the same member (docs/contract.md §3), so the
group uses ``CoPartitionedAssignor`` alone: it hands each member the same partition numbers of
every topic, also while the members' topic lists differ. The rebalance callbacks are forwarded
to a ``PartitionOwner`` in partition numbers, which is the unit the state and the scheduler
reason in.

Offsets are never committed here: they go into the checkpoint's transactions.

**No silent skips.** The consumer's ``auto_offset_reset`` is ``none``, as Kafka Streams sets
its own: aiokafka's ``earliest`` would move a position that fell below the partition's start
(records deleted by the topic's retention, or ``kafka-delete-records.sh``, before this group read
them: a member stopped, or paused through a gateway outage, for longer than the retention) to
the start with one INFO line of its own, and the events in between would be gone without a
trace. :meth:`EventSource.fetch` does the same move itself and says so: an error line
``input_records_lost`` naming the topic partition, the offsets and the number of records, and
``basicsync_input_records_lost_total``. A partition with no committed offset (a new group, or
one whose offsets expired) is read from its start, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError
from aiokafka.structs import OffsetAndMetadata

from consumer.kafka.copartitioned import CoPartitionedAssignor
from consumer.kafka.records import SourceRecord
from consumer.kafka.starting import start_client
from consumer.kafka.transaction_holds import Ends

log = structlog.get_logger(__name__)

#: the longest a stopping member tries to leave its group (``EventSource.stop``)
LEAVE_AT_MOST_S = 5.0
#: the longest a fetch waits for a partition's start (``EventSource.fetch``): a stop must not
#: wait out the 40 s request timeout of a hung broker
START_ASKED_WITHIN_S = 5.0
#: how recent a partition's fetched ends must be to count (``EventSource.ends``)
ENDS_FRESH_S = 10.0


class PartitionOwner(Protocol):
    """Told about partition numbers before they are taken away and after they arrive."""

    async def partitions_revoked(self, partitions: set[int]) -> None: ...

    async def partitions_assigned(self, partitions: set[int]) -> None: ...


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Forwards rebalances. aiokafka only logs an exception a listener raises and goes on, so a
    failed callback (a restore Kafka refused, say) is kept and raised by the next fetch."""

    def __init__(self, owner: PartitionOwner, callback_ended: Callable[[], None]) -> None:
        self._owner = owner
        self._callback_ended = callback_ended
        self.failed: Exception | None = None
        #: set after each assignment is taken: the input topics are looked at again
        self.assigned = asyncio.Event()
        #: a revoke or a take is running (the subscription is not changed under it)
        self.busy = False

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.busy = True
        try:
            await self._owner.partitions_revoked({tp.partition for tp in revoked})
        except Exception as exc:
            self.failed = self.failed or exc
            raise
        finally:
            self.busy = False
            self._callback_ended()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.busy = True
        try:
            await self._owner.partitions_assigned({tp.partition for tp in assigned})
        except Exception as exc:
            self.failed = self.failed or exc
            raise
        finally:
            self.busy = False
            self.assigned.set()
            self._callback_ended()


#: Told how many records of an input topic were deleted before they were read.
RecordsLost = Callable[[str, int], None]


class EventSource:
    """Wraps one ``AIOKafkaConsumer`` subscribed to the input topics."""

    def __init__(
        self,
        consumer_factory: Callable[..., AIOKafkaConsumer],
        topics: list[str],
        records_lost: RecordsLost,
    ) -> None:
        self._factory = consumer_factory
        self._consumer = self._new_consumer()
        self._topics = list(topics)
        self._records_lost = records_lost
        #: positions ``fetch`` moved to a partition's start, not yet taken by ``take_moved``
        self._moved: dict[tuple[str, int], int] = {}
        #: per partition, the offset up to which lost records were reported
        self._lost_to: dict[TopicPartition, int] = {}
        #: per partition, the position last reported past its end
        self._past_end_met: dict[TopicPartition, int] = {}
        self._listener: _Listener | None = None
        #: a change of topics waits for the rebalance callback in progress (``subscribe``)
        self._subscription_asked = False
        self._paused = False

    def _new_consumer(self) -> AIOKafkaConsumer:
        return self._factory(
            enable_auto_commit=False,
            auto_offset_reset="none",  # moved by fetch, which reports what it skips
            # Alone: aiokafka 0.14 sends one JoinGroup per assignor (its KIP-394 join sits in
            # its loop over them), so offering range beside it made two members starting
            # together rebalance without end; a strict xfail in test_input_pattern.py says
            # when aiokafka stops doing so (design-notes §8).
            partition_assignment_strategy=(CoPartitionedAssignor,),
            isolation_level="read_committed",
        )

    async def start(self, owner: PartitionOwner) -> None:
        """Join the group; a start that fails closes its client, so ``start`` can be retried."""
        self._listener = _Listener(owner, self._subscribe_if_asked)
        self._consumer.subscribe(topics=self._topics, listener=self._listener)
        try:
            await start_client(self._consumer.start())
        except BaseException:
            await self._consumer.stop()
            self._consumer = self._new_consumer()
            raise

    @property
    def topics(self) -> tuple[str, ...]:
        """The input topics subscribed to now."""
        return tuple(self._topics)

    async def assignment_changed(self) -> None:
        """Return after the next assignment (at once if one came since the last call)."""
        listener = self._listener
        if listener is None:
            await asyncio.Event().wait()  # pragma: no cover - not started: no assignment comes
            return
        await listener.assigned.wait()
        listener.assigned.clear()

    def subscribe(self, topics: list[str]) -> None:
        """Read ``topics`` from now on: the group rebalances (every partition is revoked and
        assigned again), and a topic partition new to the group is read from its start.

        Not while a revoke or a take runs: aiokafka would drop the assignment under it (a
        take reading its committed offsets would find none); it is done when that ends."""
        self._topics = list(topics)
        self._subscription_asked = True
        self._subscribe_if_asked()

    def _subscribe_if_asked(self) -> None:
        listener = self._listener
        if not self._subscription_asked or listener is None or listener.busy:
            return
        self._subscription_asked = False
        self._consumer.subscribe(topics=self._topics, listener=listener)

    async def stop(self) -> None:
        """Leave the group, for at most ``LEAVE_AT_MOST_S``: a broker that does not answer
        would hold the exit for the consumer's request timeout (40 s by default), where not
        leaving only costs the group one session timeout before it rebalances."""
        bound = asyncio.timeout(LEAVE_AT_MOST_S)
        try:
            async with bound:
                await self._consumer.stop()
        except TimeoutError:
            if not bound.expired():
                raise
            log.warning(
                "group_not_left",
                seconds=LEAVE_AT_MOST_S,
                action="the group gives this member's partitions to the others after its "
                "session timeout",
            )

    async def fetch(self, timeout_ms: int) -> list[SourceRecord]:
        """The next batch of all assigned, unpaused partitions; offset order per partition.

        Raises what a rebalance callback raised (the partitions it was for are not usable).
        A partition whose position is below its start, past its end or not known is moved to
        its start (see the module docstring); that fetch returns nothing.
        """
        try:
            batches: dict[TopicPartition, list[Any]] = await self._consumer.getmany(
                timeout_ms=timeout_ms
            )
        except OffsetOutOfRangeError as exc:
            await self._read_from_start(dict(exc.args[0]))
            return []
        except NoOffsetForPartitionError as exc:
            await self._read_from_start({exc.args[0]: None})
            return []
        if self._listener is not None and self._listener.failed is not None:
            raise self._listener.failed
        # aiokafka's records are SourceRecords as they are (kafka/records.py): no copy.
        return [message for messages in batches.values() for message in messages]

    async def _read_from_start(self, positions: Mapping[TopicPartition, int | None]) -> None:
        """Seek each partition (still assigned, not sought since) to its start, reporting what
        that skips: ``positions`` holds the offset the fetch asked for, None where no offset
        was known."""
        assigned = self._consumer.assignment()
        tps = [tp for tp in positions if tp in assigned and not self._sought_since(tp, positions)]
        if not tps:
            return
        try:
            async with asyncio.timeout(START_ASKED_WITHIN_S):
                starts = await self._consumer.beginning_offsets(tps)
        except (KafkaError, TimeoutError) as exc:
            # The broker is down or hung: the next fetch meets the same error and asks again.
            log.warning(
                "input_start_unknown",
                partitions=[f"{tp.topic}:{tp.partition}" for tp in tps],
                error=repr(exc),
                action="asked again at the next fetch",
            )
            return
        # A rebalance may have landed while the start was asked: a partition revoked is its
        # next owner's to report (seeking it would raise), one taken again keeps its take's
        # position (the group may have committed past the gap since).
        assigned = self._consumer.assignment()
        for tp in tps:
            if tp not in assigned or self._sought_since(tp, positions):
                continue
            start, position = starts[tp], positions[tp]
            where = {"topic": tp.topic, "partition": tp.partition, "start": start}
            if position is None:
                self._report_read_from_start(where)
            elif position < start:
                self._report_lost(tp, position, where)
            elif self._past_end_met.get(tp) != position:  # a take's seek meets it again
                self._past_end_met[tp] = position
                log.error(
                    "input_position_past_end",
                    **where,
                    position=position,
                    cause="the partition lost records (an unclean leader election, a broker "
                    "restored from an older disk), or the topic was created again under "
                    "offsets kept from the old one",
                    action="reading the partition again from its start",
                )
                self._lost_to.pop(tp, None)  # offsets begin again
            self._consumer.seek(tp, start)
            self._moved[(tp.topic, tp.partition)] = start

    @staticmethod
    def _report_read_from_start(where: dict[str, Any]) -> None:
        """A partition this group never committed, such as a new group's. A start above 0 means
        retention deleted events before the group read any: a job that began among them is
        assembled without them, and its partial document posted over what WorkfloPlus holds
        (a group id changed by mistake does this to every such job), so it is a warning."""
        if not where["start"]:
            log.info("input_read_from_start", **where, reason="no committed offset")
            return
        log.warning(
            "input_read_from_start",
            **where,
            reason="no committed offset",
            consequence="the records below start were deleted before this group read them: "
            "a job that began there, and whose state this group does not hold, is assembled "
            "and posted without its events there",
            action="if this group should have offsets (a changed group id), stop it and "
            "start the old group, or adopt its changelog (BASICSYNC_STORE__ADOPT_CHANGELOG_OF)",
        )

    def _report_lost(self, tp: TopicPartition, position: int, where: dict[str, Any]) -> None:
        """Report the records below ``where["start"]`` that no earlier report counted: a take
        that runs while the move is made seeks the partition back to its committed offset,
        and the same gap is met again."""
        start: int = where["start"]
        counted_to = self._lost_to.get(tp, -1)
        first = max(position, counted_to)
        self._lost_to[tp] = max(start, counted_to)
        if first >= start:
            return
        log.error(
            "input_records_lost",
            **where,
            position=first,
            records=start - first,
            cause="deleted (by the topic's retention, or kafka-delete-records.sh) "
            "before this group read them",
            action="the events in them were never applied or posted: send the "
            "affected jobs' events again, and keep the input retention longer than "
            "any stop or gateway outage",
        )
        self._records_lost(tp.topic, start - first)

    def _sought_since(self, tp: TopicPartition, asked: Mapping[TopicPartition, int | None]) -> bool:
        """Was ``tp`` sought since the fetch that failed at offset ``asked[tp]``? Then its
        error is stale (a take's seek to the committed offset came after it)."""
        try:
            state = self._consumer._subscription.subscription.assignment.state_value(tp)
        except AttributeError:  # pragma: no cover - aiokafka's internals changed: act on it
            return False
        now: int | None = state.position if state.has_valid_position else None
        return now != asked[tp]

    def take_moved(self) -> dict[tuple[str, int], int]:
        """The positions :meth:`fetch` moved to a partition's start since the last call: the
        offsets to commit, although no record was read, so that a take does not meet (and
        report) the same gap again."""
        moved = self._moved
        if moved:  # almost never: no new dict on every fetch
            self._moved = {}
        return moved

    async def committed(self, partitions: set[int]) -> dict[tuple[str, int], OffsetAndMetadata]:
        """The group's committed offsets of ``partitions`` on every input topic, with their
        metadata (``consumer.state.continuity``), fetched now in one request; a topic
        partition without a committed offset is left out.

        Called after the partition's transactional producer started, which completed any
        transaction a previous owner left open: the committed offsets are final then, whereas
        aiokafka may have fetched them before (its OffsetFetch cannot ask for stable offsets).
        aiokafka's public ``committed`` asks once per topic partition and drops the metadata;
        its coordinator's fetch, which that call makes, returns both.
        """
        tps = [tp for tp in self._consumer.assignment() if tp.partition in partitions]
        coordinator = getattr(self._consumer, "_coordinator", None)
        if coordinator is None or not hasattr(coordinator, "fetch_committed_offsets"):
            # pragma: no cover - only if aiokafka's internals change; no metadata then
            log.warning(
                "committed_metadata_unavailable",
                consequence="a changelog replaced under the offsets is not detected at a take",
            )
            found = {tp: await self._consumer.committed(tp) for tp in tps}
            return {
                (tp.topic, tp.partition): OffsetAndMetadata(offset, "")
                for tp, offset in found.items()
                if offset is not None
            }
        fetched: dict[TopicPartition, OffsetAndMetadata] = (
            await coordinator.fetch_committed_offsets(tps) if tps else {}
        )
        return {
            (tp.topic, tp.partition): committed
            for tp, committed in fetched.items()
            if committed.offset >= 0
        }

    def seek(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Read each topic partition from its offset. ``seek`` is immediate and drops what was
        fetched for the partition before it; a partition not named keeps its position (or, with
        none, is moved to its start by :meth:`fetch`), and one no longer assigned is skipped."""
        assigned = self._consumer.assignment()
        for (topic, partition), offset in offsets.items():
            tp = TopicPartition(topic, partition)
            if tp in assigned:
                self._consumer.seek(tp, offset)
                # A move fetch made before this seek (a take's) is not the position now:
                # committing it would move the group's offset back, or past a gap unreported.
                self._moved.pop((topic, partition), None)

    def partition_counts(self) -> dict[str, int | None]:
        """Each input topic's partition count in this member's metadata (None: not known)."""
        counts: dict[str, int | None] = {}
        for topic in self._topics:
            partitions = self._consumer.partitions_for_topic(topic)
            counts[topic] = len(partitions) if partitions else None
        return counts

    async def refreshed_partition_counts(self, within_s: float = 10.0) -> dict[str, int | None]:
        """:meth:`partition_counts` after a metadata refresh (the cached counts if none came
        within ``within_s``). aiokafka has no public call for it: its client's own refresh is
        what its metadata timer runs, and it lets the group notice a change at once."""
        client = getattr(self._consumer, "_client", None)
        if client is not None and hasattr(client, "force_metadata_update"):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within_s):
                    await client.force_metadata_update()
        return self.partition_counts()

    def request_rejoin(self) -> None:
        """Ask the group coordinator for a rebalance: a partition was lost or could not be taken.

        aiokafka has no public call for it; its coordinator's ``request_rejoin`` is what its
        own heartbeat uses when the group moved on.
        """
        coordinator = getattr(self._consumer, "_coordinator", None)
        if coordinator is not None and hasattr(coordinator, "request_rejoin"):
            coordinator.request_rejoin()
        else:  # pragma: no cover - only if aiokafka's internals change
            log.error("rejoin_unavailable", hint="restart the process to rebalance")

    def behind(self) -> int | None:
        """Records that can be read now, over the assigned partitions; None while that is
        unknown for one of them (no fetch response yet, or no position yet after an
        assignment or a seek): counting only the known ones would report a backlog as gone.

        From each partition's last stable offset, which the last fetch response carried (no
        request is made), as Kafka's own read_committed consumer counts its lag: records past
        it wait for an open transaction and cannot be read yet, however many
        (consumer.kafka.transaction_holds). Counted from the high watermark, a transaction left
        open would pass for a backlog and hold every job of the member for the catch-up delay.
        """
        total = 0
        for tp in self._consumer.assignment():
            end = self._readable_end(tp)
            position = self._position(tp)
            if end is None or position is None:
                return None
            total += max(end - position, 0)
        return total

    def ends(self) -> dict[tuple[str, int], Ends]:
        """Each assigned partition's last stable offset and high watermark, as fetched within
        the last :data:`ENDS_FRESH_S`; paused partitions are left out (nothing fetches them,
        so their figures are as old as the pause)."""
        consumer = self._consumer
        paused = consumer.paused()
        fresh_from = (time.time() - ENDS_FRESH_S) * 1000
        result: dict[tuple[str, int], Ends] = {}
        for tp in consumer.assignment():
            if tp in paused:
                continue
            lso, highwater = consumer.last_stable_offset(tp), consumer.highwater(tp)
            fetched_at = consumer.last_poll_timestamp(tp)
            if lso is None or lso < 0 or highwater is None or (fetched_at or 0) < fresh_from:
                continue
            result[(tp.topic, tp.partition)] = Ends(lso, highwater)
        return result

    def _readable_end(self, tp: TopicPartition) -> int | None:
        """The last stable offset (read_committed), else the high watermark (a broker that
        sends none)."""
        lso: int | None = self._consumer.last_stable_offset(tp)
        if lso is not None and lso >= 0:
            return lso
        highwater: int | None = self._consumer.highwater(tp)
        return highwater

    def _position(self, tp: TopicPartition) -> int | None:
        """The next offset the consumer hands out for ``tp``, without a request.

        aiokafka's ``position`` waits for one when the position is being reset, which the
        consume loop must not; the state it reads (as its own ``highwater`` does) is read
        directly. It follows every record handed out and every seek. None: unknown.
        """
        try:
            state = self._consumer._subscription.subscription.assignment.state_value(tp)
        except AttributeError:  # pragma: no cover - only if aiokafka's internals change
            return None
        position: int | None = state.position if state.has_valid_position else None
        return position

    def pause_all(self) -> None:
        """Stop fetching (circuit open); survives rebalances until ``resume_all``."""
        self._paused = True
        self._consumer.pause(*self._consumer.assignment())

    def resume_all(self) -> None:
        self._paused = False
        self._consumer.resume(*self._consumer.assignment())

    def reapply_pause(self) -> None:
        """A new assignment starts unpaused; keep the circuit's pause in force."""
        if self._paused:
            self._consumer.pause(*self._consumer.assignment())

    async def lag(self) -> dict[tuple[str, int], int]:
        """Records between the position and the high watermark, per assigned partition: those
        an open transaction holds included, as ``kafka-consumer-groups.sh`` counts (a lag that
        grows while nothing can be read is what an alert should see)."""
        result: dict[tuple[str, int], int] = {}
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            position = await self._consumer.position(tp)
            result[(tp.topic, tp.partition)] = max(highwater - position, 0)
        return result
