"""Turns ``KafkaSettings`` into the keyword arguments every aiokafka client shares, and says
why the brokers refuse a connection's security when they do."""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError, SaslAuthenticationFailed
from aiokafka.helpers import create_ssl_context

from consumer.config import KafkaSettings
from consumer.errors import ConfigError, KafkaSecurityError


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
    """Trust ``ssl_cafile`` (else the system's CAs); present the client certificate if set.

    A file that cannot be read or parsed is a configuration error naming the setting; the
    message never contains a key (``ssl`` reports only what it failed on).
    """
    if settings.ssl_keyfile is not None and settings.ssl_certfile is None:
        raise ConfigError(
            "BASICSYNC_KAFKA__SSL_KEYFILE is set without BASICSYNC_KAFKA__SSL_CERTFILE"
        )
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(settings, name)
        if path is not None and not os.access(path, os.R_OK):
            raise ConfigError(f"BASICSYNC_KAFKA__{name.upper()}: cannot read {path}")
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
            certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
            keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "BASICSYNC_KAFKA__SSL_CAFILE, _CERTFILE or _KEYFILE: cannot load the TLS files "
            f"({type(exc).__name__}: {exc})"
        ) from None
    return context


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
            connection = await asyncio.wait_for(
                create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000), **kwargs),
                timeout_s,
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
