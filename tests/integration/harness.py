"""Helpers for the consumer's integration tests: real broker, sandbox over HTTP, no mocks."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.errors import GroupCoordinatorNotAvailableError
from aiokafka.structs import OffsetAndMetadata
from pydantic import BaseModel, SecretStr

from consumer.app import Running, endpoints_from, run_consumer
from consumer.config import GatewaySettings, KafkaSettings, Settings, SyncSettings, TopicSettings
from consumer.demo import send_events
from consumer.demo.jobs import DemoJobs
from consumer.domain.basicsync import encode_body
from consumer.domain.events import EventType, JobEvent
from consumer.domain.job import JobState, Rejection, apply
from consumer.kafka.limits import changelog_max_message_bytes
from consumer.observability.stats import Stats
from consumer.observability.tracing import TRACING_OFF, Tracing
from consumer.pipeline import Restorer
from consumer.testing.workfloplus import Sandbox

MakeTopic = Callable[..., Awaitable[str]]
DEFAULT_MAX_JOB_BYTES = KafkaSettings.model_fields["max_job_bytes"].default


@dataclass(frozen=True)
class Topics:
    inputs: list[str]
    state: str
    succeeded: str
    failed: str
    group: str
    partitions: int


async def new_topics(make_topic: MakeTopic, *, partitions: int = 3, inputs: int = 1) -> Topics:
    """Fresh, uniquely named topics for one test (deleted by the fixture afterwards)."""
    names = [await make_topic("in", partitions=partitions) for _ in range(inputs)]
    # As the consumer creates it: a job state of BASICSYNC_KAFKA__MAX_JOB_BYTES must fit.
    state = await make_topic(
        "state",
        partitions=partitions,
        cleanup_policy="compact",
        config={"max.message.bytes": str(changelog_max_message_bytes(DEFAULT_MAX_JOB_BYTES))},
    )
    succeeded = await make_topic("ok", partitions=partitions)
    failed = await make_topic("failed", partitions=partitions)
    return Topics(names, state, succeeded, failed, f"group-{state}", partitions)


def topic_settings(topics: Topics) -> TopicSettings:
    """The consumer's topic settings for one test's ``topics``."""
    return TopicSettings(
        input=topics.inputs, succeeded=topics.succeeded, failed=topics.failed, state=topics.state
    )


def settings_for(bootstrap: str, sandbox: Sandbox, topics: Topics, **sync: Any) -> Settings:
    """Settings of a consumer on ``topics`` posting to ``sandbox``; ``sync`` overrides."""
    sync_settings = {"debounce_ms": 50, "max_delay_ms": 500, "retry_initial_ms": 50, **sync}
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=[bootstrap],
            group_id=topics.group,
            # The least the consumer allows: a killed member's partitions pass on after it,
            # and fault tests wait it out on every kill.
            session_timeout_ms=6_000,
            create_topics=False,
        ),
        topics=topic_settings(topics),
        gateway=GatewaySettings(
            base_url=sandbox.base_url,
            token_url=sandbox.token_url,
            client_id=sandbox.settings.client_id,
            client_secret=SecretStr(sandbox.settings.client_secret),
        ),
        sync=SyncSettings(**sync_settings),
    )


@asynccontextmanager
async def consumer_running(
    settings: Settings,
    tracing: Tracing = TRACING_OFF,
    *,
    wrap_restore: Callable[[Restorer], Restorer] | None = None,
) -> AsyncIterator[tuple[Running, asyncio.Task[None]]]:
    """The consumer in this event loop; stopped (cleanly) when the block ends.
    ``wrap_restore`` injects faults into the changelog restore."""
    stop = asyncio.Event()
    running = Running(stats=Stats())
    task = asyncio.create_task(
        run_consumer(
            settings,
            endpoints_from(settings),
            stop,
            running,
            tracing=tracing,
            wrap_restore=wrap_restore,
        )
    )
    try:
        yield running, task
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def consumer_env(settings: Settings) -> dict[str, str]:
    """The environment that makes ``basicsync run`` use ``settings`` (for subprocess tests)."""
    kafka, topics, gateway = settings.kafka, settings.topics, settings.gateway
    assert kafka.bootstrap_servers
    assert gateway.client_secret
    env = {key: value for key, value in os.environ.items() if not key.startswith("BASICSYNC_")}
    env.update(_changed_scalars(settings))
    env.update(
        {
            "BASICSYNC_KAFKA__BOOTSTRAP_SERVERS": ",".join(kafka.bootstrap_servers),
            "BASICSYNC_TOPICS__INPUT": ",".join(topics.input),
            "BASICSYNC_TOPICS__STATE": settings.state_topic,
            "BASICSYNC_GATEWAY__CLIENT_SECRET": gateway.client_secret.get_secret_value(),
            "BASICSYNC_OBSERVABILITY__LOG_FORMAT": "json",
        }
    )
    if kafka.sasl_password is not None:
        env["BASICSYNC_KAFKA__SASL_PASSWORD"] = kafka.sasl_password.get_secret_value()
    return env


def with_request_timeout(settings: Settings, seconds: float) -> Settings:
    """``settings`` with a short gateway request timeout, and so a short in-doubt window (three
    timeouts): a run after a kill or a lost partition posts its jobs in doubt again soon."""
    gateway = settings.gateway.model_copy(update={"request_timeout_s": seconds})
    return settings.model_copy(update={"gateway": gateway})


def catching_up(settings: Settings, *, catch_up_interval_ms: int, **kafka: Any) -> Settings:
    """``settings`` reading a backlog in small fetches (40 records), so that catching up lasts
    a while, with a checkpoint every ``catch_up_interval_ms`` meanwhile; ``kafka`` overrides."""
    update = {
        "max_poll_records": 40,
        "catch_up_checkpoint_interval_ms": catch_up_interval_ms,
        **kafka,
    }
    return settings.model_copy(update={"kafka": settings.kafka.model_copy(update=update)})


def _changed_scalars(settings: Settings) -> dict[str, str]:
    """``BASICSYNC_<SECTION>__<FIELD>`` for every number, flag, text, path or choice a test set
    away from its default: a setting a test gives the in-process consumer reaches the process
    too. (Lists and secrets are not scalars: ``consumer_env`` writes those.)"""
    env: dict[str, str] = {}
    for section_name in type(settings).model_fields:
        section = getattr(settings, section_name)
        if not isinstance(section, BaseModel):
            continue
        for name, field in type(section).model_fields.items():
            value = getattr(section, name)
            if not isinstance(value, int | float | str | Path) or value == field.get_default(
                call_default_factory=True
            ):
                continue
            text = str(value).lower() if isinstance(value, bool) else str(value)
            env[f"BASICSYNC_{section_name.upper()}__{name.upper()}"] = text
    return env


#: every consumer process a test started, for :func:`kill_leftover_consumers`
_started: list[subprocess.Popen[bytes]] = []
#: the logs of those processes, for :func:`asyncio_errors_logged`
_logs: list[str] = []


def start_consumer_process(
    settings: Settings,
    log_path: str,
    extra_env: dict[str, str] | None = None,
    *,
    secret_file: Path | None = None,
    sasl_password_file: Path | None = None,
) -> subprocess.Popen[bytes]:
    """``python -m consumer run`` as a child process, logging to ``log_path``; with
    ``secret_file``, the client secret is read from it (``..._CLIENT_SECRET_FILE``), with
    ``sasl_password_file`` the SASL password (``..._SASL_PASSWORD_FILE``)."""
    env = consumer_env(settings)
    for path, name in (
        (secret_file, "BASICSYNC_GATEWAY__CLIENT_SECRET"),
        (sasl_password_file, "BASICSYNC_KAFKA__SASL_PASSWORD"),
    ):
        if path is not None:
            del env[name]
            env[name + "_FILE"] = str(path)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run"],
            env={**env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    _started.append(process)
    _logs.append(log_path)
    return process


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


async def basicsync(settings: Settings, *args: str, **env: str) -> Ran:
    """Run ``python -m consumer ARGS`` with the settings' environment (plus ``env``)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        *args,
        env={**consumer_env(settings), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


def kill_leftover_consumers() -> None:
    """SIGKILL the consumer processes a test left running (it failed before stopping them):
    otherwise they outlive it, competing for the CPU and the group with the next tests."""
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


def asyncio_errors_logged() -> list[str]:
    """The errors asyncio itself logged in the consumer processes a test started (a future
    whose exception nobody read, a task destroyed while pending, an unclosed transport): each
    is a bug of ours or of a library we drive, whatever the test asserts; then forget them."""
    found: list[str] = []
    for path in dict.fromkeys(_logs):
        with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as log:
            for line in log:
                if '"asyncio"' not in line:
                    continue
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("logger") == "asyncio" and entry.get("level") != "debug":
                        found.append(f"{path}: {entry['event'].splitlines()[0]}")
    _logs.clear()
    return found


@asynccontextmanager
async def consumer_process(
    settings: Settings,
    log_path: str,
    extra_env: dict[str, str] | None = None,
    *,
    sasl_password_file: Path | None = None,
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``basicsync run`` as a child process for the block: it must still run at the end, and
    then answer SIGTERM with a clean exit (0)."""
    process = start_consumer_process(
        settings, log_path, extra_env, sasl_password_file=sasl_password_file
    )
    try:
        yield process
        assert process.poll() is None, "the consumer exited:\n" + tail(log_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 60) == 0, tail(log_path)


def free_port() -> int:
    """A local TCP port nothing listens on now (connections to it are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def produce(
    bootstrap: str, topics: Sequence[str], events: Sequence[JobEvent], **options: Any
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        await send_events(producer, topics, events, **options)
    finally:
        await producer.stop()


async def produce_raw(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None, list[Any]]],
    *,
    max_request_size: int = 4 * 1024 * 1024,
) -> None:
    """Send ``(key, value, headers)`` records as they are (for invalid input)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=max_request_size)
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


async def read_records(bootstrap: str, topic: str, *, settle_s: float = 1.0) -> list[Any]:
    """Every committed record on ``topic`` now, JSON-decoded; waits ``settle_s`` of quiet at
    the end. ``read_committed``, as every reader of the result topics must: they are written
    in transactions, and an aborted one leaves records only uncommitted readers see."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        isolation_level="read_committed",
    )
    await consumer.start()
    records: list[Any] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=int(settle_s * 1000))
            if not batch:
                return records
            for messages in batch.values():
                records.extend(json.loads(m.value) for m in messages if m.value is not None)
    finally:
        await consumer.stop()


