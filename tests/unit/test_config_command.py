"""``basicsync config``: the settings reference generated from the settings model."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from consumer.cli import main as cli_main
from consumer.commands.config import render_env, render_markdown, sections, variable_names
from consumer.config import ENV_PREFIX, FILE_SUFFIX, NESTED_DELIMITER, Settings, SyncSettings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _model_variables() -> set[str]:
    names = set()
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        for name in model.model_fields:
            names.add(f"{ENV_PREFIX}{section.upper()}{NESTED_DELIMITER}{name.upper()}")
    return names


class TestReference:
    def test_docs_equal_command_output(self) -> None:
        """docs/configuration.md is exactly what `basicsync config` prints (no drift)."""
        assert DOCS.read_text(encoding="utf-8") == render_markdown(), (
            "regenerate with: basicsync config > docs/configuration.md"
        )

    def test_every_setting_listed(self) -> None:
        """Every field of every section appears, named BASICSYNC_<SECTION>__<FIELD>."""
        listed = variable_names()
        assert _model_variables() <= listed
        assert {s.name for s in sections()} == set(Settings.model_fields)

    def test_secrets_have_file_variant(self) -> None:
        """Each SecretStr field is listed with its *_FILE variant, and only those get one."""
        files = {n for n in variable_names() if n.endswith(FILE_SUFFIX)}
        secrets = {v.name for s in sections() for v in s.variables if v.secret}
        assert files == {name + FILE_SUFFIX for name in secrets}
        assert "BASICSYNC_GATEWAY__CLIENT_SECRET" in secrets
        assert "BASICSYNC_KAFKA__SASL_PASSWORD" in secrets

    def test_each_variable_is_listed_once(self) -> None:
        """``gateway.client_secret_file`` and ``kafka.sasl_password_file`` are the secrets'
        ``*_FILE`` variables, not second rows, and their rows say the file is read again."""
        rows = [v for s in sections() for v in s.variables]
        assert len(rows) == len({v.name for v in rows})
        [row] = [v for v in rows if v.name == "BASICSYNC_GATEWAY__CLIENT_SECRET_FILE"]
        assert "read again before every token request" in row.description
        [sasl] = [v for v in rows if v.name == "BASICSYNC_KAFKA__SASL_PASSWORD_FILE"]
        assert "read again every `BASICSYNC_KAFKA__SSL_FILES_CHECK_S`" in sasl.description

    def test_defaults_from_model(self) -> None:
        """Defaults shown are the model's own, lists comma-joined, bools lower-case."""
        by_name = {v.name: v for s in sections() for v in s.variables}
        defaults = Settings()
        assert by_name["BASICSYNC_SYNC__DEBOUNCE_MS"].default == str(defaults.sync.debounce_ms)
        assert by_name["BASICSYNC_TOPICS__INPUT"].default == ",".join(defaults.topics.input)
        assert by_name["BASICSYNC_KAFKA__CREATE_TOPICS"].default == "true"
        assert by_name["BASICSYNC_KAFKA__BOOTSTRAP_SERVERS"].default is None

    def test_description_and_constraints(self) -> None:
        """Field descriptions and numeric constraints reach the reference."""
        by_name = {v.name: v for s in sections() for v in s.variables}
        debounce = by_name["BASICSYNC_SYNC__DEBOUNCE_MS"]
        assert debounce.description == SyncSettings.model_fields["debounce_ms"].description
        assert ">= 0" in debounce.type

    def test_table_cells_escaped(self) -> None:
        """A pipe inside a cell never breaks the Markdown table's column count."""
        for line in render_markdown().splitlines():
            if line.startswith("| `BASICSYNC_"):
                assert line.replace("\\|", "").count("|") == 5, line


class TestEnvFormat:
    def test_every_variable_commented_with_default(self) -> None:
        """--format env: one commented assignment per variable, value = default."""
        lines = render_env().splitlines()
        assigned = {
            line[2:].split("=", 1)[0] for line in lines if line.startswith(f"# {ENV_PREFIX}")
        }
        assert assigned == set(variable_names())
        assert all(not line or line.startswith("#") for line in lines)
        assert "# BASICSYNC_SYNC__MODE=every_change" in lines

    def test_defaults_load_back(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Uncommenting every non-empty default yields settings equal to the defaults."""
        for line in render_env().splitlines():
            if line.startswith(f"# {ENV_PREFIX}") and not line.endswith("="):
                name, value = line[2:].split("=", 1)
                monkeypatch.setenv(name, value)
        loaded = Settings()
        for section in Settings.model_fields:
            values = getattr(loaded, section)
            assert values == type(values)(), section


class TestCommand:
    def test_prints_markdown(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`basicsync config` prints the Markdown reference and exits 0."""
        assert cli_main(["config"]) == 0
        assert capsys.readouterr().out == render_markdown()

    def test_prints_env(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`basicsync config --format env` prints the example .env and exits 0."""
        assert cli_main(["config", "--format", "env"]) == 0
        assert capsys.readouterr().out == render_env()

    def test_rejects_unknown_format(self) -> None:
        """An unknown --format is a usage error (argparse exit code 2)."""
        with pytest.raises(SystemExit) as exc:
            cli_main(["config", "--format", "yaml"])
        assert exc.value.code == 2
