"""The gateway client and token provider over real HTTP against a scripted aiohttp server.

The server is started in this module on a free port, so these tests pin the client's behaviour
independently of the project's sandbox: each test scripts the answers of ``/connect/token`` and
``/jobs/v1/basicSync`` and then checks both the outcome and what actually went over the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr
from structlog.testing import capture_logs

from consumer.gateway.auth import ClientCredentialsTokenProvider
from consumer.gateway.client import Accepted, GatewayClient, Rejected, Retryable, Systemic
from consumer.testing.workfloplus import SandboxSettings, run_sandbox
from tests.fixtures.certs import CertificateAuthority

SECRET = "component-secret-never-shown"
SCOPE = "https://www.workfloplus.com/auth/workflow.execute"
BODY = json.dumps({"metadata": {"clientJobId": "job-1", "workflowId": "wf"}}).encode()
NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


@dataclass
class Reply:
    """One scripted answer: status, JSON-or-text body, headers, and a delay before answering."""

    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    #: after ``body``, filler without end (until the client hangs up)
    endless: bool = False


@dataclass
class Seen:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class ScriptedGateway:
    """Identity server and gateway in one app; answers pop from per-endpoint scripts.

    With an empty script the token endpoint issues ``token-<n>`` and basicSync echoes the job
    with a ``jobId``; GET of a job answers 404 unless scripted.
    """

    def __init__(self) -> None:
        self.token_script: list[Reply] = []
        self.sync_script: list[Reply] = []
        self.get_script: list[Reply] = []
        self.seen: list[Seen] = []
        self.tokens_issued = 0
        self.release = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_post("/connect/token", self._token)
        self.app.router.add_post("/jobs/v1/basicSync", self._sync)
        self.app.router.add_get("/jobs/v1/{client_job_id}", self._get)

    def requests_to(self, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path == path]

    async def _answer(
        self, request: web.Request, script: list[Reply], default: Reply
    ) -> web.StreamResponse:
        self.seen.append(
            Seen(request.method, request.path, dict(request.headers), await request.read())
        )
        reply = script.pop(0) if script else default
        if reply.delay:
            with contextlib.suppress(TimeoutError):  # released early at teardown
                await asyncio.wait_for(self.release.wait(), reply.delay)
        if reply.endless:
            return await self._endless(request, reply)
        return web.Response(status=reply.status, text=reply.body, headers=reply.headers)

    @staticmethod
    async def _endless(request: web.Request, reply: Reply) -> web.StreamResponse:
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        response.content_type = "application/json"
        await response.prepare(request)
        await response.write(reply.body.encode())
        filler = b" " * 65536
        with contextlib.suppress(ConnectionError):
            while True:
                await response.write(filler)
        return response

    async def _token(self, request: web.Request) -> web.StreamResponse:
        self.tokens_issued += 1
        issued = json.dumps(
            {
                "access_token": f"token-{self.tokens_issued}",
                "expires_in": 3600,
                "token_type": "Bearer",
            }
        )
        return await self._answer(request, self.token_script, Reply(body=issued))

    async def _sync(self, request: web.Request) -> web.StreamResponse:
        job = json.loads(await request.read())
        stored = json.dumps({**job, "jobId": "server-job-1"})
        return await self._answer(request, self.sync_script, Reply(body=stored))

    async def _get(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, self.get_script, Reply(status=404))


@dataclass
class Harness:
    """A running scripted server plus a client wired to it."""

    server: ScriptedGateway
    tokens: ClientCredentialsTokenProvider
    client: GatewayClient
    base_url: str
    session: aiohttp.ClientSession


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    server = ScriptedGateway()
    runner = web.AppRunner(server.app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    base_url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        tokens = ClientCredentialsTokenProvider(
            session, f"{base_url}/connect/token", "client-1", SecretStr(SECRET), SCOPE, timeout=0.5
        )
        client = GatewayClient(
            session, base_url, tokens, request_timeout=0.3, wall_clock=lambda: NOW
        )
        try:
            yield Harness(server, tokens, client, base_url, session)
        finally:
            server.release.set()
            await runner.cleanup()


class TestPostBasicSync:
    async def test_success_sends_json_with_bearer_token(self, harness: Harness) -> None:
        """A 200 is Accepted with the server's jobId; the request carries JSON and the token."""
        outcome = await harness.client.post_basic_sync(BODY)
        assert isinstance(outcome, Accepted)
        assert (outcome.status, outcome.job_id) == (200, "server-job-1")
        [sent] = harness.server.requests_to("/jobs/v1/basicSync")
        assert sent.body == BODY
        assert sent.headers["Content-Type"] == "application/json"
        assert sent.headers["Authorization"] == "Bearer token-1"

    async def test_token_request_is_client_credentials_form(self, harness: Harness) -> None:
        """The token is fetched with the form-encoded client-credentials grant and our scope."""
        await harness.client.post_basic_sync(BODY)
        [sent] = harness.server.requests_to("/connect/token")
        assert sent.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
        assert parse_qs(sent.body.decode(), strict_parsing=True) == {
            "grant_type": ["client_credentials"],
            "client_id": ["client-1"],
            "client_secret": [SECRET],
            "scope": [SCOPE],
        }

    async def test_token_is_reused_across_requests(self, harness: Harness) -> None:
        """Many requests, concurrent or not, cost one token fetch while it is valid."""
        outcomes = await asyncio.gather(*(harness.client.post_basic_sync(BODY) for _ in range(10)))
        await harness.client.post_basic_sync(BODY)
        assert all(isinstance(o, Accepted) for o in outcomes)
        assert len(harness.server.requests_to("/connect/token")) == 1

    async def test_401_once_refreshes_token_and_retries(self, harness: Harness) -> None:
        """A 401 drops the token, fetches a new one and retries once, at no cost to the job."""
        harness.server.sync_script.append(Reply(status=401))
        outcome = await harness.client.post_basic_sync(BODY)
        assert isinstance(outcome, Accepted)
        sent = harness.server.requests_to("/jobs/v1/basicSync")
        assert [s.headers["Authorization"] for s in sent] == ["Bearer token-1", "Bearer token-2"]

    async def test_401_twice_is_systemic(self, harness: Harness) -> None:
        """A 401 with a fresh token means auth is broken for everyone: Systemic, no third try."""
        harness.server.sync_script += [Reply(status=401), Reply(status=401)]
        outcome = await harness.client.post_basic_sync(BODY)
        assert isinstance(outcome, Systemic)
        assert outcome.status == 401
        assert len(harness.server.requests_to("/jobs/v1/basicSync")) == 2

    async def test_concurrent_401s_cause_one_token_refresh(self, harness: Harness) -> None:
        """Callers refused with the same stale token share one refresh."""
        await harness.tokens.token()
        harness.server.sync_script += [Reply(status=401) for _ in range(5)]
        outcomes = await asyncio.gather(*(harness.client.post_basic_sync(BODY) for _ in range(5)))
        assert all(isinstance(o, Accepted) for o in outcomes)
        assert len(harness.server.requests_to("/connect/token")) == 2

    async def test_429_with_retry_after_seconds(self, harness: Harness) -> None:
        """429 with ``Retry-After: 2`` is Retryable and asks for two seconds."""
        harness.server.sync_script.append(Reply(status=429, headers={"Retry-After": "2"}))
        outcome = await harness.client.post_basic_sync(BODY)
        assert outcome == Retryable(status=429, retry_after=2.0, reason="http_429")

    async def test_503_with_retry_after_date(self, harness: Harness) -> None:
        """503 with an HTTP-date Retry-After is converted to seconds from the wall clock."""
        when = format_datetime(NOW + timedelta(seconds=45), usegmt=True)
        harness.server.sync_script.append(Reply(status=503, headers={"Retry-After": when}))
        outcome = await harness.client.post_basic_sync(BODY)
        assert outcome == Retryable(status=503, retry_after=45.0, reason="http_503")

    async def test_503_without_retry_after(self, harness: Harness) -> None:
        """A bare 5xx is Retryable with no server hint."""
        harness.server.sync_script.append(Reply(status=503, body="down"))
        outcome = await harness.client.post_basic_sync(BODY)
        assert outcome == Retryable(status=503, retry_after=None, reason="http_503")

    async def test_slow_response_times_out_as_retryable(self, harness: Harness) -> None:
        """A gateway slower than ``request_timeout`` yields Retryable(timeout), not an exception,
        and in doubt: the request was sent and may still be applied."""
        harness.server.sync_script.append(Reply(delay=5.0))
        outcome = await harness.client.post_basic_sync(BODY)
        assert outcome == Retryable(status=None, retry_after=None, reason="timeout", in_doubt=True)

    async def test_403_is_systemic(self, harness: Harness) -> None:
        """403 (scope missing) is Systemic and is not retried by the client."""
        harness.server.sync_script.append(Reply(status=403))
        outcome = await harness.client.post_basic_sync(BODY)
        assert outcome == Systemic(status=403, reason="forbidden")
        assert len(harness.server.requests_to("/jobs/v1/basicSync")) == 1

    async def test_400_is_rejected_with_body(self, harness: Harness) -> None:
        """A malformed-document 400 is a final Rejected carrying the server's explanation."""
        harness.server.sync_script.append(Reply(status=400, body='{"errors":["workflowId"]}'))
        outcome = await harness.client.post_basic_sync(BODY)
        assert outcome == Rejected(status=400, body_truncated='{"errors":["workflowId"]}')

    async def test_an_endless_2xx_answer_is_read_to_its_limit_only(self, harness: Harness) -> None:
        """A 200 whose body never ends is Accepted once the limit is read (a body read whole
        would fill the memory, or time out and post the job again), and the cut is logged."""
        client = GatewayClient(
            harness.session, harness.base_url, harness.tokens, request_timeout=10,
            max_answer_bytes=1024 * 1024,
        )  # fmt: skip
        harness.server.sync_script.append(Reply(body='{"jobId":"server-job-1",', endless=True))
        with capture_logs() as logs:
            outcome = await asyncio.wait_for(client.post_basic_sync(BODY), 5)
        assert isinstance(outcome, Accepted)
        assert outcome.job_id is None  # its answer cut, not JSON
        assert len(outcome.body) == 1024 * 1024
        assert {"event": "gateway_answer_cut", "status": 200}.items() <= logs[-1].items()
        # The connection it left unread is not reused: the next request is answered.
        assert isinstance(await client.post_basic_sync(BODY), Accepted)

    async def test_an_endless_4xx_answer_is_rejected_with_its_beginning(
        self, harness: Harness
    ) -> None:
        client = GatewayClient(
            harness.session, harness.base_url, harness.tokens, request_timeout=10,
            max_answer_bytes=256 * 1024,
        )  # fmt: skip
        harness.server.sync_script.append(Reply(status=400, body='{"errors":[', endless=True))
        outcome = await asyncio.wait_for(client.post_basic_sync(BODY), 5)
        assert isinstance(outcome, Rejected)
        assert outcome.body_truncated.startswith('{"errors":[')
        assert len(outcome.body_truncated) < 5000  # truncate_body: head and tail

    async def test_an_echoed_bearer_token_never_reaches_the_outcome(self, harness: Harness) -> None:
        """A gateway in debugging mode echoes the request's headers in its error body, which
        goes into a failure record: the token is cut out of it (of a web page too)."""
        echo = '{"error": "bad", "headers": {"Authorization": "Bearer token-1"}}'
        harness.server.sync_script.append(Reply(status=400, body=echo))
        outcome = await harness.client.post_basic_sync(BODY)
        assert outcome == Rejected(400, echo.replace("token-1", "[redacted]"))
        page = "<html>Bearer token-1</html>"
        harness.server.sync_script.append(Reply(body=page, headers={"Content-Type": "text/html"}))
        outcome = await harness.client.post_basic_sync(BODY)
        assert isinstance(outcome, Systemic)
        assert outcome.body_truncated == "<html>Bearer [redacted]</html>"

    async def test_a_200_web_page_is_not_accepted(self, harness: Harness) -> None:
        """A firewall's block page, 200 and all, is no basicSync answer: Systemic with the page
        for a failure record, never Accepted (the job would be settled as synced)."""
        page = "<html><body>The requested URL was rejected.</body></html>"
        html = {"Content-Type": "text/html; charset=iso-8859-1"}
        harness.server.sync_script.append(Reply(body=page, headers=html))
        outcome = await harness.client.post_basic_sync(BODY)
        assert outcome == Systemic(200, "no_basicsync_web_page_200", body_truncated=page)

    async def test_redirect_is_not_followed(self, harness: Harness) -> None:
        """A 307 is not followed (a document never goes to another URL): Systemic, one request."""
        redirect = {"Location": f"{harness.base_url}/elsewhere"}
        harness.server.sync_script.append(Reply(status=307, headers=redirect))
        outcome = await harness.client.post_basic_sync(BODY)
        assert outcome == Systemic(status=307, reason="unexpected_status_307")
        assert [s.path for s in harness.server.seen if s.path != "/connect/token"] == [
            "/jobs/v1/basicSync"
        ]

    async def test_connection_refused_is_retryable(self, harness: Harness) -> None:
        """Nobody listening at the gateway address is a Retryable connection error."""
        await harness.tokens.token()
        session = aiohttp.ClientSession()
        async with session:
            client = GatewayClient(
                session, f"http://127.0.0.1:{free_port()}", harness.tokens, request_timeout=1.0
            )
            outcome = await client.post_basic_sync(BODY)
        assert isinstance(outcome, Retryable)
        assert outcome.status is None
        assert outcome.reason.startswith("connection_error")


