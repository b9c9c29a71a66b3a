"""The inspection and fault-injection endpoints, under ``/_sandbox``.

| method and path | effect |
| --- | --- |
| ``GET /_sandbox/health`` | ``{"status": "ok"}`` |
| ``POST /_sandbox/reset`` | forget jobs, requests, overlaps; no faults or outage; tokens stay |
| ``GET /_sandbox/requests[?client_job_id=&path=]`` | recorded API requests, oldest first |
| ``GET /_sandbox/jobs`` | ``{clientJobId: jobId}`` of stored jobs |
| ``GET /_sandbox/jobs/{id}`` | the stored job (document plus ``jobId``), 404 if unknown |
| ``GET /_sandbox/jobs/{id}/history`` | every accepted body for that job, in order |
| ``GET /_sandbox/overlaps`` | ``{"max", "by_job", "in_flight"}`` |
| ``GET /_sandbox/faults`` | the current ``FaultConfig`` |
| ``PATCH /_sandbox/faults`` | change the given fields only |
| ``PUT /_sandbox/faults`` | replace all faults |
| ``DELETE /_sandbox/faults`` | no faults, no outage |
| ``POST /_sandbox/outage`` | ``{"seconds": N, "mode": "503" or "refuse"}`` |
| ``DELETE /_sandbox/outage`` | end the outage now (503 mode: "refuse" cannot be reached) |
| ``POST /_sandbox/revoke-tokens`` | ``{"revoked": N}`` |

With ``--workers`` > 1 each process has its own state and faults: these endpoints reach
whichever worker accepts the connection, so use several workers only for throughput runs.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from aiohttp import web
from pydantic import ValidationError

from consumer.testing.workfloplus.control_models import OutageRequest, Overlaps, RecordedRequest
from consumer.testing.workfloplus.faults import FaultConfig, Faults, OutageMode
from consumer.testing.workfloplus.state import SandboxState

PREFIX = "/_sandbox"


class Controlled(Protocol):
    """What the control routes drive: the running sandbox (``server.Sandbox``), seen through
    this protocol so the server imports the routes and the routes never import the server."""

    state: SandboxState
    faults: Faults

    async def reset(self) -> None: ...

    async def outage(self, seconds: float, mode: OutageMode = "503") -> None: ...

    async def end_outage(self) -> None: ...

    def revoke_tokens(self) -> int: ...


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(payload).encode(), content_type="application/json"
    )


def _not_found() -> web.Response:
    return _json({"error": "not_found"}, 404)


def add_control_routes(app: web.Application, sandbox: Controlled) -> None:
    """Register the table above on ``app``, each route handled by ``ControlRoutes``."""
    routes = ControlRoutes(sandbox)
    table = [
        ("GET", "/health", routes.health),
        ("POST", "/reset", routes.reset),
        ("GET", "/requests", routes.requests),
        ("GET", "/jobs", routes.jobs),
        ("GET", "/jobs/{client_job_id}", routes.job),
        ("GET", "/jobs/{client_job_id}/history", routes.history),
        ("GET", "/overlaps", routes.overlaps),
        ("GET", "/faults", routes.get_faults),
        ("PATCH", "/faults", routes.change_faults),
        ("PUT", "/faults", routes.change_faults),
        ("DELETE", "/faults", routes.clear_faults),
        ("POST", "/outage", routes.start_outage),
        ("DELETE", "/outage", routes.end_outage),
        ("POST", "/revoke-tokens", routes.revoke_tokens),
    ]
    for method, path, handler in table:
        app.router.add_route(method, PREFIX + path, handler)


class ControlRoutes:
    """The handlers of the ``/_sandbox`` routes, bound to one running sandbox."""

    def __init__(self, sandbox: Controlled) -> None:
        self._sandbox = sandbox

    async def health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def reset(self, request: web.Request) -> web.Response:
        await self._sandbox.reset()
        return _json({"reset": True})

    async def requests(self, request: web.Request) -> web.Response:
        client_job_id = request.query.get("client_job_id")
        path = request.query.get("path")
        items = [
            RecordedRequest.of(record).model_dump(mode="json")
            for record in list(self._sandbox.state.records)
            if (client_job_id is None or record.client_job_id == client_job_id)
            and (path is None or record.path == path)
        ]
        return _json(items)

    async def jobs(self, request: web.Request) -> web.Response:
        return _json({key: job.job_id for key, job in self._sandbox.state.jobs.items()})

    async def job(self, request: web.Request) -> web.Response:
        found = self._sandbox.state.jobs.get(request.match_info["client_job_id"])
        if found is None:
            return _not_found()
        return web.Response(body=found.response, content_type="application/json")

    async def history(self, request: web.Request) -> web.Response:
        found = self._sandbox.state.jobs.get(request.match_info["client_job_id"])
        if found is None:
            return _not_found()
        body = b"[" + b",".join(found.history) + b"]"
        return web.Response(body=body, content_type="application/json")

    async def overlaps(self, request: web.Request) -> web.Response:
        flight = self._sandbox.state.in_flight
        result = Overlaps(
            max=flight.max_overall, by_job=dict(flight.max_by_job), in_flight=dict(flight.current)
        )
        return _json(result.model_dump())

    async def get_faults(self, request: web.Request) -> web.Response:
        return _json(self._sandbox.faults.config.model_dump(mode="json"))

    async def change_faults(self, request: web.Request) -> web.Response:
        """PUT replaces every fault, PATCH changes the fields given."""
        faults = self._sandbox.faults
        try:
            payload = await request.json()
            if request.method == "PUT":
                config = faults.set(FaultConfig.model_validate(payload))
            else:
                config = faults.update(payload)
        except (ValueError, ValidationError) as exc:
            return _json({"error": "invalid_faults", "message": str(exc)}, 400)
        return _json(config.model_dump(mode="json"))

    async def clear_faults(self, request: web.Request) -> web.Response:
        self._sandbox.faults.clear()
        await self._sandbox.end_outage()
        return _json(self._sandbox.faults.config.model_dump(mode="json"))

    async def start_outage(self, request: web.Request) -> web.Response:
        try:
            outage = OutageRequest.model_validate_json(await request.read())
        except ValidationError as exc:
            return _json({"error": "invalid_outage", "message": str(exc)}, 400)
        await self._sandbox.outage(outage.seconds, outage.mode)
        return _json(outage.model_dump())

    async def end_outage(self, request: web.Request) -> web.Response:
        await self._sandbox.end_outage()
        return _json({"outage": False})

    async def revoke_tokens(self, request: web.Request) -> web.Response:
        return _json({"revoked": self._sandbox.revoke_tokens()})
