"""Error messages for the operator commands that keep the cause of a Kafka failure.

aiokafka's ``KafkaConnectionError("Unable to bootstrap from [...]")`` does not say why: the
reason (``Name or service not known``, ``Connection refused``) went to a log line and is not
chained to the exception. :func:`explain` adds it back by resolving and dialling each bootstrap
server once, so ``check``, ``demo``, ``redrive`` and ``inspect`` print one line that says what
is wrong. Only used after a failure, never on the consumer's hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Sequence

from aiokafka.errors import KafkaConnectionError

#: How long one probe of a bootstrap server may take.
PROBE_TIMEOUT_S = 3.0


def describe(exc: BaseException) -> str:
    """``Type: message``, then each chained cause, without repeating the type name (aiokafka
    errors already start their message with it)."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = type(current).__name__
        text = str(current).removeprefix(f"{name}: ").strip()
        parts.append(f"{name}: {text}" if text else name)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return "; caused by ".join(parts)


async def unreachable(servers: Sequence[str], timeout_s: float = PROBE_TIMEOUT_S) -> list[str]:
    """For each ``host:port`` that cannot be resolved or connected to, why not."""
    reasons = await asyncio.gather(*(_probe(server, timeout_s) for server in servers))
    return [
        f"{server}: {reason}" for server, reason in zip(servers, reasons, strict=True) if reason
    ]


async def explain(exc: BaseException, servers: Sequence[str] | None) -> str:
    """:func:`describe`, plus why the bootstrap servers are unreachable when that is the
    failure (a connection error, or a timeout before any broker answered)."""
    text = describe(exc)
    if servers and isinstance(exc, KafkaConnectionError | TimeoutError | OSError):
        reasons = await unreachable(servers)
        if reasons:
            text += " (" + "; ".join(reasons) + ")"
    return text


async def _probe(server: str, timeout_s: float) -> str | None:
    host, _, port_text = server.rpartition(":")
    host = host.strip("[]") or "localhost"
    try:
        port = int(port_text)
    except ValueError:
        return f"no port in {server!r}"
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout_s)
    except TimeoutError:
        return f"name lookup of {host} timed out"
    except OSError as error:  # socket.gaierror: Name or service not known, ...
        return _reason(error)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as error:
        return _reason(error)
    writer.close()
    with contextlib.suppress(OSError):  # it answered; how the close went does not matter
        await writer.wait_closed()
    return None


def _reason(error: OSError) -> str:
    """``Name or service not known``, ``Connection refused``: the system's words."""
    if isinstance(error, socket.gaierror) or not error.errno:
        return error.strerror or str(error)
    return os.strerror(error.errno)