class TestTokenEndpointFailures:
    @pytest.mark.parametrize("status", [400, 401])
    async def test_rejected_credentials_are_systemic(self, harness: Harness, status: int) -> None:
        """Bad credentials at the token endpoint: Systemic, and basicSync is never called."""
        harness.server.token_script.append(
            Reply(status=status, body=json.dumps({"error": "invalid_client"}))
        )
        with capture_logs() as logs:
            outcome = await harness.client.post_basic_sync(BODY)
        assert isinstance(outcome, Systemic)
        assert "invalid_client" in outcome.reason
        assert harness.server.requests_to("/jobs/v1/basicSync") == []
        assert SECRET not in outcome.reason
        assert SECRET not in repr(logs)

    async def test_token_endpoint_5xx_is_retryable(self, harness: Harness) -> None:
        """A token endpoint answering 503 makes the sync Retryable, not failed."""
        harness.server.token_script.append(Reply(status=503))
        outcome = await harness.client.post_basic_sync(BODY)
        assert isinstance(outcome, Retryable)
        assert outcome.reason.startswith("token_unavailable")

    async def test_an_endless_token_answer_is_read_to_its_limit_only(
        self, harness: Harness
    ) -> None:
        """A token endpoint whose answer never ends gives no token (Retryable), at once: it is
        not read until the token timeout, nor into memory whole."""
        harness.server.token_script.append(Reply(body='{"access_token":"t",', endless=True))
        outcome = await asyncio.wait_for(harness.client.post_basic_sync(BODY), 5)
        assert isinstance(outcome, Retryable)
        assert outcome.reason.startswith("token_unavailable"), outcome.reason
        assert "timed out" not in outcome.reason

    async def test_token_endpoint_timeout_is_retryable(self, harness: Harness) -> None:
        """A token endpoint slower than its timeout makes the sync Retryable."""
        harness.server.token_script.append(Reply(delay=5.0))
        outcome = await harness.client.post_basic_sync(BODY)
        assert isinstance(outcome, Retryable)
        assert "timed out" in outcome.reason

    async def test_secret_not_in_reprs(self, harness: Harness) -> None:
        """Neither the client secret nor a token shows in the reprs of provider or client."""
        token = await harness.tokens.token()
        for text in (repr(harness.tokens), repr(harness.client)):
            assert SECRET not in text
            assert token not in text


