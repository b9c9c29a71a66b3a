"""Wiring and lifecycle: every resource opened in one place, closed in one documented order.

Start: serve ``/metrics``, ``/healthz``, ``/readyz`` (when ``observability.http_port`` is set),
reach Kafka (an unreachable cluster is waited out with one log line per attempt, never a
crash), check topics (co-partitioning, create internal ones), open the HTTP session, then join
the group; each assigned partition's transactional producer starts and its state is restored
inside the assignment callback.

Shutdown (``stop`` set by a signal, or a fatal error in any task), each step bounded so that a
broker that does not answer cannot hold the exit past the platform's grace period:
1. stop fetching and take a last checkpoint, within ``sync.shutdown_deadline_s``;
2. let requests in flight finish within ``sync.shutdown_deadline_s``; cancel the rest (their
   jobs are in doubt and re-posted after the window);
3. commit what they recorded by twice the deadline from the stop, close the partitions'
   producers, leave the group, close the admin client and the session.
A last checkpoint that runs out of time in step 1 is only late (``last_checkpoint_late``): step 3
commits its work too. One given up in step 3 is logged (``last_checkpoint_abandoned``) and makes
``basicsync run`` exit with code 3; nothing is lost (see ``Pipeline.finish``).
"""

from __future__ import annotations

import asyncio
import functools
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResourceType
from aiokafka.errors import InconsistentGroupProtocolError, KafkaError
from pydantic import SecretStr

from consumer.certificate_dates import CertificateDates
from consumer.config import Settings
from consumer.errors import ConfigError, ConfigsUnread, FatalError, TopicLayoutError, leaves
from consumer.gateway.auth import ClientCredentialsTokenProvider
from consumer.gateway.client import GatewayClient
from consumer.gateway.proxy import Proxy, gateway_proxies
from consumer.gateway.tls import gateway_ssl
from consumer.kafka.access import is_denial
from consumer.kafka.admin import (
    TopicPlan,
    changelog_policy_problem,
    described_configs,
    ensure_topology,
    partition_counts,
)
from consumer.kafka.connection import client_kwargs
from consumer.kafka.diagnose import describe, security_problem, why_no_answer
from consumer.kafka.input_topics import InputSelection
from consumer.kafka.limits import (
    ChangelogRoom,
    changelog_max_message_bytes,
    changelog_room,
    compression_type,
    max_request_size,
)
from consumer.kafka.placement import check_changelog_placement
from consumer.kafka.reachability import KafkaProbe, watching_kafka
from consumer.kafka.sasl_password import SaslPasswordWatch, tracked, watching_sasl_password
from consumer.kafka.source import EventSource
from consumer.kafka.starting import start_client
from consumer.kafka.topic_watch import InputTopicWatch
from consumer.kafka.transactions import PartitionProducer, TopicsGone
from consumer.observability.health import WatchedTokens, serve_health
from consumer.observability.metrics import Metrics
from consumer.observability.stats import Stats
from consumer.observability.tracing import TRACING_OFF, SyncTracer, Tracing
from consumer.pipeline import Pipeline, PipelineLimits, Restored, Restorer
from consumer.secret_file import SecretFile
from consumer.state.checkpoint import Checkpoint, CheckpointTopics
from consumer.state.continuity import ChangelogBounds, ChangelogOwner, changelog_owner
from consumer.state.memory import MemoryGuard, memory_limit_bytes
from consumer.state.recovery import RestoreReport, changelog_bounds, restore, writers_between
from consumer.state.store import JobStore
from consumer.stopping import Stopped, set_within, unless_stopped
from consumer.sync.circuit import CircuitBreaker
from consumer.sync.diagnosis import GatewayEvidence
from consumer.sync.retry import RetryPolicy
from consumer.sync.scheduler import SyncScheduler
from consumer.tls_files import TlsFiles, TlsFilesWatch, watching_tls_files

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Endpoints:
    """Where Kafka and WorkfloPlus are: from settings, or from the embedded services."""

    bootstrap_servers: list[str]
    gateway_url: str
    token_url: str
    client_id: str
    client_secret: SecretStr
    #: the file the secret was read from, read again before each token request
    client_secret_file: Path | None = None
    #: the HTTP proxies to the gateway and to the token endpoint (None: direct)
    gateway_proxy: Proxy | None = None
    token_proxy: Proxy | None = None


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
    gateway_proxy, token_proxy = gateway_proxies(gateway)
    return Endpoints(
        bootstrap_servers=servers,
        gateway_url=gateway.base_url,
        token_url=gateway.token_url,
        client_id=gateway.client_id,
        client_secret=gateway.client_secret,
        client_secret_file=gateway.client_secret_file,
        gateway_proxy=gateway_proxy,
        token_proxy=token_proxy,
    )


