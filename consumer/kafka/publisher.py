"""Result and failure records onto their topics, through the one shared producer.

Every send returns the broker acknowledgement as a future, so callers decide what waits for
durability: the intake waits before committing offsets, the scheduler before it records a
job as synced (a synced state without its result record would break "every outcome is
reported").
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer

from consumer.domain.results import FailureRecord, SuccessRecord

Ack = asyncio.Future[Any]


class ResultPublisher:
    """Writes success records to one topic and failure records to the other."""

    def __init__(self, producer: AIOKafkaProducer, succeeded_topic: str, failed_topic: str) -> None:
        self._producer = producer
        self._succeeded = succeeded_topic
        self._failed = failed_topic

    async def succeeded(self, record: SuccessRecord) -> Ack:
        future: Ack = await self._producer.send(
            self._succeeded, value=record.to_json_bytes(), key=record.client_job_id.encode()
        )
        return future

    async def failed(self, record: FailureRecord, raw_key: bytes | None = None) -> Ack:
        """Keyed by clientJobId, or by the raw input key when the event never decoded."""
        key = record.client_job_id.encode() if record.client_job_id is not None else raw_key
        future: Ack = await self._producer.send(self._failed, value=record.to_json_bytes(), key=key)
        return future
