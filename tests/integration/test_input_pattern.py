"""Input topics named by a pattern, and members whose input lists differ.

``BASICSYNC_TOPICS__INPUT_PATTERN`` reads every topic whose whole name matches, picked up while
the member runs; a matching topic without the changelog's partition count is refused, never
read, and stops nothing. Partition ``p`` of every topic stays with one member while the members
disagree on the topics (``CoPartitionedAssignor``): a job's events on two topics are never
assembled by two members.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from consumer.config import Settings, TopicSettings
from consumer.demo import DemoPlan, build_demo
from consumer.errors import PartitionLost
from consumer.kafka.admin import partition_counts
from consumer.kafka.partitioning import hashes_to
from consumer.kafka.transactions import OutRecord, PartitionProducer
from consumer.testing.workfloplus import Sandbox
from tests.integration.harness import (
    MakeTopic,
    Topics,
    assert_history_never_shrinks,
    basicsync,
    broker_hung,
    broker_pid,
    consumer_process,
    create_topic_when_able,
    eventually,
    eventually_async,
    final_upserts,
    free_port,
    holds_partitions,
    log_events,
    new_topics,
    produce,
    read_records,
    recreate,
    scraped,
    settings_for,
    start_consumer_process,
    stored,
    tail,
    until_each_holds,
    wait_converged,
    with_request_timeout,
    with_title,
)

pytestmark = pytest.mark.integration

#: New topics noticed within a second, not the default 30 s.
FAST_METADATA = {"BASICSYNC_KAFKA__METADATA_MAX_AGE_MS": "1000"}


async def topics_under(make_topic: MakeTopic, prefix: str, partitions: int) -> Topics:
    """One input, the changelog and both result topics, every name starting ``prefix.``: a
    pattern ``prefix\\..*`` matches the service's own topics too, which it must never read."""
    made = [
        await make_topic(f"{prefix}.{kind}", partitions=partitions, cleanup_policy=policy)
        for kind, policy in (
            ("in", "delete"),
            ("state", "compact"),
            ("ok", "delete"),
            ("failed", "delete"),
        )
    ]
    return Topics([made[0]], made[1], made[2], made[3], f"group-{made[1]}", partitions)


def under_pattern(settings: Settings, topics: Topics, pattern: str) -> Settings:
    """``settings`` reading ``pattern`` (the demo topic list kept to one it matches)."""
    return settings.model_copy(
        update={
            "topics": TopicSettings(
                input=topics.inputs,
                input_pattern=pattern,
                succeeded=topics.succeeded,
                failed=topics.failed,
                state=topics.state,
            )
        }
    )


async def under_a_fresh_prefix(
    make_topic: MakeTopic, bootstrap: str, sandbox: Sandbox
) -> tuple[str, Topics, Settings]:
    """A prefix, topics of 2 partitions under it (:func:`topics_under`) and the settings of a
    member reading ``prefix\\..*``; a 3 s request timeout, so that a member given a
    partition up or killed mid-request leaves a short in-doubt window."""
    prefix = f"p{uuid.uuid4().hex[:8]}"
    topics = await topics_under(make_topic, prefix, partitions=2)
    settings = under_pattern(settings_for(bootstrap, sandbox, topics), topics, rf"{prefix}\..*")
    return prefix, topics, with_request_timeout(settings, 3)


