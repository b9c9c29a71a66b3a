"""Upgrading a deployment across a change of the changelog's value form, at process level.

``kafka.compress_changelog_values`` (docs/operations.md, "Upgrading"): members that compress
values and members that do not share one changelog during a roll, in either direction. A job
whose value a restore could not read, if dropped, would have its next event posted alone over
the whole document WorkfloPlus holds; here every job's next event must converge to its whole
document instead. And a value no version can read (a frame cut short, as a damaged value or one
of a form this version does not know) must leave its job's document in WorkfloPlus as it was,
its events refused with their bytes, and every other job going on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from consumer.config import Settings
from consumer.demo import DemoPlan, build_demo
from consumer.domain.settled import SETTLED_HEADER
from consumer.domain.value_compression import is_compressed
from consumer.testing.workfloplus import Sandbox
from tests.integration.harness import (
    MakeTopic,
    assert_history_never_shrinks,
    basicsync,
    consumer_process,
    eventually,
    final_upserts,
    free_port,
    log_events,
    new_topics,
    produce,
    produce_raw,
    raw_records,
    read_records,
    readiness,
    settings_for,
    start_consumer_process,
    stored,
    tail,
    wait_converged,
    with_title,
)


def _compressing(settings: Settings, on: bool) -> Settings:
    kafka = settings.kafka.model_copy(update={"compress_changelog_values": on})
    return settings.model_copy(update={"kafka": kafka})


async def _last_values(bootstrap: str, topic: str) -> dict[str, bytes]:
    """Each key's last changelog value (what a restore keeps), tombstones left out."""
    last: dict[str, bytes] = {}
    for key, value in await raw_records(bootstrap, topic):
        if value:
            last[key.decode()] = value
        else:
            last.pop(key.decode(), None)
    return last


