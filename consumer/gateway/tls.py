"""TLS towards WorkfloPlus: what the aiohttp connector verifies the gateway's certificate with.

The system's CAs by default; ``BASICSYNC_GATEWAY__SSL_CAFILE`` replaces them with a CA bundle (a
private CA, or a TLS-inspecting proxy's); ``BASICSYNC_GATEWAY__VERIFY_TLS=false`` turns
verification off (development only). A CA file that cannot be read is a configuration error,
found when the connector is built, at start.
"""

from __future__ import annotations

import ssl

from consumer.config import GatewaySettings
from consumer.errors import ConfigError


def gateway_ssl(settings: GatewaySettings) -> ssl.SSLContext | bool:
    """The ``ssl`` argument of ``aiohttp.TCPConnector`` for ``settings``."""
    if not settings.verify_tls:
        return False
    if settings.ssl_cafile is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(settings.ssl_cafile))
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"BASICSYNC_GATEWAY__SSL_CAFILE: cannot load {settings.ssl_cafile}: {reason}"
        ) from None