async def raw_parts(bootstrap: str, topic: str) -> list[bytes]:
    """The key and the value of every record on ``topic`` now, as bytes (empty ones left out):
    for looking for what must never be written, such as a secret."""
    records = await raw_records(bootstrap, topic)
    return [part for key, value in records for part in (key, value) if part]


async def raw_values(bootstrap: str, topic: str) -> list[bytes]:
    """The value of every record on ``topic`` now (tombstones left out), as bytes."""
    return [value for _, value in await raw_records(bootstrap, topic) if value]


async def raw_records(
    bootstrap: str, topic: str, *, committed: bool = False
) -> list[tuple[bytes, bytes]]:
    """The key and value of every record on ``topic`` now; with ``committed``, only those of
    committed transactions (as the result topics' readers see them)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        isolation_level="read_committed" if committed else "read_uncommitted",
    )
    await consumer.start()
    found: list[tuple[bytes, bytes]] = []
    try:
        while batch := await consumer.getmany(timeout_ms=1000):
            for messages in batch.values():
                found += [(m.key or b"", m.value or b"") for m in messages]
    finally:
        await consumer.stop()
    return found


def stored(sandbox: Sandbox, client_job_id: str) -> dict[str, Any] | None:
    """The document WorkfloPlus (the sandbox) holds for a job: its last accepted body."""
    return sandbox.state.document(client_job_id)


def converged(sandbox: Sandbox, expected: dict[str, dict[str, Any]]) -> int:
    """How many jobs WorkfloPlus (the sandbox) holds exactly as expected."""
    return sum(1 for job, body in expected.items() if stored(sandbox, job) == body)


async def wait_converged(
    sandbox: Sandbox,
    expected: dict[str, dict[str, Any]],
    *,
    within: float,
    consumer: asyncio.Task[None] | None = None,
) -> None:
    """Wait until every expected job is in the sandbox as expected, or fail with a diff."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if converged(sandbox, expected) == len(expected):
            return
        if consumer is not None and consumer.done():
            consumer.result()  # raises the consumer's error
            raise AssertionError("the consumer stopped before converging")
        await asyncio.sleep(0.2)
    wrong = [job for job, body in expected.items() if stored(sandbox, job) != body]
    sample = wrong[0]
    raise AssertionError(
        f"{len(wrong)} of {len(expected)} jobs not converged after {within}s; first: {sample}: "
        f"got {json.dumps(stored(sandbox, sample))}, "
        f"want {json.dumps(expected[sample])}"
    )


