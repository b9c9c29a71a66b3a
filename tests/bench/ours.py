"""Ours: ``python -m consumer run`` as the measured child, its state size and its restore rate.

The consumer gets the product's default sync settings (debounce 200 ms, max delay 2 s,
concurrency 32) and its own fresh group, changelog and result topics, created before timing.
After it has converged it is stopped (SIGTERM) and the changelog is read back to size the
state; then it is started again on the same group and the ``state_restored`` log lines give
the restore rate (jobs restored / seconds the restore took).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr

from consumer.config import GatewaySettings, KafkaSettings, Settings, TopicSettings
from consumer.demo import DemoPlan, build_demo
from tests.bench.common import CLIENT_ID, CLIENT_SECRET
from tests.bench.report import RunResult
from tests.bench.runs import Child, Watch, measure_paced, until
from tests.bench.workload import Workload, create_topics, prepare
from tests.integration.harness import consumer_env


async def ours_settings(bootstrap: str, sandbox_url: str, workload: Workload) -> Settings:
    group = f"{workload.prefix}.ours"
    topics = TopicSettings(
        input=workload.inputs,
        succeeded=f"{group}.succeeded",
        failed=f"{group}.failed",
        state=f"{group}.job-state",
    )
    await create_topics(bootstrap, [topics.succeeded, topics.failed], workload.partitions)
    await create_topics(
        bootstrap, [f"{group}.job-state"], workload.partitions, **{"cleanup.policy": "compact"}
    )
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=[bootstrap], group_id=group, create_topics=False),
        topics=topics,
        gateway=GatewaySettings(
            base_url=sandbox_url,
            token_url=f"{sandbox_url}/connect/token",
            client_id=CLIENT_ID,
            client_secret=SecretStr(CLIENT_SECRET),
        ),
    )


def ours_child(settings: Settings, log: Path, name: str = "ours") -> Child:
    env = consumer_env(settings)
    env["BASICSYNC_OBSERVABILITY__LOG_LEVEL"] = "info"
    return Child(name, [sys.executable, "-m", "consumer", "run"], log, env)


async def measure_baseline(settings: Settings, workload: Workload, out: Path) -> float | None:
    """Peak RSS (MB) of ours holding no job: the runtime a job's memory is counted above.

    Ours as measured, on an empty input topic of its own (fresh group and state topics), from
    spawn until its partitions are taken and two seconds more.
    """
    import asyncio

    group = f"{workload.prefix}.idle"
    idle_input = f"{group}.input"
    topics = settings.topics.model_copy(
        update={"input": [idle_input], "succeeded": f"{group}.succeeded",
                "failed": f"{group}.failed", "state": f"{group}.job-state"}
    )  # fmt: skip
    bootstrap = (settings.kafka.bootstrap_servers or [""])[0]
    await create_topics(bootstrap, [idle_input], workload.partitions)
    idle = settings.model_copy(
        update={"topics": topics,
                "kafka": settings.kafka.model_copy(update={"group_id": group,
                                                           "create_topics": True})}
    )  # fmt: skip
    child = ours_child(idle, out / "ours-idle.log", "ours idle")
    child.start()

    async def taken() -> bool:
        return bool(restored(child.log))

    await until(child, taken, within=90)
    await asyncio.sleep(2)
    child.sample()
    child.stop()
    peak: float | None = child.samples.get("peak_rss_mb")
    return peak


async def changelog_size(bootstrap: str, topic: str, partitions: int) -> dict[str, Any]:
    """Bytes of the changelog's live records (latest per key) and of everything on it."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        latest: dict[bytes, int] = {}
        records = total = 0
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=1_000)
            for messages in batch.values():
                for m in messages:
                    size = len(m.key or b"") + len(m.value or b"")
                    records += 1
                    total += size
                    if m.value is None:
                        latest.pop(m.key, None)
                    else:
                        latest[m.key] = size
        return {"records": records, "bytes_total": total, "live_jobs": len(latest),
                "live_bytes": sum(latest.values())}  # fmt: skip
    finally:
        await consumer.stop()


def restored(log: Path) -> list[dict[str, Any]]:
    """The ``state_restored`` events logged so far (JSON log lines)."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if '"state_restored"' in line:
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


async def measure_restore(child: Child, jobs: int, *, within: float) -> dict[str, Any]:
    """Start ``child`` (ours again, same group) and wait for the restore of ``jobs`` jobs."""
    import asyncio

    child.start()
    deadline = time.monotonic() + within
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline and child.alive():
        lines = restored(child.log)
        if sum(int(line.get("jobs", 0)) for line in lines) >= jobs:
            break
        await asyncio.sleep(0.2)
    child.sample()
    child.stop()
    restored_jobs = sum(int(line.get("jobs", 0)) for line in lines)
    seconds = sum(float(line.get("seconds", 0.0)) for line in lines)
    return {
        "ok": restored_jobs >= jobs,
        "jobs": restored_jobs,
        "seconds": seconds,
        "jobs_per_s": restored_jobs / seconds if seconds else None,
        "peak_rss_mb": child.samples.get("peak_rss_mb"),
    }


async def paced_ours(
    bootstrap: str,
    sandbox_url: str,
    watch: Watch,
    *,
    rate: float,
    seconds: float,
    out: Path,
    within: float,
    name: str = "ours paced",
    on_start: Callable[[int], None] | None = None,
) -> RunResult:
    """Ours under live traffic at ``rate`` events/s for about ``seconds``: the latency goal.
    ``on_start`` gets ours' pid as soon as it runs (a profiler)."""
    workload = await paced_workload(bootstrap, rate, seconds, name)
    settings = await ours_settings(bootstrap, sandbox_url, workload)
    child = ours_child(settings, out / f"{slug(name)}.log", name)
    return await measure_paced(child, watch, workload, rate=rate, within=within, on_start=on_start)


async def paced_workload(bootstrap: str, rate: float, seconds: float, name: str) -> Workload:
    """Fresh input topics and the demo jobs that ``rate`` events/s fill for ``seconds``, not
    yet produced."""
    probe = build_demo(DemoPlan(jobs=10))
    events_per_job = len(probe.events) / 10
    jobs = max(10, int(rate * seconds / events_per_job))
    return await prepare(bootstrap, jobs, produce=False, tag=slug(name).removeprefix("ours"))


def slug(name: str) -> str:
    return name.replace(" ", "-").replace("/", "of")