class _CircuitPausesSource:
    """While the gateway is down, consumption pauses (docs/contract.md §2, promise 6)."""

    def __init__(self, stats: Stats, source: EventSource) -> None:
        self._stats = stats
        self._source = source

    def circuit_changed(self, is_open: bool) -> None:
        self._stats.circuit_changed(is_open)
        if is_open:
            self._source.pause_all()
            log.warning("consumption_paused", reason="circuit_open")
        else:
            self._source.resume_all()
            log.info("consumption_resumed")

    def intent_committed(self, seconds: float) -> None:
        self._stats.intent_committed(seconds)

    def request_finished(self, outcome: str, status: int | None, seconds: float) -> None:
        self._stats.request_finished(outcome, status, seconds)

    def job_synced(self, latency_ms: int | None) -> None:
        self._stats.synced(latency_ms)


@dataclass
class Running:
    """Handles a caller (the run command, tests) may look at while the consumer runs; the
    health endpoints read it as ``observability.health.Observed``."""

    stats: Stats
    #: what start-up is waiting for (e.g. an unreachable Kafka), for readiness
    waiting_for: str | None = None
    pipeline: Pipeline | None = None
    scheduler: SyncScheduler | None = None
    source: EventSource | None = None
    #: the bound port of /metrics, /healthz, /readyz (None: not serving)
    http_port: int | None = None
    #: why Kafka refuses us while a missing ACL is waited out (None: access granted)
    kafka_access: str | None = None
    #: why Kafka has not answered this running member for a while (None: it answers)
    kafka_unreachable: str | None = None
    #: False once a stop gave up a last checkpoint it could not commit in time
    stop_committed: bool = True
    #: the TLS files of the current run, watched for renewals (None: not started, or no TLS)
    tls_files: TlsFilesWatch | None = None

    @property
    def metrics(self) -> Metrics:
        return self.stats.metrics

    @property
    def client_certificates(self) -> Mapping[str, CertificateDates]:
        """The dates of the client certificates in use, by TLS context ("kafka")."""
        return self.tls_files.client_certificates if self.tls_files is not None else {}

    def drop_components(self) -> None:
        """Forget the parts of a run that ended (the next run fills them again)."""
        self.pipeline = self.scheduler = self.source = None


async def run_consumer(
    settings: Settings,
    endpoints: Endpoints,
    stop: asyncio.Event,
    running: Running | None = None,
    *,
    wrap_restore: Callable[[Restorer], Restorer] | None = None,
    tracing: Tracing = TRACING_OFF,
) -> None:
    """Run until ``stop`` is set; raises ``FatalError`` subclasses for what needs an operator.

    ``wrap_restore`` is a seam for fault tests: it wraps the changelog restore. ``tracing``
    (off by default) traces each sync and the gateway's HTTP requests; the caller shuts it down.
    """
    running = running or Running(stats=Stats())
    kafka = client_kwargs(settings.kafka, endpoints.bootstrap_servers)
    gateway_tls = gateway_ssl(settings.gateway)
    async with AsyncExitStack() as stack:
        running.tls_files = await _watch_tls_files(stack, settings, kafka, gateway_tls)
        sasl = await _watch_sasl_password(stack, settings, kafka)
        session = _gateway_session(stack, settings, tracing, gateway_tls)
        tokens = _watched_tokens(session, endpoints, settings)
        await _serve_endpoints(stack, settings, running, tokens)
        admin = await _until_reachable(
            "admin", lambda: _started_admin(kafka, sasl), settings, endpoints, stop, running
        )
        if admin is None:
            return
        stack.push_async_callback(admin.close)
        await _watch_kafka(stack, admin, settings, endpoints.bootstrap_servers, running)
        try:
            topics = await unless_stopped(stop, _checked_topics(admin, kafka, settings))
        except Stopped:
            return
        running.waiting_for = None
        gateway = _gateway_client(session, endpoints, tokens, settings)
        pipeline, scheduler, source = _assemble(
            settings,
            kafka,
            gateway,
            running.stats,
            topics,
            wrap_restore,
            tracing.sync_tracer,
            stop,
            sasl,
        )
        running.pipeline, running.scheduler = pipeline, scheduler
        watch = _input_watch(topics, settings, source, running.metrics)
        if await _join_group(stack, source, pipeline, settings, endpoints, stop, running):
            log.info(
                "consumer_started",
                group=settings.kafka.group_id,
                inputs=list(topics.inputs.read),
                partitions=topics.limits.partition_count,
            )
            running.stop_committed = await _run_until_stopped(
                pipeline, scheduler, stop, settings.sync.shutdown_deadline_s, watch
            )
        log.info("consumer_stopped", last_checkpoint_committed=running.stop_committed)


