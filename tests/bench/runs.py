"""Running one measured process and turning what the sandbox watch saw into a ``RunResult``.

Every run is a child process (so its peak RSS and CPU are its own), started from a fresh
consumer group; the clock starts when it is spawned and stops when the sandbox has accepted
every job's final document (ceiling A: when the child reports it has read every event).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.bench.common import RESULT_PREFIX, cpu_seconds, peak_rss_bytes
from tests.bench.report import RunResult, percentiles
from tests.bench.workload import Workload, produce_paced


@dataclass
class Watch:
    """HTTP client of the sandbox watch (``tests.bench.sandbox_watch``)."""

    url: str
    session: aiohttp.ClientSession
    #: the broker, for runs stopped at their time limit (their committed offsets)
    bootstrap: str = ""

    async def _get(self, path: str) -> Any:
        async with self.session.get(f"{self.url}{path}") as response:
            response.raise_for_status()
            return await response.json()

    async def expect(self, digests: dict[str, str]) -> None:
        """Reset the sandbox and start watching for these final documents."""
        async with self.session.put(f"{self.url}/watch/expect", json=digests) as response:
            response.raise_for_status()

    async def progress(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._get("/watch/progress")
        return result

    async def converged_at(self) -> dict[str, float]:
        result: dict[str, float] = await self._get("/watch/converged")
        return result

    async def wrong(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._get("/watch/wrong")
        return result


@dataclass
class Child:
    """A measured child process and its log."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    samples: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.started = time.time()
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def result_line(self) -> dict[str, Any] | None:
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith(RESULT_PREFIX):
                found: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
                return found
        return None

    def sample(self) -> None:
        """Peak RSS and CPU so far (call just before stopping it)."""
        rss, cpu = peak_rss_bytes(self.pid), cpu_seconds(self.pid)
        if rss is not None:
            self.samples["peak_rss_mb"] = rss / 1e6
        if cpu is not None:
            self.samples["cpu_seconds"] = cpu

    def stop(self, within: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(within)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


async def until(
    child: Child, done: Any, *, within: float, every: float = 0.2, exits: bool = False
) -> bool:
    """Poll ``await done()`` until true; False on timeout or when the child dies unasked."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await done():
            return True
        if not child.alive() and not exits:
            return bool(await done())
        await asyncio.sleep(every)
    return False


async def measure_posting(
    child: Child,
    watch: Watch,
    workload: Workload,
    *,
    within: float,
    on_start: Callable[[int], None] | None = None,
    group: str | None = None,
) -> RunResult:
    """Start ``child``, wait until every job has converged in the sandbox (the caller stops
    it); ``on_start`` gets its pid as soon as it runs."""
    await watch.expect(workload.digests())
    child.start()
    if on_start is not None:
        on_start(child.pid)

    async def converged() -> bool:
        return bool((await watch.progress())["converged"] >= workload.jobs)

    ok = await until(child, converged, within=within)
    child.sample()
    progress = await watch.progress()
    result = await posting_result(child, watch, workload, ok, progress)
    if not ok and group is not None and child.alive():
        # Stopped at the time limit: its throughput is the input it has committed so far.
        elapsed = time.time() - child.started
        committed = await committed_events(watch.bootstrap, group)
        result.extra.update(
            committed_events=committed,
            elapsed_s=elapsed,
            projected_events_per_s=committed / elapsed if committed else None,
        )
        result.note = (
            f"stopped at {within:g} s limit: {committed}/{workload.events} events committed, "
            f"{result.converged}/{workload.jobs} jobs converged; events/s = committed rate"
        )
    return result


async def measure_paced(
    child: Child,
    watch: Watch,
    workload: Workload,
    *,
    rate: float,
    within: float,
    on_start: Callable[[int], None] | None = None,
) -> RunResult:
    """``child`` under live traffic: started, and given its partitions, before the first of the
    ``workload``'s events is sent at ``rate`` events/s (the producer shares the machine, which a
    backlog run avoids). Latency is from each job's last event's record timestamp;
    ``on_start`` gets the child's pid as soon as it runs."""
    await watch.expect(workload.digests())
    child.start()
    if on_start is not None:
        on_start(child.pid)
    deadline = time.monotonic() + 60
    while '"partitions_assigned"' not in child.log.read_text(errors="replace"):
        if time.monotonic() > deadline or not child.alive():
            child.stop()
            return RunResult(child.name, ok=False, note="never got its partitions")
        await asyncio.sleep(0.1)
    await produce_paced(watch.bootstrap, workload, rate)

    async def converged() -> bool:
        return bool((await watch.progress())["converged"] >= workload.jobs)

    ok = await until(child, converged, within=within)
    child.sample()
    result = await posting_result(child, watch, workload, ok, await watch.progress())
    child.stop()
    result.extra["offered_events_per_s"] = rate
    result.extra["achieved_produce_events_per_s"] = workload.events / workload.produce_seconds
    result.note = (result.note + f" offered {rate:.0f} ev/s; latency from event time").strip()
    # Throughput here is the offered rate, not a capacity: report it as such.
    return result


async def committed_events(bootstrap: str, group: str) -> int:
    """Sum of the group's committed offsets over all its partitions."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(max(0, meta.offset) for meta in offsets.values())


async def posting_result(
    child: Child, watch: Watch, workload: Workload, ok: bool, progress: dict[str, Any]
) -> RunResult:
    at = await watch.converged_at()
    latency = [
        (when - max(workload.event_time.get(job, 0.0), child.started)) * 1000
        for job, when in at.items()
    ]
    result = RunResult(
        name=child.name,
        ok=ok,
        seconds=(max(at.values()) - child.started) if at else None,
        events=workload.events,
        jobs=workload.jobs,
        converged=len(at),
        requests=progress["requests"],
        latency_ms=percentiles(latency),
        peak_rss_mb=child.samples.get("peak_rss_mb"),
        cpu_seconds=child.samples.get("cpu_seconds"),
        extra={"statuses": progress["statuses"]},
    )
    if not ok:
        wrong = await watch.wrong()
        result.note = f"{len(at)}/{workload.jobs} converged; see {child.log.name}"
        result.extra["not_converged_sample"] = dict(list(wrong.items())[:2])
        result.extra["log_tail"] = child.tail()
    return result


async def measure_consume(child: Child, workload: Workload, *, within: float) -> RunResult:
    """Ceiling A: start it, wait for its result line (it exits by itself)."""
    child.start()
    found: dict[str, Any] = {}

    async def reported() -> bool:
        line = child.result_line()
        if line is not None:
            found.update(line)
            child.sample()
        return line is not None

    ok = await until(child, reported, within=within, every=0.05)
    child.stop()
    return RunResult(
        name=child.name,
        ok=ok and found.get("events") == workload.events,
        note="" if ok else f"no result; see {child.log.name}",
        seconds=found["at"] - child.started if found else None,
        events=workload.events,
        jobs=workload.jobs,
        converged=workload.jobs if ok else 0,
        peak_rss_mb=child.samples.get("peak_rss_mb"),
        cpu_seconds=child.samples.get("cpu_seconds"),
    )


def python_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env
