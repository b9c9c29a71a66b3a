"""``basicsync run``: the consumer; with ``--embedded``, whatever is not configured runs locally.

Without ``--embedded`` both Kafka and WorkfloPlus must be configured: a missing setting is an
error before anything is connected (exit 2, one line naming the variables), never a silent
fallback to the in-process sandbox, which would consume real input, commit its offsets and
report successes for posts that went nowhere. ``--embedded`` starts the local broker when
``BASICSYNC_KAFKA__BOOTSTRAP_SERVERS`` is unset and the WorkfloPlus sandbox when
``BASICSYNC_GATEWAY__BASE_URL`` is unset; with both local it streams demo jobs and ends once
they converged (the quick start).

Exit codes: 0 after a clean stop (or a converged demo), 1 when the demo did not converge,
2 for invalid or missing settings or topics, 3 after a stop that gave up a last checkpoint it
could not commit within twice ``sync.shutdown_deadline_s`` (nothing is lost; the next owner
reads those events again), 130 after a second signal.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
import time

import structlog

from consumer.app import Running, endpoints_from, run_consumer, stop_on
from consumer.config import Settings, load_settings
from consumer.demo import DemoPlan
from consumer.embedded import log_progress, run_embedded
from consumer.errors import FatalError
from consumer.kafka.access import run_waiting_out_denials
from consumer.observability.logging import configure_logging
from consumer.observability.stats import Stats
from consumer.observability.task_dump import log_task_stacks
from consumer.observability.tracing import Tracing, tracing_from_environ
from consumer.progress import open_display

log = structlog.get_logger(__name__)

#: the stop gave up a last checkpoint (``last_checkpoint_abandoned`` in the log)
EXIT_LAST_CHECKPOINT_ABANDONED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Settings come from BASICSYNC_* environment variables (see docs/configuration.md). "
        "BASICSYNC_KAFKA__BOOTSTRAP_SERVERS and BASICSYNC_GATEWAY__BASE_URL are required "
        "unless --embedded is given."
    )
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="start the local broker and/or the WorkfloPlus sandbox for what is not configured "
        "(development only; with both local, stream demo jobs until they converged)",
    )
    parser.add_argument("--demo-jobs", type=int, default=200, help="demo jobs (embedded mode)")
    parser.add_argument(
        "--kafka-port", type=int, default=9092, help="port of the embedded local broker"
    )


def main(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
        tracing = tracing_from_environ(os.environ)
    except FatalError as exc:
        print(f"basicsync: {exc}", file=sys.stderr)
        return 2
    missing = missing_endpoints(settings)
    if missing and not args.embedded:
        print(
            f"basicsync run: {' and '.join(missing)} not set; set them, or pass --embedded to "
            "run the local broker and the WorkfloPlus sandbox instead (development only)",
            file=sys.stderr,
        )
        return 2
    configure_logging(settings.observability.log_format, settings.observability.log_level)
    tune_collector()
    try:
        return asyncio.run(_run(settings, args, tracing))
    except FatalError as exc:
        log.error("fatal", error=str(exc), kind=type(exc).__name__)
        print(f"basicsync: {exc}", file=sys.stderr)
        return 2
    finally:
        tracing.shutdown()


async def _run(settings: Settings, args: argparse.Namespace, tracing: Tracing) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handler = stop_on(stop, lambda: os._exit(130))
    # SIGHUP too: a closed terminal or a habit of "kill -HUP" stops the member cleanly, where
    # the default action would end it at once (nothing is lost then, but nothing is handed on).
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, handler)
    loop.add_signal_handler(signal.SIGUSR1, log_task_stacks)
    if args.embedded and (settings.embedded_kafka or settings.embedded_gateway):
        seed = int(time.time())
        plan = DemoPlan(jobs=args.demo_jobs, seed=seed)
        return await run_embedded(
            settings,
            stop,
            plan=plan,
            kafka_port=args.kafka_port,
            display=open_display(settings.observability.log_format, emit=log_progress),
            tracing=tracing,
        )
    endpoints = endpoints_from(settings)
    running = Running(stats=Stats())
    await run_waiting_out_denials(
        lambda board: run_consumer(settings, endpoints, stop, board, tracing=tracing),
        settings,
        stop,
        running,
    )
    return 0 if running.stop_committed else EXIT_LAST_CHECKPOINT_ABANDONED


#: Allocations between two collections of the young generation (Python's default: 700), and
#: young collections per older one (default: 10 each).
COLLECTOR_THRESHOLDS = (50_000, 20, 20)


def tune_collector() -> None:
    """Run the cyclic garbage collector less often.

    The consumer's data is acyclic (job states are tuples, strings and frozen dataclasses, freed
    by reference counting), yet every event allocates dozens of containers, so the default
    thresholds start a collection every few events and an older-generation one, which walks the
    whole store, every few hundred. Measured on the intake of a 5,000-job backlog: 8% less CPU
    per event. Cyclic garbage (asyncio's exceptions and futures) is still collected, later.
    """
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


def missing_endpoints(settings: Settings) -> list[str]:
    """The variables a run against real Kafka and WorkfloPlus needs that are not set (the
    gateway's token URL and credentials are required with its base URL by the settings)."""
    missing = []
    if settings.embedded_kafka:
        missing.append("BASICSYNC_KAFKA__BOOTSTRAP_SERVERS")
    if settings.embedded_gateway:
        missing.append("BASICSYNC_GATEWAY__BASE_URL")
    return missing
