"""WorkfloPlus over the network production has: ``basicsync run`` as a subprocess against the
sandbox over HTTPS, reached only through a CONNECT proxy that wants credentials (a corporate
egress), or with a private CA renewed under the running member."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from consumer.config import Settings
from consumer.demo import DemoPlan, build_demo
from consumer.testing.workfloplus import Sandbox, SandboxSettings
from tests.fixtures.certs import CertificateAuthority
from tests.fixtures.http_proxy import ConnectProxy
from tests.fixtures.kafka import MakeTopic
from tests.fixtures.sandbox import https_sandbox
from tests.fixtures.secret_volume import kubelet_swap
from tests.integration.harness import (
    basicsync,
    consumer_process,
    eventually,
    free_port,
    in_chunks,
    log_events,
    new_topics,
    produce,
    raw_parts,
    settings_for,
    start_consumer_process,
    tail,
    wait_converged,
    with_request_timeout,
)

pytestmark = pytest.mark.integration

PROXY_USER, PROXY_PASSWORD = "egress-svc", "pr0xy-Pw-never-log-9Qz"


@asynccontextmanager
async def sandbox_of_a_private_ca(tmp_path: Path) -> AsyncIterator[tuple[Sandbox, Path]]:
    """The sandbox over HTTPS with a certificate of a CA made for the test; yields the sandbox
    and the CA's file."""
    ca = CertificateAuthority("proxy test CA")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    async with https_sandbox(ca, tmp_path) as sandbox:
        yield sandbox, ca_file


class TestBehindAProxy:
    async def test_every_request_goes_through_the_proxy_and_survives_its_restart(
        self, kafka_bootstrap: str, make_topic: MakeTopic, tmp_path: Path
    ) -> None:
        """``HTTPS_PROXY`` names a CONNECT proxy with credentials. Every token request and
        basicSync call goes through its tunnels (the sandbox is not reached otherwise: the
        consumer has no other way to it that the proxy does not see). The proxy then stops,
        cutting its tunnels, while events keep coming, and starts again 3 s later: the jobs
        are held as in an outage and all converge, with no failure record. ``check`` says
        what it went through. The proxy's password is in no output."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=20, seed=50, abort_share=0.0))
        first, second = in_chunks(demo.events, 2)
        proxy = ConnectProxy(PROXY_USER, PROXY_PASSWORD)
        await proxy.start()
        log = str(tmp_path / "consumer.log")
        async with sandbox_of_a_private_ca(tmp_path) as (sandbox, ca_file):
            # A request the cut tunnel leaves in doubt waits three request timeouts.
            settings = with_request_timeout(settings_for(kafka_bootstrap, sandbox, topics), 2)
            settings = settings.model_copy(
                update={"gateway": settings.gateway.model_copy(update={"ssl_cafile": ca_file})}
            )
            # Both cases, and NO_PROXY emptied: whatever this machine's environment says.
            url = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}"
            env = {"HTTPS_PROXY": url, "https_proxy": url, "NO_PROXY": "", "no_proxy": ""}
            sandbox_host = sandbox.base_url.removeprefix("https://")
            process = start_consumer_process(settings, log, env)
            try:
                await produce(kafka_bootstrap, topics.inputs, first)
                assert await eventually(lambda: len(sandbox.state.jobs) > 0, within=60), tail(log)
                assert proxy.tunnels, "no request went through the proxy"
                assert set(proxy.tunnels) == {sandbox_host}
                await proxy.close()
                await produce(kafka_bootstrap, topics.inputs, second)
                await asyncio.sleep(3)
                assert process.poll() is None, tail(log)
                await proxy.start()
                await wait_converged(sandbox, demo.expected, within=90)
            finally:
                process.terminate()
                code = await asyncio.to_thread(process.wait, 60)
                await proxy.close()
            assert code == 0, tail(log)
            checked = await basicsync(settings, "check", **env)
        output = tail(log, chars=10_000_000)
        [route] = log_events(log, "gateway_proxy")
        assert route["gateway"] == route["token_endpoint"] == f"http://127.0.0.1:{proxy.port}"
        assert proxy.refused == 0
        assert await raw_parts(kafka_bootstrap, topics.failed) == []
        assert f"through http://127.0.0.1:{proxy.port}" in checked.out, checked.out
        assert PROXY_PASSWORD not in output + checked.out + checked.err

    async def test_a_proxy_refusing_the_credentials_holds_every_job_and_says_407(
        self, kafka_bootstrap: str, make_topic: MakeTopic, tmp_path: Path
    ) -> None:
        """The proxy's password is wrong (407 at every CONNECT): ``check`` fails the token
        line naming the 407 (exit 5); ``run`` fails no job and writes no failure record,
        holds them all as in an outage, and says why in a warning."""
        topics = await new_topics(make_topic, partitions=1)
        demo = build_demo(DemoPlan(jobs=5, seed=51, abort_share=0.0))
        proxy = ConnectProxy(PROXY_USER, PROXY_PASSWORD)
        await proxy.start()
        log = str(tmp_path / "consumer.log")
        wrong = f"http://{PROXY_USER}:not-the-password@127.0.0.1:{proxy.port}"
        env = {"HTTPS_PROXY": wrong, "https_proxy": wrong, "NO_PROXY": "", "no_proxy": ""}
        try:
            async with sandbox_of_a_private_ca(tmp_path) as (sandbox, ca_file):
                settings = settings_for(kafka_bootstrap, sandbox, topics)
                settings = settings.model_copy(
                    update={"gateway": settings.gateway.model_copy(update={"ssl_cafile": ca_file})}
                )
                checked = await basicsync(settings, "check", **env)
                async with consumer_process(settings, log, env):
                    await produce(kafka_bootstrap, topics.inputs, demo.events)
                    refused = await eventually(
                        lambda: bool(log_events(log, "circuit_opened")), within=60
                    )
                    assert refused, tail(log)
                    await asyncio.sleep(5)
                assert sandbox.state.jobs == {}
        finally:
            await proxy.close()
        assert checked.code == 5, checked.out
        assert "407" in checked.out, checked.out
        [warning] = log_events(log, "token_fetch_failed")[:1]
        assert "407" in warning["error"], warning
        assert proxy.refused > 0
        assert proxy.tunnels == []
        assert await raw_parts(kafka_bootstrap, topics.failed) == []
        assert "not-the-password" not in tail(log, chars=10_000_000) + checked.out


def trusting(settings: Settings, ca_file: Path, **kafka: object) -> Settings:
    """``settings`` with the gateway's CA bundle at ``ca_file`` (and ``kafka`` changes)."""
    gateway = settings.gateway.model_copy(update={"ssl_cafile": ca_file})
    return settings.model_copy(
        update={"gateway": gateway, "kafka": settings.kafka.model_copy(update=kafka)}
    )


