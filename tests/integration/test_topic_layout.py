"""Topics that would lose a job's state: the consumer stops, and posts nothing partial.

Partitions added to the topics of a deployment with state (below), a changelog that deletes
states by age (``TestChangelogRetention``), or one replaced under the group's committed offsets
(``TestChangelogReplaced``) or robbed of its records (``TestChangelogRecordsDeleted``).

A job's state lives in the changelog partition its key hashed to when it was written. Added
partitions move keys: a job's next events land on a partition whose owner does not hold its
state, which would post the job from those events alone over what WorkfloPlus holds (every
earlier step gone). ``basicsync run`` as a child process must stop with exit code 2 instead,
both when the inputs grow under it and when it starts on topics grown while it was stopped.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from consumer.config import Settings
from consumer.demo import DemoJobs, DemoPlan, build_demo
from consumer.errors import ConfigsUnread
from consumer.kafka.admin import described_configs
from consumer.kafka.limits import changelog_max_message_bytes
from consumer.kafka.partitioning import hashes_to
from consumer.state.continuity import ChangelogOwner, read_floor
from consumer.testing.workfloplus import Sandbox
from tests.integration.harness import (
    DEFAULT_MAX_JOB_BYTES,
    BootstrapRelay,
    MakeTopic,
    Topics,
    assert_history_never_shrinks,
    assert_kafka_client_lines_are_few,
    basicsync,
    commit_offsets,
    committed,
    committed_with_metadata,
    consumer_process,
    delete_records,
    eventually,
    eventually_async,
    final_upserts,
    free_port,
    log_events,
    new_topics,
    produce,
    produce_raw,
    raw_records,
    read_records,
    readiness,
    recreate,
    settings_for,
    start_consumer_process,
    stored,
    tail,
    wait_converged,
    with_request_timeout,
    with_title,
)

pytestmark = pytest.mark.integration

#: ``max.message.bytes`` of a changelog that holds a job of the default size
CHANGELOG_BYTES = changelog_max_message_bytes(DEFAULT_MAX_JOB_BYTES)

#: Noticed within a second, not the default 30 s.
FAST_METADATA = {"BASICSYNC_KAFKA__METADATA_MAX_AGE_MS": "1000"}


async def abort_a_write(
    bootstrap: str, topic: str, partition: int, key: bytes, headers: list[tuple[str, bytes]]
) -> None:
    """Two records to ``topic`` ``partition`` in a transaction that is then aborted."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"aborter-{topic}")
    await producer.start()
    try:
        await producer.begin_transaction()
        for _ in range(2):
            await producer.send_and_wait(
                topic, b"{}", key=key, partition=partition, headers=headers
            )
        await producer.abort_transaction()
    finally:
        await producer.stop()


