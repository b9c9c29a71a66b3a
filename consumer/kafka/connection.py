"""Turns ``KafkaSettings`` into the keyword arguments every aiokafka client shares."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context

from consumer.config import KafkaSettings


def client_kwargs(settings: KafkaSettings, bootstrap_servers: list[str]) -> dict[str, Any]:
    """Connection and security options; secrets leave their ``SecretStr`` only here."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol.value,
    }
    if settings.security_protocol.endswith("SSL"):
        kwargs["ssl_context"] = _ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        assert settings.sasl_mechanism is not None  # enforced by KafkaSettings
        assert settings.sasl_password is not None
        kwargs["sasl_mechanism"] = settings.sasl_mechanism.value
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return kwargs


def _ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    context: ssl.SSLContext = create_ssl_context(
        cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
        certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
        keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
    )
    return context


async def describe_unreachable(servers: list[str], timeout_s: float = 3.0) -> str:
    """Why ``servers`` cannot be reached, in the operating system's words, from a TCP connect.

    aiokafka reports an unreachable cluster as "Unable to bootstrap from [...]" and keeps the
    cause ("Name or service not known", "Connection refused") to its own debug log.
    """
    causes = []
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host or server, int(port) if port.isdigit() else 9092),
                timeout_s,
            )
        except TimeoutError:
            causes.append(f"{server}: no answer within {timeout_s:g}s")
        except OSError as exc:
            causes.append(f"{server}: {_os_reason(exc)}")
        else:
            writer.close()
            causes.append(f"{server}: TCP connect works, the Kafka handshake failed")
    return "; ".join(causes)


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return exc.strerror or str(exc)
    if exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__
