"""Running the sandbox: ``run_sandbox`` (in-process, async context manager) and ``Sandbox``.

``Sandbox`` owns the aiohttp runner and its listening site so that a "refuse" outage can close
the listening socket (clients get *connection refused*) and reopen it on the same port later.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from consumer.testing.workfloplus.api_routes import BASIC_SYNC_PATH, TOKEN_PATH, Api
from consumer.testing.workfloplus.control_routes import add_control_routes
from consumer.testing.workfloplus.faults import Faults, OutageMode
from consumer.testing.workfloplus.settings import SandboxSettings
from consumer.testing.workfloplus.state import SandboxState


class Sandbox:
    """A running sandbox. Tests may read and change ``state`` and ``faults`` directly."""

    def __init__(
        self, settings: SandboxSettings, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.settings = settings
        #: serve HTTPS with this context (tests of the consumer's gateway TLS); None: HTTP
        self._ssl_context = ssl_context
        self.state = SandboxState(
            signing_key=settings.signing_key,
            record_limit=settings.record_limit,
            history_limit=settings.history_limit,
        )
        self.faults = Faults()
        # Job documents can be several MiB (a job of thousands of steps); aiohttp's default
        # request limit is 1 MiB.
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        Api(settings, self.state, self.faults).add_routes(self.app)
        add_control_routes(self.app, self)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        self._site: web.TCPSite | None = None
        self._port = settings.port
        self._reopen: asyncio.TimerHandle | None = None

    @property
    def base_url(self) -> str:
        """``http(s)://host:port`` (no trailing slash); also the gateway and accounts host."""
        scheme = "http" if self._ssl_context is None else "https"
        return f"{scheme}://{self.settings.host}:{self._port}"

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    @property
    def basic_sync_url(self) -> str:
        return self.base_url + BASIC_SYNC_PATH

    async def start(self) -> None:
        await self._runner.setup()
        await self._listen()

    async def stop(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
        await self._runner.cleanup()

    async def _listen(self) -> None:
        site = web.TCPSite(
            self._runner,
            self.settings.host,
            self._port,
            reuse_address=True,
            reuse_port=self.settings.reuse_port or None,
            ssl_context=self._ssl_context,
        )
        await site.start()
        self._site = site
        self._port = site.port

    async def reset(self) -> None:
        """Forget jobs, recorded requests and overlaps, clear faults and end any outage."""
        self.state.reset()
        self.faults.clear()
        await self.end_outage()

    async def outage(self, seconds: float, mode: OutageMode = "503") -> None:
        """Be down for ``seconds``: answer 503 (with ``Retry-After``), or in ``"refuse"`` mode
        close the listening socket so connections are refused, reopening it afterwards."""
        self.faults.outage_until = time.monotonic() + seconds
        self.faults.outage_mode = mode
        if self._reopen is not None:
            self._reopen.cancel()
        loop = asyncio.get_running_loop()
        self._reopen = loop.call_later(seconds, self._end_outage_later)
        if mode == "refuse" and self._site is not None:
            site, self._site = self._site, None
            await site.stop()

    async def end_outage(self) -> None:
        """End an outage now (the listening socket is open again when this returns)."""
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        self.faults.outage_until = 0.0
        if self._site is None:
            await self._listen()

    def _end_outage_later(self) -> None:
        self._reopen = None
        task = asyncio.get_running_loop().create_task(self.end_outage())
        _background.add(task)
        task.add_done_callback(_background.discard)

    def revoke_tokens(self) -> int:
        """Invalidate every issued token; returns how many there were."""
        return self.state.revoke_tokens()


_background: set[asyncio.Task[None]] = set()


@asynccontextmanager
async def run_sandbox(
    settings: SandboxSettings | None = None, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Sandbox]:
    """Run a sandbox in this event loop (on a free port by default) for the ``with`` block;
    over HTTPS when given a server ``ssl_context``.

    >>> async with run_sandbox() as sandbox:
    ...     sandbox.faults.update({"error_rate": 0.5})
    ...     print(sandbox.base_url, sandbox.token_url)
    """
    sandbox = Sandbox(settings or SandboxSettings(), ssl_context)
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.stop()
