"""``basicsync run --embedded``: local Kafka, the sandbox and a demo, no setup (development).

Only ever on request (the ``--embedded`` flag): with no ``BASICSYNC_KAFKA__BOOTSTRAP_SERVERS``
the local Apache Kafka broker of ``deploy/kafka-local`` is started (it needs a source checkout,
Java 17+ and Maven); with no ``BASICSYNC_GATEWAY__BASE_URL`` the WorkfloPlus sandbox runs in
this process. When both are
embedded a set of demo jobs is streamed to the input topics and the run ends once WorkfloPlus
(the sandbox) holds every demo job exactly as its events assemble it. Progress shows on the
``Display`` (``consumer.progress``); the last lines are ``check`` and ``inspect`` command lines
that work as printed against the broker the run leaves behind.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from consumer.app import Endpoints, Running, endpoints_from, run_consumer
from consumer.config import Settings
from consumer.demo import DemoJobs, DemoPlan, build_demo, send_events
from consumer.errors import ConfigError
from consumer.kafka.admin import create_topics, partition_counts
from consumer.kafka.starting import start_client
from consumer.observability.stats import Stats
from consumer.observability.tracing import TRACING_OFF, Tracing
from consumer.progress import Display, ProgressReport, open_display
from consumer.testing.workfloplus.server import Sandbox, run_sandbox
from consumer.testing.workfloplus.settings import SandboxSettings

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


def log_progress(report: ProgressReport) -> None:
    """The plain progress of a run (no terminal, or JSON logs): a log line, so it has the
    logs' format."""
    log.info(
        "demo_progress",
        synced=report.completed,
        jobs=report.total,
        elapsed_s=round(report.elapsed_s, 1),
        **report.fields,
    )


def plain_display() -> Display:
    """No live display: progress as log lines, the rest on stdout."""
    return open_display("json", emit=log_progress)


async def run_embedded(
    settings: Settings,
    stop: asyncio.Event,
    *,
    plan: DemoPlan,
    kafka_port: int = 9092,
    display: Display | None = None,
    tracing: Tracing = TRACING_OFF,
) -> int:
    """Run with whatever is not configured started locally; 0 when the demo converged."""
    display = display or plain_display()
    async with AsyncExitStack() as stack:
        servers = settings.kafka.bootstrap_servers or [
            await asyncio.to_thread(start_local_kafka, kafka_port)
        ]
        sandbox: Sandbox | None = None
        if settings.embedded_gateway:
            sandbox = await stack.enter_async_context(run_sandbox(SandboxSettings()))
            endpoints = _sandbox_endpoints(servers, sandbox)
        else:
            endpoints = endpoints_from(settings, servers)
        running = Running(stats=Stats())
        if sandbox is None or not settings.embedded_kafka:
            # Only one side is local: run as a normal consumer until stopped.
            await run_consumer(settings, endpoints, stop, running, tracing=tracing)
            return 0
        demo = build_demo(plan)
        await _produce_demo(settings, servers, demo.events, plan)
        display.say(
            f"streamed {len(demo.events)} events of {plan.jobs} demo jobs to "
            f"{', '.join(settings.topics.input)} on {servers[0]}; sandbox at {sandbox.base_url}"
        )
        consumer = run_consumer(settings, endpoints, stop, running, tracing=tracing)
        synced = await _until_converged(consumer, sandbox, demo, running, stop, display)
        for line in next_steps(servers[0], next(iter(demo.expected)), kafka_port):
            display.say(line)
        return 0 if synced == plan.jobs else 1


def _sandbox_endpoints(servers: list[str], sandbox: Sandbox) -> Endpoints:
    return Endpoints(
        bootstrap_servers=servers,
        gateway_url=sandbox.base_url,
        token_url=sandbox.token_url,
        client_id=sandbox.settings.client_id,
        client_secret=SecretStr(sandbox.settings.client_secret),
    )


async def _until_converged(
    consumer: Coroutine[Any, Any, None],
    sandbox: Sandbox,
    demo: DemoJobs,
    running: Running,
    stop: asyncio.Event,
    display: Display,
) -> int:
    """Run the consumer until the sandbox holds every demo job as expected (or it stops);
    returns how many it holds so."""
    task = asyncio.create_task(consumer)
    started = time.monotonic()
    synced, jobs = 0, len(demo.expected)
    with display.progress("synced", jobs, "jobs") as progress:
        while not task.done():
            synced = _matches(sandbox, demo.expected)
            stats = running.stats
            progress.update(synced, events=stats.events, requests=sum(stats.requests.values()))
            if synced == jobs:
                stop.set()
                break
            await asyncio.wait({task}, timeout=0.5)
        await task
    requests = sum(running.stats.requests.values())
    display.say(
        f"done: {synced}/{jobs} demo jobs in WorkfloPlus (sandbox) exactly as assembled, "
        f"{running.stats.events} events, {requests} requests, {time.monotonic() - started:.1f}s"
    )
    return synced


def _matches(sandbox: Sandbox, expected: dict[str, dict[str, Any]]) -> int:
    """How many demo jobs the sandbox holds exactly as expected (its last accepted body)."""
    return sum(1 for job, body in expected.items() if sandbox.state.document(job) == body)


def next_steps(bootstrap: str, job: str, kafka_port: int) -> list[str]:
    """What to run next against the broker the run leaves behind, as lines to copy: ``check``
    (Kafka and the topics; the in-process sandbox ended with the run) and ``inspect`` of a
    demo job, each prefixed with the broker's address, and how to stop the broker."""
    env = f"BASICSYNC_KAFKA__BOOTSTRAP_SERVERS={shlex.quote(bootstrap)}"
    program = basicsync_command()
    stop = f"KAFKA_PORT={kafka_port} bash {shlex.quote(str(KAFKA_SCRIPT))} stop"
    return [
        f"the local broker keeps running (stop it with: {stop}); look at what this run left:",
        f"  {env} {program} check --skip-gateway",
        f"  {env} {program} inspect {shlex.quote(job)}",
    ]


def basicsync_command() -> str:
    """How to run ``basicsync`` from the user's shell: ``basicsync`` when that is on PATH and
    is this program, else this program's absolute path (``deploy/dev.sh`` runs
    ``.venv/bin/basicsync``), else this interpreter with ``-m consumer``."""
    invoked = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if invoked is not None and invoked.name == "basicsync" and invoked.exists():
        on_path = shutil.which("basicsync")
        if on_path is not None and Path(on_path).resolve() == invoked.resolve():
            return "basicsync"
        return shlex.quote(str(invoked.resolve()))
    return f"{shlex.quote(sys.executable)} -m consumer"


async def _produce_demo(
    settings: Settings, servers: list[str], events: list[Any], plan: DemoPlan
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    try:
        await start_client(admin.start())
        existing = await partition_counts(admin, settings.topics.input)
        await create_topics(
            admin,
            {t: (DEMO_PARTITIONS, {}) for t in settings.topics.input if t not in existing},
            replication_factor=1,
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=10, enable_idempotence=True)
    try:
        await start_client(producer.start())
        await send_events(
            producer, settings.topics.input, events, binary_share=plan.binary_share, seed=plan.seed
        )
    finally:
        await producer.stop()