def step_ids(body: dict[str, Any]) -> set[str]:
    """The ``uniqueStepId`` of every completed and cancelled step of a basicSync body."""
    return {
        wrapper["singleStep"]["uniqueStepId"]
        for key in ("completedSteps", "cancelledSteps")
        for wrapper in body.get(key) or []
    }


def assert_history_never_shrinks(sandbox: Sandbox, jobs: Sequence[str]) -> None:
    """No accepted document of a job lacks a step an earlier accepted document had: an older
    state never overwrote a newer one (docs/contract.md §2, promises 2 and 3)."""
    for job in jobs:
        seen: set[str] = set()
        for accepted in sandbox.state.jobs[job].history:
            steps = step_ids(json.loads(accepted))
            assert seen <= steps, f"{job}: WorkfloPlus lost steps {seen - steps}"
            seen = steps


def max_overlap(sandbox: Sandbox) -> int:
    """The most basicSync requests the sandbox saw in flight at once for any single job."""
    return max(sandbox.state.in_flight.max_by_job.values(), default=0)


def in_chunks(events: Sequence[JobEvent], count: int) -> list[list[JobEvent]]:
    """``events`` in order, cut into ``count`` chunks of equal size (the last shorter): live
    traffic produced a chunk at a time."""
    size = len(events) // count + 1
    return [list(events[n : n + size]) for n in range(0, len(events), size)]


