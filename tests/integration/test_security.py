"""The consumer and its commands against a secured broker: SASL_SSL with SCRAM-SHA-512 and
mutual TLS, with the StandardAuthorizer granting exactly the ACLs of ``consumer.kafka.acls``,
and WorkfloPlus (the sandbox) over HTTPS signed by a test CA.

The secured broker is one per session (``tests/fixtures/secure_kafka.py``); test data is set
up through its super user (the plain listener). The consumer runs as ``basicsync run`` in a
child process, as in production, so its whole output can be searched for secrets.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from consumer.app import Running, endpoints_from, run_consumer
from consumer.config import (
    GatewaySettings,
    KafkaSettings,
    ObservabilitySettings,
    SecurityProtocol,
    Settings,
    SyncSettings,
)
from consumer.demo import DemoPlan, build_demo
from consumer.kafka.access import run_waiting_out_denials
from consumer.kafka.acls import Acl, Operation, Purpose, ResourceType, required_acls
from consumer.observability.stats import Stats
from consumer.testing.workfloplus import Sandbox, SandboxSettings
from tests.fixtures.certs import CertificateAuthority, Issued
from tests.fixtures.kafka import MakeTopic
from tests.fixtures.sandbox import https_sandbox as https_sandbox_of
from tests.fixtures.secret_volume import kubelet_swap
from tests.fixtures.secure_kafka import TLS_USER, SecureKafka
from tests.integration.harness import (
    Topics,
    committed,
    consumer_env,
    consumer_process,
    eventually,
    free_port,
    in_chunks,
    log_events,
    new_topics,
    produce,
    produce_raw,
    raw_parts,
    readiness,
    scraped,
    tail,
    topic_settings,
    wait_converged,
)

pytestmark = [pytest.mark.integration, pytest.mark.security]

CLIENT_ID = "secure-test-client"
CLIENT_SECRET = "gw-s3cret-Yq7-never-print-me"


@asynccontextmanager
async def https_sandbox(secure: SecureKafka) -> AsyncIterator[Sandbox]:
    """The sandbox over HTTPS with a server certificate of the session's CA."""
    settings = SandboxSettings(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    async with https_sandbox_of(secure.ca, secure.directory, settings) as sandbox:
        yield sandbox


def secured(
    kafka: KafkaSettings, sandbox: Sandbox, topics: Topics, ca_file: Path | None
) -> Settings:
    """Settings of a consumer on ``topics`` with ``kafka`` security, posting to ``sandbox``."""
    return Settings(
        kafka=kafka,
        topics=topic_settings(topics),
        gateway=GatewaySettings(
            base_url=sandbox.base_url,
            token_url=sandbox.token_url,
            client_id=CLIENT_ID,
            client_secret=SecretStr(CLIENT_SECRET),
            ssl_cafile=ca_file,
        ),
        sync=SyncSettings(debounce_ms=50, max_delay_ms=500, retry_initial_ms=50),
    )


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err


async def basicsync(env: dict[str, str], *args: str) -> Ran:
    """``python -m consumer ARGS`` with ``env``, awaited without blocking the loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def raw_bytes(bootstrap: str, topic: str) -> bytes:
    """Keys and values of every record on ``topic`` (super user), joined."""
    return b"\n".join(await raw_parts(bootstrap, topic))


def leaks(text: str | bytes, secrets: list[str]) -> list[str]:
    """Which ``secrets`` occur in ``text``, shortened so the failure message is no leak."""
    data = text.encode() if isinstance(text, str) else text
    return [f"{s[:6]}..." for s in secrets if s and s.encode() in data]


class TestPipelineOverSecuredKafka:
    @pytest.mark.parametrize("security", ["scram", "mtls", "scram-pattern"])
    async def test_pipeline_and_commands_work_with_exactly_the_declared_acls(
        self,
        security: str,
        secure_kafka: SecureKafka,
        secure_topic: MakeTopic,
        tmp_path: Path,
    ) -> None:
        """Over SASL_SSL+SCRAM (password from a file) and over mutual TLS, with exactly the
        ACLs of ``required_acls`` and the gateway over HTTPS trusted through
        BASICSYNC_GATEWAY__SSL_CAFILE: ``run`` converges every job and reports an invalid event,
        ``check`` passes, ``inspect`` shows a job and ``redrive --apply`` re-sends the invalid
        event. No output, metric or record holds the SCRAM password, the client secret, a
        token or the client key. ``scram-pattern`` names the inputs by a pattern: its Read
        is one PREFIXED ACL, which is enough to list the matching topics and read them."""
        if security.startswith("scram"):
            topics = await new_topics(secure_topic, partitions=2)
            kafka = secure_kafka.scram(group_id=topics.group, session_timeout_ms=10_000)
            principal = "User:basicsync"
        else:  # the consumer creates its internal topics: the Create ACLs are used
            inputs = [await secure_topic("in", partitions=2)]
            suffix = inputs[0].removeprefix("in-")
            topics = Topics(inputs, f"state-{suffix}", f"ok-{suffix}", f"failed-{suffix}",
                            f"group-{suffix}", 2)  # fmt: skip
            kafka = secure_kafka.mtls(group_id=topics.group, session_timeout_ms=10_000)
            principal = f"User:{TLS_USER}"
        kafka = kafka.model_copy(update={"create_topics": security == "mtls"})
        demo = build_demo(DemoPlan(jobs=8, seed=14))
        tokens: set[str] = set()
        async with https_sandbox(secure_kafka) as sandbox:
            settings = secured(kafka, sandbox, topics, secure_kafka.ca_file)
            if security == "scram-pattern":
                pattern = re.escape(topics.inputs[0]) + "(-.+)?"
                settings = settings.model_copy(
                    update={"topics": settings.topics.model_copy(update={"input_pattern": pattern})}
                )
                reads = {
                    (acl.name, acl.pattern.name)
                    for acl in required_acls(settings)
                    if acl.operation.name == "READ" and acl.resource.name == "TOPIC"
                }
                assert (topics.inputs[0], "PREFIXED") in reads, reads
            await secure_kafka.grant(principal, required_acls(settings))
            env = consumer_env(settings) | {
                "BASICSYNC_OBSERVABILITY__LOG_LEVEL": "debug",
                "BASICSYNC_OBSERVABILITY__HTTP_PORT": "0",
            }
            secrets = [CLIENT_SECRET]
            if security == "scram":
                password = env.pop("BASICSYNC_KAFKA__SASL_PASSWORD")
                secrets.append(password)
                password_file = tmp_path / "sasl-password"
                password_file.write_text(password + "\n")
                env["BASICSYNC_KAFKA__SASL_PASSWORD_FILE"] = str(password_file)
            key_pem = secure_kafka.tls_key.read_text()
            key_body = "".join(key_pem.splitlines()[1:-1])[:40]
            secrets.append(key_body)

            await produce(secure_kafka.plain, topics.inputs, demo.events)
            bad = b'{"specversion": "1.0", "broken'
            await produce_raw(secure_kafka.plain, topics.inputs[0], [(b"job-bad", bad, [])])
            log_path = tmp_path / "consumer.log"
            with log_path.open("wb") as log:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "consumer", "run", env=env, stdout=log, stderr=log
                )
            try:
                while len(sandbox.state.jobs) < len(demo.expected):
                    tokens.update(sandbox.state.tokens)
                    assert process.returncode is None, log_path.read_text()[-3000:]
                    await asyncio.sleep(0.1)
                await wait_converged(sandbox, demo.expected, within=60)
                tokens.update(sandbox.state.tokens)
                metrics = await _metrics(log_path)
            finally:
                process.send_signal(signal.SIGTERM)
                code = await asyncio.wait_for(process.wait(), 60)
            output = log_path.read_text()
            assert code == 0, output[-3000:]
            assert tokens, "no token was issued over HTTPS"

            check = await basicsync(env, "check")
            assert check.code == 0, check.output
            assert check.out.count("ok  ") >= 5, check.out
            job = next(iter(demo.expected))
            inspect = await basicsync(env, "inspect", job)
            assert inspect.code == 0, inspect.output
            assert json.loads(inspect.out)["clientJobId"] == job
            redrive = await basicsync(env, "redrive", "--reason", "invalid_event", "--apply")
            assert redrive.code == 0, redrive.output
            assert "re-send invalid_event" in redrive.out, redrive.out

        failed = await raw_bytes(secure_kafka.plain, topics.failed)
        assert failed.count(b'"reason":"invalid_event"') == 1, failed[:500]
        records = failed + await raw_bytes(secure_kafka.plain, topics.succeeded)
        records += await raw_bytes(secure_kafka.plain, topics.state)
        everything = "\n".join([output, metrics, check.output, inspect.output, redrive.output])
        config = await basicsync(env, "config")
        everything += config.output
        assert leaks(everything, [*secrets, *tokens]) == []
        assert leaks(records, [*secrets, *tokens]) == []
        assert "Traceback" not in everything


async def _metrics(log_path: Path) -> str:
    """/metrics of the consumer whose JSON log (at ``log_path``) names its HTTP port."""
    listening = await asyncio.to_thread(log_events, log_path, "http_listening")
    assert listening, "the consumer logged no http_listening"
    port = listening[-1]["port"]
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        return await response.text()


def _dropped(acls: tuple[Acl, ...], settings: Settings, which: str) -> Acl:
    """The one ACL a missing-ACL case leaves out."""
    topic, group = ResourceType.TOPIC, ResourceType.GROUP
    wanted = {
        "read input": (topic, settings.topics.input[0], Operation.READ),
        "read changelog": (topic, settings.state_topic, Operation.READ),
        "write changelog": (topic, settings.state_topic, Operation.WRITE),
        "write succeeded": (topic, settings.topics.succeeded, Operation.WRITE),
        "write failed": (topic, settings.topics.failed, Operation.WRITE),
        "read group": (group, settings.kafka.group_id, Operation.READ),
        "write transactional id": (ResourceType.TRANSACTIONAL_ID, None, Operation.WRITE),
    }[which]
    return next(
        acl
        for acl in acls
        if (acl.resource, acl.operation) == (wanted[0], wanted[2])
        and wanted[1] in (None, acl.name)
        and acl.purpose is Purpose.run
    )


MISSING = [
    "read input",
    "read changelog",
    "write changelog",
    "write succeeded",
    "write failed",
    "read group",
    "write transactional id",
]


async def _readiness(running: Running) -> tuple[int, dict[str, Any]] | None:
    """/readyz of the in-process consumer, or None while its HTTP server is between runs."""
    if running.http_port is None:
        return None
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{running.http_port}/readyz") as response,
        ):
            return response.status, await response.json()
    except aiohttp.ClientConnectionError:
        return None


class TestMissingAcl:
    @pytest.mark.parametrize("missing", MISSING)
    async def test_each_missing_acl_is_named_waited_out_and_commits_nothing(
        self,
        missing: str,
        secure_kafka: SecureKafka,
        secure_topic: MakeTopic,
        sandbox_in_process: Sandbox,
    ) -> None:
        """With every declared ACL but one, the consumer reports a one-line denial naming the
        resource and the operation, stays up and tries again (no crash loop), answers /readyz
        503 with the failing ``kafka`` check, and commits no input offset."""
        user = (
            f"denied-{[m if isinstance(m, str) else m.values[0] for m in MISSING].index(missing)}"
        )
        topics = await new_topics(secure_topic, partitions=2)
        kafka = secure_kafka.scram(user, group_id=topics.group, session_timeout_ms=10_000)
        settings = secured(kafka, sandbox_in_process, topics, None).model_copy(
            update={"observability": ObservabilitySettings(http_port=0)}
        )
        settings = settings.model_copy(
            update={"gateway": settings.gateway.model_copy(
                update={"client_id": sandbox_in_process.settings.client_id,
                        "client_secret": SecretStr(sandbox_in_process.settings.client_secret)})}
        )  # fmt: skip
        acls = required_acls(settings, tools=False)
        dropped = _dropped(acls, settings, missing)
        await secure_kafka.grant(f"User:{user}", [acl for acl in acls if acl != dropped])
        await produce(
            secure_kafka.plain, topics.inputs, build_demo(DemoPlan(jobs=4, seed=3)).events
        )
        if missing == "read changelog":  # an empty changelog needs no Read to be restored
            records: list[tuple[bytes | None, bytes | None, list[Any]]] = [(b"job-x", b"{}", [])]
            await produce_raw(secure_kafka.plain, topics.state, records)

        stop = asyncio.Event()
        running = Running(stats=Stats())
        attempts = 0

        async def attempt(running: Running) -> None:
            nonlocal attempts
            attempts += 1
            await run_consumer(settings, endpoints_from(settings), stop, running)

        task = asyncio.create_task(
            run_waiting_out_denials(
                attempt, settings, stop, running, retry_initial_s=0.3, retry_max_s=1
            )
        )
        try:
            # The grants reach the broker's authorizer through its metadata log, a moment after
            # ``grant`` returns: a first attempt may be denied something that was granted. Wait
            # for the denial that stays.
            retried = await eventually(
                lambda: attempts >= 2 and dropped.describe() in (running.kafka_access or ""),
                within=30,
            )
            assert not task.done(), task.result()
            assert retried, f"after {attempts} attempts the denial is {running.kafka_access!r}"
            message = running.kafka_access
            assert message is not None
            assert dropped.describe() in message, message
            assert "\n" not in message
            ready = None
            for _ in range(50):
                ready = await _readiness(running)
                if ready is not None:
                    break
                await asyncio.sleep(0.1)
            assert ready is not None, "no /readyz answer"
            assert ready[0] == 503
            assert "kafka" in ready[1]["failing"], ready
            # Nothing read is committed: a partition whose transaction needs no denied resource
            # may commit its starting position (0), never past it.
            past_start = {
                tp: offset
                for tp, offset in (await committed(secure_kafka.plain, topics.group)).items()
                if offset > 0
            }
            assert past_start == {}
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)


class TestRunAclsOnly:
    async def test_run_without_describe_configs_warns_the_changelog_unchecked_and_syncs(
        self,
        secure_kafka: SecureKafka,
        secure_topic: MakeTopic,
        sandbox_in_process: Sandbox,
        tmp_path: Path,
    ) -> None:
        """A principal with only the ACLs ``run`` needs (no ``DescribeConfigs`` on the
        changelog, which only ``check`` needs): ``basicsync run`` warns once that the
        changelog's retention went unchecked because the grant is missing, and syncs every
        job. ``check`` as the same principal names the denial (exit 4)."""
        user = "run-only"
        topics = await new_topics(secure_topic, partitions=2)
        kafka = secure_kafka.scram(user, group_id=topics.group, session_timeout_ms=10_000)
        settings = secured(kafka, sandbox_in_process, topics, None)
        settings = settings.model_copy(
            update={"gateway": settings.gateway.model_copy(
                update={"client_id": sandbox_in_process.settings.client_id,
                        "client_secret": SecretStr(sandbox_in_process.settings.client_secret)})}
        )  # fmt: skip
        await secure_kafka.grant(f"User:{user}", required_acls(settings, tools=False))
        demo = build_demo(DemoPlan(jobs=6, seed=31))
        await produce(secure_kafka.plain, topics.inputs, demo.events)
        log = str(tmp_path / "consumer.log")
        async with consumer_process(settings, log):
            await wait_converged(sandbox_in_process, demo.expected, within=60)
        unchecked = log_events(log, "changelog_retention_unchecked")
        assert len(unchecked) == 1, tail(log)
        assert unchecked[0]["reason"].startswith(
            f"DescribeConfigs on topic {topics.state} is not granted; grant it"
        ), unchecked
        check = await basicsync(consumer_env(settings), "check", "--skip-gateway")
        assert check.code == 4, check.output
        assert f"DescribeConfigs on topic {topics.state!r}" in check.out, check.out


def _refused_cases(secure: SecureKafka, tmp_path: Path) -> dict[str, tuple[KafkaSettings, str]]:
    """Settings the broker refuses, and a phrase the error must contain."""
    other = CertificateAuthority("someone else's CA")
    other_cert, other_key = other.client(TLS_USER).write(tmp_path, "other")
    expired_cert, expired_key = secure.ca.client(TLS_USER, expired=True).write(tmp_path, "old")
    other_ca = tmp_path / "other-ca.crt"
    other_ca.write_bytes(other.cert_pem)
    wrong = SecretStr("wrong-" + secure.passwords["basicsync"][::-1])
    return {
        "wrong password": (
            secure.scram().model_copy(update={"sasl_password": wrong}),
            "SASL SCRAM-SHA-512 authentication failed for user 'basicsync'",
        ),
        "untrusted client certificate": (
            secure.mtls().model_copy(update={"ssl_certfile": other_cert, "ssl_keyfile": other_key}),
            "rejected our client certificate",
        ),
        "expired client certificate": (
            secure.mtls().model_copy(
                update={"ssl_certfile": expired_cert, "ssl_keyfile": expired_key}
            ),
            "rejected our client certificate",
        ),
        "untrusted broker certificate": (
            secure.scram().model_copy(update={"ssl_cafile": other_ca}),
            "the broker's certificate is not trusted",
        ),
        "plaintext client on the TLS port": (
            KafkaSettings(
                bootstrap_servers=[secure.sasl_ssl], security_protocol=SecurityProtocol.PLAINTEXT
            ),
            "the listener probably expects TLS",
        ),
    }


class TestRefusedConnections:
    async def test_each_refusal_names_its_cause_without_traceback_or_secret(
        self, secure_kafka: SecureKafka, sandbox_in_process: Sandbox, tmp_path: Path
    ) -> None:
        """Wrong password, a client certificate from another CA or expired, a broker
        certificate we do not trust, a plaintext client on the TLS port: ``check`` fails the
        Kafka line (exit 3) and ``run`` stops (exit 2), both naming the cause on one line,
        with no traceback and no password in the output."""
        topics = Topics(["in-x"], "state-x", "ok-x", "failed-x", "group-x", 1)
        secrets = [*secure_kafka.passwords.values(), CLIENT_SECRET]
        for name, (kafka, cause) in _refused_cases(secure_kafka, tmp_path).items():
            settings = secured(kafka, sandbox_in_process, topics, None)
            env = consumer_env(settings)
            if kafka.sasl_password is not None:
                secrets.append(kafka.sasl_password.get_secret_value())
            check, run = await asyncio.gather(
                basicsync(env, "check", "--timeout", "5"), basicsync(env, "run")
            )
            kafka_line = next(line for line in check.out.splitlines() if " kafka: " in line)
            assert check.code == 3, (name, check.output)
            assert kafka_line.startswith("FAIL"), (name, kafka_line)
            assert cause in kafka_line, (name, kafka_line)
            assert run.code == 2, (name, run.output)
            assert cause in run.err, (name, run.output)
            for ran in (check, run):
                assert "Traceback" not in ran.output, (name, ran.output)
                assert leaks(ran.output, secrets) == [], name

    async def test_a_refused_certificate_never_adds_a_traceback(
        self, secure_kafka: SecureKafka, sandbox_in_process: Sandbox, tmp_path: Path
    ) -> None:
        """The broker's TLS alert reaches asyncio twice (the stream reader and the protocol's
        unread ``closed`` future), and asyncio logged the second copy with a traceback on about
        half of the ``check`` runs; eight runs in a row must all stay one line."""
        topics = Topics(["in-x"], "state-x", "ok-x", "failed-x", "group-x", 1)
        kafka, cause = _refused_cases(secure_kafka, tmp_path)["untrusted client certificate"]
        env = consumer_env(secured(kafka, sandbox_in_process, topics, None))
        for _ in range(8):
            check = await basicsync(env, "check", "--timeout", "5")
            assert check.code == 3, check.output
            assert cause in check.out, check.output
            assert "Traceback" not in check.output, check.output


class TestGatewayTls:
    async def test_an_https_gateway_is_trusted_only_with_its_ca_bundle(
        self, secure_kafka: SecureKafka, secure_topic: MakeTopic
    ) -> None:
        """Against the sandbox over HTTPS with a private CA, ``check`` gets a token when
        BASICSYNC_GATEWAY__SSL_CAFILE names the CA, and without it fails the token line
        saying the certificate could not be verified (exit 5)."""
        inputs = [await secure_topic("in")]
        topics = Topics(inputs, "state-x", "ok-x", "failed-x", "group-x", 1)
        async with https_sandbox(secure_kafka) as sandbox:
            kafka = KafkaSettings(bootstrap_servers=[secure_kafka.plain])
            trusted = consumer_env(secured(kafka, sandbox, topics, secure_kafka.ca_file))
            untrusted = consumer_env(secured(kafka, sandbox, topics, None))
            ok, refused = await asyncio.gather(
                basicsync(trusted, "check", "--timeout", "5"),
                basicsync(untrusted, "check", "--timeout", "5"),
            )
        assert "ok    token: issued by https://" in ok.out, ok.output
        assert refused.code == 5, refused.output
        token_line = next(line for line in refused.out.splitlines() if " token: " in line)
        assert token_line.startswith("FAIL"), token_line
        assert "CERTIFICATE_VERIFY_FAILED" in token_line, token_line
        assert leaks(refused.output, [CLIENT_SECRET]) == []


def user_volume(
    volume: Path, secure: SecureKafka, user: Issued, generation: str
) -> dict[str, Path]:
    """The KafkaUser's Secret volume, as Strimzi fills it: the CA, ``user``'s certificate
    and key (swapped in one step, as the kubelet does)."""
    files = {"ca.crt": secure.ca.cert_pem, "user.crt": user.cert_pem, "user.key": user.key_pem}
    return kubelet_swap(volume, files, generation)


def mtls_from_volume(
    secure: SecureKafka, topics: Topics, volume: Path, user: Issued, **settings: float
) -> KafkaSettings:
    """Mutual TLS with the files of a KafkaUser's volume holding ``user``, checked every
    second for a renewal (and ``settings``)."""
    volume.mkdir()
    paths = user_volume(volume, secure, user, "1")
    kafka = secure.mtls(group_id=topics.group, session_timeout_ms=10_000)
    return kafka.model_copy(
        update={
            "ssl_cafile": paths["ca.crt"],
            "ssl_certfile": paths["user.crt"],
            "ssl_keyfile": paths["user.key"],
            "ssl_files_check_s": 1.0,
            **settings,
        }
    )


class TestRenewedClientCertificate:
    async def test_a_certificate_renewed_under_a_running_member_is_used_after_a_broker_restart(
        self, secure_kafka: SecureKafka, secure_topic: MakeTopic, tmp_path: Path
    ) -> None:
        """``basicsync run`` over mutual TLS with a client certificate that expires 25 s after
        it was issued, mounted as a Kubernetes Secret volume. The volume is renewed (a new
        certificate and key for the same user, as Strimzi renews a KafkaUser's); the old
        certificate expires; the broker restarts, so every connection is a new handshake. The
        same process reconnects with the renewed certificate, syncs the jobs sent after the
        restart and reports nothing failed. With the files read at start only it would be
        refused ("certificate_expired") and sync nothing more."""
        topics = await new_topics(secure_topic, partitions=2)
        first = secure_kafka.ca.client(TLS_USER, valid_s=25)
        expires = asyncio.get_running_loop().time() + 25
        volume = tmp_path / "kafka-user"
        kafka = mtls_from_volume(secure_kafka, topics, volume, first)
        demo = build_demo(DemoPlan(jobs=16, seed=48, abort_share=0.0))
        before, after = in_chunks(demo.events, 2)
        log = str(tmp_path / "consumer.log")
        async with https_sandbox(secure_kafka) as sandbox:
            settings = secured(kafka, sandbox, topics, secure_kafka.ca_file)
            await secure_kafka.grant(f"User:{TLS_USER}", required_acls(settings))
            async with consumer_process(settings, log):
                await produce(secure_kafka.plain, topics.inputs, before)
                assert await eventually(lambda: len(sandbox.state.jobs) > 0, within=60), tail(log)
                renewed = secure_kafka.ca.client(TLS_USER)
                user_volume(volume, secure_kafka, renewed, "2")
                assert await eventually(lambda: reloaded(log) == 1, within=30), tail(log)
                await asyncio.sleep(max(0.0, expires + 1 - asyncio.get_running_loop().time()))
                await secure_kafka.restart()
                await produce(secure_kafka.plain, topics.inputs, after)
                await wait_converged(sandbox, demo.expected, within=120)
        assert await raw_bytes(secure_kafka.plain, topics.failed) == b""
        assert "certificate_expired" not in (tmp_path / "consumer.log").read_text()
        assert renewed.key_pem.decode() not in (tmp_path / "consumer.log").read_text()


class TestRotatedSaslPassword:
    async def test_a_password_rotated_under_a_running_member_is_used_after_a_broker_restart(
        self, secure_kafka: SecureKafka, secure_topic: MakeTopic, tmp_path: Path
    ) -> None:
        """``basicsync run`` over SASL_SSL as a SCRAM user of its own, its password read from a
        Kubernetes Secret volume. The password is rotated on the broker (which takes only the
        new one from then on) and, 2 s later, in the volume, as Strimzi and the kubelet do;
        then the broker restarts, so every connection is a new login. The same process logs
        in with the new password and syncs the jobs sent after the restart, with no failure
        record and neither password in its log. Before, it kept the password read at start
        and was refused until restarted."""
        user = f"rotating-{secrets.token_hex(4)}"
        first, second = f"scram-{secrets.token_hex(12)}", f"scram-{secrets.token_hex(12)}"
        await secure_kafka.set_scram_password(user, first)
        topics = await new_topics(secure_topic, partitions=2)
        kafka = secure_kafka.scram(group_id=topics.group, session_timeout_ms=10_000)
        kafka = kafka.model_copy(
            update={
                "sasl_username": user,
                "sasl_password": SecretStr(first),
                "ssl_files_check_s": 1.0,
            }
        )
        volume = tmp_path / "kafka-user"
        volume.mkdir()
        password_file = kubelet_swap(volume, {"password": first.encode()}, "1")["password"]
        demo = build_demo(DemoPlan(jobs=12, seed=57, abort_share=0.0))
        before, after = in_chunks(demo.events, 2)
        log = str(tmp_path / "consumer.log")
        async with https_sandbox(secure_kafka) as sandbox:
            settings = secured(kafka, sandbox, topics, secure_kafka.ca_file)
            await secure_kafka.grant(f"User:{user}", required_acls(settings))
            async with consumer_process(settings, log, sasl_password_file=password_file):
                await produce(secure_kafka.plain, topics.inputs, before)
                assert await eventually(lambda: len(sandbox.state.jobs) > 0, within=60), tail(log)
                await secure_kafka.set_scram_password(user, second)
                await asyncio.sleep(2)
                kubelet_swap(volume, {"password": second.encode()}, "2")
                reloaded = await eventually(
                    lambda: bool(log_events(log, "sasl_password_reloaded")), within=30
                )
                assert reloaded, tail(log)
                await secure_kafka.restart()
                await produce(secure_kafka.plain, topics.inputs, after)
                await wait_converged(sandbox, demo.expected, within=120)
        assert await raw_bytes(secure_kafka.plain, topics.failed) == b""
        text = (tmp_path / "consumer.log").read_text()
        assert first not in text
        assert second not in text


def reloaded(log: str) -> int:
    """How many times the run loaded its Kafka TLS files again."""
    return sum(1 for line in log_events(log, "tls_files_reloaded") if line["context"] == "kafka")


async def logged_and_ready(log: str, event: str, port: int, *, ready: bool) -> None:
    """The member logs ``event`` within a minute, and readiness's ``kafka`` check (and the
    ``basicsync_kafka_unreachable`` gauge) then say ``ready``."""
    assert await eventually(lambda: bool(log_events(log, event)), within=60), tail(log)
    body = await readiness(port)
    assert body is not None
    assert body["checks"]["kafka"]["ok"] is ready, body
    assert await scraped(port, "basicsync_kafka_unreachable") == (0 if ready else 1)


OVERDUE = 'basicsync_tls_client_certificate_renewal_overdue{context="kafka"}'
EXPIRY = 'basicsync_tls_client_certificate_expiry_timestamp_seconds{context="kafka"}'


class TestExpiredClientCertificate:
    async def test_an_expired_certificate_is_named_and_its_renewal_heals_the_same_process(
        self, secure_kafka: SecureKafka, secure_topic: MakeTopic, tmp_path: Path
    ) -> None:
        """Nobody renews the client certificate: it expires under the running member and the
        broker restarts. Within seconds the member logs ``kafka_unreachable`` naming our client
        certificate as the refused part, and readiness's ``kafka`` check fails with it (where
        before only aiokafka's "connection closed" lines said anything). The operator renews
        the Secret: the same process loads it, logs ``kafka_reachable_again`` and syncs every
        job, with no failure record. Before all that, from its start, the member said the
        certificate's renewal was overdue (one warning, and the gauge the alert reads), and the
        renewal clears the gauge."""
        topics = await new_topics(secure_topic, partitions=2)
        first = secure_kafka.ca.client(TLS_USER, valid_s=20)
        expires = asyncio.get_running_loop().time() + 20
        volume = tmp_path / "kafka-user"
        kafka = mtls_from_volume(secure_kafka, topics, volume, first, unreachable_report_s=5.0)
        demo = build_demo(DemoPlan(jobs=12, seed=53, abort_share=0.0))
        before, after = in_chunks(demo.events, 2)
        log = str(tmp_path / "consumer.log")
        port = free_port()
        async with https_sandbox(secure_kafka) as sandbox:
            settings = secured(kafka, sandbox, topics, secure_kafka.ca_file)
            await secure_kafka.grant(f"User:{TLS_USER}", required_acls(settings))
            extra = {"BASICSYNC_OBSERVABILITY__HTTP_PORT": str(port)}
            async with consumer_process(settings, log, extra):
                await produce(secure_kafka.plain, topics.inputs, before)
                assert await eventually(lambda: len(sandbox.state.jobs) > 0, within=60), tail(log)
                assert await scraped(port, OVERDUE) == 1
                expiry = await scraped(port, EXPIRY)
                assert abs(expiry - (time.time() + expires - asyncio.get_running_loop().time())) < 5
                await asyncio.sleep(max(0.0, expires + 1 - asyncio.get_running_loop().time()))
                await secure_kafka.restart()
                await produce(secure_kafka.plain, topics.inputs, after)
                await logged_and_ready(log, "kafka_unreachable", port, ready=False)
                renewed = secure_kafka.ca.client(TLS_USER)
                user_volume(volume, secure_kafka, renewed, "2")
                await wait_converged(sandbox, demo.expected, within=120)
                await logged_and_ready(log, "kafka_reachable_again", port, ready=True)
                assert await scraped(port, OVERDUE) == 0
                assert await scraped(port, EXPIRY) > expiry + 20 * 3600
        [overdue] = log_events(log, "tls_client_certificate_renewal_overdue")
        assert overdue["context"] == "kafka", overdue
        assert 0 < overdue["expires_in_s"] <= 20, overdue
        [unreachable] = log_events(log, "kafka_unreachable")
        # Java answers an expired certificate with the alert "certificate unknown": the cause
        # names the refused part and lists expiry among what to check.
        assert "rejected our client certificate" in unreachable["cause"], unreachable
        assert "not expired" in unreachable["cause"], unreachable
        assert await raw_bytes(secure_kafka.plain, topics.failed) == b""
