"""Contract tests of the sandbox's fault injection, set over HTTP and from Python."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from consumer.testing.workfloplus import (
    ExponentialLatency,
    FaultConfig,
    FixedLatency,
    InjectedRejection,
    Sandbox,
    SandboxControl,
    SandboxControlError,
)
from consumer.testing.workfloplus.examples import job_document
from tests.fixtures.sandbox import SandboxHandle


class Poster:
    """Posts job documents with a valid token and reports status, headers and body."""

    def __init__(self, url: str, session: aiohttp.ClientSession, token: str) -> None:
        self.url = url
        self.session = session
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def post(self, client_job_id: str = "job") -> tuple[int, dict[str, str], Any]:
        data = json.dumps(job_document(client_job_id)).encode()
        async with self.session.post(self.url, data=data, headers=self.headers) as response:
            return response.status, dict(response.headers), await response.json()

    async def timed(self, client_job_id: str = "job") -> float:
        started = time.perf_counter()
        status, _, _ = await self.post(client_job_id)
        assert status == 200
        return time.perf_counter() - started


@pytest.fixture
async def poster(sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession) -> Poster:
    return Poster(sandbox.basic_sync_url, sandbox_http, await sandbox.token(sandbox_http))


class TestLatency:
    async def test_fixed_latency_delays_every_request(
        self, sandbox: SandboxHandle, poster: Poster
    ) -> None:
        """A fixed latency of 100 ms makes each basicSync take at least that long."""
        await sandbox.control.set_faults(latency={"kind": "fixed", "ms": 100})
        assert await poster.timed() >= 0.1

    async def test_uniform_latency_stays_within_bounds(
        self, sandbox: SandboxHandle, poster: Poster
    ) -> None:
        """Uniform latency delays each request by at least its minimum."""
        await sandbox.control.set_faults(latency={"kind": "uniform", "min_ms": 50, "max_ms": 80})
        for _ in range(3):
            assert await poster.timed() >= 0.05

    async def test_exponential_latency_is_capped(
        self, sandbox: SandboxHandle, poster: Poster
    ) -> None:
        """Exponential latency delays requests, never beyond its cap."""
        faults = FaultConfig(latency=ExponentialLatency(mean_ms=1000, max_ms=60), seed=1)
        await sandbox.control.set_faults(faults)
        took = [await poster.timed() for _ in range(3)]
        assert all(seconds < 1.0 for seconds in took)
        assert max(took) > 0.001


class TestErrors:
    async def test_error_rate_one_answers_chosen_statuses(
        self, sandbox: SandboxHandle, poster: Poster
    ) -> None:
        """With error_rate 1 every basicSync gets one of the chosen statuses; nothing is stored."""
        await sandbox.control.set_faults(error_rate=1.0, error_statuses=[502, 504])
        statuses = {(await poster.post())[0] for _ in range(6)}
        assert statuses <= {502, 504}
        assert await sandbox.control.jobs() == {}

    async def test_error_rate_fraction_fails_some_requests(
        self, sandbox: SandboxHandle, poster: Poster
    ) -> None:
        """An error rate of 0.5 (seeded) fails some requests and lets others through."""
        await sandbox.control.set_faults(error_rate=0.5, error_statuses=[500], seed=7)
        statuses = [(await poster.post())[0] for _ in range(20)]
        assert set(statuses) == {200, 500}

    async def test_clear_faults_restores_normal_behaviour(
        self, sandbox: SandboxHandle, poster: Poster
    ) -> None:
        """``clear_faults`` removes every fault."""
        await sandbox.control.set_faults(error_rate=1.0)
        await sandbox.control.clear_faults()
        assert (await poster.post())[0] == 200
        assert await sandbox.control.faults() == FaultConfig()

    async def test_patch_changes_only_the_given_fields(self, sandbox: SandboxHandle) -> None:
        """``set_faults(**fields)`` merges into the current faults."""
        await sandbox.control.set_faults(error_rate=0.1)
        merged = await sandbox.control.set_faults(retry_after_s=9)
        assert (merged.error_rate, merged.retry_after_s) == (0.1, 9)

    async def test_invalid_faults_are_refused(self, sandbox: SandboxHandle) -> None:
        """An invalid fault setting is a 400 from the sandbox (SandboxControlError)."""
        async with aiohttp.ClientSession() as session:
            url = f"{sandbox.base_url}/_sandbox/faults"
            async with session.patch(url, json={"error_rate": 2}) as response:
                assert response.status == 400
        with pytest.raises(SandboxControlError):
            await sandbox.control.outage(-1)


class TestRateLimit:
    async def test_next_n_requests_get_429_with_retry_after(
        self, sandbox: SandboxHandle, poster: Poster
    ) -> None:
        """``rate_limit_next`` answers the next N requests 429 with Retry-After, then recovers."""
        await sandbox.control.set_faults(rate_limit_next=2, retry_after_s=3)
        first, second, third = [await poster.post() for _ in range(3)]
        assert (first[0], first[1]["Retry-After"]) == (429, "3")
        assert second[0] == 429
        assert third[0] == 200

    async def test_rate_limit_fraction(self, sandbox: SandboxHandle, poster: Poster) -> None:
        """``rate_limit_rate`` 1.0 answers every request 429."""
        await sandbox.control.set_faults(rate_limit_rate=1.0)
        assert {(await poster.post())[0] for _ in range(3)} == {429}

    async def test_rate_limit_for_chosen_jobs_only(
        self, sandbox: SandboxHandle, poster: Poster
    ) -> None:
        """``rate_limit_job_ids`` limits only those clientJobIds."""
        await sandbox.control.set_faults(rate_limit_job_ids=["slow-job"])
        assert (await poster.post("slow-job"))[0] == 429
        assert (await poster.post("other-job"))[0] == 200


class TestRejections:
    async def test_chosen_job_is_rejected_with_status_and_body(
        self, sandbox: SandboxHandle, poster: Poster
    ) -> None:
        """``reject_job_ids`` answers that job with the chosen 4xx and body; others pass."""
        body = {"title": "workflow not found"}
        await sandbox.control.set_faults(
            reject_job_ids={"bad-job": InjectedRejection(status=422, body=body)}
        )
        status, _, answer = await poster.post("bad-job")
        assert (status, answer) == (422, body)
        assert (await poster.post("good-job"))[0] == 200

    async def test_chosen_job_gets_a_server_error_every_time(
        self, sandbox: SandboxHandle, poster: Poster
    ) -> None:
        """``error_job_ids`` answers that job with its 5xx on every request; others pass;
        a status outside 5xx is refused."""
        await sandbox.control.set_faults(error_job_ids={"broken-job": 500})
        for _ in range(3):
            status, _, answer = await poster.post("broken-job")
            assert (status, answer["error"]) == (500, "injected_error")
        assert (await poster.post("good-job"))[0] == 200
        async with aiohttp.ClientSession() as session:
            url = f"{sandbox.base_url}/_sandbox/faults"
            async with session.patch(url, json={"error_job_ids": {"x": 404}}) as response:
                assert response.status == 400

    async def test_every_jobs_first_requests_fail_then_it_is_served(
        self, sandbox: SandboxHandle, poster: Poster
    ) -> None:
        """``fail_first_per_job`` answers each job's first N requests with the
        ``error_statuses`` in turn, and serves it from then on."""
        await sandbox.control.set_faults(fail_first_per_job=2, error_statuses=[502, 503])
        for job in ("job-a", "job-b"):
            statuses = [(await poster.post(job))[0] for _ in range(3)]
            assert statuses == [502, 503, 200], job
        assert sorted(await sandbox.control.jobs()) == ["job-a", "job-b"]

    async def test_chosen_job_gets_a_block_page_and_is_not_stored(
        self, sandbox: SandboxHandle, poster: Poster, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """``web_page_job_ids`` answers that job 200 with an HTML page, as a firewall in front
        of the gateway does, and stores nothing; others pass. ``web_page_rate`` 1 does it to
        every job."""
        await sandbox.control.set_faults(web_page_job_ids=["blocked-job"])
        data = json.dumps(job_document("blocked-job")).encode()
        async with sandbox_http.post(poster.url, data=data, headers=poster.headers) as response:
            assert (response.status, response.content_type) == (200, "text/html")
            assert "The requested URL was rejected" in await response.text()
        assert (await poster.post("good-job"))[0] == 200
        assert sorted(await sandbox.control.jobs()) == ["good-job"]
        await sandbox.control.set_faults(web_page_rate=1.0)
        async with sandbox_http.post(poster.url, data=data, headers=poster.headers) as response:
            assert response.content_type == "text/html"
        assert sorted(await sandbox.control.jobs()) == ["good-job"]


class TestOutage:
    async def test_503_outage_for_n_seconds(self, sandbox: SandboxHandle, poster: Poster) -> None:
        """A 503 outage answers every API call 503 with Retry-After, and ends by itself."""
        await sandbox.control.outage(0.5, "503")
        status, headers, _ = await poster.post()
        assert status == 503
        assert headers["Retry-After"] == "1"
        async with poster.session.post(sandbox.token_url, data={}) as response:
            assert response.status == 503
        await asyncio.sleep(0.6)
        assert (await poster.post())[0] == 200

    async def test_503_outage_can_be_ended_early(
        self, sandbox: SandboxHandle, poster: Poster
    ) -> None:
        """``end_outage`` brings the sandbox back before the outage's time is up."""
        await sandbox.control.outage(60)
        assert (await poster.post())[0] == 503
        await sandbox.control.end_outage()
        assert (await poster.post())[0] == 200

    async def test_refuse_outage_refuses_connections_then_recovers(
        self, sandbox: SandboxHandle, poster: Poster
    ) -> None:
        """A "refuse" outage closes the listening socket (connection refused for new
        connections, dropped requests on old ones) and reopens it on the same port."""
        await sandbox.control.outage(0.5, "refuse")
        async with aiohttp.ClientSession() as fresh:
            with pytest.raises(aiohttp.ClientConnectorError):
                await fresh.get(f"{sandbox.base_url}/_sandbox/health")
        with pytest.raises(aiohttp.ClientConnectionError):
            await poster.post()
        await asyncio.sleep(0.7)
        assert await sandbox.control.health()
        assert (await poster.post())[0] == 200

    async def test_outage_from_python(
        self, sandbox_in_process: Sandbox, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """The in-process API starts and ends outages too."""
        await sandbox_in_process.outage(30, "refuse")
        with pytest.raises(aiohttp.ClientConnectorError):
            await sandbox_http.get(sandbox_in_process.base_url + "/_sandbox/health")
        await sandbox_in_process.end_outage()
        async with SandboxControl(sandbox_in_process.base_url) as control:
            assert await control.health()


class TestPythonFaults:
    async def test_faults_set_in_process_apply_over_http(
        self, sandbox_in_process: Sandbox, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """``Sandbox.faults.set``/``update`` change behaviour at once, like the HTTP API."""
        settings = sandbox_in_process.settings
        token = sandbox_in_process.state.issue_token(frozenset(settings.scopes), 60)
        poster = Poster(sandbox_in_process.basic_sync_url, sandbox_http, token)
        sandbox_in_process.faults.set(FaultConfig(latency=FixedLatency(ms=50)))
        assert await poster.timed() >= 0.05
        sandbox_in_process.faults.update({"error_rate": 1.0, "error_statuses": [503]})
        assert (await poster.post())[0] == 503
        sandbox_in_process.faults.clear()
        assert (await poster.post())[0] == 200
