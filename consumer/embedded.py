"""``basicsync run --embedded``: local Kafka, the sandbox and a demo, no setup (development).

Only ever on request (the ``--embedded`` flag): with no ``BASICSYNC_KAFKA__BOOTSTRAP_SERVERS``
the local Apache Kafka broker of ``deploy/kafka-local`` is started (it needs a source checkout,
Java 17+ and Maven); with no ``BASICSYNC_GATEWAY__BASE_URL`` the WorkfloPlus sandbox runs in
this process. When both are
embedded a set of demo jobs is streamed to the input topics and the run ends once WorkfloPlus
(the sandbox) holds every demo job exactly as its events assemble it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from consumer.app import Endpoints, Running, endpoints_from, run_consumer
from consumer.config import Settings
from consumer.demo import DemoPlan, build_demo, send_events
from consumer.errors import ConfigError
from consumer.kafka.admin import create_topics, partition_counts
from consumer.observability.stats import Stats
from consumer.observability.tracing import TRACING_OFF, Tracing
from consumer.sandbox.server import Sandbox, run_sandbox
from consumer.sandbox.settings import SandboxSettings

log = structlog.get_logger(__name__)

KAFKA_SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "kafka-local" / "kafka.sh"
DEMO_PARTITIONS = 3


def start_local_kafka(port: int) -> str:
    """Start (or reuse) the local broker; returns its bootstrap address."""
    if not KAFKA_SCRIPT.exists():
        raise ConfigError(
            f"the embedded broker needs a source checkout ({KAFKA_SCRIPT} is missing); "
            "set BASICSYNC_KAFKA__BOOTSTRAP_SERVERS to use your own Kafka"
        )
    env = {**os.environ, "KAFKA_PORT": str(port)}
    result = subprocess.run(
        ["bash", str(KAFKA_SCRIPT), "start"], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ConfigError(f"the local Kafka broker did not start:\n{result.stderr.strip()}")
    return f"127.0.0.1:{port}"


def _matches(sandbox: Sandbox, expected: dict[str, dict[str, Any]]) -> int:
    """How many demo jobs the sandbox holds exactly as expected (its last accepted body)."""
    return sum(1 for job, body in expected.items() if sandbox.state.document(job) == body)


async def run_embedded(
    settings: Settings,
    stop: asyncio.Event,
    *,
    plan: DemoPlan,
    kafka_port: int = 9092,
    progress: Callable[[str], None] = print,
    tracing: Tracing = TRACING_OFF,
) -> int:
    """Run with whatever is not configured started locally; 0 when the demo converged."""
    async with AsyncExitStack() as stack:
        servers = settings.kafka.bootstrap_servers or [
            await asyncio.to_thread(start_local_kafka, kafka_port)
        ]
        sandbox: Sandbox | None = None
        if settings.embedded_gateway:
            sandbox = await stack.enter_async_context(run_sandbox(SandboxSettings()))
            endpoints = Endpoints(
                bootstrap_servers=servers,
                gateway_url=sandbox.base_url,
                token_url=sandbox.token_url,
                client_id=sandbox.settings.client_id,
                client_secret=SecretStr(sandbox.settings.client_secret),
            )
        else:
            endpoints = endpoints_from(settings, servers)
        running = Running(stats=Stats())
        if sandbox is None or not settings.embedded_kafka:
            # Only one side is local: run as a normal consumer until stopped.
            await run_consumer(settings, endpoints, stop, running, tracing=tracing)
            return 0
        demo = build_demo(plan)
        await _produce_demo(settings, servers, demo.events, plan)
        progress(
            f"streamed {len(demo.events)} events of {plan.jobs} demo jobs to "
            f"{', '.join(settings.topics.input)} on {servers[0]}; sandbox at {sandbox.base_url}"
        )
        consumer = asyncio.create_task(
            run_consumer(settings, endpoints, stop, running, tracing=tracing)
        )
        started = time.monotonic()
        synced = 0
        while not consumer.done():
            synced = _matches(sandbox, demo.expected)
            stats = running.stats
            progress(
                f"synced {synced}/{plan.jobs} jobs | events {stats.events} | "
                f"requests {sum(stats.requests.values())} | {time.monotonic() - started:.1f}s"
            )
            if synced == plan.jobs:
                stop.set()
                break
            await asyncio.wait({consumer}, timeout=1.0)
        await consumer
        requests = sum(running.stats.requests.values())
        progress(
            f"done: {synced}/{plan.jobs} demo jobs in WorkfloPlus (sandbox) exactly as assembled, "
            f"{running.stats.events} events, {requests} requests, "
            f"{time.monotonic() - started:.1f}s"
        )
        # The local broker outlives the run: say how to look at what it holds.
        progress(
            f"the local broker keeps running; inspect a demo job with: "
            f"BASICSYNC_KAFKA__BOOTSTRAP_SERVERS={servers[0]} basicsync inspect "
            f"{next(iter(demo.expected))}  (stop the broker: KAFKA_PORT={kafka_port} "
            "bash deploy/kafka-local/kafka.sh stop)"
        )
        return 0 if synced == plan.jobs else 1


async def _produce_demo(
    settings: Settings, servers: list[str], events: list[Any], plan: DemoPlan
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        existing = await partition_counts(admin, settings.topics.input)
        await create_topics(
            admin,
            {t: (DEMO_PARTITIONS, {}) for t in settings.topics.input if t not in existing},
            replication_factor=1,
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=10, enable_idempotence=True)
    await producer.start()
    try:
        await send_events(
            producer, settings.topics.input, events, binary_share=plan.binary_share, seed=plan.seed
        )
    finally:
        await producer.stop()
