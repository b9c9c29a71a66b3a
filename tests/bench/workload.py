"""The benchmark's workload: demo jobs pre-produced to fresh topics, and what each must become.

Topics are created fresh for every invocation (a unique prefix), so every run starts from the
same committed-nothing input. Events go out through the demo's own ``send_events`` (three
input topics by kind, half binary-mode, half structured) with the record timestamps captured,
so each job's event time (its last event's produce time) is known.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumer.demo import DemoPlan, build_demo, send_events
from consumer.domain.basicsync import encode_json
from consumer.domain.events import JobEvent


@dataclass
class Workload:
    prefix: str
    inputs: list[str]
    partitions: int
    jobs: int
    events: int
    #: each job's final document as the bytes every run posts (compact JSON, document order)
    bodies: dict[str, bytes]
    #: epoch seconds of each job's last event (Kafka record timestamp, CreateTime)
    event_time: dict[str, float] = field(default_factory=dict)
    produce_seconds: float = 0.0
    #: events not yet produced (``prepare(produce=False)``)
    pending: list[JobEvent] = field(default_factory=list, repr=False)

    def digests(self) -> dict[str, str]:
        return {job: hashlib.sha256(body).hexdigest() for job, body in self.bodies.items()}


class _TimedProducer:
    """Passes ``send`` through and remembers the latest record timestamp per key."""

    def __init__(self, producer: AIOKafkaProducer, times: dict[str, float]) -> None:
        self._producer = producer
        self._times = times

    async def send(self, topic: str, *, value: bytes, key: bytes, headers: Any) -> Any:
        future = await self._producer.send(topic, value=value, key=key, headers=headers)
        job = key.decode()

        def remember(done: Any) -> None:
            if not done.cancelled() and done.exception() is None:
                stamp = done.result().timestamp / 1000
                self._times[job] = max(self._times.get(job, 0.0), stamp)

        future.add_done_callback(remember)
        return future


async def create_topics(
    bootstrap: str, names: Sequence[str], partitions: int, **config: str
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, partitions, 1, topic_configs=dict(config)) for name in names]
        )
    finally:
        await admin.close()


async def prepare(
    bootstrap: str, jobs: int, partitions: int = 3, *, produce: bool = True, tag: str = ""
) -> Workload:
    """Create the input topics and (unless ``produce`` is false) produce ``jobs`` demo jobs to
    them, untimed; ``produce_paced`` sends them later instead."""
    prefix = f"bench-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}{tag}"
    inputs = [f"{prefix}.in-{kind}" for kind in ("upserts", "steps", "status")]
    await create_topics(bootstrap, inputs, partitions)
    demo = build_demo(DemoPlan(jobs=jobs, prefix=prefix))
    workload = Workload(
        prefix=prefix,
        inputs=inputs,
        partitions=partitions,
        jobs=jobs,
        events=len(demo.events),
        bodies={job: encode_json(body) for job, body in demo.expected.items()},
        pending=demo.events,
    )
    if produce:
        await produce_paced(bootstrap, workload, rate=None)
    return workload


async def produce_paced(bootstrap: str, workload: Workload, rate: float | None) -> None:
    """Send the workload's events, as fast as possible or at ``rate`` events per second."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5 if rate else 20, max_batch_size=512 * 1024
    )
    await producer.start()
    timed = _TimedProducer(producer, workload.event_time)
    events, workload.pending = workload.pending, []
    started = time.perf_counter()
    try:
        if rate is None:
            await send_events(timed, workload.inputs, events)
        else:
            tick = 0.01
            chunk = max(1, round(rate * tick))
            for n, start in enumerate(range(0, len(events), chunk)):
                await send_events(timed, workload.inputs, events[start : start + chunk], seed=n)
                ahead = started + (start + chunk) / rate - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)
    finally:
        await producer.stop()
    workload.produce_seconds = time.perf_counter() - started
