"""The HTTP port for operators: ``/metrics``, ``/healthz`` and ``/readyz``.

- ``/healthz``: 200 with the uptime. The handler answering is the proof that the event loop
  runs; a blocked loop times the probe out.
- ``/readyz``: 200 when every check passes, else 503; the JSON body names each check:
  ``partitions`` (assigned and restored), ``circuit`` (closed), ``token`` (the last token
  request succeeded), ``kafka`` (no ACL missing: see ``consumer.kafka.access``) and
  ``checkpoint`` (no owned partition's commit failing, or waiting past 10 s). Checks
  read state the consumer already has; a probe never calls Kafka or the token endpoint.
- ``/metrics``: the consumer's Prometheus registry, with the level gauges (lag, dirty jobs,
  circuit state, state size) sampled just before rendering.

:func:`serve_health` is an async context manager; port 0 picks a free port, which
``HealthServer.port`` then holds. It reads the consumer through :class:`Observed`, a protocol
the wiring (``consumer.app.Running``) satisfies, so this module never imports the wiring.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiohttp import web
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST

from consumer.certificate_dates import CertificateDates
from consumer.errors import AuthRejected, ConfigError, TokenUnavailable
from consumer.gateway.auth import TokenProvider
from consumer.kafka.transactions import CommitTrouble
from consumer.observability.metrics import Metrics
from consumer.sync.circuit import CircuitBreaker, CircuitState

log = structlog.get_logger(__name__)

#: How long a scrape waits for the consumer's positions before showing the last lag sample.
LAG_SAMPLE_TIMEOUT_S = 2.0


class PipelineView(Protocol):
    """What the endpoints read of the pipeline: ownership, restore and liveness."""

    @property
    def owned_partitions(self) -> set[int]: ...

    @property
    def ready(self) -> bool: ...

    @property
    def job_count(self) -> int: ...

    @property
    def unreadable_job_count(self) -> int: ...

    @property
    def unwritten_job_count(self) -> int: ...

    @property
    def changelog_room(self) -> int | None: ...

    @property
    def stored_bytes(self) -> int: ...

    def stalled_for(self) -> float: ...

    def held_by_transactions(self) -> dict[tuple[str, int], float]: ...

    def commit_trouble(self) -> CommitTrouble | None: ...


class SchedulerView(Protocol):
    """What the endpoints read of the scheduler: its queue, requests and circuit."""

    @property
    def dirty_jobs(self) -> int: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def intent_stage_limit(self) -> int: ...

    @property
    def circuit(self) -> CircuitBreaker: ...


class LagView(Protocol):
    async def lag(self) -> dict[tuple[str, int], int]: ...


class Observed(Protocol):
    """A running consumer as the endpoints see it; a part is None until it has started."""

    @property
    def waiting_for(self) -> str | None:
        """What start-up is waiting for (e.g. an unreachable Kafka), None once past it."""

    @property
    def kafka_access(self) -> str | None:
        """Why Kafka refuses us while a missing ACL is waited out, None when access works."""

    @property
    def kafka_unreachable(self) -> str | None:
        """Why Kafka has not answered a running member for a while, None while it answers."""

    @property
    def client_certificates(self) -> Mapping[str, CertificateDates]:
        """The dates of the client certificates in use, by TLS context."""

    @property
    def pipeline(self) -> PipelineView | None: ...

    @property
    def scheduler(self) -> SchedulerView | None: ...

    @property
    def source(self) -> LagView | None: ...

    @property
    def metrics(self) -> Metrics: ...


class WatchedTokens:
    """A :class:`TokenProvider` that remembers whether the last token request succeeded.

    ``ok`` is ``None`` until the first request, then the outcome of the most recent one, so
    readiness can report "token obtainable" without fetching a token per probe.
    """

    def __init__(self, inner: TokenProvider) -> None:
        self._inner = inner
        self.ok: bool | None = None
        self.error: str | None = None

    def __repr__(self) -> str:
        return f"WatchedTokens({self._inner!r}, ok={self.ok})"

    async def token(self) -> str:
        try:
            value = await self._inner.token()
        except (AuthRejected, TokenUnavailable) as exc:
            self.ok, self.error = False, f"{type(exc).__name__}: {exc}"
            raise
        self.ok, self.error = True, None
        return value

    async def invalidate(self, token: str) -> None:
        await self._inner.invalidate(token)


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


def readiness(running: Observed, tokens: WatchedTokens | None) -> dict[str, Check]:
    """Each readiness check with its verdict; pure reads of the consumer's state."""
    pipeline, scheduler = running.pipeline, running.scheduler
    if running.waiting_for is not None:
        partitions = Check(False, f"waiting: {running.waiting_for}")
    elif pipeline is None:
        partitions = Check(False, "starting")
    elif not pipeline.owned_partitions:
        partitions = Check(False, "no partitions assigned")
    elif not pipeline.ready:
        partitions = Check(False, "restoring state")
    else:
        partitions = Check(True, f"owns {sorted(pipeline.owned_partitions)}")
    state = scheduler.circuit.state if scheduler is not None else CircuitState.CLOSED
    circuit = Check(state is CircuitState.CLOSED, state.value)
    if tokens is None or tokens.ok is None:
        token = Check(True, "not requested yet")
    elif tokens.ok:
        token = Check(True, "last request succeeded")
    else:
        token = Check(False, tokens.error or "last request failed")
    kafka_problem = running.kafka_access or running.kafka_unreachable
    kafka = Check(kafka_problem is None, kafka_problem or "access granted")
    trouble = pipeline.commit_trouble() if pipeline is not None else None
    if trouble is None:
        checkpoint = Check(True, "commits succeed")
    else:
        checkpoint = Check(False, trouble.describe(time.monotonic()))
    return {
        "partitions": partitions,
        "circuit": circuit,
        "token": token,
        "kafka": kafka,
        "checkpoint": checkpoint,
    }


