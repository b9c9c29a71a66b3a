"""``basicsync check`` without a broker: settings errors and unreachable endpoints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from consumer.cli import main
from consumer.commands.check import (
    Check,
    client_certificate_check,
    first_start_check,
    group_protocol_check,
    input_offset_problems,
    writers_check,
)
from consumer.config import KafkaSettings, Settings, StoreSettings
from tests.fixtures.certs import CertificateAuthority


class TestCheckLine:
    def test_lines_start_with_ok_or_fail(self) -> None:
        """One aligned line per check, name then detail."""
        assert Check("kafka", True, "b:9092", 0).line() == "ok    kafka: b:9092"
        assert Check("token", False, "refused", 5).line() == "FAIL  token: refused"
        assert Check("input offsets", True, "moved", 0, warn=True).line() == (
            "warn  input offsets: moved"
        )


class TestClientCertificate:
    def test_its_expiry_is_ok_then_a_warning_then_a_failure(self, tmp_path: Path) -> None:
        """Checked before a member starts: a day-long certificate is fine with a day left,
        overdue (warn, exit 0) with two hours left, refused by Kafka once expired (exit 3)."""
        ca = CertificateAuthority("check CA")
        certfile, _ = ca.client("member").write(tmp_path, "user")
        now = datetime.now(UTC)
        fresh = client_certificate_check(certfile, now)
        assert (fresh.ok, fresh.warn) == (True, False)
        assert fresh.line().startswith(f"ok    client certificate: {certfile} expires 20")
        assert fresh.line().endswith("in 24 hours")
        overdue = client_certificate_check(certfile, now + timedelta(hours=22))
        assert (overdue.ok, overdue.warn, overdue.exit_code) == (True, True, 0)
        assert overdue.detail.endswith("in 120 minutes: its renewal is overdue")
        expired = client_certificate_check(certfile, now + timedelta(days=2))
        assert (expired.ok, expired.exit_code) == (False, 3)
        assert expired.detail.endswith("expired, Kafka refuses it")

    def test_a_file_missing_or_without_a_certificate_fails_kafka(self, tmp_path: Path) -> None:
        now = datetime.now(UTC)
        missing = client_certificate_check(tmp_path / "gone.crt", now)
        assert (missing.ok, missing.exit_code) == (False, 3)
        assert missing.detail == f"cannot read {tmp_path / 'gone.crt'}: No such file or directory"
        (tmp_path / "key.pem").write_bytes(CertificateAuthority("k").client("k").key_pem)
        keyonly = client_certificate_check(tmp_path / "key.pem", now)
        assert keyonly.detail == f"{tmp_path / 'key.pem'} holds no certificate"


class TestFirstStart:
    def test_a_new_group_on_whole_partitions_is_ok(self) -> None:
        check = first_start_check("g", {TopicPartition("in", 0): 0, TopicPartition("in", 1): 0})
        assert (check.ok, check.warn, check.exit_code) == (True, False, 0)
        assert check.detail == "group g will read every input partition from offset 0"

    def test_a_start_moved_by_retention_is_a_warning_naming_the_partitions(self) -> None:
        """Each moved partition named with its start (five at most, the rest counted); the
        exit code stays 0."""
        starts = {TopicPartition("in", p): (100 * p if p % 2 else 0) for p in range(16)}
        check = first_start_check("g", starts)
        assert (check.ok, check.warn, check.exit_code) == (True, True, 0)
        assert "in partition 1 starts at 100; in partition 3 starts at 300" in check.detail
        assert "in partition 9 starts at 900 (and 3 more)" in check.detail
        assert "partition 0 " not in check.detail
        assert "Is this the group id that ran before?" in check.detail


class TestCheckExitCodes:
    def test_invalid_settings_exit_2(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A bad variable is named on a FAIL line and nothing else is tried."""
        monkeypatch.setenv("BASICSYNC_SYNC__DEBOUNCE_MS", "-5")
        assert main(["check"]) == 2
        out = capsys.readouterr().out
        assert out.startswith("FAIL  settings:")
        assert "BASICSYNC_SYNC__DEBOUNCE_MS" in out

    def test_nothing_configured_fails_kafka_first(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No broker and no gateway configured: both fail, the exit code names Kafka (3)."""
        for name in ("BASICSYNC_KAFKA__BOOTSTRAP_SERVERS", "BASICSYNC_GATEWAY__BASE_URL"):
            monkeypatch.delenv(name, raising=False)
        assert main(["check"]) == 3
        out = capsys.readouterr().out
        assert "FAIL  kafka:" in out
        assert "FAIL  gateway:" in out

    def test_an_unreachable_token_endpoint_fails_without_printing_the_secret(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A token endpoint nobody listens on fails the token check; the secret stays out."""
        monkeypatch.delenv("BASICSYNC_KAFKA__BOOTSTRAP_SERVERS", raising=False)
        monkeypatch.setenv("BASICSYNC_GATEWAY__BASE_URL", "http://127.0.0.1:1")
        monkeypatch.setenv("BASICSYNC_GATEWAY__TOKEN_URL", "http://127.0.0.1:1/connect/token")
        monkeypatch.setenv("BASICSYNC_GATEWAY__CLIENT_ID", "cid")
        monkeypatch.setenv("BASICSYNC_GATEWAY__CLIENT_SECRET", "s3cr3t-value")
        assert main(["check", "--timeout", "2"]) == 3  # Kafka (unset) is the first failing area
        out = capsys.readouterr().out
        assert "FAIL  token:" in out
        assert "s3cr3t-value" not in out


class TestInputOffsetProblems:
    def test_offsets_below_the_start_and_past_the_end_are_both_named(self) -> None:
        """Partition 0 lost 7 unread records to retention; partition 1's topic was created
        again (its committed 40 lies past the new end 3); partition 2 is where it should be,
        at its end included."""
        tps = [TopicPartition("in", n) for n in range(3)]
        committed = dict(zip(tps, [5, 40, 9], strict=True))
        starts = dict(zip(tps, [12, 0, 0], strict=True))
        ends = dict(zip(tps, [20, 3, 9], strict=True))
        below, past = input_offset_problems("g", committed, starts, ends)
        assert below.startswith(
            "group g's offsets are below the start of in partition 0 at offset 5 starts at 12 "
            "(7 records): "
        )
        assert past.startswith(
            "group g's offsets are past the end of in partition 1 at offset 40 ends at 3: the "
            "partition lost records"
        )

    def test_offsets_within_their_partitions_are_no_problem(self) -> None:
        tp = TopicPartition("in", 0)
        assert input_offset_problems("g", {tp: 12}, {tp: 12}, {tp: 12}) == []
        assert input_offset_problems("g", {tp: 0}, {tp: 0}, {tp: 30}) == []


class TestWritersCheck:
    def test_another_groups_records_fail_with_the_topics_exit_code(self) -> None:
        """The changelog's sampled records name their writers: this group's, a group it
        adopted and none at all pass; any other group fails (exit 4), named."""
        settings = Settings(
            kafka=KafkaSettings(group_id="prod"),
            store=StoreSettings(adopt_changelog_of=["prod-old"]),
        )
        assert writers_check(settings, frozenset()).ok
        fine = writers_check(settings, frozenset({"prod", "prod-old"}))
        assert fine.ok
        assert (
            fine.line() == "ok    changelog writers: prod.job-state: sampled writers prod, prod-old"
        )
        shared = writers_check(settings, frozenset({"prod", "staging", "dev"}))
        assert (shared.ok, shared.exit_code) == (False, 4)
        assert "written by group dev, staging, and this is group prod" in shared.detail


class TestGroupProtocol:
    def test_members_of_a_range_version_fail_it_and_say_what_to_do(self) -> None:
        check = group_protocol_check("g", "consumer", "range", 3)
        assert not check.ok
        assert check.exit_code == 4
        assert "'range'" in check.detail
        assert '"Upgrading"' in check.detail

    @pytest.mark.parametrize(
        ("protocol_type", "protocol", "members"),
        [("consumer", "basicsync-copartitioned", 2), ("", "", 0), ("consumer", "range", 0)],
    )
    def test_members_of_this_version_or_none_pass(
        self, protocol_type: str, protocol: str, members: int
    ) -> None:
        assert group_protocol_check("g", protocol_type, protocol, members).ok
