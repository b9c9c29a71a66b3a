"""``SandboxControl``: drive a sandbox's ``/_sandbox`` API over HTTP from tests.

It works the same against an in-process sandbox (``run_sandbox``) and one running in another
process (``basicsync sandbox``)::

    async with SandboxControl("http://127.0.0.1:8081") as control:
        await control.set_faults(error_rate=0.2, error_statuses=[502, 503])
        ...
        assert (await control.overlaps()).max <= 1
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import aiohttp

from consumer.testing.workfloplus.control_models import Overlaps, RecordedRequest
from consumer.testing.workfloplus.faults import FaultConfig, OutageMode


class SandboxControlError(RuntimeError):
    """The sandbox answered a control call with an error status."""


class SandboxControl:
    """HTTP client for the inspection and fault endpoints of one sandbox.

    Pass ``session`` to share an existing ``aiohttp.ClientSession``; otherwise the control
    opens its own, closed by ``aclose()`` or by leaving ``async with``.
    """

    def __init__(self, base_url: str, session: aiohttp.ClientSession | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self, method: str, path: str, json: Any = None, params: dict[str, str] | None = None
    ) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = f"{self.base_url}/_sandbox{path}"
        async with self._session.request(method, url, json=json, params=params or {}) as response:
            try:
                payload = await response.json(content_type=None)
            except ValueError:
                payload = await response.text()
            if response.status == 404 and method == "GET" and isinstance(payload, dict):
                return None  # a job the sandbox does not know (not an unknown route)
            if response.status >= 400:
                raise SandboxControlError(f"{method} {path}: {response.status} {payload}")
            return payload

    async def health(self) -> bool:
        payload: dict[str, str] = await self._call("GET", "/health")
        return payload["status"] == "ok"

    async def reset(self) -> None:
        """Forget jobs, requests and overlaps, clear faults, end any outage (tokens stay)."""
        await self._call("POST", "/reset")

    async def faults(self) -> FaultConfig:
        return FaultConfig.model_validate(await self._call("GET", "/faults"))

    async def set_faults(self, config: FaultConfig | None = None, **changes: Any) -> FaultConfig:
        """Replace all faults with ``config``, or change only the ``FaultConfig`` fields given
        as keywords, e.g. ``set_faults(latency={"kind": "fixed", "ms": 50})``."""
        if config is not None:
            payload = await self._call("PUT", "/faults", config.model_dump(mode="json"))
        else:
            payload = await self._call(
                "PATCH",
                "/faults",
                FaultConfig.model_validate(changes).model_dump(mode="json", include=set(changes)),
            )
        return FaultConfig.model_validate(payload)

    async def clear_faults(self) -> None:
        """No faults and no outage."""
        await self._call("DELETE", "/faults")

    async def outage(self, seconds: float, mode: OutageMode = "503") -> None:
        """Be down for ``seconds``: 503 answers, or ``"refuse"``d connections (this client
        cannot reach the sandbox either until it is over)."""
        await self._call("POST", "/outage", {"seconds": seconds, "mode": mode})

    async def end_outage(self) -> None:
        await self._call("DELETE", "/outage")

    async def revoke_tokens(self) -> int:
        """Invalidate every token issued so far; returns how many."""
        revoked: int = (await self._call("POST", "/revoke-tokens"))["revoked"]
        return revoked

    async def requests(
        self, client_job_id: str | None = None, path: str | None = None
    ) -> list[RecordedRequest]:
        """Recorded WorkfloPlus API requests, oldest first, optionally filtered."""
        params = {"client_job_id": client_job_id, "path": path}
        chosen = {key: value for key, value in params.items() if value is not None}
        payload = await self._call("GET", "/requests", params=chosen)
        return [RecordedRequest.model_validate(item) for item in payload]

    async def jobs(self) -> dict[str, str]:
        """``{clientJobId: jobId}`` of every stored job."""
        result: dict[str, str] = await self._call("GET", "/jobs")
        return result

    async def job(self, client_job_id: str) -> dict[str, Any] | None:
        """The stored job (the accepted document plus ``jobId``), or ``None``."""
        result: dict[str, Any] | None = await self._call("GET", f"/jobs/{client_job_id}")
        return result

    async def history(self, client_job_id: str) -> list[dict[str, Any]]:
        """Every body accepted for the job, oldest first (empty when unknown)."""
        result: list[dict[str, Any]] | None = await self._call(
            "GET", f"/jobs/{client_job_id}/history"
        )
        return result or []

    async def overlaps(self) -> Overlaps:
        return Overlaps.model_validate(await self._call("GET", "/overlaps"))
