"""Turns ``KafkaSettings`` into the keyword arguments every aiokafka client shares.

Why a connection fails (unreachable, or its security refused) is ``consumer.kafka.diagnose``'s.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context

from consumer.config import KafkaSettings
from consumer.errors import ConfigError


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
