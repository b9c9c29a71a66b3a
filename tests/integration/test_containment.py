"""Contain the bad ones: outages fail nobody, a job the gateway refuses fails alone.

``basicsync run`` as a child process against the local broker and the sandbox in this process;
faults and outages are set on the sandbox while the consumer runs. What the consumer does with
each failure is decided by evidence across jobs (docs/design-notes.md §7): these tests check
the three cases of docs/contract.md §2 promises 6 and 7 end to end.

Retry budgets are shortened through settings. The simulations in tests/unit/test_diagnosis.py
give the figures at the default settings: each of 20 jobs answered 500 forever is failed about
75 s after it arrived (bound pinned there: 7 minutes), a job answered 403 after about 50 s.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from consumer.demo import DemoJobs, DemoPlan, build_demo, send_events
from consumer.domain.events import JobEvent
from consumer.testing.workfloplus import InjectedRejection, Sandbox
from tests.integration.harness import (
    MakeTopic,
    Topics,
    assert_history_never_shrinks,
    committed,
    consumer_process,
    converged,
    eventually,
    final_upserts,
    in_chunks,
    log_events,
    max_overlap,
    new_topics,
    posted_early_and_changed_late,
    produce,
    read_records,
    send_live,
    sent_until_held,
    settings_for,
    sigterm_and_wait,
    start_consumer_process,
    tail,
    wait_converged,
    with_request_timeout,
    with_title,
)

pytestmark = pytest.mark.integration

#: A budget that a per-job failure spends in seconds, not minutes.
SHORT_BUDGET = {
    "BASICSYNC_SYNC__RETRY_MAX_ATTEMPTS": "4",
    "BASICSYNC_SYNC__RETRY_MAX_ELAPSED_S": "30",
    "BASICSYNC_SYNC__RETRY_MAX_MS": "2000",
}


@asynccontextmanager
async def producer_for(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


def job_events(demo: DemoJobs) -> dict[str, list[Any]]:
    """Each job's events, in the order the demo sends them."""
    events: dict[str, list[Any]] = {job: [] for job in demo.expected}
    for event in demo.events:
        events[event.subject].append(event)
    return events


