"""What tracing costs on the hot path, off and on.

Run ``python -m tests.bench.bench_tracing``. Figures are the best of ``--repeat`` rounds in CPU
time (see ``bench_domain.best_of``); compare figures of one run only.

- decode: ``decode_event`` of the demo stream as it is, and with a ``traceparent`` on every
  event (structured: an envelope attribute; binary: a ``ce_traceparent`` header).
- sync span: entering and leaving ``SyncTracer.sync`` around nothing, as the scheduler does
  around each POST: off (no provider), and on with a provider whose exporter drops everything,
  linking 10 events.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from consumer.demo import DemoPlan, build_demo
from consumer.domain.events import EventTrace, decode_event, encode_binary, encode_structured
from consumer.gateway.client import Accepted
from consumer.observability.tracing import SyncTracer
from tests.bench.bench_domain import best_of

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class _Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def measure(jobs: int, repeat: int) -> dict[str, float]:
    events = build_demo(DemoPlan(jobs=jobs)).events
    traced = [e.replaced(traceparent=TRACEPARENT) for e in events]
    results: dict[str, float] = {}
    for name, batch in (("plain", events), ("traceparent", traced)):
        for mode, encode in (("structured", encode_structured), ("binary", encode_binary)):
            messages = [encode(e) for e in batch]

            def run(messages: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = messages) -> int:
                for key, value, headers in messages:
                    decode_event(key, value, headers)
                return len(messages)

            results[f"decode {mode}, {name}"] = best_of(repeat, run)

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_Drop()))
    links = [EventTrace(TRACEPARENT, None, f"e{n}", "in", 0, n) for n in range(10)]
    outcome = Accepted(status=200, job_id="j", body="{}")
    for name, tracer in (("off", SyncTracer()), ("on, 10 links", SyncTracer(provider))):

        def spans(tracer: SyncTracer = tracer, count: int = 20_000) -> int:
            for _ in range(count):
                with tracer.sync("job", 3, 1, 10, links) as span:
                    span.finished(outcome)
            return count

        results[f"sync span {name}"] = best_of(repeat, spans)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    for name, seconds in measure(args.jobs, args.repeat).items():
        print(f"{name:<40} {seconds * 1e6:8.2f} us")


if __name__ == "__main__":
    main()
