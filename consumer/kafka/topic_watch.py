"""Follows an input topic pattern: the topics that appear under it are read, the rest refused.

aiokafka's own pattern subscription would read every matching topic, whatever its partition
count; a topic with another count would then give this member partition numbers whose state
is elsewhere. So the member subscribes to a list and this watch keeps the list current: every
``interval_s`` (``kafka.metadata_max_age_ms``), and at once after each rebalance, since a
rebalance is often another member that has seen a new topic first (``CoPartitionedAssignor``
leaves a topic partition unread until its number's member subscribes too).

Listing the topics needs Describe on them (``Read`` implies it); a broker that does not answer
is waited out: the list read so far stays, and the next round asks again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from consumer.errors import FatalError
from consumer.kafka.admin import input_counts
from consumer.kafka.input_topics import InputSelection, InputTopics, select_inputs

log = structlog.get_logger(__name__)

#: the least time one look at the topics is given (a short interval must not make a broker
#: that answers slowly under load look unreachable)
ASK_WITHIN_S = 10.0


class SubscribedSource(Protocol):
    @property
    def topics(self) -> tuple[str, ...]: ...

    def subscribe(self, topics: list[str]) -> None: ...

    async def assignment_changed(self) -> None: ...


#: Told the number of topics read and refused.
TopicsCounted = Callable[[int, int], None]


class InputTopicWatch:
    """Keeps ``source`` subscribed to the topics ``inputs`` matches with ``partition_count``."""

    def __init__(
        self,
        admin: AIOKafkaAdminClient,
        inputs: InputTopics,
        partition_count: int,
        source: SubscribedSource,
        counted: TopicsCounted,
        interval_s: float,
    ) -> None:
        self._admin = admin
        self._inputs = inputs
        self._partition_count = partition_count
        self._source = source
        self._counted = counted
        self._interval_s = interval_s
        #: refused topics already reported, with the count they were refused for
        self._reported: dict[str, int] = {}

    @property
    def follows_pattern(self) -> bool:
        """Whether there is anything to watch: a list of topics does not change."""
        return self._inputs.pattern is not None

    async def run(self, stop: asyncio.Event) -> None:
        """Look at the topics every interval and after each rebalance, until ``stop``."""
        while not stop.is_set():
            waits = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self._source.assignment_changed()),
            ]
            try:
                await asyncio.wait(waits, timeout=self._interval_s, return_when="FIRST_COMPLETED")
            finally:
                for waiting in waits:
                    waiting.cancel()
                # Not each awaited under suppress(CancelledError): that also swallowed a
                # cancel of this task arriving meanwhile, and the watch looked again for ever.
                await asyncio.wait(waits)
            if not stop.is_set():
                await self.refresh()

    async def refresh(self) -> InputSelection | None:
        """Subscribe to the matching topics if they changed; None when they could not be
        listed (said in a warning; the subscription stays as it is)."""
        try:
            async with asyncio.timeout(max(self._interval_s, ASK_WITHIN_S)):
                matched, counts = await input_counts(self._admin, self._inputs)
        except (KafkaError, TimeoutError, FatalError) as exc:
            log.warning(
                "input_topics_unlisted",
                pattern=self._inputs.describe(),
                error=repr(exc),
                action=f"reading the topics read so far; asked again within {self._interval_s} s",
            )
            return None
        if set(matched) - set(counts):
            # Listed but not described: a topic being created or deleted right now. Acting on
            # half a view would drop a topic just created from the subscription.
            log.info("input_topics_settling", topics=sorted(set(matched) - set(counts)))
            return None
        reading = self._source.topics
        selection = select_inputs(self._inputs, counts, self._partition_count, reading)
        self.report(selection)
        if selection.read and set(selection.read) != set(reading):
            log.info(
                "input_topics_changed",
                added=sorted(set(selection.read) - set(reading)),
                removed=sorted(set(reading) - set(selection.read)),
                action="the group rebalances; a new topic is read from its start",
            )
            self._source.subscribe(list(selection.read))
        return selection

    def report(self, selection: InputSelection) -> None:
        """One error line per topic refused (again if its count changes), and the counts."""
        self._counted(len(selection.read), len(selection.refused))
        for topic, count in selection.refused.items():
            if self._reported.get(topic) == count:
                continue
            self._reported[topic] = count
            log.error(
                "input_topic_refused",
                topic=topic,
                partitions=count,
                expected=self._partition_count,
                pattern=self._inputs.describe(),
                cause="the topic matches the input pattern but its partition count is not the "
                "changelog's: its jobs' state could not be kept by partition",
                action=f"recreate it with {self._partition_count} partitions, or narrow "
                "BASICSYNC_TOPICS__INPUT_PATTERN so it no longer matches; it is not read",
            )
        for topic in set(self._reported) - set(selection.refused):
            del self._reported[topic]