async def send_jobs_live(
    producer: AIOKafkaProducer,
    topics: Sequence[str],
    jobs: list[tuple[str, list[Any]]],
    *,
    every_s: float,
    sent_at: dict[str, float],
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Send the jobs one after another, ``every_s`` apart, each job's events at once;
    ``sent_at`` gets the wall time its last event was acknowledged."""
    for job, events in jobs:
        if stop():
            return
        await send_events(producer, topics, events)
        sent_at[job] = time.time()
        await asyncio.sleep(every_s)


def synced_at(sandbox: Sandbox, job: str, expected: dict[str, Any]) -> float | None:
    """When WorkfloPlus (the sandbox) first accepted the job's expected document."""
    for record in sandbox.state.records:
        if record.client_job_id != job or record.status != 200 or record.body is None:
            continue
        if json.loads(record.body) == expected:
            return record.time
    return None


def late_jobs(
    sandbox: Sandbox, demo: DemoJobs, sent_at: dict[str, float], within_s: float
) -> dict[str, float | None]:
    """Jobs that did not reach WorkfloPlus within ``within_s`` of their last event."""
    late: dict[str, float | None] = {}
    for job, sent in sent_at.items():
        at = synced_at(sandbox, job, demo.expected[job])
        if at is None or at - sent > within_s:
            late[job] = None if at is None else round(at - sent, 2)
    return late


async def warm_up(producer: AIOKafkaProducer, topics: Topics, sandbox: Sandbox) -> None:
    """One healthy job synced: the consumer has joined its group and reads its partitions,
    so what is sent next is timed from a running consumer, not from its start."""
    demo = build_demo(DemoPlan(jobs=1, seed=3, prefix="warm-up"))
    await send_events(producer, topics.inputs, demo.events)
    await wait_converged(sandbox, demo.expected, within=60)


async def failures_for(kafka_bootstrap: str, topics: Topics) -> list[dict[str, Any]]:
    return await read_records(kafka_bootstrap, topics.failed, settle_s=0.5)


class TestOutagesFailNobody:
    async def test_a_single_job_waits_out_an_outage_twice_its_budget_of_gateway_and_token(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """One job while basicSync and the token endpoint answer 503 for 16 s, twice its
        retry budget (8 s): with no other job to compare, its failures are never its own (the
        token endpoint failing is everyone's problem), so it gets no failure record and
        converges after the outage."""
        topics = await new_topics(make_topic, partitions=1)
        demo = build_demo(DemoPlan(jobs=1, seed=31, prefix="alone"))
        [job] = demo.expected
        log = str(tmp_path / "consumer.log")
        outage_s = 16
        await sandbox_in_process.outage(outage_s, "503")
        outage_ends = time.time() + outage_s
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        budget = {**SHORT_BUDGET, "BASICSYNC_SYNC__RETRY_MAX_ELAPSED_S": "8"}
        async with (
            consumer_process(settings, log, budget),
            producer_for(kafka_bootstrap) as producer,
        ):
            await send_events(producer, topics.inputs, demo.events)
            await wait_converged(sandbox_in_process, demo.expected, within=outage_s + 60)
        at = synced_at(sandbox_in_process, job, demo.expected[job])
        assert at is not None
        assert at >= outage_ends - 1
        assert await failures_for(kafka_bootstrap, topics) == []
        assert "circuit_opened" in tail(log, 200_000), "the outage was never noticed"

    async def test_a_token_endpoint_that_hangs_is_an_outage_and_a_stop_meanwhile_ends_in_time(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """The identity provider accepts connections and never answers (tokens revoked, so
        the member must fetch one). That is everyone's outage: the circuit opens, no job gets
        a failure record and none is posted; SIGTERM meanwhile ends the member in time with
        a clean exit. Once the token endpoint answers again, the next member posts every job
        the hung one could not, and no history shrinks."""
        topics = await new_topics(make_topic, partitions=2)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        before = build_demo(DemoPlan(jobs=6, seed=38, prefix="idp-before"))
        during = build_demo(DemoPlan(jobs=6, seed=39, prefix="idp-during"))
        log = str(tmp_path / "hung.log")
        member = start_consumer_process(settings, log, SHORT_BUDGET)
        try:
            await produce(kafka_bootstrap, topics.inputs, before.events)
            await wait_converged(sandbox_in_process, before.expected, within=60)
            sandbox_in_process.faults.update({"token_delay_ms": 3_600_000})
            sandbox_in_process.revoke_tokens()
            await produce(kafka_bootstrap, topics.inputs, during.events)
            opened = await eventually(lambda: bool(log_events(log, "circuit_opened")), within=60)
            assert opened, tail(log)
            code, took = await sigterm_and_wait(member, log, within=60)
        finally:
            member.kill()
        assert code == 0, tail(log)
        assert took < 2 * 30 + 7, took  # the stop's bound with the default deadline
        assert converged(sandbox_in_process, during.expected) == 0
        assert await failures_for(kafka_bootstrap, topics) == []
        sandbox_in_process.faults.update({"token_delay_ms": 0})
        async with consumer_process(settings, str(tmp_path / "next.log"), SHORT_BUDGET):
            await wait_converged(sandbox_in_process, during.expected, within=60)
        assert await failures_for(kafka_bootstrap, topics) == []
        assert_history_never_shrinks(sandbox_in_process, sorted(before.expected))

    async def test_a_base_url_without_basicsync_fails_no_job(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """BASICSYNC_GATEWAY__BASE_URL with a wrong path: every basicSync answered 404, and
        the probe's GET too (as the real gateway answers for an unknown job). basicSync
        creates a job it does not know, so that 404 is the URL's: the circuit opens and no
        job gets a failure record, for longer than a job's budget (before, each got
        rejected_by_gateway at once and was settled). Started again on the right URL, the
        member posts every job."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=8, seed=40, prefix="wrong-url"))
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        wrong = settings.model_copy(
            update={"gateway": settings.gateway.model_copy(
                update={"base_url": f"{sandbox_in_process.base_url}/not-basicsync"})}
        )  # fmt: skip
        log = str(tmp_path / "wrong.log")
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        async with consumer_process(wrong, log, SHORT_BUDGET):
            opened = await eventually(lambda: bool(log_events(log, "circuit_opened")), within=60)
            assert opened, tail(log)
            await asyncio.sleep(20)  # longer than SHORT_BUDGET's 4 attempts take per job
            assert await failures_for(kafka_bootstrap, topics) == []
        assert converged(sandbox_in_process, demo.expected) == 0
        async with consumer_process(settings, str(tmp_path / "right.log"), SHORT_BUDGET):
            await wait_converged(sandbox_in_process, demo.expected, within=60)
        assert await failures_for(kafka_bootstrap, topics) == []


async def send_until_failed(kafka_bootstrap: str, topics: Topics, demo: DemoJobs) -> list[str]:
    """Send ``demo``'s jobs one by one, about a second apart, until a failure record is on the
    failure topic; the jobs sent (none when no failure came)."""
    sent: list[str] = []
    async with producer_for(kafka_bootstrap) as producer:
        for job, events in job_events(demo).items():
            await send_events(producer, topics.inputs, events)
            sent.append(job)
            await asyncio.sleep(1.0)
            if await failures_for(kafka_bootstrap, topics):
                return sent
    return sent if await failures_for(kafka_bootstrap, topics) else []


class TestABadJobFailsAlone:
    async def test_a_web_page_is_never_taken_for_a_sync(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """200 with an HTML page instead of basicSync's answer. First for every job (a portal
        at the base URL): the circuit opens, no job is failed and none is reported synced.
        Then for one job only (a firewall blocking its content) while the rest get through:
        the rest converge, and that job gets rejected_by_gateway with the page, never a
        success record. Before, each page was a success and the job was settled while
        WorkfloPlus held nothing."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=9, seed=42, prefix="web-page"))
        live = build_demo(DemoPlan(jobs=60, seed=43, prefix="web-page-live"))
        blocked = next(iter(demo.expected))
        sandbox_in_process.faults.update({"web_page_rate": 1.0})
        await produce(kafka_bootstrap, topics.inputs, demo.events)
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        log = str(tmp_path / "consumer.log")
        # Probes at most 2 s apart: the circuit the pages keep opening (each probe's 404
        # closes it) must not hold the live jobs of the second part back for 30 s.
        quick_probes = {**SHORT_BUDGET, "BASICSYNC_SYNC__CIRCUIT_PROBE_MAX_S": "2"}
        async with consumer_process(settings, log, quick_probes):
            opened = await eventually(lambda: bool(log_events(log, "circuit_opened")), within=60)
            assert opened, tail(log)
            await asyncio.sleep(15)  # longer than SHORT_BUDGET's 4 attempts take per job
            assert await failures_for(kafka_bootstrap, topics) == []
            assert await read_records(kafka_bootstrap, topics.succeeded, settle_s=0.5) == []
            assert converged(sandbox_in_process, demo.expected) == 0
            sandbox_in_process.faults.update({"web_page_rate": 0.0, "web_page_job_ids": [blocked]})
            # Live jobs meanwhile: only other jobs' successes make the page this job's own.
            sent = await send_until_failed(kafka_bootstrap, topics, live)
            assert sent, "no failure record while 60 live jobs synced\n" + tail(log)
            expected = {**demo.expected, **{job: live.expected[job] for job in sent}}
            del expected[blocked]
            await wait_converged(sandbox_in_process, expected, within=60)
        [failure] = await failures_for(kafka_bootstrap, topics)
        assert (failure["clientJobId"], failure["reason"]) == (blocked, "rejected_by_gateway")
        assert failure["error"]["status"] == 200
        assert "The requested URL was rejected" in failure["error"]["body"]
        assert "a web page came back" in failure["error"]["message"]
        succeeded = await read_records(kafka_bootstrap, topics.succeeded, settle_s=0.5)
        assert {s["clientJobId"] for s in succeeded} == set(expected)
        assert blocked not in sandbox_in_process.state.jobs

    async def test_one_job_refused_403_among_30_live_jobs(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """One job answered 403 forever while 30 jobs arrive over ~10 s: the 403 is that
        job's own (others succeed meanwhile), so nobody is paused (every other job reaches
        WorkfloPlus within 5 s of its last event) and the bad job gets a rejected_by_gateway
        failure record with the 403 within 2 minutes."""
        topics = await new_topics(make_topic, partitions=3)
        demo = build_demo(DemoPlan(jobs=31, seed=37, prefix="refused"))
        events = job_events(demo)
        bad, *good = list(events)
        sandbox_in_process.faults.update({"reject_job_ids": {bad: InjectedRejection(status=403)}})
        log = str(tmp_path / "consumer.log")
        sent_at: dict[str, float] = {}
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        async with (
            consumer_process(settings, log, SHORT_BUDGET),
            producer_for(kafka_bootstrap) as producer,
        ):
            await warm_up(producer, topics, sandbox_in_process)
            await send_events(producer, topics.inputs, events[bad])
            bad_sent = time.time()
            await send_jobs_live(
                producer,
                topics.inputs,
                [(job, events[job]) for job in good],
                every_s=0.33,
                sent_at=sent_at,
            )
            failures: list[dict[str, Any]] = []

            async def bad_failed() -> bool:
                failures[:] = await failures_for(kafka_bootstrap, topics)
                return bool(failures)

            deadline = bad_sent + 120
            while not await bad_failed():
                assert time.time() < deadline, "no failure record within 2 minutes\n" + tail(log)
            failed_within = time.time() - bad_sent
            await wait_converged(
                sandbox_in_process, {job: demo.expected[job] for job in good}, within=10
            )
        assert late_jobs(sandbox_in_process, demo, sent_at, within_s=5.0) == {}
        assert {f["clientJobId"] for f in failures} == {bad}
        assert {(f["reason"], f["error"]["status"]) for f in failures} == {
            ("rejected_by_gateway", 403)
        }
        assert failed_within < 120
        assert "circuit_opened" not in tail(log, 1_000_000)

    async def test_twenty_jobs_answered_500_among_live_healthy_jobs(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """20 jobs answered 500 forever among healthy jobs arriving live: the healthy ones
        reach WorkfloPlus within 5 s of their last event, nobody is paused, and each of the 20
        gets a retries_exhausted failure record (budget shortened here; see the module doc
        for the figures at the defaults)."""
        topics = await new_topics(make_topic, partitions=3)
        demo = build_demo(DemoPlan(jobs=220, seed=41, prefix="broken"))
        events = job_events(demo)
        jobs = list(events)
        bad = set(jobs[:20])
        healthy = jobs[20:]
        sandbox_in_process.faults.update({"error_job_ids": dict.fromkeys(bad, 500)})
        log = str(tmp_path / "consumer.log")
        sent_at: dict[str, float] = {}
        failures: list[dict[str, Any]] = []

        def all_bad_failed() -> bool:
            return {f["clientJobId"] for f in failures} >= bad

        async def watch_failures() -> None:
            while not all_bad_failed():
                failures[:] = await failures_for(kafka_bootstrap, topics)

        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        async with (
            consumer_process(settings, log, SHORT_BUDGET),
            producer_for(kafka_bootstrap) as producer,
        ):
            await warm_up(producer, topics, sandbox_in_process)
            # A bad job every 0.5 s among healthy ones every 0.25 s, and healthy traffic goes
            # on until every bad job was failed: the evidence that the gateway works.
            bad_first = [(job, events[job]) for job in jobs[:20]]
            healthy_jobs = [(job, events[job]) for job in healthy]
            bad_sent: dict[str, float] = {}
            watcher = asyncio.create_task(watch_failures())
            await asyncio.gather(
                send_jobs_live(producer, topics.inputs, bad_first, every_s=0.5, sent_at=bad_sent),
                send_jobs_live(
                    producer,
                    topics.inputs,
                    healthy_jobs,
                    every_s=0.25,
                    sent_at=sent_at,
                    stop=all_bad_failed,
                ),
            )
            done = await eventually(watcher.done, within=30)
            watcher.cancel()
            assert done, f"{len(bad - {f['clientJobId'] for f in failures})} bad jobs not failed"
            await wait_converged(
                sandbox_in_process, {job: demo.expected[job] for job in sent_at}, within=10
            )
        assert late_jobs(sandbox_in_process, demo, sent_at, within_s=5.0) == {}
        assert {f["clientJobId"] for f in failures} == bad
        assert {(f["reason"], f["error"]["status"]) for f in failures} == {
            ("retries_exhausted", 500)
        }
        assert "circuit_opened" not in tail(log, 1_000_000)

    async def test_a_job_told_to_come_back_in_a_day_comes_back_within_the_bound(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """One job answered 429 with ``Retry-After: 86400`` (a gateway asking for a day, or
        milliseconds sent as seconds) among healthy live jobs, with
        ``BASICSYNC_SYNC__RETRY_AFTER_MAX_S`` at 1 s: it is posted again about a second
        later each time, never sooner, spends its budget as its own failure and gets one
        retries_exhausted record with the 429, nobody else waits. Once the gateway takes it,
        its next event reaches WorkfloPlus. Honoured without a bound, it would be parked for
        the day: neither synced nor failed."""
        topics = await new_topics(make_topic, partitions=3)
        demo = build_demo(DemoPlan(jobs=80, seed=43, prefix="come-back"))
        events = job_events(demo)
        bad, *healthy = list(events)
        sandbox_in_process.faults.update({"rate_limit_job_ids": {bad}, "retry_after_s": 86400})
        log = str(tmp_path / "consumer.log")
        sent_at: dict[str, float] = {}
        failures: list[dict[str, Any]] = []
        settings = settings_for(kafka_bootstrap, sandbox_in_process, topics)
        bounded = {**SHORT_BUDGET, "BASICSYNC_SYNC__RETRY_AFTER_MAX_S": "1"}
        async with (
            consumer_process(settings, log, bounded),
            producer_for(kafka_bootstrap) as producer,
        ):
            await warm_up(producer, topics, sandbox_in_process)
            await send_events(producer, topics.inputs, events[bad])

            async def watch_failures() -> None:
                while not failures:
                    failures[:] = await failures_for(kafka_bootstrap, topics)

            watcher = asyncio.create_task(watch_failures())
            await send_jobs_live(
                producer,
                topics.inputs,
                [(job, events[job]) for job in healthy],
                every_s=0.25,
                sent_at=sent_at,
                stop=watcher.done,
            )
            done = await eventually(watcher.done, within=30)
            watcher.cancel()
            assert done, "no failure record for the job told to wait a day\n" + tail(log)
            await wait_converged(
                sandbox_in_process, {job: demo.expected[job] for job in sent_at}, within=10
            )
            sandbox_in_process.faults.update({"rate_limit_job_ids": frozenset()})
            await produce(kafka_bootstrap, topics.inputs, final_upserts([bad], "taken"))
            await wait_converged(
                sandbox_in_process, with_title({bad: demo.expected[bad]}, "taken"), within=30
            )
        assert late_jobs(sandbox_in_process, demo, sent_at, within_s=5.0) == {}
        assert [(f["clientJobId"], f["reason"], f["error"]["status"]) for f in failures] == [
            (bad, "retries_exhausted", 429)
        ]
        refused = [r.time for r in sandbox_in_process.state.records if r.client_job_id == bad]
        gaps = [later - earlier for earlier, later in itertools.pairwise(refused)]
        assert len(refused) >= 5, refused  # four refused attempts, then the one taken
        assert all(0.9 <= gap < 30 for gap in gaps[:3]), gaps


class TestAFlakyGatewayFailsNobody:
    async def test_failures_that_come_to_every_job_fail_no_job(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """Every job's first two requests answered 502 (a flaky load balancer that every job
        meets, a few times each) while 150 jobs arrive live and others get through meanwhile,
        with a budget of two attempts. Each failure alone looks like the job's own (others
        succeed), and before, each was charged: nearly every job was failed. Weighed against
        the failure rate of fresh requests (every job's first fails: a quarter or more of
        them), two failures in a row are chance, charged to nobody: every job converges with
        no failure record, and each of the 300 failures was left undecided.
        (``tests/unit/test_diagnosis.py`` runs the random case, a third of all requests
        failing, on a fake clock, with and without the rule.)"""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=150, seed=88, prefix="flaky-lb"))
        sandbox = sandbox_in_process
        sandbox.faults.update({"fail_first_per_job": 2, "error_statuses": [502]})
        budget = {**SHORT_BUDGET, "BASICSYNC_SYNC__RETRY_MAX_ATTEMPTS": "2"}
        settings = settings_for(kafka_bootstrap, sandbox, topics)
        log = str(tmp_path / "consumer.log")
        async with (
            consumer_process(settings, log, budget),
            producer_for(kafka_bootstrap) as producer,
        ):

            async def send(chunk: list[JobEvent]) -> None:
                await send_events(producer, topics.inputs, chunk)

            await warm_up(producer, topics, sandbox)  # a success: the gateway works
            await send_live(send, in_chunks(demo.events, 60))
            await wait_converged(sandbox, demo.expected, within=120)
        verdicts = Counter(
            line["verdict"]
            for line in log_events(log, "sync_retry_scheduled")
            if line["client_job_id"].startswith("flaky-lb") and line["status"] == 502
        )
        assert await failures_for(kafka_bootstrap, topics) == []
        assert verdicts == {"undecided": 300}


class TestASlowGatewaySendsNothingLate:
    async def test_a_gateway_that_turns_slow_gets_no_request_after_its_deadline(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """WorkfloPlus answers at once while 60 live jobs arrive (the jobs allowed between
        their intent and their request grow past the two request slots), then takes 1.5 s a
        request while 20 more jobs arrive at once (request timeout 2 s). The intents that wait
        behind the slow requests step back before their send deadline instead of being posted
        late: no request is retried, nothing fails, the circuit stays closed, all converge."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=80, seed=53, prefix="slowing"))
        events = job_events(demo)
        jobs = list(events)
        settings = with_request_timeout(
            settings_for(kafka_bootstrap, sandbox_in_process, topics, concurrency=2), 2.0
        )
        log = str(tmp_path / "consumer.log")
        async with (
            consumer_process(settings, log),
            producer_for(kafka_bootstrap) as producer,
        ):
            await warm_up(producer, topics, sandbox_in_process)
            fast = [(job, events[job]) for job in jobs[:60]]
            await send_jobs_live(producer, topics.inputs, fast, every_s=0.02, sent_at={})
            await wait_converged(
                sandbox_in_process, {job: demo.expected[job] for job, _ in fast}, within=60
            )
            sandbox_in_process.faults.update({"latency": {"kind": "fixed", "ms": 1_500}})
            slow = [event for job in jobs[60:] for event in events[job]]
            await send_events(producer, topics.inputs, slow)
            expired = await eventually(
                lambda: bool(log_events(log, "intent_expired_waiting_for_a_slot")), within=60
            )
            assert expired, "no intent waited behind the slow requests:\n" + tail(log)
            sandbox_in_process.faults.update({"latency": None})
            await wait_converged(sandbox_in_process, demo.expected, within=120)
        assert log_events(log, "sync_retry_scheduled") == []
        assert log_events(log, "circuit_opened") == []
        assert await failures_for(kafka_bootstrap, topics) == []


class TestARateLimitHoldsNoOffsetsBack:
    async def test_jobs_waiting_behind_the_rate_limit_let_the_offsets_reach_the_end(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """A live checkpoint leaves a job about to be posted to its intent and commits the
        offsets below its first event; behind a rate limit a job stays "about to be posted"
        for long. 200 jobs at once at 10 requests/s take 20 s and more to post, yet the
        committed offsets reach the end of the input within a few checkpoints (a crash
        replays little) while most jobs still wait, and every job converges."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=200, seed=59, prefix="rate-limited"))
        settings = settings_for(
            kafka_bootstrap, sandbox_in_process, topics, rate_limit_per_s=10, concurrency=4
        )
        log = str(tmp_path / "consumer.log")
        async with (
            consumer_process(settings, log),
            producer_for(kafka_bootstrap) as producer,
        ):
            await warm_up(producer, topics, sandbox_in_process)
            read_before = sum((await committed(kafka_bootstrap, topics.group)).values())
            await send_events(producer, topics.inputs, demo.events)
            sent = time.monotonic()
            end = read_before + len(demo.events)
            while sum((await committed(kafka_bootstrap, topics.group)).values()) < end:
                assert time.monotonic() - sent < 12, "the offsets stayed behind the waiting jobs"
                await asyncio.sleep(0.5)
            waiting = len(demo.expected) - converged(sandbox_in_process, demo.expected)
            assert waiting > 50, (
                f"only {waiting} jobs still waited: the limit was not the bottleneck"
            )
            await wait_converged(sandbox_in_process, demo.expected, within=180)
        assert await failures_for(kafka_bootstrap, topics) == []


class TestASlowJobHoldsNoOffsetsBack:
    async def test_a_job_whose_request_hangs_lets_the_offsets_reach_the_end(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """WorkfloPlus holds one job's first request 15 s (the client waits up to 20 s) while
        that job's later events and 39 other jobs keep arriving live. A live checkpoint
        leaves a job whose request is in flight to the intent of its next request, and
        commits the offsets only below its first unwritten event, but five checkpoints in a
        row at most: the committed offsets reach the end of the input while the request is
        still held, and every job converges once it lands."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=40, seed=83, prefix="slow-one"))
        chunks = in_chunks(demo.events, 10)
        victim = posted_early_and_changed_late(chunks)
        settings = with_request_timeout(
            settings_for(kafka_bootstrap, sandbox_in_process, topics), 20
        )
        sandbox_in_process.faults.update({"hold_first_ms": {victim: 15_000}})
        held = sandbox_in_process.state.in_flight.current
        log = str(tmp_path / "consumer.log")
        async with (
            consumer_process(settings, log),
            producer_for(kafka_bootstrap) as producer,
        ):
            await warm_up(producer, topics, sandbox_in_process)
            end = sum((await committed(kafka_bootstrap, topics.group)).values())
            end += len(demo.events)

            async def send(chunk: list[JobEvent]) -> None:
                await send_events(producer, topics.inputs, chunk)

            sent = await sent_until_held(send, chunks, victim, sandbox_in_process)
            await send_live(send, chunks[sent:])
            while sum((await committed(kafka_bootstrap, topics.group)).values()) < end:
                assert victim in held, "the offsets waited for the held request to end"
                await asyncio.sleep(0.5)
            await wait_converged(sandbox_in_process, demo.expected, within=60)
        assert max_overlap(sandbox_in_process) == 1
        assert await failures_for(kafka_bootstrap, topics) == []
