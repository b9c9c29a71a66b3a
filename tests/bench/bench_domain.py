"""Micro-benchmark of the pure hot path: decode, apply, changelog JSON, request body.

Run ``python -m tests.bench.bench_domain`` (``--save FILE`` keeps the figures as JSON,
``--compare FILE`` prints them next to a saved run). Each figure is the best of ``--repeat``
rounds in CPU time, as the minimum is the least disturbed by other processes on a shared
machine; still, compare runs made close together on the same machine, never figures from
elsewhere.

- decode: ``decode_event`` of every event of the demo stream, structured and binary mode.
- apply: ``apply`` over the interleaved demo stream (``build_demo(DemoPlan(jobs=2000))``), one
  state per job, as the intake does; then the same with ``encode_state``, ``encode_body`` and
  ``body_sha256`` of every new state (the most a consumer does per event, with no batching).
- encode_state / decode_state (the changelog value, written and restored) / encode_body /
  body_sha256: a completed 13-event demo job. ``--compare`` matches a run saved before these
  had their names (``to_json_bytes`` / ``from_json_bytes``) too.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from consumer.demo import DemoPlan, build_demo
from consumer.demo.jobs import demo_job
from consumer.domain.basicsync import body_sha256, encode_body
from consumer.domain.events import decode_event, encode_binary, encode_structured
from consumer.domain.job import JobState, apply
from consumer.domain.state_codec import decode_state, encode_state


def best_of(repeat: int, rounds: Callable[[], int]) -> float:
    """CPU seconds per operation: the fastest of ``repeat`` rounds (each returns its op count).

    CPU time of this process, not wall time: on a shared machine, time spent waiting for a
    core is left out (cache and frequency effects of other processes still are not).
    """
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        count = rounds()
        best = min(best, (time.process_time() - started) / count)
    return best


def measure(jobs: int, repeat: int) -> dict[str, float]:
    """Seconds per operation, by operation name."""
    demo = build_demo(DemoPlan(jobs=jobs))
    events = demo.events
    structured = [encode_structured(e) for e in events]
    binary = [encode_binary(e) for e in events]
    start = datetime(2026, 6, 1, tzinfo=UTC)
    nows = [start + timedelta(microseconds=n) for n in range(len(events))]

    def decode(messages: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> Callable[[], int]:
        def run() -> int:
            for key, value, headers in messages:
                decode_event(key, value, headers)
            return len(messages)

        return run

    def apply_stream() -> int:
        states: dict[str, JobState] = {}
        for event, now in zip(events, nows, strict=True):
            result = apply(states.get(event.subject), event, now)
            if isinstance(result, JobState):
                states[event.subject] = result
        return len(events)

    def apply_write_post() -> int:
        # What the consumer does per event at most: apply, write the changelog, build the body.
        states: dict[str, JobState] = {}
        for event, now in zip(events, nows, strict=True):
            result = apply(states.get(event.subject), event, now)
            if isinstance(result, JobState):
                states[event.subject] = result
                body_sha256(encode_body(result))
                encode_state(result)
        return len(events)

    job_events, _ = demo_job(random.Random(2), "bench-job", steps=10)
    state: JobState | None = None
    for event in job_events:
        result = apply(state, event, start)
        assert isinstance(result, JobState)
        state = result
    assert state is not None
    assert state.status == "Completed"
    completed = state
    stored = encode_state(completed)
    body = encode_body(completed)
    loops = 2000

    def looped(operation: Callable[[], object]) -> Callable[[], int]:
        def run() -> int:
            for _ in range(loops):
                operation()
            return loops

        return run

    def best_cold(operation: Callable[[JobState], object]) -> float:
        # Fresh copies (new step objects, as after a restore): nothing cached for them yet.
        best = float("inf")
        for _ in range(repeat):
            fresh = [decode_state(stored) for _ in range(200)]
            started = time.process_time()
            for copy in fresh:
                operation(copy)
            best = min(best, (time.process_time() - started) / len(fresh))
        return best

    return {
        "decode structured": best_of(repeat, decode(structured)),
        "decode binary": best_of(repeat, decode(binary)),
        "apply (interleaved stream)": best_of(repeat, apply_stream),
        "apply+changelog+body (stream)": best_of(repeat, apply_write_post),
        "encode_state (13-event job)": best_of(repeat, looped(lambda: encode_state(completed))),
        "decode_state (13-event job)": best_of(repeat, looped(lambda: decode_state(stored))),
        "encode_body (13-event job)": best_of(repeat, looped(lambda: encode_body(completed))),
        "encode_state, cold": best_cold(encode_state),
        "encode_body, cold": best_cold(encode_body),
        "body_sha256 (13-event job)": best_of(repeat, looped(lambda: body_sha256(body))),
        "_events": float(len(events)),
        "_job_events": float(len(job_events)),
        "_changelog_bytes": float(len(stored)),
        "_body_bytes": float(len(body)),
    }


#: Operations measured under another name by earlier runs (``--compare`` of a saved one).
_FORMERLY = {
    "encode_state (13-event job)": "to_json_bytes (13-event job)",
    "decode_state (13-event job)": "from_json_bytes (13-event job)",
    "encode_state, cold": "to_json_bytes, cold",
}


def show(figures: dict[str, float], before: dict[str, float] | None) -> None:
    print(
        f"{int(figures['_events'])} events; changelog value {int(figures['_changelog_bytes'])} "
        f"bytes, body {int(figures['_body_bytes'])} bytes "
        f"({int(figures['_job_events'])}-event job)"
    )
    if before is not None:
        print(
            f"{'operation':32} {'before us':>10} {'after us':>10} {'speed-up':>9} {'after/s':>10}"
        )
    else:
        print(f"{'operation':32} {'us/op':>10} {'ops/s':>10}")
    for name, seconds in figures.items():
        if name.startswith("_"):
            continue
        micros = seconds * 1e6
        earlier = _FORMERLY.get(name, name)
        if before is not None and earlier in before:
            old = before[earlier] * 1e6
            print(f"{name:32} {old:10.1f} {micros:10.1f} {old / micros:8.2f}x {1 / seconds:10.0f}")
        else:
            print(f"{name:32} {micros:10.1f} {1 / seconds:10.0f}")
    decode = (figures["decode structured"] + figures["decode binary"]) / 2
    per_event = decode + figures["apply (interleaved stream)"]
    print(
        f"decode (mean of modes) + apply: {per_event * 1e6:.1f} us/event, "
        f"{1 / per_event:.0f} events/s"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--save", type=Path, help="write the figures as JSON")
    parser.add_argument("--compare", type=Path, help="a saved run to show side by side")
    args = parser.parse_args(argv)
    figures = measure(args.jobs, args.repeat)
    before: dict[str, Any] | None = None
    if args.compare is not None:
        before = json.loads(args.compare.read_text())
    show(figures, before)
    if args.save is not None:
        args.save.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