class TestProbe:
    async def test_404_for_unknown_job_means_up(self, harness: Harness) -> None:
        """The probe GETs a job that cannot exist and returns the status: 404 here."""
        assert await harness.client.probe() == 404
        [sent] = harness.server.requests_to("/connect/token")
        assert sent.method == "POST"
        [get] = [s for s in harness.server.seen if s.method == "GET"]
        assert get.path.startswith("/jobs/v1/basicsync-probe-")
        assert get.headers["Authorization"] == "Bearer token-1"

    @pytest.mark.parametrize("status", [500, 503, 429, 408])
    async def test_transient_status_means_down(self, harness: Harness, status: int) -> None:
        """5xx, 429 and 408 on the probe come back as the status, to be judged as evidence."""
        harness.server.get_script.append(Reply(status=status))
        assert await harness.client.probe() == status

    async def test_403_means_up(self, harness: Harness) -> None:
        """403 on the probe GET comes back as 403 (up: a least-privilege client may lack
        Job_Read)."""
        harness.server.get_script.append(Reply(status=403))
        assert await harness.client.probe() == 403

    async def test_401_means_down_and_drops_token(self, harness: Harness) -> None:
        """A 401 probe forces a fresh token for the next probe."""
        harness.server.get_script.append(Reply(status=401))
        assert await harness.client.probe() == 401
        assert await harness.client.probe() == 404
        assert len(harness.server.requests_to("/connect/token")) == 2

    async def test_token_refused_means_down(self, harness: Harness) -> None:
        """While the token endpoint refuses us, the probe has no status and calls nothing."""
        harness.server.token_script.append(Reply(status=401))
        assert await harness.client.probe() is None
        assert [s for s in harness.server.seen if s.method == "GET"] == []

    async def test_unreachable_gateway_means_down(self, harness: Harness) -> None:
        """No listener at the gateway address: no status, and nothing raised."""
        async with aiohttp.ClientSession() as session:
            client = GatewayClient(
                session, f"http://127.0.0.1:{free_port()}", harness.tokens, request_timeout=1.0
            )
            assert await client.probe() is None


