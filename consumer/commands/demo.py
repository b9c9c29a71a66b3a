"""``basicsync demo``: stream realistic job event streams to the input topics.

Jobs come from :func:`consumer.demo.build_demo` (interleaved as from many field workers, with
the chosen share of aborted and excluded jobs). Events go to the input topics by kind, as
separate upstream systems would send them (upserts, steps, status/abort/exclusion), in
structured or binary CloudEvents mode. ``--invalid-share`` adds *extra* unusable events, so the
valid ones still assemble into the jobs' expected documents: bad JSON, an unknown ``type`` and a
Kafka key that differs from the subject, in turn, each keyed like a demo job's events.

Input topics are never created implicitly (a broker with auto-creation would make one partition
and break co-partitioning): ``--create-topics N`` creates the missing ones with N partitions.
Progress goes to stderr: a bar on a terminal, a plain line every few seconds otherwise.

Exit codes: 0 all events acknowledged, 1 Kafka failed mid-way, 2 invalid settings or options,
4 an input topic is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from consumer.commands.tooling import bootstrap_servers, kafka_failure, tool_settings
from consumer.config import Settings
from consumer.demo import DemoPlan, build_demo
from consumer.domain.events import EventType, JobEvent, encode_binary, encode_structured
from consumer.kafka.admin import create_topics, partition_counts
from consumer.kafka.connection import client_kwargs

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TOPICS = 4

#: Which input topic an event kind goes to (modulo the topic count); as in consumer.demo.
_TOPIC_OF_KIND = {
    EventType.upserted: 0,
    EventType.step_completed: 1,
    EventType.step_cancelled: 1,
    EventType.status_changed: 2,
    EventType.excluded: 2,
    EventType.aborted: 2,
}
INVALID_KINDS = ("bad_json", "unknown_type", "key_mismatch")

Record = tuple[str, bytes, bytes, list[tuple[str, bytes]]]


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=200, help="number of jobs (default 200)")
    parser.add_argument(
        "--rate", type=_non_negative, default=0.0, help="events per second; 0 = as fast as possible"
    )
    parser.add_argument("--steps", type=int, default=10, help="steps per job (default 10)")
    parser.add_argument("--abort-share", type=_share, default=0.05, help="share of aborted jobs")
    parser.add_argument("--exclude-share", type=_share, default=0.05, help="share excluded")
    parser.add_argument(
        "--invalid-share",
        type=_share,
        default=0.0,
        help="extra invalid events, as a share of the valid ones (bad JSON, unknown type, "
        "key mismatch)",
    )
    parser.add_argument(
        "--binary-share", type=_share, default=0.5, help="share of binary-mode CloudEvents"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    parser.add_argument("--prefix", default="demo", help="clientJobId prefix (default demo)")
    parser.add_argument(
        "--create-topics",
        type=int,
        metavar="N",
        default=None,
        help="create missing input topics with N partitions",
    )


def main(args: argparse.Namespace) -> int:
    settings = tool_settings()
    if settings is None:
        return EXIT_USAGE
    bad_topics = args.create_topics is not None and args.create_topics < 1
    if args.jobs < 0 or args.steps < 1 or bad_topics:
        print("basicsync demo: --jobs >= 0, --steps >= 1, --create-topics >= 1", file=sys.stderr)
        return EXIT_USAGE
    seed = args.seed if args.seed is not None else int(time.time())
    plan = DemoPlan(
        jobs=args.jobs,
        steps=args.steps,
        abort_share=args.abort_share,
        exclude_share=args.exclude_share,
        binary_share=args.binary_share,
        seed=seed,
        prefix=args.prefix,
    )
    records, invalid = demo_records(plan, settings.topics.input, args.invalid_share)
    try:
        return asyncio.run(_stream(settings, records, invalid, args.rate, args.create_topics, plan))
    except BrokenPipeError:
        raise  # stdout closed (`demo | head`): the command line's business, not Kafka's
    except (KafkaError, OSError) as exc:
        print(f"basicsync demo: Kafka failed: {kafka_failure(exc, settings)}", file=sys.stderr)
        return EXIT_FAILED


def demo_records(
    plan: DemoPlan, topics: Sequence[str], invalid_share: float
) -> tuple[list[Record], int]:
    """``(topic, key, value, headers)`` of every event to send with invalid ones mixed in, and
    how many of them are invalid."""
    demo = build_demo(plan)
    rng = random.Random(plan.seed)
    records: list[Record] = []
    for event in demo.events:
        encode = encode_binary if rng.random() < plan.binary_share else encode_structured
        key, value, headers = encode(event)
        records.append((topics[_TOPIC_OF_KIND[event.type] % len(topics)], key, value, headers))
    invalid = round(len(demo.events) * invalid_share)
    for n in range(invalid):
        event = demo.events[rng.randrange(len(demo.events))]
        bad = invalid_record(event, INVALID_KINDS[n % len(INVALID_KINDS)], n)
        records.insert(rng.randrange(len(records) + 1), (topics[0], *bad))
    return records, invalid


def invalid_record(
    event: JobEvent, kind: str, n: int
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """An unusable event of ``kind`` about ``event``'s job (keyed like it)."""
    key, value, headers = encode_structured(event)
    if kind == "bad_json":
        return key, value[: len(value) // 2], headers
    envelope: dict[str, Any] = json.loads(value)
    envelope["id"] = f"{event.id}-invalid-{n}"
    if kind == "unknown_type":
        envelope["type"] = "com.workfloplus.job.teleported"
        return key, json.dumps(envelope).encode(), headers
    return key + b"-mismatch", json.dumps(envelope).encode(), headers  # key_mismatch


async def _stream(
    settings: Settings,
    records: list[Record],
    invalid: int,
    rate: float,
    create_partitions: int | None,
    plan: DemoPlan,
) -> int:
    kafka = client_kwargs(settings.kafka, bootstrap_servers(settings))
    if not await _input_topics_ready(kafka, settings, create_partitions):
        return EXIT_TOPICS
    progress = Progress(len(records), sys.stderr)
    producer = AIOKafkaProducer(**kafka, linger_ms=5, acks="all")
    await producer.start()
    try:
        acks: list[asyncio.Future[Any]] = []
        started = time.monotonic()
        for sent, (topic, key, value, headers) in enumerate(records, 1):
            if rate > 0:  # pace against the start, so slow sends do not lower the rate
                ahead = started + sent / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            acks.append(await producer.send(topic, value=value, key=key, headers=headers))
            progress.update(sent)
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
        progress.close()
    print(
        f"sent {len(records)} events ({invalid} invalid) for {plan.jobs} jobs (seed "
        f"{plan.seed}, prefix {plan.prefix}) to {', '.join(settings.topics.input)}",
        flush=True,
    )
    return 0


async def _input_topics_ready(
    kafka: dict[str, Any], settings: Settings, create_partitions: int | None
) -> bool:
    admin = AIOKafkaAdminClient(**kafka)
    await admin.start()
    try:
        counts = await partition_counts(admin, settings.topics.input)
        missing = [topic for topic in settings.topics.input if topic not in counts]
        if missing and create_partitions is None:
            print(
                f"basicsync demo: input topics do not exist: {', '.join(missing)}; create them "
                "or pass --create-topics N",
                file=sys.stderr,
            )
            return False
        if missing and create_partitions is not None:
            await create_topics(
                admin,
                {topic: (create_partitions, {}) for topic in missing},
                settings.kafka.replication_factor,
            )
            print(f"created {', '.join(missing)} ({create_partitions} partitions)", file=sys.stderr)
        return True
    finally:
        await admin.close()


class Progress:
    """A progress bar on a terminal; a plain line at most every 2 s (and at the end) otherwise."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO) -> None:
        self._total = max(total, 1)
        self._stream = stream
        self._tty = stream.isatty()
        self._started = time.monotonic()
        self._last_print = 0.0
        self._done = 0

    def update(self, done: int) -> None:
        self._done = done
        now = time.monotonic()
        interval = 0.1 if self._tty else 2.0
        if now - self._last_print >= interval or done == self._total:
            self._last_print = now
            self._print(now)

    def close(self) -> None:
        if self._tty:
            self._stream.write("\n")
        self._stream.flush()

    def _print(self, now: float) -> None:
        share = self._done / self._total
        rate = self._done / max(now - self._started, 1e-6)
        counts = f"{self._done}/{self._total} events {share:4.0%} {rate:,.0f}/s"
        if self._tty:
            filled = int(share * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self._stream.write(f"\r[{bar}] {counts}")
        else:
            self._stream.write(f"demo: {counts}\n")
        self._stream.flush()
