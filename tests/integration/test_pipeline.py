"""The consumer end to end: real broker, the sandbox over HTTP, the consumer in this process."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from consumer.app import Running
from consumer.config import Settings
from consumer.demo import DemoJobs, DemoPlan, build_demo, send_events
from consumer.demo.example import EXAMPLE_BODY, EXAMPLE_CLIENT_JOB_ID, example_job_events
from consumer.demo.jobs import demo_job
from consumer.domain.events import EventType, JobEvent, encode_structured
from consumer.domain.retention import decode_stored
from consumer.domain.settled import SETTLED_HEADER
from consumer.domain.state import JobState
from consumer.domain.state_codec import encode_state
from consumer.errors import TopicLayoutError
from consumer.kafka.admin import CHANGELOG_SEGMENT_MS, TopicPlan, ensure_topology
from consumer.kafka.input_topics import InputTopics
from consumer.testing.workfloplus import Sandbox
from tests.integration.harness import (
    MakeTopic,
    Topics,
    catching_up,
    consumer_running,
    converged,
    eventually,
    final_upserts,
    max_overlap,
    new_topics,
    produce,
    produce_raw,
    raw_records,
    raw_values,
    read_records,
    settings_for,
    stored,
    wait_converged,
    with_request_timeout,
    with_title,
)
from tests.unit.fakes import fold, status_changed, upserted

pytestmark = pytest.mark.integration


class TestDocumentedExample:
    async def test_example_events_post_exactly_the_documented_body(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """The basicSync example of the docs, sent as events, is posted byte-for-byte equal JSON."""
        topics = await new_topics(make_topic, partitions=1)
        await produce(kafka_bootstrap, topics.inputs, example_job_events())
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        async with consumer_running(settings) as (_, task):
            await wait_converged(
                sandbox_in_process, {EXAMPLE_CLIENT_JOB_ID: EXAMPLE_BODY}, within=30, consumer=task
            )
        posted = [
            json.loads(r.body)
            for r in sandbox_in_process.state.records
            if r.path == "/jobs/v1/basicSync" and r.body is not None and r.status == 200
        ]
        assert posted[-1] == EXAMPLE_BODY
        succeeded = await read_records(kafka_bootstrap, topics.succeeded)
        assert succeeded[-1]["clientJobId"] == EXAMPLE_CLIENT_JOB_ID
        assert succeeded[-1]["outcome"] == "synced"
        assert succeeded[-1]["jobStatus"] == "Completed"


class TestCoalescing:
    async def test_events_within_the_debounce_window_make_one_request(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """All events of a job arriving inside the debounce window become a single request."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=20, seed=3, abort_share=0, exclude_share=0))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = settings_for(
            kafka_bootstrap, sandbox_in_process, topics, debounce_ms=1500, max_delay_ms=5000
        )
        async with consumer_running(settings) as (_, task):
            await wait_converged(sandbox_in_process, demo.expected, within=60, consumer=task)
        for job in demo.expected:
            requests = [r for r in sandbox_in_process.state.records if r.client_job_id == job]
            assert len(requests) == 1, (job, [r.status for r in requests])


#: a Kafka key that is not UTF-8
RAW_KEY = b"\xffraw-key\xfe"


