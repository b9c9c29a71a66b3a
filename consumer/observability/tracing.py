"""OpenTelemetry tracing: one span per job sync, linking the events it carries.

A sync (one basicSync POST of a job's state) is a span of kind CONSUMER, ``basicsync sync``,
whose **links** point at the spans of the events that changed the job since its last sync:
each event's ``traceparent``/``tracestate`` from the CloudEvents Distributed Tracing extension
(:class:`consumer.domain.events.EventTrace`). It is a root span: a sync has many events, each
of its own trace, so none of them is its parent (the OpenTelemetry messaging conventions for
batch processing). The aiohttp client instrumentation makes the POST (and a token fetch during
it) a child span and sends its ``traceparent`` to WorkfloPlus; the result record carries the
sync span's trace id (``traceId``).

On or off is decided once, at the entry point, from the standard ``OTEL_*`` variables
(:func:`tracing_from_environ`): off when none asks for an exporter. Off means no provider, no
trace config on the HTTP session, and a sync span that is one shared no-op context manager, so
the hot path pays nothing measurable (tests/bench/README.md). On, the SDK reads the remaining
standard variables itself (endpoint, headers, timeout, sampler, batch sizes, resource
attributes): this module only chooses the exporter.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

import aiohttp
from opentelemetry.context import Context
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import (
    Link,
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    get_current_span,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from consumer import __version__
from consumer.domain.events import EventTrace
from consumer.errors import ConfigError
from consumer.gateway.client import Accepted, Rejected, Retryable, SyncOutcome

SYNC_SPAN = "basicsync sync"
#: The exporters this image ships; ``OTEL_TRACES_EXPORTER`` names one of them (or ``none``).
EXPORTERS = ("otlp", "console", "none")

# The W3C format is what the CloudEvents extension prescribes, whatever OTEL_PROPAGATORS says
# for the outgoing request.
_W3C = TraceContextTextMapPropagator()


class SyncSpan:
    """What the scheduler sees of a sync span: its trace id and a place for the outcome."""

    #: 32 lowercase hex digits, or None when tracing is off
    trace_id: str | None = None

    def finished(self, outcome: SyncOutcome) -> None:
        """The gateway's answer, as span attributes and status."""


class _RecordingSyncSpan(SyncSpan):
    def __init__(self, span: Span) -> None:
        self._span = span
        context = span.get_span_context()
        self.trace_id = format(context.trace_id, "032x") if context.is_valid else None

    def finished(self, outcome: SyncOutcome) -> None:
        span = self._span
        span.set_attribute("basicsync.outcome", type(outcome).__name__.lower())
        status = getattr(outcome, "status", None)
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if isinstance(outcome, Accepted):
            if outcome.job_id is not None:
                span.set_attribute("basicsync.job_id", outcome.job_id)
            return
        reason = f"HTTP {outcome.status}" if isinstance(outcome, Rejected) else outcome.reason
        if isinstance(outcome, Retryable) and outcome.in_doubt:
            span.set_attribute("basicsync.in_doubt", True)
        span.set_status(Status(StatusCode.ERROR, reason))


_NO_SPAN = SyncSpan()
_OFF: AbstractContextManager[SyncSpan] = nullcontext(_NO_SPAN)