@dataclass(frozen=True)
class _CheckedTopics:
    """What the start learned of the topics, and the admin client that asks again."""

    #: the pipeline's limits: they depend on the partition count and the changelog's room
    limits: PipelineLimits
    #: the input topics read (and refused, under a pattern)
    inputs: InputSelection
    #: what the changelog held for a job's key and state at the start (None: enough)
    changelog_room: int | None
    admin: AIOKafkaAdminClient
    settings: Settings

    async def topics_gone(self, topics: set[str]) -> set[str]:
        """Which of ``topics`` no longer exist (``PartitionProducer``'s check)."""
        return topics - set(await partition_counts(self.admin, topics))

    async def described_room(self) -> int | None:
        """The changelog's room for a job from its configuration now (the checkpoint asks
        when the broker refuses a state); None when it holds enough or cannot be read."""
        changelog = self.settings.state_topic
        try:
            config = await described_configs(self.admin, ConfigResourceType.TOPIC, changelog)
        except ConfigsUnread:
            return None
        return _room_in(config, self.settings)


async def _checked_topics(
    admin: AIOKafkaAdminClient, kafka: dict[str, Any], settings: Settings
) -> _CheckedTopics:
    """The pipeline's limits and the input topics to read, once the topics' layout is checked
    (internal ones created) and the changelog's keys are where the partition count puts them
    (``changelog_room``: the changelog's room for a job)."""
    layout = await ensure_topology(admin, _topic_plan(settings))
    count = layout.partition_count
    room = await _checked_changelog_config(admin, settings)
    await check_changelog_placement(_consumer_factory(kafka), settings.state_topic, count)
    return _CheckedTopics(_pipeline_limits(settings, count), layout.inputs, room, admin, settings)


def _input_watch(
    topics: _CheckedTopics, settings: Settings, source: EventSource, metrics: Metrics
) -> InputTopicWatch:
    """What keeps the subscription to an input pattern current (run only under a pattern)."""
    watch = InputTopicWatch(
        topics.admin,
        settings.input_topics(),
        topics.limits.partition_count,
        source,
        metrics.set_input_topics,
        interval_s=settings.kafka.metadata_max_age_ms / 1000,
    )
    watch.report(topics.inputs)
    return watch


async def _checked_changelog_config(admin: AIOKafkaAdminClient, settings: Settings) -> int | None:
    """Refuse a changelog that deletes states by age or size (``changelog_policy_problem``);
    return its room for a job when its ``max.message.bytes`` is below what
    ``kafka.max_job_bytes`` needs, said once here. A principal without ``DescribeConfigs`` on
    it (``run`` does not need it otherwise) is warned that nothing was checked, as is a
    cluster that will not describe it for another reason (said)."""
    changelog = settings.state_topic
    try:
        config = await described_configs(admin, ConfigResourceType.TOPIC, changelog)
    except ConfigsUnread as exc:
        fix = "grant it, or check" if exc.denied else "check"
        log.warning(
            "changelog_retention_unchecked",
            topic=changelog,
            reason=f"{exc}; {fix} cleanup.policy=compact and max.message.bytes by hand",
        )
        return None
    problem = changelog_policy_problem(config)
    if problem is not None:
        raise TopicLayoutError(f"changelog {changelog}: {problem}")
    limit = config.get("max.message.bytes")
    max_job_bytes = settings.kafka.max_job_bytes
    room = _room_in(config, settings)
    if room is not None:
        log.warning(
            "changelog_holds_smaller_jobs",
            topic=changelog,
            max_message_bytes=int(limit or 0),
            room=room,
            action=f"jobs whose key and state pass {room} bytes get job_too_large; raise the "
            f"topic's max.message.bytes to {changelog_max_message_bytes(max_job_bytes)} to "
            "hold BASICSYNC_KAFKA__MAX_JOB_BYTES",
        )
    return room