class TestInvalidInput:
    async def test_each_invalid_kind_lands_on_the_failure_topic_and_the_rest_converges(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """Bad JSON, a tombstone, a null header value, missing fields, unknown type, a key
        that differs, is not UTF-8 or is missing, oversize, a time before the year 1 in UTC,
        NaN, a number past a double's range and an abort after completion each give one
        failure record with the original bytes, keyed by its clientJobId or else by the raw
        key; good jobs converge."""
        topics = await new_topics(make_topic, partitions=1)
        topic = topics.inputs[0]
        demo = build_demo(DemoPlan(jobs=10, seed=5, abort_share=0))
        good = demo.events
        completed_job = next(iter(demo.expected))
        valid_key, valid_value, _ = encode_structured(good[0])
        envelope = json.loads(valid_value)
        unknown = {**envelope, "id": "x-unknown", "type": "com.workfloplus.job.teleported"}
        missing = {k: v for k, v in envelope.items() if k != "source"} | {"id": "x-missing"}
        abort_after_completion = {
            "specversion": "1.0",
            "id": "x-abort",
            "source": "tests",
            "type": "com.workfloplus.job.aborted",
            "subject": completed_job,
            "data": {"reason": "too late"},
        }
        content_type: list[tuple[str, bytes | None]] = [
            ("content-type", b"application/cloudevents+json")
        ]
        oversized = {**envelope, "id": "x-big", "data": {"jobTitle": "x" * 5000}}
        # valid RFC 3339, but before the year 1 once in UTC: it once crashed the reducer
        before_utc = {**envelope, "id": "x-time", "time": "0001-01-01T00:00:00+01:00"}
        # JSON numbers WorkfloPlus would have got as null: one JSON has no word for, one past
        # a double's range
        numbers = [
            json.dumps(
                {**envelope, "id": f"x-{n}", "data": {**envelope["data"], "hierarchyStack": ["N"]}}
            ).replace('"N"', number)
            for n, number in enumerate(["NaN", "-1e400"])
        ]
        bad: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = [
            (b"job-bad-json", b"{not json", content_type),
            (b"job-tombstone", None, []),
            (b"job-null-header", b"{not json either", [*content_type, ("trace", None)]),
            (valid_key, json.dumps(missing).encode(), content_type),
            (valid_key, json.dumps(unknown).encode(), content_type),
            (b"someone-else", json.dumps({**envelope, "id": "x-key"}).encode(), content_type),
            (RAW_KEY, json.dumps({**envelope, "id": "x-raw-key"}).encode(), content_type),
            (None, json.dumps({**envelope, "id": "x-no-key"}).encode(), content_type),
            (valid_key, json.dumps(oversized).encode(), content_type),
            (valid_key, json.dumps(before_utc).encode(), content_type),
            *((valid_key, number.encode(), content_type) for number in numbers),
        ]
        await produce(kafka_bootstrap, topics.inputs, good[: len(good) // 2])
        await produce_raw(kafka_bootstrap, topic, bad)
        await produce(kafka_bootstrap, topics.inputs, good[len(good) // 2 :])
        completed = demo.expected[completed_job]["metadata"]["status"] == "Completed"
        if completed:
            await produce_raw(
                kafka_bootstrap,
                topic,
                [
                    (
                        completed_job.encode(),
                        json.dumps(abort_after_completion).encode(),
                        content_type,
                    )
                ],
            )
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics, debounce_ms=20)
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"max_event_bytes": 4096})}
        )
        async with consumer_running(settings) as (running, task):
            await wait_converged(sandbox_in_process, demo.expected, within=60, consumer=task)
        failures = await read_records(kafka_bootstrap, topics.failed)
        reasons = sorted(f["reason"] for f in failures)
        expected_reasons = [
            "invalid_event",
            "invalid_event",
            "invalid_event",
            "invalid_event",
            "invalid_event",
            "invalid_event",
            "invalid_event",
            "key_mismatch",
            "key_mismatch",
            "key_mismatch",
            "oversized_event",
            "unknown_event_type",
        ]
        if completed:
            expected_reasons = sorted([*expected_reasons, "invalid_transition"])
        assert reasons == expected_reasons
        sent_values = {value for _, value, _ in bad}
        for failure in failures:
            source = failure["source"]
            assert source["topic"] == topic
            if failure["reason"] != "invalid_transition":
                value = source["value"]
                assert (None if value is None else base64.b64decode(value)) in sent_values
            assert failure["error"]["message"]
        by_job = {f["clientJobId"]: f for f in failures}
        assert by_job["job-tombstone"]["source"]["value"] is None
        assert {"key": "trace", "value": None} in by_job["job-null-header"]["source"]["headers"]
        assert running.stats.invalid.total() == len(expected_reasons)
        # Each failure record is keyed by its clientJobId; without one, by the input's key as
        # received (not UTF-8), and a keyless input's has no key.
        keys = {}
        for key, value in await raw_records(kafka_bootstrap, topics.failed, committed=True):
            failure = json.loads(value)
            keys[failure["source"]["offset"]] = (key, failure["clientJobId"])
        assert len(keys) == len(failures)
        for key, client_job_id in keys.values():
            if client_job_id is not None:
                assert key == client_job_id.encode()
        assert sorted(key for key, job in keys.values() if job is None) == [b"", RAW_KEY]

    async def test_another_event_under_a_seen_id_is_refused_and_a_redelivery_is_not(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """A producer reuses an event's id for a later change of the job: it used to be
        dropped as a duplicate, without a word. Now it is refused (invalid_event, with its
        bytes), while the same event sent again (a redelivery) is dropped silently, and the
        job keeps taking events under new ids. Another system's event under the same id (its
        own ``source``) is another event, as CloudEvents has it: applied, not refused."""
        topics = await new_topics(make_topic, partitions=1)
        demo = build_demo(DemoPlan(jobs=3, seed=12))
        job = sorted(demo.expected)[0]
        [final] = final_upserts([job], "final")
        first = next(e for e in demo.events if e.subject == job and e.time is not None)
        reused = final.replaced(
            id=first.id, source=first.source, time=datetime(2026, 7, 1, tzinfo=UTC)
        )
        reused = reused.replaced(data={"jobTitle": "impostor"})
        await produce(kafka_bootstrap, topics.inputs, [*demo.events, final])
        reused_key, reused_value, reused_headers = encode_structured(reused)
        again = encode_structured(final)
        other_system = final.replaced(
            id=first.id, source="urn:other-system", time=datetime(2026, 8, 1, tzinfo=UTC)
        ).replaced(data={"jobTitle": "other system"})
        await produce_raw(
            kafka_bootstrap,
            topics.inputs[0],
            [
                (reused_key, reused_value, reused_headers),
                (again[0], again[1], again[2]),
                encode_structured(other_system),
            ],
        )
        titled = with_title({job: demo.expected[job]}, "other system")[job]
        expected = {**demo.expected, job: titled}
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        async with consumer_running(settings) as (running, task):
            await wait_converged(sandbox_in_process, expected, within=60, consumer=task)
            failures = await read_records(kafka_bootstrap, topics.failed, settle_s=2)
            assert running.stats.invalid.total() == 1
        [failure] = failures
        assert (failure["clientJobId"], failure["reason"]) == (job, "invalid_event")
        assert (
            f"event id '{first.id}' of source '{first.source}' was applied"
            in (failure["error"]["message"])
        )
        assert base64.b64decode(failure["source"]["value"]) == reused_value


class TestGatewayRejection:
    async def test_a_rejected_job_gets_a_failure_record_with_the_body(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """A 4xx for one job yields a failure record carrying the response body; others sync."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=8, seed=11))
        rejected = sorted(demo.expected)[0]
        sandbox_in_process.faults.update(
            {"reject_job_ids": {rejected: {"status": 422, "body": {"error": "no such workflow"}}}}
        )
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        others = {job: body for job, body in demo.expected.items() if job != rejected}
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        async with consumer_running(settings) as (_, task):
            await wait_converged(sandbox_in_process, others, within=60, consumer=task)
            deadline = time.monotonic() + 20
            failures: list[dict[str, object]] = []
            while time.monotonic() < deadline and not failures:
                failures = await read_records(kafka_bootstrap, topics.failed, settle_s=0.5)
        assert failures, "no failure record for the rejected job"
        assert {f["clientJobId"] for f in failures} == {rejected}
        first = failures[0]
        assert first["reason"] == "rejected_by_gateway"
        error = first["error"]
        assert isinstance(error, dict)
        assert error["status"] == 422
        assert "no such workflow" in error["body"]


class TestRetryAfter:
    async def test_a_429_delays_that_jobs_next_attempt_by_retry_after(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """After 429 with Retry-After: 2 the same job is not tried again for 2 seconds."""
        topics = await new_topics(make_topic, partitions=1)
        events, body = demo_job(random.Random(1), "job-429")
        sandbox_in_process.faults.update({"rate_limit_next": 1, "retry_after_s": 2})
        await produce(kafka_bootstrap, topics.inputs, events)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics, debounce_ms=20)
        async with consumer_running(settings) as (_, task):
            await wait_converged(sandbox_in_process, {"job-429": body}, within=30, consumer=task)
        attempts = [r for r in sandbox_in_process.state.records if r.path == "/jobs/v1/basicSync"]
        assert attempts[0].status == 429
        assert attempts[1].time - attempts[0].time >= 2.0


class TestTokenExpiry:
    async def test_short_lived_tokens_cause_no_failures(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """With tokens living 2 s, a run of several seconds refreshes them and fails nothing."""
        topics = await new_topics(make_topic, partitions=2)
        sandbox_in_process.faults.update({"token_lifetime_s": 2})
        demo = build_demo(DemoPlan(jobs=60, seed=13))
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        async with consumer_running(settings) as (_, task):
            for start in range(0, len(demo.events), len(demo.events) // 6):
                await produce(
                    kafka_bootstrap,
                    topics.inputs,
                    demo.events[start : start + len(demo.events) // 6],
                )
                await asyncio.sleep(1.2)
            await wait_converged(sandbox_in_process, demo.expected, within=60, consumer=task)
        tokens = [r for r in sandbox_in_process.state.records if r.path == "/connect/token"]
        assert len(tokens) >= 2, "the token was never refreshed"
        assert await read_records(kafka_bootstrap, topics.failed, settle_s=0.5) == []


class TestOutage:
    async def test_an_outage_pauses_consumption_and_fails_nothing(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """During a 20 s gateway outage the circuit opens, consumption pauses, nothing fails,
        and every job converges afterwards. (Outages longer than the retry budget, and ones
        that hit a single job, are in test_containment.)"""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=120, seed=17))
        half = len(demo.events) // 2
        # Short-lived tokens: the outage hits the token endpoint too (systemic at once); a
        # short evidence window so that basicSync failures are judged systemic soon as well.
        sandbox_in_process.faults.update({"token_lifetime_s": 2})
        # Probes at most 4 s apart: the outage's end is noticed within 4 s, not 30.
        settings = settings_for(
            kafka_bootstrap,
            sandbox_in_process,
            topics,
            diagnosis_window_s=2.0,
            circuit_probe_max_s=4.0,
        )
        async with consumer_running(settings) as (running, task):
            await produce(kafka_bootstrap, topics.inputs, demo.events[:half])
            await sandbox_in_process.outage(20, "503")
            await produce(kafka_bootstrap, topics.inputs, demo.events[half:])
            opened = await eventually(lambda: running.stats.circuit_open, within=20)
            assert opened, "the circuit did not open during the outage"
            assert running.scheduler is not None
            assert running.scheduler.circuit.probe_max == 4.0
            events_when_open = running.stats.events
            await asyncio.sleep(5)
            assert running.stats.events - events_when_open <= 2000  # at most what was in flight
            paused_progress = running.stats.events - events_when_open
            await wait_converged(sandbox_in_process, demo.expected, within=90, consumer=task)
        assert running.stats.circuit_openings >= 1
        assert paused_progress < len(demo.events) - half
        assert await read_records(kafka_bootstrap, topics.failed, settle_s=0.5) == []


class TestScale:
    async def test_jobs_over_three_topics_with_two_instances_converge_without_overlap(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """1,000 jobs of ~12 events over 3 co-partitioned topics and two group members:
        every job converges, one success per final version, no failure, no overlapping request.

        Half the stream is a backlog when the members start (so a rebalance lands mid catch-up);
        the rest is produced once both own partitions, so each member has work to do whichever
        of them the group gave the backlog to."""
        topics = await new_topics(make_topic, partitions=4, inputs=3)
        demo = build_demo(DemoPlan(jobs=1000, seed=19))
        half = len(demo.events) // 2
        await produce(kafka_bootstrap, topics.inputs, demo.events[:half])
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        async with (
            consumer_running(settings) as (first, task1),
            consumer_running(settings) as (second, task2),
        ):
            both_own = await eventually(
                lambda: _owns_partitions(first) and _owns_partitions(second), within=60
            )
            assert both_own, "the group never gave both members partitions"
            await produce(kafka_bootstrap, topics.inputs, demo.events[half:])
            await wait_converged(sandbox_in_process, demo.expected, within=240, consumer=task1)
            assert not task2.done()
        assert max_overlap(sandbox_in_process) <= 1
        assert first.stats.events > 0
        assert second.stats.events > 0, "the second member never owned a partition"
        assert converged(sandbox_in_process, demo.expected) == len(demo.expected)
        assert await read_records(kafka_bootstrap, topics.failed, settle_s=0.5) == []
        successes = await read_records(kafka_bootstrap, topics.succeeded, settle_s=0.5)
        versions = [(s["clientJobId"], s["stateVersion"]) for s in successes]
        assert len(versions) == len(set(versions)), "a version was reported twice"
        assert {job for job, _ in versions} == set(demo.expected)
        last = {job: version for job, version in sorted(versions, key=lambda v: v[1])}
        for job, body in demo.expected.items():
            final = [
                s for s in successes if s["clientJobId"] == job and s["stateVersion"] == last[job]
            ]
            assert final[0]["jobStatus"] == body["metadata"]["status"]


async def _all_reported_within(
    seconds: float, bootstrap: str, succeeded: str, jobs: Iterable[str]
) -> None:
    """Every job has a success record within ``seconds``: none is held for a long checkpoint
    interval once the posts are done."""
    deadline = time.monotonic() + seconds
    while True:
        records = await read_records(bootstrap, succeeded, settle_s=0.2)
        if {r["clientJobId"] for r in records} >= set(jobs):
            return
        assert time.monotonic() < deadline, "success records held after the posts"
        await asyncio.sleep(0.2)


def _holding(
    bootstrap: str,
    sandbox: Sandbox,
    topics: Topics,
    catch_up_interval_ms: int,
    *,
    concurrency: int = 32,
    **kafka: Any,
) -> Settings:
    """Settings that catch up on any backlog beyond 100 records and hold every job that does
    not turn terminal until it is read (60 s at most); ``kafka`` overrides."""
    return catching_up(
        settings_for(
            bootstrap, sandbox, topics, catch_up_lag=100, catch_up_max_delay_ms=60_000,
            concurrency=concurrency,
        ),
        catch_up_interval_ms=catch_up_interval_ms,
        **kafka,
    )  # fmt: skip


async def _drain_held_backlog(
    bootstrap: str,
    make_topic: MakeTopic,
    sandbox: Sandbox,
    demo: DemoJobs,
    *,
    concurrency: int,
    catch_up_interval_ms: int,
) -> Topics:
    """``demo`` without its status events as a backlog (no job turns terminal, so the catch-up
    holds every one), read by a consumer whose live checkpoint interval is 10 ms, until every
    job is in ``sandbox`` and has its success record. The topics, for what was written."""
    topics = await new_topics(make_topic, partitions=1)
    no_status = {EventType.status_changed, EventType.aborted}
    await produce(bootstrap, topics.inputs, [e for e in demo.events if e.type not in no_status])
    settings = _holding(
        bootstrap, sandbox, topics, catch_up_interval_ms, concurrency=concurrency,
        checkpoint_interval_ms=10,
    )  # fmt: skip
    async with consumer_running(settings):
        assert await eventually(
            lambda: all(stored(sandbox, job) for job in demo.expected), within=90
        ), "the jobs never reached the sandbox"
        await _all_reported_within(10, bootstrap, topics.succeeded, demo.expected)
    return topics


class TestCatchUp:
    async def test_a_backlog_writes_each_job_state_about_once_per_catch_up_checkpoint(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """While catching up, checkpoints follow ``catch_up_checkpoint_interval_ms``, not the
        live interval: the same interleaved backlog writes a few changelog values per job with
        a long catch-up interval, and about one per event when it is as short as the live one."""
        long = await self._values_per_job(kafka_bootstrap, make_topic, sandbox_in_process, 60_000)
        short = await self._values_per_job(kafka_bootstrap, make_topic, sandbox_in_process, 10)
        assert long <= 4.5, f"{long:.1f} changelog values per job with a 60 s catch-up interval"
        assert short >= 2 * long, f"{short:.1f} per job with a 10 ms interval, {long:.1f} with 60 s"

    async def test_once_caught_up_results_are_committed_at_the_live_interval(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """The long catch-up interval ends with the backlog: the success records of the last
        posts are committed within the live checkpoint interval (1 s here), not when the
        catch-up checkpoint scheduled during the backlog (60 s here) comes due."""
        topics = await new_topics(make_topic, partitions=1)
        demo = build_demo(DemoPlan(jobs=1000, seed=31, prefix="caught-up"))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = catching_up(
            settings_for(kafka_bootstrap, sandbox_in_process, topics, catch_up_lag=100),
            catch_up_interval_ms=60_000,
        )
        async with consumer_running(settings):
            await wait_converged(sandbox_in_process, demo.expected, within=60)
            await _all_reported_within(10, kafka_bootstrap, topics.succeeded, demo.expected)

    async def test_a_catch_up_that_ends_with_every_job_posted_commits_at_the_live_interval(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """Every job of this backlog turns terminal within it and is posted as it is read, so
        the catch-up ends with no job held, only the stale catch-up timers of the jobs posted
        (60 s here). That is no drain: the success records are committed at the live interval,
        not once the first of those timers fires."""
        topics = await new_topics(make_topic, partitions=1)
        demo = build_demo(DemoPlan(jobs=200, seed=37, prefix="all-posted"))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = _holding(kafka_bootstrap, sandbox_in_process, topics, 60_000)
        async with consumer_running(settings):
            await wait_converged(sandbox_in_process, demo.expected, within=60)
            await _all_reported_within(10, kafka_bootstrap, topics.succeeded, demo.expected)

    async def test_posts_during_a_backlog_do_not_write_the_other_jobs_again(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """Jobs that turn terminal while a backlog is read are posted at once, each after an
        intent commit. An intent writes the states of the jobs it posts, not every job changed
        since the last checkpoint: jobs still open, interleaved with those posted, get about
        as many changelog values as in the same backlog without any post."""
        quiet = await self._values_per_job(kafka_bootstrap, make_topic, sandbox_in_process, 60_000)
        topics = await new_topics(make_topic, partitions=1)
        no_status = {EventType.status_changed, EventType.aborted}
        still_open = build_demo(DemoPlan(jobs=150, seed=23, prefix="open-beside-posts"))
        # Small jobs in waves, so that some complete (and are posted) all along the backlog.
        waves = [
            build_demo(DemoPlan(jobs=20, steps=1, seed=wave, prefix=f"posted-{wave}"))
            for wave in range(30)
        ]
        posted = {job: body for wave in waves for job, body in wave.expected.items()}
        open_events = [e for e in still_open.events if e.type not in no_status]
        posted_events = [e for wave in waves for e in wave.events]
        # Spread the open jobs' events evenly among them.
        share = len(posted_events) / len(open_events)
        mixed = sorted(
            [(n * share, 1, e) for n, e in enumerate(open_events)]
            + [(float(n), 0, e) for n, e in enumerate(posted_events)],
            key=lambda item: item[:2],
        )
        await produce(kafka_bootstrap, topics.inputs, [e for _, _, e in mixed])
        settings = _holding(
            kafka_bootstrap, sandbox_in_process, topics, 60_000, checkpoint_interval_ms=10
        )
        async with consumer_running(settings):
            await wait_converged(sandbox_in_process, posted, within=90)
            assert await eventually(
                lambda: all(stored(sandbox_in_process, job) for job in still_open.expected),
                within=90,
            ), "the open jobs never reached the sandbox"
        values = await raw_records(kafka_bootstrap, topics.state)
        per_open_job = sum(key.startswith(b"open-") for key, _ in values) / 150
        assert per_open_job <= quiet + 0.5, f"{per_open_job:.1f} values per open job, {quiet:.1f}"

    async def test_jobs_released_by_the_catch_up_are_written_twice_not_three_times(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """When the backlog is read every held job is released at once, and posting them
        takes a while (two requests at a time here). The live checkpoint (10 ms here) waits
        until they have drained: each job's changelog gets its intent and its synced state,
        not also the unposted state a live checkpoint would write just before its intent. Its
        offsets and success records follow as soon as the jobs drained."""
        demo = build_demo(DemoPlan(jobs=150, seed=29, prefix="drained"))
        topics = await _drain_held_backlog(
            kafka_bootstrap, make_topic, sandbox_in_process, demo, concurrency=2,
            catch_up_interval_ms=60_000,
        )  # fmt: skip
        # Two each (three without the drain), and two more for a job whose last events came
        # after its first post (the last ``catch_up_lag`` records are read live).
        per_job = len(await raw_values(kafka_bootstrap, topics.state)) / len(demo.expected)
        assert per_job <= 2.5, f"{per_job:.2f} changelog values per job"

    async def test_a_catch_up_tick_during_the_drain_does_not_write_the_held_jobs_again(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """A backlog of 1,000 jobs read while catching up (a 20 s catch-up checkpoint
        interval, far more than the read takes even on a loaded CI machine), then its held jobs
        drained (100 ms posts, 32 at a time, about 3 s). The drain has a catch-up interval of its
        own: checkpointed at the live interval (10 ms here), it would write every job still
        waiting for its request just before its intent writes it again. So a job's first
        changelog value is its intent, not a state written before its first post. (With 2,000
        jobs, 70 ms posts and a 6 s interval this also caught a drain tick counted from the last
        checkpoint, but CI machines read past that interval; that rule is tested by
        ``test_checkpoint_cadence.py``.)"""
        demo = build_demo(DemoPlan(jobs=1000, seed=31, prefix="tick"))
        sandbox_in_process.faults.update({"latency": {"kind": "fixed", "ms": 100}})
        topics = await _drain_held_backlog(
            kafka_bootstrap, make_topic, sandbox_in_process, demo, concurrency=32,
            catch_up_interval_ms=20_000,
        )  # fmt: skip
        written_first: dict[str, str] = {}
        for value in await raw_values(kafka_bootstrap, topics.state):
            state = decode_stored(value)
            assert isinstance(state, JobState)
            posted = state.sending_since is not None or state.synced_version > 0
            written_first.setdefault(state.client_job_id, "posted" if posted else "unposted")
        unposted = sorted(job for job, first in written_first.items() if first == "unposted")
        assert len(written_first) == len(demo.expected)
        # Only jobs of the first fetches (40 records each), absorbed before the lag was known
        # and committed by a live checkpoint. A tick mid-drain wrote about 600 here.
        assert len(unposted) <= 80, f"{len(unposted)} jobs written before their first post"

    async def test_a_catch_up_that_starts_and_ends_again_and_again_holds_nothing_for_long(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """Bursts larger than the catch-up lag, 2 s apart: the consumer starts catching up,
        ends (1 s within the lag), drains and starts again, over and over. A third of each
        burst's jobs stay open (no status event), so the catch-up holds them. Each end must
        release what it held, and no mode's checkpoint timing may put results off: every job
        is first posted within a few seconds of its burst, not when ``catch_up_max_delay``
        (30 s) runs out, and its success record is committed within two catch-up intervals
        (2 s each here) of that post, not at the end of the bursts."""
        topics = await new_topics(make_topic, partitions=1)
        no_status = {EventType.status_changed, EventType.aborted}
        bursts: list[list[JobEvent]] = []
        finished: dict[str, dict[str, Any]] = {}
        for n in range(8):
            demo = build_demo(DemoPlan(jobs=24, steps=3, seed=n, abort_share=0, prefix=f"flip-{n}"))
            still_open = set(sorted(demo.expected)[::3])
            bursts.append(
                [e for e in demo.events if e.subject not in still_open or e.type not in no_status]
            )
            finished.update({j: body for j, body in demo.expected.items() if j not in still_open})
        jobs = {e.subject for burst in bursts for e in burst}
        settings = catching_up(
            settings_for(kafka_bootstrap, sandbox_in_process, topics, catch_up_lag=30),
            catch_up_interval_ms=2_000,
        )
        sent_at: dict[str, float] = {}
        stored_at: dict[str, float] = {}
        reported_at: dict[str, float] = {}
        modes: list[bool] = []

        async def watch(running: Running, until: asyncio.Event) -> None:
            while not until.is_set():
                now = time.monotonic()
                if running.scheduler is not None:
                    catching = running.scheduler.catching_up
                    if not modes or modes[-1] != catching:
                        modes.append(catching)
                for job in jobs - stored_at.keys():
                    if stored(sandbox_in_process, job) is not None:
                        stored_at[job] = now
                await asyncio.sleep(0.01)

        async def read_reports(until: asyncio.Event) -> None:
            reader = AIOKafkaConsumer(
                topics.succeeded,
                bootstrap_servers=kafka_bootstrap,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
            )
            await reader.start()
            try:
                while not until.is_set():
                    batch = await reader.getmany(timeout_ms=50)
                    now = time.monotonic()
                    for messages in batch.values():
                        for message in messages:
                            reported_at.setdefault(json.loads(message.value)["clientJobId"], now)
            finally:
                await reader.stop()

        done = asyncio.Event()
        async with consumer_running(settings) as (running, task):
            watchers = [
                asyncio.create_task(watch(running, done)),
                asyncio.create_task(read_reports(done)),
            ]
            # Each burst lands at once (one batch), as a backlog does, not as a trickle the
            # consumer keeps up with.
            producer = AIOKafkaProducer(
                bootstrap_servers=kafka_bootstrap, linger_ms=300, max_batch_size=1 << 20
            )
            await producer.start()
            try:
                for burst in bursts:
                    await send_events(producer, topics.inputs, burst)
                    sent_at.update(dict.fromkeys({e.subject for e in burst}, time.monotonic()))
                    await asyncio.sleep(2.0)
            finally:
                await producer.stop()
            await wait_converged(sandbox_in_process, finished, within=60, consumer=task)
            # Long enough for a job held until catch_up_max_delay: the bounds below say why.
            await eventually(lambda: set(reported_at) >= jobs, within=40)
            done.set()
            await asyncio.gather(*watchers)
        assert modes.count(True) >= 4, f"the catch-up mode went {modes}"
        assert jobs <= set(reported_at), f"never reported: {sorted(jobs - set(reported_at))}"
        # Read (a few fetches), 1 s within the lag, released; or the next catch-up's end.
        first_post = {job: round(stored_at[job] - sent_at[job], 1) for job in jobs}
        assert max(first_post.values()) <= 5.0, f"first posts after their burst: {first_post}"
        # Two intervals, and a commit.
        reported = {job: round(reported_at[job] - stored_at[job], 1) for job in jobs}
        assert max(reported.values()) <= 5.0, f"success records after their post: {reported}"

    async def _values_per_job(
        self,
        bootstrap: str,
        make_topic: MakeTopic,
        sandbox: Sandbox,
        interval_ms: int,
    ) -> float:
        topics = await new_topics(make_topic, partitions=1)
        demo = build_demo(DemoPlan(jobs=150, seed=23, prefix=f"catch-up-{interval_ms}"))
        # No status events: no job turns terminal, so none is posted (and no intent commits)
        # while the backlog is read; the checkpoints alone write the changelog.
        no_status = {EventType.status_changed, EventType.aborted}
        await produce(bootstrap, topics.inputs, [e for e in demo.events if e.type not in no_status])
        settings = _holding(bootstrap, sandbox, topics, interval_ms, checkpoint_interval_ms=10)
        async with consumer_running(settings):
            posted = await eventually(
                lambda: all(stored(sandbox, job) for job in demo.expected), within=90
            )
            assert posted, "the jobs never reached the sandbox"
        return len(await raw_values(bootstrap, topics.state)) / len(demo.expected)


class TestRetention:
    async def test_terminal_synced_jobs_are_tombstoned_after_the_retention(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """Completed, synced jobs leave memory and get a changelog tombstone once retained
        longer than ``retention_s``; a restart then restores none of them."""
        topics = await new_topics(make_topic, partitions=1)
        demo = build_demo(DemoPlan(jobs=5, seed=31, abort_share=0, exclude_share=0))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics, retention_s=1.0)
        async with consumer_running(settings) as (running, task):
            await wait_converged(sandbox_in_process, demo.expected, within=30, consumer=task)
            assert running.pipeline is not None
            swept = await eventually(
                lambda: running.stats.restored_jobs == 0 and _empty(running), within=15
            )
            assert swept, "terminal jobs were never swept"
        async with consumer_running(settings) as (restarted, _):
            assert await eventually(lambda: restarted.stats.restores > 0, within=30)
            assert restarted.stats.restored_jobs == 0


class TestRestart:
    async def test_settled_jobs_are_restored_unread_and_read_by_their_next_event(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """A restart after every job settled holds each as its changelog value, unread and not
        posted again; a later event reads the one it is for (and only it), which converges
        with the change, and a restart after that still restores every job."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=20, seed=37, prefix="settled"))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        async with consumer_running(settings) as (_, task):
            await wait_converged(sandbox_in_process, demo.expected, within=60, consumer=task)
        jobs = sandbox_in_process.state.jobs
        posts = {j: len(jobs[j].history) for j in demo.expected}
        job = sorted(demo.expected)[0]
        async with consumer_running(settings) as (restarted, task):
            assert await eventually(lambda: _owns_partitions(restarted), within=30)
            pipeline = restarted.pipeline
            assert pipeline is not None
            assert pipeline.unread_settled_jobs == pipeline.job_count == len(demo.expected)
            await produce(kafka_bootstrap, topics.inputs, final_upserts([job], "read again"))
            expected = {**demo.expected, **with_title({job: demo.expected[job]}, "read again")}
            await wait_converged(sandbox_in_process, expected, within=60, consumer=task)
            assert pipeline.unread_settled_jobs == len(demo.expected) - 1
        assert {j: len(jobs[j].history) for j in demo.expected} == {**posts, job: posts[job] + 1}
        async with consumer_running(settings) as (again, _):
            assert await eventually(lambda: _owns_partitions(again), within=30)
            assert again.pipeline is not None
            assert again.pipeline.job_count == len(demo.expected)

    async def test_jobs_that_end_are_held_as_their_values_while_the_member_runs(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """Without a restart: once a checkpoint commits the settled state of a job that ended,
        the member holds the job as that value, as a restart would, and posts none of them
        again. A later event reads the one it is for (and only it), which converges with the
        change and, posted and committed again, is held as its new value; a restart restores
        every job whole."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=20, seed=43, prefix="ended"))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        jobs = sandbox_in_process.state.jobs
        job = sorted(demo.expected)[0]
        async with consumer_running(settings) as (running, task):
            await wait_converged(sandbox_in_process, demo.expected, within=60, consumer=task)
            pipeline = running.pipeline
            assert pipeline is not None
            every = len(demo.expected)
            all_held = await eventually(lambda: pipeline.unread_settled_jobs == every, within=15)
            assert all_held, (pipeline.unread_settled_jobs, every)
            assert pipeline.job_count == every
            posts = {j: len(jobs[j].history) for j in demo.expected}
            await produce(kafka_bootstrap, topics.inputs, final_upserts([job], "read again"))
            expected = {**demo.expected, **with_title({job: demo.expected[job]}, "read again")}
            await wait_converged(sandbox_in_process, expected, within=60, consumer=task)
            assert await eventually(lambda: pipeline.unread_settled_jobs == every, within=15)
        assert {j: len(jobs[j].history) for j in demo.expected} == {**posts, job: posts[job] + 1}
        async with consumer_running(settings) as (again, _):
            assert await eventually(lambda: _owns_partitions(again), within=30)
            assert again.pipeline is not None
            assert again.pipeline.job_count == len(demo.expected)
            assert again.pipeline.unread_settled_jobs == len(demo.expected)

    async def test_settled_jobs_restored_unread_are_forgotten_after_the_retention(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """Restarted with a short retention, the member forgets the ended jobs it restored
        unread (deciding from their settled mark, reading each only to write its marker): none
        is left in memory, and a third run restores none of them."""
        topics = await new_topics(make_topic, partitions=1)
        demo = build_demo(DemoPlan(jobs=5, seed=41, abort_share=0, exclude_share=0))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        async with consumer_running(settings) as (_, task):
            await wait_converged(sandbox_in_process, demo.expected, within=30, consumer=task)
        short = settings.model_copy(
            update={"sync": settings.sync.model_copy(update={"retention_s": 1.0})}
        )
        async with consumer_running(short) as (restarted, _):
            assert await eventually(lambda: restarted.stats.restored_jobs == 5, within=30)
            assert await eventually(lambda: _empty(restarted), within=15), "never swept"
        async with consumer_running(settings) as (again, _):
            assert await eventually(lambda: again.stats.restores > 0, within=30)
            assert again.stats.restored_jobs == 0

    async def test_a_settled_mark_that_lies_does_not_get_a_job_forgotten(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """A changelog record marked settled and terminal over the state of a job still in
        progress (written by hand, not by the checkpoint): the sweep reads the state before it
        forgets the job, and keeps it."""
        topics = await new_topics(make_topic, partitions=1)
        old = datetime(2026, 1, 1, tzinfo=UTC)
        state = replace(
            fold(None, [upserted("lying", workflowId="wf"), status_changed("lying", "InProgress")]),
            updated_at=old,
        )
        state = replace(state, synced_version=state.version, synced_sha256="0" * 64)
        mark = f"{old.isoformat()}|T".encode()
        await produce_raw(
            kafka_bootstrap,
            topics.state,
            [(b"lying", encode_state(state), [(SETTLED_HEADER, mark)])],
        )
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics, retention_s=1.0)
        async with consumer_running(settings) as (running, _):
            assert await eventually(lambda: running.stats.restored_jobs == 1, within=30)
            assert running.pipeline is not None
            pipeline = running.pipeline
            assert await eventually(lambda: pipeline.unread_settled_jobs == 0, within=15)
            await asyncio.sleep(1)  # four more sweeps
            assert pipeline.job_count == 1


class TestInDoubtMarks:
    async def test_a_mark_written_by_a_clock_a_day_ahead_waits_the_window_not_the_day(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """The changelog holds a job whose request was in doubt when its owner died, marked by
        a clock a day ahead of this member's. The member that restores it waits the in-doubt
        window (three 1 s request timeouts) from its take, then posts the job: counted from
        the mark, it would have waited the day."""
        topics = await new_topics(make_topic, partitions=1)
        ahead = datetime.now(UTC) + timedelta(days=1)
        state = fold(None, [upserted("ahead", workflowId="wf", jobTitle="marked ahead")])
        state = replace(state, sending_since=ahead)
        await produce_raw(kafka_bootstrap, topics.state, [(b"ahead", encode_state(state), [])])
        settings = with_request_timeout(
            settings_for(kafka_bootstrap, sandbox_in_process, topics), 1
        )
        async with consumer_running(settings) as (running, task):
            assert await eventually(lambda: running.stats.restored_jobs == 1, within=30)
            taken = time.monotonic()
            posted = await eventually(
                lambda: stored(sandbox_in_process, "ahead") is not None, within=30
            )
            waited = time.monotonic() - taken
            assert posted, "the job marked a day ahead was not posted"
            assert not task.done()
        assert 2.0 <= waited < 20, waited
        body = stored(sandbox_in_process, "ahead")
        assert body is not None
        assert body["metadata"]["jobTitle"] == "marked ahead"


def _owns_partitions(running: Running) -> bool:
    return running.pipeline is not None and bool(running.pipeline.owned_partitions)


def _empty(running: Running) -> bool:
    assert running.pipeline is not None
    return running.pipeline.job_count == 0


class TestTopology:
    async def test_input_topics_with_different_partition_counts_stop_the_start(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """Co-partitioning is checked at start: inputs of 2 and 3 partitions are refused."""
        topics = await new_topics(make_topic, partitions=2)
        other = await make_topic("in3", partitions=3)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        settings = settings.model_copy(
            update={"topics": settings.topics.model_copy(update={"input": [*topics.inputs, other]})}
        )
        with pytest.raises(TopicLayoutError, match="co-partitioned"):
            async with consumer_running(settings) as (_, task):
                await task

    async def test_a_changelog_it_creates_is_compacted_with_hourly_segments(
        self, kafka_bootstrap: str, make_topic: MakeTopic
    ) -> None:
        """The changelog the consumer creates is compacted and rolls its segment hourly: the
        cleaner never compacts the active segment, which by the broker's default would hold a
        week of writes for every restore to read."""
        inputs = await make_topic("in", partitions=2)
        changelog = f"created-state-{uuid.uuid4().hex[:12]}"
        plan = TopicPlan(
            inputs=InputTopics(listed=(inputs,)),
            changelog=changelog,
            results=(),
            create_missing=True,
            replication_factor=1,
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            assert (await ensure_topology(admin, plan)).partition_count == 2
            config = await _topic_config(admin, changelog)
            await admin.delete_topics([changelog])
        finally:
            await admin.close()
        assert config["cleanup.policy"] == "compact"
        assert config["segment.ms"] == str(CHANGELOG_SEGMENT_MS) == "3600000"


async def _topic_config(admin: AIOKafkaAdminClient, topic: str) -> dict[str, str]:
    """A topic's configuration, once the broker knows the topic (a creation is not immediate)."""
    for _ in range(100):
        responses: Any = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
        [(code, _message, _type, _name, entries)] = responses[0].resources
        if code == 0:
            return {str(name): str(value) for name, value, *_ in entries}
        await asyncio.sleep(0.1)
    raise AssertionError(f"{topic} never described (error {code})")
