"""Wiring and lifecycle: every resource opened in one place, closed in one documented order.

Start: check topics (co-partitioning, create internal ones), open the HTTP session, the
``/metrics``, ``/healthz``, ``/readyz`` server (when ``observability.http_port`` is set) and the
producer, then join the group; state restore happens inside the assignment callback.

Shutdown (``stop`` set by a signal, or a fatal error in any task):
1. stop fetching (the consume loop ends after its current batch, which it commits);
2. let requests in flight finish within ``sync.shutdown_deadline_s`` (their results and
   synced versions are written), cancel the rest (their jobs are re-posted after restart);
3. flush the producer, leave the group, close the producer, the admin client, the session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from consumer.config import Settings
from consumer.domain.job import JobState
from consumer.domain.results import SuccessRecord
from consumer.errors import ConfigError
from consumer.gateway.auth import ClientCredentialsTokenProvider
from consumer.gateway.client import GatewayClient
from consumer.gateway.tls import gateway_ssl
from consumer.kafka.admin import TopicPlan, ensure_topology
from consumer.kafka.connection import client_kwargs
from consumer.kafka.publisher import Ack, ResultPublisher
from consumer.kafka.source import EventSource
from consumer.observability.health import WatchedTokens, serve_health
from consumer.observability.stats import Stats
from consumer.pipeline import Pipeline, PipelineLimits
from consumer.state.changelog import ChangelogWriter, RestoreReport, restore
from consumer.state.store import JobStore
from consumer.sync.circuit import CircuitBreaker
from consumer.sync.retry import RetryPolicy
from consumer.sync.scheduler import SyncScheduler

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Endpoints:
    """Where Kafka and WorkfloPlus are: from settings, or from the embedded services."""

    bootstrap_servers: list[str]
    gateway_url: str
    token_url: str
    client_id: str
    client_secret: SecretStr


def endpoints_from(settings: Settings, bootstrap_servers: list[str] | None = None) -> Endpoints:
    """Endpoints of a run against configured (not embedded) Kafka and WorkfloPlus."""
    gateway = settings.gateway
    servers = bootstrap_servers or settings.kafka.bootstrap_servers
    if (
        not servers
        or gateway.base_url is None
        or gateway.token_url is None
        or gateway.client_id is None
        or gateway.client_secret is None
    ):
        raise ConfigError(
            "set BASICSYNC_KAFKA__BOOTSTRAP_SERVERS and BASICSYNC_GATEWAY__BASE_URL, "
            "TOKEN_URL, CLIENT_ID and CLIENT_SECRET (or leave both unset for the embedded demo)"
        )
    return Endpoints(
        bootstrap_servers=servers,
        gateway_url=gateway.base_url,
        token_url=gateway.token_url,
        client_id=gateway.client_id,
        client_secret=gateway.client_secret,
    )


class _Outcomes:
    """The scheduler's durable side: result topics plus the changelog."""

    def __init__(
        self, publisher: ResultPublisher, changelog: ChangelogWriter, stats: Stats
    ) -> None:
        self._publisher = publisher
        self.failed = publisher.failed
        self._changelog = changelog
        self._stats = stats
        self.pipeline: Pipeline | None = None  # set once built: it checkpoints the changes

    async def succeeded(self, record: SuccessRecord) -> Ack:
        self._stats.synced(record.latency_ms)  # event-to-sync latency
        return await self._publisher.succeeded(record)

    def state_changed(self, partition: int, state: JobState) -> None:
        if self.pipeline is not None:
            self.pipeline.note_changed(state.client_job_id, partition)

    async def make_durable(self, partition: int, state: JobState) -> None:
        await self._changelog.make_durable(partition, state)


class _CircuitPausesSource:
    """While the gateway is down, consumption pauses (DESIGN promise 6)."""

    def __init__(self, stats: Stats) -> None:
        self._stats = stats
        self.source: EventSource | None = None

    def circuit_changed(self, is_open: bool) -> None:
        self._stats.circuit_changed(is_open)
        if self.source is not None:
            if is_open:
                self.source.pause_all()
                log.warning("consumption_paused", reason="circuit_open")
            else:
                self.source.resume_all()
                log.info("consumption_resumed")

    def request_finished(self, outcome: str, status: int | None, seconds: float) -> None:
        self._stats.request_finished(outcome, status, seconds)


@dataclass
class Running:
    """Handles a caller (the run command, tests) may look at while the consumer runs."""

    stats: Stats
    pipeline: Pipeline | None = None
    scheduler: SyncScheduler | None = None
    source: EventSource | None = None
    #: the bound port of /metrics, /healthz, /readyz (None: not serving)
    http_port: int | None = None
    #: why Kafka refuses us while a missing ACL is waited out (None: access granted)
    kafka_access: str | None = None