def _room_in(config: dict[str, str], settings: Settings) -> int | None:
    """The changelog's room for a job from its topic configuration (``changelog_room``)."""
    limit = config.get("max.message.bytes")
    kafka = settings.kafka
    return changelog_room(int(limit) if limit else None, kafka.max_job_bytes, kafka.group_id)


async def _watch_sasl_password(
    stack: AsyncExitStack, settings: Settings, kafka: dict[str, Any]
) -> SaslPasswordWatch | None:
    """Read the SASL password's file again until the run ends, when it came from one, and
    hand a rotated password to the clients (``consumer.kafka.sasl_password``)."""
    sasl = settings.kafka
    watch = None
    if sasl.sasl_password is not None and sasl.sasl_password_file is not None:
        password = SecretFile("sasl_password", sasl.sasl_password, sasl.sasl_password_file)
        watch = SaslPasswordWatch(password, kafka)
    await stack.enter_async_context(watching_sasl_password(watch, sasl.ssl_files_check_s))
    return watch


async def _watch_tls_files(
    stack: AsyncExitStack,
    settings: Settings,
    kafka: dict[str, Any],
    gateway_tls: ssl.SSLContext | bool,
) -> TlsFilesWatch:
    """Reload the TLS contexts of this run from their files when those change, until the
    run ends (renewed certificates: ``consumer.tls_files``)."""
    watched = []
    context = kafka.get("ssl_context")
    if isinstance(context, ssl.SSLContext):
        tls = settings.kafka
        watched.append(
            TlsFiles("kafka", context, tls.ssl_cafile, tls.ssl_certfile, tls.ssl_keyfile)
        )
    if isinstance(gateway_tls, ssl.SSLContext):
        watched.append(TlsFiles("gateway", gateway_tls, settings.gateway.ssl_cafile))
    interval = settings.kafka.ssl_files_check_s
    return await stack.enter_async_context(watching_tls_files(watched, interval))


async def _watch_kafka(
    stack: AsyncExitStack,
    admin: AIOKafkaAdminClient,
    settings: Settings,
    servers: list[str],
    running: Running,
) -> None:
    """Say it, with its cause, when Kafka stops answering this member (``reachability``)."""

    async def cause(exc: BaseException) -> str:
        problem = await security_problem(settings.kafka, servers)
        if problem is not None:
            return str(problem)
        return f"{describe(exc)}; {await why_no_answer(servers)}"

    def report(cause: str | None) -> None:
        running.kafka_unreachable = cause

    probe = KafkaProbe(lambda: admin.describe_topics([settings.state_topic]), cause, report)
    after = settings.kafka.unreachable_report_s
    await stack.enter_async_context(watching_kafka(probe, after))