def with_late_aborts(demo: DemoJobs, count: int) -> tuple[list[JobEvent], list[str]]:
    """``demo``'s events with an abort of ``count`` Completed jobs right after each one's
    last event (rejected: the job is Completed), and those jobs, sorted."""
    completed = [
        j for j, body in demo.expected.items() if body["metadata"]["status"] == "Completed"
    ]
    late_aborts = [
        JobEvent.build(
            {
                "id": f"late-abort-{job}",
                "source": "urn:test",
                "type": EventType.aborted,
                "subject": job,
                "data": {"reason": "too late"},
            }
        )
        for job in completed[:count]
    ]
    last = {e.subject: n for n, e in enumerate(demo.events)}
    stream = list(demo.events)
    for abort in sorted(late_aborts, key=lambda a: -last[a.subject]):
        stream.insert(last[abort.subject] + 1, abort)
    return stream, sorted(a.subject for a in late_aborts)


#: the one CloudEvents ``time`` of :func:`same_time`'s events
ONE_INSTANT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
_PROCESSED_AT = datetime(2026, 11, 30, tzinfo=UTC)


def same_time(events: list[JobEvent]) -> list[JobEvent]:
    """The events, every one stamped with one time: a producer that stamps a batch at once,
    whose order only the partition can tell."""
    return [event.replaced(time=ONE_INSTANT) for event in events]


