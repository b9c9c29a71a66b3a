"""The operator subcommands (demo, redrive, inspect, check) against the real broker and sandbox.

Each command runs as ``python -m consumer <cmd>`` in a child process with ``BASICSYNC_*`` set
by :func:`consumer_env`; the sandbox and (where needed) the consumer run in this event loop, so
the child is awaited with asyncio, never with a blocking wait.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from consumer.demo import DemoPlan, build_demo
from consumer.demo.example import EXAMPLE_BODY, EXAMPLE_CLIENT_JOB_ID, example_job_events
from consumer.kafka.partitioning import hashes_to
from consumer.testing.workfloplus import Sandbox
from tests.integration.harness import (
    BootstrapRelay,
    MakeTopic,
    basicsync,
    committed,
    consumer_running,
    delete_records,
    eventually_async,
    free_port,
    max_overlap,
    new_topics,
    produce,
    produce_raw,
    raw_records,
    read_records,
    settings_for,
    stored,
    wait_converged,
)

pytestmark = pytest.mark.integration


async def topic_size(bootstrap: str, topic: str) -> int:
    """How many records ``topic`` holds (sum of its end offsets)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        return sum(ends.values())
    finally:
        await consumer.stop()


async def failures_until(
    bootstrap: str, topic: str, done: Any, *, within: float = 30
) -> list[dict[str, Any]]:
    """Failure records of ``topic`` once ``done(records)`` holds (or fail after ``within``)."""
    deadline = time.monotonic() + within
    while True:
        records: list[dict[str, Any]] = await read_records(bootstrap, topic, settle_s=0.3)
        if done(records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"failure records never matched: {records}")
        await asyncio.sleep(0.2)


