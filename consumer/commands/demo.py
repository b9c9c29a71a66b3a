"""``basicsync demo``: stream realistic job event streams to the input topics.

Jobs come from :func:`consumer.demo.build_demo` (interleaved as from many field workers, with
the chosen share of aborted and excluded jobs). Events go to the input topics by kind through
``consumer.demo.sender`` (upserts, steps, status/abort/exclusion, as separate upstream systems
would send them), in structured or binary CloudEvents mode. ``--invalid-share`` adds *extra*
unusable events, so the valid ones still assemble into the jobs' expected documents: bad JSON,
an unknown ``type`` and a Kafka key that differs from the subject, in turn, each keyed like a
demo job's events.

Input topics are never created implicitly (a broker with auto-creation would make one partition
and break co-partitioning): ``--create-topics N`` creates the missing ones with N partitions.
Progress goes to stderr through ``consumer.progress``: a live bar on a terminal, a plain line
every few seconds otherwise.

Exit codes: 0 all events acknowledged, 1 Kafka failed mid-way, 2 invalid settings or options,
4 an input topic is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from consumer.commands.tooling import (
    KAFKA_TROUBLE,
    bootstrap_servers,
    kafka_trouble,
    tool_settings,
)
from consumer.config import Settings
from consumer.demo import DemoPlan, demo_records, send_records
from consumer.demo.sender import Record
from consumer.kafka.access import explained
from consumer.kafka.admin import create_topics, partition_counts
from consumer.kafka.connection import client_kwargs
from consumer.kafka.starting import start_client
from consumer.progress import ProgressReport, open_display

EXIT_USAGE = 2
EXIT_TOPICS = 4


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
    inputs = settings.input_topics()
    unread = [t for t in settings.topics.input if t not in inputs.matching(settings.topics.input)]
    if inputs.pattern is not None and unread:
        print(
            f"basicsync demo: the demo writes to BASICSYNC_TOPICS__INPUT ({', '.join(unread)}), "
            f"which the input {inputs.describe()} does not match: set BASICSYNC_TOPICS__INPUT "
            "to topics it matches",
            file=sys.stderr,
        )
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
        stream = _stream(settings, records, invalid, args.rate, args.create_topics, plan)
        return asyncio.run(explained(stream, settings))
    except BrokenPipeError:
        raise  # stdout closed (`demo | head`): the command line's business, not Kafka's
    except KAFKA_TROUBLE as exc:
        return kafka_trouble("demo", exc, settings)


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
    display = open_display(settings.observability.log_format, emit=_plain_progress, interval_s=2.0)
    producer = AIOKafkaProducer(**kafka, linger_ms=5, acks="all")
    try:
        await start_client(producer.start())
        with display.progress("demo", len(records), "events") as progress:
            await send_records(producer, records, rate=rate, on_sent=progress.update)
    finally:
        await producer.stop()
    display.say(
        f"sent {len(records)} events ({invalid} invalid) for {plan.jobs} jobs (seed "
        f"{plan.seed}, prefix {plan.prefix}) to {', '.join(settings.topics.input)}"
    )
    return 0


async def _input_topics_ready(
    kafka: dict[str, Any], settings: Settings, create_partitions: int | None
) -> bool:
    admin = AIOKafkaAdminClient(**kafka)
    try:
        await start_client(admin.start())
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


def _plain_progress(report: ProgressReport) -> None:
    """Not a terminal (or JSON logs): a plain line on stderr, no control sequences."""
    rate = report.completed / max(report.elapsed_s, 1e-6)
    share = report.completed / max(report.total, 1)
    print(f"{report.line()} | {share:.0%} | {rate:,.0f}/s", file=sys.stderr, flush=True)
