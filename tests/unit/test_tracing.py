"""Tracing (consumer.observability.tracing): on/off from OTEL_*, sync spans and their links."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from consumer.config import SyncSettings
from consumer.domain.events import EventTrace
from consumer.domain.results import FailureReason, SourceOffset
from consumer.errors import ConfigError
from consumer.gateway.client import Rejected, Retryable
from consumer.observability.tracing import (
    SYNC_SPAN,
    SyncTracer,
    Tracing,
    event_links,
    tracing_from_environ,
)
from consumer.state.store import JobStore
from consumer.sync.circuit import CircuitBreaker
from consumer.sync.retry import RetryPolicy
from consumer.sync.scheduler import SyncScheduler
from tests.unit.fakes import FakeCheckpoint, FakeGateway, RecordingObserver, accepted, job_state
from tests.unit.test_scheduler import WAIT, eventually

TRACE_A = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_B = "0af7651916cd43dd8448eb211c80319c"


def trace(trace_id: str, span_id: str, offset: int, tracestate: str | None = None) -> EventTrace:
    return EventTrace(f"00-{trace_id}-{span_id}-01", tracestate, f"e{offset}", "in", 0, offset)


def in_memory() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def processors(tracing: Tracing) -> list[object]:
    assert tracing.provider is not None
    return list(tracing.provider._active_span_processor._span_processors)


class TestTracingFromEnviron:
    def test_off_when_nothing_is_set(self) -> None:
        """No OTEL_* variable: no provider, no HTTP trace config, a disabled sync tracer."""
        tracing = tracing_from_environ({})
        assert tracing.provider is None
        assert tracing.trace_configs() == []
        assert not tracing.sync_tracer.enabled

    def test_otlp_when_an_endpoint_is_set(self) -> None:
        """An OTLP endpoint alone turns tracing on with the OTLP/HTTP exporter, batched."""
        tracing = tracing_from_environ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
        try:
            [processor] = processors(tracing)
            assert isinstance(processor, BatchSpanProcessor)
            assert isinstance(processor._batch_processor._exporter, OTLPSpanExporter)
            assert tracing.sync_tracer.enabled
            assert len(tracing.trace_configs()) == 1
        finally:
            tracing.shutdown()

    @pytest.mark.parametrize(
        "environ",
        [
            {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"},
            {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"},
        ],
    )
    def test_explicitly_off(self, environ: dict[str, str]) -> None:
        """``OTEL_TRACES_EXPORTER=none`` or ``OTEL_SDK_DISABLED=true`` win over an endpoint."""
        assert tracing_from_environ(environ).provider is None

    @pytest.mark.parametrize(
        ("environ", "named"),
        [
            ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER=zipkin"),
            (
                {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
            ),
        ],
    )
    def test_what_cannot_be_honoured_is_a_config_error(
        self, environ: dict[str, str], named: str
    ) -> None:
        """An exporter or protocol this image does not ship stops the start with its name."""
        with pytest.raises(ConfigError, match=named):
            tracing_from_environ(environ)

    def test_service_name(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The resource is ``basicsync`` unless OTEL_SERVICE_NAME says otherwise."""
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
        monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
        tracing = tracing_from_environ({"OTEL_TRACES_EXPORTER": "console"})
        assert tracing.provider is not None
        assert tracing.provider.resource.attributes["service.name"] == "basicsync"
        monkeypatch.setenv("OTEL_SERVICE_NAME", "sync-eu")
        renamed = tracing_from_environ({"OTEL_TRACES_EXPORTER": "console"})
        assert renamed.provider is not None
        assert renamed.provider.resource.attributes["service.name"] == "sync-eu"
        tracing.shutdown()
        renamed.shutdown()


class TestEventLinks:
    def test_valid_contexts_become_links_with_their_event(self) -> None:
        """Each valid traceparent is a link to that span, carrying tracestate and the event."""
        [link] = event_links([trace(TRACE_A, "00f067aa0ba902b7", 7, "vendor=1")])
        assert format(link.context.trace_id, "032x") == TRACE_A
        assert format(link.context.span_id, "016x") == "00f067aa0ba902b7"
        assert link.context.trace_state.get("vendor") == "1"
        assert link.attributes == {
            "cloudevents.event_id": "e7",
            "messaging.destination.name": "in",
            "messaging.destination.partition.id": "0",
            "messaging.kafka.offset": 7,
        }

    @pytest.mark.parametrize(
        "traceparent",
        [
            "",
            "00-abc",
            f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id
            f"ff-{TRACE_A}-00f067aa0ba902b7-01",  # forbidden version
        ],
    )
    def test_invalid_contexts_are_skipped(self, traceparent: str) -> None:
        """A malformed traceparent costs its link, nothing else."""
        bad = EventTrace(traceparent, None, "e1", "in", 0, 1)
        assert len(event_links([bad, trace(TRACE_B, "b7ad6b7169203331", 2)])) == 1


class TestSyncTracerOff:
    def test_one_shared_no_op(self) -> None:
        """Off, every sync gets the same no-op context manager and no trace id."""
        tracer = SyncTracer()
        first = tracer.sync("a", 1, 1, 0, [])
        assert first is tracer.sync("b", 2, 1, 3, [trace(TRACE_A, "00f067aa0ba902b7", 1)])
        with first as span:
            span.finished(accepted())
        assert span.trace_id is None