class TestInputPattern:
    async def test_a_topic_created_under_it_is_read_and_one_of_another_count_is_refused(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """``basicsync run`` on ``p.*`` with its own topics under the same prefix: it reads the
        input, never its changelog or results (no failure record: their values are not
        events). A second topic of 2 partitions created while it runs is read from its start
        (jobs whose events are split over both converge whole); one of 3 partitions is
        refused with one error line and the gauge, its jobs never posted, and the member
        goes on; ``basicsync check`` fails naming it. Deleting the refused topic clears it."""
        prefix, topics, settings = await under_a_fresh_prefix(
            make_topic, kafka_bootstrap, sandbox_in_process
        )
        first = build_demo(DemoPlan(jobs=10, seed=61, prefix="first"))
        await produce(kafka_bootstrap, topics.inputs, first.events)
        log, port = str(tmp_path / "consumer.log"), free_port()
        extra = {**FAST_METADATA, "BASICSYNC_OBSERVABILITY__HTTP_PORT": str(port)}
        async with consumer_process(settings, log, extra):
            await wait_converged(sandbox_in_process, first.expected, within=60)
            second = await make_topic(f"{prefix}.in2", partitions=2)
            refused = await make_topic(f"{prefix}.in3", partitions=3)
            split = build_demo(DemoPlan(jobs=10, seed=62, prefix="split"))
            await produce(kafka_bootstrap, [topics.inputs[0], second], split.events)
            unread = build_demo(DemoPlan(jobs=5, seed=63, prefix="unread"))
            await produce(kafka_bootstrap, [refused], unread.events)
            await wait_converged(sandbox_in_process, split.expected, within=60)

            async def refusal_counted() -> bool:
                return await scraped(port, 'basicsync_input_topics{state="refused"}') == 1

            refusal_logged = lambda: bool(log_events(log, "input_topic_refused"))  # noqa: E731
            assert await eventually(refusal_logged, within=30), tail(log)
            assert await eventually_async(refusal_counted, within=30), tail(log)
            assert await scraped(port, 'basicsync_input_topics{state="read"}') == 2
            checked = await basicsync(settings, "check", "--skip-gateway")
            await asyncio.sleep(2)  # a few more refreshes: still one line, nothing posted
        assert all(stored(sandbox_in_process, job) is None for job in unread.expected)
        [line] = log_events(log, "input_topic_refused")
        assert (line["topic"], line["partitions"], line["expected"]) == (refused, 3, 2)
        assert line["level"] == "error"
        changed = log_events(log, "input_topics_changed")
        assert [event["added"] for event in changed] == [[second]], changed
        [started] = log_events(log, "consumer_started")
        assert started["inputs"] == topics.inputs
        assert await read_records(kafka_bootstrap, topics.failed) == []
        assert checked.code == 4, checked.out
        assert f"refused, not read (not 2 partitions): {refused}=3" in checked.out
        assert_history_never_shrinks(sandbox_in_process, [*first.expected, *split.expected])

    async def test_two_members_take_up_a_new_topic_by_partition_number(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """Two ``basicsync run`` members on one pattern. A looks at the topics every second;
        B only every 120 s, so B learns of a new topic from the rebalance A's subscription
        causes (it looks again after each one). Jobs split over the old and the new topic
        converge long before B's own look would come, each member keeps one partition
        number on both topics, and no job's history ever loses a step."""
        prefix, topics, settings = await under_a_fresh_prefix(
            make_topic, kafka_bootstrap, sandbox_in_process
        )
        slow = {"BASICSYNC_KAFKA__METADATA_MAX_AGE_MS": "120000"}
        log_a, log_b = str(tmp_path / "a.log"), str(tmp_path / "b.log")
        async with (
            consumer_process(settings, log_a, FAST_METADATA),
            consumer_process(settings, log_b, slow),
        ):
            await until_each_holds(1, log_a, log_b)
            second = await make_topic(f"{prefix}.in2", partitions=2)
            split = build_demo(DemoPlan(jobs=20, seed=65, prefix="both"))
            await produce(kafka_bootstrap, [topics.inputs[0], second], split.events)
            await wait_converged(sandbox_in_process, split.expected, within=45)
            for log in (log_a, log_b):
                changed = log_events(log, "input_topics_changed")
                assert [event["added"] for event in changed] == [[second]], tail(log)
            assert holds_partitions(log_a, 1), tail(log_a)
            assert holds_partitions(log_b, 1), tail(log_b)
        assert_history_never_shrinks(sandbox_in_process, list(split.expected))

    async def test_a_hung_broker_and_a_deleted_topic_are_gone_through(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """``basicsync run`` on a pattern while the broker is SIGSTOPped for 13 s: its looks
        at the topics are given up with a warning (``input_topics_unlisted``), never an exit;
        a topic created after the broker is back is read. That topic, deleted while read, is
        dropped from the subscription (``removed``), and a commit that still names its
        offsets gives the partition up instead of waiting for ever (Kafka answers
        UNKNOWN_TOPIC_OR_PARTITION, which aiokafka retries without end; this test hung so
        before): the member goes on with the first topic, whose later events still reach
        every job."""
        prefix, topics, settings = await under_a_fresh_prefix(
            make_topic, kafka_bootstrap, sandbox_in_process
        )
        first = build_demo(DemoPlan(jobs=10, seed=66, prefix="before"))
        await produce(kafka_bootstrap, topics.inputs, first.events)
        log = str(tmp_path / "consumer.log")
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            async with consumer_process(settings, log, FAST_METADATA):
                await wait_converged(sandbox_in_process, first.expected, within=60)
                async with broker_hung(broker_pid(kafka_bootstrap)):
                    await asyncio.sleep(13)  # past the 10 s a look is given
                unlisted = lambda: bool(log_events(log, "input_topics_unlisted"))  # noqa: E731
                assert await eventually(unlisted, within=30), tail(log)
                second = f"{prefix}.in2-{uuid.uuid4().hex[:8]}"
                await create_topic_when_able(admin, second, 2)
                split = build_demo(DemoPlan(jobs=10, seed=67, prefix="after"))
                await produce(kafka_bootstrap, [topics.inputs[0], second], split.events)
                await wait_converged(sandbox_in_process, split.expected, within=90)
                await admin.delete_topics([second])
                removed = lambda: any(  # noqa: E731
                    line["removed"] == [second] for line in log_events(log, "input_topics_changed")
                )
                assert await eventually(removed, within=30), tail(log)
                late = final_upserts(list(split.expected), "late")
                await produce(kafka_bootstrap, topics.inputs, late)
                expected = with_title(split.expected, "late")
                await wait_converged(sandbox_in_process, expected, within=60)
        finally:
            await admin.close()
        assert_history_never_shrinks(sandbox_in_process, [*first.expected, *split.expected])

    async def test_a_member_killed_as_the_group_takes_up_a_new_topic_loses_nothing(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """Two members on one pattern; a new topic is created with half of 20 jobs' events
        on it, and member A is SIGKILLed as soon as it subscribes to the topic, in the
        rebalance that follows. B takes every partition of both topics: every job
        converges whole, no history loses a step, and B reads both topics to the end. A
        topic refused for its count and then recreated with the right one is read too."""
        prefix, topics, settings = await under_a_fresh_prefix(
            make_topic, kafka_bootstrap, sandbox_in_process
        )
        log_a, log_b = str(tmp_path / "a.log"), str(tmp_path / "b.log")
        a = start_consumer_process(settings, log_a, FAST_METADATA)
        async with consumer_process(settings, log_b, FAST_METADATA):
            await until_each_holds(1, log_a, log_b)
            second = await make_topic(f"{prefix}.in2", partitions=2)
            split = build_demo(DemoPlan(jobs=20, seed=68, prefix="killed"))
            await produce(kafka_bootstrap, [topics.inputs[0], second], split.events)
            changed = lambda: bool(log_events(log_a, "input_topics_changed"))  # noqa: E731
            assert await eventually(changed, within=30), tail(log_a)
            a.kill()
            await asyncio.to_thread(a.wait, 30)
            await wait_converged(sandbox_in_process, split.expected, within=90)
            assert await eventually(lambda: holds_partitions(log_b, 2), within=60), tail(log_b)
            wrong = await make_topic(f"{prefix}.in3", partitions=3)
            refused = lambda: bool(log_events(log_b, "input_topic_refused"))  # noqa: E731
            assert await eventually(refused, within=30), tail(log_b)
            await recreate(kafka_bootstrap, wrong, 2, {})
            late = build_demo(DemoPlan(jobs=5, seed=69, prefix="recreated"))
            await produce(kafka_bootstrap, [wrong], late.events)
            await wait_converged(sandbox_in_process, late.expected, within=60)
        assert_history_never_shrinks(sandbox_in_process, [*split.expected, *late.expected])
        added = [line["added"] for line in log_events(log_b, "input_topics_changed")]
        assert [wrong] in added, added

    async def test_a_pattern_that_matches_nothing_stops_the_start_with_exit_2(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """Like a listed topic that does not exist: the message names the pattern."""
        topics = await new_topics(make_topic, partitions=1)
        nothing = f"none-{uuid.uuid4().hex}"
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        ran = await basicsync(
            under_pattern(settings, replace(topics, inputs=[nothing]), nothing), "run"
        )
        assert ran.code == 2, ran.out
        assert "no topic matches the input pattern" in ran.err, ran.err


class TestZombieOnAPattern:
    async def test_a_member_stopped_past_its_session_as_a_topic_appears_rejoins_whole(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """Two members on one pattern. A is SIGSTOPped past its 6 s session until B holds
        both partition numbers; meanwhile a second topic appears under the pattern with jobs
        split over both topics, which B takes up alone. A wakes behind the group: its
        producers fenced, its view of the topics stale. It rejoins, takes up the new topic and
        gets one partition number back on both topics; jobs sent after that converge too. No
        failure record, every job converges, no job's history loses a step, and A never
        exits."""
        prefix, topics, settings = await under_a_fresh_prefix(
            make_topic, kafka_bootstrap, sandbox_in_process
        )
        first = build_demo(DemoPlan(jobs=30, seed=68, prefix="zombie-first"))
        split = build_demo(DemoPlan(jobs=30, seed=69, prefix="zombie-split"))
        log_a, log_b = str(tmp_path / "a.log"), str(tmp_path / "b.log")
        async with (
            consumer_process(settings, log_a, FAST_METADATA) as a,
            consumer_process(settings, log_b, FAST_METADATA),
        ):
            await until_each_holds(1, log_a, log_b)
            await produce(kafka_bootstrap, topics.inputs, first.events[: len(first.events) // 2])
            a.send_signal(signal.SIGSTOP)
            try:
                taken = await eventually(lambda: holds_partitions(log_b, 2), within=60)
                assert taken, "B never took both partitions:\n" + tail(log_b)
                second = await make_topic(f"{prefix}.in2", partitions=2)
                both = [topics.inputs[0], second]
                await produce(kafka_bootstrap, both, split.events[: len(split.events) // 2])
                await asyncio.sleep(2)
            finally:
                a.send_signal(signal.SIGCONT)
            await until_each_holds(1, log_a, log_b)
            await produce(kafka_bootstrap, topics.inputs, first.events[len(first.events) // 2 :])
            await produce(kafka_bootstrap, both, split.events[len(split.events) // 2 :])
            await wait_converged(
                sandbox_in_process, {**first.expected, **split.expected}, within=90
            )
            added = [event["added"] for event in log_events(log_a, "input_topics_changed")]
            assert added == [[second]], tail(log_a)
            assert holds_partitions(log_a, 1), tail(log_a)
            assert holds_partitions(log_b, 1), tail(log_b)
        assert await read_records(kafka_bootstrap, topics.failed, settle_s=0.5) == []
        assert_history_never_shrinks(sandbox_in_process, [*first.expected, *split.expected])


class TestMembersDisagreeOnTopics:
    async def test_a_topic_only_one_member_reads_is_split_by_partition_number(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """A rolling deploy that adds input topic ``t2``: member A already lists ``[t1, t2]``,
        member B still ``[t1]``. Each job's events are split over both topics. A reads ``t2``
        only on its own partition number, so B's jobs are never assembled from their ``t2``
        events alone by A (Kafka's range assignor would give A all of ``t2``: each job of B's
        partition posted by both, its document flipping between the halves). B's jobs
        converge once B lists ``t2`` too; no job's history ever loses a step."""
        topics = await new_topics(make_topic, partitions=2, inputs=2)
        both = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        one = both.model_copy(
            update={"topics": both.topics.model_copy(update={"input": topics.inputs[:1]})}
        )
        demo = build_demo(DemoPlan(jobs=20, seed=64, prefix="rolling"))
        log_a, log_b = str(tmp_path / "a.log"), str(tmp_path / "b.log")
        async with consumer_process(both, log_a), consumer_process(one, log_b):
            await until_each_holds(1, log_a, log_b)
            [a_owns] = log_events(log_a, "partitions_assigned")[-1]["partitions"]
            await produce(kafka_bootstrap, topics.inputs, demo.events)
            ours = {j: b for j, b in demo.expected.items() if hashes_to(j.encode(), 2) == a_owns}
            assert 0 < len(ours) < len(demo.expected)
            await wait_converged(sandbox_in_process, ours, within=60)
            await asyncio.sleep(3)  # B's jobs: only B posts them, from t1's events
            theirs = [job for job in demo.expected if job not in ours]
            assert all(stored(sandbox_in_process, job) != demo.expected[job] for job in theirs)
            assert_history_never_shrinks(sandbox_in_process, list(demo.expected))
        # Once both were in the group, A never held B's partition number (on any topic).
        joined = [line["partitions"] for line in log_events(log_a, "partitions_assigned")]
        assert joined[-1] == [a_owns], joined
        async with consumer_process(both, str(tmp_path / "b2.log")):
            await wait_converged(sandbox_in_process, demo.expected, within=60)
        assert_history_never_shrinks(sandbox_in_process, list(demo.expected))


class TestAssignorOffer:
    @pytest.mark.xfail(
        strict=True,
        reason="aiokafka 0.14 sends one JoinGroup per assignor (aio-libs/aiokafka PR 1168)",
    )
    async def test_a_member_offering_two_assignors_joins_a_new_group_in_one_generation(
        self, kafka_bootstrap: str, make_topic: MakeTopic
    ) -> None:
        """Why members offer ``basicsync-copartitioned`` alone, so upgrades from a range
        version cannot roll (docs/operations.md, "Upgrading"). aiokafka 0.14 sends its
        KIP-394 join inside its loop over the assignors: one JoinGroup with the first
        protocol, then one with both. The second changes the member's protocols, so the
        coordinator starts another generation, and two members starting together bump each
        other's generation without end. Kafka's own assignors show it: a lone member of a
        new group joins at generation 2, not 1. When this passes (strict xfail fails the
        suite), offer range beside ours again, in ``EventSource``."""
        topic = await make_topic("two-assignors", partitions=2)
        member = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=f"two-assignors-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            partition_assignment_strategy=(RangePartitionAssignor, RoundRobinPartitionAssignor),
        )
        await member.start()
        try:
            assert member.assignment() == {TopicPartition(topic, 0), TopicPartition(topic, 1)}
            assert member._coordinator.generation == 1
        finally:
            await member.stop()


class TestDeletedInputTopic:
    async def test_a_listed_topic_deleted_under_a_running_member_holds_nothing(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """``basicsync run`` on two listed topics; events go to the second and it is deleted
        at once, while they may still wait in a checkpoint. The member goes on: later
        events on the first topic reach every job, and ``basicsync check`` names the
        missing topic (exit 4), as a restart would (exit 2)."""
        topics = await new_topics(make_topic, partitions=2)
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        doomed = f"doomed-{uuid.uuid4().hex[:8]}"
        await admin.create_topics([NewTopic(doomed, 2, 1)])
        listed = replace(topics, inputs=[topics.inputs[0], doomed])
        settings = with_request_timeout(
            settings_for(kafka_bootstrap, sandbox_in_process, listed), 3
        )
        demo = build_demo(DemoPlan(jobs=10, seed=70, prefix="listed"))
        log = str(tmp_path / "consumer.log")
        try:
            async with consumer_process(settings, log):
                await produce(kafka_bootstrap, listed.inputs, demo.events)
                await wait_converged(sandbox_in_process, demo.expected, within=60)
                steps_after = build_demo(DemoPlan(jobs=10, seed=71, prefix="listed")).events
                await produce(kafka_bootstrap, [doomed], steps_after[-20:])
                await admin.delete_topics([doomed])
                late = final_upserts(list(demo.expected), "late")
                await produce(kafka_bootstrap, listed.inputs[:1], late)
                expected = with_title(demo.expected, "late")
                await wait_converged(sandbox_in_process, expected, within=90)
                checked = await basicsync(settings, "check", "--skip-gateway")
        finally:
            await admin.close()
        assert checked.code == 4, checked.out
        assert f"FAIL  input topics: do not exist: {doomed}" in checked.out

    async def test_a_commit_naming_a_deleted_topic_gives_the_partition_up(
        self, kafka_bootstrap: str, make_topic: MakeTopic
    ) -> None:
        """A transaction whose offsets name a topic deleted since: Kafka answers
        UNKNOWN_TOPIC_OR_PARTITION and aiokafka retries it without end. Past
        ``offsets_stuck_s`` the producer asks which topics are gone and raises
        ``PartitionLost`` naming the deleted one; while the topic exists it commits."""
        out = await make_topic("out", partitions=1)
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        doomed = f"doomed-{uuid.uuid4().hex[:8]}"
        await admin.create_topics([NewTopic(doomed, 1, 1)])

        async def gone(topics: set[str]) -> set[str]:
            return topics - set(await partition_counts(admin, topics))

        def factory(**extra: Any) -> AIOKafkaProducer:
            return AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, **extra)

        producer = PartitionProducer(
            factory, f"group-{out}", 0, topics_gone=gone, offsets_stuck_s=1.0
        )
        await producer.start()
        try:
            offsets = {TopicPartition(doomed, 0): 0}
            assert await eventually_async(lambda: _exists(admin, doomed), within=30)
            await asyncio.wait_for(producer.commit([OutRecord(out, b"k", b"1", 0)], offsets), 30)
            await admin.delete_topics([doomed])
            assert await eventually_async(lambda: _deleted(admin, doomed), within=30)
            with pytest.raises(PartitionLost, match=f"input topic {doomed} was deleted"):
                await asyncio.wait_for(
                    producer.commit([OutRecord(out, b"k", b"2", 0)], offsets), 30
                )
        finally:
            await producer.stop()
            await admin.close()


async def _exists(admin: AIOKafkaAdminClient, topic: str) -> bool:
    return topic in await partition_counts(admin, [topic])


async def _deleted(admin: AIOKafkaAdminClient, topic: str) -> bool:
    return not await _exists(admin, topic)
