"""The WorkfloPlus endpoints the sandbox imitates: tokens, basicSync and get-job.

Order of checks on ``POST /jobs/v1/basicSync``: the body is parsed first (only to learn the
clientJobId for recording and overlap counting), then injected latency, outage (503), the
bearer token (401) and scope (403), the body's shape (400), injected 429 / errors / rejections,
and finally the create / update / abort rules (409 when aborting a Completed job).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import time
from typing import Any

from aiohttp import web

from consumer.testing.workfloplus.faults import Faults
from consumer.testing.workfloplus.received_body import (
    BodyError,
    ReceivedJob,
    client_job_id_of,
    parse_document,
)
from consumer.testing.workfloplus.settings import WORKFLOW_EXECUTE, SandboxSettings
from consumer.testing.workfloplus.state import IssuedToken, Record, SandboxState

BASIC_SYNC_PATH = "/jobs/v1/basicSync"
TOKEN_PATH = "/connect/token"
_FORM = "application/x-www-form-urlencoded"
#: What the ``web_page`` fault answers: a web application firewall's block page, 200 and all.
_BLOCK_PAGE = (
    "<html><head><title>Request Rejected</title></head><body>The requested URL was rejected. "
    "Please consult with your administrator.<br>Your support ID is: 4119078512394</body></html>"
)


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(payload).encode(),
        content_type="application/json",
        headers=headers,
    )


def _error(
    status: int, error: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return _json(status, {"error": error, "message": message}, headers)


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return _json(
        status,
        {"error": error, "error_description": description},
        {"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


class Api:
    """Request handlers bound to one process's state and faults."""

    def __init__(self, settings: SandboxSettings, state: SandboxState, faults: Faults) -> None:
        self.settings = settings
        self.state = state
        self.faults = faults

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(TOKEN_PATH, self.token)
        app.router.add_post(BASIC_SYNC_PATH, self.basic_sync)
        app.router.add_get("/jobs/v1/{client_job_id}", self.get_job)

    # -- shared checks -----------------------------------------------------------------------
    def _outage(self, request: web.Request) -> web.Response | None:
        if not self.faults.outage_until:
            return None
        left = self.faults.outage_left()
        if left <= 0:
            return None
        if self.faults.outage_mode == "refuse" and request.transport is not None:
            # A connection opened before the listening socket closed: drop it, as a dead
            # server would, instead of answering.
            request.transport.close()
        headers = {"Retry-After": str(math.ceil(left))}
        return _error(503, "service_unavailable", "sandbox outage in progress", headers)

    def _authorize(self, request: web.Request, scope: str | None) -> web.Response | IssuedToken:
        header = request.headers.get("Authorization", "")
        kind, _, value = header.partition(" ")
        token = self.state.token(value.strip()) if kind.lower() == "bearer" else None
        if token is None:
            return _error(
                401,
                "invalid_token",
                "missing, unknown, revoked or expired bearer token",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if scope is not None and scope not in token.scopes:
            return _error(
                403,
                "insufficient_scope",
                f"the token lacks the scope {scope}",
                {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
            )
        return token

    def _record(
        self,
        request: web.Request,
        started: float,
        status: int,
        client_job_id: str | None = None,
        body: bytes | None = None,
        outcome: str | None = None,
    ) -> None:
        latency_ms = (time.perf_counter() - started) * 1000.0
        self.state.record(
            Record(
                time.time(),
                request.method,
                request.path,
                client_job_id,
                body,
                status,
                latency_ms,
                outcome,
                request.headers.get("traceparent"),
            )
        )

    # -- POST /connect/token -----------------------------------------------------------------
    async def token(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        await self.faults.token_delay()
        response = self._outage(request) or await self._issue_token(request)
        self._record(request, started, response.status)
        return response

    async def _issue_token(self, request: web.Request) -> web.Response:
        if request.content_type != _FORM:
            return _oauth_error(400, "invalid_request", f"the body must be {_FORM}")
        form = await request.post()
        fields = {key: str(value) for key, value in form.items()}
        client_id, client_secret = fields.get("client_id"), fields.get("client_secret")
        basic = _basic_credentials(request.headers.get("Authorization", ""))
        if basic is not None:
            client_id, client_secret = basic
        grant_type = fields.get("grant_type")
        if not grant_type:
            return _oauth_error(400, "invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            return _oauth_error(
                400, "unsupported_grant_type", "only client_credentials is supported"
            )
        secrets = self.faults.config.client_secrets or (self.settings.client_secret,)
        if client_id != self.settings.client_id or client_secret not in secrets:
            return _oauth_error(401, "invalid_client", "unknown client or wrong secret")
        allowed = frozenset(self.settings.scopes)
        requested = frozenset(fields.get("scope", "").split())
        if not requested <= allowed:
            unknown = " ".join(sorted(requested - allowed))
            return _oauth_error(400, "invalid_scope", f"scopes not allowed for client: {unknown}")
        scopes = requested or allowed
        lifetime = self.faults.config.token_lifetime_s or self.settings.token_lifetime_s
        token = self.state.issue_token(scopes, lifetime)
        return _json(
            200,
            {
                "access_token": token,
                "expires_in": lifetime,
                "token_type": "Bearer",
                "scope": " ".join(sorted(scopes)),
            },
            {"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    # -- POST /jobs/v1/basicSync -------------------------------------------------------------
    async def basic_sync(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        body = await request.read()
        document: ReceivedJob | BodyError
        try:
            document = parse_document(body)
            client_job_id: str | None = document.metadata.clientJobId
        except BodyError as exc:
            document = exc
            client_job_id = client_job_id_of(body)
        hold = self.faults.hold_once(client_job_id) if self.faults.active else 0.0
        handled = self._handle_basic_sync(request, started, body, document, client_job_id, hold)
        if hold:
            # Shielded: a client that times out does not stop the request from landing.
            return await asyncio.shield(asyncio.ensure_future(handled))
        return await handled

    async def _handle_basic_sync(
        self,
        request: web.Request,
        started: float,
        body: bytes,
        document: ReceivedJob | BodyError,
        client_job_id: str | None,
        hold: float,
    ) -> web.Response:
        in_flight = self.state.in_flight
        if client_job_id is not None:
            in_flight.enter(client_job_id)
        status, outcome = 500, None
        try:
            if hold:
                await asyncio.sleep(hold)
            response, outcome = await self._basic_sync(request, body, document)
            status = response.status
            return response
        finally:
            if client_job_id is not None:
                in_flight.leave(client_job_id)
            self._record(request, started, status, client_job_id, body, outcome)

    async def _basic_sync(
        self, request: web.Request, body: bytes, document: ReceivedJob | BodyError
    ) -> tuple[web.Response, str | None]:
        faults = self.faults
        if faults.active:
            delay = faults.delay_s()
            if delay > 0:
                await asyncio.sleep(delay)
        outage = self._outage(request)
        if outage is not None:
            return outage, None
        token = self._authorize(request, WORKFLOW_EXECUTE)
        if isinstance(token, web.Response):
            return token, None
        if isinstance(document, BodyError):
            return _error(400, "invalid_body", str(document)), None
        client_job_id = document.metadata.clientJobId
        if faults.active:
            injected = self._injected(request, client_job_id)
            if injected is not None:
                return injected, None
        status = document.metadata.status
        job = self.state.jobs.get(client_job_id)
        if job is not None and status == "Aborted" and job.status == "Completed":
            message = f"job {client_job_id} is Completed; only incomplete jobs can be aborted"
            return _error(409, "job_completed", message), "refused"
        outcome = self.state.store(client_job_id, status, body)
        response = web.Response(
            body=self.state.jobs[client_job_id].response, content_type="application/json"
        )
        return response, outcome

    def _injected(self, request: web.Request, client_job_id: str) -> web.Response | None:
        faults = self.faults
        if faults.web_page(client_job_id):  # a firewall in front answers before the gateway
            return web.Response(text=_BLOCK_PAGE, content_type="text/html")
        if faults.rate_limited(client_job_id):
            seconds = str(faults.config.retry_after_s)
            return _error(429, "too_many_requests", "rate limited", {"Retry-After": seconds})
        status = faults.error_status() or faults.job_error(client_job_id)
        if status is not None:
            return _error(status, "injected_error", f"injected HTTP {status}")
        rejection = faults.rejection(client_job_id)
        if rejection is not None:
            body = rejection.body
            if rejection.echo_authorization:
                echoed = request.headers.get("Authorization")
                body = {**(body if isinstance(body, dict) else {}), "authorization": echoed}
            return _json(rejection.status, body)
        return None

    # -- GET /jobs/v1/{clientJobId} ----------------------------------------------------------
    async def get_job(self, request: web.Request) -> web.Response:
        """Any valid token may read (the real ``Job_Read`` scope name is not documented)."""
        started = time.perf_counter()
        client_job_id = request.match_info["client_job_id"]
        response = self._outage(request)
        if response is None:
            token = self._authorize(request, None)
            if isinstance(token, web.Response):
                response = token
            elif (job := self.state.jobs.get(client_job_id)) is None:
                response = _error(404, "not_found", f"no job with clientJobId {client_job_id}")
            else:
                response = web.Response(
                    body=b"[" + job.response + b"]", content_type="application/json"
                )
        self._record(request, started, response.status, client_job_id)
        return response


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """``client_id`` and ``client_secret`` from HTTP Basic auth, which identity servers accept."""
    kind, _, value = header.partition(" ")
    if kind.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None
