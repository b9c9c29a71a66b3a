"""``basicsync sandbox``: run the WorkfloPlus sandbox until interrupted.

Once listening it prints one line, ``sandbox listening on http://HOST:PORT``, and flushes, so
a parent process can read the URL (``--port 0`` picks a free port).

``--workers N`` (N > 1) starts N processes that share the port through ``SO_REUSEPORT`` so the
kernel spreads connections among them; it is for throughput benchmarks only. Tokens are signed
with a key the workers share, so any worker accepts a token another issued, but jobs, recorded
requests, overlap counters, faults, outages and revocations are per process, and a
``/_sandbox`` call reaches whichever worker accepts its connection.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import multiprocessing.synchronize
import signal
import socket
import sys
from collections.abc import Sequence
from multiprocessing.process import BaseProcess

from consumer.testing.workfloplus.server import run_sandbox
from consumer.testing.workfloplus.settings import SandboxSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Every option says its default in --help.
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    defaults = SandboxSettings()
    parser.add_argument("--host", default=defaults.host, help="address to listen on")
    parser.add_argument("--port", type=int, default=8081, help="port; 0 picks a free port")
    parser.add_argument(
        "--client-id", default=defaults.client_id, help="the one M2M client the sandbox knows"
    )
    parser.add_argument(
        "--client-secret", default=defaults.client_secret, help="that client's secret"
    )
    parser.add_argument(
        "--scopes",
        default=" ".join(defaults.scopes),
        help="space-separated scopes the client may be granted",
    )
    parser.add_argument(
        "--token-lifetime",
        type=int,
        default=defaults.token_lifetime_s,
        metavar="SECONDS",
        help="lifetime of the access tokens it issues",
    )
    parser.add_argument(
        "--record-limit",
        type=int,
        default=defaults.record_limit,
        metavar="N",
        help="recorded requests kept for inspection (the oldest are dropped first)",
    )
    parser.add_argument(
        "--history-limit",
        type=int,
        default=defaults.history_limit,
        metavar="N",
        help="accepted versions kept per job (the oldest are dropped first)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes sharing the port (throughput benchmarks only)",
    )


def settings_from(args: argparse.Namespace) -> SandboxSettings:
    return SandboxSettings(
        host=args.host,
        port=args.port,
        client_id=args.client_id,
        client_secret=args.client_secret,
        scopes=tuple(args.scopes.split()),
        token_lifetime_s=args.token_lifetime,
        record_limit=args.record_limit,
        history_limit=args.history_limit,
        reuse_port=args.workers > 1,
    )


def main(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.workers <= 1:
        asyncio.run(_serve(settings, announce=True))
        return 0
    return _run_workers(settings, args.workers)


def _tune_gc() -> None:
    """Each request allocates a few hundred short-lived containers (the validated document);
    collecting the young generation less often, and never scanning the start-up objects,
    cuts the sandbox's per-request cost without letting garbage pile up."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


async def _serve(settings: SandboxSettings, *, announce: bool) -> None:
    _tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with run_sandbox(settings) as sandbox:
        if announce:
            print(f"sandbox listening on {sandbox.base_url}", flush=True)
        await stop.wait()


def _worker(settings: SandboxSettings, ready: multiprocessing.synchronize.Event) -> None:
    async def serve() -> None:
        _tune_gc()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with run_sandbox(settings):
            ready.set()
            await stop.wait()

    asyncio.run(serve())


def _run_workers(settings: SandboxSettings, workers: int) -> int:
    # Reserve the port (bound, not listening, so it never takes connections) until every
    # worker has bound its own SO_REUSEPORT socket to it.
    reservation = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reservation.bind((settings.host, settings.port))
    settings = settings.model_copy(update={"port": reservation.getsockname()[1]})
    context = multiprocessing.get_context("spawn")
    processes = []
    for _ in range(workers):
        ready = context.Event()
        process = context.Process(target=_worker, args=(settings, ready), daemon=True)
        process.start()
        processes.append((process, ready))
    for process, ready in processes:
        while not ready.wait(0.1):
            if not process.is_alive():
                print("sandbox worker failed to start", file=sys.stderr)
                _terminate(processes)
                return 1
    reservation.close()
    print(f"sandbox listening on http://{settings.host}:{settings.port}", flush=True)
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stopping and all(process.is_alive() for process, _ in processes):
        processes[0][0].join(0.2)
    _terminate(processes)
    return 0 if stopping else 1


def _terminate(processes: Sequence[tuple[BaseProcess, object]]) -> None:
    for process, _ in processes:
        if process.is_alive():
            process.terminate()
    for process, _ in processes:
        process.join(5)
