"""A client secret rotated while the token provider runs, against the sandbox's token endpoint
over real HTTP: the provider sends what the secret file holds at each request."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from consumer.errors import AuthRejected
from consumer.gateway.auth import ClientCredentialsTokenProvider
from consumer.testing.workfloplus import WORKFLOW_EXECUTE
from tests.fixtures.sandbox import SandboxHandle
from tests.fixtures.secret_volume import kubelet_volume

ROTATED = "rotated-s3cr3t-Qw9e"


async def _accepted(session: aiohttp.ClientSession, handle: SandboxHandle, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.get(handle.job_url("no-such-job"), headers=headers) as response:
        return response.status


def provider_reading(
    path: Path, sandbox: SandboxHandle, session: aiohttp.ClientSession
) -> ClientCredentialsTokenProvider:
    """A token provider for the sandbox's client, its secret read from ``path``."""
    return ClientCredentialsTokenProvider(
        session,
        sandbox.token_url,
        sandbox.client_id,
        SecretStr(sandbox.client_secret),
        WORKFLOW_EXECUTE,
        secret_file=path,
    )


class TestARotatedSecret:
    async def test_the_file_rotated_with_the_identity_provider_needs_no_restart(
        self, sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession, tmp_path: Path
    ) -> None:
        """The identity provider takes both secrets, the file is swapped, the old secret is
        dropped and every token revoked: the next token request sends the new secret."""
        path = kubelet_volume(tmp_path, sandbox.client_secret, "1")
        provider = provider_reading(path, sandbox, sandbox_http)
        first = await provider.token()
        await sandbox.control.set_faults(client_secrets=[sandbox.client_secret, ROTATED])
        kubelet_volume(tmp_path, ROTATED, "2")
        await sandbox.control.set_faults(client_secrets=[ROTATED])
        await sandbox.control.revoke_tokens()
        assert await _accepted(sandbox_http, sandbox, first) == 401
        await provider.invalidate(first)
        second = await provider.token()
        assert second != first
        assert await _accepted(sandbox_http, sandbox, second) == 404  # up, token taken

    async def test_a_file_rotated_late_is_refused_until_it_is_swapped(
        self, sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession, tmp_path: Path
    ) -> None:
        """The identity provider changes first: the old secret is refused (and not retried
        from the cache of a failure) until the file holds the new one."""
        path = kubelet_volume(tmp_path, sandbox.client_secret, "1")
        provider = provider_reading(path, sandbox, sandbox_http)
        await sandbox.control.set_faults(client_secrets=[ROTATED])
        with pytest.raises(AuthRejected, match="invalid_client"):
            await provider.token()
        kubelet_volume(tmp_path, ROTATED, "2")
        token = await provider.token()
        assert await _accepted(sandbox_http, sandbox, token) == 404
