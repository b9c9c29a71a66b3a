"""Who owns a job right now, and what happened to a request we gave up on.

Real broker, the sandbox over HTTP, and (where it says so) ``basicsync run`` as a subprocess
that is paused with SIGSTOP past its session: a member that missed a rebalance must be fenced
by Kafka, and a request whose outcome is unknown must never land after a newer one.
"""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from consumer.app import Running, endpoints_from, run_consumer
from consumer.config import Settings
from consumer.demo import DemoPlan, build_demo
from consumer.domain.events import JobEvent
from consumer.errors import PartitionLost
from consumer.kafka.transactions import OutRecord, PartitionProducer
from consumer.observability.stats import Stats
from consumer.pipeline import Restored, Restorer
from consumer.state.recovery import RestoreReport
from consumer.testing.workfloplus import Sandbox
from tests.fixtures.kafka import kafka_sh, local_broker_env
from tests.integration.harness import (
    BootstrapRelay,
    MakeTopic,
    Topics,
    assert_each_reported_once,
    assert_history_never_shrinks,
    assert_kafka_client_lines_are_few,
    assert_read_to_the_end,
    assert_stop_gave_up,
    broker_hung,
    broker_pid,
    catching_up,
    committed,
    consumer_process,
    consumer_running,
    eventually,
    eventually_async,
    final_upserts,
    free_port,
    holds_partitions,
    in_chunks,
    log_events,
    max_overlap,
    new_topics,
    posted_early_and_changed_late,
    produce,
    read_records,
    readiness,
    scraped,
    send_live,
    sent_until_held,
    settings_for,
    sigterm_and_wait,
    start_consumer_process,
    stored,
    tail,
    wait_converged,
    with_late_aborts,
    with_request_timeout,
    with_title,
)

pytestmark = pytest.mark.integration


async def stage_grown_past(port: int, slots: int, *, within: float) -> None:
    """Wait until the member's intent stage admits more jobs than ``slots``.

    It grows while the transactions, not the request slots, are what due jobs wait for, and
    halves when a request waits for its slot; since the waiters of a commit all learn its end
    at once, the stage moves within moments (sampled once, it was at its floor in one CI run),
    so it is watched."""
    deadline = time.monotonic() + within
    seen = -1.0
    while time.monotonic() < deadline:
        seen = max(seen, await scraped(port, "basicsync_intent_stage_limit"))
        if seen > slots:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the stage never grew past {slots} slots in {within} s: {seen}")


async def posting(sandbox: Sandbox, log: str, jobs: int = 10) -> None:
    """Once the member posted more than ``jobs`` jobs (its partitions taken, requests going)."""
    assert await eventually(lambda: len(sandbox.state.jobs) > jobs, within=60), tail(log)


async def killed_while_the_broker_hangs(
    broker: int, process: Any, *, hung_s: float, then_s: float
) -> None:
    """SIGSTOP the broker; ``hung_s`` later (the member's commits and intents are stuck on it
    by then) SIGKILL the member; ``then_s`` later SIGCONT the broker."""
    async with broker_hung(broker):
        await asyncio.sleep(hung_s)
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait)
        await asyncio.sleep(then_s)


async def stop_process(process: Any, log: str, within: float = 60) -> None:
    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, within) == 0, tail(log)


class TestFencing:
    async def test_a_newer_producer_of_a_partition_fences_the_older_one(
        self, kafka_bootstrap: str, make_topic: MakeTopic
    ) -> None:
        """Starting partition 0's producer a second time fences the first: its next commit
        raises PartitionLost, and read_committed readers see only what the new one wrote.
        The fenced producer leaves no error unread behind it: asyncio would log each one as
        "Future exception was never retrieved", with a traceback, when it is collected (a
        member logged six such errors at its shutdown after being fenced)."""
        topic = await make_topic("fence", partitions=1)
        group = f"group-{topic}"
        loop = asyncio.get_running_loop()
        unread: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: unread.append(context))

        def factory(**extra: Any) -> AIOKafkaProducer:
            return AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, **extra)

        old = PartitionProducer(factory, group, 0)
        await old.start()
        await old.commit([OutRecord(topic, b"k", b"old-1", 0)], {})
        new = PartitionProducer(factory, group, 0)
        await new.start()
        try:
            with pytest.raises(PartitionLost):
                await asyncio.wait_for(old.commit([OutRecord(topic, b"k", b"zombie", 0)], {}), 30)
            await new.commit([OutRecord(topic, b"k", b"new-1", 0)], {TopicPartition(topic, 0): 1})
        finally:
            await old.stop()
            await new.stop()
            del old, new
            gc.collect()
            loop.set_exception_handler(None)
        assert [(context["message"], repr(context.get("future"))) for context in unread] == []
        reader = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await reader.start()
        try:
            values: list[bytes] = []
            for _ in range(10):
                batch = await reader.getmany(timeout_ms=500)
                values += [m.value for ms in batch.values() for m in ms]
        finally:
            await reader.stop()
        assert values == [b"old-1", b"new-1"]


