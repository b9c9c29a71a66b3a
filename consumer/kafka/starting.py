"""Starting an aiokafka client so that a cancelled start leaves no connection open.

aiokafka's ``AIOKafkaClient.bootstrap`` holds its bootstrap connection in a local variable
while it asks for the cluster's metadata. Cancelled at that moment (a stop during start-up, a
timeout around a start, a revocation during a restore), the connection is closed by nothing:
``stop()`` closes only the connections the client keeps, and the orphan lingers until the
garbage collector reports it as "Unclosed AIOKafkaConnection". A start is therefore let finish
for a moment after a cancellation, so that ``stop()`` finds every connection it made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from contextlib import suppress

#: How long a cancelled start may go on to finish. A broker that answers does so in
#: milliseconds; one that hangs is not waited for longer than this (its socket is then left to
#: the garbage collector, as aiokafka leaves it), so a stop is never held up by more.
START_GRACE_S = 1.0


async def start_client(start: Awaitable[None], grace_s: float = START_GRACE_S) -> None:
    """Await a client's ``start()``; cancelled, give it ``grace_s`` to finish, then cancel it
    and re-raise. The caller stops the client after a failed or cancelled start, as before."""
    starting = asyncio.ensure_future(start)
    try:
        await asyncio.shield(starting)
    except asyncio.CancelledError:
        try:
            await asyncio.wait({starting}, timeout=grace_s)
        finally:
            starting.cancel()
            # Unwound before the caller stops the client; its outcome is no longer wanted
            # (the cancellation is what the caller hears).
            with suppress(Exception, asyncio.CancelledError):
                await starting
        raise
