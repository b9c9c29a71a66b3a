"""A result topic deleted under a running member (an operator purging old records).

``basicsync run`` as a child process against the local broker and the sandbox. Every commit of
a partition that has a result record to write waits for the topic's metadata, and with it
every request of the partition: the member must say which topic is missing and what to do,
lose nothing, and go on by itself once the topic exists again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumer.demo import DemoPlan, build_demo
from consumer.testing.workfloplus import Sandbox
from tests.integration.harness import (
    MakeTopic,
    consumer_process,
    eventually,
    log_events,
    new_topics,
    produce,
    raw_records,
    recreate,
    settings_for,
    tail,
    wait_converged,
)

pytestmark = pytest.mark.integration


class TestAResultTopicDeleted:
    async def test_it_is_named_nothing_is_lost_and_its_return_resumes_everything(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """Ten jobs synced, then the success topic deleted and ten more jobs sent. The member
        logs ``result_topic_missing`` naming the topic (an error, with the way out) and stays
        up: its checkpoints wait, and the partition's intents behind them. Once the topic is
        created again, every new job is in WorkfloPlus and has its success record there:
        none was dropped while the topic was missing."""
        topics = await new_topics(make_topic, partitions=2)
        before = build_demo(DemoPlan(jobs=10, seed=61, prefix="before-purge"))
        after = build_demo(DemoPlan(jobs=10, seed=62, prefix="after-purge"))
        await produce(kafka_bootstrap, topics.inputs, before.events)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        async with consumer_process(settings, log):
            await wait_converged(sandbox_in_process, before.expected, within=60)

            async def while_missing() -> None:
                await produce(kafka_bootstrap, topics.inputs, after.events)
                named = await eventually(
                    lambda: any(
                        line["topic"] == topics.succeeded
                        for line in log_events(log, "result_topic_missing")
                    ),
                    within=60,
                )
                assert named, tail(log)

            await recreate(kafka_bootstrap, topics.succeeded, 2, {}, while_missing)
            await wait_converged(sandbox_in_process, after.expected, within=90)
            reported: set[str] = set()

            async def every_new_job_reported() -> bool:
                found = await raw_records(kafka_bootstrap, topics.succeeded, committed=True)
                reported.update(json.loads(value)["clientJobId"] for _, value in found)
                return reported >= set(after.expected)

            for _ in range(30):
                if await every_new_job_reported():
                    break
            assert reported >= set(after.expected), sorted(set(after.expected) - reported)
        [line, *_] = log_events(log, "result_topic_missing")
        assert line["level"] == "error"
        assert "BASICSYNC_KAFKA__CREATE_TOPICS" in line["action"]
