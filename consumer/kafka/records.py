"""An input record as the consumer reads it: what the pure core needs of it, and no more.

The pure core (``intake.py``) takes any object with these eight attributes. The group member
(``kafka/source.py``) hands it aiokafka's own ``ConsumerRecord`` objects, which have them,
instead of copying each record into a type of our own (design notes §8). Tests and benchmarks
build :class:`PlainRecord` values, with no Kafka client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol


class Position(Protocol):
    """Where an event was read: what a success record's ``sourceOffsets`` lists."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


class SourceRecord(Position, Protocol):
    """An input message as fetched: its place, key, value and headers, read only."""

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...

    @property
    def timestamp(self) -> int:
        """Kafka's timestamp of the record, in ms since the epoch (-1: none)."""

    @property
    def timestamp_type(self) -> int:
        """Whose clock :attr:`timestamp` is: :data:`CREATE_TIME` or :data:`LOG_APPEND_TIME`."""


#: ``timestamp_type`` of a record timed by its producer's client (the topic's default).
CREATE_TIME = 0
#: ``timestamp_type`` of a record timed by the broker that appended it.
LOG_APPEND_TIME = 1


@dataclass(frozen=True, slots=True)
class PlainRecord:
    """A :class:`SourceRecord` made without a Kafka client (tests, benchmarks)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp: int = -1
    timestamp_type: int = CREATE_TIME


class InputPosition(NamedTuple):
    """A :class:`Position` as the intake notes one per applied event: a tuple made in a
    fraction of the time of the result record's pydantic ``SourceOffset`` (1.8 µs each), which
    is made only for the record that reports it."""

    topic: str
    partition: int
    offset: int
