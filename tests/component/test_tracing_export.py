"""OTLP export as the OTEL_* variables configure it, to a local collector stand-in over HTTP.

The stand-in is a bare aiohttp server that keeps what is POSTed to ``/v1/traces``; the spans are
decoded with the OTLP protobuf classes the exporter itself uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from consumer.domain.events import EventTrace
from consumer.gateway.client import Accepted
from consumer.observability.tracing import SYNC_SPAN, tracing_from_environ

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
async def collector() -> AsyncIterator[tuple[str, list[ExportTraceServiceRequest]]]:
    received: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        received.append(ExportTraceServiceRequest.FromString(await request.read()))
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        await runner.cleanup()


class TestOtlpExport:
    async def test_an_endpoint_variable_sends_sync_spans_with_their_links(
        self,
        collector: tuple[str, list[ExportTraceServiceRequest]],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """OTEL_EXPORTER_OTLP_ENDPOINT alone: sync spans reach the collector over OTLP/HTTP,
        named for the service, with their links, when tracing shuts down."""
        endpoint, received = collector
        environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "basicsync-test"}
        for name, value in environ.items():
            monkeypatch.setenv(name, value)  # the SDK reads the details from the environment
        tracing = tracing_from_environ(environ)
        traced = EventTrace(f"00-{TRACE}-00f067aa0ba902b7-01", None, "e1", "in", 0, 5)
        with tracing.sync_tracer.sync("job-1", 2, 1, 1, [traced]) as span:
            span.finished(Accepted(status=200, job_id="j", body="{}"))
        await asyncio.to_thread(tracing.shutdown)  # the exporter posts from its own thread

        spans = [
            (resource.resource, s)
            for request in received
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for s in scope.spans
        ]
        [(resource, exported)] = spans
        assert exported.name == SYNC_SPAN
        assert exported.trace_id.hex() == span.trace_id
        assert [link.trace_id.hex() for link in exported.links] == [TRACE]
        service = {a.key: a.value.string_value for a in resource.attributes}["service.name"]
        assert service == "basicsync-test"