class TestValueCompressionRoll:
    async def test_plain_then_compressed_then_plain_again_keeps_every_job_whole_or_refused(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """Jobs written plain (as a version without compression writes them), half of them
        changed by a compressing member that is then SIGKILLed, then every job changed by a
        member with compression off again (a roll back): each restore holds every job, in
        whichever form its last value has, and WorkfloPlus ends with every whole document.
        Before the roll back, two jobs' values are cut short, one marked settled (read at its
        next event) and one not (read at restore): their events are refused with
        job_state_unreadable and their bytes, and their documents stay as they were."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=16, seed=43, prefix="upgrade"))
        jobs = sorted(demo.expected)
        half = jobs[: len(jobs) // 2]
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        base = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        plain, packed = _compressing(base, False), _compressing(base, True)
        log = str(tmp_path / "consumer.log")

        async with consumer_process(plain, log):
            await wait_converged(sandbox_in_process, demo.expected, within=60)
        written = await _last_values(kafka_bootstrap, topics.state)
        assert set(written) == set(jobs)
        assert not any(is_compressed(value) for value in written.values())

        process = start_consumer_process(packed, log)
        try:
            await produce(kafka_bootstrap, topics.inputs, final_upserts(half, "upgraded"))
            changed = with_title({job: demo.expected[job] for job in half}, "upgraded")
            upgraded = {**demo.expected, **changed}
            await wait_converged(sandbox_in_process, upgraded, within=60)

            async def rewritten() -> bool:
                last = await _last_values(kafka_bootstrap, topics.state)
                return all(is_compressed(last[job]) for job in half)

            for _ in range(30):
                if await rewritten():
                    break
                await asyncio.sleep(0.5)
            assert process.poll() is None, tail(log)
        finally:
            process.kill()
            await asyncio.to_thread(process.wait, 30)
        mixed = await _last_values(kafka_bootstrap, topics.state)
        assert {job for job, value in mixed.items() if is_compressed(value)} == set(half)
        assert log_events(log, "changelog_record_unreadable") == []
        settled_victim, unsettled_victim = half[0], half[1]
        await produce_raw(
            kafka_bootstrap,
            topics.state,
            [
                (job.encode(), mixed[job][:-8], headers)
                for job, headers in (
                    (settled_victim, [(SETTLED_HEADER, b"2026-01-01T00:00:00+00:00|N")]),
                    (unsettled_victim, []),
                )
            ],
        )
        victims = {settled_victim, unsettled_victim}

        async with consumer_process(plain, log):
            await produce(kafka_bootstrap, topics.inputs, final_upserts(jobs, "rolled back"))
            rolled_back = with_title(upgraded, "rolled back")
            healthy = {job: body for job, body in rolled_back.items() if job not in victims}
            await wait_converged(sandbox_in_process, healthy, within=60)
            failed: list[Any] = []
            for _ in range(20):  # the failure records commit with the partition's next checkpoint
                failed = await read_records(kafka_bootstrap, topics.failed, settle_s=0.5)
                if len(failed) >= len(victims):
                    break
        assert {f["clientJobId"] for f in failed} == victims
        assert {f["reason"] for f in failed} == {"job_state_unreadable"}
        assert all(f["source"]["value"] for f in failed), "the refused events' bytes"
        for victim in victims:
            assert stored(sandbox_in_process, victim) == upgraded[victim], "never a stub"
        assert_history_never_shrinks(sandbox_in_process, jobs)
        unreadable = log_events(log, "changelog_record_unreadable")
        assert {line["key"] for line in unreadable} == victims


class TestUpgradeFromRange:
    async def test_a_member_beside_range_members_waits_saying_why_then_joins_once_they_left(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """The rolling upgrade the docs forbid: ``basicsync run`` starts while a member of a
        version that offered only the range assignor holds the group, which refuses the new
        member (InconsistentGroupProtocol). It neither exits nor says Kafka is unreachable:
        each retry logs ``group_refuses_member`` with what to do, ``/readyz`` says the same,
        and ``basicsync check`` fails its ``group`` line (exit 4). Once the old member has
        left, it joins, every job converges and ``check`` passes the group."""
        topics = await new_topics(make_topic, partitions=2)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        demo = build_demo(DemoPlan(jobs=10, seed=74, prefix="from-range"))
        old = AIOKafkaConsumer(
            *topics.inputs,
            bootstrap_servers=kafka_bootstrap,
            group_id=topics.group,
            enable_auto_commit=False,
            partition_assignment_strategy=(RangePartitionAssignor,),
        )
        await old.start()
        log, port = str(tmp_path / "consumer.log"), free_port()
        env = {
            "BASICSYNC_KAFKA__STARTUP_BACKOFF_MAX_S": "2",
            "BASICSYNC_OBSERVABILITY__HTTP_PORT": str(port),
        }
        try:
            async with consumer_process(settings, log, env):
                said = await eventually(
                    lambda: len(log_events(log, "group_refuses_member")) >= 2, within=60
                )
                assert said, tail(log)
                line = log_events(log, "group_refuses_member")[0]
                assert "range" in line["cause"]
                assert '"Upgrading"' in line["cause"]
                assert log_events(log, "kafka_unreachable") == []
                body = await readiness(port)
                assert body is not None
                assert not body["ready"]
                assert "another partition assignor" in body["checks"]["partitions"]["detail"]
                checked = await basicsync(settings, "check", "--skip-gateway")
                assert checked.code == 4, checked.out + checked.err
                assert "FAIL  group:" in checked.out
                assert "'range' assignor" in checked.out
                await old.stop()
                joined = await eventually(
                    lambda: bool(log_events(log, "consumer_started")), within=60
                )
                assert joined, tail(log)
                await produce(kafka_bootstrap, topics.inputs, demo.events)
                await wait_converged(sandbox_in_process, demo.expected, within=60)
                checked = await basicsync(settings, "check", "--skip-gateway")
                assert "members on basicsync-copartitioned" in checked.out, checked.out
        finally:
            await old.stop()
