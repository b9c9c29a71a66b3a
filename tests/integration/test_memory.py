"""A member whose partitions' state does not fit in its memory limit says so at restore.

``basicsync run`` as a subprocess with ``BASICSYNC_STORE__MEMORY_LIMIT_MB`` below what it holds
after reading the changelog: it must not be killed, must not post, must log
``state_exceeds_memory`` and count it in ``/metrics``, turn ``/healthz`` red once the stall limit
passed, and a member with room must then take the same partitions and finish the work.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from consumer.demo import DemoPlan, build_demo
from consumer.testing.workfloplus import Sandbox
from tests.integration.harness import (
    MakeTopic,
    consumer_process,
    free_port,
    log_events,
    new_topics,
    produce,
    settings_for,
    start_consumer_process,
    tail,
    wait_converged,
)

pytestmark = pytest.mark.integration


def _sample(exposition: str, name: str) -> float:
    """The value of an unlabelled sample in a Prometheus text exposition (-1: absent)."""
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return -1.0


class TestMemoryLimit:
    async def test_a_restore_past_the_limit_is_refused_said_and_left_to_a_member_with_room(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=40, seed=91))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)

        # A first member builds the changelog.
        async with consumer_process(settings, str(tmp_path / "first.log")):
            await wait_converged(sandbox_in_process, demo.expected, within=90)
        posts_before = sum(len(j.history) for j in sandbox_in_process.state.jobs.values())

        # More work arrives; the next member's limit is below what its runtime alone takes.
        more = build_demo(DemoPlan(jobs=40, seed=92))
        await produce(kafka_bootstrap, topics.inputs, more.events)
        port = free_port()
        small_log = tmp_path / "small.log"
        small = start_consumer_process(
            settings,
            str(small_log),
            {
                "BASICSYNC_STORE__MEMORY_LIMIT_MB": "32",
                "BASICSYNC_OBSERVABILITY__HTTP_PORT": str(port),
                "BASICSYNC_OBSERVABILITY__STALL_LIMIT_S": "3",
            },
        )
        try:
            base = f"http://127.0.0.1:{port}"
            health: list[int] = []
            metrics = ""
            async with aiohttp.ClientSession() as http:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and small.poll() is None:
                    try:
                        async with http.get(f"{base}/healthz") as response:
                            health.append(response.status)
                        async with http.get(f"{base}/metrics") as response:
                            metrics = await response.text()
                    except aiohttp.ClientError:
                        pass
                    if (
                        health
                        and health[-1] == 503
                        and log_events(small_log, "state_exceeds_memory")
                    ):
                        break
                    await asyncio.sleep(0.5)
            assert small.poll() is None, "the member died instead of refusing: " + tail(
                str(small_log)
            )
            refusals = log_events(small_log, "state_exceeds_memory")
            assert refusals, tail(str(small_log))
            assert "32 MiB limit" in str(refusals[0]["error"])
            assert "raise the memory limit" in str(refusals[0]["action"])
            assert health, "the health endpoint never answered"
            assert health[-1] == 503, health
            assert _sample(metrics, "basicsync_restore_refusals_total") >= 1, metrics[-2000:]
            assert _sample(metrics, "basicsync_memory_limit_bytes") == 32 * 2**20
            posted = sum(len(j.history) for j in sandbox_in_process.state.jobs.values())
            assert posted == posts_before, "a member that holds no state posted"
        finally:
            small.send_signal(signal.SIGTERM)
            await asyncio.to_thread(small.wait, 60)

        # A member with room takes the same partitions and finishes the work.
        roomy_log = tmp_path / "roomy.log"
        async with consumer_process(
            settings, str(roomy_log), {"BASICSYNC_STORE__MEMORY_LIMIT_MB": "4096"}
        ):
            await wait_converged(sandbox_in_process, {**demo.expected, **more.expected}, within=90)
            assert not log_events(roomy_log, "state_exceeds_memory")
