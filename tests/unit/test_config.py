"""The settings tree (consumer.config.load_settings) built from the environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from consumer.config import Settings, load_settings
from consumer.domain.job import SyncMode
from consumer.errors import ConfigError

SECRET = "hunter2-do-not-print"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean environment: no BASICSYNC_ variable leaks in from the machine running tests."""
    for name in list(os.environ):
        if name.startswith("BASICSYNC_"):
            monkeypatch.delenv(name)
    return monkeypatch


def config_error() -> str:
    """The message of the ConfigError that loading the current environment raises."""
    with pytest.raises(ConfigError) as info:
        load_settings()
    return str(info.value)


class TestLoadSettings:
    def test_defaults(self, env: pytest.MonkeyPatch) -> None:
        """With nothing set: embedded Kafka and gateway, documented topic names and sync mode."""
        settings = load_settings()
        assert settings.embedded_kafka
        assert settings.embedded_gateway
        assert settings.topics.input == ["workfloplus.job-events"]
        assert settings.sync.mode is SyncMode.every_change
        assert settings.state_topic == "basicsync.job-state"

    def test_prefixed_nested_variables(self, env: pytest.MonkeyPatch) -> None:
        """BASICSYNC_<SECTION>__<FIELD> sets a nested field, parsed to its type."""
        env.setenv("BASICSYNC_SYNC__DEBOUNCE_MS", "50")
        env.setenv("BASICSYNC_SYNC__MODE", "terminal_only")
        env.setenv("BASICSYNC_KAFKA__GROUP_ID", "orders")
        env.setenv("DEBOUNCE_MS", "999")  # no prefix: ignored
        settings = load_settings()
        assert settings.sync.debounce_ms == 50
        assert settings.sync.mode is SyncMode.terminal_only
        assert settings.kafka.group_id == "orders"

    def test_comma_separated_lists(self, env: pytest.MonkeyPatch) -> None:
        """Input topics and bootstrap servers are comma-separated; blanks are dropped."""
        env.setenv("BASICSYNC_TOPICS__INPUT", "a, b ,,c")
        env.setenv("BASICSYNC_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
        settings = load_settings()
        assert settings.topics.input == ["a", "b", "c"]
        assert settings.kafka.bootstrap_servers == ["k1:9092", "k2:9092"]
        assert not settings.embedded_kafka

    @pytest.mark.parametrize(
        ("variable", "value", "named"),
        [
            ("BASICSYNC_TOPICS__INPUT", '["events"]', "BASICSYNC_TOPICS__INPUT (comma-separated)"),
            ("BASICSYNC_TOPICS__FAILED", "failed:topic", "BASICSYNC_TOPICS__FAILED"),
            ("BASICSYNC_TOPICS__STATE", "..", "BASICSYNC_TOPICS__STATE"),
            ("BASICSYNC_TOPICS__SUCCEEDED", "x" * 250, "BASICSYNC_TOPICS__SUCCEEDED"),
            ("BASICSYNC_KAFKA__GROUP_ID", "my group", "BASICSYNC_KAFKA__GROUP_ID"),
        ],
    )
    def test_a_name_kafka_refuses_as_a_topic_is_a_settings_error(
        self, env: pytest.MonkeyPatch, variable: str, value: str, named: str
    ) -> None:
        """Said at start with the variable to fix, not as the broker's InvalidTopic error
        code once the member connects ("cannot describe topic ...: error 17")."""
        env.setenv(variable, value)
        with pytest.raises(ConfigError) as raised:
            load_settings()
        assert named in str(raised.value)
        assert "is not a Kafka topic name" in str(raised.value)

    def test_a_group_id_no_topic_may_be_named_after_works_with_its_changelog_named(
        self, env: pytest.MonkeyPatch
    ) -> None:
        env.setenv("BASICSYNC_KAFKA__GROUP_ID", "team a/jobs")
        env.setenv("BASICSYNC_TOPICS__STATE", "team-a.job-state")
        assert load_settings().state_topic == "team-a.job-state"

    def test_state_topic_defaults_to_group(self, env: pytest.MonkeyPatch) -> None:
        """The changelog topic is <group>.job-state unless set explicitly."""
        env.setenv("BASICSYNC_KAFKA__GROUP_ID", "orders")
        assert load_settings().state_topic == "orders.job-state"
        env.setenv("BASICSYNC_TOPICS__STATE", "explicit")
        assert load_settings().state_topic == "explicit"

    def test_settings_are_frozen(self, env: pytest.MonkeyPatch) -> None:
        """The tree is built once and cannot be changed afterwards."""
        settings = load_settings()
        with pytest.raises(ValueError, match="frozen"):
            settings.sync.debounce_ms = 1  # type: ignore[misc]

    def test_overrides(self, env: pytest.MonkeyPatch) -> None:
        """Keyword overrides win over the environment."""
        env.setenv("BASICSYNC_KAFKA__GROUP_ID", "from-env")
        settings = load_settings(kafka={"group_id": "from-code"})
        assert settings.kafka.group_id == "from-code"

    def test_the_deprecated_circuit_threshold_still_starts(self, env: pytest.MonkeyPatch) -> None:
        """A deployment that still sets BASICSYNC_SYNC__CIRCUIT_FAILURE_THRESHOLD starts (the
        value is ignored, with a warning at start), instead of failing as an unknown field."""
        env.setenv("BASICSYNC_SYNC__CIRCUIT_FAILURE_THRESHOLD", "20")
        assert load_settings().sync.circuit_failure_threshold == 20
        env.delenv("BASICSYNC_SYNC__CIRCUIT_FAILURE_THRESHOLD")
        assert load_settings().sync.circuit_failure_threshold is None


class TestFileSecrets:
    def gateway_env(self, env: pytest.MonkeyPatch) -> None:
        env.setenv("BASICSYNC_GATEWAY__BASE_URL", "https://gateway.example")
        env.setenv("BASICSYNC_GATEWAY__TOKEN_URL", "https://accounts.example/connect/token")
        env.setenv("BASICSYNC_GATEWAY__CLIENT_ID", "client")

    def test_secret_from_file(self, env: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """<VAR>_FILE reads the secret from that file, trailing newline stripped."""
        self.gateway_env(env)
        secret_file = tmp_path / "secret"
        secret_file.write_text(SECRET + "\r\n", encoding="utf-8")
        env.setenv("BASICSYNC_GATEWAY__CLIENT_SECRET_FILE", str(secret_file))
        settings = load_settings()
        assert settings.gateway.client_secret is not None
        assert settings.gateway.client_secret.get_secret_value() == SECRET
        assert settings.gateway.client_secret_file == secret_file  # to be read again

    def test_a_secret_given_directly_has_no_file_to_read_again(
        self, env: pytest.MonkeyPatch
    ) -> None:
        self.gateway_env(env)
        env.setenv("BASICSYNC_GATEWAY__CLIENT_SECRET", SECRET)
        assert load_settings().gateway.client_secret_file is None

    def test_kafka_password_from_file(self, env: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """The SASL password can come from a file too, completing the SASL settings."""
        secret_file = tmp_path / "password"
        secret_file.write_text("pw\n", encoding="utf-8")
        env.setenv("BASICSYNC_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
        env.setenv("BASICSYNC_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
        env.setenv("BASICSYNC_KAFKA__SASL_USERNAME", "user")
        env.setenv("BASICSYNC_KAFKA__SASL_PASSWORD_FILE", str(secret_file))
        settings = load_settings()
        assert settings.kafka.sasl_password is not None
        assert settings.kafka.sasl_password.get_secret_value() == "pw"
        assert settings.kafka.sasl_password_file == secret_file  # to be read again

    def test_both_value_and_file_is_an_error(self, env: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """Setting a secret and its _FILE variable is refused, naming both variables."""
        self.gateway_env(env)
        secret_file = tmp_path / "secret"
        secret_file.write_text(SECRET, encoding="utf-8")
        env.setenv("BASICSYNC_GATEWAY__CLIENT_SECRET", SECRET)
        env.setenv("BASICSYNC_GATEWAY__CLIENT_SECRET_FILE", str(secret_file))
        message = config_error()
        assert "BASICSYNC_GATEWAY__CLIENT_SECRET_FILE" in message
        assert "BASICSYNC_GATEWAY__CLIENT_SECRET," in message
        assert "not both" in message
        assert SECRET not in message

    def test_unreadable_file(self, env: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """A _FILE pointing nowhere is reported with the variable and the path."""
        missing = tmp_path / "absent"
        env.setenv("BASICSYNC_GATEWAY__CLIENT_SECRET_FILE", str(missing))
        message = config_error()
        assert "BASICSYNC_GATEWAY__CLIENT_SECRET_FILE" in message
        assert str(missing) in message


class TestValidationMessages:
    def test_one_line_per_problem_naming_the_variable(self, env: pytest.MonkeyPatch) -> None:
        """Every invalid variable is reported at once, one line each, by its full name."""
        env.setenv("BASICSYNC_SYNC__DEBOUNCE_MS", "soon")
        env.setenv("BASICSYNC_SYNC__CONCURRENCY", "0")
        env.setenv("BASICSYNC_SYNC__MODE", "sometimes")
        message = config_error()
        lines = message.splitlines()
        assert lines[0] == "invalid settings:"
        problems = lines[1:]
        assert len(problems) == 3
        for variable in (
            "BASICSYNC_SYNC__DEBOUNCE_MS",
            "BASICSYNC_SYNC__CONCURRENCY",
            "BASICSYNC_SYNC__MODE",
        ):
            assert sum(line.strip().startswith(variable + ":") for line in problems) == 1

    def test_max_delay_below_debounce_rejected(self, env: pytest.MonkeyPatch) -> None:
        """max_delay_ms < debounce_ms is refused (a job could never wait out its debounce)."""
        env.setenv("BASICSYNC_SYNC__DEBOUNCE_MS", "500")
        env.setenv("BASICSYNC_SYNC__MAX_DELAY_MS", "100")
        message = config_error()
        assert "BASICSYNC_SYNC" in message
        assert "max_delay_ms must be at least debounce_ms" in message

    def test_max_delay_equal_to_debounce_accepted(self, env: pytest.MonkeyPatch) -> None:
        """max_delay_ms == debounce_ms is allowed (the boundary)."""
        env.setenv("BASICSYNC_SYNC__DEBOUNCE_MS", "100")
        env.setenv("BASICSYNC_SYNC__MAX_DELAY_MS", "100")
        assert load_settings().sync.max_delay_ms == 100

    def test_gateway_needs_credentials_with_url(self, env: pytest.MonkeyPatch) -> None:
        """A real gateway URL without token_url and client id names the missing variables."""
        env.setenv("BASICSYNC_GATEWAY__BASE_URL", "https://gateway.example")
        env.setenv("BASICSYNC_GATEWAY__CLIENT_SECRET", SECRET)
        message = config_error()
        assert "BASICSYNC_GATEWAY__TOKEN_URL" in message
        assert "BASICSYNC_GATEWAY__CLIENT_ID" in message
        assert "CLIENT_SECRET" not in message

    def test_a_missing_secret_names_both_ways_to_set_it(self, env: pytest.MonkeyPatch) -> None:
        """A missing client secret names the variable and its *_FILE form."""
        env.setenv("BASICSYNC_GATEWAY__BASE_URL", "https://gateway.example")
        env.setenv("BASICSYNC_GATEWAY__TOKEN_URL", "https://gateway.example/connect/token")
        env.setenv("BASICSYNC_GATEWAY__CLIENT_ID", "client")
        message = config_error()
        assert "BASICSYNC_GATEWAY__CLIENT_SECRET " in message
        assert "BASICSYNC_GATEWAY__CLIENT_SECRET_FILE" in message
        assert "TOKEN_URL," not in message

    def test_sasl_needs_its_settings(self, env: pytest.MonkeyPatch) -> None:
        """A SASL protocol without mechanism and username says which are missing."""
        env.setenv("BASICSYNC_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
        env.setenv("BASICSYNC_KAFKA__SASL_PASSWORD", SECRET)
        message = config_error()
        assert "BASICSYNC_KAFKA__SASL_MECHANISM" in message
        assert "BASICSYNC_KAFKA__SASL_USERNAME" in message
        assert "SASL_PASSWORD" not in message

    def test_url_scheme_checked(self, env: pytest.MonkeyPatch) -> None:
        """A gateway URL must be http(s); the message names the variable."""
        env.setenv("BASICSYNC_GATEWAY__BASE_URL", "ftp://gateway.example")
        assert "BASICSYNC_GATEWAY__BASE_URL:" in config_error()

    def test_secrets_never_shown(self, env: pytest.MonkeyPatch) -> None:
        """Secret values appear neither in the settings' repr nor in a validation error."""
        env.setenv("BASICSYNC_GATEWAY__BASE_URL", "https://gateway.example")
        env.setenv("BASICSYNC_GATEWAY__TOKEN_URL", "https://accounts.example/connect/token")
        env.setenv("BASICSYNC_GATEWAY__CLIENT_ID", "client")
        env.setenv("BASICSYNC_GATEWAY__CLIENT_SECRET", SECRET)
        env.setenv("BASICSYNC_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
        env.setenv("BASICSYNC_KAFKA__SASL_MECHANISM", "PLAIN")
        env.setenv("BASICSYNC_KAFKA__SASL_USERNAME", "user")
        env.setenv("BASICSYNC_KAFKA__SASL_PASSWORD", SECRET)
        settings = load_settings()
        assert SECRET not in repr(settings)
        assert SECRET not in str(settings)
        env.setenv("BASICSYNC_SYNC__CONCURRENCY", "-1")
        message = config_error()
        assert "BASICSYNC_SYNC__CONCURRENCY" in message
        assert SECRET not in message

    def test_no_variable_read_outside_load(self, env: pytest.MonkeyPatch) -> None:
        """A Settings built once does not change when the environment changes afterwards."""
        settings: Settings = load_settings()
        env.setenv("BASICSYNC_KAFKA__GROUP_ID", "later")
        assert settings.kafka.group_id == "basicsync"
