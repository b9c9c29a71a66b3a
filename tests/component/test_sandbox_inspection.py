"""Contract tests of what the sandbox lets tests inspect: requests, history, overlaps, reset."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from consumer.testing.workfloplus.examples import job_document
from tests.fixtures.sandbox import SandboxHandle


class Poster:
    def __init__(self, url: str, session: aiohttp.ClientSession, token: str) -> None:
        self.url = url
        self.session = session
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def post(self, data: bytes) -> int:
        async with self.session.post(self.url, data=data, headers=self.headers) as response:
            await response.read()
            return response.status


@pytest.fixture
async def poster(sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession) -> Poster:
    return Poster(sandbox.basic_sync_url, sandbox_http, await sandbox.token(sandbox_http))


class TestRequestLog:
    async def test_every_basic_sync_request_is_recorded(
        self, sandbox: SandboxHandle, poster: Poster
    ) -> None:
        """Each request is recorded with time, clientJobId, parsed body, status, latency and
        outcome, including rejected ones."""
        before = time.time()
        document = job_document("rec-1")
        assert await poster.post(json.dumps(document).encode()) == 200
        assert await poster.post(b"{not json") == 400
        records = await sandbox.control.requests(path="/jobs/v1/basicSync")
        assert [(r.client_job_id, r.status, r.outcome) for r in records] == [
            ("rec-1", 200, "created"),
            (None, 400, None),
        ]
        assert records[0].body == document
        assert records[1].body == "{not json"
        assert all(before <= r.time <= time.time() and r.latency_ms >= 0 for r in records)

    async def test_token_and_get_requests_are_recorded_without_bodies(
        self, sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """Token calls (whose bodies hold the secret) and GETs are recorded without a body."""
        await sandbox.token(sandbox_http)
        async with sandbox_http.get(sandbox.job_url("nope")) as response:
            assert response.status == 401
        records = await sandbox.control.requests()
        assert [(r.method, r.path, r.status, r.body) for r in records] == [
            ("POST", "/connect/token", 200, None),
            ("GET", "/jobs/v1/nope", 401, None),
        ]

    async def test_requests_filter_by_client_job_id(
        self, sandbox: SandboxHandle, poster: Poster
    ) -> None:
        """``requests(client_job_id)`` returns only that job's requests."""
        for client_job_id in ("a", "b", "a"):
            await poster.post(json.dumps(job_document(client_job_id)).encode())
        assert len(await sandbox.control.requests("a")) == 2


class TestHistory:
    async def test_history_keeps_every_accepted_version_in_order(
        self, sandbox: SandboxHandle, poster: Poster
    ) -> None:
        """A job's history holds each accepted body, in order; refused ones are not in it."""
        versions = [job_document("hist", status=status) for status in ("InProgress", "Completed")]
        for document in versions:
            assert await poster.post(json.dumps(document).encode()) == 200
        aborting = job_document("hist", status="Aborted")
        assert await poster.post(json.dumps(aborting).encode()) == 409
        assert await sandbox.control.history("hist") == versions
        stored = await sandbox.control.job("hist")
        assert stored is not None
        assert stored["metadata"]["status"] == "Completed"
        assert await sandbox.control.history("unknown") == []
        assert await sandbox.control.job("unknown") is None


class TestOverlaps:
    async def test_concurrent_requests_for_one_job_count_as_overlap_2(
        self, sandbox: SandboxHandle, poster: Poster
    ) -> None:
        """Two requests for one job in flight together (held by added latency) give overlap 2."""
        await sandbox.control.set_faults(latency={"kind": "fixed", "ms": 200})
        body = json.dumps(job_document("twice")).encode()
        assert list(await asyncio.gather(poster.post(body), poster.post(body))) == [200, 200]
        overlaps = await sandbox.control.overlaps()
        assert overlaps.by_job == {"twice": 2}
        assert overlaps.max == 2
        assert overlaps.in_flight == {}

    async def test_sequential_and_different_jobs_do_not_overlap(
        self, sandbox: SandboxHandle, poster: Poster
    ) -> None:
        """Sequential requests for a job, or concurrent ones for different jobs, give 1."""
        await sandbox.control.set_faults(latency={"kind": "fixed", "ms": 50})
        first, second = (json.dumps(job_document(j)).encode() for j in ("x", "y"))
        await asyncio.gather(poster.post(first), poster.post(second))
        await poster.post(first)
        overlaps = await sandbox.control.overlaps()
        assert overlaps.by_job == {"x": 1, "y": 1}
        assert overlaps.max == 1


class TestReset:
    async def test_reset_forgets_jobs_requests_and_overlaps_but_keeps_tokens(
        self, sandbox: SandboxHandle, poster: Poster
    ) -> None:
        """``reset`` empties the job store, request log and overlap counters; tokens stay."""
        await poster.post(json.dumps(job_document("gone")).encode())
        await sandbox.control.set_faults(error_rate=0.5)
        await sandbox.control.reset()
        assert await sandbox.control.jobs() == {}
        assert await sandbox.control.requests() == []
        assert (await sandbox.control.overlaps()).max == 0
        assert (await sandbox.control.faults()).error_rate == 0
        assert await poster.post(json.dumps(job_document("new")).encode()) == 200
