"""What the operator commands share (``consumer.commands.tooling``): settings and brokers."""

from __future__ import annotations

import pytest

from consumer.commands.tooling import EXIT_KAFKA, bootstrap_servers, kafka_trouble, tool_settings
from consumer.config import KafkaSettings, Settings
from consumer.errors import ConfigError, KafkaAccessDenied, TopicLayoutError


class TestBootstrapServers:
    def test_the_configured_brokers(self) -> None:
        """A configured broker list is what the tools connect to."""
        settings = Settings(kafka=KafkaSettings(bootstrap_servers=["k1:9092", "k2:9092"]))
        assert bootstrap_servers(settings) == ["k1:9092", "k2:9092"]

    def test_no_brokers_is_a_config_error_naming_the_variable(self) -> None:
        """Tools never fall back to the embedded broker: no servers is a one-line error."""
        settings = Settings(kafka=KafkaSettings(bootstrap_servers=None))
        with pytest.raises(ConfigError, match="BASICSYNC_KAFKA__BOOTSTRAP_SERVERS"):
            bootstrap_servers(settings)


class TestToolSettings:
    def test_missing_brokers_are_printed_not_raised(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without a broker the tool gets None and stderr one line saying what to set."""
        monkeypatch.delenv("BASICSYNC_KAFKA__BOOTSTRAP_SERVERS", raising=False)
        assert tool_settings() is None
        assert "BASICSYNC_KAFKA__BOOTSTRAP_SERVERS is not set" in capsys.readouterr().err


class TestKafkaTrouble:
    def test_a_named_cause_is_printed_as_it_is(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A denied ACL already says what to grant: one line, exit 3."""
        settings = Settings(kafka=KafkaSettings(bootstrap_servers=["k:9092"]))
        denied = KafkaAccessDenied("Kafka denied this client access to topic t: grant Read")
        assert kafka_trouble("inspect", denied, settings) == EXIT_KAFKA == 3
        assert capsys.readouterr().err == f"basicsync inspect: {denied}\n"

    def test_other_failures_say_kafka_failed_with_the_cause(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Any other Kafka error is described with its type, after "Kafka failed"."""
        settings = Settings(kafka=KafkaSettings(bootstrap_servers=None))
        assert kafka_trouble("redrive", TopicLayoutError("no changelog"), settings) == 3
        assert capsys.readouterr().err == (
            "basicsync redrive: Kafka failed: TopicLayoutError: no changelog\n"
        )
