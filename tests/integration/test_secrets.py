"""Secrets never leave the process: ``basicsync run`` as a subprocess with a distinctive client
secret, its whole output and its result records searched for the secret and the bearer tokens."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pydantic import SecretStr

from consumer.demo import DemoPlan, build_demo
from consumer.testing.workfloplus import InjectedRejection, Sandbox, SandboxSettings, run_sandbox
from tests.fixtures.secret_volume import kubelet_volume
from tests.integration.harness import (
    MakeTopic,
    consumer_env,
    eventually,
    eventually_async,
    in_chunks,
    new_topics,
    produce,
    raw_parts,
    settings_for,
    tail,
    wait_converged,
)

pytestmark = pytest.mark.integration

CLIENT_ID = "secret-test-client"
SECRET = "s3cr3t-Zq8vX2-never-log-me-7Kp4"


@asynccontextmanager
async def sandbox_with(secret: str) -> AsyncIterator[Sandbox]:
    """An in-process sandbox that knows ``CLIENT_ID`` with ``secret``."""
    async with run_sandbox(SandboxSettings(client_id=CLIENT_ID, client_secret=secret)) as sandbox:
        yield sandbox


async def collect_tokens(sandbox: Sandbox, seen: set[str], stop: asyncio.Event) -> None:
    """Remember every token the sandbox knows (expired ones are dropped from its state)."""
    while not stop.is_set():
        seen.update(sandbox.state.tokens)
        await asyncio.sleep(0.02)


def spawn_consumer(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``python -m consumer run`` with ``env``, all its output (stdout and stderr) to a file."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "consumer", "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def stop_process(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then wait in a thread so the in-process sandbox keeps serving meanwhile."""
    process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.to_thread(process.wait, 60)
    except subprocess.TimeoutExpired:
        process.kill()
        await asyncio.to_thread(process.wait, 10)
        raise


async def stop_both(
    process: subprocess.Popen[bytes], collector: asyncio.Task[None], stop: asyncio.Event
) -> int:
    """Stop the consumer, then the token collector (it ran until the consumer's last
    request); the consumer's exit code."""
    code = await stop_process(process)
    stop.set()
    await collector
    return code


async def has_records(bootstrap: str, topic: str) -> bool:
    return bool(await raw_parts(bootstrap, topic))


def leaks(text: bytes, secrets: Iterable[str]) -> list[str]:
    """Which of ``secrets`` occur in ``text`` (shown shortened, so the failure is no leak)."""
    return [f"{s[:6]}..." for s in secrets if s and s.encode() in text]


