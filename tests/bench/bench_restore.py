"""The whole restore path against a real broker: changelog read from Kafka, then parsed.

Run ``python -m tests.bench.bench_restore --bootstrap HOST:PORT`` (``--jobs``, ``--partitions``,
``--versions``, ``--compression``, ``--plain-values``, ``--unsettled``; ``--save FILE`` keeps the
figures as JSON). It writes ``--versions`` values per job (the older ones superseded, as before
compaction) of a completed 13-event demo job to a fresh compacted topic, as the checkpoint
writes them (each value compressed alone, in uncompressed batches; ``--plain-values
--compression zstd`` writes them as versions before value compression did; the last value of
each job settled, with the settled mark, as after a backlog; none with ``--unsettled``), then
times ``consumer.state.recovery.restore`` of all its partitions, wall clock and CPU, and the
parse alone (``decode_stored`` of every surviving value, best of
three): what a restore pays per job when nothing is settled. The topic is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumer.demo.jobs import demo_job
from consumer.domain.job import JobState, apply
from consumer.domain.retention import decode_stored
from consumer.domain.settled import SETTLED_HEADER, settled_header
from consumer.domain.state import changed
from consumer.domain.state_codec import encode_state
from consumer.domain.value_compression import compressed
from consumer.state.recovery import restore


class JobValues(NamedTuple):
    """A job's key, a changelog value of it before it settled, and its settled value with the
    settled mark the checkpoint writes with it."""

    key: bytes
    open: bytes
    settled: bytes
    mark: bytes


def job_values(jobs: int) -> list[JobValues]:
    """The values of ``jobs`` completed demo jobs (one template, renamed)."""
    events, _ = demo_job(random.Random(2), "bench-job", steps=10)
    state: JobState | None = None
    for event in events:
        result = apply(state, event, datetime(2026, 6, 1, tzinfo=UTC))
        assert isinstance(result, JobState)
        state = result
    assert state is not None
    values = []
    for n in range(jobs):
        job = f"bench-{n:07d}"
        document = state.document
        metadata = changed(document.metadata, client_job_id=job)
        named = replace(state, client_job_id=job, document=changed(document, metadata=metadata))
        done = replace(named, synced_version=named.version, synced_sha256="0" * 64)
        mark = settled_header(done)
        assert mark is not None
        values.append(JobValues(job.encode(), encode_state(named), encode_state(done), mark))
    return values


def compressed_alone(values: list[JobValues]) -> list[JobValues]:
    """The values as the checkpoint writes them by default (``kafka.compress_changelog_values``)."""
    return [v._replace(open=compressed(v.open), settled=compressed(v.settled)) for v in values]


async def write(
    bootstrap: str,
    topic: str,
    values: list[JobValues],
    versions: int,
    compression: str,
    settled: bool,
) -> None:
    """``versions`` values per job: the last one settled (and marked) when ``settled``."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_batch_size=1 << 20,
        max_request_size=8 << 20,
        compression_type=None if compression == "none" else compression,
    )
    await producer.start()
    try:
        for version in range(versions):
            last = version == versions - 1
            for job in values:
                if last and settled:
                    headers = [(SETTLED_HEADER, job.mark)]
                    await producer.send(topic, job.settled, key=job.key, headers=headers)
                else:
                    await producer.send(topic, job.open, key=job.key)
        await producer.flush()
    finally:
        await producer.stop()


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    values = job_values(args.jobs)
    if not args.plain_values:
        values = compressed_alone(values)
    topic = f"bench-restore-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, args.partitions, 1, topic_configs={"cleanup.policy": "compact"})]
        )
        await write(
            args.bootstrap, topic, values, args.versions, args.compression, not args.unsettled
        )

        def factory(**extra: Any) -> AIOKafkaConsumer:
            return AIOKafkaConsumer(bootstrap_servers=args.bootstrap, **extra)

        wall, cpu = time.perf_counter(), time.process_time()
        states, report = await restore(factory, topic, range(args.partitions))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await admin.delete_topics([topic])
        await admin.close()
    restored = sum(len(s) for s in states.values())
    assert restored == args.jobs, (restored, args.jobs)
    parse = float("inf")
    for _ in range(3):
        started = time.process_time()
        for job in values:
            decode_stored(job.settled)
        parse = min(parse, time.process_time() - started)
    return {
        "jobs": args.jobs,
        "records": report.records,
        "value bytes": len(values[0].settled),
        "settled unread": report.settled,
        "restore wall s": wall,
        "restore CPU s": cpu,
        "jobs/s (wall)": args.jobs / wall,
        "parse CPU s": parse,
        "parse share of wall": parse / wall,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--versions", type=int, default=3)
    parser.add_argument("--compression", default="none", help="of the batches")
    parser.add_argument(
        "--plain-values",
        action="store_true",
        help="values as JSON, not compressed alone (with --compression zstd: the form before)",
    )
    parser.add_argument(
        "--unsettled",
        action="store_true",
        help="no value settled (each is parsed), instead of the last of each job settled",
    )
    parser.add_argument("--save", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    figures = asyncio.run(measure(args))
    for name, value in figures.items():
        print(f"{name:24} {value:,.3f}" if isinstance(value, float) else f"{name:24} {value:,}")
    if args.save is not None:
        args.save.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