class SyncTracer:
    """Opens the span of one job sync; with no provider, a shared no-op."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._tracer = provider.get_tracer("basicsync", __version__) if provider else None

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def sync(
        self,
        client_job_id: str,
        state_version: int,
        attempt: int,
        event_count: int,
        traces: Sequence[EventTrace],
    ) -> AbstractContextManager[SyncSpan]:
        """The span of one POST of ``client_job_id`` at ``state_version``.

        ``event_count`` events changed the job since its last sync; ``traces`` are the trace
        contexts among them, linked when the span starts.
        """
        if self._tracer is None:
            return _OFF
        attributes: dict[str, AttributeValue] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.batch.message_count": event_count,
            "basicsync.client_job_id": client_job_id,
            "basicsync.state_version": state_version,
            "basicsync.attempt": attempt,
        }
        return _sync_span(self._tracer, attributes, traces)


@contextmanager
def _sync_span(
    tracer: Tracer, attributes: Mapping[str, AttributeValue], traces: Sequence[EventTrace]
) -> Iterator[SyncSpan]:
    """The recording span; a generator of its own, so that tracing off creates none."""
    with tracer.start_as_current_span(
        SYNC_SPAN,
        context=Context(),  # a root: the events are links, not parents
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=event_links(traces),
    ) as span:
        yield _RecordingSyncSpan(span)


def event_links(events: Sequence[EventTrace]) -> list[Link]:
    """A link per event with a valid W3C trace context; the others are skipped."""
    links = []
    for event in events:
        carrier = {"traceparent": event.traceparent}
        if event.tracestate is not None:
            carrier["tracestate"] = event.tracestate
        context = get_current_span(_W3C.extract(carrier)).get_span_context()
        if context.is_valid:
            links.append(
                Link(
                    context,
                    {
                        "cloudevents.event_id": event.event_id,
                        "messaging.destination.name": event.topic,
                        "messaging.destination.partition.id": str(event.partition),
                        "messaging.kafka.offset": event.offset,
                    },
                )
            )
    return links


@dataclass
class Tracing:
    """Tracing as the app wires it: the provider (None: off), flushed by :meth:`shutdown`."""

    provider: TracerProvider | None = None
    _sync_tracer: SyncTracer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._sync_tracer = SyncTracer(self.provider)

    @property
    def sync_tracer(self) -> SyncTracer:
        return self._sync_tracer

    def trace_configs(self) -> list[aiohttp.TraceConfig]:
        """For the gateway's ``ClientSession``: a client span per request, ``traceparent`` sent."""
        if self.provider is None:
            return []
        return [create_trace_config(tracer_provider=self.provider)]

    def shutdown(self) -> None:
        """Export what is still buffered; call once, at exit."""
        if self.provider is not None:
            self.provider.shutdown()


TRACING_OFF = Tracing()


def tracing_from_environ(environ: Mapping[str, str]) -> Tracing:
    """Tracing as the standard ``OTEL_*`` variables ask; off when none asks for an exporter.

    ``OTEL_TRACES_EXPORTER`` names the exporter (``otlp``, ``console``, ``none``); unset, OTLP is
    used when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set,
    else nothing. ``OTEL_SDK_DISABLED=true`` turns it off. OTLP goes over HTTP/protobuf (the one
    protocol shipped). Raises ``ConfigError`` for a value this image cannot honour.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return TRACING_OFF
    named = [
        n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()
    ]
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    exporters = named or (["otlp"] if endpoint else [])
    unknown = [n for n in exporters if n not in EXPORTERS]
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={','.join(unknown)} is not available here; "
            f"use one of {', '.join(EXPORTERS)}"
        )
    exporters = [n for n in exporters if n != "none"]
    if not exporters:
        return TRACING_OFF
    if "otlp" in exporters:
        for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = environ.get(name)
            if protocol:
                if protocol.strip() != "http/protobuf":
                    raise ConfigError(
                        f"{name}={protocol} is not available here; use http/protobuf "
                        "(the OTLP/HTTP exporter is the one shipped)"
                    )
                break
    return Tracing(_provider([_processor(name) for name in exporters]))


def _provider(processors: list[SpanProcessor]) -> TracerProvider:
    resource = Resource.create({SERVICE_VERSION: __version__})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "basicsync"}))
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def _processor(exporter: str) -> SpanProcessor:
    if exporter == "console":
        return BatchSpanProcessor(ConsoleSpanExporter())
    # Imported only when used: it brings protobuf and requests.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return BatchSpanProcessor(OTLPSpanExporter())
