"""Result records (consumer.domain.results)."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from consumer.domain.results import (
    MAX_ERROR_BODY_CHARS,
    TRUNCATION_SUFFIX,
    FailureReason,
    FailureRecord,
    SourceInfo,
    SourceOffset,
    SuccessRecord,
    truncate_body,
)
from tests.unit.fakes import job_state

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class TestFailureReason:
    def test_fixed_set(self) -> None:
        """The reasons are a public contract: exactly these values."""
        assert {r.value for r in FailureReason} == {
            "invalid_event",
            "key_mismatch",
            "unknown_event_type",
            "oversized_event",
            "rejected_by_gateway",
            "retries_exhausted",
            "invalid_transition",
            "missing_job_metadata",
            "misrouted",
            "job_forgotten",
            "job_too_large",
            "job_state_unreadable",
        }

    def test_each_documented(self) -> None:
        """Every reason is explained in the enum's docstring."""
        for reason in FailureReason:
            assert f"``{reason.value}``" in (FailureReason.__doc__ or "")


class TestSuccessRecord:
    def test_json_shape(self) -> None:
        """A success record serializes camelCase with every field of docs/contract.md §8.1."""
        record = SuccessRecord(
            client_job_id="j",
            job_id="srv",
            http_status=200,
            state_version=3,
            job_status="Completed",
            attempts=1,
            synced_at=NOW,
            latency_ms=120,
            source_offsets=[SourceOffset(topic="t", partition=0, offset=7)],
            payload_sha256="ab",
        )
        assert json.loads(record.to_json_bytes()) == {
            "clientJobId": "j",
            "jobId": "srv",
            "outcome": "synced",
            "httpStatus": 200,
            "stateVersion": 3,
            "jobStatus": "Completed",
            "attempts": 1,
            "syncedAt": "2026-01-01T12:00:00Z",
            "latencyMs": 120,
            "sourceOffsets": [{"topic": "t", "partition": 0, "offset": 7}],
            "payloadSha256": "ab",
            "sourceOffsetsTruncated": False,
            "traceId": None,
        }

    def test_round_trip(self) -> None:
        """A record read back from its JSON is equal (consumers of the topic can parse it)."""
        record = SuccessRecord(
            client_job_id="j",
            job_id=None,
            http_status=201,
            state_version=1,
            job_status=None,
            attempts=2,
            synced_at=NOW,
            latency_ms=None,
            source_offsets=[],
            payload_sha256="ab",
        )
        assert SuccessRecord.model_validate_json(record.to_json_bytes()) == record

    def test_outcome_fixed(self) -> None:
        """outcome cannot be anything but "synced"."""
        with pytest.raises(ValidationError):
            SuccessRecord.model_validate(
                {
                    "clientJobId": "j",
                    "jobId": None,
                    "outcome": "failed",
                    "httpStatus": 200,
                    "stateVersion": 1,
                    "jobStatus": None,
                    "attempts": 1,
                    "syncedAt": NOW,
                    "latencyMs": 1,
                    "sourceOffsets": [],
                    "payloadSha256": "x",
                }
            )

    def test_for_sync_takes_version_status_and_latency_from_the_sent_state(self) -> None:
        """The one builder of success records (scheduler and redrive): version, status and
        key from the state sent, latency from its first unsynced change to the sync."""
        sent = replace(
            job_state("job-1", status="Completed"),
            first_unsynced_at=NOW - timedelta(seconds=2),
            job_id="wfp-1",
        )
        offsets = [SourceOffset(topic="in", partition=0, offset=7)]
        record = SuccessRecord.for_sync(
            sent,
            job_id=None,
            http_status=201,
            attempts=2,
            synced_at=NOW,
            payload_sha256="abc",
            source_offsets=offsets,
        )
        assert record.client_job_id == "job-1"
        assert record.job_id == "wfp-1"  # WorkfloPlus sent none: the state's own is kept
        assert record.state_version == sent.version
        assert record.job_status == "Completed"
        assert record.latency_ms == 2000
        assert record.source_offsets == offsets
        assert record.trace_id is None

    def test_for_sync_without_unsynced_change_has_no_latency(self) -> None:
        """A state with no first unsynced change (a redrive of a settled one) has no latency;
        the job id WorkfloPlus answered with wins over the state's."""
        sent = replace(job_state("job-2"), first_unsynced_at=None)
        record = SuccessRecord.for_sync(
            sent, job_id="new", http_status=200, attempts=1, synced_at=NOW, payload_sha256="x"
        )
        assert record.latency_ms is None
        assert record.job_id == "new"
        assert record.source_offsets == []