def _gateway_session(
    stack: AsyncExitStack,
    settings: Settings,
    tracing: Tracing,
    gateway_tls: ssl.SSLContext | bool,
) -> aiohttp.ClientSession:
    """The HTTP session of the token endpoint and basicSync, closed last."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=settings.sync.concurrency + 4, ssl=gateway_tls),
        trace_configs=tracing.trace_configs(),
    )
    stack.push_async_callback(session.close)
    return session


def _gateway_client(
    session: aiohttp.ClientSession, endpoints: Endpoints, tokens: WatchedTokens, settings: Settings
) -> GatewayClient:
    """basicSync's client, through the gateway's proxy when there is one."""
    url, proxy = endpoints.gateway_url, endpoints.gateway_proxy
    timeout = settings.gateway.request_timeout_s
    return GatewayClient(session, url, tokens, request_timeout=timeout, proxy=proxy)


def _watched_tokens(
    session: aiohttp.ClientSession, endpoints: Endpoints, settings: Settings
) -> WatchedTokens:
    """OAuth2 client-credentials tokens, watched for readiness."""
    return WatchedTokens(
        ClientCredentialsTokenProvider(
            session,
            endpoints.token_url,
            endpoints.client_id,
            endpoints.client_secret,
            settings.gateway.scope,
            secret_file=endpoints.client_secret_file,
            proxy=endpoints.token_proxy,
        )
    )


async def _serve_endpoints(
    stack: AsyncExitStack, settings: Settings, running: Running, tokens: WatchedTokens
) -> None:
    """``/metrics``, ``/healthz`` and ``/readyz``, when ``observability.http_port`` is set."""
    if settings.observability.http_port is None:
        return
    http = await stack.enter_async_context(
        serve_health(
            running,
            tokens,
            host="0.0.0.0",
            port=settings.observability.http_port,
            stall_limit_s=settings.observability.stall_limit_s,
        )
    )
    running.http_port = http.port


async def _join_group(
    stack: AsyncExitStack,
    source: EventSource,
    pipeline: Pipeline,
    settings: Settings,
    endpoints: Endpoints,
    stop: asyncio.Event,
    running: Running,
) -> bool:
    """Join the consumer group (waiting out an unreachable Kafka); False if stopped first."""

    async def started_source() -> EventSource:
        await source.start(pipeline)
        return source

    stack.push_async_callback(source.stop)
    if await _until_reachable("consumer", started_source, settings, endpoints, stop, running):
        running.source = source
        return True
    return False


def _checkpoint(
    settings: Settings,
    kafka: dict[str, Any],
    store: JobStore,
    owner: ChangelogOwner,
    topics: _CheckedTopics,
    sasl: SaslPasswordWatch | None,
) -> Checkpoint:
    return Checkpoint(
        store,
        CheckpointTopics(
            changelog=settings.state_topic,
            succeeded=settings.topics.succeeded,
            failed=settings.topics.failed,
        ),
        _producer_factory(settings, kafka, topics.topics_gone, sasl),
        compress_values=settings.kafka.compress_changelog_values,
        owner=owner,
        read_writers=functools.partial(writers_between, _consumer_factory(kafka)),
        room=ChangelogRoom(topics.changelog_room),
        read_room=topics.described_room,
    )


def _topic_plan(settings: Settings) -> TopicPlan:
    return TopicPlan(
        inputs=settings.input_topics(),
        changelog=settings.state_topic,
        results=(settings.topics.succeeded, settings.topics.failed),
        create_missing=settings.kafka.create_topics,
        replication_factor=settings.kafka.replication_factor,
        changelog_max_message_bytes=changelog_max_message_bytes(settings.kafka.max_job_bytes),
    )


def _assemble(
    settings: Settings,
    kafka: dict[str, Any],
    gateway: GatewayClient,
    stats: Stats,
    topics: _CheckedTopics,
    wrap_restore: Callable[[Restorer], Restorer] | None,
    tracer: SyncTracer,
    stop: asyncio.Event,
    sasl: SaslPasswordWatch | None,
) -> tuple[Pipeline, SyncScheduler, EventSource]:
    """The object graph, each part given what it needs at construction."""
    _warn_deprecated(settings)
    limits = topics.limits
    store = JobStore()
    owner = changelog_owner(settings)
    checkpoint = _checkpoint(settings, kafka, store, owner, topics, sasl)
    source = _event_source(settings, kafka, stats, topics.inputs.read, sasl)
    observer = _CircuitPausesSource(stats, source)
    scheduler = _scheduler(settings, store, gateway, checkpoint, observer, tracer)
    interval_s = settings.kafka.checkpoint_interval_ms / 1000
    checkpoint.leave_to_intents_when(lambda job: scheduler.posts_within(job, interval_s))

    memory = MemoryGuard(
        memory_limit_bytes(settings.store.memory_limit_mb), settings.store.restore_memory_share
    )
    stats.metrics.memory_limit.set(memory.limit_bytes or 0)

    async def restore_partitions(
        partitions: set[int],
    ) -> tuple[Restored, RestoreReport]:
        return await restore(
            _consumer_factory(kafka),
            settings.state_topic,
            partitions,
            memory.check,
            owner=owner,
        )

    async def read_changelog_bounds(partitions: set[int]) -> dict[int, ChangelogBounds]:
        return await changelog_bounds(_consumer_factory(kafka), settings.state_topic, partitions)

    pipeline = Pipeline(
        source,
        store,
        checkpoint,
        scheduler,
        wrap_restore(restore_partitions) if wrap_restore else restore_partitions,
        read_changelog_bounds,
        limits,
        stats,
        stop=stop,
    )
    return pipeline, scheduler, source


def _warn_deprecated(settings: Settings) -> None:
    if settings.sync.circuit_failure_threshold is not None:
        log.warning(
            "setting_ignored",
            variable="BASICSYNC_SYNC__CIRCUIT_FAILURE_THRESHOLD",
            why="deprecated: failures are judged systemic or per-job by evidence; remove it",
        )


def _consumer_factory(kafka: dict[str, Any]) -> Callable[..., AIOKafkaConsumer]:
    def consumer_factory(**extra: Any) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(**kafka, **extra)

    return consumer_factory


#: A checkpoint's record batches: a backlog's checkpoint writes megabytes at once.
_MAX_BATCH_BYTES = 1 << 20


def _producer_factory(
    settings: Settings,
    kafka: dict[str, Any],
    topics_gone: TopicsGone,
    sasl: SaslPasswordWatch | None,
) -> Callable[[int], PartitionProducer]:
    """Each input partition's transactional producer (its id fences earlier owners)."""

    def open_producer(partition: int) -> PartitionProducer:
        return PartitionProducer(
            lambda **extra: tracked(
                sasl,
                AIOKafkaProducer(
                    **kafka,
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=5,
                    max_batch_size=_MAX_BATCH_BYTES,
                    # A transaction's first write can meet the previous commit's markers still in
                    # progress: the broker answers a retriable NOT_ENOUGH_REPLICAS (its transaction
                    # verification), and aiokafka's 100 ms default backoff would then delay every
                    # back-to-back commit (an intent before each post) by that much.
                    retry_backoff_ms=20,
                    max_request_size=max_request_size(settings.kafka.max_job_bytes),
                    compression_type=compression_type(settings.kafka.compression),
                    **extra,
                ),
            ),
            settings.kafka.group_id,
            partition,
            max_record_bytes=max_request_size(settings.kafka.max_job_bytes),
            uncompressed_topics=frozenset(
                [settings.state_topic] if settings.kafka.compress_changelog_values else []
            ),
            max_batch_bytes=_MAX_BATCH_BYTES,
            topics_gone=topics_gone,
        )

    return open_producer


