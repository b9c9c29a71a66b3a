"""The client secret read again from its file: rotations, and files caught mid-change."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from structlog.testing import capture_logs

from consumer.gateway.client_secret import ClientSecret
from tests.fixtures.secret_volume import kubelet_volume

OLD = "old-s3cr3t-Vb7q"
NEW = "new-s3cr3t-Lm2x"


class TestClientSecret:
    def test_without_a_file_the_value_given_is_sent(self) -> None:
        assert ClientSecret(SecretStr(OLD)).current().get_secret_value() == OLD

    def test_a_kubelet_rotation_is_read_at_the_next_request(self, tmp_path: Path) -> None:
        """The secret read at start, then the rotated one as soon as the link is swapped;
        one info line names the file, none carries either secret."""
        path = kubelet_volume(tmp_path, OLD, "2026_12_05_1")
        secret = ClientSecret(SecretStr(OLD), path)
        with capture_logs() as logs:
            assert secret.current().get_secret_value() == OLD
            kubelet_volume(tmp_path, NEW, "2026_12_05_2")
            assert secret.current().get_secret_value() == NEW
            assert secret.current().get_secret_value() == NEW
        assert [line["event"] for line in logs] == ["client_secret_reloaded"]
        assert logs[0]["path"] == str(path)
        assert OLD not in repr(logs)
        assert NEW not in repr(logs)
        assert OLD not in repr(secret)
        assert NEW not in repr(secret)

    def test_a_file_gone_empty_or_garbled_keeps_the_last_secret_read(self, tmp_path: Path) -> None:
        """Each problem is warned about once, however many requests meet it; the last secret
        read goes on being sent; the file read again is used again, and said to be."""
        path = tmp_path / "client-secret"
        path.write_text(NEW, encoding="utf-8")
        secret = ClientSecret(SecretStr(OLD), path)
        with capture_logs() as logs:
            assert secret.current().get_secret_value() == NEW
            path.unlink()
            assert secret.current().get_secret_value() == NEW
            assert secret.current().get_secret_value() == NEW
            path.write_text("\n", encoding="utf-8")
            assert secret.current().get_secret_value() == NEW
            path.write_bytes(b"\xff\xfe" + NEW.encode("utf-16-le"))
            assert secret.current().get_secret_value() == NEW
            path.write_text(NEW + "\r\n", encoding="utf-8")
            assert secret.current().get_secret_value() == NEW
        events = [(line["event"], line.get("problem")) for line in logs]
        assert events == [
            ("client_secret_reloaded", None),
            ("client_secret_file_unreadable", "cannot read it: No such file or directory"),
            ("client_secret_file_unreadable", "it is empty"),
            ("client_secret_file_unreadable", "it is not UTF-8 text"),
            ("client_secret_file_readable", None),
        ]
        assert all(line["log_level"] in {"info", "warning"} for line in logs)
        assert NEW not in repr(logs)
        assert OLD not in repr(logs)

    def test_a_directory_in_place_of_the_file_is_a_problem_not_a_crash(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "client-secret"
        path.mkdir()
        with capture_logs() as logs:
            assert ClientSecret(SecretStr(OLD), path).current().get_secret_value() == OLD
        [line] = logs
        assert line["event"] == "client_secret_file_unreadable"
        assert line["problem"].startswith("cannot read it: ")