class TestFailureRecord:
    def test_for_input(self) -> None:
        """An unusable event keeps its exact bytes and headers, base64, with the reason."""
        source = SourceInfo.from_message(
            topic="in",
            partition=2,
            offset=9,
            key=b"\xffkey",
            value=b"{bad",
            headers=[("content-type", b"application/json"), ("empty", None)],
        )
        record = FailureRecord.for_input(
            reason=FailureReason.invalid_event, message="bad JSON", source=source, failed_at=NOW
        )
        data = json.loads(record.to_json_bytes())
        assert data == {
            "clientJobId": None,
            "outcome": "failed",
            "reason": "invalid_event",
            "error": {"message": "bad JSON", "status": None, "body": None},
            "attempts": 0,
            "stateVersion": None,
            "failedAt": "2026-01-01T12:00:00Z",
            "source": {
                "topic": "in",
                "partition": 2,
                "offset": 9,
                "key": base64.b64encode(b"\xffkey").decode(),
                "headers": [
                    {
                        "key": "content-type",
                        "value": base64.b64encode(b"application/json").decode(),
                    },
                    {"key": "empty", "value": None},
                ],
                "value": base64.b64encode(b"{bad").decode(),
                "valueSize": 4,
                "valueSha256": hashlib.sha256(b"{bad").hexdigest(),
                "truncated": False,
            },
            "traceId": None,
        }

    def test_null_key_and_value(self) -> None:
        """A missing key or value is null, not an empty string."""
        source = SourceInfo.from_message(
            topic="in", partition=0, offset=0, key=None, value=None, headers=[]
        )
        assert (source.key, source.value) == (None, None)

    def test_long_value_carried_up_to_the_bound(self) -> None:
        """A value over the bound is carried only up to it, with its full size and sha256
        and the exact coordinates; the record says it is truncated."""
        value = bytes(range(256)) * 4000  # 1,024,000 bytes
        source = SourceInfo.from_message(
            topic="in",
            partition=3,
            offset=77,
            key=b"k",
            value=value,
            headers=[],
            max_value_bytes=1000,
        )
        assert base64.b64decode(source.value or "") == value[:1000]
        assert (source.value_size, source.value_sha256) == (
            len(value),
            hashlib.sha256(value).hexdigest(),
        )
        assert (source.topic, source.partition, source.offset, source.truncated) == (
            "in",
            3,
            77,
            True,
        )

    def test_value_at_the_bound_is_whole(self) -> None:
        """A value exactly at the bound is carried whole and not marked truncated."""
        source = SourceInfo.from_message(
            topic="in",
            partition=0,
            offset=0,
            key=b"k",
            value=b"x" * 10,
            headers=[],
            max_value_bytes=10,
        )
        assert (base64.b64decode(source.value or ""), source.truncated) == (b"x" * 10, False)

    def test_headers_and_key_bounded(self) -> None:
        """Headers are kept in order while they fit their budget, then cut; a key over its
        bound is dropped; either marks the source truncated."""
        headers = [("a", b"1" * 10), ("b", b"2" * 10), ("c", b"3" * 10)]
        source = SourceInfo.from_message(
            topic="in",
            partition=0,
            offset=0,
            key=b"k" * 50,
            value=b"v",
            headers=headers,
            max_header_bytes=25,
            max_key_bytes=40,
        )
        assert [h.key for h in source.headers] == ["a", "b"]
        assert (source.key, source.truncated) == (None, True)

    def test_old_records_still_read(self) -> None:
        """A failure record written before size, sha256 and truncated existed reads back with
        them null/false."""
        old: dict[str, Any] = {
            "clientJobId": None,
            "outcome": "failed",
            "reason": "invalid_event",
            "error": {"message": "bad", "status": None, "body": None},
            "attempts": 0,
            "stateVersion": None,
            "failedAt": "2026-01-01T12:00:00Z",
            "source": {
                "topic": "in",
                "partition": 0,
                "offset": 1,
                "key": None,
                "headers": [],
                "value": "e2JhZA==",
            },
        }
        record = FailureRecord.model_validate_json(json.dumps(old))
        assert record.source is not None
        assert (record.source.value_size, record.source.truncated) == (None, False)

    def test_for_sync(self) -> None:
        """A gateway rejection carries status and the response body; no source."""
        record = FailureRecord.for_sync(
            client_job_id="j",
            reason=FailureReason.rejected_by_gateway,
            message="400 Bad Request",
            attempts=1,
            state_version=4,
            failed_at=NOW,
            status=400,
            body=b'{"error":"bad"}',
        )
        data = json.loads(record.to_json_bytes())
        assert data["error"] == {
            "message": "400 Bad Request",
            "status": 400,
            "body": '{"error":"bad"}',
        }
        assert data["source"] is None
        assert data["stateVersion"] == 4
        assert FailureRecord.model_validate_json(record.to_json_bytes()) == record


class TestTruncateBody:
    def test_short_unchanged(self) -> None:
        """A body within the limit is kept as is."""
        assert truncate_body("x" * MAX_ERROR_BODY_CHARS) == "x" * MAX_ERROR_BODY_CHARS

    def test_long_truncated(self) -> None:
        """A longer body is cut to the limit and marked."""
        result = truncate_body("y" * (MAX_ERROR_BODY_CHARS + 1))
        assert result == "y" * MAX_ERROR_BODY_CHARS + TRUNCATION_SUFFIX

    def test_bytes_decoded_leniently(self) -> None:
        """Bytes are decoded as UTF-8 with invalid sequences replaced; None stays None."""
        assert truncate_body(b"ok\xff") == "ok\ufffd"
        assert truncate_body(None) is None
