"""An input record as the consumer reads it, in plain data.

The group member (``kafka/source.py``) turns aiokafka's records into these, so the pure core
(``intake.py``) and its tests handle input without a Kafka client.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """An input message as fetched, independent of the Kafka client's types."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
