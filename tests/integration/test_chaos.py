"""Many faults, one after another on a seeded schedule, under live traffic: the promises hold.

Each fault alone has its own test elsewhere. Here two members of ``basicsync run`` (child
processes) share two input topics of four partitions while traffic arrives live, and every few
seconds one of these happens: a member SIGKILLed and started again; a member SIGSTOPped past its
session (a zombie that wakes up after the group moved on); a member stopped with SIGTERM and
started again; the broker SIGSTOPped, or restarted; a gateway outage; a burst of 500s for a
third of the requests; answers slower than the request timeout; every token revoked; the client
secret rotated (by the book, or refused before the members' Secret volume follows); a job's
first request held past the request timeout (in doubt, and it lands late). One job is refused
(422) throughout, and five records the contract refuses (not JSON, a tombstone, an unknown type,
a key that is not the subject, a value past the size limit) come among the traffic. Eight jobs
also get an event from a second system that numbers its events as the first does (another
``source``, an id of the job's own events): both are events, and both apply.

At the end WorkfloPlus must hold every other job exactly as its events assemble (promise 1),
no accepted document may lack a step an earlier one had and no job may have had two requests
in flight at once (promises 2 and 3), every job's final document must get a success record
with its hash (promise 4: once its member has heard back, as WorkfloPlus may hold a document
from a request in doubt before), and the failure topic must hold the refused job's records and
a record of each bad one, nothing else (promise 5).

``BASICSYNC_CHAOS_SEED`` picks another schedule and ``BASICSYNC_CHAOS_CHUNKS`` a longer run
(chunks of traffic, 0.4 s apart), for runs by hand.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from consumer.config import Settings
from consumer.demo import DemoJobs, DemoPlan, build_demo, send_events
from consumer.domain.events import EventType, JobEvent, encode_structured
from consumer.testing.workfloplus import InjectedRejection, Sandbox
from tests.fixtures.kafka import kafka_sh, local_broker_env
from tests.fixtures.secret_volume import kubelet_volume
from tests.integration.harness import (
    MakeTopic,
    assert_history_never_shrinks,
    broker_hung,
    broker_pid,
    eventually_async,
    in_chunks,
    max_overlap,
    new_topics,
    read_records,
    settings_for,
    sigterm_and_wait,
    start_consumer_process,
    tail,
    wait_converged,
    with_request_timeout,
    with_title,
)

pytestmark = pytest.mark.integration

#: The default schedule tries six kinds of fault in a row: a SIGKILL, the broker hung, then
#: restarted, requests landing late, a gateway outage and a zombie.
SEED = int(os.environ.get("BASICSYNC_CHAOS_SEED", "895"))
CHUNKS = int(os.environ.get("BASICSYNC_CHAOS_CHUNKS", "100"))


@dataclass
class Member:
    """One ``basicsync run`` process, started again after each stop, logging to one file."""

    settings: Settings
    log: str
    #: the mounted Secret volume's client secret file (rotated by the chaos)
    secret_file: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        self.process = start_consumer_process(self.settings, self.log, secret_file=self.secret_file)
        self.starts += 1

    @property
    def running(self) -> subprocess.Popen[bytes]:
        assert self.process is not None
        assert self.process.poll() is None, f"{self.log} exited:\n" + tail(self.log)
        return self.process


@dataclass
class Chaos:
    members: list[Member]
    sandbox: Sandbox
    bootstrap: str
    broker: int
    rng: random.Random
    jobs: list[str]
    secret_volume: Path
    done: list[str] = field(default_factory=list)
    rotations: int = 0

    async def kill(self) -> None:
        member = self.rng.choice(self.members)
        member.running.kill()
        await asyncio.to_thread(member.running.wait)
        await asyncio.sleep(self.rng.uniform(1, 3))
        member.start()

    async def zombie(self) -> None:
        """Paused past its 6 s session: the group gives its partitions to the other member,
        and on waking its transactions are fenced and its in-flight intents waited out."""
        process = self.rng.choice(self.members).running
        process.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(self.rng.uniform(8, 10))
        finally:
            process.send_signal(signal.SIGCONT)

    async def restart(self) -> None:
        member = self.rng.choice(self.members)
        code, _ = await sigterm_and_wait(member.running, member.log, within=60)
        assert code == 0, tail(member.log)
        member.start()

    async def hang_broker(self) -> None:
        async with broker_hung(self.broker):
            await asyncio.sleep(self.rng.uniform(3, 6))

    async def restart_broker(self) -> None:
        """Stopped and started again, its data kept: leaders move, connections and open
        transactions break."""
        restarted = await asyncio.to_thread(kafka_sh, "restart", **local_broker_env())
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        self.broker = broker_pid(self.bootstrap)

    async def outage(self) -> None:
        await self.sandbox.outage(self.rng.uniform(3, 6), "503")

    async def errors(self) -> None:
        self.sandbox.faults.update({"error_rate": 0.3, "error_statuses": [500, 502, 503]})
        await asyncio.sleep(self.rng.uniform(3, 6))
        self.sandbox.faults.update({"error_rate": 0.0})

    async def late_request(self) -> None:
        """The next request of a few jobs lands 3 s late, past the 2 s request timeout."""
        late = self.rng.sample(self.jobs, 3)
        self.sandbox.faults.update({"hold_first_ms": dict.fromkeys(late, 3000)})
        await asyncio.sleep(4)

    async def slow(self) -> None:
        """Answers up to 2.5 s late, past the 2 s request timeout for some: in doubt."""
        latency = {"kind": "uniform", "min_ms": 0, "max_ms": 2500}
        self.sandbox.faults.update({"latency": latency})
        await asyncio.sleep(self.rng.uniform(3, 6))
        self.sandbox.faults.update({"latency": None})

    async def revoke_tokens(self) -> None:
        self.sandbox.revoke_tokens()
        await asyncio.sleep(1)

    async def rotate_secret(self) -> None:
        """The client secret rotated under the members: by the book (the identity provider
        takes both while the Secret volume is swapped), or the hard way (the old secret
        refused and every token revoked, the volume following 1 to 3 s later)."""
        self.rotations += 1
        new = f"chaos-secret-{self.rotations}"
        faults = self.sandbox.faults
        old = list(faults.config.client_secrets or [self.sandbox.settings.client_secret])
        if self.rng.random() < 0.5:
            faults.update({"client_secrets": [*old, new]})
            kubelet_volume(self.secret_volume, new, str(self.rotations))
            await asyncio.sleep(self.rng.uniform(2, 4))
            faults.update({"client_secrets": [new]})
        else:
            faults.update({"client_secrets": [new]})
            self.sandbox.revoke_tokens()
            await asyncio.sleep(self.rng.uniform(1, 3))
            kubelet_volume(self.secret_volume, new, str(self.rotations))

    async def run(self, until: asyncio.Event) -> None:
        faults: list[Callable[[], Awaitable[None]]] = [
            self.kill,
            self.zombie,
            self.restart,
            self.hang_broker,
            self.restart_broker,
            self.outage,
            self.errors,
            self.late_request,
            self.slow,
            self.revoke_tokens,
            self.rotate_secret,
        ]
        while not until.is_set():
            await asyncio.sleep(self.rng.uniform(1, 3))
            fault = self.rng.choice(faults)
            self.done.append(fault.__name__)
            await fault()


class TestChaos:
    async def test_the_promises_hold_through_many_faults_under_live_traffic(
        self,
        kafka_bootstrap: str,
        make_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        topics = await new_topics(make_topic, partitions=4, inputs=2)
        demo = build_demo(DemoPlan(jobs=160, seed=SEED, prefix=f"chaos-{SEED}"))
        refused, *healthy = sorted(demo.expected)
        sandbox = sandbox_in_process
        sandbox.faults.update({"reject_job_ids": {refused: InjectedRejection(status=422)}})
        settings = with_request_timeout(
            settings_for(kafka_bootstrap, sandbox, topics, debounce_ms=200), 2
        )
        volume = tmp_path / "gateway-secret"
        volume.mkdir()
        secret_file = kubelet_volume(volume, sandbox.settings.client_secret, "0")
        members = [
            Member(settings, str(tmp_path / f"member-{name}.log"), secret_file) for name in "ab"
        ]
        for member in members:
            member.start()
        rng = random.Random(SEED)
        broker = broker_pid(kafka_bootstrap)
        chaos = Chaos(members, sandbox, kafka_bootstrap, broker, rng, healthy, volume)
        sent = asyncio.Event()
        faults = asyncio.create_task(chaos.run(sent))
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, linger_ms=5, max_request_size=2 * 1024 * 1024
        )
        bad = bad_records(demo, healthy[0])
        chunks = in_chunks(demo.events, CHUNKS)
        places = random.Random(SEED + 1).sample(range(len(chunks)), len(bad))
        bad_after = dict(zip(places, bad, strict=True))
        other_system = same_ids_from_another_system(demo, healthy[1:], random.Random(SEED + 2))
        for event in other_system:
            chunks[random.Random(event.id).randrange(len(chunks))].append(event)
        expected = {job: demo.expected[job] for job in healthy}
        expected.update(
            with_title(
                {e.subject: demo.expected[e.subject] for e in other_system}, OTHER_SYSTEM_TITLE
            )
        )
        await producer.start()
        try:
            for n, chunk in enumerate(chunks):
                await send_events(producer, topics.inputs, chunk)
                if n in bad_after:
                    key, value, headers, _ = bad_after[n]
                    await producer.send_and_wait(topics.inputs[0], value, key, headers=headers)
                await asyncio.sleep(0.4)
            sent.set()
            await faults
            sandbox.faults.update({"hold_first_ms": {}})
            await sandbox.end_outage()
            await wait_converged(sandbox, expected, within=180)
            # A job can converge through a request its member has not heard back from (in
            # doubt, landed late): its success record comes once it is posted again.
            successes: list[dict[str, Any]] = []

            async def all_reported() -> bool:
                successes[:] = await read_records(kafka_bootstrap, topics.succeeded, settle_s=0.5)
                return not unreported(sandbox, healthy, successes)

            reported = await eventually_async(all_reported, within=120)
            assert reported, f"no success record: {unreported(sandbox, healthy, successes)}"
            failures = await read_records(kafka_bootstrap, topics.failed, settle_s=2)
            for member in members:
                code, _ = await sigterm_and_wait(member.running, member.log, within=60)
                assert code == 0, tail(member.log)
        finally:
            faults.cancel()
            await producer.stop()
            for member in members:
                if member.process is not None and member.process.poll() is None:
                    member.process.send_signal(signal.SIGCONT)
                    member.process.kill()
        print(f"seed {SEED}: faults {chaos.done}, starts {[m.starts for m in members]}")
        assert len(set(chaos.done)) >= 4, chaos.done  # the schedule tried several kinds
        assert_history_never_shrinks(sandbox, healthy)
        assert max_overlap(sandbox) == 1
        assert refused not in sandbox.state.jobs
        refusals = [f for f in failures if f["reason"] == "rejected_by_gateway"]
        assert {(f["clientJobId"], f["error"]["status"]) for f in refusals} == {(refused, 422)}
        # Each bad record among the traffic is reported (a repeat after a crash allowed), and
        # nothing else is.
        wanted = {(reason, digest(value)) for _, value, _, reason in bad}
        found = {(f["reason"], f["source"]["valueSha256"]) for f in failures if f not in refusals}
        assert found == wanted
        assert_repeats_agree(successes)


def unreported(sandbox: Sandbox, jobs: list[str], successes: list[dict[str, Any]]) -> list[str]:
    """The jobs whose last accepted document has no success record with its hash."""
    hashes = {(record["clientJobId"], record["payloadSha256"]) for record in successes}
    return [
        job
        for job in jobs
        if (job, hashlib.sha256(sandbox.state.jobs[job].history[-1]).hexdigest()) not in hashes
    ]


def assert_repeats_agree(successes: list[dict[str, Any]]) -> None:
    """Records of one ``(clientJobId, stateVersion)`` (a repeat after a crash) agree on what
    was posted."""
    reported: dict[tuple[str, int], str] = {}
    for record in successes:
        key = (record["clientJobId"], record["stateVersion"])
        assert reported.setdefault(key, record["payloadSha256"]) == record["payloadSha256"], key


#: the title the second system's events write
OTHER_SYSTEM_TITLE = "from another system"


def same_ids_from_another_system(
    demo: DemoJobs, jobs: list[str], rng: random.Random
) -> list[JobEvent]:
    """For eight jobs, an event of a second system under the id of one of the job's own
    events: another ``source``, a later time than any demo event, a new title."""
    chosen = rng.sample(jobs, 8)
    events = []
    for job in chosen:
        own = rng.choice([e for e in demo.events if e.subject == job])
        events.append(
            own.replaced(
                type=EventType.upserted,
                source="urn:chaos-other-system",
                time=datetime(2026, 6, 2, tzinfo=UTC),
                data={"jobTitle": OTHER_SYSTEM_TITLE},
            )
        )
    return events


BadRecord = tuple[bytes | None, bytes | None, list[tuple[str, bytes]], str]


def bad_records(demo: DemoJobs, job: str) -> list[BadRecord]:
    """Records the contract refuses, each with the reason it gets: not JSON, a tombstone, an
    unknown type and a larger than allowed value (for a healthy job, which must stay as its
    events assemble it), and a key that is not the subject."""
    event = next(e for e in demo.events if e.subject == job)
    key, value, _ = encode_structured(event)
    envelope = json.loads(value)
    typed = [("content-type", b"application/cloudevents+json")]

    def changed(**fields: Any) -> bytes:
        return json.dumps({**envelope, **fields}).encode()

    huge = {"jobTitle": "x" * 1_000_100}  # past kafka.max_event_bytes, within the broker's
    return [
        (b"chaos-bad-json", b"{not json", typed, "invalid_event"),
        (key, None, [], "invalid_event"),
        (key, changed(id="chaos-type", type="com.workfloplus.job.teleported"), typed,
         "unknown_event_type"),
        (b"someone-else", changed(id="chaos-key"), typed, "key_mismatch"),
        (key, changed(id="chaos-huge", data=huge), typed, "oversized_event"),
    ]  # fmt: skip


def digest(value: bytes | None) -> str | None:
    return None if value is None else hashlib.sha256(value).hexdigest()
