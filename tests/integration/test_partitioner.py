"""Events a producer put on another partition than their key's, read by two members.

A job belongs to the partition its key's murmur2 hash picks (the Java client's default
partitioner). An event that a producer with another partitioner put elsewhere is read by the
member owning *that* partition, which need not hold the job: assembled there alone, it would be
posted over the whole document the job's owner keeps. ``basicsync run`` refuses it instead, as
``misrouted`` with its bytes, and ``basicsync redrive`` puts it where it belongs.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from consumer.demo import DemoPlan, build_demo
from consumer.domain.events import EventType, JobEvent, encode_structured
from consumer.kafka.partitioning import hashes_to
from consumer.testing.workfloplus import Sandbox
from tests.integration.harness import (
    MakeTopic,
    assert_history_never_shrinks,
    basicsync,
    consumer_process,
    final_upserts,
    new_topics,
    produce,
    read_records,
    settings_for,
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
