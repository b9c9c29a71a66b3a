"""Tracing end to end: events with known traceparents through a real broker to the sandbox.

A test producer makes one span per event and puts its context in the event (binary mode as the
``ce_traceparent`` header, structured mode as the envelope attribute). The consumer, tracing
into an in-memory exporter, must make a sync span that links exactly those spans, send the
``traceparent`` of its HTTP client span (a child of the sync span) to WorkfloPlus, and write
the sync span's trace id into the success record. ``render`` draws what was exported; the tree
in docs/operations.md ("Tracing") is its output.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from consumer.demo.example import EXAMPLE_BODY, EXAMPLE_CLIENT_JOB_ID, example_job_events
from consumer.domain.events import encode_binary, encode_structured
from consumer.observability.tracing import SYNC_SPAN, Tracing
from consumer.testing.workfloplus import Sandbox
from tests.integration.harness import (
    MakeTopic,
    consumer_running,
    new_topics,
    produce_raw,
    read_records,
    settings_for,
    wait_converged,
)

pytestmark = pytest.mark.integration


def render(spans: Sequence[ReadableSpan]) -> str:
    """The exported spans as an indented tree per trace, links named by their span ids."""
    by_parent: dict[int | None, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        by_parent.setdefault(span.parent.span_id if span.parent else None, []).append(span)
    lines: list[str] = []

    def draw(span: ReadableSpan, depth: int) -> None:
        attributes = span.attributes or {}
        shown = {
            k: v
            for k, v in attributes.items()
            if k.startswith(("basicsync.", "messaging.batch", "http.")) and k != "http.method"
        }
        extra = " ".join(f"{k}={v}" for k, v in shown.items())
        duration = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
        lines.append(
            f"{'  ' * depth}{span.name} [{span.kind.name}] "
            f"span {format_span_id(span.context.span_id)} {duration:.1f} ms {extra}".rstrip()
        )
        for link in span.links:
            lines.append(
                f"{'  ' * depth}  -> link trace {format_trace_id(link.context.trace_id)} "
                f"span {format_span_id(link.context.span_id)} "
                f"(event {(link.attributes or {}).get('cloudevents.event_id')}, "
                f"offset {(link.attributes or {}).get('messaging.kafka.offset')})"
            )
        for child in by_parent.get(span.context.span_id, []):
            draw(child, depth + 1)

    for root in by_parent.get(None, []):
        lines.append(f"trace {format_trace_id(root.context.trace_id)}")
        draw(root, 1)
    return "\n".join(lines)


def _url(span: ReadableSpan) -> object:
    attributes = span.attributes or {}
    return attributes.get("url.full", attributes.get("http.url"))


class TestSyncSpan:
    async def test_the_sync_span_links_the_events_and_reaches_the_gateway_and_the_record(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """Events' traceparents (binary header, structured attribute) become the sync span's
        links; WorkfloPlus gets the traceparent of its HTTP child span; the success record
        carries its trace id."""
        topics = await new_topics(make_topic, partitions=1)
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        producer = provider.get_tracer("job-events-producer")
        records = []
        produced: dict[str, tuple[int, int]] = {}  # event id -> (trace id, span id)
        for n, event in enumerate(example_job_events()):
            with producer.start_as_current_span(
                f"send {event.type.value}",
                kind=SpanKind.PRODUCER,
                attributes={"cloudevents.event_type": event.type.value},
            ) as span:
                carrier: dict[str, str] = {}
                TraceContextTextMapPropagator().inject(carrier)
                context = span.get_span_context()
                produced[event.id] = (context.trace_id, context.span_id)
            traced = event.replaced(traceparent=carrier["traceparent"], tracestate="vendor=7")
            records.append((encode_structured if n == 1 else encode_binary)(traced))
        await produce_raw(kafka_bootstrap, topics.inputs[0], records)
        settings = settings_for(
            kafka_bootstrap, sandbox_in_process, topics, debounce_ms=3000, max_delay_ms=10000
        )
        tracing = Tracing(provider)
        async with consumer_running(settings, tracing) as (_, task):
            await wait_converged(
                sandbox_in_process, {EXAMPLE_CLIENT_JOB_ID: EXAMPLE_BODY}, within=30, consumer=task
            )
        spans = exporter.get_finished_spans()
        print(render(spans))  # the tree shown in docs/operations.md

        [sync] = [s for s in spans if s.name == SYNC_SPAN]
        assert sync.parent is None
        assert sync.kind is SpanKind.CONSUMER
        assert (sync.attributes or {})["basicsync.client_job_id"] == EXAMPLE_CLIENT_JOB_ID
        assert {(link.context.trace_id, link.context.span_id) for link in sync.links} == set(
            produced.values()
        )
        assert all(link.context.trace_state.get("vendor") == "7" for link in sync.links)

        [post] = [
            s
            for s in spans
            if s.kind is SpanKind.CLIENT
            and s.parent is not None
            and s.parent.span_id == sync.context.span_id
            and str(_url(s)).endswith("/jobs/v1/basicSync")
        ]
        trace_id = format_trace_id(sync.context.trace_id)
        [request] = [
            r
            for r in sandbox_in_process.state.records
            if r.path == "/jobs/v1/basicSync" and r.status == 200
        ]
        assert request.traceparent is not None
        version, sent_trace, sent_span, flags = request.traceparent.split("-")
        assert (version, sent_trace, sent_span) == (
            "00",
            trace_id,
            format_span_id(post.context.span_id),
        )
        assert int(flags, 16) & 1  # sampled

        [success] = [
            r
            for r in await read_records(kafka_bootstrap, topics.succeeded)
            if r["clientJobId"] == EXAMPLE_CLIENT_JOB_ID
        ]
        assert success["traceId"] == trace_id
