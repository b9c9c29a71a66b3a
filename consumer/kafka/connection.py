"""Turns ``KafkaSettings`` into the keyword arguments every aiokafka client shares."""

from __future__ import annotations

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
