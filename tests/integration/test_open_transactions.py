"""An upstream producer's transaction left open on an input partition.

``basicsync run`` as a child process against the local broker and the sandbox. Inputs are read
read_committed, so nothing of a partition past an open transaction's first record can be read
until it ends: the member says which partition is held and why, the other partitions' jobs go
on at their normal pace (the held records are no backlog), and the transaction's events are
applied only if it commits.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from consumer.demo import DemoPlan, build_demo, send_events
from consumer.kafka.partitioning import hashes_to
from consumer.testing.workfloplus import Sandbox
from tests.integration.harness import (
    MakeTopic,
    consumer_process,
    converged,
    eventually,
    log_events,
    new_topics,
    produce,
    read_records,
    settings_for,
    tail,
    wait_converged,
)

pytestmark = pytest.mark.integration

HOLD_SETTINGS = {
    "BASICSYNC_KAFKA__OPEN_TRANSACTION_WARN_S": "3",
    # Fewer records than the transaction holds back: counted as a backlog, they would hold
    # every job of the member for the catch-up delay.
    "BASICSYNC_SYNC__CATCH_UP_LAG": "20",
}


class TestAnOpenTransaction:
    async def test_a_held_partition_is_named_the_others_flow_and_an_abort_applies_nothing(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """A producer opens a transaction on one partition with one job's events, and other
        producers go on writing to both partitions. The member logs
        input_held_by_open_transaction for that partition alone, does not take the held
        records for a backlog (no catch-up), and posts the other partition's jobs. The
        transaction is aborted: its job is never posted nor failed, the held partition's later
        jobs are posted, and the hold's end is logged."""
        topics = await new_topics(make_topic, partitions=2)
        first = build_demo(DemoPlan(jobs=4, seed=50, prefix="before-hold"))
        doomed = build_demo(DemoPlan(jobs=1, seed=51, prefix="aborted"))
        (job,) = doomed.expected
        held = hashes_to(job.encode(), 2)
        later = build_demo(DemoPlan(jobs=16, seed=52, prefix="after-hold"))
        on_held = {j for j in later.expected if hashes_to(j.encode(), 2) == held}
        assert 0 < len(on_held) < len(later.expected)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        transactional = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, transactional_id=f"upstream-{uuid.uuid4().hex}"
        )
        await transactional.start()
        try:
            async with consumer_process(settings, log, HOLD_SETTINGS):
                await produce(kafka_bootstrap, topics.inputs, first.events)
                await wait_converged(sandbox_in_process, first.expected, within=60)
                await transactional.begin_transaction()
                await send_events(transactional, topics.inputs, doomed.events)
                await produce(kafka_bootstrap, topics.inputs, later.events)
                flowing = {j: later.expected[j] for j in later.expected if j not in on_held}
                await wait_converged(sandbox_in_process, flowing, within=60)
                reported = await eventually(
                    lambda: bool(log_events(log, "input_held_by_open_transaction")), within=30
                )
                assert reported, tail(log)
                assert converged(sandbox_in_process, {j: later.expected[j] for j in on_held}) == 0
                await transactional.abort_transaction()
                await wait_converged(sandbox_in_process, later.expected, within=60)
                ended = await eventually(
                    lambda: bool(log_events(log, "input_transaction_hold_ended")), within=30
                )
                assert ended, tail(log)
        finally:
            await transactional.stop()
        [warning] = log_events(log, "input_held_by_open_transaction")
        assert (warning["topic"], warning["partition"]) == (topics.inputs[0], held)
        assert warning["records_waiting"] > len(doomed.events)
        assert "kafka-transactions.sh" in warning["hint"]
        catch_up = [line for line in log_events(log, "catch_up_mode") if line["catching_up"]]
        assert catch_up == [], "records an open transaction held were taken for a backlog"
        assert job not in sandbox_in_process.state.jobs
        assert await read_records(kafka_bootstrap, topics.failed, settle_s=0.5) == []
