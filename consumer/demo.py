"""Streams realistic demo jobs to the input topics and knows the body each must produce.

Used by the embedded quick start, the ``demo`` subcommand, integration tests and benchmarks.
A job's events are keyed by its clientJobId, so the Java-compatible default partitioner puts
them on the same partition number of whichever input topic each event goes to.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from consumer.domain.demo_jobs import demo_job
from consumer.domain.events import EventType, JobEvent, encode_binary, encode_structured

_KIND = {
    EventType.upserted: 0,
    EventType.step_completed: 1,
    EventType.step_cancelled: 1,
    EventType.status_changed: 2,
    EventType.excluded: 2,
    EventType.aborted: 2,
}


@dataclass(frozen=True)
class DemoPlan:
    """How many jobs, how big, and which share aborts, exclusions and binary-mode events."""

    jobs: int = 200
    steps: int = 10
    abort_share: float = 0.05
    exclude_share: float = 0.05
    binary_share: float = 0.5
    seed: int = 7
    prefix: str = "demo"


@dataclass
class DemoJobs:
    """The events to send, in the order to send them, and each job's expected body."""

    events: list[JobEvent] = field(default_factory=list)
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)


def build_demo(plan: DemoPlan) -> DemoJobs:
    """Jobs whose events interleave as they would from many field workers at once."""
    rng = random.Random(plan.seed)
    demo = DemoJobs()
    streams: list[list[JobEvent]] = []
    for n in range(plan.jobs):
        job_id = f"{plan.prefix}-{plan.seed}-{n:06d}"
        events, body = demo_job(
            rng,
            job_id,
            steps=plan.steps,
            abort=rng.random() < plan.abort_share,
            exclude=rng.random() < plan.exclude_share,
        )
        streams.append(events)
        demo.expected[job_id] = body
    # Interleave: repeatedly take the next event of a random unfinished job.
    cursors = [0] * len(streams)
    live = list(range(len(streams)))
    while live:
        pick = rng.randrange(len(live))
        index = live[pick]
        demo.events.append(streams[index][cursors[index]])
        cursors[index] += 1
        if cursors[index] == len(streams[index]):
            live[pick] = live[-1]
            live.pop()
    return demo


async def send_events(
    producer: AIOKafkaProducer,
    topics: Sequence[str],
    events: Sequence[JobEvent],
    *,
    binary_share: float = 0.5,
    seed: int = 7,
) -> int:
    """Send ``events`` to ``topics`` by kind, as separate upstream systems would.

    With three topics: job upserts to the first, step events to the second, status, abort and
    exclusion events to the third; with fewer, the kinds share. Returns the count acknowledged.
    """
    rng = random.Random(seed)
    acks: list[asyncio.Future[Any]] = []
    for event in events:
        encode = encode_binary if rng.random() < binary_share else encode_structured
        key, value, headers = encode(event)
        topic = topics[_KIND[event.type] % len(topics)]
        acks.append(await producer.send(topic, value=value, key=key, headers=headers))
    await asyncio.gather(*acks)
    return len(acks)
