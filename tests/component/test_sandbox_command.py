"""The ``basicsync sandbox`` command: URL announcement and several worker processes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import aiohttp
import pytest

from consumer.testing.workfloplus.examples import job_document
from tests.fixtures.sandbox import SandboxHandle, sandbox_subprocess


@pytest.fixture
def two_workers() -> Iterator[str]:
    with sandbox_subprocess("--workers", "2") as base_url:
        yield base_url


class TestCommand:
    async def test_subprocess_fixture_serves_the_api(
        self, sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """``python -m consumer sandbox --port 0`` prints its URL and serves the API there."""
        assert sandbox.base_url.startswith("http://127.0.0.1:")
        assert await sandbox.control.health()

    async def test_workers_share_a_port_and_accept_each_others_tokens(
        self, two_workers: str, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """With ``--workers 2`` both processes serve one port, and a token from either works
        on any of them (they share the signing key)."""
        form = {
            "grant_type": "client_credentials",
            "client_id": "sandbox-client",
            "client_secret": "sandbox-secret",
        }
        async with sandbox_http.post(f"{two_workers}/connect/token", data=form) as response:
            token = (await response.json())["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        body = json.dumps(job_document()).encode()
        for _ in range(10):
            # A new connection each time, so the kernel spreads them across workers.
            async with (
                aiohttp.ClientSession() as fresh,
                fresh.post(f"{two_workers}/jobs/v1/basicSync", data=body, headers=headers) as resp,
            ):
                assert resp.status == 200
