"""The pure parts of ``basicsync redrive``: parsing, selection and the re-sync guard."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from consumer.commands.redrive import (
    Failure,
    Since,
    check_original,
    latest_per_job,
    original_message,
    parse_since,
    select,
    unique_sources,
    why_not,
)
from consumer.domain.job import mark_synced
from consumer.domain.results import FailureReason, FailureRecord, SourceInfo
from consumer.domain.retention import forget
from tests.unit.fakes import NOW, job_state


def sync_failure(job: str, version: int, *, offset: int = 0, minutes: int = 0) -> Failure:
    record = FailureRecord.for_sync(
        client_job_id=job,
        reason=FailureReason.rejected_by_gateway,
        message="rejected",
        attempts=1,
        state_version=version,
        failed_at=NOW + timedelta(minutes=minutes),
        status=422,
    )
    return Failure(partition=0, offset=offset, record=record)


def input_failure(job: str | None, source_offset: int, *, offset: int = 0) -> Failure:
    source = SourceInfo.from_message(
        topic="in",
        partition=1,
        offset=source_offset,
        key=b"k",
        value=b"{bad",
        headers=[("h", b"\x00"), ("empty", None)],
    )
    record = FailureRecord.for_input(
        reason=FailureReason.invalid_event,
        message="bad",
        source=source,
        failed_at=NOW,
        client_job_id=job,
    )
    return Failure(partition=0, offset=offset, record=record)


class TestParseSince:
    def test_digits_are_an_offset(self) -> None:
        """``--since 42`` starts every partition at offset 42."""
        assert parse_since("42") == Since(offset=42)

    def test_a_time_without_zone_is_utc(self) -> None:
        """``--since 2026-01-01T10:00`` is read as UTC."""
        assert parse_since("2026-01-01T10:00") == Since(
            time=datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
        )

    def test_anything_else_is_a_usage_error(self) -> None:
        """Neither offset nor time: argparse reports it."""
        with pytest.raises(argparse.ArgumentTypeError):
            parse_since("yesterday")


class TestSelect:
    def test_no_filter_selects_everything(self) -> None:
        """Without --reason and --job every record is selected."""
        failures = [sync_failure("a", 1), input_failure("b", 5)]
        assert select(failures, None, None) == failures

    def test_filters_combine_with_and(self) -> None:
        """--reason and --job must both match."""
        failures = [sync_failure("a", 1), input_failure("a", 5), sync_failure("b", 1)]
        chosen = select(failures, ["rejected_by_gateway"], ["a"])
        assert chosen == [failures[0]]


class TestDeduplication:
    def test_each_source_message_is_resent_once(self) -> None:
        """A failure record repeated after a crash names the same source: sent once."""
        failures = [input_failure("a", 5, offset=0), input_failure("a", 5, offset=1)]
        assert unique_sources(failures) == failures[:1]

    def test_the_latest_sync_failure_of_a_job_wins(self) -> None:
        """Per job, the failure of the highest state version (then the latest) is kept."""
        old, new, other = sync_failure("a", 3), sync_failure("a", 5), sync_failure("b", 1)
        assert latest_per_job([new, old, other]) == {"a": new, "b": other}


class TestOriginalMessage:
    def test_key_value_and_headers_come_back_as_bytes(self) -> None:
        """The base64 of the failure record decodes to the original message (null header
        values become empty bytes, which is what Kafka clients send for them)."""
        source = input_failure("a", 5).record.source
        assert source is not None
        assert original_message(source) == (b"k", b"{bad", [("h", b"\x00"), ("empty", b"")])


class TestWhyNot:
    def test_a_settled_job_at_the_failed_version_may_be_resynced(self) -> None:
        """The consumer settled the failed version and has nothing newer: re-sync it."""
        state = job_state("a")
        settled = mark_synced(state, state.version, "sha", None, NOW)
        assert why_not(sync_failure("a", state.version).record, settled) is None

    def test_an_unknown_job_is_skipped(self) -> None:
        """Not in the changelog: nothing to post."""
        assert "not in the changelog" in (why_not(sync_failure("a", 1).record, None) or "")

    def test_a_job_with_unsynced_changes_is_left_to_the_consumer(self) -> None:
        """Posting while the consumer has a sync pending could overlap its request."""
        state = job_state("a")
        assert "unsynced changes" in (why_not(sync_failure("a", state.version).record, state) or "")

    def test_a_superseded_failure_is_skipped(self) -> None:
        """The job moved on and the consumer settled a newer version."""
        state = job_state("a")
        settled = mark_synced(state, state.version, "sha", None, NOW)
        reason = why_not(sync_failure("a", state.version - 1).record, settled)
        assert "superseded" in (reason or "")

    def test_a_job_without_workflow_id_is_skipped(self) -> None:
        """missing_job_metadata: it cannot be posted until an event brings workflowId."""
        state = job_state("a", workflow=False)
        assert "workflowId" in (why_not(sync_failure("a", state.version).record, state) or "")

    def test_a_forgotten_job_is_skipped(self) -> None:
        """A job forgotten after retention (its marker in the changelog) is not posted."""
        state = job_state("a")
        marker = forget(mark_synced(state, state.version, "sha", None, NOW), NOW)
        reason = why_not(sync_failure("a", state.version).record, marker) or ""
        assert "forgotten after retention" in reason


class TestCheckOriginal:
    """Re-reading a truncated failure's original: the bytes found must be the original."""

    def source(self) -> SourceInfo:
        return SourceInfo.from_message(
            topic="in",
            partition=0,
            offset=7,
            key=b"k",
            value=b"0123456789",
            headers=[],
            max_value_bytes=4,
        )

    def test_the_original_passes(self) -> None:
        """The same bytes: no objection."""
        assert check_original(self.source(), (b"k", b"0123456789", [])) is None

    def test_other_bytes_rejected(self) -> None:
        """A record of the same size but other bytes is not the original (sha256)."""
        assert "sha256" in (check_original(self.source(), (b"k", b"0123456788", [])) or "")

    def test_other_size_rejected(self) -> None:
        """A record of another size (or a null value) is not the original."""
        assert "bytes" in (check_original(self.source(), (b"k", b"01", [])) or "")
        assert "bytes" in (check_original(self.source(), (b"k", None, [])) or "")