def _event_source(
    settings: Settings,
    kafka: dict[str, Any],
    stats: Stats,
    topics: tuple[str, ...],
    sasl: SaslPasswordWatch | None,
) -> EventSource:
    """The group member that fetches the input topics."""
    return EventSource(
        lambda **extra: tracked(
            sasl,
            AIOKafkaConsumer(
                **kafka,
                group_id=settings.kafka.group_id,
                max_poll_records=settings.kafka.max_poll_records,
                session_timeout_ms=settings.kafka.session_timeout_ms,
                heartbeat_interval_ms=min(3_000, settings.kafka.session_timeout_ms // 3),
                max_partition_fetch_bytes=max(settings.kafka.max_event_bytes + 1024, 1 << 20),
                metadata_max_age_ms=settings.kafka.metadata_max_age_ms,
                **extra,
            ),
        ),
        list(topics),
        stats.input_records_lost,
    )


def _scheduler(
    settings: Settings,
    store: JobStore,
    gateway: GatewayClient,
    checkpoint: Checkpoint,
    observer: _CircuitPausesSource,
    tracer: SyncTracer,
) -> SyncScheduler:
    sync = settings.sync
    return SyncScheduler(
        store,
        gateway,
        checkpoint,
        sync,
        observer,
        circuit=CircuitBreaker(probe_max=sync.circuit_probe_max_s),
        evidence=GatewayEvidence(window=sync.diagnosis_window_s),
        retry=RetryPolicy(
            initial=sync.retry_initial_ms / 1000,
            maximum=sync.retry_max_ms / 1000,
            max_attempts=sync.retry_max_attempts,
            max_elapsed=sync.retry_max_elapsed_s,
            retry_after_max=sync.retry_after_max_s,
        ),
        send_within=settings.gateway.request_timeout_s,
        in_doubt_window=settings.in_doubt_window_s,
        tracer=tracer,
    )


def _pipeline_limits(settings: Settings, partition_count: int) -> PipelineLimits:
    sync = settings.sync
    return PipelineLimits(
        partition_count=partition_count,
        max_event_bytes=settings.kafka.max_event_bytes,
        revoke_deadline_s=sync.shutdown_deadline_s,
        retention_s=sync.retention_s,
        forgotten_retention_s=sync.forgotten_retention_s,
        max_job_bytes=settings.kafka.max_job_bytes,
        max_failure_value_bytes=settings.kafka.max_failure_value_bytes,
        max_event_time_ahead_s=settings.kafka.max_event_time_ahead_s,
        checkpoint_interval_s=settings.kafka.checkpoint_interval_ms / 1000,
        catch_up_checkpoint_interval_s=settings.kafka.catch_up_checkpoint_interval_ms / 1000,
        catch_up_lag=sync.catch_up_lag,
        open_transaction_warn_s=settings.kafka.open_transaction_warn_s,
    )


async def _started_admin(
    kafka: dict[str, Any], sasl: SaslPasswordWatch | None = None
) -> AIOKafkaAdminClient:
    admin = tracked(sasl, AIOKafkaAdminClient(**kafka))
    try:
        await start_client(admin.start())
    except BaseException:
        await admin.close()
        raise
    return admin


#: Why the group refuses a member (InconsistentGroupProtocolError), and what to do.
GROUP_REFUSES_MEMBER = (
    "the group's members offer only another partition assignor: they run a version from "
    "before basicsync-copartitioned (range), and the group takes no member that shares none "
    "with them. Stop every member of that version (scale the Deployment to 0), then start "
    'this one (docs/operations.md, "Upgrading"); this member joins once they are gone'
)


async def _until_reachable(
    step: str,
    attempt: Callable[[], Awaitable[T]],
    settings: Settings,
    endpoints: Endpoints,
    stop: asyncio.Event,
    running: Running,
) -> T | None:
    """``attempt()`` until Kafka answers, or None once ``stop`` is set meanwhile.

    An unreachable cluster at start (a broker rolling, DNS not there yet) is waited out with
    one log line per attempt naming the servers and the cause, and backoff with jitter up to
    ``kafka.startup_backoff_max_s``: never a crash loop.
    """
    servers = endpoints.bootstrap_servers
    tries = 0
    while not stop.is_set():
        try:
            return await unless_stopped(stop, attempt())
        except Stopped:
            return None
        except (KafkaError, OSError) as exc:
            if is_denial(exc):
                raise  # a missing ACL: reported and waited out by the caller
            problem = await security_problem(settings.kafka, servers)
            if problem is not None:
                raise problem from None  # credentials or certificates: only a fix helps
            tries += 1
            refused = isinstance(exc, InconsistentGroupProtocolError)
            cause = GROUP_REFUSES_MEMBER if refused else await why_no_answer(servers)
            delay = min(2.0 ** (tries - 1), settings.kafka.startup_backoff_max_s)
            delay *= random.uniform(0.8, 1.0)
            running.waiting_for = cause if refused else f"Kafka unreachable ({cause})"
            log.warning(
                "group_refuses_member" if refused else "kafka_unreachable",
                step=step,
                bootstrap_servers=",".join(servers),
                cause=cause,
                error=type(exc).__name__,
                attempt=tries,
                retry_in_s=round(delay, 1),
            )
            await set_within(stop, delay)
    return None


async def _run_until_stopped(
    pipeline: Pipeline,
    scheduler: SyncScheduler,
    stop: asyncio.Event,
    deadline: float,
    watch: InputTopicWatch,
) -> bool:
    """Run until ``stop``, then stop in about twice ``deadline``: the last checkpoint gets
    ``deadline`` from the stop, requests in flight ``deadline``, and what they recorded is
    committed by twice ``deadline`` from the stop (``Pipeline.last_checkpoint``,
    ``Pipeline.finish``). Whether the stop's checkpoints committed."""
    committed = True

    async def consume_then_drain() -> None:
        nonlocal committed
        try:
            await pipeline.run()
            await pipeline.last_checkpoint()
            await scheduler.stop(deadline)
        finally:
            # What a late last checkpoint left is staged still: this commits it or gives up.
            committed = await pipeline.finish()

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(scheduler.run(), name="scheduler")
            group.create_task(consume_then_drain(), name="consume")
            group.create_task(pipeline.sweep_forever(), name="retention")
            if watch.follows_pattern:
                group.create_task(watch.run(stop), name="input-topics")
    except BaseExceptionGroup as failed:
        # One cause an operator must fix (a topic layout changed under the member): stop with
        # its message and exit code 2, as at start, not with a task group's traceback.
        fatal = next((leaf for leaf in leaves(failed) if isinstance(leaf, FatalError)), None)
        if fatal is None:
            raise
        raise fatal from None
    return committed


def stop_on(stop: asyncio.Event, hard_exit: Callable[[], None]) -> Callable[[], None]:
    """A signal handler: the first signal sets ``stop``, a second one exits at once."""

    def handle() -> None:
        if stop.is_set():
            hard_exit()
        log.info("shutdown_requested")
        stop.set()

    return handle
