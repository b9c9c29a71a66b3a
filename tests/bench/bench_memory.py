"""Python heap per live job: the interleaved demo stream decoded and applied in process.

Run ``python -m tests.bench.bench_memory`` (``--jobs N``, default 3000). The demo stream
(``build_demo(DemoPlan(jobs=N))``) is encoded to Kafka values first; then, with tracemalloc on,
each value is decoded and applied as the intake does, keeping one state per job. The figure is
the traced heap still allocated afterwards (after a collection) divided by the jobs: what the
store holds per job, nothing of the input. It uses only ``decode_event``, ``apply`` and the demo,
so the same file measures an older checkout too (copy it there and run it the same way).
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc
from datetime import UTC, datetime, timedelta

from consumer.demo import DemoPlan, build_demo
from consumer.domain.events import decode_event, encode_structured
from consumer.domain.job import JobState, apply


def measure(jobs: int) -> tuple[int, int, int]:
    """``(jobs, events, traced bytes held by the states)``."""
    demo = build_demo(DemoPlan(jobs=jobs))
    messages = [encode_structured(event) for event in demo.events]
    del demo
    gc.collect()
    start = datetime(2026, 6, 1, tzinfo=UTC)
    tracemalloc.start()
    states: dict[str, JobState] = {}
    for n, (key, value, headers) in enumerate(messages):
        event = decode_event(key, value, headers)
        result = apply(states.get(event.subject), event, start + timedelta(microseconds=n))
        if isinstance(result, JobState):
            states[event.subject] = result
    del event, result
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return len(states), len(messages), held


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=3000)
    args = parser.parse_args(argv)
    jobs, events, held = measure(args.jobs)
    print(
        f"{jobs} jobs, {events} events: {held / 1e6:.1f} MB of Python heap held, "
        f"{held / jobs / 1e3:.1f} kB per job"
    )


if __name__ == "__main__":
    main()