class StaticToken:
    """A token provider that always has the same token (the request never gets that far)."""

    async def token(self) -> str:
        return "static-token"

    async def invalidate(self, token: str) -> None:
        return None


class TestUntrustedCertificate:
    async def test_the_reason_names_what_the_verification_failed_on(self, tmp_path: Path) -> None:
        """A gateway whose certificate comes from a CA the client does not trust (a private
        CA missing from the bundle, or one renewed): the retryable outcome's reason says
        so, not only the exception's class name."""
        ca = CertificateAuthority("untrusted gateway CA")
        cert, key = ca.server().write(tmp_path, "gateway")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        async with (
            run_sandbox(SandboxSettings(), ssl_context=context) as sandbox,
            aiohttp.ClientSession() as session,
        ):
            client = GatewayClient(session, sandbox.base_url, StaticToken(), request_timeout=5)
            outcome = await client.post_basic_sync(BODY)
        assert isinstance(outcome, Retryable)
        assert outcome.reason == (
            "connection_error: ClientConnectorCertificateError: "
            "unable to get local issuer certificate"
        )


def freeze_while_connecting(seconds: float, *, blocking: bool) -> aiohttp.TraceConfig:
    """A trace that stops the client once, as its basicSync request gets a connection.

    ``blocking``: the whole process stands still (``time.sleep``: a SIGSTOP, a paused VM), so
    no timer runs meanwhile; else only this request waits (``asyncio.sleep``: a slow connect).
    """
    frozen: list[bool] = []

    async def freeze(session: aiohttp.ClientSession, context: object, params: object) -> None:
        if frozen:
            return
        frozen.append(True)
        if blocking:
            time.sleep(seconds)  # noqa: ASYNC251 - the point: the whole loop stands still
        else:
            await asyncio.sleep(seconds)

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(freeze)
    trace.on_connection_reuseconn.append(freeze)
    return trace


