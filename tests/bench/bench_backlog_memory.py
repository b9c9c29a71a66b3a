"""Memory per live job at the peak of a backlog, without Kafka: the consume loop's pure path.

Run ``python -m tests.bench.bench_backlog_memory`` (``--jobs N``, default 20000; ``--trace``
for tracemalloc figures and the top allocation sites, which slows it down and costs memory of
its own; ``--top K`` sites). The interleaved demo stream (``build_demo(DemoPlan(jobs=N))``) is
encoded as ``send_events`` encodes it (half binary mode, three input topics by kind, keyed to
partitions by the Java partitioner) into ``SourceRecord`` values first. Then the real
``Pipeline._absorb`` takes them in fetch batches of ``kafka.max_poll_records``, as the consume
loop does in catch-up mode: ``intake.absorb`` into the ``JobStore``, the changed jobs, results
and offsets staged in a real ``Checkpoint`` (producers faked), the jobs handed to a real
``SyncScheduler`` (its dispatch loop not running, so every job keeps its bookkeeping until the
end: the backlog's peak). Every ``--commit-every`` records the checkpoint commits through a
fake producer that takes every record's value (encoding each staged state), as the 30 s
catch-up checkpoint does.

It reports bytes per job of RSS growth (``VmRSS`` and ``VmHWM`` from ``/proc/self/status``,
after minus before the first batch; the input records are made before and so not counted) and,
with ``--trace``, the traced Python heap held at the end and its peak.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import random
import time
import tracemalloc
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import TopicPartition

from consumer.config import KafkaSettings, SyncSettings
from consumer.demo import DemoPlan, build_demo
from consumer.demo.sender import encode_events
from consumer.intake import BatchEffect
from consumer.kafka.partitioning import hashes_to
from consumer.kafka.records import PlainRecord, SourceRecord
from consumer.kafka.transactions import Producible
from consumer.pipeline import Pipeline, PipelineLimits
from consumer.state.checkpoint import Checkpoint, CheckpointTopics
from consumer.state.recovery import RestoreReport
from consumer.state.store import JobStore
from consumer.sync.circuit import CircuitBreaker
from consumer.sync.retry import RetryPolicy
from consumer.sync.scheduler import SyncScheduler

PARTITIONS = 3


def records(jobs: int) -> list[PlainRecord]:
    """The demo stream of ``jobs`` jobs as fetched records, offsets counted per partition."""
    plan = DemoPlan(jobs=jobs)
    demo = build_demo(plan)
    topics = [f"bench.in-{kind}" for kind in ("upserts", "steps", "status")]
    encoded = encode_events(
        demo.events, topics, binary_share=plan.binary_share, rng=random.Random(plan.seed)
    )
    next_offset: dict[tuple[str, int], int] = {}
    out = []
    for topic, key, value, headers in encoded:
        partition = hashes_to(key, PARTITIONS)
        offset = next_offset.get((topic, partition), 0)
        next_offset[(topic, partition)] = offset + 1
        out.append(PlainRecord(topic, partition, offset, key, value, tuple(headers)))
    return out


class _Producer:
    """A partition producer that takes every record's value (encoding staged states) and
    keeps none of them."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def commit(
        self,
        records: Sequence[Producible],
        offsets: Mapping[TopicPartition, int],
        metadata: str = "",
        write_from: Mapping[TopicPartition, int] | None = None,
    ) -> dict[TopicPartition, int]:
        written = 0
        for record in records:
            written += len(record.value or b"")
        return {}


class _Gateway:
    async def post_basic_sync(self, body: bytes, send_by: float | None = None) -> Any:
        raise AssertionError("the dispatch loop does not run here")

    async def probe(self) -> int | None:
        return None


class _Observer:
    def batch_absorbed(self, effect: BatchEffect, records: int) -> None:
        pass

    def restored(self, report: RestoreReport) -> None:
        pass

    def ownership_changed(self, partitions: set[int], restoring: bool) -> None:
        pass

    def restore_refused(self, error: Exception) -> None:
        pass

    def circuit_changed(self, is_open: bool) -> None:
        pass

    def intent_committed(self, seconds: float) -> None:
        pass

    def request_finished(self, outcome: str, status: int | None, seconds: float) -> None:
        pass

    def job_synced(self, latency_ms: int | None) -> None:
        pass