def assembled_in_partition_order(events: list[JobEvent]) -> dict[str, dict[str, Any]]:
    """Each job's document as the reducer builds it from its events in the order produced."""
    states: dict[str, JobState] = {}
    for event in events:
        result = apply(states.get(event.subject), event, _PROCESSED_AT)
        if not isinstance(result, Rejection):
            states[event.subject] = result
    return {job: json.loads(encode_body(state)) for job, state in states.items()}


async def assert_each_reported_once(bootstrap: str, failed: str, jobs: list[str]) -> None:
    """The failure topic holds one invalid_transition record per job of ``jobs``, each of
    a different event (waiting for the records the next checkpoint writes)."""

    async def reported() -> list[tuple[str, tuple[str, int, int]]]:
        failures = await read_records(bootstrap, failed, settle_s=0.5)
        assert {f["reason"] for f in failures} <= {"invalid_transition"}, failures
        return sorted(
            (f["clientJobId"], (s["topic"], s["partition"], s["offset"]))
            for f in failures
            for s in [f["source"]]
        )

    for _ in range(20):
        if len(await reported()) >= len(jobs):
            break
        await asyncio.sleep(0.5)
    failures = await reported()
    assert [job for job, _ in failures] == jobs
    assert len({place for _, place in failures}) == len(jobs)


SendChunk = Callable[[list[JobEvent]], Awaitable[None]]


async def send_live(send: SendChunk, chunks: Sequence[list[JobEvent]]) -> None:
    """Each chunk sent 0.4 s after the one before: live traffic, never a backlog."""
    for chunk in chunks:
        await send(chunk)
        await asyncio.sleep(0.4)


def posted_early_and_changed_late(chunks: Sequence[list[JobEvent]]) -> str:
    """A job with events in the first of ``chunks`` and in the last four: posted early, its
    later events arrive while that first request is out (hold it with ``hold_first_ms``)."""
    jobs_in = [{event.subject for event in chunk} for chunk in chunks]
    return min(jobs_in[0] & set().union(*jobs_in[-4:]))


async def sent_until_held(
    send: SendChunk, chunks: Sequence[list[JobEvent]], job: str, sandbox: Sandbox
) -> int:
    """Send ``chunks`` live until WorkfloPlus holds a request of ``job`` in flight; returns how
    many were sent (at most five: a member slow to post, on a loaded machine, is then waited
    for, so the chunks with the job's later events are still to come)."""
    sent = 0
    while job not in sandbox.state.in_flight.current and sent < 5:
        await send_live(send, chunks[sent : sent + 1])
        sent += 1
    held = await eventually(lambda: job in sandbox.state.in_flight.current, within=30)
    assert held, f"{job} was never posted"
    return sent


async def killed_under_live_traffic(
    settings: Settings,
    log: str,
    sandbox: Sandbox,
    chunks: Sequence[list[JobEvent]],
    send: SendChunk,
    *,
    kill_after_s: Sequence[float] = (0.2, 0.5, 0.8),
    extra_env: dict[str, str] | None = None,
) -> list[list[JobEvent]]:
    """Runs of ``basicsync run`` under live traffic, each SIGKILLed while a chunk it was just
    sent is being absorbed; returns the chunks not sent yet.

    Each run is sent chunks 0.4 s apart until WorkfloPlus accepted 20 more documents (sending
    stops early to keep chunks for the later runs; the run is then waited for), then one more
    chunk, and is killed ``kill_after_s[n]`` seconds later: the delays spread the
    kills over a checkpoint interval, so some land after a live checkpoint left the chunk's
    jobs to their intents and held their offsets back (``consumer.state.deferral``), before
    those intents were written. The log must show no catch-up, or the live path went untried.
    """
    rest = list(chunks)
    for run, delay in enumerate(kill_after_s):
        process = start_consumer_process(settings, log, extra_env)
        assert await eventually(  # each run logs it once it has its partitions
            lambda run=run: len(log_events(log, "partitions_assigned")) > run,  # type: ignore[misc]
            within=60,
        ), tail(log)
        before = len(sandbox.state.records)
        # Two chunks kept for each later run and two for this kill and after: a member slow
        # to post its first documents (a loaded machine) is waited for, not fed the rest.
        spare = len(rest) - 2 * (len(kill_after_s) - run)
        assert spare >= 1, "too few chunks to kill the consumer under live traffic"
        while spare > 0 and len(sandbox.state.records) <= before + 20:
            await send_live(send, [rest.pop(0)])
            spare -= 1
        assert await eventually(
            lambda before=before: len(sandbox.state.records) > before + 20,  # type: ignore[misc]
            within=60,
        ), tail(log)
        await send(rest.pop(0))
        await asyncio.sleep(delay)
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait)
    assert "catch_up_mode" not in tail(log, chars=10**8), "caught up: not the live path"
    return rest