class TestSendDeadline:
    """No byte of a request leaves after its send deadline: the partition's next owner posts
    the job again when the mark's in-doubt window ends, trusting that it cannot land later."""

    async def test_a_process_frozen_after_the_last_check_sends_nothing_when_it_wakes(
        self, harness: Harness
    ) -> None:
        """Frozen between the token and the socket past the deadline (a member SIGSTOPped
        mid-request, woken after the group moved on): on waking, aiohttp's body writer is
        ready to run before any timer, and before it checked here, it wrote the old document
        to WorkfloPlus then. Now the body refuses to leave; the outcome is not in doubt."""
        await harness.tokens.token()
        trace = freeze_while_connecting(0.6, blocking=True)
        async with aiohttp.ClientSession(trace_configs=[trace]) as session:
            client = GatewayClient(session, harness.base_url, harness.tokens, request_timeout=5)
            outcome = await client.post_basic_sync(BODY, send_by=time.monotonic() + 0.2)
            await asyncio.sleep(0.3)  # a late body would reach the server (same loop) by now
        assert outcome == Retryable(status=None, retry_after=None, reason="send_deadline_passed")
        assert harness.server.requests_to("/jobs/v1/basicSync") == []

    async def test_a_request_within_its_deadline_is_sent(self, harness: Harness) -> None:
        """The same freeze, well inside the deadline: the document is sent and accepted."""
        await harness.tokens.token()
        trace = freeze_while_connecting(0.2, blocking=True)
        async with aiohttp.ClientSession(trace_configs=[trace]) as session:
            client = GatewayClient(session, harness.base_url, harness.tokens, request_timeout=5)
            outcome = await client.post_basic_sync(BODY, send_by=time.monotonic() + 3)
        assert isinstance(outcome, Accepted)
        [sent] = harness.server.requests_to("/jobs/v1/basicSync")
        assert sent.body == BODY

    async def test_a_timeout_before_the_body_left_is_not_in_doubt(self, harness: Harness) -> None:
        """The request timed out while it waited for its connection: nothing was sent, so the
        job need not wait out an in-doubt window, and nothing is sent later either."""
        await harness.tokens.token()
        trace = freeze_while_connecting(1.0, blocking=False)
        async with aiohttp.ClientSession(trace_configs=[trace]) as session:
            client = GatewayClient(session, harness.base_url, harness.tokens, request_timeout=0.3)
            outcome = await client.post_basic_sync(BODY, send_by=time.monotonic() + 5)
            await asyncio.sleep(1.0)
        assert outcome == Retryable(status=None, retry_after=None, reason="timeout")
        assert harness.server.requests_to("/jobs/v1/basicSync") == []

    async def test_a_timeout_after_the_body_left_is_in_doubt(self, harness: Harness) -> None:
        """The body reached WorkfloPlus and the answer is late: it may be applied."""
        harness.server.sync_script.append(Reply(delay=5.0))
        outcome = await harness.client.post_basic_sync(BODY, send_by=time.monotonic() + 5)
        assert outcome == Retryable(status=None, retry_after=None, reason="timeout", in_doubt=True)
        assert len(harness.server.requests_to("/jobs/v1/basicSync")) == 1