class TestRenewedGatewayCa:
    async def test_a_gateway_moved_to_a_new_ca_is_trusted_once_the_bundle_is_renewed(
        self, kafka_bootstrap: str, make_topic: MakeTopic, tmp_path: Path
    ) -> None:
        """The member trusts the old CA from a Secret volume; half the jobs sync. The bundle
        is renewed to hold both CAs (as a CA rotation's overlap), and the gateway comes back
        on its address with a certificate of the new CA. The same process trusts it: every
        job touched after the move is in the new gateway whole, with no failure record.
        With the bundle read at start only, every handshake fails verification."""
        topics = await new_topics(make_topic, partitions=2)
        demo = build_demo(DemoPlan(jobs=16, seed=52, abort_share=0.0))
        before, after = in_chunks(demo.events, 2)
        old_ca, new_ca = CertificateAuthority("gateway CA 1"), CertificateAuthority("gateway CA 2")
        volume = tmp_path / "gateway-ca"
        volume.mkdir()
        bundle = kubelet_swap(volume, {"ca.crt": old_ca.cert_pem}, "1")["ca.crt"]
        port = free_port()
        log = str(tmp_path / "consumer.log")
        async with https_sandbox(old_ca, tmp_path, SandboxSettings(port=port)) as first:
            # The gateway stops under requests: those left in doubt wait three timeouts.
            plain = with_request_timeout(settings_for(kafka_bootstrap, first, topics), 2)
            settings = trusting(plain, bundle, ssl_files_check_s=1.0)
            process = start_consumer_process(settings, log)
            try:
                await produce(kafka_bootstrap, topics.inputs, before)
                assert await eventually(lambda: len(first.state.jobs) > 0, within=60), tail(log)
                kubelet_swap(volume, {"ca.crt": old_ca.cert_pem + new_ca.cert_pem}, "2")
                assert await eventually(lambda: reloaded(log, "gateway") == 1, within=30)
            except BaseException:
                process.kill()
                raise
        expected = {job: demo.expected[job] for job in {e.subject for e in after}}
        try:
            async with https_sandbox(new_ca, tmp_path, SandboxSettings(port=port)) as second:
                await produce(kafka_bootstrap, topics.inputs, after)
                await wait_converged(second, expected, within=90)
                assert process.poll() is None, tail(log)
        finally:
            process.terminate()
            code = await asyncio.to_thread(process.wait, 60)
        assert code == 0, tail(log)
        assert await raw_parts(kafka_bootstrap, topics.failed) == []
        assert "ClientConnectorCertificateError" not in tail(log, chars=10_000_000)


def reloaded(log: str, context: str) -> int:
    """How many times the run loaded the TLS files of ``context`` again."""
    return sum(1 for line in log_events(log, "tls_files_reloaded") if line["context"] == context)
