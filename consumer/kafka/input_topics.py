"""Which topics are the inputs: a fixed list, or every topic whose name matches a pattern.

Partition ``p`` of every input topic must belong to one member and its jobs' state to
changelog partition ``p`` (docs/contract.md §3), so every input needs the changelog's partition
count. A listed topic that lacks it stops the consumer: the operator named it. A topic that
matches a pattern but has another count is *refused* instead (an error line and
``basicsync_input_topics_refused``) and the rest are read: a topic someone else creates under
the pattern must not stop every member. The service's own topics (changelog, results) and
Kafka's internal ones never match: reading its own output would feed it back in.

Pure: the topics and their partition counts come from the caller.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from consumer.errors import TopicLayoutError


@dataclass(frozen=True)
class InputTopics:
    """The configured inputs: ``listed`` topics, or the topics ``pattern`` matches whole."""

    listed: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    #: the service's own topics, never an input
    own: frozenset[str] = frozenset()

    def describe(self) -> str:
        """How the inputs are named in messages: the list, or ``pattern '<regex>'``."""
        if self.pattern is None:
            return ", ".join(self.listed)
        return f"pattern {self.pattern.pattern!r}"

    def matching(self, existing: Iterable[str]) -> list[str]:
        """The input topics among ``existing``, sorted; a list is taken as it is."""
        if self.pattern is None:
            return list(self.listed)
        return sorted(
            topic
            for topic in existing
            if topic not in self.own
            and not topic.startswith("__")
            and self.pattern.fullmatch(topic) is not None
        )


@dataclass(frozen=True)
class InputSelection:
    """The matched topics split by partition count: ``read`` have the consumer's."""

    read: tuple[str, ...]
    #: matched topics whose partition count is not the consumer's, with their count
    refused: Mapping[str, int] = field(default_factory=dict)


def starting_partition_count(
    inputs: InputTopics, counts: Mapping[str, int], changelog_count: int | None
) -> int:
    """The partition count a member starts with, from the matched inputs' ``counts`` (topics
    that do not exist left out) and the changelog's (None: not created yet).

    A list must exist whole and agree. Under a pattern the changelog's count decides, since
    it holds the jobs' state; before it exists the matched topics must agree, as nothing
    says which of them is right.
    """
    if inputs.pattern is None:
        missing = [topic for topic in inputs.listed if topic not in counts]
        if missing:
            raise TopicLayoutError(
                f"input topics do not exist: {', '.join(missing)}; create them "
                "(same partition count each) or fix BASICSYNC_TOPICS__INPUT"
            )
    elif not counts:
        raise TopicLayoutError(
            f"no topic matches the input {inputs.describe()}; create one, or fix "
            "BASICSYNC_TOPICS__INPUT_PATTERN"
        )
    if inputs.pattern is not None and changelog_count is not None:
        return changelog_count
    if len(set(counts.values())) != 1:
        raise TopicLayoutError(
            "input topics are not co-partitioned (their partition counts differ: "
            + ", ".join(f"{topic}={count}" for topic, count in sorted(counts.items()))
            + "); give them the same partition count"
        )
    return next(iter(counts.values()))


def select_inputs(
    inputs: InputTopics,
    counts: Mapping[str, int],
    partition_count: int,
    reading: Iterable[str] = (),
) -> InputSelection:
    """Split the matched topics' ``counts`` into those read and those refused.

    A listed topic is never refused, nor is one already ``reading``: its count changed
    under the state kept for it, which the caller's layout check stops on (refusing it would
    only stop reading it, and its jobs' next events would wait unread with no one told).
    """
    if inputs.pattern is None:
        return InputSelection(read=tuple(inputs.listed))
    kept = set(reading)
    read = tuple(sorted(t for t, n in counts.items() if n == partition_count or t in kept))
    refused = {t: n for t, n in sorted(counts.items()) if t not in read}
    return InputSelection(read=read, refused=refused)