async def sample_metrics(running: Observed) -> None:
    """Refresh the level gauges of ``running.metrics`` from the live components."""
    scheduler, pipeline, source = running.scheduler, running.pipeline, running.source
    lag: dict[tuple[str, int], int] | None = None
    if source is not None:
        try:
            async with asyncio.timeout(LAG_SAMPLE_TIMEOUT_S):
                lag = await source.lag()
        except (TimeoutError, KafkaError) as exc:  # mid-rebalance: keep the last sample
            log.debug("lag_sample_skipped", error=type(exc).__name__)
    running.metrics.sample(
        dirty_jobs=scheduler.dirty_jobs if scheduler is not None else 0,
        in_flight=scheduler.in_flight if scheduler is not None else 0,
        jobs=pipeline.job_count if pipeline is not None else 0,
        unreadable_jobs=pipeline.unreadable_job_count if pipeline is not None else 0,
        unwritten_jobs=pipeline.unwritten_job_count if pipeline is not None else 0,
        changelog_room=(pipeline.changelog_room or 0) if pipeline is not None else 0,
        state_bytes=pipeline.stored_bytes if pipeline is not None else 0,
        circuit=scheduler.circuit.state if scheduler is not None else CircuitState.CLOSED,
        lag=lag,
        intent_stage_limit=scheduler.intent_stage_limit if scheduler is not None else 0,
        checkpoint_failing_s=_failing_for(pipeline.commit_trouble() if pipeline else None),
        kafka_unreachable=running.kafka_unreachable is not None,
        client_certificates=running.client_certificates,
        held=pipeline.held_by_transactions() if pipeline is not None else None,
    )


def _failing_for(trouble: CommitTrouble | None) -> float:
    return 0.0 if trouble is None else time.monotonic() - trouble.since


@dataclass
class HealthServer:
    """The running endpoint; ``port`` is the bound port."""

    running: Observed
    tokens: WatchedTokens | None
    #: /healthz fails once an assigned partition went unprocessed this long
    stall_limit_s: float = 180.0
    started: float = field(default_factory=time.monotonic)
    port: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        """Alive, unless a partition is assigned to this member but not processed for too long
        (its restore keeps failing): then a restart is what helps."""
        uptime = round(time.monotonic() - self.started, 3)
        pipeline = self.running.pipeline
        stalled = pipeline.stalled_for() if pipeline is not None else 0.0
        if stalled > self.stall_limit_s:
            return web.json_response(
                {
                    "status": "stalled",
                    "uptime_s": uptime,
                    "detail": f"an assigned partition went unprocessed for {stalled:.0f}s",
                },
                status=503,
            )
        return web.json_response({"status": "alive", "uptime_s": uptime})

    async def readyz(self, request: web.Request) -> web.Response:
        checks = readiness(self.running, self.tokens)
        failing = [name for name, check in checks.items() if not check.ok]
        body: dict[str, Any] = {
            "ready": not failing,
            "failing": failing,
            "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in checks.items()},
        }
        return web.json_response(body, status=503 if failing else 200)

    async def metrics(self, request: web.Request) -> web.Response:
        await sample_metrics(self.running)
        return web.Response(
            body=self.running.metrics.render(),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )


@asynccontextmanager
async def serve_health(
    running: Observed,
    tokens: WatchedTokens | None,
    *,
    host: str,
    port: int,
    stall_limit_s: float = 180.0,
) -> AsyncIterator[HealthServer]:
    """Serve the endpoints on ``host:port`` (0 = a free port) for the ``with`` block."""
    server = HealthServer(running, tokens, stall_limit_s)
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            # A port another process holds (a sidecar, a second member on the host network):
            # said in one line, naming the setting, instead of a traceback.
            raise ConfigError(
                f"BASICSYNC_OBSERVABILITY__HTTP_PORT: cannot listen on {host}:{port} for "
                f"/metrics, /healthz and /readyz: {os.strerror(exc.errno) if exc.errno else exc}"
            ) from None
        server.port = site.port
        log.info("http_listening", host=host, port=server.port)
        yield server
    finally:
        await runner.cleanup()