def _status_kb() -> dict[str, int]:
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(rest.split()[0])
    return found


async def run(
    stream: Sequence[SourceRecord], *, batch: int, commit_every: int, trace: bool
) -> dict[str, Any]:
    kafka = KafkaSettings()
    store = JobStore()
    checkpoint = Checkpoint(
        store,
        CheckpointTopics("bench.state", "bench.ok", "bench.failed"),
        lambda p: _Producer(),  # type: ignore[arg-type, return-value]
    )
    observer = _Observer()
    sync = SyncSettings()
    scheduler = SyncScheduler(
        store,
        _Gateway(),
        checkpoint,
        sync,
        observer,
        circuit=CircuitBreaker(),
        retry=RetryPolicy(initial=0.2, maximum=30.0, max_attempts=10, max_elapsed=600.0),
    )
    scheduler.set_catching_up(True)
    start = datetime(2026, 6, 1, tzinfo=UTC)
    ticks = iter(range(1 << 62))
    pipeline = Pipeline(
        None,  # type: ignore[arg-type]
        store,
        checkpoint,
        scheduler,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        PipelineLimits(
            partition_count=PARTITIONS,
            max_event_bytes=kafka.max_event_bytes,
            revoke_deadline_s=10.0,
            retention_s=sync.retention_s,
            max_job_bytes=kafka.max_job_bytes,
            max_failure_value_bytes=kafka.max_failure_value_bytes,
        ),
        observer,
        wall_clock=lambda: start + timedelta(microseconds=next(ticks)),
    )
    for partition in range(PARTITIONS):
        await checkpoint.open(partition)
    pipeline._owned = set(range(PARTITIONS))
    gc.collect()
    before = _status_kb()
    if trace:
        tracemalloc.start(4)
    since_commit = 0
    for begin in range(0, len(stream), batch):
        chunk = stream[begin : begin + batch]
        pipeline._absorb(chunk)
        since_commit += len(chunk)
        if since_commit >= commit_every:
            await checkpoint.commit()
            since_commit = 0
    del chunk
    gc.collect()
    after = _status_kb()
    result: dict[str, Any] = {
        "jobs": len(store),
        "events": len(stream),
        "rss": (after["VmRSS"] - before["VmRSS"]) * 1024,
        "hwm": (after["VmHWM"] - before["VmRSS"]) * 1024,
        "dirty": scheduler.dirty_jobs,
    }
    if trace:
        held, peak = tracemalloc.get_traced_memory()
        result["held"], result["peak"] = held, peak
        result["snapshot"] = tracemalloc.take_snapshot()
        tracemalloc.stop()
    result["keep"] = (store, checkpoint, scheduler, pipeline)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=KafkaSettings().max_poll_records)
    parser.add_argument(
        "--commit-every", type=int, default=51_000, help="records between checkpoints"
    )
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--frames", type=int, default=1, help="frames shown per site")
    args = parser.parse_args(argv)
    # Made in a child process: the demo's own objects, freed, would leave the heap of this
    # one grown, and the states would fill that space without the RSS growing.
    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        stream = pool.submit(records, args.jobs).result()
    made = time.perf_counter()
    result = asyncio.run(
        run(stream, batch=args.batch, commit_every=args.commit_every, trace=args.trace)
    )
    jobs = result["jobs"]
    print(f"absorbed in {time.perf_counter() - made:.0f} s")
    print(
        f"{jobs} jobs, {result['events']} events, {result['dirty']} dirty: RSS growth "
        f"{result['rss'] / jobs / 1e3:.1f} kB/job at the end, peak (VmHWM) "
        f"{result['hwm'] / jobs / 1e3:.1f} kB/job"
    )
    if args.trace:
        print(
            f"traced heap held {result['held'] / jobs / 1e3:.1f} kB/job, "
            f"peak {result['peak'] / jobs / 1e3:.1f} kB/job"
        )
        snapshot = result["snapshot"].filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        group = "lineno" if args.frames == 1 else "traceback"
        for stat in snapshot.statistics(group)[: args.top]:
            where = " < ".join(
                f"{frame.filename.split('/')[-1]}:{frame.lineno}"
                for frame in list(reversed(stat.traceback))[: args.frames]
            )
            print(f"{stat.size / jobs:8.0f} B/job {stat.count / jobs:6.1f} blocks/job  {where}")


if __name__ == "__main__":
    main()
