"""Contract tests of the sandbox's token server and bearer-token checks, over real HTTP."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp

from consumer.testing.workfloplus import JOB_READ, WORKFLOW_EXECUTE, SandboxSettings, run_sandbox
from consumer.testing.workfloplus.examples import docs_example_strict
from tests.fixtures.sandbox import SandboxHandle


async def _token_call(
    session: aiohttp.ClientSession, url: str, **form: str
) -> tuple[int, dict[str, Any]]:
    async with session.post(url, data=form) as response:
        return response.status, await response.json()


def _form(handle: SandboxHandle, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": handle.client_id,
        "client_secret": handle.client_secret,
        **extra,
    }


async def _post_job(session: aiohttp.ClientSession, url: str, token: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with session.post(url, data=docs_example_strict(), headers=headers) as response:
        return response.status


class TestTokenIssuance:
    async def test_client_credentials_get_a_bearer_token_with_all_scopes(
        self, sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """Valid client credentials get a Bearer token, expires_in and every allowed scope."""
        status, body = await _token_call(sandbox_http, sandbox.token_url, **_form(sandbox))
        assert status == 200
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 3600
        assert set(body["scope"].split()) == {WORKFLOW_EXECUTE, JOB_READ}
        assert body["access_token"].count(".") == 2  # JWT-looking

    async def test_requested_scope_is_granted_alone(
        self, sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """A token request with ``scope`` gets exactly the scopes it asked for."""
        status, body = await _token_call(
            sandbox_http, sandbox.token_url, **_form(sandbox, scope=WORKFLOW_EXECUTE)
        )
        assert status == 200
        assert body["scope"] == WORKFLOW_EXECUTE

    async def test_http_basic_client_authentication_is_accepted(
        self, sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """Client id and secret may come in an HTTP Basic header, as identity servers allow."""
        credentials = f"{sandbox.client_id}:{sandbox.client_secret}".encode()
        headers = {"Authorization": "Basic " + base64.b64encode(credentials).decode()}
        form = {"grant_type": "client_credentials"}
        async with sandbox_http.post(sandbox.token_url, data=form, headers=headers) as response:
            assert response.status == 200

    async def test_wrong_secret_is_401_invalid_client(
        self, sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """A wrong secret gets 401 with the OAuth2 error body ``invalid_client``."""
        form = _form(sandbox, client_secret="wrong")
        status, body = await _token_call(sandbox_http, sandbox.token_url, **form)
        assert status == 401
        assert body["error"] == "invalid_client"
        assert body["error_description"]

    async def test_unknown_client_is_401_invalid_client(
        self, sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """An unknown client id gets 401 ``invalid_client``."""
        form = _form(sandbox, client_id="somebody-else")
        status, body = await _token_call(sandbox_http, sandbox.token_url, **form)
        assert (status, body["error"]) == (401, "invalid_client")

    async def test_missing_grant_type_is_400_invalid_request(
        self, sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """A token request without ``grant_type`` gets 400 ``invalid_request``."""
        form = _form(sandbox)
        del form["grant_type"]
        status, body = await _token_call(sandbox_http, sandbox.token_url, **form)
        assert (status, body["error"]) == (400, "invalid_request")

    async def test_other_grant_type_is_400_unsupported_grant_type(
        self, sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """Only client_credentials is supported: anything else is 400 unsupported_grant_type."""
        form = _form(sandbox, grant_type="password")
        status, body = await _token_call(sandbox_http, sandbox.token_url, **form)
        assert (status, body["error"]) == (400, "unsupported_grant_type")

    async def test_scope_not_allowed_is_400_invalid_scope(
        self, sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """Asking for a scope the client does not hold is 400 ``invalid_scope``."""
        form = _form(sandbox, scope="https://www.workfloplus.com/auth/admin")
        status, body = await _token_call(sandbox_http, sandbox.token_url, **form)
        assert (status, body["error"]) == (400, "invalid_scope")

    async def test_json_body_is_400_invalid_request(
        self, sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """The token endpoint takes form encoding only; a JSON body is ``invalid_request``."""
        async with sandbox_http.post(sandbox.token_url, json=_form(sandbox)) as response:
            assert response.status == 400
            assert (await response.json())["error"] == "invalid_request"


class TestBearerChecks:
    async def test_basic_sync_without_token_is_401(
        self, sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """basicSync without an Authorization header is 401 and stores nothing."""
        assert await _post_job(sandbox_http, sandbox.basic_sync_url, None) == 401
        assert await sandbox.control.jobs() == {}

    async def test_basic_sync_with_forged_token_is_401(
        self, sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """A token the sandbox did not sign is 401."""
        token = await sandbox.token(sandbox_http)
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        assert await _post_job(sandbox_http, sandbox.basic_sync_url, forged) == 401
        assert await _post_job(sandbox_http, sandbox.basic_sync_url, "garbage") == 401

    async def test_token_without_workflow_execute_scope_is_403(
        self, sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """A valid token lacking workflow.execute gets 403 on basicSync, with the reason."""
        token = await sandbox.token(sandbox_http, scope=JOB_READ)
        headers = {"Authorization": f"Bearer {token}"}
        url = sandbox.basic_sync_url
        async with sandbox_http.post(url, data=docs_example_strict(), headers=headers) as resp:
            assert resp.status == 403
            assert WORKFLOW_EXECUTE in (await resp.json())["message"]

    async def test_shortened_token_lifetime_expires_tokens(
        self, sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """With the token-lifetime fault, new tokens report and honour the short expires_in."""
        await sandbox.control.set_faults(token_lifetime_s=1)
        status, body = await _token_call(sandbox_http, sandbox.token_url, **_form(sandbox))
        assert (status, body["expires_in"]) == (200, 1)
        token = body["access_token"]
        assert await _post_job(sandbox_http, sandbox.basic_sync_url, token) == 200
        await asyncio.sleep(1.1)
        assert await _post_job(sandbox_http, sandbox.basic_sync_url, token) == 401

    async def test_a_token_delay_holds_requests_until_it_is_lowered(
        self, sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """With ``token_delay_ms`` the token endpoint hangs (a hung identity provider); a
        request it holds is answered, 200, once the fault is cleared, not a minute later."""
        await sandbox.control.set_faults(token_delay_ms=60_000)
        held = asyncio.create_task(_token_call(sandbox_http, sandbox.token_url, **_form(sandbox)))
        await asyncio.sleep(0.5)
        assert not held.done()
        await sandbox.control.set_faults(token_delay_ms=0)
        async with asyncio.timeout(5):
            status, body = await held
        assert status == 200, body

    async def test_revoking_tokens_makes_them_401(
        self, sandbox: SandboxHandle, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """After revoke-tokens, earlier tokens get 401 and a new token works."""
        token = await sandbox.token(sandbox_http)
        assert await _post_job(sandbox_http, sandbox.basic_sync_url, token) == 200
        assert await sandbox.control.revoke_tokens() >= 1
        assert await _post_job(sandbox_http, sandbox.basic_sync_url, token) == 401
        fresh = await sandbox.token(sandbox_http)
        assert await _post_job(sandbox_http, sandbox.basic_sync_url, fresh) == 200

    async def test_configured_token_lifetime_is_honoured(
        self, sandbox_http: aiohttp.ClientSession
    ) -> None:
        """``token_lifetime_s`` (``--token-lifetime``) sets expires_in; tokens expire after it."""
        settings = SandboxSettings(token_lifetime_s=1)
        async with run_sandbox(settings) as running:
            form = {
                "grant_type": "client_credentials",
                "client_id": settings.client_id,
                "client_secret": settings.client_secret,
            }
            status, body = await _token_call(sandbox_http, running.token_url, **form)
            assert (status, body["expires_in"]) == (200, 1)
            token = body["access_token"]
            assert await _post_job(sandbox_http, running.basic_sync_url, token) == 200
            await asyncio.sleep(1.1)
            assert await _post_job(sandbox_http, running.basic_sync_url, token) == 401
