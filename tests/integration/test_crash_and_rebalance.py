"""Crashes and group changes: kill -9 mid-stream, members joining and leaving."""

from __future__ import annotations

import asyncio
import signal
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from consumer.config import Settings
from consumer.demo import DemoPlan, build_demo
from consumer.demo.jobs import DemoJobs
from consumer.domain.events import EventType, JobEvent
from consumer.testing.workfloplus import Sandbox
from tests.integration.harness import (
    MakeTopic,
    Topics,
    assert_each_reported_once,
    assert_history_never_shrinks,
    catching_up,
    consumer_process,
    consumer_running,
    eventually,
    in_chunks,
    killed_under_live_traffic,
    max_overlap,
    new_topics,
    produce,
    read_records,
    send_live,
    settings_for,
    start_consumer_process,
    tail,
    wait_converged,
    with_late_aborts,
    with_request_timeout,
)

pytestmark = pytest.mark.integration


def rarely_checkpointing(bootstrap: str, sandbox: Sandbox, topics: Topics) -> Settings:
    """Catching up on anything above 100 records behind, with a checkpoint once a minute.

    A request the kill cut short is in doubt: the next run posts it again once the in-doubt
    window (3 request timeouts) has passed: here 9 s instead of 90 s.
    """
    settings = catching_up(
        settings_for(bootstrap, sandbox, topics, catch_up_lag=100), catch_up_interval_ms=60_000
    )
    return with_request_timeout(settings, 3)


async def held_backlog(
    bootstrap: str, sandbox: Sandbox, topics: Topics, demo: DemoJobs
) -> tuple[Settings, list[JobEvent]]:
    """Produce ``demo`` without its status events (no job ends, so catching up holds every
    one), and the settings that drain them slowly afterwards: two requests at a time, the
    checkpoint rare. Returns those settings and the status events, to produce later."""
    statuses = {EventType.status_changed, EventType.aborted}
    await produce(bootstrap, topics.inputs, [e for e in demo.events if e.type not in statuses])
    settings = rarely_checkpointing(bootstrap, sandbox, topics)
    sync = settings.sync.model_copy(
        update={"concurrency": 2, "catch_up_max_delay_ms": 60_000, "debounce_ms": 0}
    )
    endings = [e for e in demo.events if e.type in statuses]
    return settings.model_copy(update={"sync": sync}), endings


async def killed_twice_mid_backlog(settings: Settings, sandbox: Sandbox, log: str) -> None:
    """Run ``basicsync run`` twice, each time SIGKILLed once it posted 30 more jobs while
    catching up (between checkpoints, with jobs posted on intents alone)."""
    for _ in range(2):
        process = start_consumer_process(settings, log)
        before = len(sandbox.state.records)
        progressed = await eventually(
            lambda before=before: len(sandbox.state.records) > before + 30,  # type: ignore[misc]
            within=90,
        )
        assert progressed, tail(log)
        assert "catch_up_mode" in tail(log, chars=10**8), f"never caught up: {tail(log)}"
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait)


