"""A basicSync request body that refuses to leave after its send deadline.

The scheduler commits a job's ``sending_since`` mark, and its request must start within
``send_within`` of it: the partition's next owner reads the mark and posts the job again
``in_doubt_window`` after it, trusting that the old request can no longer land. A deadline
checked before ``session.post`` does not keep that promise. Between that check and the socket
lie a connection taken from the pool or opened (TCP, TLS, a proxy's tunnel) and aiohttp's
separate body-writer task; a process frozen among them (SIGSTOP, a paused VM, a member that
missed a rebalance) wakes with that task ready to run, and the event loop runs it before the
request's timeout timer: the old document reaches WorkfloPlus after the newer one the next owner
posted. So the deadline is checked here, in the very step that hands the body to the transport.
Recent aiohttp holds the request's headers back and writes them with the body, so no byte of a
refused request leaves; headers sent ahead of it (older aiohttp) are a request without its body,
which no server can apply.

The body also says whether it was handed over at all: a request that failed before that point
(a timeout while connecting, say) was never sent and is not in doubt, once the body is sealed
so that nothing hands it over later.

What no client can close: a process frozen between this check and the ``send`` system call
(microseconds), or while the kernel has not yet taken all of a body larger than the socket's
send buffer (the rest leaves from aiohttp's buffer when the process wakes).
"""

from __future__ import annotations

import time

from aiohttp import BytesPayload
from aiohttp.abc import AbstractStreamWriter


class SendDeadlinePassed(Exception):
    """Raised into aiohttp's body writer: the request is abandoned before any byte leaves."""


class TimelyBody(BytesPayload):
    """JSON bytes sent only while ``time.monotonic() <= send_by`` (always, when ``None``)."""

    def __init__(self, body: bytes, send_by: float | None) -> None:
        super().__init__(body, content_type="application/json")
        self._send_by = send_by
        #: the deadline had passed when aiohttp came to write the body: nothing was sent
        self.refused = False
        #: the body went to the transport: WorkfloPlus may have it, whatever happens next
        self.handed_over = False
        self._sealed = False

    def seal(self) -> None:
        """The outcome is decided: from now on the body is refused, never handed over."""
        self._sealed = True

    async def write(self, writer: AbstractStreamWriter) -> None:
        self._hand_over()
        await super().write(writer)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        self._hand_over()
        await super().write_with_length(writer, content_length)

    def _hand_over(self) -> None:
        if self._sealed or (self._send_by is not None and time.monotonic() > self._send_by):
            self.refused = True
            raise SendDeadlinePassed
        self.handed_over = True
