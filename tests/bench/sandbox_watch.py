"""The benchmark's WorkfloPlus: the real sandbox plus a cheap convergence watch, one process.

    python -m tests.bench.sandbox_watch [--port 0]

Prints ``sandbox listening on URL`` and ``watch listening on URL`` and serves until SIGTERM.
The sandbox is the product's own (``run_sandbox``, one worker, no request log, one version of
history per job, so memory stays bounded); the watch is a second small HTTP server in the same
event loop that reads the sandbox's state directly, so polling for convergence costs the
measured process nothing and the sandbox almost nothing:

| method and path | effect |
| --- | --- |
| ``PUT /watch/expect`` | ``{clientJobId: sha256 of the expected body bytes}``; clears counters |
| ``GET /watch/progress`` | ``{"jobs", "converged", "requests", "accepted", "last_at"}`` |
| ``GET /watch/converged`` | ``{clientJobId: epoch seconds the final body was accepted}`` |
| ``GET /watch/wrong`` | ``{clientJobId: last accepted body}`` for jobs not converged (few) |

Each accepted body is hashed once when the sandbox stores it (about 10 us for a 9 kB body);
a job has converged while its last accepted body hashes to the expected value. Bodies are
compared as bytes: every run here posts compact JSON in the document's key order.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from consumer.testing.workfloplus import SandboxSettings, run_sandbox
from consumer.testing.workfloplus.api_routes import BASIC_SYNC_PATH
from consumer.testing.workfloplus.server import Sandbox
from consumer.testing.workfloplus.state import Outcome, Record


@dataclass
class Watch:
    """What the benchmark needs to know of one run, updated as the sandbox works."""

    expected: dict[str, str] = field(default_factory=dict)
    converged_at: dict[str, float] = field(default_factory=dict)
    requests: int = 0
    accepted: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    last_at: float = 0.0

    def stored(self, client_job_id: str, body: bytes) -> None:
        now = time.time()
        self.accepted += 1
        self.last_at = now
        if hashlib.sha256(body).hexdigest() == self.expected.get(client_job_id):
            self.converged_at[client_job_id] = now
        else:
            self.converged_at.pop(client_job_id, None)

    def recorded(self, record: Record) -> None:
        if record.path == BASIC_SYNC_PATH:
            self.requests += 1
            self.statuses[record.status] = self.statuses.get(record.status, 0) + 1


def instrument(sandbox: Sandbox, watch: Watch) -> None:
    """Wrap the sandbox state's ``store`` and ``record`` so every request updates ``watch``."""
    state = sandbox.state
    store, keep = state.store, state.record

    def watched_store(client_job_id: str, status: str | None, body: bytes) -> Outcome:
        outcome = store(client_job_id, status, body)
        watch.stored(client_job_id, body)
        return outcome

    def watched_record(record: Record) -> None:
        keep(record)
        watch.recorded(record)

    state.store = watched_store  # type: ignore[method-assign]
    state.record = watched_record  # type: ignore[method-assign]


def watch_app(sandbox: Sandbox, holder: list[Watch]) -> web.Application:
    def reply(payload: Any) -> web.Response:
        return web.Response(body=json.dumps(payload).encode(), content_type="application/json")

    async def expect(request: web.Request) -> web.Response:
        await sandbox.reset()
        holder[0].expected = json.loads(await request.read())
        holder[0].converged_at.clear()
        holder[0].requests = holder[0].accepted = 0
        holder[0].statuses.clear()
        holder[0].last_at = 0.0
        return reply({"jobs": len(holder[0].expected)})

    async def progress(request: web.Request) -> web.Response:
        watch = holder[0]
        return reply(
            {
                "jobs": len(watch.expected),
                "converged": len(watch.converged_at),
                "requests": watch.requests,
                "accepted": watch.accepted,
                "statuses": {str(k): v for k, v in watch.statuses.items()},
                "last_at": watch.last_at,
            }
        )

    async def converged(request: web.Request) -> web.Response:
        return reply(holder[0].converged_at)

    async def wrong(request: web.Request) -> web.Response:
        watch = holder[0]
        found: dict[str, Any] = {}
        for job in watch.expected:
            if job in watch.converged_at:
                continue
            found[job] = sandbox.state.document(job)
            if len(found) >= 20:
                break
        return reply(found)

    app = web.Application(client_max_size=256 * 1024 * 1024)  # expected digests of 100k jobs
    app.router.add_put("/watch/expect", expect)
    app.router.add_get("/watch/progress", progress)
    app.router.add_get("/watch/converged", converged)
    app.router.add_get("/watch/wrong", wrong)
    return app


async def serve(port: int) -> None:
    # As ``basicsync sandbox`` does (consumer/testing/workfloplus/command.py): fewer young-gen
    # collections, start-up objects frozen, so this sandbox is as fast as the real command.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    settings = SandboxSettings(port=port, record_limit=0, history_limit=1)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    holder = [Watch()]
    async with run_sandbox(settings) as sandbox:
        instrument(sandbox, holder[0])
        runner = web.AppRunner(watch_app(sandbox, holder), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        watch_port = runner.addresses[0][1]
        print(f"sandbox listening on {sandbox.base_url}", flush=True)
        print(f"watch listening on http://127.0.0.1:{watch_port}", flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
