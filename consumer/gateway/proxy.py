"""The HTTP proxy towards WorkfloPlus, when the network has one: decided once per URL at start.

Behind a corporate proxy, WorkfloPlus and its identity provider are only reached through it.
``BASICSYNC_GATEWAY__PROXY`` names it; unset, the environment's ``HTTPS_PROXY`` / ``HTTP_PROXY``
(lower case first, as curl and the standard library read them) name it for ``https`` and
``http`` URLs, and ``NO_PROXY`` lists the hosts reached directly. aiohttp's own ``trust_env``
would do the same, but it looks the proxy and ``~/.netrc`` up again in a thread on every
request; the answer does not change while the process runs, so it is taken once.

Credentials in the proxy URL (``http://user:password@proxy:3128``) go in the
``Proxy-Authorization`` header and nowhere else: never in a log line, an error or a ``repr``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import SecretStr
from yarl import URL

from consumer.config import GatewaySettings, proxy_environment
from consumer.errors import ConfigError

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Proxy:
    """Where requests to one URL go: ``url`` without its credentials, and those apart."""

    url: URL
    #: ``Proxy-Authorization``, when the proxy URL carried credentials
    authorization: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return str(self.url)

    def request_kwargs(self) -> dict[str, Any]:
        """aiohttp's ``proxy`` and ``proxy_headers`` arguments of a request."""
        if self.authorization is None:
            return {"proxy": self.url}
        return {"proxy": self.url, "proxy_headers": {"Proxy-Authorization": self.authorization}}


def gateway_proxies(settings: GatewaySettings) -> tuple[Proxy | None, Proxy | None]:
    """The proxies to the gateway and to its token endpoint (both URLs set), logged once when
    there is one; a proxy variable that cannot be used is a ConfigError naming the variables."""
    assert settings.base_url is not None
    assert settings.token_url is not None
    urls, environment = (settings.base_url, settings.token_url), proxy_environment()
    try:
        proxies = tuple(proxy_for(url, settings.proxy, environment) for url in urls)
    except ValueError as exc:
        raise ConfigError(f"BASICSYNC_GATEWAY__PROXY or HTTPS_PROXY / HTTP_PROXY: {exc}") from None
    gateway_proxy, token_proxy = proxies
    if gateway_proxy is not None or token_proxy is not None:
        log.info(
            "gateway_proxy",
            gateway=str(gateway_proxy or "direct"),
            token_endpoint=str(token_proxy or "direct"),
        )
    return gateway_proxy, token_proxy


def proxy_for(
    url: str, configured: SecretStr | None, environment: Mapping[str, str]
) -> Proxy | None:
    """The proxy requests to ``url`` go through, ``None`` for a direct connection."""
    if configured is not None and configured.get_secret_value():
        return _parsed(configured.get_secret_value())
    proxies = environment_proxies(environment)
    target = URL(url)
    if target.host is None or bypassed(target.host, proxies.get("no", "")):
        return None
    named = proxies.get(target.scheme)
    return _parsed(named) if named else None


def environment_proxies(environment: Mapping[str, str]) -> dict[str, str]:
    """``{scheme: proxy URL, "no": hosts}`` from ``*_proxy`` variables, lower case winning
    (``urllib.request.getproxies_environment``'s rule, on the mapping given)."""
    lower = {k.lower(): v for k, v in environment.items() if k.isupper() and k.endswith("_PROXY")}
    lower |= {k: v for k, v in environment.items() if k.islower() and k.endswith("_proxy")}
    return {name.removesuffix("_proxy"): value for name, value in lower.items() if value}


def bypassed(host: str, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` sends ``host`` direct: ``*``, the host itself, or a domain it is
    in (``example.com`` and ``.example.com`` both cover ``api.example.com``), as curl and the
    standard library read it (ports ignored, no case)."""
    host = host.lower().rstrip(".")
    for entry in no_proxy.lower().split(","):
        name = entry.strip()
        if name.startswith("[") and "]" in name:
            name = name[1 : name.index("]")]  # [::1]:8080
        elif name.count(":") == 1:
            name = name.split(":")[0]  # host:port
        name = name.lstrip(".").rstrip(".")
        if name == "*" or (name and (host == name or host.endswith("." + name))):
            return True
    return False


def proxy_kwargs(proxy: Proxy | None) -> dict[str, Any]:
    """The request arguments for ``proxy``: none for a direct connection."""
    return {} if proxy is None else proxy.request_kwargs()


def _parsed(value: str) -> Proxy:
    """A proxy URL split from its credentials; a bare ``host:port`` means ``http://``."""
    proxy = URL(value if "://" in value else f"http://{value}")
    if proxy.scheme != "http":
        # Checked at load for the setting; an environment variable is only checked here.
        raise ValueError(
            f"proxy {proxy.with_user(None)}: only http:// proxies are supported (CONNECT "
            "carries https through them)"
        )
    authorization = None
    if proxy.user is not None:
        credentials = f"{proxy.user}:{proxy.password or ''}".encode()
        authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
    return Proxy(proxy.with_user(None), authorization)