class TestKillNine:
    async def test_kill_9_at_several_points_loses_nothing_and_never_regresses(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """A consumer killed with SIGKILL three times mid-stream and restarted ends with every
        job converged, and no job's accepted history ever loses a step it already had.

        A run killed before its first checkpoint after its posts leaves every job it posted
        in doubt (its intent is the last state written), and the next run waits out the
        in-doubt window before posting any of them: 9 s here (request timeout 3 s), not the
        default 90 s, which is longer than a round's minute (``jobs_rescheduled`` showed all
        300 jobs waiting when this test failed in CI with the default)."""
        topics = await new_topics(make_topic, partitions=3)
        demo = build_demo(DemoPlan(jobs=300, seed=23))
        settings = with_request_timeout(
            settings_for(kafka_bootstrap, sandbox_in_process, topics), 3
        )
        log = str(tmp_path / "consumer.log")
        chunk = len(demo.events) // 4
        for round_number in range(3):
            await produce(
                kafka_bootstrap,
                topics.inputs,
                demo.events[round_number * chunk : (round_number + 1) * chunk],
            )
            process = start_consumer_process(settings, log)
            before = len(sandbox_in_process.state.records)
            # Kill it while it is busy: once it has posted something new in this round.
            progressed = await eventually(
                lambda before=before: len(sandbox_in_process.state.records) > before + 20,  # type: ignore[misc]
                within=60,
            )
            assert progressed, tail(log)
            await asyncio.sleep(0.1 * round_number)
            process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process.wait)
        await produce(kafka_bootstrap, topics.inputs, demo.events[3 * chunk :])
        async with consumer_process(settings, log):
            await wait_converged(sandbox_in_process, demo.expected, within=180)
        assert_history_never_shrinks(sandbox_in_process, list(demo.expected))
        assert max_overlap(sandbox_in_process) <= 1
        assert await read_records(kafka_bootstrap, topics.failed, settle_s=0.5) == []

    async def test_kill_9_while_catching_up_between_rare_checkpoints_loses_nothing(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """While catching up the checkpoint is rare (here once a minute), so a kill lands
        between checkpoints with many jobs posted on intents alone: killed twice mid-backlog,
        the consumer still converges every job, never posts an older document over a newer
        one, and writes no failure record."""
        topics = await new_topics(make_topic, partitions=3)
        demo = build_demo(DemoPlan(jobs=300, seed=29, prefix="catching-up"))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = rarely_checkpointing(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        await killed_twice_mid_backlog(settings, sandbox_in_process, log)
        async with consumer_process(settings, log):
            await wait_converged(sandbox_in_process, demo.expected, within=180)
        assert_history_never_shrinks(sandbox_in_process, list(demo.expected))
        assert await read_records(kafka_bootstrap, topics.failed, settle_s=0.5) == []

    async def test_kill_9_while_the_released_jobs_drain_loses_nothing(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """The end of a catch-up releases every held job; until they are posted no offset is
        committed and each job posted so far is durable by its intent alone. SIGKILLed in the
        middle of that drain (two requests at a time), the next run replays the whole backlog
        onto those intents, waits out the requests in doubt, and converges every job with no
        failure record and no document older than one already accepted."""
        topics = await new_topics(make_topic, partitions=3)
        demo = build_demo(DemoPlan(jobs=200, seed=37, prefix="drain-kill"))
        settings, endings = await held_backlog(kafka_bootstrap, sandbox_in_process, topics, demo)
        log = str(tmp_path / "consumer.log")
        process = start_consumer_process(settings, log)
        draining = await eventually(lambda: len(sandbox_in_process.state.records) > 40, within=90)
        assert draining, tail(log)
        assert '"catching_up": false' in tail(log, chars=10**8), "killed before the drain"
        assert len(sandbox_in_process.state.records) < 150, "the drain was over before the kill"
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait)
        await produce(kafka_bootstrap, topics.inputs, endings)
        async with consumer_process(settings, log):
            await wait_converged(sandbox_in_process, demo.expected, within=180)
        assert_history_never_shrinks(sandbox_in_process, list(demo.expected))
        assert await read_records(kafka_bootstrap, topics.failed, settle_s=0.5) == []

    async def test_kill_9_while_catching_up_reports_each_rejected_event_exactly_once(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """Intents write posted jobs' states ahead of the committed offsets, so a restart
        replays events those states already hold. An abort of a Completed job is rejected,
        never applied: replayed, it is rejected again. Its failure record goes out only with
        the offsets past it, so, killed twice between rare checkpoints, the consumer reports
        every rejected event exactly once, and every job still converges."""
        topics = await new_topics(make_topic, partitions=3)
        demo = build_demo(DemoPlan(jobs=300, seed=31, prefix="rejected-twice"))
        stream, aborted = with_late_aborts(demo, 60)
        await produce(kafka_bootstrap, topics.inputs, stream)
        settings = rarely_checkpointing(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        await killed_twice_mid_backlog(settings, sandbox_in_process, log)
        async with consumer_process(settings, log):
            await wait_converged(sandbox_in_process, demo.expected, within=180)
            await assert_each_reported_once(kafka_bootstrap, topics.failed, aborted)
        assert_history_never_shrinks(sandbox_in_process, list(demo.expected))

    async def test_kill_9_under_live_traffic_reports_each_rejected_event_exactly_once(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """Live, a checkpoint leaves the jobs about to be posted to their intents and commits
        the offsets only up to their first events; the states it writes and the failure
        records of events above those offsets go ahead of them or wait with them. Killed
        twice while the events arrive (never catching up), the consumer loses no event,
        reports every rejected one exactly once, and every job converges."""
        topics = await new_topics(make_topic, partitions=3)
        demo = build_demo(DemoPlan(jobs=300, seed=37, prefix="live-killed"))
        stream, aborted = with_late_aborts(demo, 60)
        settings = with_request_timeout(
            settings_for(kafka_bootstrap, sandbox_in_process, topics, debounce_ms=300), 3
        )
        log = str(tmp_path / "consumer.log")

        async def send(chunk: list[JobEvent]) -> None:
            await produce(kafka_bootstrap, topics.inputs, chunk)

        rest = await killed_under_live_traffic(
            settings, log, sandbox_in_process, in_chunks(stream, 12), send
        )
        async with consumer_process(settings, log):
            await send_live(send, rest)
            await wait_converged(sandbox_in_process, demo.expected, within=180)
            await assert_each_reported_once(kafka_bootstrap, topics.failed, aborted)
        assert_history_never_shrinks(sandbox_in_process, list(demo.expected))


class TestRebalance:
    async def test_members_joining_and_leaving_mid_stream_converge_without_overlap(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """A second member joins mid-stream and the first leaves: same end state, and never
        two requests in flight for one job."""
        topics = await new_topics(make_topic, partitions=4)
        demo = build_demo(DemoPlan(jobs=400, seed=29))
        third = len(demo.events) // 3
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        await produce(kafka_bootstrap, topics.inputs, demo.events[:third])
        leaver_stack, joiner_stack = AsyncExitStack(), AsyncExitStack()
        async with joiner_stack:
            async with leaver_stack:
                first, _ = await leaver_stack.enter_async_context(consumer_running(settings))
                started = await eventually(
                    lambda: len(sandbox_in_process.state.jobs) > 20, within=60
                )
                assert started
                second, second_task = await joiner_stack.enter_async_context(
                    consumer_running(settings)
                )
                joined = await eventually(
                    lambda: bool(second.stats.owned) and not second.stats.restoring, within=60
                )
                assert joined, "the second member never got partitions"
                await produce(kafka_bootstrap, topics.inputs, demo.events[third : 2 * third])
                assert await eventually(lambda: second.stats.events > 0, within=60)
            # the first member has left; the second takes over all partitions
            await produce(kafka_bootstrap, topics.inputs, demo.events[2 * third :])
            await wait_converged(
                sandbox_in_process, demo.expected, within=180, consumer=second_task
            )
        assert first.stats.events > 0
        assert second.stats.events > 0
        assert max_overlap(sandbox_in_process) <= 1
        assert await read_records(kafka_bootstrap, topics.failed, settle_s=0.5) == []

    async def test_a_member_joining_while_the_released_jobs_drain_converges_without_overlap(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """``basicsync run`` has caught up and is posting the jobs the catch-up held, two at a
        time, none committed but by its intent, when a second one joins: the revoke hands
        partitions over mid-drain, the new owner restores states written ahead of their
        offsets and replays the backlog onto them. Every job converges, never two requests of
        one job in flight, no failure record, no document older than one accepted."""
        topics = await new_topics(make_topic, partitions=4)
        demo = build_demo(DemoPlan(jobs=200, seed=41, prefix="drain-join"))
        settings, endings = await held_backlog(kafka_bootstrap, sandbox_in_process, topics, demo)
        first_log, second_log = str(tmp_path / "first.log"), str(tmp_path / "second.log")
        # 20 posts/s: the drain lasts about 10 s, longer than the second member takes to join.
        sandbox_in_process.faults.update({"latency": {"kind": "fixed", "ms": 100}})
        async with consumer_process(settings, first_log):
            draining = await eventually(
                lambda: len(sandbox_in_process.state.records) > 30, within=90
            )
            assert draining, tail(first_log)
            assert '"catching_up": false' in tail(first_log, chars=10**8), "joined too early"
            assert len(sandbox_in_process.state.records) < 120, "the drain was over"
            async with consumer_process(settings, second_log):
                joined = await eventually(
                    lambda: '"partitions_assigned"' in tail(second_log, chars=10**8), within=60
                )
                assert joined, tail(second_log)
                handed_over = len(sandbox_in_process.state.records)
                assert handed_over < len(demo.expected), "the drain ended before the handover"
                sandbox_in_process.faults.update({"latency": None})
                await produce(kafka_bootstrap, topics.inputs, endings)
                await wait_converged(sandbox_in_process, demo.expected, within=180)
        assert_history_never_shrinks(sandbox_in_process, list(demo.expected))
        assert max_overlap(sandbox_in_process) <= 1
        assert await read_records(kafka_bootstrap, topics.failed, settle_s=0.5) == []


class TestShutdown:
    async def test_sigterm_finishes_requests_in_flight_and_a_second_signal_exits_at_once(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """SIGTERM lets slow requests in flight complete and report before exit 0; a second
        signal during a long drain exits at once with 130."""
        topics = await new_topics(make_topic, partitions=1)
        demo = build_demo(DemoPlan(jobs=3, seed=37))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics, debounce_ms=0)
        log = str(tmp_path / "consumer.log")
        sandbox_in_process.faults.update({"latency": {"kind": "fixed", "ms": 2500}})

        def in_flight() -> bool:
            return any(sandbox_in_process.state.in_flight.current.values())

        process = start_consumer_process(settings, log)
        assert await eventually(in_flight, within=60), tail(log)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0, tail(log)
        successes = await read_records(kafka_bootstrap, topics.succeeded, settle_s=0.5)
        assert successes, "the request in flight at SIGTERM was not finished and reported"

        sandbox_in_process.faults.update({"latency": {"kind": "fixed", "ms": 6_000}})
        await produce(kafka_bootstrap, topics.inputs, build_demo(DemoPlan(jobs=2, seed=41)).events)
        process = start_consumer_process(settings, log)
        assert await eventually(in_flight, within=60), tail(log)
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 5) == 130, tail(log)