async def eventually(predicate: Callable[[], bool], *, within: float) -> bool:
    """Poll ``predicate`` until it holds or ``within`` seconds pass; returns the last value."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def eventually_async(predicate: Callable[[], Awaitable[bool]], *, within: float) -> bool:
    """:func:`eventually` for a predicate that awaits (an HTTP probe, say)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.1)
    return await predicate()


async def sigterm_and_wait(
    process: subprocess.Popen[bytes], log: str, within: float
) -> tuple[int, float]:
    """SIGTERM ``process``: its exit code and the seconds it took (killed if it outlasts
    ``within``, failing the test)."""
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(process.wait, within)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"still running {within} s after SIGTERM:\n{tail(log)}") from None
    return code, time.monotonic() - signalled


def assert_stop_gave_up(log: str, code: int, took: float, deadline: float) -> dict[str, Any]:
    """The member stopped in time having given up its last checkpoint: exit code 3, a
    ``last_checkpoint_late`` warning at the first deadline and one ``last_checkpoint_abandoned``
    error at the second; that error."""
    assert code == 3, tail(log)
    # Twice the deadline, then the producers' close (2 s at least) and leaving the group (5 s
    # at most), with room for a loaded machine.
    assert took < 2 * deadline + 12, (took, tail(log))
    [late] = log_events(log, "last_checkpoint_late")
    assert late["level"] == "warning"
    [abandoned] = log_events(log, "last_checkpoint_abandoned")
    assert abandoned["level"] == "error"
    assert abandoned["jobs_uncommitted"] >= 1
    [stopped] = log_events(log, "consumer_stopped")
    assert stopped["last_checkpoint_committed"] is False
    return abandoned


def holds_partitions(log: str, count: int) -> bool:
    """Whether the member's last assignment (its log) holds ``count`` partition numbers."""
    assigned = log_events(log, "partitions_assigned")
    return bool(assigned) and len(set(assigned[-1]["partitions"])) == count


async def until_each_holds(count: int, *logs: str, within: float = 60) -> None:
    """Wait until every member's last assignment (its log) holds ``count`` partitions."""
    held = await eventually(
        lambda: all(holds_partitions(log, count) for log in logs), within=within
    )
    assert held, "".join(tail(log) for log in logs)


