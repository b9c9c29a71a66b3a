"""Bounded, not fatal: oversized input, big jobs and forgotten jobs, against `basicsync run`.

Each test runs the consumer as a process (``python -m consumer run``) on the real broker and
posts to an in-process sandbox over HTTP; the process must never exit on its own.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from consumer.demo import DemoPlan, build_demo
from consumer.demo.jobs import DemoJobs
from consumer.domain.events import EventType, JobEvent, encode_structured
from consumer.kafka.admin import described_configs
from consumer.kafka.limits import CHANGELOG_FRAMING_BYTES
from consumer.testing.workfloplus import Sandbox
from tests.integration.harness import (
    MakeTopic,
    Topics,
    assembled_in_partition_order,
    assert_history_never_shrinks,
    assert_read_to_the_end,
    consumer_process,
    eventually,
    eventually_async,
    final_upserts,
    free_port,
    in_chunks,
    killed_under_live_traffic,
    log_events,
    new_topics,
    produce,
    produce_raw,
    raw_records,
    read_records,
    same_time,
    scraped,
    send_live,
    settings_for,
    start_consumer_process,
    stored,
    tail,
    wait_converged,
    with_request_timeout,
    with_title,
)

pytestmark = pytest.mark.integration


async def _stop(process: subprocess.Popen[bytes], log: str) -> None:
    """The process is still running (it never exited on its own) and stops cleanly."""
    assert process.poll() is None, tail(log)
    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 60) == 0, tail(log)


def _big_job(steps: int) -> tuple[str, list[JobEvent]]:
    demo = build_demo(
        DemoPlan(jobs=1, steps=steps, prefix="big", abort_share=0, exclude_share=0, seed=5)
    )
    [job] = demo.expected
    return job, demo.events


#: the changelog's limit in the tests of a changelog too small for a job
SMALL_CHANGELOG_BYTES = 16 * 1024


async def _small_changelog(
    make_topic: MakeTopic, prefix: str, seed: int, *, max_message_bytes: int = 4 * 1024 * 1024
) -> tuple[Topics, DemoJobs, str, list[JobEvent]]:
    """One partition whose changelog takes records of ``max_message_bytes`` at most, and 20
    demo jobs of six steps (3.7 to 8.4 kB of state: well within the 16 KiB changelog of the
    tests that lower it, a late title included) with a 300-step job (about 300 KB of state)
    spread among their events."""
    topics = await new_topics(make_topic, partitions=1)
    config = {"cleanup.policy": "compact", "max.message.bytes": str(max_message_bytes)}
    topics = dataclasses.replace(
        topics, state=await make_topic(f"state-{prefix}", partitions=1, config=config)
    )
    demo = build_demo(DemoPlan(jobs=20, steps=6, seed=seed, prefix=prefix))
    big, big_events = _big_job(300)
    return topics, demo, big, _spread(big_events, demo.events)


async def _until_refused(log: str) -> None:
    refused = await eventually(
        lambda: bool(log_events(log, "changelog_record_too_large")), within=60
    )
    assert refused, tail(log)


async def _lower_changelog_limit_once_started(
    bootstrap: str, topic: str, log: str, limit: int = SMALL_CHANGELOG_BYTES
) -> None:
    """Once the member has its partition (it read the changelog's limit at its start), lower
    that limit to ``limit``, below the big job's state."""
    assert await eventually(lambda: bool(log_events(log, "partitions_assigned")), within=60), tail(
        log
    )
    await _set_changelog_limit(bootstrap, topic, limit)


async def _set_changelog_limit(bootstrap: str, topic: str, max_message_bytes: int) -> None:
    """What operations tells the operator to do to a changelog too small: raise its limit."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"cleanup.policy": "compact", "max.message.bytes": str(max_message_bytes)}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=config)])
        # The broker applies a change when it replays the metadata log: under load, records
        # written meanwhile still meet the old limit (the lowered-changelog test once saw 98
        # steps fit in "16 KiB"). Go on only once the broker describes the new one.
        applied = await eventually_async(
            lambda: _limit_described(admin, topic, str(max_message_bytes)), within=30
        )
        assert applied, f"{topic}: max.message.bytes never became {max_message_bytes}"
    finally:
        await admin.close()


async def _limit_described(admin: AIOKafkaAdminClient, topic: str, limit: str) -> bool:
    config = await described_configs(admin, ConfigResourceType.TOPIC, topic)
    return config.get("max.message.bytes") == limit


async def _once_the_big_job_is_synced(
    sandbox: Sandbox, bootstrap: str, topics: Topics, big: str, log: str
) -> list[Any]:
    """The failure records, once WorkfloPlus holds the big job (the part of it that fit)."""
    assert await eventually(lambda: stored(sandbox, big) is not None, within=60), tail(log)
    return await _failures(bootstrap, topics.failed)


def _frozen_with_one_failure(
    sandbox: Sandbox, failures: list[Any], big: str, big_events: list[JobEvent]
) -> int:
    """The big job got its one ``job_too_large`` record, at the version of every event
    before its first step that did not fit, and WorkfloPlus holds the steps before it: how
    many there are."""
    assert [(f["clientJobId"], f["reason"]) for f in failures] == [(big, "job_too_large")]
    steps = len(stored(sandbox, big)["completedSteps"])  # type: ignore[index]
    step_events = [i for i, e in enumerate(big_events) if e.type is EventType.step_completed]
    assert failures[0]["stateVersion"] == step_events[steps]
    return steps


def _one_more_step(big_events: list[JobEvent]) -> JobEvent:
    """A step after the big job's last one: a new step id, later than every demo event."""
    last = [e for e in big_events if e.type is EventType.step_completed][-1]
    step = last.data.single_step.model_copy(  # type: ignore[union-attr]
        update={"unique_step_id": "one-more-step", "step_number": 301}
    )
    data = last.data.model_copy(update={"single_step": step})
    return last.replaced(id="one-more", time=datetime(2026, 6, 1, tzinfo=UTC), data=data)


def _big_expected(steps: int) -> dict[str, dict[str, Any]]:
    return build_demo(
        DemoPlan(jobs=1, steps=steps, prefix="big", abort_share=0, exclude_share=0, seed=5)
    ).expected


def _spread(events: list[JobEvent], among: list[JobEvent]) -> list[JobEvent]:
    """``among`` with ``events`` spread evenly through it, each list in its own order."""
    placed = [(n / len(events), e) for n, e in enumerate(events)]
    placed += [(n / len(among), e) for n, e in enumerate(among)]
    return [e for _, e in sorted(placed, key=lambda p: p[0])]


def _forgotten(log: str) -> int:
    """Jobs the process has forgotten so far, from its ``retention_swept`` log lines."""
    return sum(line["forgotten"] for line in log_events(log, "retention_swept"))


async def _failures(bootstrap: str, topic: str) -> list[Any]:
    return await read_records(bootstrap, topic, settle_s=0.5)


#: ``max.message.bytes`` of the result topics that take only small batches
SMALL_RESULTS = 8192


async def _small_result_topics(
    make_topic: MakeTopic, bootstrap: str, prefix: str
) -> tuple[Topics, DemoJobs, list[bytes]]:
    """One partition, result topics limited to :data:`SMALL_RESULTS`, and produced: a backlog
    of 150 jobs with twelve 30 KB undecodable values in its middle."""
    topics = await new_topics(make_topic, partitions=1)
    small = {"max.message.bytes": str(SMALL_RESULTS)}
    topics = dataclasses.replace(
        topics,
        succeeded=await make_topic(f"ok-{prefix}", partitions=1, config=small),
        failed=await make_topic(f"failed-{prefix}", partitions=1, config=small),
    )
    demo = build_demo(DemoPlan(jobs=150, seed=47, prefix=f"{prefix}-results"))
    garbage = [os.urandom(30_000) for _ in range(12)]
    half = len(demo.events) // 2
    await produce(bootstrap, topics.inputs, demo.events[:half])
    await produce_raw(bootstrap, topics.inputs[0], [(b"garbage", g, []) for g in garbage])
    await produce(bootstrap, topics.inputs, demo.events[half:])
    return topics, demo, garbage


async def _assert_every_result_within_the_limit(
    bootstrap: str, topics: Topics, demo: DemoJobs, garbage: list[bytes]
) -> None:
    """Offsets at the end; committed: a success record for every job (after a kill, those of
    the jobs in doubt come once the in-doubt window has passed and they are posted again),
    exactly one failure record for every undecodable value (its size, sha256 and
    coordinates), each record within :data:`SMALL_RESULTS`."""
    await assert_read_to_the_end(bootstrap, topics.group, len(demo.events) + len(garbage))
    succeeded: list[tuple[bytes, bytes]] = []

    async def every_job_reported() -> bool:
        succeeded[:] = await raw_records(bootstrap, topics.succeeded, committed=True)
        return {json.loads(v)["clientJobId"] for _, v in succeeded} == set(demo.expected)

    for _ in range(60):
        if await every_job_reported():
            break
        await asyncio.sleep(0.5)
    failed = await raw_records(bootstrap, topics.failed, committed=True)
    assert all(len(value) <= SMALL_RESULTS for _, value in failed + succeeded)
    assert {json.loads(v)["clientJobId"] for _, v in succeeded} == set(demo.expected)
    failures = {json.loads(v)["source"]["valueSha256"]: json.loads(v) for _, v in failed}
    assert len(failed) == len(garbage), [json.loads(v)["reason"] for _, v in failed]
    for value in garbage:
        record = failures[hashlib.sha256(value).hexdigest()]
        assert record["reason"] == "invalid_event"
        source = record["source"]
        assert (source["valueSize"], source["truncated"]) == (30_000, True)
        # The value itself is given up first (the coordinates locate it, for redrive).
        assert source["value"] is None or value.startswith(base64.b64decode(source["value"]))
        assert (source["topic"], isinstance(source["offset"], int)) == (topics.inputs[0], True)


class TestOversizedInput:
    async def test_a_900_kb_undecodable_value_gets_a_bounded_failure_record(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """900 KB of garbage among normal jobs yields one invalid_event record carrying at most
        64 KiB of it with its full size, sha256 and exact coordinates; the jobs converge and
        the process never exits (before, the record exceeded the producer's limit and the
        process died on every restart)."""
        topics = await new_topics(make_topic, partitions=3)
        demo = build_demo(DemoPlan(jobs=20, seed=41))
        garbage = os.urandom(900_000)
        await produce(kafka_bootstrap, topics.inputs, demo.events[: len(demo.events) // 2])
        await produce_raw(kafka_bootstrap, topics.inputs[0], [(b"garbage-job", garbage, [])])
        await produce(kafka_bootstrap, topics.inputs, demo.events[len(demo.events) // 2 :])
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        process = start_consumer_process(settings, log)
        try:
            await wait_converged(sandbox_in_process, demo.expected, within=90)
            failures: list[Any] = []

            async def failed() -> bool:
                failures[:] = await _failures(kafka_bootstrap, topics.failed)
                return bool(failures)

            for _ in range(40):
                if await failed():
                    break
            [record] = failures
        finally:
            await _stop(process, log)
        assert record["reason"] == "invalid_event"
        source = record["source"]
        assert source["valueSize"] == 900_000
        assert source["valueSha256"] == hashlib.sha256(garbage).hexdigest()
        assert source["truncated"] is True
        assert base64.b64decode(source["value"]) == garbage[: 64 * 1024]
        assert source["topic"] == topics.inputs[0]
        assert isinstance(source["partition"], int)
        assert isinstance(source["offset"], int)

    async def test_records_of_megabytes_on_an_input_that_takes_them_are_failed_bounded(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """An input topic whose ``max.message.bytes`` the producers raised to 24 MiB, far past
        the megabyte a fetch asks for (Kafka still returns a larger first record): 12 MB of
        random bytes and a well-formed event of a live job carrying 3 MB of data (both
        ``oversized_event``, judged by size before a byte is decoded), and a small bad value
        under 3 MB of headers (``invalid_event``), among 40 jobs' events. Each gets one
        failure record with its full size and sha256, fitted under the failure topic's default
        limit (the value cut to 64 KiB, the headers dropped); the jobs converge (the big
        event's job as if it had never come), the offsets reach the end and the process never
        exits."""
        topics = await new_topics(make_topic, partitions=2)
        big_input = await make_topic(
            "in-big", partitions=2, config={"max.message.bytes": str(24 * 1024 * 1024)}
        )
        topics = dataclasses.replace(topics, inputs=[big_input])
        demo = build_demo(DemoPlan(jobs=40, seed=59, prefix="megabytes"))
        live = next(e for e in demo.events if e.type is EventType.upserted)
        key, value, headers = encode_structured(live)
        envelope = json.loads(value)
        envelope.update(id="three-megabytes", data={"jobTitle": "x" * 3_000_000})
        headed = [(f"h{n}", os.urandom(100_000)) for n in range(30)]
        huge: list[tuple[bytes | None, bytes | None, list[Any], str]] = [
            (b"noise", os.urandom(12_000_000), [], "oversized_event"),
            (key, json.dumps(envelope).encode(), headers, "oversized_event"),
            (b"headed", b"{not json", headed, "invalid_event"),
        ]
        half = len(demo.events) // 2
        await produce(kafka_bootstrap, topics.inputs, demo.events[:half])
        await produce_raw(
            kafka_bootstrap,
            big_input,
            [(k, v, h) for k, v, h, _ in huge],
            max_request_size=32 * 1024 * 1024,
        )
        await produce(kafka_bootstrap, topics.inputs, demo.events[half:])
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        process = start_consumer_process(settings, log)
        try:
            await wait_converged(sandbox_in_process, demo.expected, within=90)
            await assert_read_to_the_end(kafka_bootstrap, topics.group, len(demo.events) + 3)
            failed: list[tuple[bytes, bytes]] = []
            for _ in range(40):
                failed[:] = await raw_records(kafka_bootstrap, topics.failed, committed=True)
                if len(failed) >= len(huge):
                    break
        finally:
            await _stop(process, log)
        assert all(len(v) < 1_000_000 for _, v in failed), [len(v) for _, v in failed]
        records = {json.loads(v)["source"]["valueSha256"]: json.loads(v) for _, v in failed}
        assert len(failed) == len(records) == len(huge), sorted(records)
        for _, value_bytes, _, reason in huge:
            assert value_bytes is not None
            record = records[hashlib.sha256(value_bytes).hexdigest()]
            source = record["source"]
            assert (record["reason"], source["valueSize"]) == (reason, len(value_bytes))
            assert (source["topic"], source["truncated"]) == (big_input, True)
            kept = base64.b64decode(source["value"] or "")
            assert value_bytes.startswith(kept)
            assert len(kept) <= 64 * 1024
        headed_record = records[hashlib.sha256(b"{not json").hexdigest()]
        assert headed_record["source"]["headers"] == []  # 3 MB of them would not fit
        assert stored(sandbox_in_process, live.subject) == demo.expected[live.subject]

    async def test_result_topics_that_take_only_small_batches_get_every_record(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """Both result topics take batches of at most 8 KiB (their ``max.message.bytes``), far
        below the megabyte a checkpoint's batch may fill: one partition, a backlog of 150 jobs
        (the checkpoint after it reports them all at once) and twelve 30 KB undecodable
        values. Batches the broker refuses are split, and a record refused alone is reduced
        until it fits: every job gets its success record, every value one failure record with
        its full size, sha256 and coordinates (the value itself given up), each record within
        the limit; the offsets reach the end and nothing exits. (Before, the first refusal left
        aiokafka's sequence numbers ahead of the broker's: every later batch of the partition
        was refused as out of order, forever, and SIGTERM could not stop the member.)"""
        topics, demo, garbage = await _small_result_topics(make_topic, kafka_bootstrap, "small")
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        process = start_consumer_process(settings, log)
        try:
            await wait_converged(sandbox_in_process, demo.expected, within=90)
            await _assert_every_result_within_the_limit(kafka_bootstrap, topics, demo, garbage)
        finally:
            await _stop(process, log)

    async def test_killed_while_result_batches_are_refused_the_next_member_reports_once(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """The same 8 KiB result topics, and the member is SIGKILLed as soon as it logs its
        first refused batch (``record_batch_refused_too_large``), its transaction open. A new
        member, whose producer starts again at full-size batches, is refused and splits in
        turn: every job gets its success record, every undecodable value exactly one failure
        record (the killed member's transaction is aborted, never read), every record within
        the limit, and the offsets reach the end."""
        topics, demo, garbage = await _small_result_topics(make_topic, kafka_bootstrap, "killed")
        settings = with_request_timeout(
            settings_for(kafka_bootstrap, sandbox_in_process, topics), 3
        )
        log = str(tmp_path / "consumer.log")
        process = start_consumer_process(settings, log)
        try:
            refused = await eventually(
                lambda: bool(log_events(log, "record_batch_refused_too_large")), within=60
            )
            assert refused, tail(log)
        finally:
            process.kill()
            await asyncio.to_thread(process.wait, 10)
        async with consumer_process(settings, str(tmp_path / "after.log")):
            await wait_converged(sandbox_in_process, demo.expected, within=90)
            await _assert_every_result_within_the_limit(kafka_bootstrap, topics, demo, garbage)


class TestBigJob:
    async def test_a_2500_step_job_converges_among_normal_jobs(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """One job of 2,500 steps of about 1 KB each (a 2 MB document, beyond the broker's
        default 1 MB record) converges with its 20 neighbours, no failure record, no exit."""
        topics = await new_topics(make_topic, partitions=3)
        demo = build_demo(DemoPlan(jobs=20, seed=43))
        big, big_events = _big_job(2_500)
        big_expected = build_demo(
            DemoPlan(jobs=1, steps=2_500, prefix="big", abort_share=0, exclude_share=0, seed=5)
        ).expected
        await produce(kafka_bootstrap, topics.inputs, [*big_events, *demo.events])
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        process = start_consumer_process(settings, log)
        try:
            await wait_converged(sandbox_in_process, demo.expected, within=120)
            await wait_converged(sandbox_in_process, big_expected, within=120)
        finally:
            await _stop(process, log)
        assert len(stored(sandbox_in_process, big)["completedSteps"]) == 2_500  # type: ignore[index]
        assert await _failures(kafka_bootstrap, topics.failed) == []

    async def test_a_changelog_created_too_small_limits_the_big_job_and_holds_nothing(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """A changelog created by hand with ``max.message.bytes`` of 64 KiB, below what
        ``max_job_bytes`` needs: the member says so at its start and limits jobs to what the
        topic holds, so the 300-step job (about 300 KB) gets its one ``job_too_large``
        naming the changelog, WorkfloPlus keeps the part that fit, and nobody waits: the 20
        other jobs of its only partition converge, the offsets reach the end, the broker
        never refuses a state, nothing exits."""
        topics, demo, big, events = await _small_changelog(
            make_topic, "small-changelog", 53, max_message_bytes=64 * 1024
        )
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        process = start_consumer_process(settings, log)
        try:
            await produce(kafka_bootstrap, topics.inputs, events)
            await wait_converged(sandbox_in_process, demo.expected, within=90)
            await assert_read_to_the_end(kafka_bootstrap, topics.group, len(events))
            failures = await _once_the_big_job_is_synced(
                sandbox_in_process, kafka_bootstrap, topics, big, log
            )
        finally:
            await _stop(process, log)
        [said] = log_events(log, "changelog_holds_smaller_jobs")
        assert said["max_message_bytes"] == 64 * 1024
        assert log_events(log, "changelog_record_too_large") == []
        steps = _frozen_with_one_failure(sandbox_in_process, failures, *_big_job(300))
        assert 20 < steps < 64
        assert "changelog topic's max.message.bytes" in failures[0]["error"]["message"]

    async def test_a_changelog_lowered_under_a_running_member_limits_the_big_job_and_holds_nothing(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """The changelog's ``max.message.bytes`` lowered to 16 KiB after the member started
        (it sized its jobs by the topic at its start), below what the 300-step job grows to:
        the broker refuses its state once, the member reads the topic's limit again, lowers
        its job limit to it (``changelog_record_too_large`` names the room) and reads the
        partition again from its last commit. The big job gets its one ``job_too_large``,
        WorkfloPlus keeps the part that fit, the 20 other jobs of the partition converge,
        the offsets reach the end, nothing exits and nobody raises the topic. (Before, the
        partition retried every 5 s until an operator raised the limit.)"""
        topics, demo, big, events = await _small_changelog(make_topic, "lowered-changelog", 53)
        settings = with_request_timeout(
            settings_for(kafka_bootstrap, sandbox_in_process, topics), 3
        )
        log = str(tmp_path / "consumer.log")
        async with consumer_process(settings, log):
            await _lower_changelog_limit_once_started(kafka_bootstrap, topics.state, log)
            await produce(kafka_bootstrap, topics.inputs, events)
            await _until_refused(log)
            await wait_converged(sandbox_in_process, demo.expected, within=90)
            await assert_read_to_the_end(kafka_bootstrap, topics.group, len(events))
            failures = await _once_the_big_job_is_synced(
                sandbox_in_process, kafka_bootstrap, topics, big, log
            )
        room = SMALL_CHANGELOG_BYTES - CHANGELOG_FRAMING_BYTES - len(topics.group.encode())
        assert {line["room"] for line in log_events(log, "changelog_record_too_large")} == {room}
        assert log_events(log, "job_state_not_written") == []
        steps = _frozen_with_one_failure(sandbox_in_process, failures, *_big_job(300))
        assert 2 < steps < 16
        assert_history_never_shrinks(sandbox_in_process, [*demo.expected, big])

    async def test_a_state_held_above_a_lowered_changelog_is_left_and_holds_nothing(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """The 300-step job is posted whole, then the changelog is lowered to 16 KiB, below
        the state it already holds, and one more step of it arrives with a late title for
        every other job. The grown state is refused, the job limit lowered and the partition
        read again: the step gets the big job's one ``job_too_large``, and the state it keeps
        (above the new limit, grown by no event) is refused again and left as the changelog
        has it (``job_state_not_written``, ``basicsync_state_jobs_unwritten``) instead of
        holding the partition. The other jobs
        take their late titles; WorkfloPlus keeps the big job's 300 steps."""
        topics, demo, big, events = await _small_changelog(make_topic, "held-changelog", 61)
        big_expected = _big_expected(300)
        settings = with_request_timeout(
            settings_for(kafka_bootstrap, sandbox_in_process, topics), 3
        )
        log, port = str(tmp_path / "consumer.log"), free_port()
        async with consumer_process(
            settings, log, {"BASICSYNC_OBSERVABILITY__HTTP_PORT": str(port)}
        ):
            await produce(kafka_bootstrap, topics.inputs, events)
            await wait_converged(sandbox_in_process, {**demo.expected, **big_expected}, within=90)
            await _set_changelog_limit(kafka_bootstrap, topics.state, SMALL_CHANGELOG_BYTES)
            one_more = _one_more_step(_big_job(300)[1])
            late = final_upserts(list(demo.expected), "late")
            await produce(kafka_bootstrap, topics.inputs, [one_more, *late])
            await wait_converged(sandbox_in_process, with_title(demo.expected, "late"), within=90)
            await assert_read_to_the_end(kafka_bootstrap, topics.group, len(events) + 21)
            failures = await _failures(kafka_bootstrap, topics.failed)
            room = SMALL_CHANGELOG_BYTES - CHANGELOG_FRAMING_BYTES - len(topics.group.encode())
            assert await scraped(port, "basicsync_changelog_room_bytes") == room
            assert await scraped(port, "basicsync_state_jobs_unwritten") == 1
        assert [(f["clientJobId"], f["reason"]) for f in failures] == [(big, "job_too_large")]
        assert [line["client_job_id"] for line in log_events(log, "job_state_not_written")] == [big]
        assert stored(sandbox_in_process, big) == big_expected[big]
        assert_history_never_shrinks(sandbox_in_process, [*demo.expected, big])

    async def test_killed_as_the_changelog_refuses_a_state_the_next_member_loses_nothing(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """The changelog lowered under the running member and the member SIGKILLed as soon as
        the broker refuses the big job's state, mid re-read of its partition. The next member
        reads the topic's limit at its start: every job converges, the big job still has
        exactly one ``job_too_large``, and the offsets reach the end."""
        topics, demo, big, events = await _small_changelog(make_topic, "refused-killed", 59)
        settings = with_request_timeout(
            settings_for(kafka_bootstrap, sandbox_in_process, topics), 3
        )
        log = str(tmp_path / "consumer.log")
        process = start_consumer_process(settings, log)
        await _lower_changelog_limit_once_started(kafka_bootstrap, topics.state, log)
        await produce(kafka_bootstrap, topics.inputs, events)
        await _until_refused(log)
        process.kill()
        await asyncio.to_thread(process.wait, 30)
        async with consumer_process(settings, str(tmp_path / "after.log")):
            await wait_converged(sandbox_in_process, demo.expected, within=90)
            await assert_read_to_the_end(kafka_bootstrap, topics.group, len(events))
            failures = await _once_the_big_job_is_synced(
                sandbox_in_process, kafka_bootstrap, topics, big, log
            )
        _frozen_with_one_failure(sandbox_in_process, failures, *_big_job(300))
        assert_history_never_shrinks(sandbox_in_process, [*demo.expected, big])

    async def test_events_of_one_time_keep_partition_order_through_the_refusal_retake(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """Every event carries one time, so only the partition's order tells a job's writes
        apart. The changelog is lowered under the running member; the refusal gives the
        partition up and reads it again from its last commit onto the states written so far,
        some ahead of it: an event applied twice, or lost, would break a tie another way. Late
        titles of the same time, sent after the refusal, win by position alone. The 20 jobs end
        with their partition-order documents, the big job has its one ``job_too_large``, the
        offsets reach the end and no history shrinks."""
        topics, demo, big, events = await _small_changelog(make_topic, "same-time-refused", 67)
        events = same_time(events)
        late = same_time(final_upserts(list(demo.expected), "late"))
        expected = assembled_in_partition_order([*events, *late])
        del expected[big]
        by_id = assembled_in_partition_order(sorted(events, key=lambda event: event.id))
        in_order = assembled_in_partition_order(events)
        assert sum(1 for job in demo.expected if in_order[job] != by_id[job]) >= 5
        settings = with_request_timeout(
            settings_for(kafka_bootstrap, sandbox_in_process, topics), 3
        )
        log = str(tmp_path / "consumer.log")
        async with consumer_process(settings, log):
            # 24 KiB: below the big job's 39 KB, above the 12 KB some of these jobs reach
            await _lower_changelog_limit_once_started(
                kafka_bootstrap, topics.state, log, limit=24 * 1024
            )
            await produce(kafka_bootstrap, topics.inputs, events)
            await _until_refused(log)
            await produce(kafka_bootstrap, topics.inputs, late)
            await wait_converged(sandbox_in_process, expected, within=90)
            await assert_read_to_the_end(kafka_bootstrap, topics.group, len(events) + len(late))
            failures = await _once_the_big_job_is_synced(
                sandbox_in_process, kafka_bootstrap, topics, big, log
            )
        refused = [f for f in failures if f["reason"] != "invalid_transition"]
        _frozen_with_one_failure(sandbox_in_process, refused, *_big_job(300))
        assert_history_never_shrinks(sandbox_in_process, [*demo.expected, big])

    async def test_a_job_beyond_max_job_bytes_gets_one_job_too_large(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """With BASICSYNC_KAFKA__MAX_JOB_BYTES lowered to 500 kB the 2,500-step job gets
        exactly one job_too_large record and WorkfloPlus keeps the part that fit; the normal
        jobs converge and the process never exits."""
        topics = await new_topics(make_topic, partitions=3)
        demo = build_demo(DemoPlan(jobs=20, seed=47))
        big, big_events = _big_job(2_500)
        await produce(kafka_bootstrap, topics.inputs, [*big_events, *demo.events])
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        process = start_consumer_process(
            settings, log, {"BASICSYNC_KAFKA__MAX_JOB_BYTES": "500000"}
        )
        try:
            await wait_converged(sandbox_in_process, demo.expected, within=120)
            failures = await _once_the_big_job_is_synced(
                sandbox_in_process, kafka_bootstrap, topics, big, log
            )
        finally:
            await _stop(process, log)
        steps = _frozen_with_one_failure(sandbox_in_process, failures, big, big_events)
        assert 100 < steps < 2_500

    async def test_a_job_growing_past_max_job_bytes_through_two_kills_under_live_traffic(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """The 2,500-step job again, its events spread among 200 live jobs', the consumer
        SIGKILLed three times while they arrive. Live checkpoints leave jobs to their intents
        and hold their offsets back, and a kill replays onto what was written; a job frozen
        as too large names no offset of its own. It still gets exactly one job_too_large
        record, frozen at the same event, every other job converges, and the committed offsets
        reach the end of the input: the frozen job holds nothing back."""
        topics = await new_topics(make_topic, partitions=3)
        demo = build_demo(DemoPlan(jobs=200, seed=53, prefix="live-big"))
        big, big_events = _big_job(2_500)
        stream = _spread(demo.events, big_events)
        settings = with_request_timeout(
            settings_for(kafka_bootstrap, sandbox_in_process, topics, debounce_ms=300), 3
        )
        env = {"BASICSYNC_KAFKA__MAX_JOB_BYTES": "500000"}
        log = str(tmp_path / "consumer.log")

        async def send(chunk: list[JobEvent]) -> None:
            await produce(kafka_bootstrap, topics.inputs, chunk)

        rest = await killed_under_live_traffic(
            settings, log, sandbox_in_process, in_chunks(stream, 16), send, extra_env=env
        )
        async with consumer_process(settings, log, env):
            await send_live(send, rest)
            await wait_converged(sandbox_in_process, demo.expected, within=180)

            await assert_read_to_the_end(kafka_bootstrap, topics.group, len(stream))
            failures = await _failures(kafka_bootstrap, topics.failed)
        assert [(f["clientJobId"], f["reason"]) for f in failures] == [(big, "job_too_large")]
        steps = len(stored(sandbox_in_process, big)["completedSteps"])  # type: ignore[index]
        step_events = [i for i, e in enumerate(big_events) if e.type is EventType.step_completed]
        assert failures[0]["stateVersion"] == step_events[steps]
        assert_history_never_shrinks(sandbox_in_process, [*demo.expected, big])


class TestForgotten:
    async def test_a_late_event_after_retention_gets_job_forgotten_and_no_stub_post(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """A completed job forgotten after a 1 s retention keeps a marker: a late upsert with
        workflowId gets job_forgotten with the job's last version, and nothing is posted."""
        topics = await new_topics(make_topic, partitions=3)
        demo = build_demo(DemoPlan(jobs=3, seed=53, abort_share=0))
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        process = start_consumer_process(settings, log, {"BASICSYNC_SYNC__RETENTION_S": "1"})
        try:
            await produce(kafka_bootstrap, topics.inputs, demo.events)
            await wait_converged(sandbox_in_process, demo.expected, within=60)
            job = demo.events[0].subject
            assert demo.expected[job]["metadata"]["status"] == "Completed"
            posts = len(sandbox_in_process.state.jobs[job].history)
            assert await eventually(lambda: _forgotten(log) == len(demo.expected), within=20)
            late = demo.events[0].replaced(id="late-event")
            await produce(kafka_bootstrap, topics.inputs, [late])
            failures: list[Any] = []
            for _ in range(40):
                failures = await _failures(kafka_bootstrap, topics.failed)
                if failures:
                    break
            await asyncio.sleep(1.0)
            assert len(sandbox_in_process.state.jobs[job].history) == posts
        finally:
            await _stop(process, log)
        [record] = failures
        assert record["reason"] == "job_forgotten"
        assert record["clientJobId"] == job
        assert record["stateVersion"] == sum(1 for e in demo.events if e.subject == job)
        assert stored(sandbox_in_process, job) == demo.expected[job]