async def sigstopped_past_the_session(
    a: Any, topics: Topics, log_b: str, check: Callable[[Topics], Awaitable[None]] | None = None
) -> None:
    """SIGSTOP member ``a`` past its 6 s session until member B holds both partitions (the
    group moved on without A, B's producers fenced A's), then SIGCONT it; ``check`` runs while
    it is stopped. Waiting for the takeover, not a fixed time, is what makes A a zombie that
    wakes up behind B's writes, however slow the machine."""
    a.send_signal(signal.SIGSTOP)
    try:
        if check is not None:
            await check(topics)
        taken_over = await eventually(lambda: holds_partitions(log_b, 2), within=60)
        assert taken_over, "B never took both partitions:\n" + tail(log_b)
    finally:
        a.send_signal(signal.SIGCONT)


class TestZombieMember:
    async def _failover(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox: Sandbox,
        tmp_path: Path,
        *,
        pause_a: Callable[[Any, Topics, str], Awaitable[None]],
        seed: int,
        adjust: Callable[[Settings], Settings] = lambda settings: settings,
        stage_grown: bool = False,
        gateway_slowed: bool = False,
    ) -> None:
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=120, seed=seed))
        jobs = list(demo.expected)
        third = len(demo.events) // 3
        settings = adjust(settings_for(kafka_bootstrap, sandbox, topics))
        # A job whose request's outcome is lost waits the in-doubt window (twice the request
        # timeout, and a little) before it is posted again: B waits it out for the requests
        # A announced. A request may take the slow gateway's 9 s.
        env = (
            {
                "BASICSYNC_SYNC__SHUTDOWN_DEADLINE_S": "12",
                "BASICSYNC_GATEWAY__REQUEST_TIMEOUT_S": "10",
                "BASICSYNC_SYNC__IN_DOUBT_WINDOW_S": "21",
            }
            if gateway_slowed
            else {
                "BASICSYNC_SYNC__SHUTDOWN_DEADLINE_S": "5",
                "BASICSYNC_GATEWAY__REQUEST_TIMEOUT_S": "3",
                "BASICSYNC_SYNC__IN_DOUBT_WINDOW_S": "7",
            }
        )
        log_a, log_b, log_c = (str(tmp_path / f"{n}.log") for n in "abc")
        await produce(kafka_bootstrap, topics.inputs, demo.events[:third])
        port = free_port()
        a = start_consumer_process(
            settings, log_a, {**env, "BASICSYNC_OBSERVABILITY__HTTP_PORT": str(port)}
        )
        b = None
        try:
            assert await eventually(lambda: len(sandbox.state.jobs) > 20, within=60), tail(log_a)
            if stage_grown:  # more intents committed ahead of their requests when A stops
                await stage_grown_past(port, settings.sync.concurrency, within=20)
            b = start_consumer_process(settings, log_b, env)
            await pause_a(a, topics, log_b)
            await produce(kafka_bootstrap, topics.inputs, demo.events[third : 2 * third])
            await asyncio.sleep(2)
            await produce(kafka_bootstrap, topics.inputs, demo.events[2 * third :])
            await wait_converged(sandbox, demo.expected, within=150)
            assert a.poll() is None, "the paused member exited:\n" + tail(log_a)
        finally:
            if a.poll() is None:
                a.send_signal(signal.SIGCONT)
                await stop_process(a, log_a)
            if b is not None and b.poll() is None:
                await stop_process(b, log_b)
        # A fresh member restores every partition from the changelog alone.
        c = start_consumer_process(settings, log_c, env)
        try:
            await produce(kafka_bootstrap, topics.inputs, final_upserts(jobs, "after-failover"))
            await wait_converged(sandbox, with_title(demo.expected, "after-failover"), within=90)
        finally:
            await stop_process(c, log_c)
        assert_history_never_shrinks(sandbox, jobs)
        failures = await read_records(kafka_bootstrap, topics.failed, settle_s=0.5)
        assert failures == []

    async def test_a_member_stopped_past_its_session_is_fenced_and_loses_nothing(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """Member A (session 6 s) is SIGSTOPped mid-stream until B has taken both partitions,
        then resumed while events keep coming: every job converges, a fresh member restores all
        of them from the changelog, and no job's accepted history ever loses a step. A is
        stopped with its intent stage grown past the 32 request slots (live traffic), so more
        intents than slots may be committed and waiting when it is fenced."""

        await self._failover(
            kafka_bootstrap,
            make_topic,
            sandbox_in_process,
            tmp_path,
            pause_a=sigstopped_past_the_session,
            seed=61,
            stage_grown=True,
        )

    async def test_a_member_stopped_with_its_posts_on_intents_alone_is_fenced_and_loses_nothing(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """As above, but A checkpoints once a minute (catching up or not), so when it is
        stopped every job it posted was made durable by an intent alone: states ahead of
        offsets it never committed. B restores those states and replays every event onto
        them; A, resumed, is fenced at its next intent. Every job converges, nothing regresses,
        no failure record."""

        def intents_alone(settings: Settings) -> Settings:
            settings = settings.model_copy(
                update={"sync": settings.sync.model_copy(update={"catch_up_lag": 100})}
            )
            return catching_up(settings, catch_up_interval_ms=60_000, checkpoint_interval_ms=60_000)

        async def ahead_of_offsets(topics: Topics) -> None:
            posted = len(sandbox_in_process.state.jobs)
            # What the stopped A committed: not the offsets of the events behind its posts.
            behind = sum((await committed(kafka_bootstrap, topics.group)).values())
            assert posted > 20, posted
            assert behind == 0, f"A committed offsets before it was stopped: {behind}"

        async def sigstop_ahead_of_offsets(a: Any, topics: Topics, log_b: str) -> None:
            await sigstopped_past_the_session(a, topics, log_b, check=ahead_of_offsets)

        await self._failover(
            kafka_bootstrap,
            make_topic,
            sandbox_in_process,
            tmp_path,
            pause_a=sigstop_ahead_of_offsets,
            seed=71,
            adjust=intents_alone,
        )

    async def test_a_revoke_that_overruns_the_session_is_fenced_and_loses_nothing(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """While B joins, the gateway answers in 9 s, so A's revoke (which waits up to 12 s
        for its requests) overruns the 6 s session: the group moves on without A, A's late
        writes are fenced, and nothing is lost or regresses."""

        async def slow_gateway(a: Any, topics: Topics, log_b: str) -> None:
            sandbox_in_process.faults.update({"latency": {"kind": "fixed", "ms": 9_000}})
            await asyncio.sleep(12)
            sandbox_in_process.faults.update({"latency": None})

        await self._failover(
            kafka_bootstrap,
            make_topic,
            sandbox_in_process,
            tmp_path,
            pause_a=slow_gateway,
            seed=67,
            gateway_slowed=True,
        )

    async def test_a_broker_hung_through_a_rebalance_is_waited_out_and_loses_nothing(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """B joins while the gateway answers in 9 s, so A is still releasing its partitions
        when the broker is SIGSTOPped for 10 s, past every member's session: A's revoke
        commit, B's join and any restore wait on a broker that does not answer, and the
        group is rebuilt once it does. Nobody exits, every job converges, a fresh member
        restores all of them, no history shrinks, no failure record."""
        pid = broker_pid(kafka_bootstrap)
        log_a = str(tmp_path / "a.log")

        async def broker_hung_mid_rebalance(a: Any, topics: Topics, log_b: str) -> None:
            sandbox_in_process.faults.update({"latency": {"kind": "fixed", "ms": 9_000}})
            rebalancing = await eventually(
                lambda: "because it is rebalancing" in tail(log_a, chars=10**8), within=30
            )
            assert rebalancing, "B's join never started a rebalance:\n" + tail(log_a)
            async with broker_hung(pid):
                await asyncio.sleep(10)
            sandbox_in_process.faults.update({"latency": None})

        await self._failover(
            kafka_bootstrap,
            make_topic,
            sandbox_in_process,
            tmp_path,
            pause_a=broker_hung_mid_rebalance,
            seed=73,
            gateway_slowed=True,
        )


class TestRequestInDoubt:
    async def test_a_request_that_lands_late_never_overwrites_a_newer_state(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """The sandbox holds a job's first request 2.5 s (the client gives up after 1 s) and
        applies it late; newer events arrive meanwhile. The job is posted again only after
        the in-doubt window (4 s), so WorkfloPlus ends with the newest document, and at no time
        were two requests for the job in flight at the server."""
        topics = await new_topics(make_topic, partitions=1)
        demo = build_demo(DemoPlan(jobs=1, seed=71))
        [job] = list(demo.expected)
        half = len(demo.events) // 2
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        settings = settings.model_copy(
            update={
                "gateway": settings.gateway.model_copy(update={"request_timeout_s": 1.0}),
                "sync": settings.sync.model_copy(update={"in_doubt_window_s": 4.0}),
            }
        )
        sandbox_in_process.faults.update({"hold_first_ms": {job: 2500}})
        async with consumer_running(settings) as (_, task):
            await produce(kafka_bootstrap, topics.inputs, demo.events[:half])
            assert await eventually(
                lambda: bool(sandbox_in_process.state.in_flight.current), within=60
            )
            first_sent = time.monotonic()
            await asyncio.sleep(0.3)
            await produce(kafka_bootstrap, topics.inputs, demo.events[half:])
            assert await eventually(lambda: job in sandbox_in_process.state.jobs, within=10)
            landed = time.monotonic()
            late = stored(sandbox_in_process, job)
            assert late is not None
            assert late != demo.expected[job], "the held request carried the older state"
            await wait_converged(sandbox_in_process, demo.expected, within=30, consumer=task)
            reposted = time.monotonic()
        history = [json.loads(b) for b in sandbox_in_process.state.jobs[job].history]
        assert history[-1] == demo.expected[job]
        assert history[0] == late
        assert max_overlap(sandbox_in_process) == 1
        assert landed - first_sent >= 2.0
        assert reposted - first_sent >= 3.5, "posted again inside the in-doubt window"
        successes = await read_records(kafka_bootstrap, topics.succeeded, settle_s=0.5)
        assert successes
        assert successes[-1]["payloadSha256"] is not None

    async def test_a_member_killed_while_a_request_is_in_doubt_under_live_traffic(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """Process level and live: among 40 jobs, the sandbox holds one job's first request
        12 s and then applies it anyway. The member gives up on it after 1 s, the job's later
        events arrive, and the member is SIGKILLed while the request is still held. The next
        member restores the intent and those events (written, or replayed from offsets held
        back) and posts the job's newest state only after the in-doubt window: the request
        that lands late is overwritten, not the other way round. Every job converges, no two
        requests for one job were ever in flight together, and the offsets reach the end."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=40, seed=79, prefix="doubt-killed"))
        chunks = in_chunks(demo.events, 10)
        victim = posted_early_and_changed_late(chunks)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        settings = settings.model_copy(
            update={
                "gateway": settings.gateway.model_copy(update={"request_timeout_s": 1.0}),
                "sync": settings.sync.model_copy(update={"in_doubt_window_s": 14.0}),
            }
        )
        log = str(tmp_path / "consumer.log")

        async def send(chunk: list[JobEvent]) -> None:
            await produce(kafka_bootstrap, topics.inputs, chunk)

        # Longer than the next member takes to get the partitions (the killed one's session
        # ends first) and restore: posted at once, its request would overlap the held one.
        sandbox_in_process.faults.update({"hold_first_ms": {victim: 12_000}})
        held = sandbox_in_process.state.in_flight.current
        process = start_consumer_process(settings, log)
        assert await eventually(lambda: bool(log_events(log, "partitions_assigned")), within=60)
        sent = await sent_until_held(send, chunks, victim, sandbox_in_process)
        since = time.monotonic()
        while time.monotonic() - since < 1.6:  # its later events, the request given up on
            await send_live(send, chunks[sent : sent + 1])
            sent += 1
        assert victim in held, "the request was no longer held: it is not in doubt"
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait)
        async with consumer_process(settings, log):
            await send_live(send, chunks[sent:])
            assert await eventually(
                lambda: time.monotonic() - since > 12.5 and victim not in held, within=30
            )
            await wait_converged(sandbox_in_process, demo.expected, within=90)
            await assert_read_to_the_end(kafka_bootstrap, topics.group, len(demo.events))
        history = [json.loads(body) for body in sandbox_in_process.state.jobs[victim].history]
        assert len(history) >= 2
        assert history[0] != demo.expected[victim], "the held request had the newest state"
        assert history[-1] == demo.expected[victim]
        assert max_overlap(sandbox_in_process) == 1
        assert_history_never_shrinks(sandbox_in_process, list(demo.expected))


class TestRebalanceErrors:
    async def test_a_failing_restore_is_retried_and_the_partition_processed(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """A restore that fails twice (a transient Kafka error) is retried with backoff: the
        partitions are processed afterwards and every job converges."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=30, seed=73))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        failures = [0]

        def flaky(restore: Restorer) -> Restorer:
            async def wrapped(
                partitions: set[int],
            ) -> tuple[Restored, RestoreReport]:
                if failures[0] < 2:
                    failures[0] += 1
                    raise ConnectionError("injected restore fault")
                return await restore(partitions)

            return wrapped

        async with consumer_running(settings, wrap_restore=flaky) as (_, task):
            await wait_converged(sandbox_in_process, demo.expected, within=60, consumer=task)
        assert failures[0] == 2

    async def test_a_stop_while_a_restore_hangs_ends_in_time(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """A restore that never returns (a broker that stopped answering mid-restore) holds
        the partition's take, and with it the consume loop's lock and aiokafka's group
        coordination. A stop ends the take (``take_stopped``): the member stops at once with
        nothing to commit and leaves the group, its connections closed. (Before, the stop
        waited on the lock for good: still running 60 s later.)"""
        topics = await new_topics(make_topic, partitions=1)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics, shutdown_deadline_s=2)
        restoring = asyncio.Event()

        def hanging(restore: Restorer) -> Restorer:
            async def wrapped(partitions: set[int]) -> tuple[Restored, RestoreReport]:
                restoring.set()
                await asyncio.Event().wait()
                raise AssertionError("unreachable")

            return wrapped

        stop = asyncio.Event()
        running = Running(stats=Stats())
        member = asyncio.create_task(
            run_consumer(settings, endpoints_from(settings), stop, running, wrap_restore=hanging)
        )
        try:
            await asyncio.wait_for(restoring.wait(), 60)
            stopped = time.monotonic()
            stop.set()
            await asyncio.wait_for(asyncio.shield(member), 60)
            took = time.monotonic() - stopped
        finally:
            member.cancel()
        assert took < 3, took
        assert running.stop_committed

    async def test_a_restore_that_never_succeeds_turns_liveness_red(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """A restore that always fails never leaves the member silently holding partitions it
        does not process: readiness is false and /healthz fails once the stall limit passed."""

        topics = await new_topics(make_topic, partitions=1)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        settings = settings.model_copy(
            update={
                "observability": settings.observability.model_copy(
                    update={"http_port": 0, "stall_limit_s": 3.0}
                )
            }
        )

        def broken(restore: Restorer) -> Restorer:
            async def wrapped(
                partitions: set[int],
            ) -> tuple[Restored, RestoreReport]:
                raise ConnectionError("injected restore fault")

            return wrapped

        async with consumer_running(settings, wrap_restore=broken) as (running, task):
            assert await eventually(lambda: running.http_port is not None, within=30)
            base = f"http://127.0.0.1:{running.http_port}"
            statuses: list[int] = []
            async with aiohttp.ClientSession() as http:

                async def healthz() -> int:
                    async with http.get(f"{base}/healthz") as response:
                        return response.status

                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    statuses.append(await healthz())
                    if statuses[-1] == 503:
                        break
                    await asyncio.sleep(0.5)
                async with http.get(f"{base}/readyz") as response:
                    ready = response.status
            assert statuses[0] == 200
            assert statuses[-1] == 503
            assert ready == 503
            assert not task.done()


class TestKafkaTrouble:
    async def test_a_broker_hung_for_60s_is_waited_out(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """The broker is SIGSTOPped for 60 s mid-stream: ``basicsync run`` never exits, its
        checkpoints retry (each commit that waits says so, ``checkpoint_slow``, naming the
        partition and what it waits for; ``/readyz`` fails its ``checkpoint`` check and
        ``basicsync_checkpoint_failing_seconds`` grows), and every job converges once the
        broker answers again, the member ready again."""
        pid = broker_pid(kafka_bootstrap)
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=100, seed=79))
        half = len(demo.events) // 2
        # The hang outlasts the session: the member takes its partitions back, and the jobs
        # whose requests its last intents announced wait out the in-doubt window (three
        # request timeouts, counted from the mark): 9 s here, not the default 90.
        settings = with_request_timeout(
            settings_for(kafka_bootstrap, sandbox_in_process, topics), 3
        )
        log = str(tmp_path / "consumer.log")
        await produce(kafka_bootstrap, topics.inputs, demo.events[:half])
        port = free_port()
        process = start_consumer_process(
            settings, log, {"BASICSYNC_OBSERVABILITY__HTTP_PORT": str(port)}
        )
        try:
            await posting(sandbox_in_process, log)
            failing: list[str] = []
            failing_s = 0.0
            async with broker_hung(pid):
                for _ in range(60):
                    await asyncio.sleep(1)
                    assert process.poll() is None, "exited while the broker hung:\n" + tail(log)
                    body = await readiness(port)
                    if body is not None and "checkpoint" in body["failing"]:
                        failing.append(body["checks"]["checkpoint"]["detail"])
                        gauge = await scraped(port, "basicsync_checkpoint_failing_seconds")
                        failing_s = max(failing_s, gauge)
            assert failing, "/readyz never named the stuck checkpoint:\n" + tail(log)
            assert all(detail.startswith("partition ") for detail in failing), failing
            assert failing_s >= 10, failing_s
            slow = log_events(log, "checkpoint_slow")
            assert slow, "no checkpoint_slow while the broker hung:\n" + tail(log)
            assert all(isinstance(line["partition"], int) and line["waiting_for"] for line in slow)
            assert not [line for line in slow if "client_job_id" in line], "a group commit's"
            await produce(kafka_bootstrap, topics.inputs, demo.events[half:])
            await wait_converged(sandbox_in_process, demo.expected, within=180)
            assert process.poll() is None, tail(log)

            async def ready_again() -> bool:
                body = await readiness(port)
                return body is not None and body["ready"]

            assert await eventually_async(ready_again, within=30), await readiness(port)
            assert await scraped(port, "basicsync_checkpoint_failing_seconds") == 0
        finally:
            if process.poll() is None:
                await stop_process(process, log)
        assert_history_never_shrinks(sandbox_in_process, list(demo.expected))

    async def test_sigterm_while_the_broker_hangs_stops_in_time_and_the_next_run_loses_nothing(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """SIGTERM while the broker is SIGSTOPped, with results, settled states and offsets
        staged (a checkpoint only every 60 s): the last checkpoint cannot commit, and the member
        gives it up at twice its shutdown deadline (3 s here) and exits with code 3 instead of
        retrying until the platform's SIGKILL. Once the broker answers, a new member converges
        every job, reads to the end, and no job's history shrinks."""
        pid = broker_pid(kafka_bootstrap)
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=60, seed=89, prefix="hung-at-stop"))
        half = len(demo.events) // 2
        deadline = 3.0
        settings = with_request_timeout(
            settings_for(kafka_bootstrap, sandbox_in_process, topics, shutdown_deadline_s=deadline),
            3,
        )
        kafka = settings.kafka.model_copy(update={"checkpoint_interval_ms": 60_000})
        rare_checkpoints = settings.model_copy(update={"kafka": kafka})
        log = str(tmp_path / "consumer.log")
        await produce(kafka_bootstrap, topics.inputs, demo.events[:half])
        process = start_consumer_process(rare_checkpoints, log)
        try:
            await posting(sandbox_in_process, log)
            async with broker_hung(pid):
                code, took = await sigterm_and_wait(process, log, 45)
        finally:
            if process.poll() is None:
                process.kill()
        assert_stop_gave_up(log, code, took, deadline)

        await produce(kafka_bootstrap, topics.inputs, demo.events[half:])
        async with consumer_process(settings, str(tmp_path / "after.log")):
            await wait_converged(sandbox_in_process, demo.expected, within=120)
            await assert_read_to_the_end(kafka_bootstrap, topics.group, len(demo.events))
        assert_history_never_shrinks(sandbox_in_process, list(demo.expected))

    async def test_a_broker_back_before_the_second_deadline_lets_the_stop_commit_everything(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """SIGTERM while the broker is SIGSTOPped, every job posted and its result, settled
        state and offsets staged (a checkpoint only every 60 s); the broker answers again
        between the first shutdown deadline and the second. The last checkpoint is only late:
        a ``last_checkpoint_late`` warning, never ``last_checkpoint_abandoned``; the stop's
        final commit takes its work, the member exits 0 saying it committed, the group's
        offsets are at the end and every job has its success record, so the next owner reads
        nothing again."""
        pid = broker_pid(kafka_bootstrap)
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=30, seed=97, prefix="late-at-stop"))
        deadline = 5.0
        settings = settings_for(
            kafka_bootstrap, sandbox_in_process, topics, shutdown_deadline_s=deadline
        )
        kafka = settings.kafka.model_copy(update={"checkpoint_interval_ms": 60_000})
        rare_checkpoints = settings.model_copy(update={"kafka": kafka})
        log = str(tmp_path / "consumer.log")
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        process = start_consumer_process(rare_checkpoints, log)
        try:
            await wait_converged(sandbox_in_process, demo.expected, within=90)
            assert await read_records(kafka_bootstrap, topics.succeeded) == [], "committed early"
            async with broker_hung(pid):
                signalled = time.monotonic()
                process.send_signal(signal.SIGTERM)
                await asyncio.sleep(deadline + 1.5)
            code = await asyncio.to_thread(process.wait, 30)
            took = time.monotonic() - signalled
        finally:
            if process.poll() is None:
                process.kill()
        assert code == 0, tail(log)
        assert took < 2 * deadline + 12, (took, tail(log))
        [late] = log_events(log, "last_checkpoint_late")
        assert late["level"] == "warning"
        assert late["jobs_uncommitted"] >= 1
        assert not log_events(log, "last_checkpoint_abandoned"), tail(log)
        [stopped] = log_events(log, "consumer_stopped")
        assert stopped["last_checkpoint_committed"] is True
        await assert_read_to_the_end(kafka_bootstrap, topics.group, len(demo.events))
        succeeded = await read_records(kafka_bootstrap, topics.succeeded)
        assert {r["clientJobId"] for r in succeeded} == set(demo.expected)

    async def test_sigterm_while_the_broker_hangs_at_start_exits_at_once(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """The broker is SIGSTOPped as the member starts, so its first step (the admin client
        connecting) waits on it. SIGTERM 4 s later ends the process within a second, with code
        0 (before: 47 s, aiokafka's request timeout and the probes after it). Once the broker
        answers, a new member converges every job."""
        pid = broker_pid(kafka_bootstrap)
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=20, seed=97, prefix="hung-at-start"))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        process = start_consumer_process(settings, log)
        async with broker_hung(pid):
            await asyncio.sleep(4)
            code, took = await sigterm_and_wait(process, log, 60)
        assert code == 0, tail(log)
        assert took < 3, (took, tail(log))
        async with consumer_process(settings, str(tmp_path / "after.log")):
            await wait_converged(sandbox_in_process, demo.expected, within=60)

    async def test_killed_while_the_broker_hangs_mid_backlog_the_next_run_loses_nothing(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """While catching up (a checkpoint every 2 s, posts made durable by intents alone), the
        broker is SIGSTOPped, and the member is SIGKILLed during the hang, leaving whatever
        transaction it had open. Once the broker answers, a new run fences that transaction
        away, restores only what was committed, and converges every job; none regresses and no
        failure record is written."""
        pid = broker_pid(kafka_bootstrap)
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=200, seed=83, prefix="hung-backlog"))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        # A 5 s request timeout: the jobs whose intents the kill left in doubt wait out a
        # window of 15 s in the next run, not the default 90 s.
        settings = catching_up(
            with_request_timeout(
                settings_for(kafka_bootstrap, sandbox_in_process, topics, catch_up_lag=100), 5
            ),
            catch_up_interval_ms=2_000,
        )
        log = str(tmp_path / "consumer.log")
        process = start_consumer_process(settings, log)
        try:
            posted = await eventually(lambda: len(sandbox_in_process.state.jobs) > 20, within=60)
            assert posted, tail(log)
            assert "catch_up_mode" in tail(log, chars=10**8), f"never caught up: {tail(log)}"
            await killed_while_the_broker_hangs(pid, process, hung_s=5, then_s=5)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                await asyncio.to_thread(process.wait)
        async with consumer_process(settings, log):
            await wait_converged(sandbox_in_process, demo.expected, within=180)
        assert_history_never_shrinks(sandbox_in_process, list(demo.expected))
        assert await read_records(kafka_bootstrap, topics.failed, settle_s=0.5) == []

    async def test_killed_while_the_broker_hangs_under_live_traffic_loses_nothing(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """Live traffic grows the intent stage past the two request slots (more intents commit
        at once: up to 16 times as many jobs are in doubt after a kill), and the live
        checkpoints leave the jobs about to be posted to them. The broker is SIGSTOPped mid
        stream and the member SIGKILLed during the hang, with its intents and checkpoints
        stuck on it. Once the broker answers, a new run fences them away and converges every
        job; none regresses, no two requests of a job overlap, no failure record."""
        pid = broker_pid(kafka_bootstrap)
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=240, seed=89, prefix="hung-live"))
        chunks = in_chunks(demo.events, 12)
        settings = with_request_timeout(
            settings_for(kafka_bootstrap, sandbox_in_process, topics, concurrency=2), 3
        )
        port = free_port()
        log = str(tmp_path / "consumer.log")
        process = start_consumer_process(
            settings, log, {"BASICSYNC_OBSERVABILITY__HTTP_PORT": str(port)}
        )
        try:
            # Live from the first chunk: sent before the member reads, they would be a burst.
            assert await eventually(
                lambda: bool(log_events(log, "partitions_assigned")), within=60
            ), tail(log)
            # Watched while the chunks go in (the stage moves within moments; sampled once
            # per chunk, it was at its floor at all eight samples in one CI run).
            grown = asyncio.create_task(stage_grown_past(port, 2, within=30))
            for chunk in chunks[:8]:
                await produce(kafka_bootstrap, topics.inputs, chunk)
                await asyncio.sleep(0.3)
            try:
                await grown
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{tail(log)}") from None
            assert "catch_up_mode" not in tail(log, chars=10**8), "caught up: not the live path"
            await killed_while_the_broker_hangs(pid, process, hung_s=3, then_s=2)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                await asyncio.to_thread(process.wait)
        async with consumer_process(settings, log):
            for chunk in chunks[8:]:
                await produce(kafka_bootstrap, topics.inputs, chunk)
            await wait_converged(sandbox_in_process, demo.expected, within=180)
        assert_history_never_shrinks(sandbox_in_process, list(demo.expected))
        assert max_overlap(sandbox_in_process) <= 1
        assert await read_records(kafka_bootstrap, topics.failed, settle_s=0.5) == []

    async def test_a_broker_restarted_mid_backlog_is_waited_out_and_nothing_is_lost(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """The broker (the whole one-node cluster) is stopped cleanly and started again while
        ``basicsync run`` posts the jobs of a backlog, as a rolling restart does to each
        broker: connections
        are refused for seconds and open transactions are aborted. aiokafka 0.14 does not
        retry a connection closed while it looks up its transaction coordinator: a producer
        doing so dies, and the member gives its partition up and takes it back through a
        rebalance. It never exits and converges every job; none regresses and no failure
        record is written."""
        broker_pid(kafka_bootstrap)  # skips unless this session started the broker
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=200, seed=89, prefix="restarted"))
        half = len(demo.events) // 2
        await produce(kafka_bootstrap, topics.inputs, demo.events[:half])
        # Posts of 100 ms, four at a time: the held jobs drain for about 5 s, each post after
        # an intent commit, so the restart comes while transactions are being written.
        sandbox_in_process.faults.update({"latency": {"kind": "fixed", "ms": 100}})
        settings = catching_up(
            settings_for(
                kafka_bootstrap, sandbox_in_process, topics, catch_up_lag=100, concurrency=4
            ),
            catch_up_interval_ms=2_000,
        )
        # A partition taken back waits out the intents its last transaction committed (three
        # request timeouts): 15 s here, not the default 90.
        settings = with_request_timeout(settings, 5.0)
        log = str(tmp_path / "consumer.log")
        process = start_consumer_process(settings, log)
        try:
            posted = await eventually(lambda: len(sandbox_in_process.state.jobs) > 20, within=60)
            assert posted, tail(log)
            restart = await asyncio.to_thread(kafka_sh, "restart", **local_broker_env())
            assert len(sandbox_in_process.state.jobs) < len(demo.expected), "drained already"
            assert restart.returncode == 0, restart.stdout + restart.stderr
            assert process.poll() is None, "exited while the broker restarted:\n" + tail(log)
            await produce(kafka_bootstrap, topics.inputs, demo.events[half:])
            await wait_converged(sandbox_in_process, demo.expected, within=180)
            assert process.poll() is None, tail(log)
        finally:
            if process.poll() is None:
                await stop_process(process, log)
        assert_history_never_shrinks(sandbox_in_process, list(demo.expected))
        assert await read_records(kafka_bootstrap, topics.failed, settle_s=0.5) == []
        assert_kafka_client_lines_are_few(log)
        # Whichever way the restart met a transaction: a partition given up was taken back.
        assigned = log_events(log, "partitions_assigned")
        for lost in log_events(log, "partition_lost"):
            assert any(
                line["timestamp"] > lost["timestamp"] and lost["partition"] in line["partitions"]
                for line in assigned
            ), f"partition {lost['partition']} never taken back:\n{tail(log)}"

    async def test_a_broker_restarted_under_live_traffic_loses_nothing_and_reports_once(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """Live traffic with 40 refused aborts among 240 jobs; the broker is restarted right
        after a chunk arrives, while live checkpoints leave that chunk's jobs to their
        intents. Whichever way the restart meets the commits and intents in flight (aiokafka
        retries them across it; or a commit fails and puts its jobs, their first offsets and
        their records back for the next; or a producer dies and its partition is given up and
        taken back), ``basicsync run`` never exits,
        every job converges, none regresses, each refused abort is reported exactly once and
        the committed offsets reach the end of the input."""
        broker_pid(kafka_bootstrap)  # skips unless this session started the broker
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=240, seed=61, prefix="restarted-live"))
        stream, aborted = with_late_aborts(demo, 40)
        chunks = in_chunks(stream, 12)
        settings = with_request_timeout(
            settings_for(kafka_bootstrap, sandbox_in_process, topics, debounce_ms=300), 3
        )
        log = str(tmp_path / "consumer.log")

        async def send(chunk: list[JobEvent]) -> None:
            await produce(kafka_bootstrap, topics.inputs, chunk)

        async with consumer_process(settings, log) as process:
            assert await eventually(lambda: bool(log_events(log, "partitions_assigned")), within=60)
            await send_live(send, chunks[:5])
            await send(chunks[5])
            await asyncio.sleep(0.5)
            restart = await asyncio.to_thread(kafka_sh, "restart", **local_broker_env())
            assert restart.returncode == 0, restart.stdout + restart.stderr
            assert process.poll() is None, "exited while the broker restarted:\n" + tail(log)
            assert len(sandbox_in_process.state.jobs) < len(demo.expected), "drained already"
            await send_live(send, chunks[6:])
            await wait_converged(sandbox_in_process, demo.expected, within=180)
            await assert_each_reported_once(kafka_bootstrap, topics.failed, aborted)
            await assert_read_to_the_end(kafka_bootstrap, topics.group, len(stream))
        assert "catch_up_mode" not in tail(log, chars=10**8), "caught up: not the live path"
        assert_history_never_shrinks(sandbox_in_process, list(demo.expected))
        assert_kafka_client_lines_are_few(log)

    async def test_an_unreachable_bootstrap_server_at_start_is_waited_out(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """Started while its bootstrap port refuses connections for 8 s, ``basicsync run``
        logs one line per attempt naming the servers and the cause, never a traceback, stays
        up (it never gives up on its own), and converges once the port answers."""
        topics = await new_topics(make_topic, partitions=1)
        demo = build_demo(DemoPlan(jobs=20, seed=83))
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        port = free_port()  # nothing listens there: connections are refused
        proxy_address = f"127.0.0.1:{port}"
        settings = settings_for(proxy_address, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        # Attempts at most 3 s apart (at least three in the 8 s of refusals): at the default
        # 30 s the attempt after the port opens could come 8 s later.
        process = start_consumer_process(
            settings, log, {"BASICSYNC_KAFKA__STARTUP_BACKOFF_MAX_S": "3"}
        )
        relay = BootstrapRelay(kafka_bootstrap, port)
        try:
            await asyncio.sleep(8)
            assert process.poll() is None, tail(log)
            await relay.start()
            await wait_converged(sandbox_in_process, demo.expected, within=120)
        finally:
            if process.poll() is None:
                await stop_process(process, log)
            await relay.close()
        output = tail(log, 200_000)
        attempts = log_events(log, "kafka_unreachable")
        assert len(attempts) >= 3, output[-3000:]
        assert all(proxy_address in a["bootstrap_servers"] for a in attempts)
        assert all("Connection refused" in a["cause"] for a in attempts)
        assert "Traceback" not in output