def log_events(path: str | os.PathLike[str], event: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``event`` in a consumer's log file, in order, parsed."""
    with open(path, encoding="utf-8", errors="replace") as log:
        lines = [line for line in log if line.startswith("{") and f'"{event}"' in line]
    parsed = [json.loads(line) for line in lines]
    return [line for line in parsed if line.get("event") == event]


def assert_kafka_client_lines_are_few(log: str) -> None:
    """aiokafka's lines through a broker restart: each kind at most once per 30 s, and none an
    error but aiokafka's report of a failure it does not retry (with its traceback). Before,
    a restart of a few seconds left about 1,500 error lines."""
    client = []
    with open(log, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith("{") and '"logger": "aiokafka' in line:
                client.append(json.loads(line))
    assert len(client) < 60, f"{len(client)} aiokafka lines:\n" + tail(log)
    errors = [line for line in client if line["level"] == "error" and "exception" not in line]
    assert errors == [], errors


async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until either side closes."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


class BootstrapRelay:
    """A TCP relay on ``port`` to the broker at ``upstream``, given to clients as their
    bootstrap server: they bootstrap through it and then connect to the broker's advertised
    address directly. Once ``hang_new`` is set, a new connection is accepted and never
    answered (a broker that stopped answering new clients while the connections made go
    on); ``held`` counts them. With ``hang_after``, every connection after the first that
    many hangs so."""

    def __init__(self, upstream: str, port: int, *, hang_after: int | None = None) -> None:
        self.address = f"127.0.0.1:{port}"
        self.hang_new = False
        self.held = 0
        self.relayed = 0
        self._hang_after = hang_after
        self._upstream = upstream.rsplit(":", 1)
        self._port = port
        self._server: asyncio.Server | None = None
        self._closed = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self._port)

    async def close(self) -> None:
        self._closed.set()
        if self._server is not None:
            self._server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._hang_after is not None and self.relayed >= self._hang_after:
            self.hang_new = True
        if self.hang_new:
            self.held += 1
            await self._closed.wait()
            writer.close()
            return
        self.relayed += 1
        host, port = self._upstream
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(forward(reader, upstream_writer), forward(upstream_reader, writer))


def tail(path: str, chars: int = 3000) -> str:
    """The end of a log file, for assertion messages."""
    with open(path, encoding="utf-8", errors="replace") as log:
        return log.read()[-chars:]


async def committed(bootstrap: str, group: str) -> dict[Any, Any]:
    """The group's committed offsets, read through the super user."""
    found = await committed_with_metadata(bootstrap, group)
    return {tp: meta.offset for tp, meta in found.items()}


async def committed_with_metadata(bootstrap: str, group: str) -> dict[Any, Any]:
    """The group's committed offsets with their metadata (``OffsetAndMetadata``)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for _ in range(50):  # the offsets topic may still be being created on a new broker
            try:
                offsets: dict[Any, Any] = await admin.list_consumer_group_offsets(group)
                break
            except GroupCoordinatorNotAvailableError:
                await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"no coordinator for group {group}")
    finally:
        await admin.close()
    return {tp: meta for tp, meta in offsets.items() if meta.offset >= 0}


async def delete_records(
    bootstrap: str, topic: str, partition: int, below: int | None = None
) -> int:
    """What a topic's retention, or ``kafka-delete-records.sh``, does to a partition: every
    record below offset ``below`` (its end when None) deleted. Returns the partition's new
    start offset. The broker refuses it on a topic whose policy is ``compact`` alone."""
    tp = TopicPartition(topic, partition)
    if below is None:
        reader = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await reader.start()
        try:
            below = int((await reader.end_offsets([tp]))[tp])
        finally:
            await reader.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        low = await admin.delete_records({tp: RecordsToDelete(before_offset=below)})
    finally:
        await admin.close()
    assert low[tp] == below, low
    return below


async def recreate(
    bootstrap: str,
    topic: str,
    partitions: int,
    config: dict[str, str],
    meanwhile: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Delete ``topic`` and create it again, empty, with the same name and ``config``; with
    ``meanwhile`` awaited while the topic does not exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
        if meanwhile is not None:
            await meanwhile()
        await create_topic_when_able(admin, topic, partitions, config)
    finally:
        await admin.close()


async def create_topic_when_able(
    admin: AIOKafkaAdminClient,
    topic: str,
    partitions: int,
    config: dict[str, str] | None = None,
) -> None:
    """Create ``topic`` and wait for its leaders, asking again while the broker cannot yet:
    a deletion of the same name still completing (``TOPIC_ALREADY_EXISTS``), or a broker
    fenced by its controller after a hang longer than its session, which places no partition
    (``INVALID_REPLICATION_FACTOR``). aiokafka returns these codes instead of raising them,
    so a create that is not checked can silently not happen."""
    for _ in range(300):
        response = await admin.create_topics(
            [NewTopic(topic, partitions, 1, topic_configs=config or {})]
        )
        [(_, code, *_)] = response.topic_errors
        if code == 0:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"{topic} could not be created: {response}")
    for _ in range(300):
        [described] = await admin.describe_topics([topic])
        leaders = [p for p in described["partitions"] if p["leader"] >= 0]
        if described["error_code"] == 0 and len(leaders) == partitions:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{topic} has no leaders")


async def commit_offsets(
    bootstrap: str, group: str, offsets: dict[TopicPartition, tuple[int, str]]
) -> None:
    """Commit ``offsets`` (offset and metadata) for ``group``, which has no member: what
    ``kafka-consumer-groups.sh --reset-offsets`` does, metadata included."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(
            {tp: OffsetAndMetadata(offset, meta) for tp, (offset, meta) in offsets.items()}
        )
    finally:
        await consumer.stop()