def traced_scheduler(
    gateway: FakeGateway, tracer: SyncTracer
) -> tuple[SyncScheduler, JobStore, FakeCheckpoint]:
    store = JobStore()
    checkpoint = FakeCheckpoint(store)
    scheduler = SyncScheduler(
        store,
        gateway,
        checkpoint,
        SyncSettings(debounce_ms=0, max_delay_ms=0),
        RecordingObserver(),
        circuit=CircuitBreaker(probe_initial=0.02, probe_max=0.1),
        retry=RetryPolicy(initial=0.005, maximum=0.01, max_attempts=3, max_elapsed=30.0),
        tracer=tracer,
    )
    return scheduler, store, checkpoint


@asynccontextmanager
async def running(scheduler: SyncScheduler) -> AsyncIterator[None]:
    task = asyncio.create_task(scheduler.run())
    try:
        yield
    finally:
        await scheduler.stop(1.0)
        await asyncio.wait_for(task, WAIT)


def sync_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == SYNC_SPAN]


def linked(span: ReadableSpan) -> list[str]:
    return [format(link.context.span_id, "016x") for link in span.links]


class TestSchedulerSpans:
    async def test_success_record_carries_the_span_that_links_the_events(self) -> None:
        """The sync span links the job's events; the success record has the span's trace id."""
        provider, exporter = in_memory()
        scheduler, store, checkpoint = traced_scheduler(FakeGateway(), SyncTracer(provider))
        async with running(scheduler):
            store.put(0, job_state("a"))
            scheduler.mark_dirty(
                "a",
                [SourceOffset(topic="in", partition=0, offset=n) for n in (1, 2, 3)],
                [trace(TRACE_A, "00f067aa0ba902b7", 1), trace(TRACE_B, "b7ad6b7169203331", 3)],
            )
            await eventually(lambda: len(checkpoint.successes) == 1)
        [span] = sync_spans(exporter)
        assert span.kind is SpanKind.CONSUMER
        assert span.parent is None
        assert linked(span) == ["00f067aa0ba902b7", "b7ad6b7169203331"]
        assert span.attributes is not None
        assert span.attributes["basicsync.client_job_id"] == "a"
        assert span.attributes["messaging.batch.message_count"] == 3
        assert span.attributes["basicsync.outcome"] == "accepted"
        assert checkpoint.successes[0].trace_id == format(span.context.trace_id, "032x")

    async def test_a_retry_links_the_same_events_and_a_success_forgets_them(self) -> None:
        """Each attempt links the events it carries; after a success only new ones are linked."""
        provider, exporter = in_memory()
        gateway = FakeGateway([Retryable(status=503, retry_after=None, reason="http_503")])
        gateway.script(accepted())
        scheduler, store, checkpoint = traced_scheduler(gateway, SyncTracer(provider))
        async with running(scheduler):
            store.put(0, job_state("a"))
            scheduler.mark_dirty("a", (), [trace(TRACE_A, "00f067aa0ba902b7", 1)])
            await eventually(lambda: len(checkpoint.successes) == 1)
            store.put(0, job_state("a", title="changed"))
            scheduler.mark_dirty("a", (), [trace(TRACE_B, "b7ad6b7169203331", 2)])
            await eventually(lambda: len(checkpoint.successes) == 2)
        first, second, third = sync_spans(exporter)
        assert linked(first) == linked(second) == ["00f067aa0ba902b7"]
        assert first.status.status_code is StatusCode.ERROR
        assert linked(third) == ["b7ad6b7169203331"]
        assert checkpoint.successes[1].trace_id == format(third.context.trace_id, "032x")

    async def test_a_failure_record_carries_the_trace_id(self) -> None:
        """A rejected sync's failure record has its span's trace id; the span is an error."""
        provider, exporter = in_memory()
        gateway = FakeGateway([Rejected(status=400, body_truncated="bad")])
        scheduler, store, checkpoint = traced_scheduler(gateway, SyncTracer(provider))
        async with running(scheduler):
            store.put(0, job_state("a"))
            scheduler.mark_dirty("a", (), [trace(TRACE_A, "00f067aa0ba902b7", 1)])
            await eventually(lambda: len(checkpoint.failures) == 1)
        [span] = sync_spans(exporter)
        assert span.status.status_code is StatusCode.ERROR
        failure = checkpoint.failures[0]
        assert failure.reason is FailureReason.rejected_by_gateway
        assert failure.trace_id == format(span.context.trace_id, "032x")

    async def test_off_keeps_no_traces_and_records_no_trace_id(self) -> None:
        """Tracing off: trace contexts are not kept, records have ``traceId`` null."""
        scheduler, store, checkpoint = traced_scheduler(FakeGateway(), SyncTracer())
        async with running(scheduler):
            store.put(0, job_state("a"))
            scheduler.mark_dirty("a", (), [trace(TRACE_A, "00f067aa0ba902b7", 1)])
            assert scheduler._entries["a"].traces == []
            await eventually(lambda: len(checkpoint.successes) == 1)
        assert checkpoint.successes[0].trace_id is None
