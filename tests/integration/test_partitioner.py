"""Events a producer put on another partition than their key's, read by two members.

A job belongs to the partition its key's murmur2 hash picks (the Java client's default
partitioner). An event that a producer with another partitioner put elsewhere is read by the
member owning *that* partition, which need not hold the job: assembled there alone, it would be
posted over the whole document the job's owner keeps. ``basicsync run`` refuses it instead, as
``misrouted`` with its bytes, and ``basicsync redrive`` puts it where it belongs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from consumer.config import ObservabilitySettings
from consumer.demo import DemoPlan, build_demo
from consumer.domain.events import EventType, JobEvent, encode_structured
from consumer.kafka.partitioning import hashes_to
from consumer.testing.workfloplus import Sandbox
from tests.integration.harness import (
    MakeTopic,
    assert_history_never_shrinks,
    assert_read_to_the_end,
    basicsync,
    consumer_process,
    converged,
    eventually_async,
    final_upserts,
    log_events,
    new_topics,
    produce,
    read_records,
    scraped,
    settings_for,
    start_consumer_process,
    tail,
    until_each_holds,
    wait_converged,
    with_request_timeout,
    with_title,
)

pytestmark = pytest.mark.integration


def _misrouted_upsert(job: str, workflow_id: str) -> JobEvent:
    """An upsert that, assembled alone, could be posted: it has the job's ``workflowId``."""
    return JobEvent.build(
        {
            "id": f"misrouted-{job}",
            "source": "urn:producer-with-another-partitioner",
            "type": EventType.upserted,
            "subject": job,
            "time": datetime(2026, 6, 2, tzinfo=UTC),
            "data": {"workflowId": workflow_id, "jobTitle": "misrouted"},
        }
    )


