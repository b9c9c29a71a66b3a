"""Order as Kafka delivered it, at the process level: events that share one CloudEvents time.

A producer that stamps a whole batch with one time (or a clock of second resolution) must not
make a job's status changes or corrections apply in random order: events of equal time apply in
the order their partition delivered them. A producer whose clock runs far ahead must not freeze
a job either (``TestAProducerClockAhead``).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consumer.demo import DemoPlan, build_demo
from consumer.domain.events import EventType, JobEvent, encode_structured
from consumer.testing.workfloplus import Sandbox
from tests.integration.harness import (
    MakeTopic,
    assembled_in_partition_order,
    assert_each_reported_once,
    assert_history_never_shrinks,
    consumer_process,
    final_upserts,
    in_chunks,
    killed_under_live_traffic,
    new_topics,
    produce,
    produce_raw,
    read_records,
    same_time,
    send_live,
    settings_for,
    start_consumer_process,
    tail,
    wait_converged,
    with_late_aborts,
    with_request_timeout,
    with_title,
)

pytestmark = pytest.mark.integration

#: the event types each input topic carries: fields written by more than one type share a topic
BY_TOPIC = (
    {EventType.upserted, EventType.status_changed, EventType.aborted},
    {EventType.step_completed, EventType.step_cancelled},
    {EventType.excluded},
)


class TestEqualTimes:
    async def test_300_jobs_whose_events_share_one_time_assemble_in_partition_order(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """Every event of 300 jobs carries the same ``time``; they are produced over three
        topics by kind, so that conflicting writes to a field come from one topic: upserts,
        status changes and aborts (which all write the status) on one, steps on another,
        exclusions on the third. ``basicsync run`` leaves WorkfloPlus holding, for every job,
        exactly the document the events assemble into in partition order (not in event-id
        order)."""
        topics = await new_topics(make_topic, partitions=3, inputs=3)
        demo = build_demo(DemoPlan(jobs=300, seed=97))
        events = same_time(demo.events)
        expected = assembled_in_partition_order(events)
        by_id = assembled_in_partition_order(sorted(events, key=lambda event: event.id))
        differs = sum(1 for job, body in expected.items() if body != by_id[job])
        assert differs > 30, "ordering equal times by event id must give other documents"
        for topic, kinds in zip(topics.inputs, BY_TOPIC, strict=True):
            await produce(kafka_bootstrap, [topic], [e for e in events if e.type in kinds])
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        process = start_consumer_process(settings, log)
        try:
            await wait_converged(sandbox_in_process, expected, within=120)
        finally:
            process.terminate()
            assert process.wait(60) == 0, tail(log)
        failures = await read_records(kafka_bootstrap, topics.failed, settle_s=0.5)
        assert [f for f in failures if f["reason"] != "invalid_transition"] == []

    async def test_equal_times_through_two_kills_under_live_traffic(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """The same-time jobs again, with an abort after 60 Completed jobs (refused), sent live
        and the consumer SIGKILLed twice meanwhile. Each kill replays the events above the
        committed offsets onto the last states written, some of them left to intents that
        never came: an event applied twice, or missed, would break a tie another way. For
        every job WorkfloPlus ends with the document of partition order, no accepted
        document lost a step, and each refused abort is reported exactly once."""
        topics = await new_topics(make_topic, partitions=3, inputs=3)
        demo = build_demo(DemoPlan(jobs=300, seed=97, prefix="same-time-killed"))
        stream, aborted = with_late_aborts(demo, 60)
        events = same_time(stream)
        expected = assembled_in_partition_order(events)
        settings = with_request_timeout(
            settings_for(kafka_bootstrap, sandbox_in_process, topics, debounce_ms=300), 3
        )
        log = str(tmp_path / "consumer.log")

        async def send(chunk: list[JobEvent]) -> None:
            for topic, kinds in zip(topics.inputs, BY_TOPIC, strict=True):
                await produce(kafka_bootstrap, [topic], [e for e in chunk if e.type in kinds])

        rest = await killed_under_live_traffic(
            settings, log, sandbox_in_process, in_chunks(events, 12), send
        )
        async with consumer_process(settings, log):
            await send_live(send, rest)
            await wait_converged(sandbox_in_process, expected, within=180)
            await assert_each_reported_once(kafka_bootstrap, topics.failed, aborted)
        assert_history_never_shrinks(sandbox_in_process, list(expected))


class TestBigJob:
    async def test_a_10000_step_job_reaches_workfloplus_whole(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """One job of 10,000 steps (several MB of state, within the default
        ``BASICSYNC_KAFKA__MAX_JOB_BYTES``) goes through the changelog and is posted whole, with
        no failure record and no exit."""
        topics = await new_topics(make_topic, partitions=1)
        demo = build_demo(DemoPlan(jobs=1, steps=10_000, seed=101, abort_share=0.0))
        [job] = list(demo.expected)
        assert len(demo.expected[job]["completedSteps"] or []) > 5_000
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        process = start_consumer_process(settings, log)
        try:
            await wait_converged(sandbox_in_process, demo.expected, within=180)
            assert process.poll() is None, tail(log)
        finally:
            process.terminate()
            assert process.wait(60) == 0, tail(log)
        assert await read_records(kafka_bootstrap, topics.failed, settle_s=0.5) == []


class TestAProducerClockAhead:
    async def test_an_event_a_year_ahead_is_refused_and_its_job_keeps_taking_updates(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """One producer's clock is a year ahead. Ordered by that time, its upsert of a job
        would win every later write of the job's title for a year; ``basicsync run`` refuses
        it instead (one ``invalid_event`` failure record with its bytes), and the job's later
        correction applies. Every job converges to what the right events make."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=8, seed=71, prefix="clock-ahead"))
        victim = sorted(demo.expected)[0]
        ahead = JobEvent.build(
            {
                "id": "from-a-year-ahead",
                "source": "urn:producer-with-a-wrong-clock",
                "type": EventType.upserted,
                "subject": victim,
                "time": datetime.now(UTC) + timedelta(days=365),
                "data": {"jobTitle": "a year ahead"},
            }
        )
        half = len(demo.events) // 2
        key, value, headers = encode_structured(ahead)
        expected = {**demo.expected, victim: with_title(demo.expected, "corrected")[victim]}
        await produce(kafka_bootstrap, topics.inputs, demo.events[:half])
        await produce_raw(kafka_bootstrap, topics.inputs[0], [(key, value, list(headers))])
        corrected = final_upserts([victim], "corrected")
        await produce(kafka_bootstrap, topics.inputs, [*demo.events[half:], *corrected])
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        async with consumer_process(settings, str(tmp_path / "consumer.log")):
            await wait_converged(sandbox_in_process, expected, within=90)
        (failure,) = await read_records(kafka_bootstrap, topics.failed, settle_s=0.5)
        assert failure["reason"] == "invalid_event"
        assert failure["clientJobId"] == victim
        assert "ahead of this consumer's clock" in failure["error"]["message"]
        # The record's own Kafka timestamp (its producer client's, now) is not ahead.
        assert "the producer's clock or time zone is probably wrong" in failure["error"]["message"]
        assert base64.b64decode(failure["source"]["value"]) == value
