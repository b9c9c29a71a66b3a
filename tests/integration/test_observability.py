"""The HTTP endpoints of a running consumer: real broker, the sandbox in process, a gateway
outage that opens and closes the circuit."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer.config import Settings
from consumer.demo import DemoPlan, build_demo
from consumer.kafka.diagnose import NO_KAFKA_ANSWER
from consumer.testing.workfloplus import Sandbox
from tests.integration.harness import (
    MakeTopic,
    basicsync,
    broker_hung,
    broker_pid,
    consumer_process,
    consumer_running,
    eventually,
    eventually_async,
    free_port,
    log_events,
    new_topics,
    produce,
    read_records,
    readiness,
    scraped,
    settings_for,
    tail,
    wait_converged,
)

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def with_http_port(settings: Settings, port: int = 0) -> Settings:
    observability = settings.observability.model_copy(update={"http_port": port})
    return settings.model_copy(update={"observability": observability})


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def scrape(http: aiohttp.ClientSession, url: str) -> Samples:
    """Every sample of ``/metrics`` by (name, sorted labels)."""
    async with http.get(url) as response:
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def until(check: Callable[[], Awaitable[bool]], *, within: float, what: str) -> None:
    if not await eventually_async(check, within=within):
        raise AssertionError(f"not within {within}s: {what}")


class TestCircuitOnTheEndpoints:
    async def test_readiness_and_metrics_follow_the_circuit_through_an_outage(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """/readyz is 200 once partitions are restored; a gateway outage opens the circuit,
        so /readyz answers 503 naming the circuit and basicsync_circuit_state{state="closed"}
        is 0 with all partitions counted paused; after the outage both return to 200 and
        closed, with no partition paused. /metrics counts requests by outcome and status and
        shows consumer lag per input partition; /healthz answers throughout."""
        topics = await new_topics(make_topic, partitions=2)
        # Two disjoint sets of jobs: the outage begins only once the first set is synced and
        # nothing is in flight, so no post is caught mid-outage with a recent success behind
        # it (which is one job's trouble, retried per job, and would never open the circuit).
        before = build_demo(DemoPlan(jobs=20, seed=23))
        during_outage = build_demo(DemoPlan(jobs=20, seed=24))
        every_event = [*before.events, *during_outage.events]
        expected = {**before.expected, **during_outage.expected}
        # Short-lived tokens: the outage hits the token endpoint too, which is everyone's
        # trouble at once (docs/design-notes.md §7, row 1); a short evidence window so that a
        # basicSync failure with no success for 2 s is judged systemic as well.
        sandbox_in_process.faults.update({"token_lifetime_s": 2})
        settings = with_http_port(
            settings_for(kafka_bootstrap, sandbox_in_process, topics, diagnosis_window_s=2.0)
        )
        async with (
            consumer_running(settings) as (running, task),
            aiohttp.ClientSession() as http,
        ):
            await until(
                lambda: _async(running.http_port is not None), within=30, what="HTTP port bound"
            )
            base = f"http://127.0.0.1:{running.http_port}"

            async def ready_is(status: int) -> bool:
                return (await get_json(http, f"{base}/readyz"))[0] == status

            await until(lambda: ready_is(200), within=30, what="/readyz 200 after restore")
            await produce(kafka_bootstrap, topics.inputs, before.events)
            await wait_converged(sandbox_in_process, before.expected, within=60, consumer=task)

            # The new events come once the 2 s token has expired and the last success is older
            # than the 2 s evidence window: their posts need a token, the token endpoint is
            # down too, and that is everyone's trouble (systemic), so the circuit opens.
            await sandbox_in_process.outage(15, "503")
            await asyncio.sleep(2.5)
            await produce(kafka_bootstrap, topics.inputs, during_outage.events)
            await until(lambda: ready_is(503), within=30, what="/readyz 503 during the outage")
            status, body = await get_json(http, f"{base}/readyz")
            health_status, health = await get_json(http, f"{base}/healthz")
            during = await scrape(http, f"{base}/metrics")

            await wait_converged(sandbox_in_process, expected, within=90, consumer=task)
            await until(lambda: ready_is(200), within=30, what="/readyz 200 after the outage")
            after = await scrape(http, f"{base}/metrics")

        assert status == 503
        assert "circuit" in body["failing"]
        assert body["checks"]["circuit"]["ok"] is False
        assert body["checks"]["circuit"]["detail"] in ("open", "half_open")
        assert body["checks"]["partitions"]["ok"] is True
        assert health_status == 200
        assert health["status"] == "alive"
        assert during[("basicsync_circuit_state", (("state", "closed"),))] == 0
        open_or_probing = [("state", "open"), ("state", "half_open")]
        assert sum(during[("basicsync_circuit_state", (s,))] for s in open_or_probing) == 1
        assert during[("basicsync_partitions_paused", ())] == 2

        assert after[("basicsync_circuit_state", (("state", "closed"),))] == 1
        assert after[("basicsync_partitions_paused", ())] == 0
        assert after[("basicsync_circuit_openings_total", ())] >= 1
        accepted = (("outcome", "accepted"), ("status", "200"))
        # The outage takes the token endpoint down, so the failed attempts never reached
        # basicSync: they count as retryable with no HTTP status of their own. How many fail
        # before the circuit opens depends on how many were under way (two, or more).
        retryable = (("outcome", "retryable"), ("status", "none"))
        assert after[("basicsync_sync_requests_total", accepted)] >= len(expected)
        assert after[("basicsync_sync_requests_total", retryable)] >= 1
        assert after[("basicsync_sync_retries_total", ())] >= 1
        assert after[("basicsync_events_consumed_total", ())] == len(every_event)
        assert after[("basicsync_event_to_sync_seconds_count", ())] >= len(expected)
        assert after[("basicsync_sync_request_seconds_count", ())] >= len(expected)
        # Every request that left had its intent committed first, through the real broker.
        requests = sum(v for (n, _), v in after.items() if n == "basicsync_sync_requests_total")
        assert after[("basicsync_intent_commit_seconds_count", ())] >= requests
        lag = {
            labels: value
            for (name, labels), value in after.items()
            if name == "basicsync_consumer_lag"
        }
        assert {dict(labels)["partition"] for labels in lag} == {"0", "1"}
        assert {dict(labels)["topic"] for labels in lag} == set(topics.inputs)
        assert all(value == 0 for value in lag.values()), lag
        assert after[("basicsync_partitions_owned", ())] == 2
        assert after[("basicsync_state_jobs", ())] == len(expected)


async def _async(value: bool) -> bool:
    return value


class TestTaskDump:
    async def test_sigusr1_logs_every_task_and_the_member_goes_on(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Any,
    ) -> None:
        """``kill -USR1`` on a running ``basicsync run``: one ``tasks_dumped`` line names
        every task (the consume loop and the scheduler among them) with its stack, and the
        member goes on: jobs sent after it converge."""
        topics = await new_topics(make_topic, partitions=1)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        demo = build_demo(DemoPlan(jobs=5, seed=73, prefix="task-dump"))
        log = str(tmp_path / "consumer.log")
        async with consumer_process(settings, log) as member:
            started = await eventually(lambda: bool(log_events(log, "consumer_started")), within=60)
            assert started, tail(log)
            member.send_signal(signal.SIGUSR1)
            assert await eventually(lambda: bool(log_events(log, "tasks_dumped")), within=10)
            [dump] = log_events(log, "tasks_dumped")
            names = {task["name"] for task in dump["tasks"]}
            assert {"consume", "scheduler"} <= names, names
            assert all(task["stack"].startswith("Stack for") for task in dump["tasks"])
            await produce(kafka_bootstrap, topics.inputs, demo.events)
            await wait_converged(sandbox_in_process, demo.expected, within=60)

    async def test_a_dump_and_a_check_while_the_broker_hangs(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Any,
    ) -> None:
        """The broker SIGSTOPped under a running member, the moment an operator reaches for
        these tools: ``kill -USR1`` still logs the tasks (the dump needs no Kafka), and
        ``basicsync check --timeout 2`` ends with exit 3 in a few seconds, saying that TCP
        connects but Kafka does not answer (before: "TimeoutError; caused by
        CancelledError"). Once the broker goes on, so does the member."""
        topics = await new_topics(make_topic, partitions=1)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        first = build_demo(DemoPlan(jobs=4, seed=74, prefix="hung-first"))
        then = build_demo(DemoPlan(jobs=4, seed=75, prefix="hung-then"))
        log = str(tmp_path / "consumer.log")
        async with consumer_process(settings, log) as member:
            await produce(kafka_bootstrap, topics.inputs, first.events)
            await wait_converged(sandbox_in_process, first.expected, within=60)
            async with broker_hung(broker_pid(kafka_bootstrap)):
                member.send_signal(signal.SIGUSR1)
                dumped = await eventually(lambda: bool(log_events(log, "tasks_dumped")), within=10)
                assert dumped, tail(log)
                started = asyncio.get_running_loop().time()
                checked = await basicsync(settings, "check", "--skip-gateway", "--timeout", "2")
                took = asyncio.get_running_loop().time() - started
            assert checked.code == 3, checked.out + checked.err
            assert f"FAIL  kafka: cannot reach {kafka_bootstrap}: " in checked.out, checked.out
            assert NO_KAFKA_ANSWER in checked.out, checked.out
            assert "CancelledError" not in checked.out, checked.out
            assert took < 15, took
            await produce(kafka_bootstrap, topics.inputs, then.events)
            await wait_converged(sandbox_in_process, then.expected, within=90)


class TestKafkaHung:
    async def test_a_broker_hung_past_the_report_is_named_once_and_the_member_heals(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Any,
    ) -> None:
        """The broker SIGSTOPped under a running member for longer than
        ``BASICSYNC_KAFKA__UNREACHABLE_REPORT_S`` (3 s here): the member logs
        ``kafka_unreachable`` once, whose cause says that TCP connects but Kafka does not
        answer (a broker that hangs, not one that is down or refuses us), and readiness's
        ``kafka`` check and the gauge say so while it lasts. Once the broker goes on, the
        member logs ``kafka_reachable_again``, readiness recovers, the jobs sent after the
        hang converge with no failure record, and the member stops cleanly."""
        topics = await new_topics(make_topic, partitions=2)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        first = build_demo(DemoPlan(jobs=6, seed=76, prefix="hung-long-first"))
        then = build_demo(DemoPlan(jobs=6, seed=77, prefix="hung-long-then"))
        log, port = str(tmp_path / "consumer.log"), free_port()
        extra = {
            "BASICSYNC_OBSERVABILITY__HTTP_PORT": str(port),
            "BASICSYNC_KAFKA__UNREACHABLE_REPORT_S": "3",
        }
        async with consumer_process(settings, log, extra):
            await produce(kafka_bootstrap, topics.inputs, first.events)
            await wait_converged(sandbox_in_process, first.expected, within=60)
            async with broker_hung(broker_pid(kafka_bootstrap)):
                reported = await eventually(
                    lambda: bool(log_events(log, "kafka_unreachable")), within=30
                )
                assert reported, tail(log)
                hung = await readiness(port)
                unreachable_gauge = await scraped(port, "basicsync_kafka_unreachable")
                await asyncio.sleep(6)  # more probes go unanswered: said once all the same
            await produce(kafka_bootstrap, topics.inputs, then.events)
            await wait_converged(sandbox_in_process, then.expected, within=90)
            healed = await eventually(
                lambda: bool(log_events(log, "kafka_reachable_again")), within=30
            )
            assert healed, tail(log)
            assert await eventually_async(lambda: _kafka_ready(port), within=15), tail(log)
            assert await scraped(port, "basicsync_kafka_unreachable") == 0
        [unreachable] = log_events(log, "kafka_unreachable")
        assert NO_KAFKA_ANSWER in unreachable["cause"], unreachable
        assert hung is not None
        assert hung["checks"]["kafka"]["ok"] is False, hung
        assert NO_KAFKA_ANSWER in hung["checks"]["kafka"]["detail"], hung
        assert unreachable_gauge == 1
        [again] = log_events(log, "kafka_reachable_again")
        assert again["unreachable_s"] >= 3, again
        assert await read_records(kafka_bootstrap, topics.failed) == []


async def _kafka_ready(port: int) -> bool:
    body = await readiness(port)
    return body is not None and body["checks"]["kafka"]["ok"] is True
