"""Every record we produce fits (consumer.domain.record_size)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.domain.record_size import (
    MIN_LIMIT_BYTES,
    REDUCED_BODY_CHARS,
    fit_record,
)
from consumer.domain.results import (
    TRUNCATION_SUFFIX,
    FailureReason,
    FailureRecord,
    SourceInfo,
    SourceOffset,
    SuccessRecord,
)

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def input_failure(
    value: bytes, *, key: bytes | None = b"job-1", headers: int = 0, message: str = "bad"
) -> FailureRecord:
    source = SourceInfo.from_message(
        topic="in",
        partition=1,
        offset=42,
        key=key,
        value=value,
        headers=[(f"h{i}", b"x" * 100) for i in range(headers)],
        max_value_bytes=len(value),
        max_key_bytes=len(key or b""),
        max_header_bytes=200 * headers,
    )
    return FailureRecord.for_input(
        reason=FailureReason.invalid_event,
        message=message,
        source=source,
        failed_at=NOW,
        client_job_id=None if key is None else key.decode(errors="replace"),
    )


def success(offsets: int, client_job_id: str = "job-1") -> SuccessRecord:
    return SuccessRecord(
        client_job_id=client_job_id,
        job_id="wp",
        http_status=200,
        state_version=offsets,
        job_status="Completed",
        attempts=1,
        synced_at=NOW,
        latency_ms=5,
        source_offsets=[
            SourceOffset(topic=f"t{i % 3}", partition=0, offset=i) for i in range(offsets)
        ],
        payload_sha256="ab" * 32,
    )


class TestFitRecord:
    def test_small_record_unchanged(self) -> None:
        """A record within the limit is produced exactly as it is."""
        record = input_failure(b"{bad")
        fitted = fit_record(record, 10_000)
        assert (fitted.record, fitted.value, fitted.key, fitted.reduced) == (
            record,
            record.to_json_bytes(),
            b"job-1",
            False,
        )

    def test_value_dropped_first(self) -> None:
        """A failure record too large for its value loses the value only; size, sha256 and
        coordinates stay and it says it is truncated."""
        record = input_failure(b"z" * 900_000)
        fitted = fit_record(record, 1_000_000 - 512)
        assert fitted.reduced
        assert len(fitted.value) + len(fitted.key or b"") <= 1_000_000 - 512
        assert isinstance(fitted.record, FailureRecord)
        source = fitted.record.source
        assert source is not None
        assert (source.value, source.value_size, source.truncated) == (None, 900_000, True)
        assert record.source is not None
        assert source.value_sha256 == record.source.value_sha256
        assert (source.topic, source.partition, source.offset) == ("in", 1, 42)

    def test_error_body_cut_next(self) -> None:
        """A sync failure with a huge response body keeps its first characters, marked."""
        record = FailureRecord.for_sync(
            client_job_id="job-1",
            reason=FailureReason.rejected_by_gateway,
            message="400",
            attempts=1,
            state_version=2,
            failed_at=NOW,
            status=400,
        )
        big = record.model_copy(
            update={"error": record.error.model_copy(update={"body": "b" * 5000})}
        )
        fitted = fit_record(big, 3000)
        assert isinstance(fitted.record, FailureRecord)
        assert fitted.record.error.body == "b" * REDUCED_BODY_CHARS + TRUNCATION_SUFFIX
        assert fitted.record.error.status == 400

    def test_success_offsets_cut_to_last_per_partition(self) -> None:
        """A success record with very many source offsets keeps the last one per topic
        partition and says so."""
        record = success(30_000)
        fitted = fit_record(record, 100_000)
        assert isinstance(fitted.record, SuccessRecord)
        assert fitted.record.source_offsets_truncated
        assert [(o.topic, o.offset) for o in fitted.record.source_offsets] == [
            ("t0", 29_997),
            ("t1", 29_998),
            ("t2", 29_999),
        ]

    def test_huge_key_cut_with_the_texts(self) -> None:
        """A garbage key of 900 KB (also the clientJobId) is cut, so key plus value fit."""
        record = input_failure(b"v", key=b"k" * 900_000, headers=3, message="m" * 900_000)
        fitted = fit_record(record, MIN_LIMIT_BYTES)
        assert len(fitted.value) + len(fitted.key or b"") <= MIN_LIMIT_BYTES
        assert (fitted.record.client_job_id or "").endswith(TRUNCATION_SUFFIX)

    @given(
        raw_key=st.binary(min_size=1, max_size=3000),
        message=st.text(max_size=3000),
        limit=st.integers(MIN_LIMIT_BYTES, 20_000),
    )
    @settings(deadline=None, max_examples=100)
    def test_a_failure_without_client_job_id_is_keyed_by_the_raw_key(
        self, raw_key: bytes, message: str, limit: int
    ) -> None:
        """An input whose key is not UTF-8 has no clientJobId: its failure record's Kafka
        key is that key as received, or its start when the record had to be cut to fit."""
        record = input_failure(b"v", key=raw_key, message=message)
        record = record.model_copy(update={"client_job_id": None})
        fitted = fit_record(record, limit, raw_key)
        assert len(fitted.value) + len(fitted.key or b"") <= limit
        assert fitted.key is not None
        assert raw_key.startswith(fitted.key)
        if not fitted.reduced:
            assert fitted.key == raw_key

    def test_a_huge_raw_key_is_cut_to_fit(self) -> None:
        record = input_failure(b"v", key=None).model_copy(update={"client_job_id": None})
        fitted = fit_record(record, MIN_LIMIT_BYTES, b"\xff" * 900_000)
        assert fitted.key == b"\xff" * 1024
        assert fitted.reduced

    def test_limit_below_minimum_is_an_error(self) -> None:
        """A limit too small for any record is a programming error, not a silent drop."""
        with pytest.raises(ValueError, match="below"):
            fit_record(success(1), MIN_LIMIT_BYTES - 1)

    @given(
        value=st.binary(max_size=5000),
        key=st.one_of(st.none(), st.text(max_size=3000).map(str.encode)),
        message=st.text(max_size=3000),
        body=st.one_of(st.none(), st.text(max_size=6000)),
        headers=st.integers(0, 20),
        limit=st.integers(MIN_LIMIT_BYTES, 20_000),
    )
    @settings(deadline=None, max_examples=200)
    def test_always_fits(
        self,
        value: bytes,
        key: bytes | None,
        message: str,
        body: str | None,
        headers: int,
        limit: int,
    ) -> None:
        """Any failure record (any text, control characters and non-ASCII included), any
        limit from the minimum: key plus value are within the limit and still parse."""
        record = input_failure(value, key=key, headers=headers, message=message)
        record = record.model_copy(update={"error": record.error.model_copy(update={"body": body})})
        fitted = fit_record(record, limit)
        assert len(fitted.value) + len(fitted.key or b"") <= limit
        assert FailureRecord.model_validate_json(fitted.value) == fitted.record
        if not fitted.reduced:
            assert fitted.record == record

    @given(
        client_job_id=st.text(min_size=1, max_size=5000),
        offsets=st.integers(0, 3000),
        limit=st.integers(MIN_LIMIT_BYTES, 50_000),
    )
    @settings(deadline=None, max_examples=100)
    def test_success_always_fits(self, client_job_id: str, offsets: int, limit: int) -> None:
        """Any success record fits any limit from the minimum and still parses."""
        fitted = fit_record(success(offsets, client_job_id), limit)
        assert len(fitted.value) + len(fitted.key or b"") <= limit
        assert SuccessRecord.model_validate_json(fitted.value) == fitted.record


def test_value_prefix_is_the_original_prefix() -> None:
    """The value a truncated source carries is the first bytes of the original."""
    source = SourceInfo.from_message(
        topic="in",
        partition=0,
        offset=0,
        key=None,
        value=b"abcdef",
        headers=[],
        max_value_bytes=3,
    )
    assert base64.b64decode(source.value or "") == b"abc"
