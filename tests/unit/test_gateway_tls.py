"""What the aiohttp connector verifies WorkfloPlus's certificate with (``gateway_ssl``)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from consumer.config import GatewaySettings, KafkaSettings, SecurityProtocol
from consumer.errors import ConfigError
from consumer.gateway.tls import gateway_ssl
from consumer.kafka.connection import client_kwargs
from tests.fixtures.certs import CertificateAuthority


class TestGatewaySsl:
    def test_default_verifies_with_the_system_cas(self) -> None:
        """No CA file: aiohttp's default verification (True)."""
        assert gateway_ssl(GatewaySettings()) is True

    def test_verification_off_is_false(self) -> None:
        """verify_tls=false turns verification off (development only)."""
        assert gateway_ssl(GatewaySettings(verify_tls=False)) is False

    def test_a_ca_bundle_gives_a_verifying_context_that_trusts_it(self, tmp_path: Path) -> None:
        """ssl_cafile gives a context that requires a certificate signed by that CA."""
        ca = tmp_path / "ca.crt"
        ca.write_bytes(CertificateAuthority("test").cert_pem)
        context = gateway_ssl(GatewaySettings(ssl_cafile=ca))
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname
        assert len(context.get_ca_certs()) == 1

    def test_an_unreadable_ca_file_is_a_config_error(self, tmp_path: Path) -> None:
        """A missing or non-PEM CA file is reported naming the variable."""
        with pytest.raises(ConfigError, match="BASICSYNC_GATEWAY__SSL_CAFILE"):
            gateway_ssl(GatewaySettings(ssl_cafile=tmp_path / "missing.crt"))
        junk = tmp_path / "junk.crt"
        junk.write_text("not a certificate")
        with pytest.raises(ConfigError, match="BASICSYNC_GATEWAY__SSL_CAFILE"):
            gateway_ssl(GatewaySettings(ssl_cafile=junk))

    def test_a_ca_file_without_verification_is_rejected(self, tmp_path: Path) -> None:
        """ssl_cafile with verify_tls=false is contradictory and refused at start."""
        with pytest.raises(ValueError, match="verify_tls is false"):
            GatewaySettings(ssl_cafile=tmp_path / "ca.crt", verify_tls=False)


class TestKafkaTlsFiles:
    def test_an_unreadable_kafka_tls_file_is_a_config_error(self, tmp_path: Path) -> None:
        """A Kafka CA, certificate or key file that cannot be read names its variable."""
        settings = KafkaSettings(
            security_protocol=SecurityProtocol.SSL, ssl_cafile=tmp_path / "nope.crt"
        )
        with pytest.raises(ConfigError, match="BASICSYNC_KAFKA__SSL_CAFILE"):
            client_kwargs(settings, ["b:9093"])