async def assert_read_to_the_end(bootstrap: str, group: str, events: int) -> None:
    """The group's committed offsets reach the end of an input that holds ``events`` records
    from offset 0, within the next few checkpoints: nothing holds them back for good."""
    for _ in range(40):
        if sum((await committed(bootstrap, group)).values()) >= events:
            break
        await asyncio.sleep(0.5)
    assert sum((await committed(bootstrap, group)).values()) == events, "offsets stayed behind"


def final_upserts(jobs: list[str], title: str) -> list[JobEvent]:
    """One more event per job, later than every demo event (and in the past)."""
    return [
        JobEvent.build(
            {
                "id": f"final-{title}-{n}",
                "source": "urn:test",
                "type": EventType.upserted,
                "subject": job,
                "time": datetime(2026, 6, 1, tzinfo=UTC),
                "data": {"jobTitle": title},
            }
        )
        for n, job in enumerate(jobs)
    ]


def with_title(expected: dict[str, dict[str, Any]], title: str) -> dict[str, dict[str, Any]]:
    changed = copy.deepcopy(expected)
    for body in changed.values():
        body["metadata"]["jobTitle"] = title
    return changed


async def _probed(port: int, path: str) -> str | None:
    """The body of the member's ``path`` on its HTTP port (None when not answered)."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}{path}") as response,
        ):
            return await response.text()
    except aiohttp.ClientError:
        return None


async def scraped(port: int, metric: str) -> float:
    """The value of an unlabelled metric on the member's /metrics (-1 when not answered)."""
    for line in (await _probed(port, "/metrics") or "").splitlines():
        if line.startswith(metric + " "):
            return float(line.split()[1])
    return -1.0


async def readiness(port: int) -> dict[str, Any] | None:
    """The member's /readyz body (None when not answered)."""
    text = await _probed(port, "/readyz")
    body: dict[str, Any] | None = None if text is None else json.loads(text)
    return body


@asynccontextmanager
async def broker_hung(broker: int) -> AsyncIterator[None]:
    """The broker SIGSTOPped for the block, SIGCONTed after it whatever happens in it."""
    os.kill(broker, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(broker, signal.SIGCONT)


def broker_pid(bootstrap: str) -> int:
    """The local test broker's JVM (see deploy/kafka-local/kafka.sh for where it keeps it)."""
    # Imported here: the fixture module is a pytest plugin, which must be imported by pytest
    # first (to rewrite its assertions), not by this module at collection.
    from tests.fixtures.kafka import local_broker_env

    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        pytest.skip("needs the local broker this test session started")
    env = local_broker_env()
    assert bootstrap.endswith(f":{env['KAFKA_PORT']}"), (bootstrap, env)
    return int(Path(env["KAFKA_STATE_DIR"], "kafka.pid").read_text().strip())
