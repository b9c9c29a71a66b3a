"""Why a connection to Kafka failed, in words for an operator: the one place that says it.

aiokafka's ``KafkaConnectionError("Unable to bootstrap from [...]")`` does not say why: the
reason went to a log line and is not chained to the exception. Two probes add it back:

- :func:`unreachable` resolves and dials each bootstrap server once (``Name or service not
  known``, ``Connection refused``); :func:`explain` appends that to the error's description,
  so ``check``, ``demo``, ``redrive`` and ``inspect`` print one line that says what is wrong,
  and the consumer's start-up wait logs it.
- :func:`security_problem` connects once more the way the clients do and words a refused
  security (SASL credentials, certificates, TLS versus plaintext) as a fatal
  :class:`~consumer.errors.KafkaSecurityError` naming the settings to check.

Only used after a failure, never on the consumer's hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Sequence

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError, SaslAuthenticationFailed

from consumer.config import KafkaSettings
from consumer.errors import KafkaSecurityError
from consumer.kafka.connection import client_kwargs

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
        if isinstance(current, asyncio.CancelledError):
            break  # how ``asyncio.timeout`` ended the wait: the TimeoutError says it all
    return "; caused by ".join(parts)


async def unreachable(servers: Sequence[str], timeout_s: float = PROBE_TIMEOUT_S) -> list[str]:
    """For each ``host:port`` that cannot be resolved or connected to, why not."""
    reasons = await asyncio.gather(*(_probe(server, timeout_s) for server in servers))
    return [
        f"{server}: {reason}" for server, reason in zip(servers, reasons, strict=True) if reason
    ]


#: Why a connection failed when every bootstrap server accepts TCP connections.
NO_KAFKA_ANSWER = (
    "TCP connect works, but Kafka did not answer: a broker that hangs, or a port that is not "
    "a Kafka listener"
)


async def explain(exc: BaseException, servers: Sequence[str] | None) -> str:
    """:func:`describe`, plus why the bootstrap servers are unreachable when that is the
    failure (a connection error, or a timeout before any broker answered), or
    :data:`NO_KAFKA_ANSWER` when each accepts a TCP connection."""
    text = describe(exc)
    if servers and isinstance(exc, KafkaConnectionError | TimeoutError | OSError):
        text += f" ({await why_no_answer(servers)})"
    return text


async def why_no_answer(servers: Sequence[str]) -> str:
    """Why Kafka at ``servers`` did not answer: each one unreachable and why, or
    :data:`NO_KAFKA_ANSWER` when every one accepts a TCP connection."""
    return "; ".join(await unreachable(servers)) or NO_KAFKA_ANSWER


async def security_problem(
    settings: KafkaSettings, bootstrap_servers: list[str], timeout_s: float = 10.0
) -> KafkaSecurityError | None:
    """Why the brokers refuse our connection's security, or None when that is not the cause.

    aiokafka reports a failed bootstrap as "Unable to bootstrap" and only logs the reason, so
    this connects once more to each bootstrap server the way its clients do and words the
    first security failure for an operator: the settings to check, never a secret.
    """
    kwargs = client_kwargs(settings, bootstrap_servers)
    del kwargs["bootstrap_servers"]
    for server in bootstrap_servers:
        host, _, port = server.rpartition(":")
        try:
            async with asyncio.timeout(timeout_s):
                connection = await create_conn(
                    host, int(port), request_timeout_ms=int(timeout_s * 1000), **kwargs
                )
        except (OSError, KafkaError, TimeoutError, asyncio.IncompleteReadError) as exc:
            cause = _security_cause(settings, exc)
            if cause is not None:
                return KafkaSecurityError(f"Kafka {server} refused the connection: {cause}")
            continue
        connection.close()
        return None
    return None


def _security_cause(settings: KafkaSettings, exc: BaseException) -> str | None:
    protocol = settings.security_protocol.value
    reason = exc.__cause__ if isinstance(exc, KafkaConnectionError) and exc.__cause__ else exc
    if isinstance(exc, SaslAuthenticationFailed):
        return (
            f"SASL {settings.sasl_mechanism} authentication failed for user "
            f"{settings.sasl_username!r} ({exc}); check BASICSYNC_KAFKA__SASL_USERNAME, "
            "BASICSYNC_KAFKA__SASL_PASSWORD and BASICSYNC_KAFKA__SASL_MECHANISM"
        )
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (
            f"the broker's certificate is not trusted ({reason.verify_message}); check "
            "BASICSYNC_KAFKA__SSL_CAFILE (the CA that signed the brokers' certificates)"
        )
    if isinstance(reason, ssl.SSLError):
        alert = (reason.reason or str(reason)).lower().replace("_", " ")
        if "certificate" in alert:
            return (
                f"the broker rejected our client certificate ({alert}); check that "
                "BASICSYNC_KAFKA__SSL_CERTFILE and BASICSYNC_KAFKA__SSL_KEYFILE are set, "
                "signed by a CA the broker trusts, and not expired"
            )
        return f"the TLS handshake failed ({alert}); check BASICSYNC_KAFKA__SECURITY_PROTOCOL"
    closed = isinstance(reason, asyncio.IncompleteReadError | ConnectionResetError)
    if closed and protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
        return (
            f"it closed the connection at once: the listener probably expects TLS, but "
            f"BASICSYNC_KAFKA__SECURITY_PROTOCOL is {protocol} (SSL or SASL_SSL?)"
        )
    if closed:
        return (
            f"it closed the connection during the TLS handshake: the listener probably "
            f"expects plaintext, but BASICSYNC_KAFKA__SECURITY_PROTOCOL is {protocol}"
        )
    return None


async def _probe(server: str, timeout_s: float) -> str | None:
    host, _, port_text = server.rpartition(":")
    host = host.strip("[]") or "localhost"
    try:
        port = int(port_text)
    except ValueError:
        return f"no port in {server!r}"
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        return f"name lookup of {host} timed out"
    except OSError as error:  # socket.gaierror: Name or service not known, ...
        return _reason(error)
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
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
