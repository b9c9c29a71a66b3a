"""An input record as the consumer reads it: what the pure core needs of it, and no more.

The pure core (``intake.py``) takes any object with these six attributes. The group member
(``kafka/source.py``) hands it aiokafka's own ``ConsumerRecord`` objects, which have them,
instead of copying each record into a type of our own (design notes §8). Tests and benchmarks
build :class:`PlainRecord` values, with no Kafka client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class SourceRecord(Protocol):
    """An input message as fetched: its place, key, value and headers, read only."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...


@dataclass(frozen=True, slots=True)
class PlainRecord:
    """A :class:`SourceRecord` made without a Kafka client (tests, benchmarks)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
