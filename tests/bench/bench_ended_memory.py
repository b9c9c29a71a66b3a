"""What a job that ended costs a running member: held as its state, or as its settled value.

Run ``python -m tests.bench.bench_ended_memory`` (``--jobs N``, default 20000). The interleaved
demo jobs (``build_demo(DemoPlan(jobs=N))``, which all end Completed or Aborted) are folded with
the reducer and marked accepted by WorkfloPlus, then held two ways, one after the other in one
process:

- as their states (``JobState``), what a member held for every ended job until the retention
  forgot it (seven days by default);
- as the value the checkpoint writes for them (``SettledJob``: the changelog value, compressed
  alone), what it holds once their settled state is committed (``consumer.domain.settled``).

For each it prints the traced Python heap held per job (tracemalloc), the objects the garbage
collector tracks per job, and how long one full collection takes with every job held. The
demo's events are let go before the first figure, so only what the states keep of them counts.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from consumer.demo import DemoPlan, build_demo
from consumer.domain.job import JobState, apply
from consumer.domain.settled import SettledJob, is_ended
from consumer.domain.state_codec import encode_state
from consumer.domain.value_compression import compressed


def _figures(label: str, jobs: int, base_bytes: int, base_objects: int) -> None:
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base_bytes
    objects = len(gc.get_objects()) - base_objects
    started = time.perf_counter()
    gc.collect()
    pause_ms = (time.perf_counter() - started) * 1000
    print(
        f"{label:<28} {held / jobs / 1e3:8.1f} kB/job {objects / jobs:8.1f} tracked/job "
        f"{pause_ms:9.1f} ms per full collection"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    args = parser.parse_args(argv)
    gc.collect()
    tracemalloc.start()
    base_bytes, base_objects = tracemalloc.get_traced_memory()[0], len(gc.get_objects())
    events = build_demo(DemoPlan(jobs=args.jobs)).events
    start = datetime(2026, 6, 1, tzinfo=UTC)
    states: dict[str, JobState] = {}
    for n, event in enumerate(events):
        result = apply(states.get(event.subject), event, start + timedelta(microseconds=n))
        if isinstance(result, JobState):
            states[event.subject] = result
    for job, state in states.items():
        states[job] = replace(state, synced_version=state.version, synced_sha256="0" * 64)
    ended = sum(is_ended(state) for state in states.values())
    print(f"{len(states)} jobs, {ended} ended, {len(events)} events")
    del events, result, state  # a state keeps the steps its events carried, nothing else
    _figures("held as states", len(states), base_bytes, base_objects)
    values = {
        job: SettledJob(job, compressed(encode_state(state)), state.updated_at, terminal=True)
        for job, state in states.items()
    }
    jobs = len(states)
    del states
    _figures("held as settled values", jobs, base_bytes, base_objects)
    assert len(values) == jobs
    tracemalloc.stop()


if __name__ == "__main__":
    main()