async def _send_to(bootstrap: str, topic: str, placed: list[tuple[JobEvent, int]]) -> list[bytes]:
    """Each event on the partition given, as a producer with its own partitioner would;
    returns the values sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    values = []
    try:
        for event, partition in placed:
            key, value, headers = encode_structured(event)
            await producer.send_and_wait(
                topic, value=value, key=key, headers=list(headers), partition=partition
            )
            values.append(value)
    finally:
        await producer.stop()
    return values


class TestMisroutedAcrossMembers:
    async def test_an_event_off_its_partition_is_refused_and_redriven_where_it_belongs(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """Two ``basicsync run`` members, one partition each. Once WorkfloPlus holds 20 whole
        jobs, a producer with another partitioner sends six of them an upsert with their
        ``workflowId`` and a new title on the other member's partition. That member does not
        hold those jobs: had it assembled the upsert alone, it would have posted a document
        without steps over each (it did before). Instead each upsert is one ``misrouted``
        failure record with its bytes; the later titles on the right partitions apply, no job
        ever shows the misrouted title and no history shrinks. ``basicsync redrive --reason
        misrouted --apply`` then sends the six to their partitions, where they apply."""
        topics = await new_topics(make_topic, partitions=2)
        settings = with_request_timeout(
            settings_for(kafka_bootstrap, sandbox_in_process, topics), 3
        )
        demo = build_demo(DemoPlan(jobs=20, seed=72, prefix="partitioner", abort_share=0))
        jobs = sorted(demo.expected)
        victims = jobs[:6]
        log_a, log_b = str(tmp_path / "a.log"), str(tmp_path / "b.log")
        async with consumer_process(settings, log_a), consumer_process(settings, log_b):
            await until_each_holds(1, log_a, log_b)
            await produce(kafka_bootstrap, topics.inputs, demo.events)
            await wait_converged(sandbox_in_process, demo.expected, within=60)
            off = [
                (
                    _misrouted_upsert(job, demo.expected[job]["metadata"]["workflowId"]),
                    1 - hashes_to(job.encode(), 2),
                )
                for job in victims
            ]
            sent = await _send_to(kafka_bootstrap, topics.inputs[0], off)
            await produce(kafka_bootstrap, topics.inputs, final_upserts(jobs, "after"))
            await wait_converged(sandbox_in_process, with_title(demo.expected, "after"), within=60)
            failures = await read_records(kafka_bootstrap, topics.failed, settle_s=1.0)
            assert sorted((f["clientJobId"], f["reason"]) for f in failures) == [
                (job, "misrouted") for job in victims
            ]
            by_job = {f["clientJobId"]: f for f in failures}
            for (event, partition), value in zip(off, sent, strict=True):
                source = by_job[event.subject]["source"]
                assert source["partition"] == partition
                assert base64.b64decode(source["value"]) == value
            titles = {
                json.loads(body)["metadata"]["jobTitle"]
                for stored in sandbox_in_process.state.jobs.values()
                for body in stored.history
            }
            assert "misrouted" not in titles
            redriven = await basicsync(settings, "redrive", "--reason", "misrouted", "--apply")
            assert redriven.code == 0, redriven.out + redriven.err
            after = with_title(demo.expected, "after")
            expected = {**after, **with_title({j: after[j] for j in victims}, "misrouted")}
            await wait_converged(sandbox_in_process, expected, within=60)
        assert_history_never_shrinks(sandbox_in_process, jobs)
        failures = await read_records(kafka_bootstrap, topics.failed, settle_s=0.5)
        assert len(failures) == len(victims), "a redriven event failed again"


async def _misrouted_refused(port: int, count: int) -> bool:
    return await scraped(port, "basicsync_misrouted_keys_total") >= count


class TestMisroutedThroughFaults:
    async def test_a_kill_mid_refusal_and_a_redrive_run_twice_leave_each_event_once(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """A member SIGKILLed after it refused four misrouted upserts but before its
        checkpoint (a minute apart here) committed their failure records: none is on the
        failure topic then, and the next member refuses each again, so each has exactly one
        record. ``redrive --apply`` run twice (as an operator does after a redrive killed
        mid-way) sends them twice: the first run applies them, the second changes nothing,
        posts nothing and fails nothing (each event's id is among those its job applied)."""
        topics = await new_topics(make_topic, partitions=2)
        # Its posts are in doubt after the kill (their success marks wait for the checkpoint):
        # the next member waits three request timeouts before posting those jobs again.
        settings = with_request_timeout(
            settings_for(kafka_bootstrap, sandbox_in_process, topics), 3
        )
        # The next member takes the partitions once the killed one's session ends.
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"session_timeout_ms": 6_000})}
        )
        rare = settings.kafka.model_copy(
            update={"checkpoint_interval_ms": 60_000, "catch_up_checkpoint_interval_ms": 60_000}
        )
        observed = ObservabilitySettings(http_port=0)
        demo = build_demo(DemoPlan(jobs=12, seed=76, prefix="misrouted-kill", abort_share=0))
        jobs = sorted(demo.expected)
        victims = jobs[:4]
        off = [
            (
                _misrouted_upsert(job, demo.expected[job]["metadata"]["workflowId"]),
                1 - hashes_to(job.encode(), 2),
            )
            for job in victims
        ]
        log = str(tmp_path / "killed.log")
        member = start_consumer_process(
            settings.model_copy(update={"kafka": rare, "observability": observed}), log
        )
        try:
            await produce(kafka_bootstrap, topics.inputs, demo.events)
            await wait_converged(sandbox_in_process, demo.expected, within=60)
            await _send_to(kafka_bootstrap, topics.inputs[0], off)
            port = log_events(log, "http_listening")[-1]["port"]
            refused = await eventually_async(lambda: _misrouted_refused(port, len(off)), within=30)
            assert refused, tail(log)
            assert await read_records(kafka_bootstrap, topics.failed, settle_s=0.5) == []
        finally:
            member.send_signal(signal.SIGKILL)
            await asyncio.to_thread(member.wait, 30)
        async with consumer_process(settings, str(tmp_path / "next.log")):
            await produce(kafka_bootstrap, topics.inputs, final_upserts(jobs, "after"))
            after = with_title(demo.expected, "after")
            await wait_converged(sandbox_in_process, after, within=60)
            failures = await read_records(kafka_bootstrap, topics.failed, settle_s=1.0)
            assert sorted((f["clientJobId"], f["reason"]) for f in failures) == [
                (job, "misrouted") for job in victims
            ]
            expected = {**after, **with_title({j: after[j] for j in victims}, "misrouted")}
            first = await basicsync(settings, "redrive", "--reason", "misrouted", "--apply")
            assert first.code == 0, first.out + first.err
            await wait_converged(sandbox_in_process, expected, within=60)
            posts = {job: len(sandbox_in_process.state.jobs[job].history) for job in jobs}
            second = await basicsync(settings, "redrive", "--reason", "misrouted", "--apply")
            assert second.code == 0, second.out + second.err
            sent = len(demo.events) + len(off) + len(jobs) + 2 * len(off)
            await assert_read_to_the_end(kafka_bootstrap, topics.group, sent)
            assert {job: len(sandbox_in_process.state.jobs[job].history) for job in jobs} == posts
            assert converged(sandbox_in_process, expected) == len(jobs)
        assert_history_never_shrinks(sandbox_in_process, jobs)
        failures = await read_records(kafka_bootstrap, topics.failed, settle_s=0.5)
        assert len(failures) == len(victims), "a redriven event failed again"