class TestDemo:
    async def test_demo_streams_jobs_that_the_consumer_converges(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """``demo`` sends every job's events plus the asked share of invalid ones; the consumer
        then converges all jobs and reports exactly the invalid events as failures."""
        topics = await new_topics(make_topic, partitions=2, inputs=3)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        prefix = f"cmd-{uuid.uuid4().hex[:6]}"
        ran = await basicsync(
            settings,
            "demo",
            *("--jobs", "12", "--steps", "3", "--seed", "5", "--prefix", prefix),
            *("--invalid-share", "0.1", "--rate", "0"),
        )
        assert ran.code == 0, ran.err
        plan = DemoPlan(jobs=12, steps=3, seed=5, prefix=prefix)
        demo = build_demo(plan)
        invalid = round(len(demo.events) * 0.1)
        assert f"sent {len(demo.events) + invalid} events ({invalid} invalid)" in ran.out
        assert "events" in ran.err  # the plain progress line (stderr is not a terminal)
        sizes = [await topic_size(kafka_bootstrap, topic) for topic in topics.inputs]
        assert sum(sizes) == len(demo.events) + invalid
        assert all(sizes), "events go to every input topic by kind"
        async with consumer_running(settings) as (_, task):
            await wait_converged(sandbox_in_process, demo.expected, within=60, consumer=task)
            failures = await failures_until(
                kafka_bootstrap, topics.failed, lambda records: len(records) >= invalid
            )
        assert len(failures) == invalid
        assert {f["reason"] for f in failures} <= {
            "invalid_event",
            "unknown_event_type",
            "key_mismatch",
        }

    async def test_demo_creates_missing_input_topics_only_when_asked(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """A missing input topic stops ``demo`` with exit code 4 and nothing created;
        ``--create-topics N`` creates it with N partitions and streams."""
        topics = await new_topics(make_topic)
        missing = f"cmd-missing-{uuid.uuid4().hex[:8]}"
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        env = {"BASICSYNC_TOPICS__INPUT": missing}
        refused = await basicsync(settings, "demo", "--jobs", "2", **env)
        assert refused.code == 4
        assert "--create-topics" in refused.err
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            assert missing not in await admin.list_topics()
            created = await basicsync(
                settings, "demo", "--jobs", "2", "--create-topics", "3", **env
            )
            assert created.code == 0, created.err
            [described] = await admin.describe_topics([missing])
            assert len(described["partitions"]) == 3
            assert await topic_size(kafka_bootstrap, missing) > 0
        finally:
            await admin.delete_topics([missing])
            await admin.close()

    async def test_demo_rate_paces_the_events(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """``--rate R`` sends no faster than R events per second."""
        topics = await new_topics(make_topic)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        events = len(build_demo(DemoPlan(jobs=2, steps=2, seed=4)).events)
        started = time.monotonic()
        ran = await basicsync(
            settings, "demo", "--jobs", "2", "--steps", "2", "--seed", "4", "--rate", "20"
        )
        assert ran.code == 0, ran.err
        assert time.monotonic() - started >= events / 20
        assert await topic_size(kafka_bootstrap, topics.inputs[0]) == events


class TestInspect:
    async def test_inspect_prints_a_synced_jobs_state_and_body(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """After the consumer synced the documented example, ``inspect --body`` prints its
        settled state (version = synced version, hash of the posted body) and that body."""
        topics = await new_topics(make_topic, partitions=3)
        await produce(kafka_bootstrap, topics.inputs, example_job_events())
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        async with consumer_running(settings) as (_, task):
            await wait_converged(
                sandbox_in_process, {EXAMPLE_CLIENT_JOB_ID: EXAMPLE_BODY}, within=30, consumer=task
            )
        succeeded = await read_records(kafka_bootstrap, topics.succeeded)
        ran = await basicsync(settings, "inspect", EXAMPLE_CLIENT_JOB_ID, "--body")
        assert ran.code == 0, ran.err
        shown = json.loads(ran.out)
        assert shown["clientJobId"] == EXAMPLE_CLIENT_JOB_ID
        assert shown["version"] == len(example_job_events())
        assert shown["syncedVersion"] == shown["version"]
        assert shown["settled"] is True
        assert shown["status"] == "Completed"
        assert shown["syncedSha256"] == succeeded[-1]["payloadSha256"] == shown["bodySha256"]
        assert shown["firstUnsyncedAt"] is None
        assert shown["body"] == EXAMPLE_BODY

    async def test_inspect_exits_1_for_an_unknown_job_or_an_unreadable_one(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """A job the changelog does not hold is reported on stderr with exit code 1; so is one
        whose value cannot be read, saying so (not "unknown": its events are being refused)."""
        topics = await new_topics(make_topic, partitions=2)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        ran = await basicsync(settings, "inspect", "no-such-job")
        assert ran.code == 1
        assert ran.out == ""
        assert "unknown job" in ran.err
        await produce_raw(kafka_bootstrap, topics.state, [(b"damaged", b"{not a state", [])])
        ran = await basicsync(settings, "inspect", "damaged")
        assert (ran.code, ran.out) == (1, "")
        assert "changelog value of job 'damaged' cannot be read" in ran.err
        assert "unknown job" not in ran.err


class TestCheck:
    async def test_check_passes_on_a_healthy_setup_without_printing_secrets(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """Broker, co-partitioned topics and a token-issuing gateway: every line ok, exit 0,
        and the client secret appears nowhere in the output."""
        topics = await new_topics(make_topic, partitions=2, inputs=2)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        ran = await basicsync(settings, "check")
        assert ran.code == 0, ran.out + ran.err
        lines = ran.out.splitlines()
        assert lines
        assert all(line.startswith("ok") for line in lines), ran.out
        assert {line.split()[1].rstrip(":") for line in lines} >= {
            "settings",
            "kafka",
            "input",
            "topic",
            "token",
            "gateway",
        }
        secret = sandbox_in_process.settings.client_secret
        assert secret not in ran.out + ran.err

    async def test_check_warns_a_new_group_whose_input_start_retention_moved(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """A group with no offsets (new, or its id changed by mistake) on an input whose
        partition 1 lost its first records to retention: a ``warn`` line names the partition
        and its start, and the exit code stays 0. Once the group has committed, the line is
        ``ok`` again: its offsets are within every partition."""
        topics = await new_topics(make_topic, partitions=2)
        [topic] = topics.inputs
        demo = build_demo(DemoPlan(jobs=12, seed=49))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        start = await delete_records(kafka_bootstrap, topic, 1, below=3)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        ran = await basicsync(settings, "check")
        assert ran.code == 0, ran.out + ran.err
        [line] = [line for line in ran.out.splitlines() if " input offsets: " in line]
        assert line.startswith(
            f"warn  input offsets: group {topics.group} has no committed offsets and will read "
            f"from each partition's start, but {topic} partition 1 starts at {start}: "
        ), ran.out
        assert f"{topic} partition 0" not in line
        assert [x for x in ran.out.splitlines() if not x.startswith("ok")] == [line]
        async with consumer_running(settings):

            async def both_committed() -> bool:
                return len(await committed(kafka_bootstrap, topics.group)) == 2

            assert await eventually_async(both_committed, within=60)
        again = await basicsync(settings, "check")
        assert again.code == 0, again.out
        assert not [x for x in again.out.splitlines() if x.startswith("warn")], again.out

    async def test_check_exits_4_when_an_input_topic_is_missing(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """A missing input topic fails the topics check (exit 4); the gateway still passes."""
        topics = await new_topics(make_topic)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        missing = f"cmd-missing-{uuid.uuid4().hex[:8]}"
        ran = await basicsync(settings, "check", BASICSYNC_TOPICS__INPUT=missing)
        assert ran.code == 4, ran.out
        assert f"FAIL  input topics: do not exist: {missing}" in ran.out
        assert "ok    token" in ran.out

    async def test_check_exits_4_when_input_topics_are_not_co_partitioned(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """Input topics with different partition counts fail the topics check (exit 4)."""
        topics = await new_topics(make_topic, partitions=2)
        other = await make_topic("in", partitions=3)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        inputs = f"{topics.inputs[0]},{other}"
        ran = await basicsync(settings, "check", BASICSYNC_TOPICS__INPUT=inputs)
        assert ran.code == 4, ran.out
        assert "not co-partitioned" in ran.out

    async def test_check_exits_4_when_keys_are_not_where_murmur2_puts_them(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """Keys written to partitions the Java default partitioner would not pick (another
        partitioner) fail the partitioner check (exit 4); murmur2-placed keys pass it."""
        topics = await new_topics(make_topic, partitions=3)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for n in range(12):
                key = f"job-{n}".encode()
                await producer.send_and_wait(topics.inputs[0], b"{}", key=key)  # murmur2
            ran = await basicsync(settings, "check")
            assert "partitioner" in ran.out
            assert ran.code == 0, ran.out
            for n in range(12):
                key = f"job-{n}".encode()
                wrong = (hashes_to(key, 3) + 1) % 3
                await producer.send_and_wait(topics.inputs[0], b"{}", key=key, partition=wrong)
        finally:
            await producer.stop()
        ran = await basicsync(settings, "check")
        assert ran.code == 4, ran.out
        assert "sampled keys are not on the partition" in ran.out

    async def test_check_exits_4_when_the_changelog_is_not_compacted(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """A changelog with ``cleanup.policy=delete`` would lose job state: exit 4."""
        topics = await new_topics(make_topic, partitions=2)
        plain = await make_topic("state", partitions=2)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        ran = await basicsync(settings, "check", BASICSYNC_TOPICS__STATE=plain)
        assert ran.code == 4, ran.out
        assert "cleanup.policy is 'delete': a job's state would be deleted by age" in ran.out

    async def test_check_exits_4_when_an_input_topic_is_compacted(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """Of two inputs, one compacted (it keeps only each job's last event once a segment
        closes): the ``input retention`` line fails naming it and the fix, exit 4; the
        inputs with the broker's default pass."""
        topics = await new_topics(make_topic, partitions=2)
        compacted = await make_topic("in", partitions=2, cleanup_policy="compact")
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        inputs = f"{topics.inputs[0]},{compacted}"
        ran = await basicsync(settings, "check", "--skip-gateway", BASICSYNC_TOPICS__INPUT=inputs)
        assert ran.code == 4, ran.out
        [line] = [line for line in ran.out.splitlines() if "input retention" in line]
        assert line.startswith(f"FAIL  input retention: {compacted}: cleanup.policy is 'compact'")
        assert line.endswith("set cleanup.policy=delete"), line
        assert topics.inputs[0] not in line
        healthy = await basicsync(settings, "check", "--skip-gateway")
        assert healthy.code == 0, healthy.out
        assert f"ok    input retention: {topics.inputs[0]}: " in healthy.out, healthy.out

    async def test_check_exits_4_when_the_changelog_cannot_hold_max_job_bytes(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """A compacted changelog with the broker's default 1 MB max.message.bytes cannot hold
        a job of BASICSYNC_KAFKA__MAX_JOB_BYTES: exit 4, naming the size it needs."""
        topics = await new_topics(make_topic, partitions=2)
        small = await make_topic("state", partitions=2, cleanup_policy="compact")
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        ran = await basicsync(settings, "check", BASICSYNC_TOPICS__STATE=small)
        assert ran.code == 4, ran.out
        assert "max.message.bytes" in ran.out
        assert "BASICSYNC_KAFKA__MAX_JOB_BYTES" in ran.out
        assert "gets job_too_large" in ran.out  # what a member does with it meanwhile
        assert "ok    broker limits: message.max.bytes is" in ran.out

    async def test_check_exits_5_when_the_gateway_is_down(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """During a sandbox outage no token is issued: the token check fails with exit 5."""
        topics = await new_topics(make_topic)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        await sandbox_in_process.outage(60)
        try:
            ran = await basicsync(settings, "check", "--timeout", "5")
        finally:
            await sandbox_in_process.end_outage()
        assert ran.code == 5, ran.out
        assert "FAIL  token" in ran.out
        assert "ok    kafka" in ran.out

    async def test_check_exits_3_when_the_broker_is_unreachable(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """A bootstrap address nobody listens on fails the Kafka check with exit 3."""
        topics = await new_topics(make_topic)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        ran = await basicsync(
            settings, "check", "--timeout", "3", BASICSYNC_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1"
        )
        assert ran.code == 3, ran.out
        assert "FAIL  kafka" in ran.out

    async def test_check_exits_3_when_kafka_stops_answering_midway(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """Kafka answers the first connection, then no new one (the placement check's reader
        bootstraps through a relay that holds it): the check ends within its timeouts with
        exit 3 and a ``kafka`` line saying the broker stopped answering and where, not exit
        4 and "topics: TimeoutError"."""
        topics = await new_topics(make_topic, partitions=2)
        relay = BootstrapRelay(kafka_bootstrap, free_port(), hang_after=1)
        await relay.start()
        try:
            settings = settings_for(relay.address, sandbox_in_process, topics)
            ran = await basicsync(settings, "check", "--skip-gateway", "--timeout", "3")
        finally:
            await relay.close()
        assert relay.held >= 1, "no connection was held: the check did not meet the hang"
        assert ran.code == 3, ran.out + ran.err
        assert "ok    input topics:" in ran.out, ran.out
        assert (
            f"FAIL  kafka: {relay.address} answered, then nothing came for 3 s (--timeout) "
            "while checking the keys' placement"
        ) in ran.out, ran.out
        assert "TimeoutError" not in ran.out, ran.out

    async def test_check_exits_2_on_invalid_settings(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """Invalid settings are reported with the variable's name and exit code 2."""
        topics = await new_topics(make_topic)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        ran = await basicsync(settings, "check", BASICSYNC_SYNC__DEBOUNCE_MS="-1")
        assert ran.code == 2
        assert "BASICSYNC_SYNC__DEBOUNCE_MS" in ran.out


class TestRedrive:
    async def test_redrive_resends_the_original_bytes_of_invalid_events(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """Dry run prints what it would re-send and sends nothing; ``--apply`` re-sends each
        invalid event's original key, headers and bytes, which (unfixed) fail again."""
        topics = await new_topics(make_topic, partitions=2)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        topic = topics.inputs[0]
        bad_json = (b"job-bad", b"{not json", [("origin", b"\x00\x01binary")])
        unknown = json.dumps(
            {
                "specversion": "1.0",
                "id": "e-1",
                "source": "urn:t",
                "type": "com.workfloplus.job.teleported",
                "subject": "job-odd",
                "data": {},
            }
        ).encode()
        await produce_raw(kafka_bootstrap, topic, [bad_json, (b"job-odd", unknown, [])])
        async with consumer_running(settings):
            first = await failures_until(kafka_bootstrap, topics.failed, lambda r: len(r) == 2)
            dry = await basicsync(settings, "redrive")
            assert dry.code == 0, dry.err
            assert dry.out.count("would re-send") == 2
            assert "dry run: nothing was sent" in dry.out
            assert await topic_size(kafka_bootstrap, topic) == 2
            only = await basicsync(settings, "redrive", "--reason", "unknown_event_type")
            assert only.out.count("would re-send unknown_event_type") == 1
            applied = await basicsync(settings, "redrive", "--apply")
            assert applied.code == 0, applied.err
            assert sum(line.startswith("re-send ") for line in applied.out.splitlines()) == 2
            assert await topic_size(kafka_bootstrap, topic) == 4
            again = await failures_until(kafka_bootstrap, topics.failed, lambda r: len(r) == 4)
        originals = sorted((f["reason"], f["source"]["value"]) for f in first)
        assert sorted((f["reason"], f["source"]["value"]) for f in again) == sorted(originals * 2)
        bad = [f["source"] for f in again if f["reason"] == "invalid_event"]
        assert len({source["offset"] for source in bad}) == 2, "the re-sent copy is a new message"
        for source in bad:
            assert source["key"] == base64.b64encode(b"job-bad").decode()
            assert source["headers"] == [
                {"key": "origin", "value": base64.b64encode(b"\x00\x01binary").decode()}
            ]

    async def test_redrive_rereads_originals_cut_short_in_their_failure_records(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """Failure records carry only the first 16 bytes of these events here: ``redrive
        --apply`` re-reads each original from its topic, partition and offset, and re-sends
        all of its bytes, for every one of a dozen records on two partitions."""
        topics = await new_topics(make_topic, partitions=2)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"max_failure_value_bytes": 16})}
        )
        topic = topics.inputs[0]
        originals: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = [
            (f"job-cut-{n}".encode(), b"{not json " + bytes([n]) * 200, []) for n in range(12)
        ]
        await produce_raw(kafka_bootstrap, topic, originals)
        async with consumer_running(settings):
            first = await failures_until(kafka_bootstrap, topics.failed, lambda r: len(r) == 12)
            assert all(f["source"]["truncated"] for f in first), first[0]["source"]
            applied = await basicsync(settings, "redrive", "--apply")
            assert applied.code == 0, applied.err
            assert sum(line.startswith("re-send ") for line in applied.out.splitlines()) == 12
            await failures_until(kafka_bootstrap, topics.failed, lambda r: len(r) == 24)
        sent = sorted(value for _, value in await raw_records(kafka_bootstrap, topic))
        assert sent == sorted([value for _, value, _ in originals] * 2)

    async def test_redrive_since_and_to_pick_records_and_the_target_topic(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """``--since OFFSET`` skips earlier failure records, ``--since TIME`` in the future
        selects none, and ``--to`` re-sends to another topic, leaving the input untouched."""
        topics = await new_topics(make_topic, partitions=1)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        parking = await make_topic("parking")
        records: list[tuple[bytes, bytes, list[Any]]] = [
            (f"job-{n}".encode(), b"{broken", []) for n in range(3)
        ]
        await produce_raw(kafka_bootstrap, topics.inputs[0], records)
        async with consumer_running(settings):
            await failures_until(kafka_bootstrap, topics.failed, lambda r: len(r) == 3)
        later = await basicsync(settings, "redrive", "--since", "1")
        assert later.out.count("would re-send") == 2
        assert "job=job-0" not in later.out
        future = await basicsync(settings, "redrive", "--since", "2999-01-01T00:00:00")
        assert "0 selected" in future.out
        moved = await basicsync(settings, "redrive", "--to", parking, "--apply")
        assert moved.code == 0, moved.err
        assert await topic_size(kafka_bootstrap, parking) == 3
        assert await topic_size(kafka_bootstrap, topics.inputs[0]) == 3

    async def test_redrive_resyncs_a_rejected_job_once_the_rejection_is_cleared(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """A job WorkfloPlus rejected is posted again from its changelog state by
        ``redrive --apply`` (not by the dry run), converges, gets a success record, and never
        has two requests in flight."""
        topics = await new_topics(make_topic, partitions=2)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        events = example_job_events()
        job = EXAMPLE_CLIENT_JOB_ID
        sandbox_in_process.faults.update({"reject_job_ids": {job: {"status": 422, "body": {}}}})
        await produce(kafka_bootstrap, topics.inputs, events)
        async with consumer_running(settings):
            await failures_until(
                kafka_bootstrap,
                topics.failed,
                lambda r: any(f["stateVersion"] == len(events) for f in r),
            )
            sandbox_in_process.faults.update({"reject_job_ids": {}})
            dry = await basicsync(settings, "redrive", "--reason", "rejected_by_gateway")
            assert dry.code == 0, dry.err
            assert f"would re-sync rejected_by_gateway job={job} version={len(events)}" in dry.out
            assert stored(sandbox_in_process, job) is None
            applied = await basicsync(settings, "redrive", "--job", job, "--apply")
            assert applied.code == 0, applied.out + applied.err
            assert "synced: HTTP 200" in applied.out
            assert stored(sandbox_in_process, job) == EXAMPLE_BODY
            succeeded = await read_records(kafka_bootstrap, topics.succeeded)
        assert [s["stateVersion"] for s in succeeded if s["clientJobId"] == job] == [len(events)]
        assert max_overlap(sandbox_in_process) <= 1
        shown = json.loads((await basicsync(settings, "inspect", job)).out)
        assert shown["settled"] is True

    async def test_redrive_skips_a_superseded_sync_failure(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """A sync failure for an older version than the job's settled one is skipped, not
        posted: the consumer already handled the newer state."""
        topics = await new_topics(make_topic, partitions=1)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        events = example_job_events()
        job = EXAMPLE_CLIENT_JOB_ID
        sandbox_in_process.faults.update({"reject_job_ids": {job: {"status": 422, "body": {}}}})
        await produce(kafka_bootstrap, topics.inputs, events[:-1])
        async with consumer_running(settings) as (_, task):
            await failures_until(kafka_bootstrap, topics.failed, lambda r: len(r) >= 1)
            sandbox_in_process.faults.update({"reject_job_ids": {}})
            await produce(kafka_bootstrap, topics.inputs, events[-1:])
            await wait_converged(sandbox_in_process, {job: EXAMPLE_BODY}, within=30, consumer=task)
            await asyncio.sleep(1)  # the settled state reaches the changelog
            requests = len(sandbox_in_process.state.records)
            ran = await basicsync(settings, "redrive", "--apply")
        assert ran.code == 0, ran.out + ran.err
        assert "skip re-sync rejected_by_gateway" in ran.out
        assert len(sandbox_in_process.state.records) == requests
