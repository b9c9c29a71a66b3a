"""Benchmark: sandbox basicSync throughput against a bare aiohttp handler that only parses JSON.

    python tests/bench/bench_sandbox.py [--seconds N] [--concurrency C] [--workers W]

Both servers run as separate processes with the same worker count (``SO_REUSEPORT``) and are
driven by the same aiohttp client in this process, with realistic 10-step job documents (about
9 kB) spread over many clientJobIds. It prints requests per second for each and the ratio
sandbox / bare; the target is at least 0.7 with one worker. Because the machine may be shared,
it also prints the servers' CPU time per request (from /proc), whose ratio is what the
throughput ratio would be if both servers were CPU-bound and undisturbed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.synchronize
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from consumer.testing.workfloplus.examples import job_document
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


@dataclass(frozen=True)
class Server:
    url: str
    pids: tuple[int, ...]

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the server's processes (Linux /proc)."""
        ticks = 0
        for pid in self.pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


@contextmanager
def bare_server(workers: int) -> Iterator[Server]:
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
        yield Server(f"http://127.0.0.1:{port}", tuple(p.pid for p in processes if p.pid))
    finally:
        for process in processes:
            process.terminate()
            process.join(5)


@contextmanager
def sandbox_server(workers: int) -> Iterator[Server]:
    command = [
        sys.executable, "-m", "consumer", "sandbox", "--port", "0", "--workers", str(workers),
        "--record-limit", "1000", "--history-limit", "2",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    try:
        url = read_sandbox_url(process, deadline=time.monotonic() + 30)
        yield Server(url, (process.pid,) if workers <= 1 else tuple(_children(process.pid)))
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
) -> int:
    """Requests completed in ``seconds`` with ``concurrency`` requests always in flight."""
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

    await asyncio.gather(*(worker(offset) for offset in range(concurrency)))
    return done


async def run(seconds: float, concurrency: int, workers: int, jobs: int, rounds: int) -> None:
    bodies = [json.dumps(job_document(f"bench-{n}", steps=10)).encode() for n in range(jobs)]
    connector = aiohttp.TCPConnector(limit=concurrency)
    names = ("bare aiohttp handler", "sandbox basicSync")
    requests = dict.fromkeys(names, 0)
    wall = dict.fromkeys(names, 0.0)
    cpu = dict.fromkeys(names, 0.0)
    async with aiohttp.ClientSession(connector=connector) as session:
        with bare_server(workers) as bare, sandbox_server(workers) as sandbox:
            headers = {
                "Authorization": f"Bearer {await _token(session, sandbox.url)}",
                "Content-Type": "application/json",
            }
            servers = dict(zip(names, (bare, sandbox), strict=True))
            for server in servers.values():
                url = f"{server.url}/jobs/v1/basicSync"
                await measure(session, url, headers, bodies, 0.5, concurrency)  # warm up
            # Alternate short rounds so drift in the machine's load hits both servers alike.
            for _ in range(rounds):
                for name, server in servers.items():
                    url = f"{server.url}/jobs/v1/basicSync"
                    cpu_before, started = server.cpu_seconds(), time.perf_counter()
                    requests[name] += await measure(
                        session, url, headers, bodies, seconds / rounds, concurrency
                    )
                    wall[name] += time.perf_counter() - started
                    cpu[name] += server.cpu_seconds() - cpu_before
    print(
        f"{len(bodies[0])}-byte 10-step documents, {jobs} jobs, concurrency {concurrency}, "
        f"{workers} worker(s), {seconds:g} s per server in {rounds} alternating rounds"
    )
    rate = {name: requests[name] / wall[name] for name in names}
    cost = {name: cpu[name] / requests[name] * 1e6 for name in names}
    for name in names:
        print(f"{name:>22}: {rate[name]:8.0f} req/s  {cost[name]:6.0f} us server CPU/request")
    print(f"{'ratio':>22}: {rate[names[1]] / rate[names[0]]:8.2f} (target >= 0.7)")
    print(f"{'CPU-bound ratio':>22}: {cost[names[0]] / cost[names[1]]:8.2f} (bare / sandbox cost)")


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
