"""``basicsync run``: the consumer, or the embedded demo when Kafka/WorkfloPlus are not set.

Exit codes: 0 after a clean stop (or a converged demo), 1 when the demo did not converge,
2 for invalid settings or topics, 130 after a second signal.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time

import structlog

from consumer.app import Running, endpoints_from, run_consumer, stop_on
from consumer.config import Settings, load_settings
from consumer.demo import DemoPlan
from consumer.embedded import run_embedded
from consumer.errors import FatalError
from consumer.kafka.access import run_waiting_out_denials
from consumer.observability.logging import configure_logging
from consumer.observability.stats import Stats

log = structlog.get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Settings come from BASICSYNC_* environment variables (see docs/configuration.md). "
        "Without BASICSYNC_KAFKA__BOOTSTRAP_SERVERS and BASICSYNC_GATEWAY__BASE_URL the local "
        "broker and the sandbox are started and a demo is streamed."
    )
    parser.add_argument("--demo-jobs", type=int, default=200, help="demo jobs (embedded mode)")
    parser.add_argument(
        "--kafka-port", type=int, default=9092, help="port of the embedded local broker"
    )


def main(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except FatalError as exc:
        print(f"basicsync: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.observability.log_format, settings.observability.log_level)
    try:
        return asyncio.run(_run(settings, args))
    except FatalError as exc:
        log.error("fatal", error=str(exc), kind=type(exc).__name__)
        print(f"basicsync: {exc}", file=sys.stderr)
        return 2


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handler = stop_on(stop, lambda: os._exit(130))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handler)
    if settings.embedded_kafka or settings.embedded_gateway:
        seed = int(time.time())
        plan = DemoPlan(jobs=args.demo_jobs, seed=seed)
        return await run_embedded(
            settings, stop, plan=plan, kafka_port=args.kafka_port, progress=_progress
        )
    endpoints = endpoints_from(settings)
    await run_waiting_out_denials(
        lambda running: run_consumer(settings, endpoints, stop, running),
        settings,
        stop,
        Running(stats=Stats()),
    )
    return 0


def _progress(line: str) -> None:
    print(line, flush=True)