class TestSecretsNeverLogged:
    async def test_a_run_that_syncs_jobs_logs_neither_the_secret_nor_a_token(
        self, kafka_bootstrap: str, make_topic: MakeTopic, tmp_path: Path
    ) -> None:
        """A debug-level run syncs demo jobs across a token revocation (401, a fresh token),
        one job refused by a gateway that echoes the request's bearer token in its 400; the
        run's whole output and its result records contain neither the client secret nor any
        bearer token the sandbox issued (the echoed one is redacted in the failure record)."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=20, seed=41))
        half = len(demo.events) // 2
        log_path = tmp_path / "consumer.log"
        tokens: set[str] = set()
        stop_collecting = asyncio.Event()
        echoed, *rest = sorted(demo.expected)
        async with sandbox_with(SECRET) as sandbox:
            # A gateway in debugging mode: its 400 for one job echoes the bearer token, and the
            # body goes into that job's failure record.
            echo = InjectedRejection(status=400, body={"error": "bad"}, echo_authorization=True)
            sandbox.faults.update({"reject_job_ids": {echoed: echo}})
            collector = asyncio.create_task(collect_tokens(sandbox, tokens, stop_collecting))
            settings = settings_for(kafka_bootstrap, sandbox, topics)
            env = consumer_env(settings) | {"BASICSYNC_OBSERVABILITY__LOG_LEVEL": "debug"}
            process = spawn_consumer(env, log_path)
            try:
                await produce(kafka_bootstrap, topics.inputs, demo.events[:half])
                synced_some = await eventually(lambda: len(sandbox.state.jobs) > 0, within=60)
                assert synced_some, tail(str(log_path))
                # Let the collector see the first token before it is revoked and forgotten.
                assert await eventually(lambda: len(tokens) >= 1, within=10)
                sandbox.revoke_tokens()
                await produce(kafka_bootstrap, topics.inputs, demo.events[half:])
                await wait_converged(sandbox, {j: demo.expected[j] for j in rest}, within=90)
                failed = await eventually_async(
                    lambda: has_records(kafka_bootstrap, topics.failed), within=30
                )
                assert failed, tail(str(log_path))
            finally:
                code = await stop_both(process, collector, stop_collecting)
        output = log_path.read_bytes()
        assert code == 0, tail(str(log_path))
        assert b"token_fetched" in output, "the run never logged a token fetch"
        assert b"token_invalidated" in output, "the revoked token was never refused"
        assert len(tokens) >= 2, "no fresh token after the revocation"
        assert leaks(output, [SECRET, *tokens]) == []
        for topic in (topics.succeeded, topics.failed, topics.state):
            records = b"\n".join(await raw_parts(kafka_bootstrap, topic))
            assert leaks(records, [SECRET, *tokens]) == [], topic
        assert await raw_parts(kafka_bootstrap, topics.succeeded)
        failures = b"\n".join(await raw_parts(kafka_bootstrap, topics.failed))
        assert b"Bearer [redacted]" in failures, failures[:2000]

    async def test_a_refused_secret_is_not_logged_either(
        self, kafka_bootstrap: str, make_topic: MakeTopic, tmp_path: Path
    ) -> None:
        """When the token endpoint refuses the configured secret (a typo in the Secret), the
        run reports the refusal without ever printing the secret it sent."""
        topics = await new_topics(make_topic, partitions=1)
        demo = build_demo(DemoPlan(jobs=3, seed=43))
        wrong = SECRET + "-wrong-Jh5"
        log_path = tmp_path / "consumer.log"
        async with sandbox_with(SECRET) as sandbox:
            settings = settings_for(kafka_bootstrap, sandbox, topics)
            gateway = settings.gateway.model_copy(update={"client_secret": SecretStr(wrong)})
            env = consumer_env(settings.model_copy(update={"gateway": gateway}))
            env["BASICSYNC_OBSERVABILITY__LOG_LEVEL"] = "debug"
            process = spawn_consumer(env, log_path)
            try:
                await produce(kafka_bootstrap, topics.inputs, demo.events)
                deadline = time.monotonic() + 60
                while b"token_fetch_failed" not in log_path.read_bytes():
                    assert time.monotonic() < deadline, tail(str(log_path))
                    assert process.poll() is None, tail(str(log_path))
                    await asyncio.sleep(0.2)
                await asyncio.sleep(1)  # a probe or two more
            finally:
                await stop_process(process)
        output = log_path.read_bytes()
        assert leaks(output, [wrong, SECRET]) == []
        for topic in (topics.succeeded, topics.failed):
            assert leaks(b"\n".join(await raw_parts(kafka_bootstrap, topic)), [wrong]) == []


class TestClientSecretRotated:
    async def test_a_rotated_secret_file_is_used_without_a_restart(
        self, kafka_bootstrap: str, make_topic: MakeTopic, tmp_path: Path
    ) -> None:
        """``basicsync run`` reads its client secret from a Secret volume that is rotated twice
        under it, with tokens living 2 s. First by the book: the identity provider takes both
        secrets, the kubelet swaps the file, the old secret is dropped, and no token request
        is refused. Then the hard way: the provider changes the secret and revokes every
        token, and the file follows 3 s later while events keep coming. The same process
        syncs every job, writes no failure record, and never prints any of the three
        secrets or a token."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=30, seed=47, abort_share=0.0))
        quarters = in_chunks(demo.events, 4)
        by_the_book, the_hard_way = SECRET + "-rotated-1", SECRET + "-rotated-2"
        volume = tmp_path / "secret-volume"
        volume.mkdir()
        secret_file = kubelet_volume(volume, SECRET, "1")
        log_path = tmp_path / "consumer.log"
        tokens: set[str] = set()
        stop_collecting = asyncio.Event()
        async with sandbox_with(SECRET) as sandbox:
            sandbox.faults.update({"token_lifetime_s": 2})
            collector = asyncio.create_task(collect_tokens(sandbox, tokens, stop_collecting))
            env = consumer_env(settings_for(kafka_bootstrap, sandbox, topics))
            del env["BASICSYNC_GATEWAY__CLIENT_SECRET"]
            env["BASICSYNC_GATEWAY__CLIENT_SECRET_FILE"] = str(secret_file)
            process = spawn_consumer(env, log_path)
            try:
                await produce(kafka_bootstrap, topics.inputs, quarters[0])
                assert await eventually(lambda: len(sandbox.state.jobs) > 0, within=60), tail(
                    str(log_path)
                )
                sandbox.faults.update({"client_secrets": [SECRET, by_the_book]})
                kubelet_volume(volume, by_the_book, "2")
                # Tokens are fetched when a request needs one: the new secret goes with the
                # first fetch once the old token is due for refresh (1 s before its 2 s end).
                await asyncio.sleep(1.5)
                await produce(kafka_bootstrap, topics.inputs, quarters[1])
                assert await eventually(lambda: reloads(log_path) == 1, within=30), tail(
                    str(log_path)
                )
                sandbox.faults.update({"client_secrets": [by_the_book]})
                await asyncio.sleep(1.5)
                await produce(kafka_bootstrap, topics.inputs, quarters[2])
                assert await eventually(lambda: fetches(log_path) >= 3, within=30)
                assert b"token_fetch_failed" not in log_path.read_bytes()
                sandbox.faults.update({"client_secrets": [the_hard_way]})
                sandbox.revoke_tokens()
                await produce(kafka_bootstrap, topics.inputs, quarters[3])
                await asyncio.sleep(3)
                assert process.poll() is None, tail(str(log_path))
                kubelet_volume(volume, the_hard_way, "3")
                await wait_converged(sandbox, demo.expected, within=90)
                assert process.poll() is None, tail(str(log_path))
            finally:
                code = await stop_both(process, collector, stop_collecting)
        output = log_path.read_bytes()
        assert code == 0, tail(str(log_path))
        assert reloads(log_path) == 2, tail(str(log_path))
        assert b"invalid_client" in output, "the late file was never refused"
        assert await raw_parts(kafka_bootstrap, topics.failed) == []
        secrets = [SECRET, by_the_book, the_hard_way, *tokens]
        assert leaks(output, secrets) == []
        for topic in (topics.succeeded, topics.state):
            assert leaks(b"\n".join(await raw_parts(kafka_bootstrap, topic)), secrets) == []


def fetches(log_path: Path) -> int:
    """How many tokens the run has fetched."""
    return log_path.read_bytes().count(b'"token_fetched"')


def reloads(log_path: Path) -> int:
    """How many times the run said it read a new client secret from its file."""
    return log_path.read_bytes().count(b'"client_secret_reloaded"')
