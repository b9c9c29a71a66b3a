"""Input records deleted before the group read them: reported, skipped, and nothing blocks.

A member stopped (or paused through a gateway outage) for longer than an input topic's
retention finds its committed offset below the partition's start. The events in between are
gone; what the consumer owes is to say so (``input_records_lost``, an error line naming the
offsets, and ``basicsync_input_records_lost_total``) and to go on from the start with the
states it holds. aiokafka's ``earliest`` made the same move with one INFO line.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from consumer.config import Settings
from consumer.demo import DemoPlan, build_demo
from consumer.kafka.partitioning import hashes_to
from consumer.testing.workfloplus import Sandbox
from tests.fixtures.kafka import MakeTopic
from tests.integration.harness import (
    assert_history_never_shrinks,
    basicsync,
    commit_offsets,
    committed,
    committed_with_metadata,
    delete_records,
    eventually,
    eventually_async,
    final_upserts,
    free_port,
    log_events,
    new_topics,
    produce,
    recreate,
    scraped,
    settings_for,
    sigterm_and_wait,
    start_consumer_process,
    tail,
    wait_converged,
    with_title,
)

pytestmark = pytest.mark.integration


class TestInputRecordsDeletedUnread:
    async def test_a_member_stopped_past_the_retention_reports_the_gap_and_goes_on(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """20 jobs posted, the member stopped. Each job gets a ``late`` title, and input
        partition 0 then loses every record to retention before the member is back. Started
        again, it logs one ``input_records_lost`` for partition 0 naming the committed offset,
        the start and the count, and counts them by topic; the jobs of partition 1 take the
        late title, those of partition 0 keep what WorkfloPlus holds (never a partial
        document: their states come from the changelog). A ``later`` title after the gap
        reaches every job. The gap's end is committed as soon as it is skipped, so neither a
        rebalance nor a restart reports it again. ``basicsync check`` names the gap before the
        start (exit 4) and passes after it."""
        topics = await new_topics(make_topic, partitions=2)
        [topic] = topics.inputs
        demo = build_demo(DemoPlan(jobs=20, seed=31, prefix="expired"))
        jobs = list(demo.expected)
        on_zero = [job for job in jobs if hashes_to(job.encode(), 2) == 0]
        assert 0 < len(on_zero) < len(jobs)
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        await _run_until(settings, log, sandbox_in_process, demo.expected)
        assert log_events(log, "input_records_lost") == []
        assert {line["partition"] for line in log_events(log, "input_read_from_start")} == {0, 1}

        await produce(kafka_bootstrap, topics.inputs, final_upserts(jobs, "late"))
        start = await delete_records(kafka_bootstrap, topic, 0)
        checked = await basicsync(settings, "check", "--skip-gateway")
        assert checked.code == 4, checked.out
        assert (
            f"FAIL  input offsets: group {topics.group}'s offsets are below the start of "
            f"{topic} partition 0 at offset {start - len(on_zero)} starts at {start} "
            f"({len(on_zero)} records)"
        ) in checked.out
        port = free_port()
        again = start_consumer_process(
            settings, log, {"BASICSYNC_OBSERVABILITY__HTTP_PORT": str(port)}
        )
        try:
            late = with_title(demo.expected, "late")
            expected = {job: demo.expected[job] if job in on_zero else late[job] for job in jobs}
            await wait_converged(sandbox_in_process, expected, within=60)
            reported = await eventually(
                lambda: bool(log_events(log, "input_records_lost")), within=30
            )
            assert reported, tail(log)
            [gap] = log_events(log, "input_records_lost")
            assert (gap["topic"], gap["partition"], gap["start"]) == (topic, 0, start)
            assert gap["records"] == len(on_zero) == start - gap["position"]
            assert gap["level"] == "error"
            metric = f'basicsync_input_records_lost_total{{topic="{topic}"}}'
            assert await scraped(port, metric) == len(on_zero)
            # The gap's end is committed although no record follows it: no take meets it again.
            tp = TopicPartition(topic, 0)

            async def past_the_gap() -> bool:
                return (await committed(kafka_bootstrap, topics.group)).get(tp) == start

            assert await eventually_async(past_the_gap, within=30), tail(log)

            await produce(kafka_bootstrap, topics.inputs, final_upserts(jobs, "later"))
            await wait_converged(sandbox_in_process, with_title(demo.expected, "later"), within=60)
        finally:
            again.terminate()
            assert await asyncio.to_thread(again.wait, 60) == 0, tail(log)
        assert len(log_events(log, "input_records_lost")) == 1
        checked = await basicsync(settings, "check", "--skip-gateway")
        assert checked.code == 0, checked.out
        assert "ok    input offsets" in checked.out
        assert_history_never_shrinks(sandbox_in_process, jobs)

    async def test_a_gap_met_while_a_second_member_joins_is_reported_once(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """Both input partitions lose their unread records while the group is down; two
        members then start together, so the rebalance of one's join lands while the other is
        meeting the gaps. Neither exits, each gap is reported once over both
        logs (a move fetched before a revoke is committed with it, one a take's seek
        supersedes is dropped), the offsets are committed past both gaps, and a later title
        reaches every job."""
        topics = await new_topics(make_topic, partitions=2)
        [topic] = topics.inputs
        demo = build_demo(DemoPlan(jobs=20, seed=37, prefix="expired-joined"))
        jobs = list(demo.expected)
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        log_a, log_b = (str(tmp_path / f"{name}.log") for name in "ab")
        await _run_until(settings, log_a, sandbox_in_process, demo.expected)

        await produce(kafka_bootstrap, topics.inputs, final_upserts(jobs, "late"))
        unread = {p: len([j for j in jobs if hashes_to(j.encode(), 2) == p]) for p in (0, 1)}
        starts = {p: await delete_records(kafka_bootstrap, topic, p) for p in (0, 1)}
        # Started together, one joins first and meets the gaps as the other's join lands.
        a = start_consumer_process(settings, log_a)
        b = start_consumer_process(settings, log_b)
        try:
            tps = {p: TopicPartition(topic, p) for p in (0, 1)}

            async def past_both_gaps() -> bool:
                offsets = await committed(kafka_bootstrap, topics.group)
                return all(offsets.get(tps[p]) == starts[p] for p in (0, 1))

            assert await eventually_async(past_both_gaps, within=60), tail(log_a) + tail(log_b)
            await produce(kafka_bootstrap, topics.inputs, final_upserts(jobs, "later"))
            await wait_converged(sandbox_in_process, with_title(demo.expected, "later"), within=60)
            assert a.poll() is None, tail(log_a)
            assert b.poll() is None, tail(log_b)
        finally:
            for member, log in ((a, log_a), (b, log_b)):
                code, _ = await sigterm_and_wait(member, log, 60)
                assert code == 0, tail(log)
        gaps = [
            (line["partition"], line["position"], line["records"])
            for log in (log_a, log_b)
            for line in log_events(log, "input_records_lost")
        ]
        assert sorted(gaps) == [(p, starts[p] - unread[p], unread[p]) for p in (0, 1)], gaps
        assert_history_never_shrinks(sandbox_in_process, jobs)


class TestInputOffsetsPastTheEnd:
    async def test_offsets_past_the_end_then_a_topic_created_again_lose_no_state(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """20 jobs posted, the member stopped. First the input's partition 0 ends below the
        group's offset (what an unclean leader election or a broker restored from an older
        disk leaves; staged by committing past the end, with the offset's metadata kept):
        ``basicsync check`` names it (exit 4); started again, the member logs
        ``input_position_past_end`` once, reads the partition from its start, and a ``late``
        title reaches every job; its offsets end at the partitions' ends. Then the input topic
        is deleted and created again: Kafka drops the group's offsets of a deleted topic, so
        the next member reads the new topic from its start (``input_read_from_start``), and
        the ``later`` title it carries is applied onto the states the changelog kept: no
        partial document, no history that shrinks, ``check`` passing."""
        topics = await new_topics(make_topic, partitions=2)
        [topic] = topics.inputs
        demo = build_demo(DemoPlan(jobs=20, seed=43, prefix="past-end"))
        jobs = list(demo.expected)
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        await _run_until(settings, log, sandbox_in_process, demo.expected)

        tp = TopicPartition(topic, 0)
        [(_, mark)] = [
            item
            for item in (await committed_with_metadata(kafka_bootstrap, topics.group)).items()
            if item[0] == tp
        ]
        await commit_offsets(kafka_bootstrap, topics.group, {tp: (mark.offset + 50, mark.metadata)})
        checked = await basicsync(settings, "check", "--skip-gateway")
        assert checked.code == 4, checked.out
        assert (
            f"FAIL  input offsets: group {topics.group}'s offsets are past the end of {topic} "
            f"partition 0 at offset {mark.offset + 50} ends at {mark.offset}: the partition "
            "lost records"
        ) in checked.out
        await produce(kafka_bootstrap, topics.inputs, final_upserts(jobs, "late"))
        await _run_until(settings, log, sandbox_in_process, with_title(demo.expected, "late"))
        [past] = log_events(log, "input_position_past_end")
        assert (past["partition"], past["position"], past["start"]) == (0, mark.offset + 50, 0)
        assert log_events(log, "input_records_lost") == []
        checked = await basicsync(settings, "check", "--skip-gateway")
        assert checked.code == 0, checked.out
        assert "ok    input offsets" in checked.out

        await recreate(kafka_bootstrap, topic, 2, {})
        offsets = await committed(kafka_bootstrap, topics.group)
        assert not [tp for tp in offsets if tp.topic == topic], offsets
        read_from_start = len(log_events(log, "input_read_from_start"))
        await produce(kafka_bootstrap, topics.inputs, final_upserts(jobs, "later"))
        await _run_until(settings, log, sandbox_in_process, with_title(demo.expected, "later"))
        assert len(log_events(log, "input_read_from_start")) == read_from_start + 2
        assert len(log_events(log, "input_position_past_end")) == 1
        assert log_events(log, "input_records_lost") == []
        assert_history_never_shrinks(sandbox_in_process, jobs)


async def _run_until(
    settings: Settings, log: str, sandbox: Sandbox, expected: dict[str, dict[str, Any]]
) -> None:
    """``basicsync run`` until WorkfloPlus holds ``expected``, and the offsets of what it read
    are committed (its clean stop commits them), then stopped."""
    process = start_consumer_process(settings, log)
    try:
        await wait_converged(sandbox, expected, within=60)
    finally:
        process.terminate()
        assert await asyncio.to_thread(process.wait, 60) == 0, tail(log)
