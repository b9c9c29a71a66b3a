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
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from consumer.sandbox.faults import FaultConfig
from consumer.sandbox.models import OutageRequest, Overlaps, RecordedRequest

if TYPE_CHECKING:
    from consumer.sandbox.server import Sandbox

PREFIX = "/_sandbox"


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(payload).encode(), content_type="application/json"
    )


def add_control_routes(app: web.Application, sandbox: Sandbox) -> None:
    state, faults = sandbox.state, sandbox.faults

    async def health(request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def reset(request: web.Request) -> web.Response:
        await sandbox.reset()
        return _json({"reset": True})

    async def requests(request: web.Request) -> web.Response:
        client_job_id = request.query.get("client_job_id")
        path = request.query.get("path")
        items = [
            RecordedRequest.of(record).model_dump(mode="json")
            for record in list(state.records)
            if (client_job_id is None or record.client_job_id == client_job_id)
            and (path is None or record.path == path)
        ]
        return _json(items)

    async def jobs(request: web.Request) -> web.Response:
        return _json({key: job.job_id for key, job in state.jobs.items()})

    async def job(request: web.Request) -> web.Response:
        found = state.jobs.get(request.match_info["client_job_id"])
        if found is None:
            return _json({"error": "not_found"}, 404)
        return web.Response(body=found.response, content_type="application/json")

    async def history(request: web.Request) -> web.Response:
        found = state.jobs.get(request.match_info["client_job_id"])
        if found is None:
            return _json({"error": "not_found"}, 404)
        body = b"[" + b",".join(found.history) + b"]"
        return web.Response(body=body, content_type="application/json")

    async def overlaps(request: web.Request) -> web.Response:
        flight = state.in_flight
        result = Overlaps(
            max=flight.max_overall, by_job=dict(flight.max_by_job), in_flight=dict(flight.current)
        )
        return _json(result.model_dump())

    async def get_faults(request: web.Request) -> web.Response:
        return _json(faults.config.model_dump(mode="json"))

    async def change_faults(request: web.Request) -> web.Response:
        try:
            payload = await request.json()
            if request.method == "PUT":
                config = faults.set(FaultConfig.model_validate(payload))
            else:
                config = faults.update(payload)
        except (ValueError, ValidationError) as exc:
            return _json({"error": "invalid_faults", "message": str(exc)}, 400)
        return _json(config.model_dump(mode="json"))

    async def clear_faults(request: web.Request) -> web.Response:
        faults.clear()
        await sandbox.end_outage()
        return _json(faults.config.model_dump(mode="json"))

    async def start_outage(request: web.Request) -> web.Response:
        try:
            outage = OutageRequest.model_validate_json(await request.read())
        except ValidationError as exc:
            return _json({"error": "invalid_outage", "message": str(exc)}, 400)
        await sandbox.outage(outage.seconds, outage.mode)
        return _json(outage.model_dump())

    async def end_outage(request: web.Request) -> web.Response:
        await sandbox.end_outage()
        return _json({"outage": False})

    async def revoke(request: web.Request) -> web.Response:
        return _json({"revoked": sandbox.revoke_tokens()})

    router = app.router
    router.add_get(f"{PREFIX}/health", health)
    router.add_post(f"{PREFIX}/reset", reset)
    router.add_get(f"{PREFIX}/requests", requests)
    router.add_get(f"{PREFIX}/jobs", jobs)
    router.add_get(f"{PREFIX}/jobs/{{client_job_id}}", job)
    router.add_get(f"{PREFIX}/jobs/{{client_job_id}}/history", history)
    router.add_get(f"{PREFIX}/overlaps", overlaps)
    router.add_get(f"{PREFIX}/faults", get_faults)
    router.add_patch(f"{PREFIX}/faults", change_faults)
    router.add_put(f"{PREFIX}/faults", change_faults)
    router.add_delete(f"{PREFIX}/faults", clear_faults)
    router.add_post(f"{PREFIX}/outage", start_outage)
    router.add_delete(f"{PREFIX}/outage", end_outage)
    router.add_post(f"{PREFIX}/revoke-tokens", revoke)
