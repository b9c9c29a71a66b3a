"""Benchmark: sandbox basicSync throughput against a bare aiohttp handler that only parses JSON.

    python tests/bench/bench_sandbox.py [--seconds N] [--concurrency C] [--workers W]

Both servers run as separate processes with the same worker count (``SO_REUSEPORT``) and are
driven by the same aiohttp client in this process, with realistic 10-step job documents (about
9 kB) spread over many clientJobIds. It prints requests per second for each and the ratio
sandbox / bare; the target is at least 0.7 with one worker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.synchronize
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from consumer.sandbox.examples import job_document
from tests.fixtures.sandbox import read_sandbox_url


async def _bare_handler(request: web.Request) -> web.Response:
    json.loads(await request.read())
    return web.Response(body=b'{"ok":true}', content_type="application/json")


def _serve_bare(port: int, ready: multiprocessing.synchronize.Event) -> None:
    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/jobs/v1/basicSync", _bare_handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(serve())


@contextmanager
def bare_server(workers: int) -> Iterator[str]:
    reservation = socket.socket()
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reservation.bind(("127.0.0.1", 0))
    port = reservation.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    processes = []
    for _ in range(workers):
        ready = context.Event()
        process = context.Process(target=_serve_bare, args=(port, ready), daemon=True)
        process.start()
        ready.wait(30)
        processes.append(process)
    reservation.close()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for process in processes:
            process.terminate()
            process.join(5)


@contextmanager
def sandbox_server(workers: int) -> Iterator[str]:
    command = [
        sys.executable, "-m", "consumer", "sandbox", "--port", "0", "--workers", str(workers),
        "--record-limit", "1000", "--history-limit", "2",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    try:
        yield read_sandbox_url(process, deadline=time.monotonic() + 30)
    finally:
        process.terminate()
        process.wait(10)
        assert process.stdout is not None
        process.stdout.close()


async def _token(session: aiohttp.ClientSession, base_url: str) -> str:
    form = {
        "grant_type": "client_credentials",
        "client_id": "sandbox-client",
        "client_secret": "sandbox-secret",
    }
    async with session.post(f"{base_url}/connect/token", data=form) as response:
        token: str = (await response.json())["access_token"]
        return token


async def measure(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    bodies: list[bytes],
    seconds: float,
    concurrency: int,
) -> float:
    """Requests per second over ``seconds`` with ``concurrency`` requests always in flight."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal done
        index = offset
        while time.perf_counter() < deadline:
            body = bodies[index % len(bodies)]
            index += concurrency
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url}: HTTP {response.status}")
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(offset) for offset in range(concurrency)))
    return done / (time.perf_counter() - started)


async def run(seconds: float, concurrency: int, workers: int, jobs: int, rounds: int) -> None:
    bodies = [json.dumps(job_document(f"bench-{n}", steps=10)).encode() for n in range(jobs)]
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        with bare_server(workers) as bare_url, sandbox_server(workers) as sandbox_url:
            headers = {
                "Authorization": f"Bearer {await _token(session, sandbox_url)}",
                "Content-Type": "application/json",
            }
            targets = {
                "bare aiohttp handler": f"{bare_url}/jobs/v1/basicSync",
                "sandbox basicSync": f"{sandbox_url}/jobs/v1/basicSync",
            }
            for url in targets.values():
                await measure(session, url, headers, bodies, 0.5, concurrency)  # warm up
            # Alternate short rounds so drift in the machine's load hits both servers alike.
            rates: dict[str, list[float]] = {name: [] for name in targets}
            for _ in range(rounds):
                for name, url in targets.items():
                    share = seconds / rounds
                    rates[name].append(
                        await measure(session, url, headers, bodies, share, concurrency)
                    )
    results = {name: sum(values) / len(values) for name, values in rates.items()}
    print(
        f"{len(bodies[0])}-byte 10-step documents, {jobs} jobs, concurrency {concurrency}, "
        f"{workers} worker(s), {seconds:g} s per server in {rounds} alternating rounds"
    )
    for name, rate in results.items():
        print(f"{name:>22}: {rate:8.0f} req/s")
    ratio = results["sandbox basicSync"] / results["bare aiohttp handler"]
    print(f"{'ratio':>22}: {ratio:8.2f} (target >= 0.7)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(run(args.seconds, args.concurrency, args.workers, args.jobs, args.rounds))


if __name__ == "__main__":
    main()