async def run_consumer(
    settings: Settings,
    endpoints: Endpoints,
    stop: asyncio.Event,
    running: Running | None = None,
) -> None:
    """Run until ``stop`` is set; raises ``FatalError`` subclasses for what needs an operator."""
    running = running or Running(stats=Stats())
    stats = running.stats
    kafka = client_kwargs(settings.kafka, endpoints.bootstrap_servers)
    sync = settings.sync
    async with AsyncExitStack() as stack:
        admin = AIOKafkaAdminClient(**kafka)
        stack.push_async_callback(admin.close)  # before start: a failed start is closed too
        await admin.start()
        partition_count = await ensure_topology(
            admin,
            TopicPlan(
                inputs=tuple(settings.topics.input),
                changelog=settings.state_topic,
                results=(settings.topics.succeeded, settings.topics.failed),
                create_missing=settings.kafka.create_topics,
                replication_factor=settings.kafka.replication_factor,
            ),
        )

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=sync.concurrency + 4, ssl=gateway_ssl(settings.gateway)
            )
        )
        stack.push_async_callback(session.close)
        tokens = WatchedTokens(
            ClientCredentialsTokenProvider(
                session,
                endpoints.token_url,
                endpoints.client_id,
                endpoints.client_secret,
                settings.gateway.scope,
            )
        )
        if settings.observability.http_port is not None:
            http = await stack.enter_async_context(
                serve_health(running, tokens, host="0.0.0.0", port=settings.observability.http_port)
            )
            running.http_port = http.port
        gateway = GatewayClient(
            session,
            endpoints.gateway_url,
            tokens,
            request_timeout=settings.gateway.request_timeout_s,
        )

        producer = AIOKafkaProducer(
            **kafka, acks="all", enable_idempotence=True, linger_ms=10, max_batch_size=1 << 20
        )
        stack.push_async_callback(producer.stop)
        await producer.start()

        def consumer_factory(**extra: Any) -> AIOKafkaConsumer:
            return AIOKafkaConsumer(**kafka, **extra)

        store = JobStore()
        changelog = ChangelogWriter(producer, settings.state_topic)
        publisher = ResultPublisher(producer, settings.topics.succeeded, settings.topics.failed)
        observer = _CircuitPausesSource(stats)
        outcomes = _Outcomes(publisher, changelog, stats)
        scheduler = SyncScheduler(
            store,
            gateway,
            outcomes,
            sync,
            observer,
            circuit=CircuitBreaker(failure_threshold=sync.circuit_failure_threshold),
            retry=RetryPolicy(
                initial=sync.retry_initial_ms / 1000,
                maximum=sync.retry_max_ms / 1000,
                max_attempts=sync.retry_max_attempts,
                max_elapsed=sync.retry_max_elapsed_s,
            ),
        )
        source = EventSource(
            lambda **extra: consumer_factory(
                group_id=settings.kafka.group_id,
                max_poll_records=settings.kafka.max_poll_records,
                session_timeout_ms=settings.kafka.session_timeout_ms,
                heartbeat_interval_ms=min(3_000, settings.kafka.session_timeout_ms // 3),
                max_partition_fetch_bytes=max(settings.kafka.max_event_bytes + 1024, 1 << 20),
                **extra,
            ),
            list(settings.topics.input),
        )
        observer.source = source

        async def restore_partitions(
            partitions: set[int],
        ) -> tuple[dict[int, dict[str, JobState]], RestoreReport]:
            return await restore(
                lambda: consumer_factory(enable_auto_commit=False),
                settings.state_topic,
                partitions,
            )

        async def changelog_end_offsets(partitions: set[int]) -> dict[int, int]:
            tps = [TopicPartition(settings.state_topic, p) for p in partitions]
            ends: dict[TopicPartition, int] = await source.end_offsets(tps)
            return {tp.partition: offset for tp, offset in ends.items()}

        pipeline = Pipeline(
            source,
            store,
            changelog,
            publisher,
            scheduler,
            restore_partitions,
            changelog_end_offsets,
            producer.flush,
            PipelineLimits(
                partition_count=partition_count,
                max_event_bytes=settings.kafka.max_event_bytes,
                revoke_deadline_s=sync.shutdown_deadline_s,
                retention_s=sync.retention_s,
                checkpoint_interval_s=settings.kafka.checkpoint_interval_ms / 1000,
                catch_up_lag=sync.catch_up_lag,
            ),
            stats,
        )
        outcomes.pipeline = pipeline
        running.pipeline = pipeline
        running.scheduler = scheduler
        running.source = source

        stack.push_async_callback(source.stop)
        await source.start(pipeline)
        log.info(
            "consumer_started",
            group=settings.kafka.group_id,
            inputs=list(settings.topics.input),
            partitions=partition_count,
        )
        await _run_until_stopped(pipeline, scheduler, stop, sync.shutdown_deadline_s)
        await producer.flush()
        log.info("consumer_stopped")


async def _run_until_stopped(
    pipeline: Pipeline, scheduler: SyncScheduler, stop: asyncio.Event, deadline: float
) -> None:
    async def consume_then_drain() -> None:
        await pipeline.run(stop)
        await scheduler.stop(deadline)

    async with asyncio.TaskGroup() as group:
        group.create_task(scheduler.run(), name="scheduler")
        group.create_task(consume_then_drain(), name="consume")
        group.create_task(pipeline.sweep_forever(stop), name="retention")


def stop_on(stop: asyncio.Event, hard_exit: Callable[[], None]) -> Callable[[], None]:
    """A signal handler: the first signal sets ``stop``, a second one exits at once."""

    def handle() -> None:
        if stop.is_set():
            hard_exit()
        log.info("shutdown_requested")
        stop.set()

    return handle