async def grow(bootstrap: str, topics: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_partitions(
            {topic: NewPartitions(total_count=partitions) for topic in topics}
        )
    finally:
        await admin.close()


def accepted(sandbox: Sandbox) -> dict[str, int]:
    """How many documents WorkfloPlus accepted for each job so far."""
    return {job: len(stored.history) for job, stored in sandbox.state.jobs.items()}


def accepted_since(sandbox: Sandbox, before: dict[str, int]) -> dict[str, list[object]]:
    return {
        job: [json.loads(body) for body in list(stored.history)[before.get(job, 0) :]]
        for job, stored in sandbox.state.jobs.items()
        if len(stored.history) > before.get(job, 0)
    }


@dataclass
class RanToTheEnd:
    topics: Topics
    demo: DemoJobs
    settings: Settings


async def ran_to_the_end(
    bootstrap: str, make_topic: MakeTopic, sandbox: Sandbox, log: str, seed: int
) -> RanToTheEnd:
    """20 jobs on topics of 2 partitions, posted by ``basicsync run``, then stopped cleanly."""
    topics = await new_topics(make_topic, partitions=2)
    demo = build_demo(DemoPlan(jobs=20, seed=seed, prefix=f"ended-{seed}"))
    await produce(bootstrap, topics.inputs, demo.events)
    settings = settings_for(bootstrap, sandbox, topics)
    process = start_consumer_process(settings, log)
    await wait_converged(sandbox, demo.expected, within=60)
    process.terminate()
    assert await asyncio.to_thread(process.wait, 60) == 0, tail(log)
    return RanToTheEnd(topics, demo, settings)


async def fatal_start(
    settings: Settings, log: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Start ``basicsync run``; it must stop with exit code 2. Its ``fatal`` log line."""
    process = start_consumer_process(settings, log, env)
    assert await asyncio.to_thread(process.wait, 60) == 2, tail(log)
    return log_events(log, "fatal")[-1]


class TestPartitionsAdded:
    async def test_an_input_grown_under_the_consumer_stops_it_before_it_reads_on(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """20 jobs posted from an input of 2 partitions; the input grows to 3 (keys of both
        old partitions move, also between the old ones) and every job gets one more event.
        The member notices at its next metadata refresh, logs ``topic_layout_changed`` and
        exits with code 2 naming the counts. Until then it may post a job whose new event
        landed on the partition that holds its state; any document WorkfloPlus accepted is
        whole (every step, the new title), none from the new event alone. Started again, it
        stops at once: the changelog has 2 partitions, the input 3."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=20, seed=5, prefix="grown"))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        process = start_consumer_process(settings, log, FAST_METADATA)
        await wait_converged(sandbox_in_process, demo.expected, within=60)
        before = accepted(sandbox_in_process)
        await grow(kafka_bootstrap, topics.inputs, 3)
        await produce(kafka_bootstrap, topics.inputs, final_upserts(list(demo.expected), "late"))
        assert await asyncio.to_thread(process.wait, 60) == 2, tail(log)
        changed = log_events(log, "topic_layout_changed")[0]
        assert f"{topics.inputs[0]}=3" in changed["error"]
        assert "had 2 partitions" in changed["error"]
        assert log_events(log, "fatal")[0]["kind"] == "TopicLayoutError"
        whole = with_title(demo.expected, "late")
        for job, bodies in accepted_since(sandbox_in_process, before).items():
            assert bodies == [whole[job]], f"{job} was posted from part of its state"
        assert_history_never_shrinks(sandbox_in_process, list(demo.expected))
        posted = accepted(sandbox_in_process)
        fatal = await fatal_start(settings, log, FAST_METADATA)
        assert "has 2 partitions but the inputs have 3" in fatal["error"]
        assert accepted(sandbox_in_process) == posted

    async def test_an_event_put_by_the_new_count_stops_it_before_its_metadata_refresh(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """The member reads metadata only every 60 s here, so the rebalance cannot be what
        stops it. The input grows from 2 to 3 and a producer that knows it sends every job one
        more event: some land on an old partition that the old count did not pick, where
        another member could hold no state for the job. The first such key makes the member
        ask for metadata before absorbing its batch, and it stops (exit 2) well within the 60
        s: no event is absorbed there (no ``misrouted`` failure) and any document WorkfloPlus
        accepted meanwhile is whole."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=20, seed=9, prefix="grown-early"))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        slow_metadata = {"BASICSYNC_KAFKA__METADATA_MAX_AGE_MS": "60000"}
        process = start_consumer_process(settings, log, slow_metadata)
        await wait_converged(sandbox_in_process, demo.expected, within=60)
        before = accepted(sandbox_in_process)
        await grow(kafka_bootstrap, topics.inputs, 3)
        late = final_upserts(list(demo.expected), "late")
        keys = [e.subject.encode() for e in late]
        moved = [k for k in keys if hashes_to(k, 2) != hashes_to(k, 3) < 2]
        assert moved, "no event lands on an old partition the old count did not pick"
        grown_at = time.monotonic()
        await produce(kafka_bootstrap, topics.inputs, late)
        assert await asyncio.to_thread(process.wait, 60) == 2, tail(log)
        assert time.monotonic() - grown_at < 30, "stopped by the metadata refresh, not the key"
        assert log_events(log, "topic_layout_changed")
        assert await read_records(kafka_bootstrap, topics.failed, settle_s=0.5) == []
        whole = with_title(demo.expected, "late")
        for job, bodies in accepted_since(sandbox_in_process, before).items():
            assert bodies == [whole[job]], f"{job} was posted from part of its state"

    async def test_a_changelog_grown_with_its_inputs_stops_the_start(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """With the consumer stopped, the input and the changelog both grow from 2 to 4
        partitions: the counts agree again, but the jobs' states sit where 2 partitions put
        them. The start samples the changelog's keys, finds them misplaced and stops (exit 2)
        before it reads an event: WorkfloPlus receives nothing. ``basicsync check`` says the
        same (exit 4), and passed on the same topics before they grew."""
        log = str(tmp_path / "consumer.log")
        ran = await ran_to_the_end(kafka_bootstrap, make_topic, sandbox_in_process, log, 7)
        topics, demo, settings = ran.topics, ran.demo, ran.settings
        checked = await basicsync(settings, "check", "--skip-gateway")
        assert checked.code == 0, checked.out
        assert f"ok    changelog placement: {topics.state}: 40 sampled" in checked.out
        await grow(kafka_bootstrap, [*topics.inputs, topics.state], 4)
        await produce(kafka_bootstrap, topics.inputs, final_upserts(list(demo.expected), "late"))
        requests = len(sandbox_in_process.state.records)
        fatal = await fatal_start(settings, log)
        assert fatal["kind"] == "TopicLayoutError"
        assert f"the changelog {topics.state} holds jobs on partitions" in fatal["error"]
        assert len(sandbox_in_process.state.records) == requests
        checked = await basicsync(settings, "check", "--skip-gateway")
        assert checked.code == 4, checked.out
        assert "FAIL  changelog placement" in checked.out


@dataclass
class OnChangelog:
    settings: Settings
    env: dict[str, str]
    demo: DemoJobs
    process: subprocess.Popen[bytes]


async def run_on_changelog(
    bootstrap: str, make_topic: MakeTopic, sandbox: Sandbox, log: str, config: dict[str, str]
) -> OnChangelog:
    """``basicsync run`` over a few jobs' events, its changelog created with ``config``."""
    topics = await new_topics(make_topic, partitions=2)
    changelog = await make_topic(
        "state",
        partitions=2,
        cleanup_policy=config["cleanup.policy"],
        config={**config, "max.message.bytes": str(CHANGELOG_BYTES)},
    )
    demo = build_demo(DemoPlan(jobs=5, seed=9, prefix=changelog))
    await produce(bootstrap, topics.inputs, demo.events)
    settings = settings_for(bootstrap, sandbox, topics)
    env = {"BASICSYNC_TOPICS__STATE": changelog}
    return OnChangelog(settings, env, demo, start_consumer_process(settings, log, env))


class TestChangelogRetention:
    @pytest.mark.parametrize(
        "config",
        [
            {"cleanup.policy": "delete"},
            {"cleanup.policy": "compact,delete", "retention.ms": "604800000"},
        ],
        ids=["delete", "compact-delete-7d"],
    )
    async def test_a_changelog_that_deletes_states_by_age_stops_the_start(
        self,
        config: dict[str, str],
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """A changelog an operator created with retention by age would lose the state of any
        job quiet for that long, and its next events would post it from them alone. The start
        stops (exit 2) naming the setting and the fix, before WorkfloPlus gets anything;
        ``basicsync check`` says the same (exit 4)."""
        log = str(tmp_path / "consumer.log")
        run = await run_on_changelog(kafka_bootstrap, make_topic, sandbox_in_process, log, config)
        assert await asyncio.to_thread(run.process.wait, 60) == 2, tail(log)
        fatal = log_events(log, "fatal")[-1]
        assert fatal["kind"] == "TopicLayoutError"
        changelog = run.env["BASICSYNC_TOPICS__STATE"]
        policy = config["cleanup.policy"]
        assert f"changelog {changelog}: cleanup.policy is '{policy}'" in fatal["error"]
        assert "set cleanup.policy=compact" in fatal["error"]
        assert not sandbox_in_process.state.records
        checked = await basicsync(run.settings, "check", "--skip-gateway", **run.env)
        assert checked.code == 4, checked.out
        assert "set cleanup.policy=compact" in checked.out

    async def test_compact_and_delete_with_no_age_limit_is_accepted(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """``compact,delete`` with ``retention.ms=-1`` deletes nothing by age: it runs."""
        log = str(tmp_path / "consumer.log")
        config = {"cleanup.policy": "compact,delete", "retention.ms": "-1"}
        run = await run_on_changelog(kafka_bootstrap, make_topic, sandbox_in_process, log, config)
        try:
            await wait_converged(sandbox_in_process, run.demo.expected, within=60)
        finally:
            run.process.terminate()
            assert await asyncio.to_thread(run.process.wait, 60) == 0, tail(log)
        assert log_events(log, "changelog_retention_unchecked") == []


class TestChangelogConfigRead:
    async def test_a_topic_described_as_soon_as_it_is_created_is_read(
        self, kafka_bootstrap: str
    ) -> None:
        """A broker often answers UNKNOWN_TOPIC_OR_PARTITION to DescribeConfigs of a topic
        created a moment ago (2 of 3 times on the local broker). The start creates the
        changelog and reads its configuration at once: read as a refusal, that logged
        "DescribeConfigs ... is not granted" and left the retention unchecked. Five topics,
        each described as soon as it is created: each says compact."""
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        names = [f"described-{uuid.uuid4().hex[:12]}" for _ in range(5)]
        created: list[str] = []
        try:
            for name in names:
                topic = NewTopic(name, 24, 1, topic_configs={"cleanup.policy": "compact"})
                await admin.create_topics([topic])
                created.append(name)
                config = await described_configs(admin, ConfigResourceType.TOPIC, name)
                assert config["cleanup.policy"] == "compact", (name, config)
            with pytest.raises(ConfigsUnread) as unread:
                await described_configs(
                    admin, ConfigResourceType.TOPIC, f"never-{names[0]}", unknown_for_s=0.5
                )
            assert not unread.value.denied
            assert "answered UNKNOWN_TOPIC_OR_PARTITION" in str(unread.value)
        finally:
            if created:
                await admin.delete_topics(created)
            await admin.close()

    async def test_a_changelog_the_start_creates_is_checked(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """``basicsync run`` on 24 input partitions alone creates the changelog and the
        result topics, reads the changelog's retention and limit without a warning (by hand,
        1 start in 5 raced the broker's metadata as above and warned), and syncs every job."""
        inputs = [await make_topic("in", partitions=24)]
        suffix = inputs[0].removeprefix("in-")
        topics = Topics(inputs, f"state-{suffix}", f"ok-{suffix}", f"failed-{suffix}",
                        f"group-{suffix}", 24)  # fmt: skip
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        kafka = settings.kafka.model_copy(update={"create_topics": True})
        demo = build_demo(DemoPlan(jobs=48, seed=24, prefix="wide"))
        log = str(tmp_path / "consumer.log")
        try:
            async with consumer_process(settings.model_copy(update={"kafka": kafka}), log):
                await produce(kafka_bootstrap, topics.inputs, demo.events)
                await wait_converged(sandbox_in_process, demo.expected, within=60)
        finally:
            await _deleted(kafka_bootstrap, [topics.state, topics.succeeded, topics.failed])
        assert log_events(log, "changelog_retention_unchecked") == [], tail(log)
        assert len(log_events(log, "partitions_assigned")[-1]["partitions"]) == 24


async def _deleted(bootstrap: str, topics: list[str]) -> None:
    """Delete the topics a consumer created (the ``make_topic`` fixture deletes its own)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        if gone := [topic for topic in topics if topic in existing]:
            await admin.delete_topics(gone)
    finally:
        await admin.close()


async def reset_to_earliest(bootstrap: str, group: str, topics: list[str], partitions: int) -> None:
    """What ``kafka-consumer-groups.sh --reset-offsets --to-earliest --execute`` does to a group
    with no member: commit each partition's first offset, with no metadata."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for topic in topics for p in range(partitions)]
        first = await reader.beginning_offsets(tps)
    finally:
        await reader.stop()
    await commit_offsets(bootstrap, group, {tp: (offset, "") for tp, offset in first.items()})


async def rebuilt_from_the_earliest(
    bootstrap: str, sandbox: Sandbox, log: str, ran: RanToTheEnd, title: str = "late"
) -> None:
    """The way out a ``ChangelogReplaced`` stop names: the group's offsets reset to the
    earliest, ``basicsync run`` builds every job again from its events and posts it whole (the
    last ``title`` sent included, which WorkfloPlus does not hold yet), never a document with
    fewer steps than before."""
    topics = ran.topics
    await reset_to_earliest(bootstrap, topics.group, topics.inputs, topics.partitions)
    assert set((await committed(bootstrap, topics.group)).values()) == {0}
    rebuilt = start_consumer_process(ran.settings, log)
    try:
        await wait_converged(sandbox, with_title(ran.demo.expected, title), within=60)
    finally:
        rebuilt.terminate()
        assert await asyncio.to_thread(rebuilt.wait, 60) == 0, tail(log)
    assert_history_never_shrinks(sandbox, list(ran.demo.expected))


class TestChangelogReplaced:
    async def test_a_changelog_replaced_under_the_offsets_stops_the_start(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """The group's offsets say which events the changelog's states hold. With the members
        stopped, an operator points ``BASICSYNC_TOPICS__STATE`` at a new topic, then deletes
        the changelog and creates it again; new events wait on the input. Each start stops
        (exit 2, ``ChangelogReplaced``) before WorkfloPlus gets a request and before an offset
        moves: restored from nothing, every job's next event would post its partial document
        over the complete one. The way out its message names (the offsets reset to the
        earliest) builds the state again from the input and posts every job whole.
        ``basicsync check`` says the same (exit 4) where the start stops."""
        log = str(tmp_path / "consumer.log")
        ran = await ran_to_the_end(kafka_bootstrap, make_topic, sandbox_in_process, log, 11)
        topics, demo, settings = ran.topics, ran.demo, ran.settings
        offsets = await committed(kafka_bootstrap, topics.group)
        checked = await basicsync(settings, "check", "--skip-gateway")
        assert checked.code == 0, checked.out
        assert f"ok    changelog continuity: {topics.state} holds what group" in checked.out
        await produce(kafka_bootstrap, topics.inputs, final_upserts(list(demo.expected), "late"))
        requests = len(sandbox_in_process.state.records)
        config = {"cleanup.policy": "compact", "max.message.bytes": str(CHANGELOG_BYTES)}

        other = await make_topic("other-state", 2, "compact", config)
        fatal = await fatal_start(settings, log, {"BASICSYNC_TOPICS__STATE": other})
        assert fatal["kind"] == "ChangelogReplaced"
        assert f"committed with the changelog {topics.state}, not {other}" in fatal["error"]
        checked = await basicsync(
            settings, "check", "--skip-gateway", BASICSYNC_TOPICS__STATE=other
        )
        assert checked.code == 4, checked.out
        assert "FAIL  changelog continuity" in checked.out

        await recreate(kafka_bootstrap, topics.state, 2, config)
        fatal = await fatal_start(settings, log)
        assert fatal["kind"] == "ChangelogReplaced"
        for partition in (0, 1):
            assert (
                f"changelog {topics.state} partition {partition} ends at offset 0"
                in (fatal["error"])
            )
        assert "--reset-offsets --to-earliest" in fatal["error"]
        assert len(log_events(log, "changelog_replaced")) == 2
        assert len(sandbox_in_process.state.records) == requests
        assert await committed(kafka_bootstrap, topics.group) == offsets
        checked = await basicsync(settings, "check", "--skip-gateway")
        assert checked.code == 4, checked.out
        assert f"FAIL  changelog continuity: changelog {topics.state} partition 0" in checked.out

        await rebuilt_from_the_earliest(kafka_bootstrap, sandbox_in_process, log, ran)
        checked = await basicsync(settings, "check", "--skip-gateway")
        assert checked.code == 0, checked.out

    async def test_a_changelog_replaced_under_a_running_member_stops_it_at_its_next_write(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """The changelog is deleted while the member runs; every job gets an event, which
        the member cannot make durable (its commits are retried, nothing is posted) until the
        topic is created again, 3 s later. Its first write to the new topic is acknowledged
        below the end it knew: that transaction is aborted, the member posts nothing more and
        stops (exit 2), its offsets committed again unmoved and marked ``replaced``. Started
        again it stops at its take, although the aborted writes may have raised the new
        topic's end past the floor. The reset to the earliest rebuilds every job whole."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=20, seed=13, prefix="replaced-running"))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        ran = RanToTheEnd(topics, demo, settings)
        log = str(tmp_path / "consumer.log")
        process = start_consumer_process(settings, log)
        await wait_converged(sandbox_in_process, demo.expected, within=60)
        await asyncio.sleep(2)  # the last results and offsets committed
        offsets = await committed(kafka_bootstrap, topics.group)
        requests = len(sandbox_in_process.state.records)
        config = {"cleanup.policy": "compact", "max.message.bytes": str(CHANGELOG_BYTES)}

        async def late_events_while_it_is_gone() -> None:
            late = final_upserts(list(demo.expected), "late")
            await produce(kafka_bootstrap, topics.inputs, late)
            await asyncio.sleep(3)
            assert process.poll() is None, tail(log)
            assert len(sandbox_in_process.state.records) == requests

        await recreate(kafka_bootstrap, topics.state, 2, config, late_events_while_it_is_gone)
        assert await asyncio.to_thread(process.wait, 60) == 2, tail(log)
        assert_kafka_client_lines_are_few(log)
        fatal = log_events(log, "fatal")[-1]
        assert fatal["kind"] == "ChangelogReplaced"
        assert "while a member wrote to it" in fatal["error"]
        assert len(sandbox_in_process.state.records) == requests
        assert await committed(kafka_bootstrap, topics.group) == offsets
        marks = await committed_with_metadata(kafka_bootstrap, topics.group)
        floors = [read_floor(mark.metadata) for mark in marks.values()]
        assert [floor is not None and floor.replaced for floor in floors] == [True, True], marks

        fatal = await fatal_start(settings, log)
        assert "while a member wrote to it" in fatal["error"]
        assert len(sandbox_in_process.state.records) == requests

        await rebuilt_from_the_earliest(kafka_bootstrap, sandbox_in_process, log, ran)


async def delete_head(bootstrap: str, topic: str, partition: int) -> int:
    """What an operator does to delete every record of one changelog partition below its
    end: the broker refuses ``deleteRecords`` on a topic whose policy is ``compact`` alone, so
    first ``compact,delete`` with no age limit (which ``basicsync run`` accepts), then
    ``kafka-delete-records.sh``. Returns the partition's new start offset."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        policy = {"cleanup.policy": "compact,delete", "retention.ms": "-1"}
        config = {**policy, "max.message.bytes": str(CHANGELOG_BYTES)}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, config)])
    finally:
        await admin.close()
    return await delete_records(bootstrap, topic, partition)


class TestChangelogRecordsDeleted:
    async def test_records_deleted_from_the_changelog_stop_the_next_take(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """An operator deletes every record of changelog partition 0 (``deleteRecords``) under
        a running member: its end stays where it was, so only the start shows it. The member
        holds every state in memory and posts the late events whole; its commits carry the
        start it took with. Stopped and started again, it stops at its take (exit 2) naming
        partition 0 alone, before a request or an offset moves: restored from what is left,
        each job of partition 0 would be started afresh from its next event. ``basicsync
        check`` says the same. The way out its message names rebuilds every job whole."""
        log = str(tmp_path / "consumer.log")
        ran = await ran_to_the_end(kafka_bootstrap, make_topic, sandbox_in_process, log, 23)
        topics, demo, settings = ran.topics, ran.demo, ran.settings
        process = start_consumer_process(settings, log)
        assigned = len(log_events(log, "partitions_assigned"))

        def taken_again() -> bool:
            return len(log_events(log, "partitions_assigned")) > assigned

        assert await eventually(taken_again, within=30), tail(log)
        start = await delete_head(kafka_bootstrap, topics.state, 0)
        await produce(kafka_bootstrap, topics.inputs, final_upserts(list(demo.expected), "late"))
        await wait_converged(sandbox_in_process, with_title(demo.expected, "late"), within=60)
        await asyncio.sleep(2)  # the last results and offsets committed
        process.terminate()
        assert await asyncio.to_thread(process.wait, 60) == 0, tail(log)
        offsets = await committed(kafka_bootstrap, topics.group)
        marks = await committed_with_metadata(kafka_bootstrap, topics.group)
        floors = [read_floor(mark.metadata) for mark in marks.values()]
        assert [floor.start_at_most if floor else None for floor in floors] == [0, 0], marks
        await produce(kafka_bootstrap, topics.inputs, final_upserts(list(demo.expected), "later"))
        requests = len(sandbox_in_process.state.records)

        fatal = await fatal_start(settings, log)
        assert fatal["kind"] == "ChangelogReplaced"
        assert (
            f"changelog {topics.state} partition 0 starts at offset {start}, but the group's "
            f"offsets were committed when it started at 0: its records below {start} were "
            "deleted"
        ) in fatal["error"]
        assert "partition 1" not in fatal["error"]
        assert "--reset-offsets --to-earliest" in fatal["error"]
        assert len(sandbox_in_process.state.records) == requests
        assert await committed(kafka_bootstrap, topics.group) == offsets
        checked = await basicsync(settings, "check", "--skip-gateway")
        assert checked.code == 4, checked.out
        assert f"FAIL  changelog continuity: changelog {topics.state} partition 0 starts" in (
            checked.out
        )

        await rebuilt_from_the_earliest(kafka_bootstrap, sandbox_in_process, log, ran, "later")
        checked = await basicsync(settings, "check", "--skip-gateway")
        assert checked.code == 0, checked.out


async def record_counts(bootstrap: str, topics: Topics) -> list[int]:
    """How many records the changelog and both result topics hold, each."""
    names = [topics.state, topics.succeeded, topics.failed]
    return [len(await raw_records(bootstrap, name)) for name in names]


class TestChangelogShared:
    async def test_a_group_given_another_groups_changelog_stops_before_it_posts(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """A deployment copied under a new group id keeps the old ``BASICSYNC_TOPICS__STATE``.
        Its offsets are its own, its changelog is not: it would restore the first group's jobs
        as its own. ``basicsync check`` says so (exit 4, ``changelog writers``); ``run`` stops
        at its restore (exit 2, ``ChangelogShared`` naming both groups) before WorkfloPlus gets
        a request, before a record reaches the changelog or a result topic and before an offset
        is committed. Told the first group is its old name
        (``BASICSYNC_STORE__ADOPT_CHANGELOG_OF``), it takes the states over: its replay of the
        input from the start posts nothing, a new event of each job posts it once, whole. The
        first group, started again although it was meant to be gone, stops the same way."""
        log = str(tmp_path / "consumer.log")
        ran = await ran_to_the_end(kafka_bootstrap, make_topic, sandbox_in_process, log, 13)
        topics, demo, settings = ran.topics, ran.demo, ran.settings
        copy = f"{topics.group}-copy"
        checked = await basicsync(settings, "check", "--skip-gateway")
        assert checked.code == 0, checked.out
        assert f"ok    changelog writers: {topics.state}: sampled writers {topics.group}\n" in (
            checked.out
        )
        checked = await basicsync(
            settings, "check", "--skip-gateway", BASICSYNC_KAFKA__GROUP_ID=copy
        )
        assert checked.code == 4, checked.out
        assert f"FAIL  changelog writers: {topics.state}: its newest records were written by " in (
            checked.out
        )
        before = accepted(sandbox_in_process)
        requests = len(sandbox_in_process.state.records)
        counts = await record_counts(kafka_bootstrap, topics)

        fatal = await fatal_start(settings, log, {"BASICSYNC_KAFKA__GROUP_ID": copy})
        assert fatal["kind"] == "ChangelogShared"
        assert f"written by consumer group {topics.group!r}" in fatal["error"]
        assert f"not by this member's group {copy!r}" in fatal["error"]
        assert f"BASICSYNC_STORE__ADOPT_CHANGELOG_OF={topics.group}" in fatal["error"]
        assert log_events(log, "changelog_shared"), tail(log)
        assert len(sandbox_in_process.state.records) == requests
        assert await record_counts(kafka_bootstrap, topics) == counts
        assert await committed(kafka_bootstrap, copy) == {}

        await produce(kafka_bootstrap, topics.inputs, final_upserts(list(demo.expected), "late"))
        renamed = {
            "BASICSYNC_KAFKA__GROUP_ID": copy,
            "BASICSYNC_STORE__ADOPT_CHANGELOG_OF": f"unrelated,{topics.group}",
        }
        adopted = start_consumer_process(settings, log, renamed)
        try:
            await wait_converged(sandbox_in_process, with_title(demo.expected, "late"), within=60)
        finally:
            adopted.terminate()
            assert await asyncio.to_thread(adopted.wait, 60) == 0, tail(log)
        posted = accepted_since(sandbox_in_process, before)
        assert {job: len(bodies) for job, bodies in posted.items()} == dict.fromkeys(
            demo.expected, 1
        ), "each job posted once: the late title, not the replay"
        assert_history_never_shrinks(sandbox_in_process, list(demo.expected))
        requests = len(sandbox_in_process.state.records)

        fatal = await fatal_start(settings, log)
        assert fatal["kind"] == "ChangelogShared"
        assert f"written by consumer group {copy!r}" in fatal["error"]
        assert len(sandbox_in_process.state.records) == requests

    async def test_two_groups_started_together_on_one_empty_changelog_both_stop(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """Two deployments under different group ids, given one state topic, start together
        while its partitions are empty: neither restore finds a record of the other. Both
        read the same input and write the same changelog partitions. Each member's commit
        after the other's writes lands past where its own writes left the partition (once one
        stopped, an event of each job makes the other write again): both stop (exit 2,
        ``ChangelogWrittenElsewhere``, naming the other group, whose records it read back)
        within seconds of the first events, instead of running on, mixing their states, until
        a restore finds it."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=20, seed=31, prefix="two-groups"))
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        members = {}
        for group in (topics.group, f"{topics.group}-copy"):
            port = free_port()
            log = str(tmp_path / f"{group}.log")
            env = {
                "BASICSYNC_KAFKA__GROUP_ID": group,
                "BASICSYNC_OBSERVABILITY__HTTP_PORT": str(port),
            }
            members[group] = (start_consumer_process(settings, log, env), log, port)
        try:
            for _, log, port in members.values():

                async def ready(port: int = port) -> bool:
                    body = await readiness(port)
                    return body is not None and body["ready"]

                assert await eventually_async(ready, within=60), tail(log)
            await produce(kafka_bootstrap, topics.inputs, demo.events)

            def one_stopped() -> bool:
                return any(process.poll() is not None for process, _, _ in members.values())

            assert await eventually(one_stopped, within=60)
            # Whichever wrote last may be done writing: an event of each job makes it write.
            await produce(kafka_bootstrap, topics.inputs, final_upserts(list(demo.expected), "x"))
            for group, (process, log, _) in members.items():
                assert await asyncio.to_thread(process.wait, 60) == 2, tail(log)
                fatal = log_events(log, "fatal")[-1]
                assert fatal["kind"] == "ChangelogWrittenElsewhere", fatal
                (other,) = set(members) - {group}
                assert f"consumer group {other!r} wrote to it since" in fatal["error"], fatal
                assert "BASICSYNC_TOPICS__STATE" in fatal["error"], fatal
                found = log_events(log, "changelog_written_elsewhere")
                assert found, tail(log)
                assert {line["partition"] for line in found} <= {0, 1}, found
        finally:
            for process, _, _ in members.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()

    async def test_an_aborted_write_naming_its_own_group_is_no_alarm(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """Offsets the member did not count, holding only records naming its own group and
        transaction markers (what its own attempt cut short by a broker restart leaves: here
        an aborted transaction, written on a real broker), are no other writer: its next write
        there reads them back (aborted records and markers included), logs
        ``changelog_gap_explained`` and goes on, and the late event is posted."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=10, seed=41, prefix="own-gap"))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        async with consumer_process(settings, log) as process:
            await wait_converged(sandbox_in_process, demo.expected, within=60)
            await asyncio.sleep(2)  # the settled states committed
            job = sorted(demo.expected)[0]
            partition = hashes_to(job.encode(), 2)
            own = ChangelogOwner(settings.kafka.group_id).header()
            await abort_a_write(kafka_bootstrap, topics.state, partition, job.encode(), [own])
            await produce(kafka_bootstrap, topics.inputs, final_upserts([job], "late"))
            late = with_title(demo.expected, "late")
            await wait_converged(sandbox_in_process, {job: late[job]}, within=60)
            assert process.poll() is None, tail(log)
        explained = log_events(log, "changelog_gap_explained")
        assert [line["partition"] for line in explained] == [partition], tail(log)
        assert explained[0]["end"] - explained[0]["expected"] == 3, explained  # 2 records, a marker
        assert not log_events(log, "changelog_written_elsewhere"), tail(log)
        assert not log_events(log, "changelog_gap_unread"), tail(log)

    async def test_a_gap_read_that_hangs_is_given_up_and_a_kill_during_one_loses_nothing(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """The member bootstraps through a relay that, from some moment, leaves new
        connections unanswered (a broker that stops answering new clients; the connections
        made go on). An aborted write naming the member's own group then leaves a gap in its
        changelog partition: the read that would explain it hangs, is given up after 10 s
        (``changelog_gap_unread``, partition named) and the late event is posted. A second
        gap: the member is SIGKILLed while it reads that one, before its commit, so the second
        late event is not posted; the next member restores, posts it, and nothing is lost,
        failed or taken for another writer."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=10, seed=43, prefix="hung-gap"))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        relay = BootstrapRelay(kafka_bootstrap, free_port())
        await relay.start()
        # The next member posts what the killed one's last intents announced once their
        # outcome is known lost: three request timeouts, 9 s here, not the default 90.
        settings = with_request_timeout(settings_for(relay.address, sandbox_in_process, topics), 3)
        job = sorted(demo.expected)[0]
        partition = hashes_to(job.encode(), 2)
        own = [ChangelogOwner(settings.kafka.group_id).header()]
        first, second = (with_title(demo.expected, title)[job] for title in ("first", "second"))
        log = str(tmp_path / "consumer.log")
        process = start_consumer_process(settings, log)
        try:
            await wait_converged(sandbox_in_process, demo.expected, within=60)
            await asyncio.sleep(2)  # the settled states committed
            relay.hang_new = True
            await abort_a_write(kafka_bootstrap, topics.state, partition, job.encode(), own)
            await produce(kafka_bootstrap, topics.inputs, final_upserts([job], "first"))
            await wait_converged(sandbox_in_process, {job: first}, within=60)
            [unread] = log_events(log, "changelog_gap_unread")
            assert unread["partition"] == partition, unread
            held = relay.held
            assert held >= 1, "the gap was read through no new connection"
            await abort_a_write(kafka_bootstrap, topics.state, partition, job.encode(), own)
            await produce(kafka_bootstrap, topics.inputs, final_upserts([job], "second"))
            assert await eventually(lambda: relay.held > held, within=30), tail(log)
            process.kill()  # while it reads the second gap
            await asyncio.to_thread(process.wait)
        finally:
            if process.poll() is None:
                process.kill()
            await relay.close()
        assert stored(sandbox_in_process, job) == first, "posted before its commit"
        after = str(tmp_path / "after.log")
        direct = with_request_timeout(settings_for(kafka_bootstrap, sandbox_in_process, topics), 3)
        async with consumer_process(direct, after):
            await wait_converged(sandbox_in_process, {job: second}, within=60)
        for path in (log, after):
            assert not log_events(path, "changelog_written_elsewhere"), tail(path)
        assert await read_records(kafka_bootstrap, topics.failed, settle_s=0.5) == []
        assert_history_never_shrinks(sandbox_in_process, list(demo.expected))

    async def test_a_key_deleted_by_hand_under_a_running_member_stops_it_and_a_start_reads_it(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """An operator deletes a job's key from the changelog (a tombstone, no group named)
        while the member runs, skipping the documented stop. The member's next write to that
        partition reads the record back and stops (exit 2, ``ChangelogWrittenElsewhere``
        naming a producer that names no group), its commit aborted: nothing of it posted.
        Started again, it restores the tombstone like any record and goes on; every other
        job's next event is posted whole."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=10, seed=37, prefix="by-hand"))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        process = start_consumer_process(settings, log)
        try:
            await wait_converged(sandbox_in_process, demo.expected, within=60)
            await asyncio.sleep(2)  # the settled states committed
            victim = sorted(demo.expected)[0]
            partition = hashes_to(victim.encode(), 2)
            others = [job for job in demo.expected if job != victim]
            await produce_raw(kafka_bootstrap, topics.state, [(victim.encode(), None, [])])
            requests = len(sandbox_in_process.state.records)
            await produce(kafka_bootstrap, topics.inputs, final_upserts([victim], "late"))
            assert await asyncio.to_thread(process.wait, 60) == 2, tail(log)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        fatal = log_events(log, "fatal")[-1]
        assert fatal["kind"] == "ChangelogWrittenElsewhere", fatal
        assert f"{topics.state} partition {partition} took" in fatal["error"], fatal
        assert "a producer naming no group (by hand, or another tool)" in fatal["error"], fatal
        assert len(sandbox_in_process.state.records) == requests, "the aborted intent's post"

        late = final_upserts(others, "later")
        async with consumer_process(settings, log):
            await produce(kafka_bootstrap, topics.inputs, late)
            later = with_title(demo.expected, "later")
            await wait_converged(sandbox_in_process, {j: later[j] for j in others}, within=60)
        assert not log_events(log, "changelog_shared"), tail(log)
