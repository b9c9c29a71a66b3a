"""Kafka connection settings become the aiokafka keyword arguments they mean."""

from __future__ import annotations

import ssl

from pydantic import SecretStr

from consumer.config import KafkaSettings, SaslMechanism, SecurityProtocol
from consumer.kafka.connection import client_kwargs


class TestClientKwargs:
    def test_plaintext_has_no_tls_or_sasl(self) -> None:
        """The default talks PLAINTEXT and passes no security options."""
        kwargs = client_kwargs(KafkaSettings(), ["b:9092"])
        assert kwargs["security_protocol"] == "PLAINTEXT"
        assert kwargs["bootstrap_servers"] == ["b:9092"]
        assert "ssl_context" not in kwargs
        assert "sasl_mechanism" not in kwargs

    def test_sasl_ssl_scram_passes_mechanism_credentials_and_a_tls_context(self) -> None:
        """SASL_SSL with SCRAM-SHA-512 gives aiokafka the mechanism, the user, the password
        (revealed only here) and a verifying TLS context."""
        settings = KafkaSettings(
            security_protocol=SecurityProtocol.SASL_SSL,
            sasl_mechanism=SaslMechanism.SCRAM_SHA_512,
            sasl_username="svc",
            sasl_password=SecretStr("pw-123"),
        )
        kwargs = client_kwargs(settings, ["b:9093"])
        assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
        assert kwargs["sasl_plain_username"] == "svc"
        assert kwargs["sasl_plain_password"] == "pw-123"
        context = kwargs["ssl_context"]
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert "pw-123" not in repr(settings)

    def test_sasl_plain_without_tls_has_no_tls_context(self) -> None:
        """SASL_PLAINTEXT with PLAIN sends credentials but builds no TLS context."""
        settings = KafkaSettings(
            security_protocol=SecurityProtocol.SASL_PLAINTEXT,
            sasl_mechanism=SaslMechanism.PLAIN,
            sasl_username="svc",
            sasl_password=SecretStr("pw"),
        )
        kwargs = client_kwargs(settings, ["b:9092"])
        assert kwargs["sasl_mechanism"] == "PLAIN"
        assert "ssl_context" not in kwargs
