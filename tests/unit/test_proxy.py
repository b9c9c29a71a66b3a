"""The proxy to WorkfloPlus: which one a URL goes through, decided without I/O."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr, ValidationError
from structlog.testing import capture_logs

from consumer.config import GatewaySettings
from consumer.errors import ConfigError
from consumer.gateway.proxy import (
    bypassed,
    environment_proxies,
    gateway_proxies,
    proxy_for,
    proxy_kwargs,
)

GATEWAY = "https://gateway.workfloplus.com"
TOKENS = "https://accounts.workfloplus.com/connect/token"


def configured() -> GatewaySettings:
    """The gateway at ``GATEWAY`` with its tokens from ``TOKENS``, no proxy setting."""
    return GatewaySettings(
        base_url=GATEWAY, token_url=TOKENS, client_id="c", client_secret=SecretStr("s")
    )


class TestProxyFor:
    def test_no_proxy_anywhere_is_direct(self) -> None:
        assert proxy_for(GATEWAY, None, {}) is None
        assert proxy_kwargs(None) == {}

    def test_https_urls_take_https_proxy_and_http_ones_http_proxy(self) -> None:
        environment = {"HTTPS_PROXY": "http://tls-egress:3128", "HTTP_PROXY": "http://plain:8080"}
        assert str(proxy_for(GATEWAY, None, environment)) == "http://tls-egress:3128"
        assert str(proxy_for("http://sandbox:8080", None, environment)) == "http://plain:8080"

    def test_lower_case_wins_and_an_empty_value_is_none(self) -> None:
        """As curl and ``urllib.request.getproxies_environment``: ``https_proxy`` over
        ``HTTPS_PROXY``; a variable set empty names no proxy."""
        both = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"}
        assert str(proxy_for(GATEWAY, None, both)) == "http://lower:2"
        assert proxy_for(GATEWAY, None, {"HTTPS_PROXY": ""}) is None
        assert environment_proxies({"HTTPS_PROXY": "x", "no_proxy": "a"}) == {
            "https": "x",
            "no": "a",
        }

    def test_the_setting_overrides_the_environment_and_no_proxy(self) -> None:
        environment = {"HTTPS_PROXY": "http://env:1", "NO_PROXY": "workfloplus.com"}
        chosen = proxy_for(GATEWAY, SecretStr("http://chosen:3128"), environment)
        assert str(chosen) == "http://chosen:3128"
        assert proxy_for(GATEWAY, None, environment) is None
        assert proxy_for(GATEWAY, SecretStr(""), environment) is None  # set empty: unset

    def test_credentials_go_in_the_auth_and_nowhere_else(self) -> None:
        proxy = proxy_for(GATEWAY, SecretStr("http://svc:p%40ss-W0rd@egress:3128"), {})
        assert proxy is not None
        assert str(proxy) == "http://egress:3128"
        expected = "Basic " + base64.b64encode(b"svc:p@ss-W0rd").decode()
        assert proxy.request_kwargs() == {
            "proxy": proxy.url,
            "proxy_headers": {"Proxy-Authorization": expected},
        }
        assert "W0rd" not in repr(proxy)
        assert "W0rd" not in str(proxy.url)

    def test_a_bare_host_and_port_is_an_http_proxy(self) -> None:
        assert str(proxy_for(GATEWAY, None, {"HTTPS_PROXY": "egress:3128"})) == "http://egress:3128"

    def test_an_https_proxy_in_the_environment_is_a_config_error_without_its_password(
        self,
    ) -> None:
        """aiohttp cannot speak TLS to a proxy: said at start, naming the variables."""
        settings = configured()
        environment = {"HTTPS_PROXY": "https://svc:s3cr3t@egress:443"}
        with pytest.MonkeyPatch.context() as patch:
            for name, value in environment.items():
                patch.setenv(name, value)
            with pytest.raises(ConfigError) as raised:
                gateway_proxies(settings)
        assert "only http:// proxies" in str(raised.value)
        assert "HTTPS_PROXY" in str(raised.value)
        assert "s3cr3t" not in str(raised.value)

    def test_the_setting_refuses_an_https_proxy_at_load(self) -> None:
        with pytest.raises(ValidationError, match="must be an http:// proxy"):
            GatewaySettings(proxy=SecretStr("https://egress:443"))

    def test_the_route_is_logged_once_without_credentials(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("HTTPS_PROXY", "http://svc:s3cr3t@egress:3128")
        monkeypatch.setenv("NO_PROXY", "accounts.workfloplus.com")
        with capture_logs() as logs:
            gateway, tokens = gateway_proxies(configured())
        assert tokens is None
        assert str(gateway) == "http://egress:3128"
        assert logs == [
            {
                "event": "gateway_proxy",
                "gateway": "http://egress:3128",
                "token_endpoint": "direct",
                "log_level": "info",
            }
        ]


class TestNoProxy:
    @pytest.mark.parametrize(
        ("host", "no_proxy", "direct"),
        [
            ("gateway.workfloplus.com", "workfloplus.com", True),
            ("gateway.workfloplus.com", ".workfloplus.com", True),
            ("gateway.workfloplus.com", "WorkfloPlus.com:443", True),
            ("gateway.workfloplus.com", "other.com, gateway.workfloplus.com", True),
            ("gateway.workfloplus.com", "*", True),
            ("gateway.workfloplus.com", "plus.com", False),
            ("gateway.workfloplus.com", "", False),
            ("workfloplus.com", "gateway.workfloplus.com", False),
            ("10.0.0.5", "10.0.0.5", True),
            ("::1", "[::1]:8080", True),
            ("::1", "::1", True),
        ],
    )
    def test_hosts_and_domains(self, host: str, no_proxy: str, direct: bool) -> None:
        assert bypassed(host, no_proxy) is direct
